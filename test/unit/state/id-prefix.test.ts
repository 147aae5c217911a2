import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { isBerthError } from '../../../src/common/errors.js';
import { migrate, type Store } from '../../../src/state/index.js';
import { taskIdOfPrefix } from '../../../src/tasks/id-prefix.js';
import { openTestStore } from '../../support/store.js';

function clock(startMs = 1_700_000_000_000): () => number {
  let now = startMs;
  return () => (now += 1000);
}

const spec = { image: 'busybox:latest', command: ['true'] };

function storeWith(ids: readonly string[]): Store {
  const store = openTestStore({ nowMs: clock() });
  for (const id of ids) store.tasks.insert({ id, spec });
  return store;
}

function removed(store: Store, id: string): void {
  store.tasks.update(id, { to: 'exited', endState: { kind: 'cancelled' } });
  store.tasks.update(id, { to: 'removed' });
}

describe('store.tasks.resolve: a task by its id or a unique prefix of it', () => {
  it('finds the one task whose id starts with the prefix', () => {
    const store = storeWith(['8cd09326-1111', '91ab0000-2222', '8dd00000-3333']);
    assert.equal(store.tasks.resolve('8c').id, '8cd09326-1111');
    assert.equal(store.tasks.resolve('8cd09326-1111').id, '8cd09326-1111');
    assert.equal(store.tasks.resolve('9').id, '91ab0000-2222');
  });

  it('an exact id wins over the longer ids it is a prefix of', () => {
    const store = storeWith(['job-1', 'job-10', 'job-11']);
    assert.equal(store.tasks.resolve('job-1').id, 'job-1');
  });

  it('refuses a prefix several tasks start with: BERTH_TASK_AMBIGUOUS names the first five in id order and the count', () => {
    const store = storeWith(['ab7', 'ab1', 'ab3', 'ab2', 'ab6', 'ab5', 'ab4', 'ac0']);
    assert.throws(
      () => store.tasks.resolve('ab'),
      (error: unknown) => {
        assert.ok(isBerthError(error, 'BERTH_TASK_AMBIGUOUS'));
        assert.equal(error.message, 'task id prefix ab is ambiguous: 7 tasks start with it (ab1, ab2, ab3, ab4, ab5, and 2 more); type more of the id');
        assert.deepEqual(error.context, { prefix: 'ab', count: 7, candidates: ['ab1', 'ab2', 'ab3', 'ab4', 'ab5'] });
        return true;
      },
    );
    const two = storeWith(['x-1', 'x-2']);
    assert.throws(() => two.tasks.resolve('x'), /task id prefix x is ambiguous: 2 tasks start with it \(x-1, x-2\); type more of the id$/);
  });

  it('matches by prefix only, case and all: no match is BERTH_TASK_NOT_FOUND', () => {
    const store = storeWith(['abc-1', 'xabc']);
    assert.throws(() => store.tasks.resolve('bc'), (error: unknown) => isBerthError(error, 'BERTH_TASK_NOT_FOUND') && error.message === 'no task bc');
    assert.throws(() => store.tasks.resolve('ABC'), (error: unknown) => isBerthError(error, 'BERTH_TASK_NOT_FOUND'));
    // The range's upper bound is the prefix with its last character raised: ids just past it are not taken.
    const edges = storeWith(['ab', 'ab.', 'ac', 'ab-']);
    assert.throws(() => edges.tasks.resolve('ab-x'), (error: unknown) => isBerthError(error, 'BERTH_TASK_NOT_FOUND'));
    assert.equal(edges.tasks.resolve('ab.').id, 'ab.');
    assert.equal(edges.tasks.findByIdPrefix('ab').count, 3);
  });

  it('does not see tasks in the states it is told to pass over (the API passes over removed ones)', () => {
    const store = storeWith(['dead-1', 'dead-2', 'job-1', 'job-10']);
    removed(store, 'dead-1');
    assert.equal(store.tasks.resolve('dead', { exceptStates: ['removed'] }).id, 'dead-2');
    assert.throws(() => store.tasks.resolve('dead'), (error: unknown) => isBerthError(error, 'BERTH_TASK_AMBIGUOUS'));
    // A removed task's exact id is not there any more: the prefix rule applies to what is left.
    removed(store, 'job-1');
    assert.equal(store.tasks.resolve('job-1', { exceptStates: ['removed'] }).id, 'job-10');
  });

  it('reads only the matching rows through the id index (the query plan searches the index, no table scan)', () => {
    const db = new Database(':memory:');
    // The store's own schema, as its migrations make it.
    migrate(db, ':memory:');
    const plan = db
      .prepare<[string, string], { detail: string }>("EXPLAIN QUERY PLAN SELECT * FROM tasks WHERE id >= ? AND id < ? AND state NOT IN ('removed') ORDER BY id LIMIT 5")
      .all('ab', 'ac')
      .map((row) => row.detail)
      .join('\n');
    db.close();
    assert.match(plan, /SEARCH tasks USING INDEX sqlite_autoindex_tasks_1 \(id>\? AND id<\?\)/);
  });
});

describe('store.tasks.list: order, limit and end kinds', () => {
  it('newest first with a limit gives the newest tasks', () => {
    const store = storeWith(['t1', 't2', 't3', 't4']);
    assert.deepEqual(store.tasks.list({ order: 'newest-first', limit: 2 }).map((t) => t.id), ['t4', 't3']);
    assert.deepEqual(store.tasks.list({ limit: 2 }).map((t) => t.id), ['t1', 't2']);
  });

  it('selects ended tasks by how they ended', () => {
    const store = storeWith(['ok', 'oom', 'late', 'bad', 'running']);
    store.tasks.update('ok', { to: 'exited', endState: { kind: 'success', exitCode: 0 } });
    store.tasks.update('oom', { to: 'exited', endState: { kind: 'oom', exitCode: 137, hint: 'raise it' } });
    store.tasks.update('late', { to: 'exited', endState: { kind: 'timed-out', exitCode: 137, timeoutMs: 5 } });
    store.tasks.update('bad', { to: 'exited', endState: { kind: 'failed', exitCode: 125, reason: 'BERTH_IMAGE_NOT_FOUND: no image' } });
    assert.deepEqual(store.tasks.list({ endKind: 'oom' }).map((t) => t.id), ['oom']);
    assert.deepEqual(store.tasks.list({ endKind: ['timed-out', 'failed'], order: 'newest-first' }).map((t) => t.id), ['bad', 'late']);
    assert.deepEqual(store.tasks.list({ endKind: [] }), []);
  });
});

describe('taskIdOfPrefix: the same rule among the ids on the engine\'s containers', () => {
  it('takes the exact id, else the one id that starts with the prefix; none leaves the prefix for the caller to report', () => {
    assert.equal(taskIdOfPrefix('job-1', ['job-10', 'job-1', 'job-11']), 'job-1');
    assert.equal(taskIdOfPrefix('8c', ['8cd0', '8cd0', '91ab']), '8cd0');
    assert.equal(taskIdOfPrefix('zz', ['8cd0']), 'zz');
    assert.throws(() => taskIdOfPrefix('j', ['job-2', 'job-1']), /task id prefix j is ambiguous: 2 tasks start with it \(job-1, job-2\)/);
  });
});
