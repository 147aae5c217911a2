import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { waitForPlacement, type PlacementNews } from '../../../src/agent/placement-wait.js';
import { BerthError } from '../../../src/common/errors.js';

/** Placement news the test sends by hand, counting its listeners. */
function scriptedNews(): { news: PlacementNews; send(taskId: string | undefined): void; listeners(): number } {
  const listeners = new Set<(taskId: string | undefined) => void>();
  return {
    news: (listener) => {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    send: (taskId) => {
      for (const listener of [...listeners]) listener(taskId);
    },
    listeners: () => listeners.size,
  };
}

/** A look that answers from a script, one answer per call (the last repeats), and resolves `looked` on each call. */
function scriptedLook<T>(answers: readonly T[]): { look: () => Promise<T>; calls(): number; nextCall(): Promise<void> } {
  let calls = 0;
  let waiting: (() => void) | undefined;
  return {
    look: async () => {
      const answer = answers[Math.min(calls, answers.length - 1)]!;
      calls++;
      waiting?.();
      return answer;
    },
    calls: () => calls,
    nextCall: () => new Promise<void>((resolve) => (waiting = resolve)),
  };
}

const HOUR = 3_600_000;

describe('waiting for a task\'s placement', () => {
  it('settles at the first look when the task is placed already, without waiting', async () => {
    const { news, listeners } = scriptedNews();
    const result = await waitForPlacement({ taskId: 't', look: async () => 'placed', isSettled: (s) => s === 'placed', news, timeoutMs: HOUR, fallbackPollMs: HOUR });
    assert.deepEqual(result, { found: 'placed', outcome: 'settled', looks: 1 });
    assert.equal(listeners(), 0, 'unsubscribed');
  });

  it('looks again on news of its task (and on "look again" news), not on news of other tasks, and with no poll in between', async () => {
    const { news, send } = scriptedNews();
    const script = scriptedLook(['queued', 'queued', 'placed']);
    const waiting = waitForPlacement({ taskId: 't', look: script.look, isSettled: (s) => s === 'placed', news, timeoutMs: HOUR, fallbackPollMs: HOUR });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(script.calls(), 1);
    send('other');
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(script.calls(), 1, 'news of another task wakes nothing');
    let next = script.nextCall();
    send(undefined);
    await next;
    assert.equal(script.calls(), 2);
    next = script.nextCall();
    send('t');
    await next;
    assert.deepEqual(await waiting, { found: 'placed', outcome: 'settled', looks: 3 });
  });

  it('does not miss news that comes while a look is under way: it looks again at once', async () => {
    const { news, send } = scriptedNews();
    let calls = 0;
    const result = await waitForPlacement({
      taskId: 't',
      look: async () => {
        calls++;
        // The task is placed (and its news sent) between the read and the sleep.
        if (calls === 1) send('t');
        return calls === 1 ? 'queued' : 'placed';
      },
      isSettled: (s) => s === 'placed',
      news,
      timeoutMs: HOUR,
      fallbackPollMs: HOUR,
    });
    assert.deepEqual(result, { found: 'placed', outcome: 'settled', looks: 2 });
  });

  it('looks again by its fallback poll when no news comes', async () => {
    const { news } = scriptedNews();
    const script = scriptedLook(['queued', 'queued', 'placed']);
    const result = await waitForPlacement({ taskId: 't', look: script.look, isSettled: (s) => s === 'placed', news, timeoutMs: HOUR, fallbackPollMs: 1 });
    assert.deepEqual(result, { found: 'placed', outcome: 'settled', looks: 3 });
  });

  it('ends at its deadline with what it found last', async () => {
    const { news, listeners } = scriptedNews();
    const result = await waitForPlacement({ taskId: 't', look: async () => 'queued', isSettled: () => false, news, timeoutMs: 1, fallbackPollMs: HOUR });
    assert.equal(result.outcome, 'timeout');
    assert.equal(result.found, 'queued');
    assert.equal(listeners(), 0);
  });

  it('ends at once when aborted (the agent shuts down, the client went away)', async () => {
    const { news, listeners } = scriptedNews();
    const stop = new AbortController();
    const script = scriptedLook(['queued']);
    const waiting = waitForPlacement({ taskId: 't', look: script.look, isSettled: () => false, news, timeoutMs: HOUR, fallbackPollMs: HOUR, signal: stop.signal });
    await new Promise((resolve) => setImmediate(resolve));
    stop.abort();
    const result = await waiting;
    assert.equal(result.outcome, 'aborted');
    assert.equal(result.looks, 1);
    assert.equal(listeners(), 0);
  });

  it('fails at once when a look fails (PostgreSQL away), and unsubscribes', async () => {
    const { news, send, listeners } = scriptedNews();
    let calls = 0;
    const waiting = waitForPlacement({
      taskId: 't',
      look: async () => {
        calls++;
        if (calls === 2) throw new BerthError('BERTH_CLUSTER_UNAVAILABLE', 'read the task: the cluster database did not answer');
        return 'queued';
      },
      isSettled: () => false,
      news,
      timeoutMs: HOUR,
      fallbackPollMs: HOUR,
    });
    await new Promise((resolve) => setImmediate(resolve));
    // The listening connection went away: look again, and the look fails.
    send(undefined);
    await assert.rejects(waiting, (error: unknown) => error instanceof BerthError && error.code === 'BERTH_CLUSTER_UNAVAILABLE');
    assert.equal(listeners(), 0);
  });
});
