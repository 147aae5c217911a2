import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { countFlag, durationFlag, parseCpus, parseMountFlag, sizeFlag, stopTimeoutFlag } from '../../../src/cli/flags.js';
import { specFromRunFlags } from '../../../src/cli/run.js';
import { resolveTaskSpec, SPEC_BOUNDS } from '../../../src/spec/schema.js';

function refusal(fn: () => unknown): { field: string; rule: string } {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    assert.equal(error.issues.length, 1);
    return error.issues[0]!;
  }
  assert.fail('expected a ValidationError');
}

describe('berth run\'s duration, size and count flags are bounded as the spec is, and the error names the flag', () => {
  test('--timeout: 365d is accepted and compiles to 365 days; 365d1ms is refused', () => {
    assert.equal(durationFlag('365d', '--timeout', SPEC_BOUNDS.timeout), '365d');
    assert.deepEqual(refusal(() => durationFlag('365d1ms', '--timeout', SPEC_BOUNDS.timeout)), { field: '--timeout', rule: 'must be at most 365d' });
    assert.deepEqual(refusal(() => durationFlag('0s', '--health-interval', SPEC_BOUNDS.healthcheck)), { field: '--health-interval', rule: 'must be at least 1ms; 0 is not allowed here' });
  });

  test('--timeout needs a unit: a bare number could mean seconds or milliseconds', () => {
    assert.deepEqual(refusal(() => durationFlag('30', '--timeout', SPEC_BOUNDS.timeout)), { field: '--timeout', rule: '"30" has no unit; use e.g. 30s or 30ms (units: ms, s, m, h, d)' });
  });

  test('--stop-timeout: whole seconds as docker takes them, up to 86400 (24h)', () => {
    assert.equal(stopTimeoutFlag('86400'), '86400s');
    assert.equal(stopTimeoutFlag('24h'), '24h');
    assert.equal(stopTimeoutFlag('0'), '0s');
    assert.deepEqual(refusal(() => stopTimeoutFlag('86401')), { field: '--stop-timeout', rule: 'must be at most 24h' });
  });

  test('--memory: 6m to 1p; 1025t is refused', () => {
    assert.equal(sizeFlag('1p', '--memory', SPEC_BOUNDS.memory), '1p');
    assert.equal(sizeFlag('6m', '--memory', SPEC_BOUNDS.memory), '6m');
    assert.deepEqual(refusal(() => sizeFlag('1025t', '--memory', SPEC_BOUNDS.memory)), { field: '--memory', rule: 'must be at most 1p' });
    assert.deepEqual(refusal(() => sizeFlag('6143k', '--memory', SPEC_BOUNDS.memory)), { field: '--memory', rule: 'must be at least 6m' });
    assert.match(refusal(() => sizeFlag('lots', '--memory', SPEC_BOUNDS.memory)).rule, /^"lots" is not a size; use e\.g\. 512m or 1g/);
  });

  test('--cpus: 0.01 (the engine\'s smallest quota) to 1024', () => {
    assert.equal(parseCpus('0.01'), 10);
    assert.equal(parseCpus('1024'), 1_024_000);
    assert.deepEqual(refusal(() => parseCpus('0.009')), { field: '--cpus', rule: 'must be at least 0.01 (the engine\'s smallest CPU quota), or 0 for no limit' });
    assert.deepEqual(refusal(() => parseCpus('1024.001')), { field: '--cpus', rule: 'must be at most 1024' });
  });

  test('--pids-limit: 1 to 4194304', () => {
    assert.equal(countFlag('4194304', '--pids-limit', SPEC_BOUNDS.pidsLimit), 4_194_304);
    assert.deepEqual(refusal(() => countFlag('4194305', '--pids-limit', SPEC_BOUNDS.pidsLimit)), { field: '--pids-limit', rule: 'must be a whole number from 1 to 4194304' });
    assert.deepEqual(refusal(() => countFlag('0', '--pids-limit', SPEC_BOUNDS.pidsLimit)).field, '--pids-limit');
    assert.deepEqual(refusal(() => countFlag('12abc', '--pids-limit', SPEC_BOUNDS.pidsLimit)).field, '--pids-limit');
  });

  test('--mount tmpfs-size: up to 1p', () => {
    assert.deepEqual(parseMountFlag('type=tmpfs,target=/t,tmpfs-size=1p', 0), { type: 'tmpfs', target: '/t', size: '1p' });
    assert.deepEqual(refusal(() => parseMountFlag('type=tmpfs,target=/t,tmpfs-size=1025t', 1)), { field: '--mount[1] tmpfs-size', rule: 'must be at most 1p' });
  });

  test('--log-max-size and the health flags at and past their bounds', () => {
    const io = { env: {}, stdin: process.stdin };
    const base = { env: [], label: [], mount: [], capAdd: [], capDrop: [] };
    const spec = specFromRunFlags('busybox', [], { ...base, logMaxSize: '1p', timeout: '365d', stopTimeout: '86400', memory: '1p', pidsLimit: '4194304', cpus: '1024', healthCmd: 'true', healthInterval: '24h', healthTimeout: '24h', healthStartPeriod: '24h', healthRetries: '1000000' }, io);
    const resolved = resolveTaskSpec(spec);
    assert.equal(resolved.timeoutMs, 365 * 86_400_000);
    assert.equal(resolved.stopGraceMs, 86_400_000);
    assert.equal(resolved.log.maxSizeBytes, 1024 ** 5);
    assert.deepEqual(refusal(() => specFromRunFlags('busybox', [], { ...base, logMaxSize: '1025t' }, io)).field, '--log-max-size');
    assert.deepEqual(refusal(() => specFromRunFlags('busybox', [], { ...base, healthCmd: 'true', healthInterval: '24h1ms' }, io)), { field: '--health-interval', rule: 'must be at most 24h' });
    assert.deepEqual(refusal(() => specFromRunFlags('busybox', [], { ...base, healthCmd: 'true', healthStartPeriod: '25h' }, io)).field, '--health-start-period');
    assert.deepEqual(refusal(() => specFromRunFlags('busybox', [], { ...base, healthCmd: 'true', healthRetries: '1000001' }, io)), { field: '--health-retries', rule: 'must be a whole number from 1 to 1000000' });
  });
});
