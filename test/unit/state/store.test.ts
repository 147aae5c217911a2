import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { BerthError, isBerthError } from '../../../src/common/errors.js';
import { endTransition, hasEnded, META_KEYS, MIGRATIONS, openStore, SCHEMA_VERSION, TASK_STATES, type Store } from '../../../src/state/index.js';
import { openTestStore, reopenableTestStore, STORE_BACKEND } from '../../support/store.js';

let dir: string;
let counter = 0;
const freshFile = (): string => path.join(dir, `store-${++counter}`, 'berth.db');

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'berth-state-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function clock(startMs = 1_700_000_000_000): () => number {
  let now = startMs;
  return () => (now += 1000);
}

const spec = (labels: Record<string, string> = {}) => ({ image: 'busybox:latest', command: ['true'], labels });

describe('openStore: schema and pragmas', () => {
  it('runs the migrations once and re-opening is idempotent', () => {
    const file = freshFile();
    const first = openStore(file);
    assert.deepEqual(first.appliedMigrations, MIGRATIONS.map((m) => m.version));
    assert.equal(first.schemaVersion(), SCHEMA_VERSION);
    first.close();

    const second = openStore(file);
    assert.deepEqual(second.appliedMigrations, []);
    assert.equal(second.schemaVersion(), SCHEMA_VERSION);
    second.close();

    const raw = new Database(file, { readonly: true });
    const history = raw.prepare('SELECT version, name FROM schema_migrations').all();
    raw.close();
    assert.deepEqual(history, [
      { version: 1, name: 'tasks, image holders and meta' },
      { version: 2, name: "why a task's output was cut" },
      { version: 3, name: 'the event log, for clients that resume a stream' },
      { version: 4, name: 'paused tasks' },
      { version: 5, name: 'ended tasks by end time, for retention' },
      { version: 6, name: 'what a task used, recorded at its end' },
      { version: 7, name: 'restart attempts' },
      { version: 8, name: 'task health' },
      { version: 9, name: 'sealed task secrets' },
      { version: 10, name: 'task artifacts' },
      { version: 11, name: 'published host ports' },
      { version: 12, name: 'task groups' },
      { version: 13, name: 'how a task started (warm pools)' },
      { version: 14, name: 'cluster claims and the report outbox' },
    ]);
  });

  it('applies a step the history does not list even below the schema version (steps released out of order)', () => {
    const file = freshFile();
    openStore(file).close();
    // As a database made by a berth that had step 8 before it had step 5 would be.
    const raw = new Database(file);
    raw.exec('DROP INDEX tasks_ended_by_finish');
    raw.prepare('DELETE FROM schema_migrations WHERE version = 5').run();
    raw.close();
    const store = openStore(file);
    assert.deepEqual(store.appliedMigrations, [5]);
    assert.equal(store.schemaVersion(), SCHEMA_VERSION);
    store.close();
    const check = new Database(file, { readonly: true });
    assert.ok(check.prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'tasks_ended_by_finish'").get());
    check.close();
  });

  it('uses WAL mode with synchronous NORMAL', () => {
    const store = openStore(freshFile());
    assert.equal(store.journalMode(), 'wal');
    store.close();
  });

  it('creates the database file private (0600) in a new directory', () => {
    const file = freshFile();
    openStore(file).close();
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(path.dirname(file)).mode & 0o777, 0o700);
  });

  it('refuses a database written by a newer berth, naming both versions', () => {
    const file = freshFile();
    openStore(file).close();
    const raw = new Database(file);
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    assert.throws(() => openStore(file), (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_VALIDATION'));
      assert.match(error.message, new RegExp(`schema version ${SCHEMA_VERSION + 1}, newer than this berth supports \\(${SCHEMA_VERSION}\\)`));
      return true;
    });
  });

  it('close is idempotent and disposes', () => {
    const store = openTestStore();
    store.close();
    store.close();
    assert.equal(store.isOpen, false);
  });
});

describe('hasEnded', () => {
  it('says a task has ended once it is exited, lost or removed, and not before', () => {
    assert.deepEqual(TASK_STATES.filter((state) => hasEnded(state)), ['exited', 'lost', 'removed']);
  });
});

