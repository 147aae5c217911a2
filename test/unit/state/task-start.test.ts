import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isBerthError } from '../../../src/common/errors.js';
import { openTestStore } from '../../support/store.js';

describe('how a task started (migration 13)', () => {
  it('records a warm start with its pool, exec and container, and a cold one with its reason', () => {
    const store = openTestStore();
    try {
      store.tasks.insert({ id: 'w', spec: { image: 'busybox' } });
      store.tasks.update('w', { to: 'starting' });
      assert.equal(store.tasks.get('w')?.start, undefined, 'nothing before it started');
      const warm = store.tasks.setStart('w', { path: 'warm', pool: 'py', execId: 'exec-1' }, 'container-1');
      assert.deepEqual(warm.start, { path: 'warm', pool: 'py', execId: 'exec-1' });
      assert.equal(warm.containerId, 'container-1');

      store.tasks.insert({ id: 'c', spec: { image: 'busybox' } });
      store.tasks.update('c', { to: 'starting' });
      assert.deepEqual(store.tasks.setStart('c', { path: 'cold', reason: 'pool-empty' }, 'container-2').start, { path: 'cold', reason: 'pool-empty' });
      // Kept after the end, for the view.
      store.tasks.update('c', { to: 'running' });
      store.tasks.update('c', { to: 'exited', endState: { kind: 'success', exitCode: 0 } });
      assert.deepEqual(store.tasks.get('c')?.start, { path: 'cold', reason: 'pool-empty' });
    } finally {
      store.close();
    }
  });

  it('is refused for a task that is not starting or running, and forgotten when a restart waits for its next attempt', () => {
    const store = openTestStore();
    try {
      store.tasks.insert({ id: 'p', spec: { image: 'busybox' } });
      assert.throws(() => store.tasks.setStart('p', { path: 'cold', reason: 'no-pool' }, 'x'), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
      store.tasks.insert({ id: 'r', spec: { image: 'busybox' } });
      store.tasks.update('r', { to: 'starting' });
      store.tasks.setStart('r', { path: 'warm', pool: 'py', execId: 'exec-2' }, 'container-3');
      store.tasks.update('r', { to: 'running' });
      const restarted = store.tasks.recordRestart('r', { attempt: 1, containerId: 'container-3', finishedAtMs: Date.now(), endState: { kind: 'failed', exitCode: 1 }, exitCode: 1 }, Date.now() + 1000);
      // A restarted agent must not take the next attempt for the last one's exec.
      assert.equal(restarted.start, undefined);
      assert.equal(restarted.containerId, undefined);
    } finally {
      store.close();
    }
  });
});
