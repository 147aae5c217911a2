/**
 * The one connection shape the store's repositories use, whichever database holds the store: the
 * part of better-sqlite3's API they need (prepare → run/get/all, exec, transaction), which the
 * SQLite backend is, and the PostgreSQL backend (postgres/connection.ts) implements over a
 * synchronous bridge. SQL is written once where both dialects agree; the few statements that
 * differ ask `dialect`.
 */
export type SqlDialect = 'sqlite' | 'postgres';

export interface SqlRunResult {
  /** Rows the statement inserted, updated or deleted. */
  readonly changes: number;
}

export interface SqlStatement<P extends unknown[] = unknown[], R = unknown> {
  run(...params: P): SqlRunResult;
  get(...params: P): R | undefined;
  all(...params: P): R[];
}

/** A unit of work that commits as a whole; `immediate` also takes the store's write lock at its start. */
export interface SqlTransaction<T> {
  (): T;
  immediate(): T;
}

export interface SqlConnection {
  readonly dialect: SqlDialect;
  prepare<P extends unknown[] = unknown[], R = unknown>(sql: string): SqlStatement<P, R>;
  /** Runs statements without parameters (schema steps). */
  exec(sql: string): void;
  /** Wraps `work` in a transaction; called inside another one, it is a savepoint of it. */
  transaction<T>(work: () => T): SqlTransaction<T>;
}
