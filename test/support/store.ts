/**
 * The store the state and agent unit tests run on: SQLite in memory by default, or a fresh schema
 * of the shared test PostgreSQL (scripts/test-postgres.sh) when BERTH_TEST_STORE=postgres, so the
 * same tests prove both backends (scripts/test-cluster-suite.sh runs them that way).
 */
import { openStore, type Store, type StoreOptions } from '../../src/state/store.js';
import { openPostgresStore } from '../../src/state/postgres/backend.js';
import { PgSyncClient } from '../../src/state/postgres/sync-client.js';
import { testPgUrl } from './postgres.js';

/** Whether this run's stores live in PostgreSQL. */
export const STORE_BACKEND: 'sqlite' | 'postgres' = process.env.BERTH_TEST_STORE === 'postgres' ? 'postgres' : 'sqlite';

/** Schemas of test stores are named `berth_t_<epoch ms>_<pid>_<n>`; ones older than this are dropped by the next run. */
const STALE_SCHEMA_MS = 2 * 60 * 60 * 1000;

let made = 0;
let sweptStale = false;

function dropStaleSchemas(): void {
  const admin = new PgSyncClient({ connectionString: testPgUrl(), schema: 'public', deadlineMs: 10_000 });
  try {
    const cutoff = Date.now() - STALE_SCHEMA_MS;
    const { rows } = admin.query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'berth\\_t\\_%'");
    for (const { nspname } of rows as Array<{ nspname: string }>) {
      const madeAt = Number(nspname.split('_')[2]);
      if (Number.isFinite(madeAt) && madeAt < cutoff) admin.query(`DROP SCHEMA IF EXISTS ${nspname} CASCADE`);
    }
  } finally {
    admin.close();
  }
}

/** A name to open the same PostgreSQL store again (reopen tests); SQLite tests reopen by file. */
export function newTestSchema(): string {
  return `berth_t_${Date.now()}_${process.pid}_${++made}`;
}

/**
 * A fresh, empty store. `schema` reopens a PostgreSQL store made before (ignored on SQLite, where a
 * test that reopens uses a file).
 */
export function openTestStore(options: StoreOptions & { schema?: string } = {}): Store {
  if (STORE_BACKEND === 'sqlite') return openStore(':memory:', options);
  if (!sweptStale) {
    sweptStale = true;
    dropStaleSchemas();
  }
  return openPostgresStore({ url: testPgUrl(), schema: options.schema ?? newTestSchema() }, options);
}

/**
 * A store that can be opened again, as an agent's restart opens it: `open()` gives a new Store on
 * the same records each call (a file in `dir` on SQLite, one schema on PostgreSQL).
 */
export function reopenableTestStore(file: string): (options?: StoreOptions) => Store {
  const schema = newTestSchema();
  return (options = {}) => (STORE_BACKEND === 'sqlite' ? openStore(file, options) : openTestStore({ ...options, schema }));
}
