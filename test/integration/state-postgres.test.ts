/**
 * The agent's store on PostgreSQL (`state.postgres`), against real servers: the schema matches the
 * SQLite one column for column; a server that is away or wedged fails each call with
 * BERTH_STORE_UNAVAILABLE within the call's deadline, and the same store works once it is back; a
 * schema holds one agent's records; and an agent on a PostgreSQL store runs a task through an
 * outage of the database, its end recorded once the database answers again. (The whole agent suite
 * also runs on this store: scripts/test-cluster-suite.sh.)
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import { openAgentStore } from '../../src/agent/agent.js';
import { isBerthError } from '../../src/common/errors.js';
import { silentLogger } from '../../src/common/logger.js';
import { META_KEYS, SCHEMA_VERSION } from '../../src/state/index.js';
import { migrate } from '../../src/state/migrations.js';
import { openPostgresStore } from '../../src/state/postgres/backend.js';
import { POSTGRES_SCHEMA_VERSION } from '../../src/state/postgres/migrations.js';
import { serveAgentIn } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_ENGINE_SOCKET, TEST_IMAGE, testEngine, testRun } from '../support/engine.js';
import { requirePostgres, startPrivatePostgres, testPgUrl, type PrivatePostgres } from '../support/postgres.js';
import { newTestSchema } from '../support/store.js';

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'berth-pgstate-'));
  dirs.push(dir);
  return dir;
}

/** Every table's columns, by table, sorted: what the repositories' `SELECT *` reads. */
async function postgresColumns(schema: string): Promise<Record<string, string[]>> {
  const client = new pg.Client({ connectionString: testPgUrl() });
  await client.connect();
  try {
    const { rows } = await client.query<{ table_name: string; column_name: string }>(
      'SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = $1 ORDER BY table_name, column_name',
      [schema],
    );
    const byTable: Record<string, string[]> = {};
    for (const row of rows) (byTable[row.table_name] ??= []).push(row.column_name);
    return byTable;
  } finally {
    await client.end();
  }
}

describe('the store on PostgreSQL: schema', () => {
  it('has the SQLite schema\'s tables and columns, at the same version', async (t) => {
    const skip = await requirePostgres();
    if (skip) return t.skip(skip);
    assert.equal(POSTGRES_SCHEMA_VERSION, SCHEMA_VERSION, 'a SQLite migration needs its PostgreSQL step under the same number (src/state/postgres/migrations.ts)');
    const schema = newTestSchema();
    const store = openPostgresStore({ url: testPgUrl(), schema });
    assert.equal(store.backend, 'postgres');
    assert.equal(store.schemaVersion(), SCHEMA_VERSION);
    assert.deepEqual(store.appliedMigrations, [POSTGRES_SCHEMA_VERSION]);
    store.close();
    const again = openPostgresStore({ url: testPgUrl(), schema });
    assert.deepEqual(again.appliedMigrations, [], 'a second open applies nothing');
    again.close();

    const raw = new Database(':memory:');
    migrate(raw, ':memory:');
    const tables = raw.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all();
    const expected: Record<string, string[]> = {};
    for (const { name } of tables) expected[name] = raw.prepare<[], { name: string }>(`SELECT name FROM pragma_table_info('${name}') ORDER BY name`).all().map((c) => c.name);
    raw.close();
    assert.deepEqual(await postgresColumns(schema), expected);
  });

  it('refuses a schema name that is not a plain lower-case identifier, naming the key', () => {
    assert.throws(
      () => openPostgresStore({ url: testPgUrl(), schema: 'Robert"; DROP TABLE x' }),
      (error: unknown) => isBerthError(error, 'BERTH_VALIDATION') && /state\.schema/.test(error.message),
    );
  });

  it('keeps one agent\'s records per schema: an agent of another data directory is refused, and the records stay the first agent\'s', async (t) => {
    const skip = await requirePostgres();
    if (skip) return t.skip(skip);
    const schema = newTestSchema();
    const state = { postgresUrl: testPgUrl(), schema, deadlineMs: 5000 };
    const first = await tempDir();
    const store = openAgentStore({ dataDir: first, state }, silentLogger);
    store.tasks.insert({ id: 'mine', spec: { image: TEST_IMAGE } });
    const owner = store.meta.get(META_KEYS.storeOwner);
    store.close();
    assert.throws(
      () => openAgentStore({ dataDir: path.join(first, 'another-agent'), state }, silentLogger),
      (error: unknown) => isBerthError(error, 'BERTH_VALIDATION') && /state\.schema/.test(error.message) && error.message.includes(owner!),
    );
    const reopened = openAgentStore({ dataDir: first, state }, silentLogger);
    assert.equal(reopened.tasks.get('mine')?.state, 'pending');
    assert.equal(reopened.meta.get(META_KEYS.storeOwner), owner);
    reopened.close();
  });
});

