/**
 * The store in a PostgreSQL schema (`state.postgres`): for agents whose hosts keep nothing (the
 * records outlive the host's disk), and for operators who back up and watch one database rather
 * than a file per host. The agent's data directory still holds the tasks' output.
 */
import { BerthError, messageOf } from '../../common/errors.js';
import { silentLogger } from '../../common/logger.js';
import { Store, type StoreBackend, type StoreOptions } from '../store.js';
import { PostgresConnection } from './connection.js';
import { migratePostgres } from './migrations.js';

export interface PostgresStoreTarget {
  /** A PostgreSQL connection URL. */
  readonly url: string;
  /** The schema the store's tables live in; one agent's store per schema. */
  readonly schema: string;
  /** How long one statement may take, connecting included. Default 5000 ms. */
  readonly deadlineMs?: number;
}

/** A schema name berth accepts: a plain lower-case identifier, so it needs no quoting anywhere. */
export const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

class PostgresBackend implements StoreBackend {
  readonly kind = 'postgres' as const;
  readonly connection: PostgresConnection;

  constructor(connection: PostgresConnection) {
    this.connection = connection;
  }

  get isOpen(): boolean {
    return this.connection.isOpen;
  }

  journalMode(): string {
    return 'wal';
  }

  autoVacuum(): 'none' | 'full' | 'incremental' {
    return 'full';
  }

  sizeBytes(): number {
    const row = this.connection.query(
      `SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS n FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
       WHERE s.nspname = current_schema() AND c.relkind = 'r'`,
    ).rows[0] as { n: number } | undefined;
    return row?.n ?? 0;
  }

  freePages(): number {
    return 0;
  }

  reclaimSpace(): number {
    return 0;
  }

  checkpoint(): void {
    // PostgreSQL checkpoints on its own schedule.
  }

  schemaVersion(): number {
    const row = this.connection.query('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations').rows[0] as { v: number } | undefined;
    return row?.v ?? 0;
  }

  close(): void {
    this.connection.close();
  }
}

/** Where a PostgreSQL store lives, as Store.location and logs show it: the server and schema, never the password. */
export function postgresLocation(target: Pick<PostgresStoreTarget, 'url' | 'schema'>): string {
  try {
    const url = new URL(target.url);
    return `postgres://${url.host}${url.pathname}#${target.schema}`;
  } catch {
    return `postgres#${target.schema}`;
  }
}

/**
 * Opens the store in `target.schema` (creating the schema and its tables when missing) and brings
 * its schema up to date. Fails with BERTH_STORE_UNAVAILABLE when the server does not answer.
 */
export function openPostgresStore(target: PostgresStoreTarget, options: StoreOptions = {}): Store {
  if (!SCHEMA_NAME.test(target.schema)) {
    throw new BerthError('BERTH_VALIDATION', `state.schema ${JSON.stringify(target.schema)} must be a lower-case identifier: a letter or _, then letters, digits or _ (63 at most)`, {
      context: { field: 'state.schema' },
    });
  }
  const nowMs = options.nowMs ?? Date.now;
  const logger = options.logger ?? silentLogger;
  const location = postgresLocation(target);
  const connection = new PostgresConnection({ connectionString: target.url, schema: target.schema, deadlineMs: target.deadlineMs ?? options.busyTimeoutMs ?? 5000 });
  try {
    const applied = migratePostgres(connection, location, nowMs);
    return new Store(new PostgresBackend(connection), location, applied, nowMs, logger);
  } catch (error) {
    connection.close();
    if (error instanceof BerthError) throw error;
    throw new BerthError('BERTH_STORE_UNAVAILABLE', `cannot open the state database ${location}: ${messageOf(error)}`, { cause: error, context: { location } });
  }
}
