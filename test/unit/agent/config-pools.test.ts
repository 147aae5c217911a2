import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { ConfigHolder, loadAgentConfig, type HostFacts } from '../../../src/agent/config.js';

const host: HostFacts = { uid: 1000, homedir: '/home/ada', totalMemoryBytes: 8 * 1024 ** 3, cpuCount: 4 };

let dir: string;
let counter = 0;
function yamlFile(text: string): string {
  const file = path.join(dir, `pools-${++counter}.yaml`);
  writeFileSync(file, text);
  return file;
}

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'berth-config-pools-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The issues a load throws, as `field: rule` lines. */
function issuesOf(load: () => unknown): Array<{ field: string; rule: string }> {
  try {
    load();
  } catch (error) {
    assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${String(error)}`);
    return [...error.issues];
  }
  assert.fail('the configuration was accepted');
}

describe('agent config: pools', () => {
  it('has no pools by default', () => {
    assert.deepEqual(loadAgentConfig({ host }).pools, []);
  });

  it('compiles a pool with the agent defaults applied to its spec, as a submitted spec gets them', () => {
    const config = loadAgentConfig({
      host,
      file: yamlFile('pools:\n  - name: py\n    size: 3\n    freezeAfter: 30s\n    spec:\n      image: busybox\n      resources: { memory: 64m }\n'),
    });
    assert.equal(config.pools.length, 1);
    const pool = config.pools[0]!;
    assert.equal(pool.name, 'py');
    assert.equal(pool.size, 3);
    assert.equal(pool.freezeAfterMs, 30_000);
    assert.equal(pool.reuse, false);
    // The pool key must equal a matching task's: the same defaults a submitted spec gets.
    assert.deepEqual(pool.spec.resources, { memory: '64m', cpuMilli: 250, pidsLimit: 1024 });
    assert.deepEqual(pool.spec.log, { driver: 'local', maxSize: 1024 * 1024 });
  });

  it('defaults a pool to one container, never frozen, no reuse', () => {
    const pool = loadAgentConfig({ host, flags: { pools: [{ name: 'a', spec: { image: 'busybox' } }] } }).pools[0]!;
    assert.equal(pool.size, 1);
    assert.equal(pool.freezeAfterMs, undefined);
    assert.equal(pool.reuse, false);
  });

  it('applies the sandbox preset to a pool spec when defaults.sandbox is on', () => {
    const pool = loadAgentConfig({ host, flags: { defaults: { sandbox: true }, pools: [{ name: 'a', spec: { image: 'busybox' } }] } }).pools[0]!;
    assert.equal(pool.spec.readOnlyRootfs, true);
    assert.equal(pool.spec.network, 'none');
  });

  it('refuses a pool spec the policy refuses, naming pools[i].spec.<field> and the rule', () => {
    const issues = issuesOf(() =>
      loadAgentConfig({ host, file: yamlFile('pools:\n  - name: ok\n    spec: { image: busybox }\n  - name: bad\n    spec: { image: busybox, privileged: true, mounts: [{ type: bind, source: /etc, target: /x }] }\n') }),
    );
    const privileged = issues.find((it) => it.field === 'pools[1].spec.privileged');
    assert.ok(privileged, JSON.stringify(issues));
    assert.match(privileged.rule, /privileged/i);
    assert.ok(issues.some((it) => it.field.startsWith('pools[1].spec.mounts')), JSON.stringify(issues));
    assert.ok(issues.every((it) => it.field.startsWith('pools[1]')), 'the good pool is not blamed');
    assert.ok(issues.every((it) => it.rule.includes('(from ')), 'the file is named');
  });

  it('refuses what the agent refuses in any spec (tty), and stdin on a pool', () => {
    const issues = issuesOf(() => loadAgentConfig({ host, flags: { pools: [{ name: 'a', spec: { image: 'busybox', tty: true } }, { name: 'b', spec: { image: 'busybox', stdin: 'x' } }] } }));
    assert.ok(issues.some((it) => it.field === 'pools[0].spec.tty'), JSON.stringify(issues));
    assert.ok(issues.some((it) => it.field === 'pools[1].spec.stdin'), JSON.stringify(issues));
  });

  it('refuses a spec that cannot be pooled (a health check, published ports), naming it', () => {
    const issues = issuesOf(() => loadAgentConfig({ host, flags: { pools: [{ name: 'a', spec: { image: 'busybox', network: 'bridge', ports: [{ container: 80 }] } }] } }));
    const found = issues.find((it) => it.field === 'pools[0].spec');
    assert.ok(found, JSON.stringify(issues));
    assert.match(found.rule, /cannot be pooled \(ports\)/);
  });

  it('refuses a spec without an image, naming the field', () => {
    const issues = issuesOf(() => loadAgentConfig({ host, flags: { pools: [{ name: 'a', spec: { command: ['sh'] } }] } }));
    assert.ok(issues.some((it) => it.field === 'pools[0].spec.image'), JSON.stringify(issues));
  });

  it('refuses duplicate names, a bad name, a bad size, freezeAfter and reuse, and unknown keys, each by its field', () => {
    const issues = issuesOf(() =>
      loadAgentConfig({
        host,
        file: yamlFile(
          [
            'pools:',
            '  - { name: a, spec: { image: busybox } }',
            '  - { name: a, spec: { image: busybox } }',
            '  - { name: Bad!, spec: { image: busybox } }',
            '  - { name: c, size: 1000, spec: { image: busybox } }',
            '  - { name: d, freezeAfter: soon, reuse: "yes", spec: { image: busybox }, extra: 1 }',
            '  - { name: e }',
            '',
          ].join('\n'),
        ),
      }),
    );
    const rule = (field: string): string => {
      const found = issues.find((it) => it.field === field);
      assert.ok(found, `no issue for ${field} in ${JSON.stringify(issues)}`);
      return found.rule;
    };
    assert.match(rule('pools[1].name'), /unique/);
    assert.match(rule('pools[2].name'), /a-z0-9/);
    assert.match(rule('pools[3].size'), /64/);
    assert.match(rule('pools[4].freezeAfter'), /duration/);
    assert.match(rule('pools[4].reuse'), /true or false/);
    assert.match(rule('pools[4].extra'), /not a pool key/);
    assert.match(rule('pools[5].spec'), /must be set/);
  });

  it('refuses pools that is not a list', () => {
    const issues = issuesOf(() => loadAgentConfig({ host, file: yamlFile('pools: { name: a }\n') }));
    assert.ok(issues.some((it) => it.field === 'pools' && /list/.test(it.rule)), JSON.stringify(issues));
  });

  it('keeps the running pools on a reload that changes them (a restart applies them)', () => {
    const file = yamlFile('pools:\n  - { name: a, spec: { image: busybox } }\n');
    const holder = new ConfigHolder({ host, file });
    writeFileSync(file, 'pools:\n  - { name: a, size: 5, spec: { image: busybox } }\n');
    const result = holder.reload();
    assert.ok(result.ok);
    assert.ok(result.needsRestart.some((key) => key.startsWith('pools')), JSON.stringify(result.needsRestart));
    assert.equal(result.config.pools[0]!.size, 1);
  });
});