describe('the store on PostgreSQL: faults', () => {
  let server: PrivatePostgres;
  before(async () => {
    if (await requirePostgres()) return;
    server = await startPrivatePostgres();
  });
  after(async () => {
    await server?.destroy();
  });

  it('fails at open with BERTH_STORE_UNAVAILABLE when no server answers', () => {
    assert.throws(
      () => openPostgresStore({ url: 'postgres://postgres@127.0.0.1:9/postgres', schema: newTestSchema(), deadlineMs: 1000 }),
      (error: unknown) => isBerthError(error, 'BERTH_STORE_UNAVAILABLE') && error.retryable,
    );
  });

  it('fails each call while the server is stopped, and the same store works once it is back, its records kept', async (t) => {
    const skip = await requirePostgres();
    if (skip) return t.skip(skip);
    const store = openPostgresStore({ url: server.url(), schema: 'outage', deadlineMs: 2000 });
    try {
      store.tasks.insert({ id: 'before', spec: { image: TEST_IMAGE } });
      await server.stop();
      assert.throws(() => store.tasks.insert({ id: 'during', spec: { image: TEST_IMAGE } }), (error: unknown) => isBerthError(error, 'BERTH_STORE_UNAVAILABLE'));
      assert.throws(() => store.tasks.get('before'), (error: unknown) => isBerthError(error, 'BERTH_STORE_UNAVAILABLE'));
      await server.start();
      assert.equal(store.tasks.get('before')?.state, 'pending');
      assert.equal(store.tasks.get('during'), undefined, 'the write that failed was not recorded');
      store.tasks.insert({ id: 'after', spec: { image: TEST_IMAGE } });
      assert.deepEqual(store.tasks.list().map((task) => task.id), ['before', 'after']);
    } finally {
      store.close();
    }
  });

  it('fails a call to a wedged (SIGSTOPped) server within its deadline, rather than holding the agent', async (t) => {
    const skip = await requirePostgres();
    if (skip) return t.skip(skip);
    const store = openPostgresStore({ url: server.url(), schema: 'wedged', deadlineMs: 1000 });
    try {
      store.tasks.insert({ id: 'w', spec: { image: TEST_IMAGE } });
      await server.freeze();
      try {
        assert.throws(() => store.tasks.update('w', { to: 'starting' }), (error: unknown) => isBerthError(error, 'BERTH_STORE_UNAVAILABLE'));
      } finally {
        await server.thaw();
      }
      // The update may or may not have committed before the answer was lost; the store answers again either way.
      const state = await pollUntil('the store to answer again', () => {
        try {
          return store.tasks.get('w')?.state;
        } catch (error) {
          if (isBerthError(error, 'BERTH_STORE_UNAVAILABLE')) return undefined;
          throw error;
        }
      });
      assert.ok(state === 'pending' || state === 'starting', state);
    } finally {
      store.close();
    }
  });

  it('an agent on it runs a task through a database outage: the task\'s end is recorded once the database answers', async (t) => {
    const skip = (await requirePostgres()) || (await requireEngine());
    if (skip) return t.skip(skip);
    const engine = testEngine();
    const run = testRun(engine);
    const dataDir = await tempDir();
    const agent = await serveAgentIn(dataDir, TEST_ENGINE_SOCKET, { state: { postgres: server.url(), schema: 'agent_outage', deadline: '1s' } });
    try {
      assert.equal(agent.runtime.store.backend, 'postgres');
      const task = await agent.client.submit({ spec: { image: TEST_IMAGE, command: ['sh', '-c', 'sleep 2; exit 3'], labels: { ...run.labels } } });
      await pollUntil('the task to run', async () => ((await agent.client.get(task.id)).state === 'running' ? true : undefined), { timeoutMs: 30_000 });
      await server.stop();
      // The container ends while the database is away; the engine says so.
      await pollUntil('the container to exit', async () => {
        const found = await engine.listContainers({ all: true, labels: [run.labelFilter] });
        return found.length > 0 && found.every((c) => c.state === 'exited') ? true : undefined;
      }, { timeoutMs: 30_000 });
      await server.start();
      const ended = await pollUntil('the end to be recorded', async () => {
        const view = await agent.client.get(task.id).catch(() => undefined);
        return view !== undefined && view.state !== 'running' && view.state !== 'stopping' ? view : undefined;
      }, { timeoutMs: 60_000, intervalMs: 200 });
      assert.equal(ended.exitCode, 3, JSON.stringify(ended));
    } finally {
      await agent.close();
      await run.cleanup();
    }
  });
});
