import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isBerthError, ValidationError } from '../../../src/common/errors.js';
import {
  CONFIG_ENV_VARS,
  ConfigHolder,
  defaultAdmissionBudget,
  envVarForKey,
  loadAgentConfig,
  type AgentConfigInput,
  type HostFacts,
} from '../../../src/agent/config.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const host: HostFacts = { uid: 1000, homedir: '/home/ada', totalMemoryBytes: 8 * GiB, cpuCount: 4 };

let dir: string;
let counter = 0;
function yamlFile(text: string): string {
  const file = path.join(dir, `config-${++counter}.yaml`);
  writeFileSync(file, text);
  return file;
}

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'berth-config-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Asserts that loading throws a ValidationError with an issue for `field` whose rule matches. */
function assertIssue(load: () => unknown, field: string, rule: RegExp): void {
  assert.throws(load, (error: unknown) => {
    assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${String(error)}`);
    assert.ok(isBerthError(error, 'BERTH_VALIDATION'));
    const found = error.issues.find((i) => i.field === field);
    assert.ok(found, `no issue for ${field} in: ${error.message}`);
    assert.match(found.rule, rule);
    assert.ok(error.message.includes(`${field}: `), 'the message names the key');
    return true;
  });
}

describe('loadAgentConfig: defaults', () => {
  it('works with no file, no environment and no flags', () => {
    const config = loadAgentConfig({ host });
    assert.equal(config.dataDir, '/home/ada/.local/share/berth');
    assert.equal(config.socketPath, '/home/ada/.local/share/berth/agent.sock');
    assert.equal(config.listen, undefined);
    assert.equal(config.agentId, undefined);
    assert.deepEqual(config.engine, { socketPath: '/var/run/docker.sock' });
    assert.deepEqual(config.engineDeadlines, { readMs: 10_000, writeMs: 30_000 });
    assert.deepEqual(config.health, { engineTimeoutMs: 2000 });
    assert.deepEqual(config.tasks, { startOutageLimitMs: 900_000, relistPeriodMs: 5000 });
    assert.deepEqual(config.policy, { allowPrivileged: false, allowedBindSources: [], allowedCapabilities: [], allowHostNetwork: false, allowInlineRegistryAuth: false, allowedDevices: [], allowedNetworks: [], allowedRuntimes: ['runc'], allowedSysctls: [], allowedSeccompProfiles: {}, allowUnconfinedSeccomp: false, allowUnconfinedApparmor: false, allowNegativeOomScoreAdj: false, allowInlineSeccomp: false });
    assert.deepEqual(config.registries, {});
    assert.equal(config.defaults.sandbox, undefined);
    assert.deepEqual(config.defaults.resources, { memoryBytes: 256 * MiB, cpuMilli: 250, pidsLimit: 1024 });
    assert.deepEqual(config.images, { removeDelayMs: 180_000, cleanup: true, pullActivityTimeoutMs: 120_000 });
    assert.deepEqual(config.logs, { maxFileBytes: 10 * MiB, maxFiles: 2 });
    assert.deepEqual(config.engineLog, { maxSizeBytes: MiB });
    assert.deepEqual(config.artifacts, { maxBytes: 64 * MiB });
    assert.deepEqual(config.reconcile, { enabled: true, periodMs: 300_000, creationGraceMs: 300_000, orphanGraceMs: 300_000, dryRun: false });
    assert.deepEqual(config.prune, { exemptImages: [] });
    assert.equal(config.file, undefined);
  });

  it('keeps state under /var/lib/berth as root, and under XDG_DATA_HOME when set', () => {
    assert.equal(loadAgentConfig({ host: { ...host, uid: 0 } }).dataDir, '/var/lib/berth');
    assert.equal(loadAgentConfig({ host, env: { XDG_DATA_HOME: '/data/xdg' } }).dataDir, '/data/xdg/berth');
  });

  it('derives the admission budget from the host less a headroom', () => {
    const config = loadAgentConfig({ host });
    // 8 GiB less max(256 MiB, 10%) = 8 GiB less 819.2 MiB; 4 CPUs less 100 milli-CPUs.
    assert.equal(config.admission.memoryBytes, 8 * GiB - Math.floor(0.8 * GiB));
    assert.equal(config.admission.cpuMilli, 3900);
    assert.equal(config.admission.maxConcurrent, undefined);
    // A small host keeps at least 256 MiB back and never goes below zero.
    assert.deepEqual(defaultAdmissionBudget({ totalMemoryBytes: GiB, cpuCount: 1 }), { memoryBytes: 768 * MiB, cpuMilli: 900 });
    assert.deepEqual(defaultAdmissionBudget({ totalMemoryBytes: 100 * MiB, cpuCount: 0.05 }), { memoryBytes: 0, cpuMilli: 100 });
  });

  it('is deeply frozen', () => {
    const config = loadAgentConfig({ host });
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.policy.allowedBindSources));
    assert.ok(Object.isFrozen(config.reconcile));
    assert.throws(() => {
      (config.reconcile as { periodMs: number }).periodMs = 1;
    }, TypeError);
  });
});

describe('loadAgentConfig: sources and precedence', () => {
  it('compiles durations and sizes from the file into milliseconds and bytes', () => {
    const file = yamlFile(`
dataDir: ~/berth-state
listen: 127.0.0.1:7070
agentId: host-7
engine:
  host: tcp://10.0.0.5:2376
policy:
  allowedBindSources: [/srv/data, /tmp/]
  allowPrivileged: true
  allowedCapabilities: [net_admin, CAP_SYS_PTRACE]
defaults:
  resources: { memory: 128m, cpuMilli: 500, pidsLimit: 64 }
admission: { memory: 2g, cpuMilli: 2000, maxConcurrent: 8 }
images: { removeDelay: 90s, cleanup: false, pullActivityTimeout: 1m30s }
logs: { maxFileSize: 1m, maxFiles: 3 }
engineLog: { maxSize: 512k }
reconcile: { enabled: false, period: 1h, creationGrace: 10m, orphanGrace: 20m, dryRun: true }
prune: { schedule: 24h, imageBudget: 20g, exemptImages: ['busybox:latest'] }
`);
    const config = loadAgentConfig({ file, host });
    assert.equal(config.file, file);
    assert.equal(config.dataDir, '/home/ada/berth-state');
    assert.equal(config.socketPath, '/home/ada/berth-state/agent.sock');
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 7070 });
    assert.equal(config.agentId, 'host-7');
    assert.deepEqual(config.engine, { host: '10.0.0.5', port: 2376 });
    assert.deepEqual(config.policy, { allowPrivileged: true, allowedBindSources: ['/srv/data', '/tmp/'], allowedCapabilities: ['NET_ADMIN', 'SYS_PTRACE'], allowHostNetwork: false, allowInlineRegistryAuth: false, allowedDevices: [], allowedNetworks: [], allowedRuntimes: ['runc'], allowedSysctls: [], allowedSeccompProfiles: {}, allowUnconfinedSeccomp: false, allowUnconfinedApparmor: false, allowNegativeOomScoreAdj: false, allowInlineSeccomp: false });
    assert.deepEqual(config.defaults.resources, { memoryBytes: 128 * MiB, cpuMilli: 500, pidsLimit: 64 });
    assert.deepEqual(config.admission, { memoryBytes: 2 * GiB, cpuMilli: 2000, maxConcurrent: 8 });
    assert.deepEqual(config.images, { removeDelayMs: 90_000, cleanup: false, pullActivityTimeoutMs: 90_000 });
    assert.deepEqual(config.logs, { maxFileBytes: MiB, maxFiles: 3 });
    assert.deepEqual(config.engineLog, { maxSizeBytes: 512 * 1024 });
    assert.deepEqual(config.reconcile, { enabled: false, periodMs: 3_600_000, creationGraceMs: 600_000, orphanGraceMs: 1_200_000, dryRun: true });
    assert.deepEqual(config.prune, { scheduleMs: 86_400_000, imageBudgetBytes: 20 * GiB, exemptImages: ['busybox:latest'] });
  });

  it('takes flags over the environment over the file over the defaults', () => {
    const file = yamlFile('reconcile: { period: 1m, creationGrace: 2m }\nlogs: { maxFiles: 5, maxFileSize: 2m }\n');
    const env = { BERTH_RECONCILE_PERIOD: '3m', BERTH_LOGS_MAX_FILES: '7' };
    const flags: AgentConfigInput = { reconcile: { period: '4m' } };
    const config = loadAgentConfig({ file, env, flags, host });
    assert.equal(config.reconcile.periodMs, 240_000, 'flag over environment');
    assert.equal(config.logs.maxFiles, 7, 'environment over file');
    assert.equal(config.reconcile.creationGraceMs, 120_000, 'file over default');
    assert.equal(config.reconcile.orphanGraceMs, 300_000, 'the orphan grace does not follow the creation grace');
    assert.equal(config.logs.maxFileBytes, 2 * MiB, 'file over default');
    assert.equal(config.images.removeDelayMs, 180_000, 'default');
  });

  it('ignores flags left undefined (options not given on the command line)', () => {
    const config = loadAgentConfig({ env: { BERTH_LISTEN: 'localhost:9000' }, flags: { listen: undefined, reconcile: { period: undefined } }, host });
    assert.deepEqual(config.listen, { host: 'localhost', port: 9000 });
    assert.equal(config.reconcile.periodMs, 300_000);
  });

  it('reads every key from its BERTH_* environment variable', () => {
    const env: Record<string, string> = {
      BERTH_DATA_DIR: '/srv/berth',
      BERTH_SOCKET_PATH: '/run/berth.sock',
      BERTH_LISTEN: '[::1]:7070',
      BERTH_TLS_CERT: '/etc/berth/cert.pem',
      BERTH_TLS_KEY: '/etc/berth/key.pem',
      BERTH_TLS_CLIENT_CA: '/etc/berth/clients.pem',
      BERTH_TLS_ALLOW_INSECURE: 'false',
      BERTH_AGENT_ID: 'a1',
      BERTH_ENGINE_SOCKET: '/run/docker.sock',
      BERTH_ENGINE_READ_TIMEOUT: '3s',
      BERTH_ENGINE_WRITE_TIMEOUT: '1m',
      BERTH_HEALTH_ENGINE_TIMEOUT: '500ms',
      BERTH_HTTP_HEADERS_TIMEOUT: '4s',
      BERTH_HTTP_REQUEST_TIMEOUT: '20s',
      BERTH_HTTP_KEEP_ALIVE_TIMEOUT: '2s',
      BERTH_HTTP_MAX_CONNECTIONS: '100',
      BERTH_EVENTS_WINDOW: '2h',
      BERTH_EVENTS_MAX_COUNT: '500',
      BERTH_TASKS_START_OUTAGE_LIMIT: 'off',
      BERTH_POLICY_ALLOWED_BIND_SOURCES: '/srv, /data',
      BERTH_POLICY_ALLOW_PRIVILEGED: 'yes',
      BERTH_POLICY_ALLOWED_CAPABILITIES: 'NET_ADMIN',
      BERTH_POLICY_ALLOW_HOST_NETWORK: 'true',
      BERTH_POLICY_ALLOW_INLINE_REGISTRY_AUTH: 'true',
      BERTH_DEFAULTS_RESOURCES_MEMORY: '64m',
      BERTH_DEFAULTS_RESOURCES_CPU_MILLI: '250',
      BERTH_DEFAULTS_RESOURCES_PIDS_LIMIT: '32',
      BERTH_POLICY_ALLOWED_DEVICES: '/dev/fuse',
      BERTH_POLICY_ALLOWED_NETWORKS: 'backend,front-end',
      BERTH_PORTS_RANGE: '30000-30099',
      BERTH_PORTS_HOST_IP: '0.0.0.0',
      BERTH_POLICY_ALLOWED_RUNTIMES: 'runc,runsc',
      BERTH_POLICY_ALLOWED_SYSCTLS: 'net.ipv4.*,kernel.shmmax',
      BERTH_POLICY_ALLOWED_SECCOMP_PROFILES: 'strict=/etc/berth/strict.json',
      BERTH_POLICY_ALLOW_UNCONFINED_SECCOMP: 'true',
      BERTH_POLICY_ALLOW_UNCONFINED_APPARMOR: 'yes',
      BERTH_POLICY_ALLOW_NEGATIVE_OOM_SCORE_ADJ: 'true',
      BERTH_DEFAULTS_SANDBOX: 'true',
      BERTH_DEFAULTS_SANDBOX_TMP_SIZE: '32m',
      BERTH_DEFAULTS_SANDBOX_CAPABILITIES: 'cap_net_admin',
      BERTH_ADMISSION_MEMORY: '1g',
      BERTH_ADMISSION_CPU_MILLI: '1500',
      BERTH_ADMISSION_MAX_CONCURRENT: '3',
      BERTH_IMAGES_REMOVE_DELAY: '0s',
      BERTH_IMAGES_CLEANUP: 'off',
      BERTH_IMAGES_PULL_ACTIVITY_TIMEOUT: '30s',
      BERTH_LOGS_MAX_FILE_SIZE: '100k',
      BERTH_LOGS_MAX_FILES: '1',
      BERTH_ENGINE_LOG_MAX_SIZE: '2m',
      BERTH_FILES_MAX_COUNT: '10',
      BERTH_FILES_MAX_BYTES: '100k',
      BERTH_FILES_UPLOAD_MAX_SIZE: '2g',
      BERTH_FILES_UPLOAD_TTL: '30m',
      BERTH_ARTIFACTS_MAX_BYTES: '8m',
      BERTH_TASKS_RELIST_PERIOD: '2s',
      BERTH_RECONCILE_ENABLED: 'false',
      BERTH_RECONCILE_PERIOD: '10m',
      BERTH_RECONCILE_CREATION_GRACE: '1m',
      BERTH_RECONCILE_ORPHAN_GRACE: '90s',
      BERTH_RECONCILE_DRY_RUN: '1',
      BERTH_PRUNE_SCHEDULE: '12h',
      BERTH_PRUNE_IMAGE_BUDGET: '5g',
      BERTH_PRUNE_EXEMPT_IMAGES: 'a:1,b:2',
      BERTH_RETENTION_MAX_AGE: '2d',
      BERTH_RETENTION_MAX_COUNT: '500',
      BERTH_RETENTION_DISK_WATERMARK: '80%',
      BERTH_RETENTION_INTERVAL: '30s',
      BERTH_GROUPS_INFRA_IMAGE: 'registry.example.com/pause:3.9',
      BERTH_CLUSTER_POSTGRES: 'postgres://berth:s3cret@db.example:5432/berth',
      BERTH_CLUSTER_NODE_ID: 'n1',
      BERTH_CLUSTER_ADDRESS: 'https://10.0.0.5:7443',
      BERTH_CLUSTER_LABELS: 'disk=ssd,node.zone=a',
      BERTH_CLUSTER_CAPACITY_MEMORY: '2g',
      BERTH_CLUSTER_CAPACITY_CPU_MILLI: '1000',
      BERTH_CLUSTER_CAPACITY_TASKS: '20',
      BERTH_CLUSTER_LEASE: '5s',
      BERTH_CLUSTER_HEARTBEAT: '1s',
      BERTH_CLUSTER_STRATEGY: 'spread',
      BERTH_CLUSTER_TOKEN: 'cluster-secret-0123456789',
      BERTH_CLUSTER_TLS_CA: '/etc/berth/cluster-ca.pem',
      BERTH_CLUSTER_TLS_CERT: '/etc/berth/node.pem',
      BERTH_CLUSTER_TLS_KEY: '/etc/berth/node-key.pem',
      BERTH_STATE_POSTGRES: 'postgres://berth:s3cret@db.example:5432/berth',
      BERTH_STATE_SCHEMA: 'berth_node_one',
      BERTH_STATE_DEADLINE: '3s',
    };
    // BERTH_ENGINE_HOST and BERTH_ENGINE_CONTEXT are the alternatives to BERTH_ENGINE_SOCKET, and
    // BERTH_ENGINE_TLS_VERIFY and BERTH_ENGINE_CERT_PATH go with a host: covered below.
    // BERTH_CLUSTER_TOKEN_FILE is the alternative to BERTH_CLUSTER_TOKEN (test/unit/agent/cluster-forward.test.ts).
    const engineAlternatives = new Set(['BERTH_ENGINE_HOST', 'BERTH_ENGINE_CONTEXT', 'BERTH_ENGINE_TLS_VERIFY', 'BERTH_ENGINE_CERT_PATH', 'BERTH_CLUSTER_TOKEN_FILE']);
    assert.deepEqual(Object.values(CONFIG_ENV_VARS).filter((v) => !engineAlternatives.has(v)).sort(), Object.keys(env).sort(), 'the test covers every variable');
    const config = loadAgentConfig({ env, host });
    assert.deepEqual(config, {
      dataDir: '/srv/berth',
      socketPath: '/run/berth.sock',
      listen: { host: '::1', port: 7070 },
      tls: { certFile: '/etc/berth/cert.pem', keyFile: '/etc/berth/key.pem', clientCaFile: '/etc/berth/clients.pem' },
      agentId: 'a1',
      engine: { socketPath: '/run/docker.sock' },
      engineDeadlines: { readMs: 3000, writeMs: 60_000 },
      http: { headersTimeoutMs: 4000, requestTimeoutMs: 20_000, keepAliveTimeoutMs: 2000, maxConnections: 100 },
      health: { engineTimeoutMs: 500 },
      events: { windowMs: 7_200_000, maxCount: 500 },
      tasks: { relistPeriodMs: 2000 },
      policy: {
        allowPrivileged: true,
        allowedBindSources: ['/srv', '/data'],
        allowedCapabilities: ['NET_ADMIN'],
        allowHostNetwork: true,
        allowInlineRegistryAuth: true,
        allowedDevices: ['/dev/fuse'],
        allowedNetworks: ['backend', 'front-end'],
        allowedRuntimes: ['runc', 'runsc'],
        allowedSysctls: ['net.ipv4.*', 'kernel.shmmax'],
        allowedSeccompProfiles: { strict: '/etc/berth/strict.json' },
        allowUnconfinedSeccomp: true,
        allowUnconfinedApparmor: true,
        allowNegativeOomScoreAdj: true,
        allowInlineSeccomp: false,
      },
      registries: {},
      defaults: { resources: { memoryBytes: 64 * MiB, cpuMilli: 250, pidsLimit: 32 }, sandbox: { tmpSizeBytes: 32 * MiB, capabilities: ['NET_ADMIN'] } },
      admission: { memoryBytes: GiB, cpuMilli: 1500, maxConcurrent: 3 },
      images: { removeDelayMs: 0, cleanup: false, pullActivityTimeoutMs: 30_000 },
      logs: { maxFileBytes: 100 * 1024, maxFiles: 1 },
      files: { maxCount: 10, maxBytes: 100 * 1024, uploadMaxBytes: 2 * GiB, uploadTtlMs: 1_800_000 },
      engineLog: { maxSizeBytes: 2 * MiB },
      artifacts: { maxBytes: 8 * MiB },
      reconcile: { enabled: false, periodMs: 600_000, creationGraceMs: 60_000, orphanGraceMs: 90_000, dryRun: true },
      prune: { scheduleMs: 43_200_000, imageBudgetBytes: 5 * GiB, exemptImages: ['a:1', 'b:2'] },
      retention: { maxAgeMs: 2 * 86_400_000, maxCount: 500, diskWatermark: 0.8, intervalMs: 30_000 },
      groups: { infraImage: 'registry.example.com/pause:3.9' },
      pools: [],
      ports: { range: { from: 30_000, to: 30_099 }, hostIp: '0.0.0.0' },
      cluster: {
        postgresUrl: 'postgres://berth:s3cret@db.example:5432/berth',
        nodeId: 'n1',
        address: 'https://10.0.0.5:7443',
        labels: { disk: 'ssd', zone: 'a' },
        capacity: { memoryBytes: 2 * GiB, cpuMilli: 1000, tasks: 20 },
        leaseMs: 5000,
        heartbeatMs: 1000,
        strategy: 'spread',
        token: 'cluster-secret-0123456789',
        tls: { caFile: '/etc/berth/cluster-ca.pem', certFile: '/etc/berth/node.pem', keyFile: '/etc/berth/node-key.pem' },
      },
      state: { postgresUrl: 'postgres://berth:s3cret@db.example:5432/berth', schema: 'berth_node_one', deadlineMs: 3000 },
    });
  });

  it('keeps the records in SQLite unless state.postgres is set; the schema defaults per cluster node; a bad schema or URL is refused, naming the key', () => {
    assert.equal(loadAgentConfig({ host }).state, undefined);
    const url = 'postgres://berth@db.example:5432/berth';
    assert.deepEqual(loadAgentConfig({ env: { BERTH_STATE_POSTGRES: url }, host }).state, { postgresUrl: url, schema: 'berth_agent', deadlineMs: 5000 });
    const clustered = loadAgentConfig({ env: { BERTH_STATE_POSTGRES: url, BERTH_CLUSTER_POSTGRES: url, BERTH_CLUSTER_NODE_ID: 'Node-7.eu', BERTH_CLUSTER_ADDRESS: 'https://10.0.0.5:7443' }, host });
    assert.equal(clustered.state?.schema, 'berth_agent_node_7_eu');
    for (const [env, field] of [
      [{ BERTH_STATE_POSTGRES: url, BERTH_STATE_SCHEMA: 'Upper' }, 'state.schema'],
      [{ BERTH_STATE_POSTGRES: url, BERTH_STATE_SCHEMA: 'a;drop' }, 'state.schema'],
      [{ BERTH_STATE_POSTGRES: 'mysql://x' }, 'state.postgres'],
      [{ BERTH_STATE_POSTGRES: url, BERTH_STATE_DEADLINE: '10ms' }, 'state.deadline'],
    ] as const) {
      assert.throws(() => loadAgentConfig({ env, host }), (error: unknown) => error instanceof ValidationError && error.issues.some((i) => i.field === field), field);
    }
  });

  it('defaults ports to 20000-29999 on 127.0.0.1, and refuses a bad range or address, naming the key', () => {
    assert.deepEqual(loadAgentConfig({ host }).ports, { range: { from: 20_000, to: 29_999 }, hostIp: '127.0.0.1' });
    for (const [env, field] of [
      [{ BERTH_PORTS_RANGE: '3000-2000' }, 'ports.range'],
      [{ BERTH_PORTS_RANGE: '1-70000' }, 'ports.range'],
      [{ BERTH_PORTS_RANGE: '20000' }, 'ports.range'],
      [{ BERTH_PORTS_HOST_IP: 'localhost' }, 'ports.hostIp'],
    ] as const) {
      assert.throws(() => loadAgentConfig({ env, host }), (error: unknown) => error instanceof ValidationError && error.issues.some((i) => i.field === field));
    }
  });

  it('names environment variables after their keys', () => {
    assert.equal(envVarForKey('reconcile.creationGrace'), 'BERTH_RECONCILE_CREATION_GRACE');
    assert.equal(envVarForKey('dataDir'), 'BERTH_DATA_DIR');
  });

  it('reads the file named by BERTH_CONFIG', () => {
    const file = yamlFile('logs:\n  maxFiles: 9\n');
    assert.equal(loadAgentConfig({ env: { BERTH_CONFIG: file }, host }).logs.maxFiles, 9);
  });

  it('engine.tlsVerify and engine.certPath (or DOCKER_TLS_VERIFY and DOCKER_CERT_PATH) make a tcp:// engine TLS with the directory\'s ca.pem, cert.pem and key.pem', () => {
    const certs = mkdtempSync(path.join(tmpdir(), 'berth-engine-certs-'));
    try {
      writeFileSync(path.join(certs, 'ca.pem'), 'CA');
      writeFileSync(path.join(certs, 'cert.pem'), 'CERT');
      writeFileSync(path.join(certs, 'key.pem'), 'KEY');
      const tls = { host: 'far', port: 2376, protocol: 'https', tls: { ca: 'CA', cert: 'CERT', key: 'KEY', verify: true } };
      assert.deepEqual(loadAgentConfig({ flags: { engine: { host: 'tcp://far', tlsVerify: true, certPath: certs } }, host }).engine, tls);
      assert.deepEqual(loadAgentConfig({ env: { DOCKER_HOST: 'tcp://far', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: certs }, host }).engine, tls);
      assert.deepEqual(loadAgentConfig({ env: { BERTH_ENGINE_HOST: 'tcp://far:2376', BERTH_ENGINE_TLS_VERIFY: 'true', BERTH_ENGINE_CERT_PATH: certs }, host }).engine, tls);
      // DOCKER_TLS_VERIFY goes with DOCKER_HOST only: a BERTH_ENGINE_HOST is plain unless BERTH_ENGINE_TLS_VERIFY says otherwise.
      assert.deepEqual(loadAgentConfig({ env: { BERTH_ENGINE_HOST: 'tcp://far:2375', DOCKER_TLS_VERIFY: '1' }, host }).engine, { host: 'far', port: 2375 });
      assertIssue(() => loadAgentConfig({ flags: { engine: { host: 'tcp://far', tlsVerify: true, certPath: path.join(certs, 'none') } }, host }), 'engine.certPath', /ca\.pem/);
    } finally {
      rmSync(certs, { recursive: true, force: true });
    }
  });

  it('engine.context (or DOCKER_CONTEXT) names a Docker context of the docker CLI, alone', () => {
    const home = mkdtempSync(path.join(tmpdir(), 'berth-home-'));
    try {
      const dir = createHash('sha256').update('remote').digest('hex');
      mkdirSync(path.join(home, '.docker', 'contexts', 'meta', dir), { recursive: true });
      writeFileSync(path.join(home, '.docker', 'contexts', 'meta', dir, 'meta.json'), JSON.stringify({ Name: 'remote', Metadata: {}, Endpoints: { docker: { Host: 'tcp://10.9.8.7:2375' } } }));
      assert.deepEqual(loadAgentConfig({ env: { HOME: home }, flags: { engine: { context: 'remote' } }, host }).engine, { host: '10.9.8.7', port: 2375 });
      assert.deepEqual(loadAgentConfig({ env: { HOME: home, DOCKER_CONTEXT: 'remote' }, host }).engine, { host: '10.9.8.7', port: 2375 });
      assert.deepEqual(loadAgentConfig({ env: { HOME: home, DOCKER_CONTEXT: 'remote', DOCKER_HOST: 'unix:///x.sock' }, host }).engine, { socketPath: '/x.sock' }, 'DOCKER_HOST wins over DOCKER_CONTEXT');
      assertIssue(() => loadAgentConfig({ env: { HOME: home }, flags: { engine: { context: 'nosuch' } }, host }), 'engine.context', /"nosuch" does not exist/);
      assertIssue(() => loadAgentConfig({ env: { HOME: home }, flags: { engine: { context: 'remote', host: 'tcp://e:1' } }, host }), 'engine.context', /one only/);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('honours DOCKER_HOST below BERTH_ENGINE_*, and engine.host and engine.socket as one choice', () => {
    assert.deepEqual(loadAgentConfig({ env: { DOCKER_HOST: 'unix:///custom/docker.sock' }, host }).engine, { socketPath: '/custom/docker.sock' });
    assert.deepEqual(loadAgentConfig({ env: { DOCKER_HOST: 'tcp://engine:2375' }, host }).engine, { host: 'engine', port: 2375 });
    assert.deepEqual(
      loadAgentConfig({ env: { DOCKER_HOST: 'tcp://engine:2375', BERTH_ENGINE_SOCKET: '/run/d.sock' }, host }).engine,
      { socketPath: '/run/d.sock' },
    );
    assert.deepEqual(loadAgentConfig({ env: { BERTH_ENGINE_HOST: 'tcp://e:1' }, host }).engine, { host: 'e', port: 1 });
    // A file naming a TCP engine is overridden by a socket from the flags, not combined with it.
    const file = yamlFile('engine:\n  host: tcp://far:2376\n');
    assert.deepEqual(loadAgentConfig({ file, flags: { engine: { socket: '/near.sock' } }, host }).engine, { socketPath: '/near.sock' });
  });

  it('treats an empty file as no settings', () => {
    assert.equal(loadAgentConfig({ file: yamlFile(''), host }).logs.maxFiles, 2);
  });
});

describe('loadAgentConfig: bad values name their key', () => {
  const load = (yaml: string) => () => loadAgentConfig({ file: yamlFile(yaml), host });

  it('a bad duration', () => {
    assertIssue(load('reconcile:\n  period: soon\n'), 'reconcile.period', /^must be a duration such as "5m" \(from .*\.yaml\)$/);
  });
  it('a duration under the minimum', () => {
    assertIssue(load('reconcile:\n  period: 10ms\n'), 'reconcile.period', /at least 100ms/);
  });
  it('a relist period under 100 ms', () => {
    assertIssue(load('tasks:\n  relistPeriod: 10ms\n'), 'tasks.relistPeriod', /at least 100ms/);
  });
  it('a bad size', () => {
    assertIssue(load('logs:\n  maxFileSize: lots\n'), 'logs.maxFileSize', /must be a size such as "10m"/);
    assertIssue(load('defaults:\n  resources:\n    memory: 1k\n'), 'defaults.resources.memory', /at least 6m \(6291456 bytes\)/);
  });
  it('a bad boolean', () => {
    assertIssue(load('policy:\n  allowPrivileged: "yes please"\n'), 'policy.allowPrivileged', /must be true or false/);
  });
  it('a bad integer', () => {
    assertIssue(load('admission:\n  maxConcurrent: 2.5\n'), 'admission.maxConcurrent', /whole number/);
    assertIssue(load('logs:\n  maxFiles: 0\n'), 'logs.maxFiles', /must be at least 1 \(from /);
  });
  it('a bad list item, by its index', () => {
    assertIssue(load('policy:\n  allowedBindSources: [/ok, relative/path]\n'), 'policy.allowedBindSources[1]', /absolute host path/);
    assertIssue(load('policy:\n  allowedCapabilities: "NET_ADMIN"\n'), 'policy.allowedCapabilities', /must be a list/);
  });
  it('a bad path, address, engine host, id and schedule', () => {
    assertIssue(load('dataDir: relative/dir\n'), 'dataDir', /absolute path/);
    assertIssue(load('listen: 7070\n'), 'listen', /host:port/);
    assertIssue(load('listen: "localhost:99999"\n'), 'listen', /host:port/);
    assertIssue(load('engine:\n  host: ftp://x\n'), 'engine.host', /unix:\/\/\/path\/to\/socket, tcp:\/\/host\[:port\]/);
    assertIssue(load('agentId: "has space"\n'), 'agentId', /characters/);
    assertIssue(load('prune:\n  schedule: sometimes\n'), 'prune.schedule', /"off" or a duration/);
  });
  it('a start outage limit that is neither "off" nor a duration from 1s to 365d, and engine deadlines under 100 ms', () => {
    assertIssue(load('tasks:\n  startOutageLimit: never\n'), 'tasks.startOutageLimit', /"off" or a duration from 1s to 365d/);
    assertIssue(load('tasks:\n  startOutageLimit: 10ms\n'), 'tasks.startOutageLimit', /"off" or a duration from 1s to 365d, such as "15m" \(must be at least 1s\)/);
    assertIssue(load('engine:\n  writeTimeout: 5ms\n'), 'engine.writeTimeout', /at least 100ms/);
    assertIssue(load('health:\n  engineTimeout: soon\n'), 'health.engineTimeout', /duration such as "2s"/);
  });
  it('engine deadlines set beside a socket from another source keep the socket', () => {
    const file = yamlFile('engine:\n  writeTimeout: 5s\n');
    const config = loadAgentConfig({ file, flags: { engine: { socket: '/near.sock' } }, host });
    assert.deepEqual(config.engine, { socketPath: '/near.sock' });
    assert.deepEqual(config.engineDeadlines, { readMs: 10_000, writeMs: 5000 });
  });
  it('engine.host and engine.socket set together', () => {
    assertIssue(load('engine:\n  host: tcp://e:1\n  socket: /run/d.sock\n'), 'engine.host', /set engine\.host or engine\.socket, not both/);
  });
  it('an unknown key and a section that is not a mapping', () => {
    assertIssue(load('reconcile:\n  perod: 5m\n'), 'reconcile.perod', /is not a configuration key/);
    assertIssue(load('images: true\n'), 'images', /must be a mapping/);
  });
  it('a bad value from the environment names the variable', () => {
    assertIssue(
      () => loadAgentConfig({ env: { BERTH_RECONCILE_PERIOD: 'soon' }, host }),
      'reconcile.period',
      /must be a duration such as "5m" \(from BERTH_RECONCILE_PERIOD\)/,
    );
    assertIssue(() => loadAgentConfig({ env: { BERTH_LOGS_MAX_FILES: 'two' }, host }), 'logs.maxFiles', /whole number \(from BERTH_LOGS_MAX_FILES\)/);
  });
  it('a bad flag says it came from the flags', () => {
    assertIssue(() => loadAgentConfig({ flags: { images: { removeDelay: 'later' } }, host }), 'images.removeDelay', /\(from flags\)$/);
  });
  it('reports every bad key at once', () => {
    assert.throws(load('reconcile: { period: x, dryRun: 3 }\nlogs: { maxFiles: -1 }\n'), (error: unknown) => {
      assert.ok(error instanceof ValidationError);
      assert.deepEqual(error.issues.map((i) => i.field).sort(), ['logs.maxFiles', 'reconcile.dryRun', 'reconcile.period']);
      return true;
    });
  });
  it('a socket path too long for a unix socket', () => {
    assertIssue(() => loadAgentConfig({ flags: { dataDir: `/${'d'.repeat(120)}` }, host }), 'socketPath', /longer than a unix socket path may be/);
  });
  it('a missing file, and a file that is not YAML, are named by their path', () => {
    const missing = path.join(dir, 'absent.yaml');
    assertIssue(() => loadAgentConfig({ file: missing, host }), missing, /cannot be read/);
    const broken = yamlFile('reconcile: [unclosed\n');
    assertIssue(() => loadAgentConfig({ file: broken, host }), broken, /is not valid YAML/);
    const scalar = yamlFile('just text\n');
    assertIssue(() => loadAgentConfig({ file: scalar, host }), scalar, /must be a YAML mapping/);
  });
});

describe('ConfigHolder', () => {
  it('reload swaps in a valid file while a snapshot taken before stays unchanged', () => {
    const file = yamlFile('reconcile:\n  period: 5m\nlogs:\n  maxFiles: 2\n');
    const holder = new ConfigHolder({ file, host });
    const before = holder.current();
    writeFileSync(file, 'reconcile:\n  period: 7m\nlogs:\n  maxFiles: 4\n');
    const result = holder.reload();
    assert.ok(result.ok);
    assert.deepEqual(result.changed, ['logs.maxFiles', 'reconcile.periodMs']);
    assert.deepEqual(result.needsRestart, []);
    assert.equal(result.previous, before);
    assert.equal(holder.current(), result.config);
    assert.equal(holder.current().reconcile.periodMs, 420_000);
    assert.equal(before.reconcile.periodMs, 300_000, 'the earlier snapshot is untouched');
    assert.equal(before.logs.maxFiles, 2);
    assert.ok(Object.isFrozen(holder.current().logs));
  });

  it('reload refuses an invalid file, naming the key, and keeps the old configuration', () => {
    const file = yamlFile('reconcile:\n  period: 5m\n');
    const holder = new ConfigHolder({ file, host });
    const before = holder.current();
    writeFileSync(file, 'reconcile:\n  period: whenever\n');
    const result = holder.reload();
    assert.equal(result.ok, false);
    assert.ok(!result.ok);
    assert.match(result.error.message, /^reconcile\.period: must be a duration such as "5m"/);
    assert.equal(result.config, before);
    assert.equal(holder.current(), before);
  });

  it('reload keeps keys that need a restart and reports them', () => {
    const file = yamlFile('dataDir: /srv/one\nlogs:\n  maxFiles: 2\n');
    const holder = new ConfigHolder({ file, host });
    writeFileSync(file, 'dataDir: /srv/two\nlisten: 127.0.0.1:7000\nlogs:\n  maxFiles: 3\n');
    const result = holder.reload();
    assert.ok(result.ok);
    assert.deepEqual(result.needsRestart, ['dataDir', 'listen', 'socketPath']);
    assert.deepEqual(result.changed, ['logs.maxFiles']);
    assert.equal(holder.current().dataDir, '/srv/one');
    assert.equal(holder.current().socketPath, '/srv/one/agent.sock');
    assert.equal(holder.current().listen, undefined);
  });

  it('reload with nothing changed reports no change', () => {
    const holder = new ConfigHolder({ file: yamlFile('logs: { maxFiles: 2 }\n'), host });
    const result = holder.reload();
    assert.ok(result.ok);
    assert.deepEqual(result.changed, []);
  });

  it('the constructor throws for an invalid configuration', () => {
    assertIssue(() => new ConfigHolder({ env: { BERTH_LISTEN: 'nowhere' }, host }), 'listen', /^must be host:port.*\(from BERTH_LISTEN\)$/);
  });
});

describe('loadAgentConfig: bounds on the API\'s clients (http.*)', () => {
  it('defaults to a 10 s header timeout, a 30 s request timeout, a 5 s keep-alive and 512 connections per listener', () => {
    assert.deepEqual(loadAgentConfig({ host }).http, { headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 5000, maxConnections: 512 });
  });
  it('reads them from the file, the environment and flags', () => {
    const file = yamlFile('http:\n  headersTimeout: 2s\n  requestTimeout: 1m\n');
    const config = loadAgentConfig({ file, env: { BERTH_HTTP_KEEP_ALIVE_TIMEOUT: '750ms', BERTH_HTTP_MAX_CONNECTIONS: '64' }, host });
    assert.deepEqual(config.http, { headersTimeoutMs: 2000, requestTimeoutMs: 60_000, keepAliveTimeoutMs: 750, maxConnections: 64 });
    assert.equal(CONFIG_ENV_VARS['http.headersTimeout'], 'BERTH_HTTP_HEADERS_TIMEOUT');
    assert.equal(loadAgentConfig({ flags: { http: { maxConnections: 1 } }, host }).http.maxConnections, 1);
  });
  it('values at their bounds are accepted', () => {
    const atMinimum = loadAgentConfig({ flags: { http: { headersTimeout: 100, requestTimeout: 100, keepAliveTimeout: 100, maxConnections: 1 } }, host }).http;
    assert.deepEqual(atMinimum, { headersTimeoutMs: 100, requestTimeoutMs: 100, keepAliveTimeoutMs: 100, maxConnections: 1 });
    const atMaximum = loadAgentConfig({ flags: { http: { headersTimeout: '10m', requestTimeout: '1h', keepAliveTimeout: '10m', maxConnections: 65_536 } }, host }).http;
    assert.deepEqual(atMaximum, { headersTimeoutMs: 600_000, requestTimeoutMs: 3_600_000, keepAliveTimeoutMs: 600_000, maxConnections: 65_536 });
  });
  it('values past their bounds, of the wrong type, or a header timeout longer than the request timeout are refused naming the key', () => {
    const flags = (http: NonNullable<AgentConfigInput['http']>) => () => loadAgentConfig({ flags: { http }, host });
    assertIssue(flags({ headersTimeout: '99ms' }), 'http.headersTimeout', /at least 100 ?ms/);
    assertIssue(flags({ headersTimeout: '11m', requestTimeout: '1h' }), 'http.headersTimeout', /at most 10m/);
    assertIssue(flags({ requestTimeout: '61m' }), 'http.requestTimeout', /at most 1h/);
    assertIssue(flags({ keepAliveTimeout: '10m1s' }), 'http.keepAliveTimeout', /at most 10m/);
    assertIssue(flags({ keepAliveTimeout: 'a while' }), 'http.keepAliveTimeout', /duration such as "5s"/);
    assertIssue(flags({ maxConnections: 0 }), 'http.maxConnections', /must be at least 1 \(from flags\)/);
    assertIssue(flags({ maxConnections: 65_537 }), 'http.maxConnections', /must be at most 65536 \(from flags\)/);
    assertIssue(flags({ maxConnections: '5' as unknown as number }), 'http.maxConnections', /whole number/);
    assertIssue(flags({ headersTimeout: '40s' }), 'http.headersTimeout', /at most http\.requestTimeout/);
    assertIssue(() => loadAgentConfig({ env: { BERTH_HTTP_MAX_CONNECTIONS: 'many' }, host }), 'http.maxConnections', /from BERTH_HTTP_MAX_CONNECTIONS/);
  });
  it('a reload keeps them until a restart (the listeners are made once)', () => {
    const file = yamlFile('http:\n  maxConnections: 10\n');
    const holder = new ConfigHolder({ file, host });
    writeFileSync(file, 'http:\n  maxConnections: 20\n');
    const result = holder.reload();
    assert.ok(result.ok);
    assert.deepEqual(result.needsRestart, ['http.maxConnections']);
    assert.equal(holder.current().http.maxConnections, 10);
  });
});
