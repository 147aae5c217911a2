import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { capProbeOutput, healthOf, isSameHealth, lastProbeSummary, PROBE_LOG_MAX, PROBE_OUTPUT_MAX_CHARS } from '../../../src/agent/health-snapshot.js';
import type { ContainerInspect } from '../../../src/engine/types.js';

const CHECK = { test: ['CMD-SHELL', 'true'], intervalNs: 1e9, timeoutNs: 1e9, startPeriodNs: 0, retries: 2 };
const probe = (n: number, exitCode = 0, output = `probe ${n}\n`) => ({ start: new Date(1_000 * n), end: new Date(1_000 * n + 50), exitCode, output });

describe('capProbeOutput', () => {
  test('keeps output up to the cap as it is', () => {
    assert.equal(capProbeOutput('short'), 'short');
    assert.equal(capProbeOutput('x'.repeat(PROBE_OUTPUT_MAX_CHARS)), 'x'.repeat(PROBE_OUTPUT_MAX_CHARS));
  });

  test('keeps the end of a longer output (where a failing check says why), marked as cut, within the cap', () => {
    const output = `${'a'.repeat(4000)}connection refused`;
    const capped = capProbeOutput(output);
    assert.equal(capped.length, PROBE_OUTPUT_MAX_CHARS);
    assert.ok(capped.startsWith('…'));
    assert.ok(capped.endsWith('connection refused'));
    assert.equal(capProbeOutput('abcdef', 4), '…def');
  });
});

describe('healthOf', () => {
  test('a container without an active health check has no health (none configured, disabled)', () => {
    assert.equal(healthOf({}), undefined);
    assert.equal(healthOf({ healthcheck: { ...CHECK, test: ['NONE'] }, health: { status: 'none', failingStreak: 0, probes: [] } }), undefined);
  });

  test('a check that has not run yet is starting with an empty log', () => {
    assert.deepEqual(healthOf({ healthcheck: CHECK }), { status: 'starting', failingStreak: 0, log: [] });
  });

  test('keeps status, streak and the last probes (times in ms, output capped), oldest first', () => {
    const probes = [probe(1), probe(2), probe(3), probe(4), probe(5), probe(6, 1, `${'z'.repeat(5000)}boom`)];
    const inspect: Pick<ContainerInspect, 'healthcheck' | 'health'> = { healthcheck: CHECK, health: { status: 'unhealthy', failingStreak: 3, probes } };
    const health = healthOf(inspect)!;
    assert.equal(health.status, 'unhealthy');
    assert.equal(health.failingStreak, 3);
    assert.equal(health.log.length, PROBE_LOG_MAX);
    assert.deepEqual(health.log[0], { startedAtMs: 2000, endedAtMs: 2050, exitCode: 0, output: 'probe 2\n' });
    assert.equal(health.log.at(-1)!.exitCode, 1);
    assert.equal(health.log.at(-1)!.output.length, PROBE_OUTPUT_MAX_CHARS);
    assert.deepEqual(lastProbeSummary(health), { exitCode: 1, output: `…${'z'.repeat(295)}boom` });
  });
});

describe('isSameHealth', () => {
  test('tells a new probe or a new status from the same health', () => {
    const a = healthOf({ healthcheck: CHECK, health: { status: 'healthy', failingStreak: 0, probes: [probe(1)] } });
    const same = healthOf({ healthcheck: CHECK, health: { status: 'healthy', failingStreak: 0, probes: [probe(1)] } });
    const newer = healthOf({ healthcheck: CHECK, health: { status: 'healthy', failingStreak: 0, probes: [probe(1), probe(2)] } });
    const worse = healthOf({ healthcheck: CHECK, health: { status: 'unhealthy', failingStreak: 0, probes: [probe(1)] } });
    assert.equal(isSameHealth(a, same), true);
    assert.equal(isSameHealth(a, newer), false);
    assert.equal(isSameHealth(a, worse), false);
    assert.equal(isSameHealth(undefined, a), false);
    assert.equal(isSameHealth(undefined, undefined), true);
  });
});
