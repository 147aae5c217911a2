import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { Engine } from '../../src/engine/engine.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { runToEnd } from '../../src/tasks/run.js';
import { useProxiedDriver } from '../support/proxied-driver.js';
import { requireEngine, TEST_IMAGE, testRun } from '../support/engine.js';

/** A seeded generator, so a probabilistic fault run is the same every time. */
function seededRandom(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state / 2 ** 31;
  };
}

const direct = new Engine();
const run = testRun(direct);
const spec = (overrides: Partial<TaskSpec> = {}): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, command: ['sh', '-c', 'exit 7'], ...overrides });
const fastRetry = { attempts: 5, initialDelayMs: 20, maxDelayMs: 200 };

describe('engine faults through a proxy in front of the real socket', { skip: await requireEngine() }, () => {
  // Each fault must leave nothing behind: checked after every case, not only at the end.
  const faulty = useProxiedDriver(run, { proxy: { random: seededRandom(42) }, engine: { deadlines: { writeMs: 2000 } }, driver: { retry: fastRetry } });

  test('a 500 after the engine created the container is retried and the container adopted', async () => {
    const rule = faulty.proxy.addRule({ method: 'POST', path: '/containers/create', fault: { kind: 'error500AfterForward' }, times: 1 });
    const result = await runToEnd(faulty.driver, spec());
    assert.equal(rule.fired, 1);
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 7 });
  });

  test('a 500 after the engine started the container counts as started', async () => {
    const rule = faulty.proxy.addRule({ method: 'POST', path: /^\/containers\/[^/]+\/start$/, fault: { kind: 'error500AfterForward' }, times: 1 });
    const result = await runToEnd(faulty.driver, spec({ command: ['sh', '-c', 'echo once; exit 7'] }));
    assert.equal(rule.fired, 1);
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 7 });
  });

  test('a 500 after the engine removed the container still ends with no container left', async () => {
    const rule = faulty.proxy.addRule({ method: 'DELETE', path: /^\/containers\/[^/]+$/, fault: { kind: 'error500AfterForward' }, times: 1 });
    const result = await runToEnd(faulty.driver, spec());
    assert.equal(rule.fired, 1);
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 7 });
  });

  test('a dropped connection on create is retried and adopts what the engine made', async () => {
    const rule = faulty.proxy.addRule({ method: 'POST', path: '/containers/create', fault: { kind: 'dropAfterForward' }, times: 1 });
    const result = await runToEnd(faulty.driver, spec());
    assert.equal(rule.fired, 1);
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 7 });
  });

  test('a dropped wait connection still yields the real exit code', async () => {
    const rule = faulty.proxy.addRule({ method: 'POST', path: /^\/containers\/[^/]+\/wait$/, fault: { kind: 'dropAfterForward' }, times: 1 });
    const result = await runToEnd(faulty.driver, spec({ command: ['sh', '-c', 'exit 9'] }));
    assert.equal(rule.fired, 1);
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 9 });
  });

  test('a create delayed past its deadline is retried, and the late one does no harm', async () => {
    const rule = faulty.proxy.addRule({ method: 'POST', path: '/containers/create', fault: { kind: 'delay', delayMs: 4000, forwardIfClientGone: true }, times: 1 });
    const result = await runToEnd(faulty.driver, spec());
    assert.equal(rule.fired, 1);
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 7 });
    // The late create reaches the engine after the task was removed; the driver's guard removes what it makes.
    await faulty.driver.settled();
    const late = faulty.proxy.requests.find((r) => r.fault === 'delay');
    assert.equal(late?.engineStatus, 201, 'the late create reached the engine and created a container');
  });

  test('a create that keeps failing reports a typed error and removes what it may have made', async () => {
    faulty.proxy.addRule({ method: 'POST', path: '/containers/create', fault: { kind: 'error500AfterForward' } });
    await assert.rejects(runToEnd(faulty.driver, spec()), (e: unknown) => isBerthError(e, 'BERTH_ENGINE_CONFLICT') || isBerthError(e, 'BERTH_ENGINE_SERVER_ERROR'));
  });

  test('an unreachable engine is a typed, retryable error and nothing is created', async () => {
    faulty.proxy.refuseAll = true;
    try {
      await assert.rejects(runToEnd(faulty.driver, spec()), (e: unknown) => isBerthError(e, 'BERTH_ENGINE_UNAVAILABLE') && e.retryable);
    } finally {
      faulty.proxy.refuseAll = false;
    }
  });

  test('with 30% of creates, starts and removes failing after the engine acted, every task ends right and nothing leaks', async () => {
    for (const path of ['/containers/create', /^\/containers\/[^/]+\/start$/]) {
      faulty.proxy.addRule({ method: 'POST', path, fault: { kind: 'error500AfterForward' }, probability: 0.3 });
    }
    faulty.proxy.addRule({ method: 'DELETE', path: /^\/containers\/[^/]+$/, fault: { kind: 'error500AfterForward' }, probability: 0.3 });
    const codes = Array.from({ length: 12 }, (_, i) => i % 5);
    const results = [];
    for (const code of codes) results.push(await runToEnd(faulty.driver, spec({ command: ['sh', '-c', `exit ${code}`] })));
    assert.deepEqual(results.map((r) => (r.end.kind === 'success' || r.end.kind === 'failed' ? r.end.exitCode : r.end.kind)), codes);
    assert.ok(faulty.proxy.requests.filter((r) => r.fault === 'error500AfterForward').length > 0, 'the faults fired');
  });
});
