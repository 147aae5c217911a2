import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { ConfigHolder, loadAgentConfig, RESTART_ONLY_KEYS, type AgentConfigInput, type HostFacts } from '../../../src/agent/config.js';

const host: HostFacts = { uid: 1000, homedir: '/home/ada', totalMemoryBytes: 8 * 1024 ** 3, cpuCount: 4 };

function rules(flags: AgentConfigInput['retention'] | Record<string, unknown>, env: Record<string, string> = {}): Array<{ field: string; rule: string }> {
  try {
    loadAgentConfig({ host, env, flags: { retention: flags as AgentConfigInput['retention'] } });
    return [];
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    return error.issues.map((i) => ({ field: i.field, rule: i.rule }));
  }
}

describe('retention.* configuration keys', () => {
  it('defaults keep a busy host bounded: 7 days, 10,000 ended tasks, 90% of the disk, a pass a minute', () => {
    assert.deepEqual(loadAgentConfig({ host }).retention, { maxAgeMs: 7 * 86_400_000, maxCount: 10_000, diskWatermark: 0.9, intervalMs: 60_000 });
  });

  it('reads the watermark as a percentage or a fraction, from a file, flags or the environment', () => {
    assert.equal(loadAgentConfig({ host, flags: { retention: { diskWatermark: '85%' } } }).retention.diskWatermark, 0.85);
    assert.equal(loadAgentConfig({ host, flags: { retention: { diskWatermark: 0.75 } } }).retention.diskWatermark, 0.75);
    assert.equal(loadAgentConfig({ host, env: { BERTH_RETENTION_DISK_WATERMARK: '0.8' } }).retention.diskWatermark, 0.8);
    assert.equal(loadAgentConfig({ host, env: { BERTH_RETENTION_DISK_WATERMARK: '95 %' } }).retention.diskWatermark, 0.95);
  });

  it('turns each limit off with "off", from flags or the environment', () => {
    const off = loadAgentConfig({ host, flags: { retention: { maxAge: 'off', maxCount: 'off', diskWatermark: 'off' } } }).retention;
    assert.deepEqual(off, { intervalMs: 60_000 });
    const fromEnv = loadAgentConfig({ host, env: { BERTH_RETENTION_MAX_AGE: 'off', BERTH_RETENTION_MAX_COUNT: 'off', BERTH_RETENTION_DISK_WATERMARK: 'off' } }).retention;
    assert.deepEqual(fromEnv, { intervalMs: 60_000 });
  });

  it('refuses values out of bounds or of the wrong kind, naming the key, the range and the source', () => {
    assert.deepEqual(rules({ diskWatermark: '100%' }), [
      { field: 'retention.diskWatermark', rule: 'must be "off" or a share of the disk from 1% to 99% (0.01 to 0.99), such as "90%" (from flags)' },
    ]);
    assert.equal(rules({ diskWatermark: 90 })[0]?.field, 'retention.diskWatermark', 'a bare 90 is not 90%: it would be 9000%');
    assert.equal(rules({ diskWatermark: 'most' })[0]?.field, 'retention.diskWatermark');
    assert.deepEqual(rules({ maxCount: 0 }), [
      { field: 'retention.maxCount', rule: 'must be "off" or a whole number from 1 to 100000000, such as 10000 (must be at least 1) (from flags)' },
    ]);
    assert.match(rules({}, { BERTH_RETENTION_MAX_COUNT: 'many' })[0]?.rule ?? '', /whole number .*\(from BERTH_RETENTION_MAX_COUNT\)/);
    assert.match(rules({ maxAge: '366d' })[0]?.rule ?? '', /from 1s to 365d/);
    assert.match(rules({ interval: '25d' })[0]?.rule ?? '', /at most 24d/);
    assert.match(rules({ interval: '500ms' })[0]?.rule ?? '', /at least 1s/);
    assert.deepEqual(rules({ keep: 3 }), [{ field: 'retention.keep', rule: 'is not a configuration key (from flags)' }]);
  });

  it('a reload applies new limits at once (retention reads them at every pass)', () => {
    assert.ok(!RESTART_ONLY_KEYS.includes('retention'));
    const dir = mkdtempSync(path.join(tmpdir(), 'berth-retention-config-'));
    try {
      const file = path.join(dir, 'config.yaml');
      writeFileSync(file, 'retention: { maxCount: 100 }\n');
      const holder = new ConfigHolder({ host, file });
      assert.equal(holder.current().retention.maxCount, 100);
      writeFileSync(file, 'retention: { maxCount: 50, maxAge: 1d }\n');
      const result = holder.reload();
      assert.ok(result.ok);
      assert.deepEqual(result.changed, ['retention.maxAgeMs', 'retention.maxCount']);
      assert.equal(holder.current().retention.maxCount, 50);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
