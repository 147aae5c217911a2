import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { ENDED_STATES_SQL, MIGRATIONS, openStore, TASK_STATES, hasEnded, type Store } from '../../../src/state/index.js';

let dir: string;
let counter = 0;
const freshFile = (): string => path.join(dir, `store-${++counter}`, 'berth.db');

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'berth-retention-state-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

const spec = { image: 'busybox:latest', command: ['true'], labels: { team: 'a' }, env: { PADDING: 'x'.repeat(400) } };

/** Records a task that ran and exited, ending at `finishedAtMs`. */
function ended(store: Store, id: string, finishedAtMs: number): void {
  store.tasks.insert({ id, spec, reservation: { memoryBytes: 1, cpuMilli: 1 } });
  store.tasks.update(id, { to: 'starting' });
  store.tasks.update(id, { to: 'running', containerId: 'c'.repeat(64) });
  store.tasks.update(id, { to: 'exited', endState: { kind: 'success', exitCode: 0 }, finishedAtMs });
}

function running(store: Store, id: string): void {
  store.tasks.insert({ id, spec });
  store.tasks.update(id, { to: 'starting' });
  store.tasks.update(id, { to: 'running', containerId: 'd'.repeat(64) });
}

/** The query plan's lines for `sql`, read through a second connection. */
function planOf(file: string, sql: string, ...params: unknown[]): string {
  const raw = new Database(file, { readonly: true });
  try {
    return raw
      .prepare(`EXPLAIN QUERY PLAN ${sql}`)
      .all(...params)
      .map((row) => (row as { detail: string }).detail)
      .join(' | ');
  } finally {
    raw.close();
  }
}

describe('store: the queries retention needs', () => {
  it('the ended states in SQL are exactly the states hasEnded says have ended, and the index of migration 3 uses that very text', () => {
    const endedStates = TASK_STATES.filter(hasEnded);
    assert.equal(ENDED_STATES_SQL, `state IN (${endedStates.map((s) => `'${s}'`).join(', ')})`);
    const file = freshFile();
    openStore(file).close();
    const raw = new Database(file, { readonly: true });
    const index = raw.prepare<[], { sql: string }>("SELECT sql FROM sqlite_master WHERE name = 'tasks_ended_by_finish'").get();
    raw.close();
    assert.ok(index?.sql.endsWith(`WHERE ${ENDED_STATES_SQL}`), index?.sql);
    assert.ok(MIGRATIONS.some((m) => m.version === 3));
  });

  it('counts the ended tasks and lists the oldest by end time (then submission), leaving out unended tasks and tasks that still hold an image', () => {
    using store = openStore(freshFile());
    ended(store, 'late', 3000);
    ended(store, 'early', 1000);
    running(store, 'live');
    ended(store, 'middle', 2000);
    ended(store, 'tie', 2000);
    ended(store, 'holding', 500);
    store.images.addHolder({ imageId: 'sha256:1', imageRef: 'busybox', taskId: 'holding' });
    store.tasks.update('late', { to: 'removed' });

    assert.equal(store.tasks.countEnded(), 5);
    assert.deepEqual(
      store.tasks.oldestEnded(10).map((t) => [t.id, t.endedAtMs, t.state]),
      [
        ['early', 1000, 'exited'],
        ['middle', 2000, 'exited'],
        ['tie', 2000, 'exited'],
        ['late', 3000, 'removed'],
      ],
    );
    assert.deepEqual(store.tasks.oldestEnded(2).map((t) => t.id), ['early', 'middle']);
  });

  it('deletes only records of ended tasks that hold no image, in one call, and says which', () => {
    using store = openStore(freshFile());
    ended(store, 'a', 1000);
    ended(store, 'b', 1000);
    running(store, 'live');
    ended(store, 'holding', 1000);
    store.images.addHolder({ imageId: 'sha256:1', imageRef: 'busybox', taskId: 'holding' });

    assert.deepEqual(store.tasks.deleteEnded(['a', 'live', 'holding', 'missing', 'b']), ['a', 'b']);
    assert.equal(store.tasks.get('a'), undefined);
    assert.equal(store.tasks.get('b'), undefined);
    assert.equal(store.tasks.get('live')?.state, 'running');
    assert.equal(store.tasks.get('holding')?.state, 'exited');
    assert.equal(store.tasks.countEnded(), 1);
  });

  it('with 5,000 ended tasks, picking the oldest walks the end-time index, and listing the unended ones the state index: neither reads every ended task', () => {
    const file = freshFile();
    using store = openStore(file);
    store.transaction(() => {
      for (let i = 0; i < 5000; i++) ended(store, `t${i}`, 1_000_000 + i);
    });
    running(store, 'live');
    const oldest = planOf(file, `SELECT id FROM tasks INDEXED BY tasks_ended_by_finish WHERE ${ENDED_STATES_SQL} ORDER BY finished_at_ms, seq LIMIT 10`);
    assert.match(oldest, /USING INDEX tasks_ended_by_finish/);
    assert.doesNotMatch(oldest, /TEMP B-TREE/, 'no sort of every ended task');
    // What `berth ps` asks for (the unended states), oldest or newest first.
    for (const order of ['ASC', 'DESC']) {
      const list = planOf(file, `SELECT * FROM tasks WHERE state IN ('pending', 'starting', 'running', 'stopping') ORDER BY seq ${order}`);
      assert.match(list, /SEARCH tasks USING INDEX tasks_by_state \(state=\?\)/, list);
    }
    // Submit reads and writes by id: the unique index.
    assert.match(planOf(file, 'SELECT * FROM tasks WHERE id = ?', 'x'), /USING INDEX sqlite_autoindex_tasks_1 \(id=\?\)/);
    assert.deepEqual(store.tasks.oldestEnded(3).map((t) => t.id), ['t0', 't1', 't2']);
    assert.deepEqual(store.tasks.list({ state: ['pending', 'starting', 'running', 'stopping'] }).map((t) => t.id), ['live']);
  });
});

