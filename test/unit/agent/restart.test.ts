import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { isBerthError, ValidationError } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import { decideRestart, planRestart, RestartWaits, startAttemptKey, type AttemptTiming } from '../../../src/agent/restart.js';
import { toTaskView } from '../../../src/agent/http/views.js';
import { resolveTaskSpec, type ResolvedRestartPolicy } from '../../../src/spec/schema.js';
import { endTransition, openStore } from '../../../src/state/index.js';
import { restartFlag } from '../../../src/cli/flags.js';

const dir = mkdtempSync(path.join(tmpdir(), 'berth-restart-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function issuesOf(spec: unknown): Array<{ field: string; rule: string }> {
  try {
    resolveTaskSpec(spec);
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    return error.issues.map((i) => ({ field: i.field, rule: i.rule }));
  }
  return [];
}

const onFailure = (policy: Partial<Exclude<ResolvedRestartPolicy, { policy: 'never' }>> = {}): ResolvedRestartPolicy => ({
  policy: 'on-failure',
  attempts: 2,
  delayMs: 200,
  backoff: 1,
  maxDelayMs: 60_000,
  mode: 'fail',
  on: ['failed', 'oom', 'timed-out', 'lost'],
  ...policy,
});

/** `n` attempts, one a second, the last ending at `nowMs`. */
const attemptsSoFar = (n: number, nowMs = 100_000): AttemptTiming[] => Array.from({ length: n }, (_, i) => ({ startedAtMs: nowMs - (n - i) * 1000, finishedAtMs: nowMs - (n - i - 1) * 1000 }));

describe('the restart decision', () => {
  test('policy never ends the task whatever its end', () => {
    assert.deepEqual(decideRestart({ policy: 'never' }, attemptsSoFar(1), { kind: 'failed' }, 100_000), { action: 'end', why: 'never' });
  });

  test('on-failure never restarts a success or a cancellation (a stop)', () => {
    for (const kind of ['success', 'cancelled'] as const) {
      assert.deepEqual(decideRestart(onFailure(), attemptsSoFar(1), { kind }, 100_000), { action: 'end', why: 'not-restarted-on' }, kind);
    }
  });

  test('failed, oom, timed-out and lost restart by default, after the delay', () => {
    for (const kind of ['failed', 'oom', 'timed-out', 'lost'] as const) {
      assert.deepEqual(decideRestart(onFailure(), attemptsSoFar(1), { kind }, 100_000), { action: 'restart', attempt: 2, delayMs: 200 }, kind);
    }
  });

  test('an end the policy does not list ends the task (oom excluded)', () => {
    const policy = onFailure({ on: ['failed', 'timed-out'] });
    assert.deepEqual(decideRestart(policy, attemptsSoFar(1), { kind: 'oom' }, 100_000), { action: 'end', why: 'not-restarted-on' });
    assert.equal(decideRestart(policy, attemptsSoFar(1), { kind: 'failed' }, 100_000).action, 'restart');
  });

  test('the delay grows by the backoff factor per restart, up to the max delay', () => {
    const policy = onFailure({ attempts: 5, delayMs: 200, backoff: 3, maxDelayMs: 3000 });
    const delays = [1, 2, 3, 4, 5].map((n) => decideRestart(policy, attemptsSoFar(n), { kind: 'failed' }, 100_000));
    assert.deepEqual(delays, [
      { action: 'restart', attempt: 2, delayMs: 200 },
      { action: 'restart', attempt: 3, delayMs: 600 },
      { action: 'restart', attempt: 4, delayMs: 1800 },
      { action: 'restart', attempt: 5, delayMs: 3000 },
      { action: 'restart', attempt: 6, delayMs: 3000 },
    ]);
  });

  test('mode fail: with the restarts used up the task ends (attempts + 1 attempts in all)', () => {
    const policy = onFailure({ attempts: 2 });
    assert.equal(decideRestart(policy, attemptsSoFar(2), { kind: 'failed' }, 100_000).action, 'restart');
    assert.deepEqual(decideRestart(policy, attemptsSoFar(3), { kind: 'failed' }, 100_000), { action: 'end', why: 'attempts-exhausted' });
    assert.deepEqual(decideRestart(onFailure({ attempts: 0 }), attemptsSoFar(1), { kind: 'failed' }, 100_000), { action: 'end', why: 'attempts-exhausted' });
  });

  test('with an interval only the restarts within it count, and the backoff starts again', () => {
    const policy = onFailure({ attempts: 1, intervalMs: 10_000, backoff: 2 });
    // Attempt 2 (the one restart) started 20 s ago: outside the interval.
    const old: AttemptTiming[] = [{ startedAtMs: 70_000, finishedAtMs: 75_000 }, { startedAtMs: 80_000, finishedAtMs: 99_000 }, { startedAtMs: 99_500, finishedAtMs: 100_000 }];
    assert.deepEqual(decideRestart(policy, old.slice(0, 2), { kind: 'failed' }, 100_000), { action: 'restart', attempt: 3, delayMs: 200 });
    assert.deepEqual(decideRestart(policy, old, { kind: 'failed' }, 100_000), { action: 'end', why: 'attempts-exhausted' });
  });

  test('mode delay: with the restarts used up it waits until the interval lets another in', () => {
    const policy = onFailure({ attempts: 1, intervalMs: 10_000, mode: 'delay' });
    const history: AttemptTiming[] = [{ startedAtMs: 90_000, finishedAtMs: 91_000 }, { startedAtMs: 93_000, finishedAtMs: 100_000 }];
    // The one restart counted (attempt 2, started at 93 s) leaves the interval at 103 s.
    assert.deepEqual(decideRestart(policy, history, { kind: 'failed' }, 100_000), { action: 'restart', attempt: 3, delayMs: 3000 });
    // Never sooner than the delay.
    assert.deepEqual(decideRestart(policy, history, { kind: 'failed' }, 102_900), { action: 'restart', attempt: 3, delayMs: 200 });
  });

  test('each attempt has its own start name; the first keeps the task id, as before restarts', () => {
    assert.equal(startAttemptKey('job-1', 1), 'job-1');
    assert.equal(startAttemptKey('job-1', 2), 'job-1.2');
    assert.notEqual(startAttemptKey('job-1', 3), startAttemptKey('job-1', 2));
  });
});

describe('the restart field of a task spec', () => {
  test('is optional, and never by default', () => {
    assert.deepEqual(resolveTaskSpec({ image: 'a' }).restart, { policy: 'never' });
    assert.deepEqual(resolveTaskSpec({ image: 'a', restart: {} }).restart, { policy: 'never' });
  });

  test('on-failure takes defaults after Nomad: 2 attempts, 15 s, constant, mode fail, every failure', () => {
    assert.deepEqual(resolveTaskSpec({ image: 'a', restart: { policy: 'on-failure' } }).restart, {
      policy: 'on-failure',
      attempts: 2,
      delayMs: 15_000,
      backoff: 1,
      maxDelayMs: 300_000,
      mode: 'fail',
      on: ['failed', 'oom', 'timed-out', 'lost'],
    });
  });

  test('resolves durations to milliseconds', () => {
    const restart = resolveTaskSpec({ image: 'a', restart: { policy: 'on-failure', attempts: 3, delay: '200ms', backoff: 2, maxDelay: '1s', interval: '1m', mode: 'delay', on: ['failed'] } }).restart;
    assert.deepEqual(restart, { policy: 'on-failure', attempts: 3, delayMs: 200, backoff: 2, maxDelayMs: 1000, intervalMs: 60_000, mode: 'delay', on: ['failed'] });
  });

  test('names each field at fault with its rule', () => {
    assert.deepEqual(issuesOf({ image: 'a', restart: { policy: 'always' } }).map((i) => i.field), ['restart.policy']);
    assert.deepEqual(issuesOf({ image: 'a', restart: { policy: 'on-failure', attempts: 101 } }), [{ field: 'restart.attempts', rule: 'must be at most 100' }]);
    assert.deepEqual(issuesOf({ image: 'a', restart: { policy: 'on-failure', attempts: 1.5 } }), [{ field: 'restart.attempts', rule: 'must be a whole number' }]);
    assert.deepEqual(issuesOf({ image: 'a', restart: { policy: 'on-failure', backoff: 0.5 } }), [{ field: 'restart.backoff', rule: 'must be 1 (a constant delay) to 10' }]);
    assert.deepEqual(issuesOf({ image: 'a', restart: { policy: 'on-failure', delay: '10s', maxDelay: '5s' } }), [{ field: 'restart.maxDelay', rule: 'must be at least the delay (10s)' }]);
    assert.deepEqual(issuesOf({ image: 'a', restart: { policy: 'on-failure', mode: 'delay' } }).map((i) => i.field), ['restart.interval']);
    assert.deepEqual(issuesOf({ image: 'a', restart: { policy: 'on-failure', on: [] } }).map((i) => i.field), ['restart.on']);
    assert.deepEqual(issuesOf({ image: 'a', restart: { policy: 'on-failure', on: ['failed', 'failed'] } }), [{ field: 'restart.on', rule: 'must not name an end twice' }]);
    assert.deepEqual(issuesOf({ image: 'a', restart: { policy: 'on-failure', on: ['success'] } }).map((i) => i.field), ['restart.on[0]']);
    assert.deepEqual(issuesOf({ image: 'a', restart: { policy: 'never', attempts: 3 } }), [{ field: 'restart.policy', rule: 'is "never", which takes no attempts: set policy "on-failure"' }]);
    assert.deepEqual(issuesOf({ image: 'a', restart: { policy: 'on-failure', tries: 3 } }), [{ field: 'restart', rule: 'unknown field(s): tries' }]);
  });
});

describe('a restart in the store and the view', () => {
  const spec = { image: 'busybox:latest', restart: { policy: 'on-failure' as const, attempts: 1, delay: 200 } };

  test('moves a running task back to starting with the ended attempt listed, and lists the next once it runs and ends', () => {
    let now = 1_700_000_000_000;
    const store = openStore(path.join(dir, 'a', 'berth.db'), { nowMs: () => (now += 1000) });
    try {
      store.tasks.insert({ id: 't1', spec });
      store.tasks.update('t1', { to: 'starting' });
      const running = store.tasks.update('t1', { to: 'running', containerId: 'c1' });
      const plan = planRestart(running, { kind: 'failed', exitCode: 3 }, now, now);
      assert.ok(plan);
      assert.equal(plan.attempt, 2);
      const waiting = store.tasks.recordRestart('t1', plan.ended, plan.restartAtMs);
      assert.equal(waiting.state, 'starting');
      assert.equal(waiting.containerId, undefined);
      assert.equal(waiting.restartAtMs, plan.restartAtMs);
      const waitingView = toTaskView(waiting);
      assert.equal(waitingView.restarts, 1);
      assert.deepEqual(waitingView.attempts?.map((a) => [a.attempt, a.containerId, a.endState?.kind, a.exitCode]), [[1, 'c1', 'failed', 3]]);
      assert.equal(waitingView.restartAt, new Date(plan.restartAtMs).toISOString());

      const second = store.tasks.update('t1', { to: 'running', containerId: 'c2' });
      assert.equal(second.restartAtMs, undefined);
      // The one restart allowed is used: the second failure ends the task.
      assert.equal(planRestart(second, { kind: 'failed', exitCode: 4 }, now, now), undefined);
      const ended = store.tasks.update('t1', endTransition({ kind: 'failed', exitCode: 4 }));
      const view = toTaskView(ended);
      assert.equal(view.restarts, 1);
      assert.deepEqual(view.attempts?.map((a) => [a.attempt, a.containerId, a.endState?.kind, a.exitCode]), [[1, 'c1', 'failed', 3], [2, 'c2', 'failed', 4]]);
      assert.equal(view.exitCode, 4);
    } finally {
      store.close();
    }
  });

  test('a task being stopped is not restarted, and a restart from any state but running is refused', () => {
    const store = openStore(path.join(dir, 'b', 'berth.db'));
    try {
      store.tasks.insert({ id: 't2', spec });
      store.tasks.update('t2', { to: 'starting' });
      store.tasks.update('t2', { to: 'running', containerId: 'c1' });
      const stopping = store.tasks.update('t2', { to: 'stopping' });
      assert.equal(planRestart(stopping, { kind: 'failed', exitCode: 137 }, Date.now(), Date.now()), undefined);
      assert.throws(() => store.tasks.recordRestart('t2', { attempt: 1, finishedAtMs: 1, endState: { kind: 'failed', exitCode: 1 } }, 2), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
    } finally {
      store.close();
    }
  });

  test('a task without a restart policy shows no attempts (the view is as before)', () => {
    const store = openStore(path.join(dir, 'c', 'berth.db'));
    try {
      store.tasks.insert({ id: 't3', spec: { image: 'busybox:latest' } });
      const view = toTaskView(store.tasks.get('t3')!);
      assert.equal(view.attempts, undefined);
      assert.equal(view.restarts, undefined);
    } finally {
      store.close();
    }
  });
});

describe('the waits between attempts', () => {
  test('a wait ends when due, and a due time already past ends it at once', async () => {
    const waits = new RestartWaits(silentLogger);
    const signal = new AbortController().signal;
    assert.equal(await waits.until('t', Date.now() + 20, signal), 'due');
    assert.equal(await waits.until('t', Date.now() - 60_000, signal), 'due');
    assert.equal(waits.size, 0);
  });

  test('a cancel (a stop) ends a wait, and finds a task armed before its wait began', async () => {
    const waits = new RestartWaits(silentLogger);
    const signal = new AbortController().signal;
    const waiting = waits.until('t', Date.now() + 60_000, signal);
    assert.equal(waits.cancel('t'), true);
    assert.equal(await waiting, 'cancelled');
    waits.arm('u');
    assert.equal(waits.cancel('u'), true);
    assert.equal(waits.cancel('u'), false, 'cancelled once');
    assert.equal(waits.cancel('nobody'), false);
  });

  test('shutdown ends a wait as closing', async () => {
    const waits = new RestartWaits(silentLogger);
    const closing = new AbortController();
    const waiting = waits.until('t', Date.now() + 60_000, closing.signal);
    closing.abort();
    assert.equal(await waiting, 'closing');
    assert.equal(waits.size, 0);
  });
});

describe('berth submit --restart, in docker\'s words', () => {
  test('no and on-failure[:max-restarts], with --restart-delay', () => {
    assert.deepEqual(restartFlag('no'), { policy: 'never' });
    assert.deepEqual(restartFlag('on-failure'), { policy: 'on-failure' });
    assert.deepEqual(restartFlag('on-failure:3', '500ms'), { policy: 'on-failure', attempts: 3, delay: '500ms' });
  });

  test('refuses always and unless-stopped (a task runs to its end), other words, and a delay without a restart', () => {
    const rule = (value: string, delay?: string): string => {
      try {
        restartFlag(value, delay);
      } catch (error) {
        assert.ok(error instanceof ValidationError);
        return `${error.issues[0]!.field}: ${error.issues[0]!.rule}`;
      }
      return 'accepted';
    };
    assert.match(rule('always'), /^--restart: .*always and unless-stopped do not apply/);
    assert.match(rule('unless-stopped'), /^--restart: /);
    assert.match(rule('on-failure:x'), /^--restart: must be no or on-failure\[:max-restarts\]/);
    assert.match(rule('no:3'), /^--restart: /);
    assert.match(rule('no', '1s'), /^--restart-delay: needs --restart on-failure/);
    assert.match(rule('on-failure', '25h'), /^--restart-delay: must be at most 24h/);
  });
});
