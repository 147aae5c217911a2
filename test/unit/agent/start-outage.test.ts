import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import { canonicalJson } from '../../../src/common/canonical-json.js';
import { formatMs, isTransientStartError, MAX_ANSWERED_START_FAILURES, StartOutage } from '../../../src/agent/start-outage.js';

/** A scripted engine and clock around a StartOutage: the ping fails until `answers` is set. */
function scripted(options: { limitMs?: number } = {}) {
  const state = {
    answers: false,
    nowMs: 1_000_000,
    pings: 0,
    retried: [] as string[][],
    expired: [] as Array<{ taskId: string; reason: string }>,
    settledCalls: 0,
    settle: Promise.resolve() as Promise<void>,
  };
  const closing = new AbortController();
  let onRetry: (() => void) | undefined;
  let onExpire: (() => void) | undefined;
  const outage = new StartOutage({
    ping: async () => {
      state.pings++;
      if (!state.answers) throw new BerthError('BERTH_ENGINE_TIMEOUT', 'ping did not answer');
    },
    settled: () => {
      state.settledCalls++;
      return state.settle;
    },
    limitMs: () => options.limitMs,
    retry: (ids) => {
      state.retried.push([...ids]);
      onRetry?.();
    },
    expire: (taskId, reason) => {
      state.expired.push({ taskId, reason });
      onExpire?.();
    },
    signal: closing.signal,
    logger: silentLogger,
    pollMs: 5,
    now: () => state.nowMs,
  });
  return {
    state,
    outage,
    close: () => closing.abort(),
    nextRetry: () => new Promise<void>((resolve) => (onRetry = resolve)),
    nextExpiry: () => new Promise<void>((resolve) => (onExpire = resolve)),
  };
}

const timeout = (): BerthError => new BerthError('BERTH_ENGINE_TIMEOUT', 'create container did not answer within 30000 ms');

describe('StartOutage: a start that failed because the engine did not answer waits for it', () => {
  test('an error that is not transient fails the task at once, without asking the engine', async () => {
    const { state, outage } = scripted();
    for (const code of ['BERTH_VALIDATION', 'BERTH_IMAGE_NOT_FOUND', 'BERTH_NAME_CONFLICT', 'BERTH_ENGINE_BAD_REQUEST'] as const) {
      const verdict = await outage.onStartFailed({ id: 't1', seq: 1 }, new BerthError(code, 'no'));
      assert.deepEqual(verdict, { action: 'fail', reason: `${code}: no` });
    }
    assert.equal(state.pings, 0);
    assert.equal(outage.waitingCount, 0);
  });

  test('tasks wait while the engine does not answer, and are retried in submission order once it answers and late creates have settled', async (t) => {
    const { state, outage, close, nextRetry } = scripted();
    t.after(close);
    let settle!: () => void;
    state.settle = new Promise<void>((resolve) => (settle = resolve));
    for (const [id, seq] of [['late', 3], ['early', 1], ['middle', 2]] as const) {
      assert.deepEqual(await outage.onStartFailed({ id, seq }, timeout()), { action: 'wait' });
    }
    assert.equal(outage.waitingCount, 3);
    assert.ok(outage.isWaiting('early'));
    const retried = nextRetry();
    state.answers = true;
    // The engine answers: the outage waits for the driver's late-create windows before it retries.
    await waitFor(() => state.settledCalls > 0);
    assert.deepEqual(state.retried, [], 'nothing is retried before the late-create windows have closed');
    settle();
    await retried;
    assert.deepEqual(state.retried, [['early', 'middle', 'late']]);
    assert.equal(outage.waitingCount, 0);
    await outage.idle();
  });

  test('a task waiting past tasks.startOutageLimit ends, with a reason that says for how long the engine was unreachable', async (t) => {
    const { state, outage, close, nextExpiry } = scripted({ limitMs: 60_000 });
    t.after(close);
    assert.deepEqual(await outage.onStartFailed({ id: 't1', seq: 1 }, timeout()), { action: 'wait' });
    const expired = nextExpiry();
    state.nowMs += 61_000;
    await expired;
    assert.equal(state.expired.length, 1);
    assert.equal(state.expired[0]!.taskId, 't1');
    assert.match(state.expired[0]!.reason, /^BERTH_ENGINE_TIMEOUT: the engine was unreachable for 1m1s while the task waited to start \(tasks\.startOutageLimit is 1m\); last error: create container did not answer/);
    assert.deepEqual(state.retried, []);
    await outage.idle();
  });

  test('a retry that fails again past the limit fails at once', async (t) => {
    const { state, outage, close } = scripted({ limitMs: 60_000 });
    t.after(close);
    assert.deepEqual(await outage.onStartFailed({ id: 't1', seq: 1 }, timeout()), { action: 'wait' });
    state.nowMs += 60_000;
    const verdict = await outage.onStartFailed({ id: 't1', seq: 1 }, new BerthError('BERTH_ENGINE_UNAVAILABLE', 'connect ECONNREFUSED'));
    assert.equal(verdict.action, 'fail');
    assert.match(verdict.action === 'fail' ? verdict.reason : '', /^BERTH_ENGINE_UNAVAILABLE: the engine was unreachable for 1m .*last error: connect ECONNREFUSED$/);
  });

  test(`a transient error while the engine answers its ping fails the task after ${MAX_ANSWERED_START_FAILURES} attempts`, async (t) => {
    const { state, outage, close } = scripted();
    t.after(close);
    state.answers = true;
    const serverError = new BerthError('BERTH_ENGINE_SERVER_ERROR', 'driver failed programming external connectivity: port is already allocated');
    for (let attempt = 1; attempt < MAX_ANSWERED_START_FAILURES; attempt++) {
      assert.deepEqual(await outage.onStartFailed({ id: 't1', seq: 1 }, serverError), { action: 'wait' }, `attempt ${attempt}`);
    }
    const verdict = await outage.onStartFailed({ id: 't1', seq: 1 }, serverError);
    assert.deepEqual(verdict, { action: 'fail', reason: `BERTH_ENGINE_SERVER_ERROR: ${serverError.message} (the engine answers; the start failed ${MAX_ANSWERED_START_FAILURES} times)` });
  });

  test('a call that did not answer while the engine answers its ping is an outage: the task keeps waiting, retried ever later', async (t) => {
    const { state, outage, close, nextRetry } = scripted();
    t.after(close);
    state.answers = true;
    for (let attempt = 1; attempt <= MAX_ANSWERED_START_FAILURES + 2; attempt++) {
      assert.deepEqual(await outage.onStartFailed({ id: 't1', seq: 1 }, timeout()), { action: 'wait' }, `attempt ${attempt}`);
    }
    // Not retried before its pause has passed (the scripted clock stands still), then retried.
    const retried = nextRetry();
    await waitFor(() => state.pings > MAX_ANSWERED_START_FAILURES + 4);
    assert.deepEqual(state.retried, []);
    state.nowMs += 30_000;
    await retried;
    assert.deepEqual(state.retried, [['t1']]);
    await outage.idle();
  });

  test('a waiting task that is cancelled is not retried; one whose retry is under way cannot be cancelled here', async (t) => {
    const { state, outage, close, nextRetry } = scripted();
    t.after(close);
    await outage.onStartFailed({ id: 'stopped', seq: 1 }, timeout());
    await outage.onStartFailed({ id: 'kept', seq: 2 }, timeout());
    assert.equal(outage.cancel('stopped'), true);
    assert.equal(outage.cancel('never-waited'), false);
    const retried = nextRetry();
    state.answers = true;
    await retried;
    assert.deepEqual(state.retried, [['kept']]);
    assert.equal(outage.cancel('kept'), false, 'its retry is under way');
    await outage.idle();
  });
});