describe('store: giving the space of deleted records back', () => {
  it('a new store uses incremental auto-vacuum', () => {
    using store = openStore(freshFile());
    assert.equal(store.autoVacuum(), 'incremental');
  });

  it('a store made before (auto-vacuum off) is converted once when opened, keeping its records', () => {
    const file = freshFile();
    openStore(file).close();
    // Turn it back into what an older berth made: auto_vacuum none, with its tables and a record.
    const raw = new Database(file);
    raw.pragma('auto_vacuum = NONE');
    raw.exec('VACUUM');
    assert.equal(raw.pragma('auto_vacuum', { simple: true }), 0);
    raw.close();
    {
      using store = openStore(file);
      ended(store, 'kept', 1000);
    }
    // The open above converted it; the record written after is there on the next open.
    using store = openStore(file);
    assert.equal(store.autoVacuum(), 'incremental');
    assert.equal(store.tasks.get('kept')?.state, 'exited');
  });

  it('after deleting most records, reclaiming the free pages and a checkpoint shrink the database file', () => {
    const file = freshFile();
    using store = openStore(file);
    store.transaction(() => {
      for (let i = 0; i < 4000; i++) ended(store, `t${i}`, 1_000_000 + i);
    });
    store.checkpoint();
    const before = statSync(file).size;
    const victims = store.tasks.oldestEnded(3800).map((t) => t.id);
    assert.equal(store.tasks.deleteEnded(victims).length, 3800);
    assert.ok(store.freePages() > 0, 'the deleted rows left free pages');
    let left = store.freePages();
    while (left > 0) {
      const next = store.reclaimSpace(64);
      assert.ok(next < left, 'every step gives pages back');
      left = next;
    }
    store.checkpoint();
    const afterBytes = statSync(file).size;
    assert.ok(afterBytes < before / 4, `the file went from ${before} to ${afterBytes} bytes`);
    assert.equal(store.sizeBytes(), afterBytes);
    assert.equal(store.tasks.countEnded(), 200);
  });
});
