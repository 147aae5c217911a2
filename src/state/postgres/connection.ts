/**
 * The store's SqlConnection over PostgreSQL: the repositories' SQL, with its `?` placeholders
 * numbered, run through the synchronous client. Transactions serialise on an advisory lock of the
 * store's schema, as SQLite's writers serialise on its file lock, so two store instances on one
 * schema (an agent and a tool reading beside it) never interleave a read-modify-write.
 */
import type { SqlConnection, SqlRunResult, SqlStatement, SqlTransaction } from '../sql.js';
import { PgSyncClient, type PgSyncClientOptions } from './sync-client.js';

/**
 * `?` placeholders as PostgreSQL's `$1`, `$2`…, leaving string literals and quoted identifiers as
 * they are.
 */
export function numberPlaceholders(sql: string): string {
  let out = '';
  let n = 0;
  let quote: string | undefined;
  for (const ch of sql) {
    if (quote !== undefined) {
      if (ch === quote) quote = undefined;
      out += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      out += ch;
    } else if (ch === '?') {
      out += `$${++n}`;
    } else {
      out += ch;
    }
  }
  return out;
}

const LOCK_SCHEMA = 'SELECT pg_advisory_xact_lock(hashtext(current_schema()))';

export class PostgresConnection implements SqlConnection {
  readonly dialect = 'postgres' as const;
  readonly #client: PgSyncClient;
  /** 0 outside a transaction; inside, how many are open (the outer one and its savepoints). */
  #depth = 0;

  constructor(options: PgSyncClientOptions) {
    this.#client = new PgSyncClient(options);
  }

  get isOpen(): boolean {
    return this.#client.isOpen;
  }

  /** Runs a statement with numbered (`$1`) placeholders, as written. */
  query(sql: string, params: readonly unknown[] = []): { rows: Record<string, unknown>[]; rowCount: number } {
    return this.#client.query(sql, params);
  }

  prepare<P extends unknown[] = unknown[], R = unknown>(sql: string): SqlStatement<P, R> {
    const text = numberPlaceholders(sql);
    const client = this.#client;
    return {
      run: (...params: P): SqlRunResult => ({ changes: client.query(text, params).rowCount }),
      get: (...params: P): R | undefined => client.query(text, params).rows[0] as R | undefined,
      all: (...params: P): R[] => client.query(text, params).rows as R[],
    };
  }

  exec(sql: string): void {
    this.#client.query(sql);
  }

  transaction<T>(work: () => T): SqlTransaction<T> {
    const run = (): T => this.#inTransaction(work);
    return Object.assign(run, { immediate: run });
  }

  close(): void {
    this.#client.close();
  }

  #inTransaction<T>(work: () => T): T {
    const savepoint = this.#depth > 0 ? `berth_${this.#depth}` : undefined;
    this.#client.query(savepoint === undefined ? `BEGIN; ${LOCK_SCHEMA}` : `SAVEPOINT ${savepoint}`);
    this.#depth++;
    let result: T;
    try {
      result = work();
    } catch (error) {
      this.#depth--;
      this.#rollback(savepoint);
      throw error;
    }
    this.#depth--;
    try {
      this.#client.query(savepoint === undefined ? 'COMMIT' : `RELEASE SAVEPOINT ${savepoint}`);
    } catch (error) {
      this.#rollback(savepoint);
      throw error;
    }
    return result;
  }

  /** Best effort: a connection that is gone took its transaction with it. */
  #rollback(savepoint: string | undefined): void {
    try {
      this.#client.query(savepoint === undefined ? 'ROLLBACK' : `ROLLBACK TO SAVEPOINT ${savepoint}`);
    } catch {
      // The failure that brought us here is the one to report.
    }
  }
}