describe('store.tasks', () => {
  let store: Store;
  beforeEach(() => {
    store = openTestStore({ nowMs: clock() });
  });

  it('inserts a task as pending and reads it back', () => {
    store = openTestStore({ nowMs: () => 1_700_000_001_000 });
    const { inserted, task } = store.tasks.insert({ id: 't1', spec: spec({ team: 'a' }), reservation: { memoryBytes: 64 << 20, cpuMilli: 500 } });
    assert.equal(inserted, true);
    assert.equal(task.state, 'pending');
    assert.equal(task.id, 't1');
    assert.deepEqual(task.spec, spec({ team: 'a' }));
    assert.deepEqual(task.reservation, { memoryBytes: 64 << 20, cpuMilli: 500 });
    assert.equal(task.submittedAtMs, 1_700_000_001_000);
    assert.deepEqual(task.logCursor, {});
    assert.deepEqual(store.tasks.get('t1'), task);
    assert.equal(store.tasks.get('nope'), undefined);
    assert.ok(Object.isFrozen(task) && Object.isFrozen(task.spec));
  });

  it('keeps a spec with a health check as written, across a re-open', () => {
    const file = freshFile();
    const withCheck = { ...spec(), healthcheck: { command: ['cat', '/tmp/ready'], interval: '500ms', startPeriod: 10_000, retries: 2 } };
    const open = reopenableTestStore(file);
    const first = open();
    first.tasks.insert({ id: 'hc', spec: withCheck });
    first.close();
    const second = open();
    try {
      assert.deepEqual(second.tasks.get('hc')?.spec, withCheck);
    } finally {
      second.close();
    }
  });

  it('does not overwrite a task whose id exists: inserted is false and the first record is returned', () => {
    store.tasks.insert({ id: 'dup', spec: spec({ v: '1' }) });
    const second = store.tasks.insert({ id: 'dup', spec: spec({ v: '2' }) });
    assert.equal(second.inserted, false);
    assert.deepEqual(second.task.spec.labels, { v: '1' });
    assert.equal(store.tasks.list().length, 1);
  });

  it('walks a task through its life and records timestamps, container id, end state and exit code', () => {
    store.tasks.insert({ id: 't', spec: spec() });
    assert.ok(store.tasks.update('t', { to: 'starting' }).admittedAtMs);
    assert.equal(store.tasks.setContainerId('t', 'c0ffee').containerId, 'c0ffee');
    const running = store.tasks.update('t', { to: 'running' });
    assert.equal(running.state, 'running');
    assert.ok(running.startedAtMs! > running.admittedAtMs!);
    store.tasks.update('t', { to: 'stopping' });
    const ended = store.tasks.update('t', { to: 'exited', endState: { kind: 'cancelled', exitCode: 143 } });
    assert.equal(ended.state, 'exited');
    assert.deepEqual(ended.endState, { kind: 'cancelled', exitCode: 143 });
    assert.equal(ended.exitCode, 143);
    assert.ok(ended.finishedAtMs! > ended.startedAtMs!);
    const removed = store.tasks.update('t', { to: 'removed' });
    assert.equal(removed.state, 'removed');
    assert.deepEqual(removed.endState, { kind: 'cancelled', exitCode: 143 }, 'the end state is kept after removal');
  });

  it('records a lost end state as the lost state, keeping the error as JSON', () => {
    store.tasks.insert({ id: 'l', spec: spec() });
    store.tasks.update('l', { to: 'starting' });
    store.tasks.update('l', { to: 'running', containerId: 'abc' });
    const error = new BerthError('BERTH_ENGINE_UNAVAILABLE', 'socket closed', { context: { containerId: 'abc' } });
    const lost = store.tasks.update('l', { to: 'lost', endState: { kind: 'lost', reason: 'the container vanished', error } });
    assert.equal(lost.state, 'lost');
    assert.equal(lost.exitCode, undefined);
    assert.deepEqual(lost.endState, {
      kind: 'lost',
      reason: 'the container vanished',
      error: { code: 'BERTH_ENGINE_UNAVAILABLE', message: 'socket closed', retryable: true, context: { containerId: 'abc' } },
    });
  });

  it('refuses illegal transitions with BERTH_TASK_STATE and leaves the record unchanged', () => {
    store.tasks.insert({ id: 't', spec: spec() });
    const illegalFromPending: Array<() => unknown> = [
      () => store.tasks.update('t', { to: 'running' }),
      () => store.tasks.update('t', { to: 'removed' }),
      () => store.tasks.update('t', { to: 'stopping' }),
    ];
    for (const attempt of illegalFromPending) {
      assert.throws(attempt, (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE') && error.context.state === 'pending');
    }
    store.tasks.update('t', { to: 'exited', endState: { kind: 'cancelled' } });
    assert.throws(
      () => store.tasks.update('t', { to: 'exited', endState: { kind: 'success', exitCode: 0 } }),
      (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE') && /cannot move from exited to exited/.test(error.message),
    );
    assert.throws(() => store.tasks.update('t', { to: 'starting' }), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
    assert.throws(() => store.tasks.setContainerId('t', 'x'), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
    assert.deepEqual(store.tasks.get('t')!.endState, { kind: 'cancelled' });
  });

  it('refuses to record a removal before the end is recorded (a handle may destroy a running task; a record keeps its end)', () => {
    store.tasks.insert({ id: 'r', spec: spec() });
    store.tasks.update('r', { to: 'starting' });
    store.tasks.update('r', { to: 'running', containerId: 'abc' });
    assert.throws(
      () => store.tasks.update('r', { to: 'removed' }),
      (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE') && error.context.state === 'running' && error.context.requested === 'removed',
    );
    assert.equal(store.tasks.get('r')!.state, 'running');
    store.tasks.update('r', endTransition({ kind: 'lost', reason: 'the container vanished' }));
    assert.equal(store.tasks.update('r', { to: 'removed' }).state, 'removed');
  });

  it('logs every recorded move once, with its end, and a refused move not at all', () => {
    const lines: Array<Record<string, unknown>> = [];
    const ignore = (): void => undefined;
    const logged = openTestStore({ nowMs: clock(), logger: { debug: (meta, message) => lines.push({ ...meta, message }), info: ignore, warn: ignore, error: ignore } });
    try {
      logged.tasks.insert({ id: 'g', spec: spec() });
      logged.tasks.update('g', { to: 'starting' });
      logged.tasks.update('g', endTransition({ kind: 'failed', exitCode: 125, reason: 'no image' }));
      assert.throws(() => logged.tasks.update('g', { to: 'running' }), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
      const moves = lines.filter((line) => line.message === 'task state changed').map(({ from, to, mover, end }) => ({ from, to, mover, end }));
      assert.deepEqual(moves, [
        { from: 'pending', to: 'starting', mover: 'record', end: undefined },
        { from: 'starting', to: 'exited', mover: 'record', end: 'failed' },
      ]);
    } finally {
      logged.close();
    }
  });

  it('reports an update of an unknown task as an internal error', () => {
    assert.throws(() => store.tasks.update('ghost', { to: 'starting' }), (error: unknown) => isBerthError(error, 'BERTH_INTERNAL'));
  });

  it('serves the pending queue in FIFO order of submission', () => {
    for (const id of ['c', 'a', 'b', 'd']) store.tasks.insert({ id, spec: spec() });
    assert.equal(store.tasks.nextPending()!.id, 'c');
    store.tasks.update('c', { to: 'starting' });
    assert.equal(store.tasks.nextPending()!.id, 'a');
    store.tasks.update('b', { to: 'exited', endState: { kind: 'cancelled' } });
    store.tasks.update('a', { to: 'starting' });
    assert.equal(store.tasks.nextPending()!.id, 'd');
    assert.deepEqual(store.tasks.list({ state: 'pending' }).map((t) => t.id), ['d']);
    store.tasks.update('d', { to: 'starting' });
    assert.equal(store.tasks.nextPending(), undefined);
  });

  it('lists with state, label, limit and order filters', () => {
    store.tasks.insert({ id: 'a', spec: spec({ team: 'x', 'io.example/tier': 'gold' }) });
    store.tasks.insert({ id: 'b', spec: spec({ team: 'y' }) });
    store.tasks.insert({ id: 'c', spec: spec({ team: 'x' }) });
    store.tasks.update('b', { to: 'starting' });
    const ids = (filter: Parameters<Store['tasks']['list']>[0]) => store.tasks.list(filter).map((t) => t.id);
    assert.deepEqual(ids({}), ['a', 'b', 'c']);
    assert.deepEqual(ids({ order: 'newest-first' }), ['c', 'b', 'a']);
    assert.deepEqual(ids({ state: 'pending' }), ['a', 'c']);
    assert.deepEqual(ids({ state: ['starting', 'running'] }), ['b']);
    assert.deepEqual(ids({ state: [] }), []);
    assert.deepEqual(ids({ label: 'team=x' }), ['a', 'c']);
    assert.deepEqual(ids({ label: 'io.example/tier' }), ['a']);
    assert.deepEqual(ids({ label: ['team=x', 'io.example/tier=gold'] }), ['a']);
    assert.deepEqual(ids({ label: 'team=z' }), []);
    assert.deepEqual(ids({ label: 'team=x', state: 'pending', limit: 1, order: 'newest-first' }), ['c']);
    assert.throws(() => ids({ limit: -1 }), (error: unknown) => isBerthError(error, 'BERTH_VALIDATION'));
  });

  it('lists the unended tasks in submission order and counts tasks by state', () => {
    for (const id of ['p', 's', 'r', 'x', 'e']) store.tasks.insert({ id, spec: spec() });
    store.tasks.update('s', { to: 'starting' });
    store.tasks.update('r', { to: 'starting' });
    store.tasks.update('r', { to: 'running' });
    store.tasks.update('x', { to: 'starting' });
    store.tasks.update('x', { to: 'stopping' });
    store.tasks.update('e', { to: 'exited', endState: { kind: 'cancelled' } });
    assert.deepEqual(store.tasks.listUnended().map((t) => `${t.id}:${t.state}`), ['p:pending', 's:starting', 'r:running', 'x:stopping']);
    assert.deepEqual(store.tasks.counts(), { pending: 1, starting: 1, running: 1, stopping: 1, exited: 1, lost: 0, removed: 0 });
  });

  it('moves a log cursor forward only, with nanosecond precision, per stream', () => {
    store.tasks.insert({ id: 't', spec: spec() });
    store.tasks.setLogCursor('t', { stdout: '2024-05-01T10:00:00.000000002Z' });
    store.tasks.setLogCursor('t', { stdout: '2024-05-01T10:00:00.000000001Z', stderr: '2024-05-01T10:00:00Z' });
    assert.deepEqual(store.tasks.get('t')!.logCursor, { stdout: '2024-05-01T10:00:00.000000002Z', stderr: '2024-05-01T10:00:00Z' });
    store.tasks.setLogCursor('t', { stdout: '2024-05-01T10:00:00.1Z' });
    assert.equal(store.tasks.get('t')!.logCursor.stdout, '2024-05-01T10:00:00.1Z');
    assert.throws(
      () => store.tasks.setLogCursor('t', { stderr: 'yesterday' }),
      (error: unknown) => isBerthError(error, 'BERTH_VALIDATION') && /logCursor\.stderr/.test(error.message),
    );
  });
});

describe('store.images', () => {
  let store: Store;
  beforeEach(() => {
    store = openTestStore({ nowMs: clock() });
  });

  it('keeps holders as a set: adding twice counts once', () => {
    assert.equal(store.images.addHolder({ imageId: 'sha256:aa', imageRef: 'busybox:latest', taskId: 't1' }), true);
    assert.equal(store.images.addHolder({ imageId: 'sha256:aa', imageRef: 'busybox:latest', taskId: 't1' }), false);
    assert.equal(store.images.addHolder({ imageId: 'sha256:aa', imageRef: 'busybox', taskId: 't2' }), true);
    assert.equal(store.images.addHolder({ imageId: 'sha256:bb', imageRef: 'alpine', taskId: 't1' }), true);
    assert.deepEqual(store.images.holdersOf('sha256:aa'), ['t1', 't2']);
    assert.deepEqual(
      store.images.holders().map((h) => [h.imageId, h.imageRef, h.taskId]),
      [['sha256:aa', 'busybox:latest', 't1'], ['sha256:aa', 'busybox', 't2'], ['sha256:bb', 'alpine', 't1']],
    );
  });

  it('removes one hold, or every hold of a task', () => {
    store.images.addHolder({ imageId: 'sha256:aa', imageRef: 'a', taskId: 't1' });
    store.images.addHolder({ imageId: 'sha256:bb', imageRef: 'b', taskId: 't1' });
    store.images.addHolder({ imageId: 'sha256:aa', imageRef: 'a', taskId: 't2' });
    assert.equal(store.images.removeHolder('sha256:aa', 't2'), true);
    assert.equal(store.images.removeHolder('sha256:aa', 't2'), false);
    assert.deepEqual(store.images.removeTask('t1'), ['sha256:aa', 'sha256:bb']);
    assert.deepEqual(store.images.holders(), []);
    assert.deepEqual(store.images.holdersOf('sha256:aa'), []);
  });
});

describe('store.meta', () => {
  it('gets, sets and ensures a value once', () => {
    const store = openTestStore();
    assert.equal(store.meta.get(META_KEYS.agentId), undefined);
    assert.equal(store.meta.ensure(META_KEYS.agentId, () => 'agent-1'), 'agent-1');
    assert.equal(store.meta.ensure(META_KEYS.agentId, () => 'agent-2'), 'agent-1');
    store.meta.set('k', 'v1');
    store.meta.set('k', 'v2');
    assert.equal(store.meta.get('k'), 'v2');
    store.close();
  });
});

describe('durability', () => {
  it('keeps tasks, holders and meta across close and re-open', () => {
    const open = reopenableTestStore(freshFile());
    const first = open();
    first.tasks.insert({ id: 'q1', spec: spec() });
    first.tasks.insert({ id: 'q2', spec: spec() });
    first.tasks.insert({ id: 'r', spec: spec({ keep: 'me' }) });
    first.tasks.update('r', { to: 'starting' });
    first.tasks.update('r', { to: 'running', containerId: 'cid' });
    first.tasks.setLogCursor('r', { stdout: '2024-05-01T10:00:00.123456789Z' });
    first.images.addHolder({ imageId: 'sha256:aa', imageRef: 'busybox', taskId: 'r' });
    first.meta.set(META_KEYS.agentId, 'agent-x');
    first.close();

    const second = open();
    const running = second.tasks.get('r')!;
    assert.equal(running.state, 'running');
    assert.equal(running.containerId, 'cid');
    assert.deepEqual(running.spec.labels, { keep: 'me' });
    assert.equal(running.logCursor.stdout, '2024-05-01T10:00:00.123456789Z');
    assert.deepEqual(second.tasks.listUnended().map((t) => t.id), ['q1', 'q2', 'r']);
    assert.equal(second.tasks.nextPending()!.id, 'q1');
    assert.deepEqual(second.images.holdersOf('sha256:aa'), ['r']);
    assert.equal(second.meta.get(META_KEYS.agentId), 'agent-x');
    // Submission order continues after a restart: a new task queues behind the old ones.
    const later = second.tasks.insert({ id: 'q3', spec: spec() }).task;
    assert.ok(later.seq > second.tasks.get('q2')!.seq);
    second.close();
  });

  it('keeps two stores on one file consistent: each sees the other\'s writes, and a transition races safely', () => {
    const file = freshFile();
    const open = reopenableTestStore(file);
    const a = open();
    const b = open();
    a.tasks.insert({ id: 't', spec: spec() });
    assert.equal(b.tasks.get('t')!.state, 'pending');
    b.tasks.update('t', { to: 'starting' });
    // The second writer read nothing stale: the transaction re-reads the state under the write lock.
    assert.throws(() => a.tasks.update('t', { to: 'starting' }), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
    for (let i = 0; i < 50; i++) (i % 2 === 0 ? a : b).tasks.insert({ id: `n${i}`, spec: spec() });
    assert.deepEqual(
      a.tasks.list({ state: 'pending' }).map((t) => t.id),
      Array.from({ length: 50 }, (_, i) => `n${i}`),
    );
    a.close();
    b.close();
    if (STORE_BACKEND === 'sqlite') {
      const raw = new Database(file, { readonly: true });
      assert.equal(raw.pragma('integrity_check', { simple: true }), 'ok');
      raw.close();
    }
  });
});
