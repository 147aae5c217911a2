import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { Engine } from '../../src/engine/engine.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { useProxiedDriver } from '../support/proxied-driver.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

const direct = testEngine();
const run = testRun(direct);
const spec = (command: string): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, command: ['sh', '-c', command] });
const WAIT_PATH = /^\/containers\/[^/]+\/wait$/;
/** Longer than any test here: a wait held this long never answers. */
const NEVER_MS = 3_600_000;

describe('a task\'s end is seen when its wait connection fails or never answers', { skip: await requireEngine() }, () => {
  const faulty = useProxiedDriver(run, { driver: { retry: { attempts: 5, initialDelayMs: 20, maxDelayMs: 500 }, relistPeriodMs: 300 } });

  test('a wait whose every connection is dropped still yields the real exit code', { timeout: 60_000 }, async () => {
    const rule = faulty.proxy.addRule({ method: 'POST', path: WAIT_PATH, fault: { kind: 'drop' } });
    const handle = await faulty.driver.start(spec('sleep 0.5; exit 9'), { output: 'engine-log' });
    const end = await handle.wait();
    assert.deepEqual(end, { kind: 'failed', exitCode: 9 });
    assert.ok(rule.fired >= 1, 'the wait was dropped');
    await handle.destroy();
  });

  test('a wait connection dropped after the engine answered still yields the real exit code', { timeout: 60_000 }, async () => {
    const rule = faulty.proxy.addRule({ method: 'POST', path: WAIT_PATH, fault: { kind: 'dropAfterForward' } });
    const handle = await faulty.driver.start(spec('exit 4'), { output: 'engine-log' });
    assert.deepEqual(await handle.wait(), { kind: 'failed', exitCode: 4 });
    assert.ok(rule.fired >= 1);
    await handle.destroy();
  });

  test('a wait that never answers, with the engine events cut too, ends from the relist with the real exit code', { timeout: 60_000 }, async () => {
    const wait = faulty.proxy.addRule({ method: 'POST', path: WAIT_PATH, fault: { kind: 'delay', delayMs: NEVER_MS } });
    const events = faulty.proxy.addRule({ method: 'GET', path: '/events', fault: { kind: 'drop' } });
    const handle = await faulty.driver.start(spec('sleep 0.5; exit 6'), { output: 'engine-log' });
    const listsBefore = faulty.proxy.count('GET', /^\/containers\/json$/);
    assert.deepEqual(await handle.wait(), { kind: 'failed', exitCode: 6 });
    assert.ok(wait.fired >= 1, 'the wait was held');
    assert.ok(events.fired >= 1, 'the events stream was cut');
    assert.ok(faulty.proxy.count('GET', /^\/containers\/json$/) > listsBefore, 'the relist listed the containers');
    await handle.destroy();
  });

  test('a task whose container is removed behind berth\'s back while its wait never answers ends as lost, saying so', { timeout: 60_000 }, async () => {
    faulty.proxy.addRule({ method: 'POST', path: WAIT_PATH, fault: { kind: 'delay', delayMs: NEVER_MS } });
    faulty.proxy.addRule({ method: 'GET', path: '/events', fault: { kind: 'drop' } });
    const handle = await faulty.driver.start(spec('sleep 600'), { output: 'engine-log' });
    // The engine kills the container before it removes it: a look in between sees it exited (137)
    // and rightly ends the task `failed`. Looks are held until it is gone, then reach the engine.
    const looks = faulty.proxy.addRule({ method: 'GET', path: /^\/containers\/(json|[^/]+\/json)$/, fault: { kind: 'hold' } });
    await direct.removeContainer(handle.containerId);
    looks.release();
    const end = await handle.wait();
    assert.equal(end.kind, 'lost');
    assert.match(end.kind === 'lost' ? end.reason : '', /vanished/);
    await handle.destroy();
  });

  test('the engine events wake the end of a task whose wait never answers', { timeout: 60_000 }, async () => {
    // A relist period far longer than the test: only the wait or an event can end it, and the wait is held.
    const slowRelist = new TaskDriver({ engine: new Engine({ socketPath: faulty.proxy.socketPath }), ownerId: `test-${run.id}`, relistPeriodMs: NEVER_MS });
    faulty.proxy.addRule({ method: 'POST', path: WAIT_PATH, fault: { kind: 'delay', delayMs: NEVER_MS } });
    faulty.proxy.clearLog();
    const handle = await slowRelist.start(spec('sleep 0.5; exit 12'), { output: 'engine-log' });
    await pollUntil('the events stream to open', () => (faulty.proxy.count('GET', /^\/events$/) > 0 ? true : undefined), { timeoutMs: 10_000 });
    assert.deepEqual(await handle.wait(), { kind: 'failed', exitCode: 12 });
    assert.equal(faulty.proxy.count('GET', /^\/containers\/json$/), 0, 'no relist ran');
    await handle.destroy();
  });

  test('a stop that finds the task already ended leaves the task its own end, seen at once', { timeout: 60_000 }, async () => {
    // Nothing but the stop can tell this handle the task ended: the wait never answers, events are
    // cut, and the relist comes only every minute.
    const blind = new TaskDriver({
      engine: new Engine({ socketPath: faulty.proxy.socketPath }),
      ownerId: `test-${run.id}`,
      retry: { attempts: 2, initialDelayMs: 20, maxDelayMs: 50 },
      relistPeriodMs: 60_000,
    });
    faulty.proxy.addRule({ method: 'POST', path: WAIT_PATH, fault: { kind: 'delay', delayMs: NEVER_MS } });
    faulty.proxy.addRule({ method: 'GET', path: '/events', fault: { kind: 'drop' } });
    const handle = await blind.start(spec('exit 0'), { output: 'engine-log' });
    await pollUntil('the container to exit on its own', async () => ((await direct.inspectContainer(handle.containerId)).running ? undefined : true), { timeoutMs: 30_000 });
    assert.equal(handle.phase, 'running', 'the handle has not seen the end yet');
    await handle.stop();
    // Its own end wins: it exited 0 before it was asked to stop, so it is not `cancelled`.
    assert.deepEqual(await handle.wait(), { kind: 'success', exitCode: 0 });
    await handle.destroy();
  });

  test('destroy rejects with a classified error when the engine never answers the remove, and a later destroy succeeds', { timeout: 60_000 }, async () => {
    const wedged = new TaskDriver({
      engine: new Engine({ socketPath: faulty.proxy.socketPath, deadlines: { writeMs: 300 } }),
      ownerId: `test-${run.id}`,
      retry: { attempts: 2, initialDelayMs: 20, maxDelayMs: 50 },
      relistPeriodMs: 300,
    });
    const handle = await wedged.start(spec('exit 0'), { output: 'engine-log' });
    assert.deepEqual(await handle.wait(), { kind: 'success', exitCode: 0 });
    const removes = faulty.proxy.addRule({ method: 'DELETE', path: /^\/containers\/[^/]+$/, fault: { kind: 'delay', delayMs: NEVER_MS } });
    await assert.rejects(handle.destroy(), (error: unknown) => isBerthError(error, 'BERTH_ENGINE_TIMEOUT') && error.retryable);
    assert.equal(removes.fired, 2, 'each attempt met the wedged engine');
    faulty.proxy.reset();
    await handle.destroy();
    assert.equal(handle.phase, 'removed');
  });

  test('stop returns when the engine never answers it, and the task still ends right once the engine acts', { timeout: 60_000 }, async () => {
    const wedged = new TaskDriver({
      engine: new Engine({ socketPath: faulty.proxy.socketPath, deadlines: { stopExtraMs: 300 } }),
      ownerId: `test-${run.id}`,
      retry: { attempts: 2, initialDelayMs: 20, maxDelayMs: 50 },
      relistPeriodMs: 300,
    });
    const handle = await wedged.start(spec('sleep 600'), { output: 'engine-log' });
    const stops = faulty.proxy.addRule({ method: 'POST', path: /^\/containers\/[^/]+\/stop$/, fault: { kind: 'delay', delayMs: NEVER_MS } });
    await handle.stop({ graceMs: 0 });
    assert.equal(stops.fired, 2);
    // A stop that failed for good is followed by berth's own SIGKILL (the kill is not wedged here),
    // so the task may already be ending; the engine is asked to act as well, and either way the end
    // is the stop's: cancelled.
    await direct.killContainer(handle.containerId).catch((error: unknown) => {
      if (!isBerthError(error, 'BERTH_ENGINE_CONFLICT') && !isBerthError(error, 'BERTH_ENGINE_NOT_MODIFIED')) throw error;
    });
    const end = await handle.wait();
    assert.equal(end.kind, 'cancelled');
    await handle.destroy();
  });
});