describe('canonicalJson', () => {
  test('equal data gives equal text whatever the key order; array order counts', () => {
    const a = { image: 'busybox', resources: { memory: 1024, cpuMilli: 250 }, labels: { b: '2', a: '1' }, command: ['echo', 'hi'] };
    const b = { command: ['echo', 'hi'], labels: { a: '1', b: '2' }, resources: { cpuMilli: 250, memory: 1024 }, image: 'busybox' };
    assert.equal(canonicalJson(a), canonicalJson(b));
    assert.notEqual(canonicalJson(a), canonicalJson({ ...b, command: ['hi', 'echo'] }));
    assert.equal(canonicalJson({ a: 1, b: undefined }), canonicalJson({ a: 1 }));
  });
});

test('formatMs names hours, minutes and seconds', () => {
  assert.equal(formatMs(900_000), '15m');
  assert.equal(formatMs(61_000), '1m1s');
  assert.equal(formatMs(3_600_000 + 5000), '1h5s');
  assert.equal(formatMs(250), '250ms');
  assert.equal(formatMs(1000), '1s');
});

/** Yields to the event loop until `condition` holds (the outage's loop runs on timers of a few ms). */
async function waitFor(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setImmediate(resolve));
}

test('a pull that failed because the engine did not answer is transient; one the registry failed is not', () => {
  const engineDown = new BerthError('BERTH_IMAGE_PULL_FAILED', 'pull failed', { cause: new BerthError('BERTH_ENGINE_UNAVAILABLE', 'connect ECONNREFUSED') });
  const registryDown = new BerthError('BERTH_IMAGE_PULL_FAILED', 'pull failed: registry answered 502');
  assert.equal(isTransientStartError(engineDown), true);
  assert.equal(isTransientStartError(registryDown), false);
  assert.equal(isTransientStartError(new BerthError('BERTH_ENGINE_SERVER_ERROR', '500')), true);
  assert.equal(isTransientStartError(new BerthError('BERTH_ENGINE_CONFLICT', 'in use')), false);
});
