import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigHolder, loadAgentConfig, type AgentConfigInput, type HostFacts } from '../../../src/agent/config.js';
import { addressFromListener, maskPostgresUrl } from '../../../src/agent/cluster-config.js';
import { ValidationError } from '../../../src/common/errors.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const GiB = 1024 ** 3;
const host: HostFacts = { uid: 1000, homedir: '/home/ada', totalMemoryBytes: 8 * GiB, cpuCount: 4 };
const URL_WITH_PASSWORD = 'postgres://berth:hunter2@db.example:5432/berth';

function issues(flags: AgentConfigInput, env: Record<string, string> = {}): Array<{ field: string; rule: string }> {
  try {
    loadAgentConfig({ host, flags, env });
    return [];
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    return error.issues.map((i) => ({ field: i.field, rule: i.rule }));
  }
}

describe('the agent\'s cluster key', () => {
  it('is absent by default: the agent runs alone', () => {
    assert.equal(loadAgentConfig({ host }).cluster, undefined);
  });

  it('compiles durations, labels (a node. prefix dropped) and capacity, with the defaults of lease, heartbeat and strategy', () => {
    const config = loadAgentConfig({ host, flags: { listen: '127.0.0.1:7070', cluster: { postgres: URL_WITH_PASSWORD, labels: { 'node.disk': 'ssd', zone: 'a' }, capacity: { memory: '2g' } } } });
    assert.deepEqual(config.cluster, { postgresUrl: URL_WITH_PASSWORD, labels: { disk: 'ssd', zone: 'a' }, capacity: { memoryBytes: 2 * GiB }, leaseMs: 10_000, heartbeatMs: 3_000, strategy: 'binpack' });
  });

  it('takes BERTH_CLUSTER_POSTGRES and the other keys from the environment', () => {
    const config = loadAgentConfig({ host, env: { BERTH_CLUSTER_POSTGRES: URL_WITH_PASSWORD, BERTH_CLUSTER_ADDRESS: 'https://10.0.0.5:7443/', BERTH_CLUSTER_LABELS: 'disk=ssd', BERTH_CLUSTER_LEASE: '2s', BERTH_CLUSTER_HEARTBEAT: '500ms' } });
    assert.deepEqual([config.cluster?.postgresUrl, config.cluster?.address, config.cluster?.labels, config.cluster?.leaseMs, config.cluster?.heartbeatMs], [URL_WITH_PASSWORD, 'https://10.0.0.5:7443', { disk: 'ssd' }, 2000, 500]);
  });

  it('refuses a cluster without an address others can reach, naming cluster.address', () => {
    assert.deepEqual(issues({ cluster: { postgres: URL_WITH_PASSWORD } }).map((i) => i.field), ['cluster.address']);
    assert.deepEqual(issues({ listen: '0.0.0.0:7070', tls: { allowInsecure: true }, cluster: { postgres: URL_WITH_PASSWORD } }).map((i) => i.field), ['cluster.address']);
    assert.deepEqual(issues({ cluster: { postgres: URL_WITH_PASSWORD, address: 'https://0.0.0.0:7443' } }).map((i) => i.field), ['cluster.address']);
    assert.deepEqual(issues({ cluster: { postgres: URL_WITH_PASSWORD, address: 'https://10.0.0.5' } }).map((i) => i.field), ['cluster.address'], 'an address needs its port');
    assert.deepEqual(issues({ cluster: { postgres: URL_WITH_PASSWORD, address: 'https://10.0.0.5:7443' } }), []);
  });

  it('names the field of every bad value, and no rule quotes the URL or its password', () => {
    const found = issues({
      listen: '127.0.0.1:7070',
      cluster: { postgres: 'mysql://root:hunter2@db/x', nodeId: 'no spaces', lease: '1h', heartbeat: '2h', strategy: 'fastest' as never, labels: { '': 'x' }, capacity: { tasks: 0 } },
    });
    assert.deepEqual(found.map((i) => i.field).sort(), ['cluster.capacity.tasks', 'cluster.heartbeat', 'cluster.labels.', 'cluster.nodeId', 'cluster.postgres', 'cluster.strategy'].sort());
    assert.ok(found.every((i) => !i.rule.includes('hunter2')), JSON.stringify(found));
    assert.deepEqual(issues({ listen: '127.0.0.1:7070', cluster: { postgres: URL_WITH_PASSWORD, lease: '1s', heartbeat: '1s' } }).map((i) => i.field), ['cluster.heartbeat']);
    assert.deepEqual(issues({}, { BERTH_CLUSTER_LEASE: '2s' }).map((i) => i.field), ['cluster.postgres'], 'any cluster key needs the database');
    // A short lease alone is valid: the heartbeat's default follows it.
    assert.equal(loadAgentConfig({ host, flags: { listen: '127.0.0.1:7070', cluster: { postgres: URL_WITH_PASSWORD, lease: '600ms' } } }).cluster?.heartbeatMs, 200);
  });

  it('needs a restart: a reload that changes it keeps the running value and says so', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'berth-cluster-cfg-'));
    try {
      const file = path.join(dir, 'config.yaml');
      writeFileSync(file, `listen: 127.0.0.1:7070\ncluster:\n  postgres: ${URL_WITH_PASSWORD}\n  lease: 10s\n`);
      const holder = new ConfigHolder({ file, host });
      writeFileSync(file, `listen: 127.0.0.1:7070\ncluster:\n  postgres: ${URL_WITH_PASSWORD}\n  lease: 20s\n`);
      const result = holder.reload();
      assert.ok(result.ok);
      assert.deepEqual(result.needsRestart, ['cluster.leaseMs']);
      assert.equal(result.config.cluster?.leaseMs, 10_000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('maskPostgresUrl', () => {
  it('replaces the password, keeping the user, host and database', () => {
    assert.equal(maskPostgresUrl(URL_WITH_PASSWORD), 'postgres://berth:<redacted>@db.example:5432/berth');
    assert.equal(maskPostgresUrl('postgres://berth@db/x'), 'postgres://berth@db/x');
    assert.equal(maskPostgresUrl('postgresql://db/x?sslmode=require&password=hunter2'), 'postgresql://db/x?sslmode=require&password=<redacted>');
    assert.equal(maskPostgresUrl('not a url hunter2'), '<redacted>');
  });
});

describe('addressFromListener', () => {
  it('is https with TLS, http without, and brackets an IPv6 host', () => {
    assert.equal(addressFromListener({ host: '10.0.0.5', port: 7443 }, true), 'https://10.0.0.5:7443');
    assert.equal(addressFromListener({ host: '::1', port: 7070 }, false), 'http://[::1]:7070');
  });
});
