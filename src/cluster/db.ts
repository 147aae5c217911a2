/**
 * The pool every store call goes through: one deadline per call, transactions retried on conflicts
 * between transactions, and every failure classified once (pg-errors.ts).
 */
import pg from 'pg';
import { BerthError } from '../common/errors.js';
import { classifyPgError, isTransactionConflict, isUnavailable } from './pg-errors.js';

/** A connection inside a transaction (or a one-off query): only `query`. */
export type Queryable = Pick<pg.PoolClient, 'query'>;

const CONFLICT_ATTEMPTS = 5;

export interface DatabaseOptions {
  readonly connectionString: string;
  readonly callDeadlineMs: number;
  readonly poolSize: number;
}

/** pg client settings for a call deadline: connect, client-side query and server-side statement timeouts. */
export function clientConfig(options: Pick<DatabaseOptions, 'connectionString' | 'callDeadlineMs'>): pg.ClientConfig {
  return {
    connectionString: options.connectionString,
    connectionTimeoutMillis: options.callDeadlineMs,
    query_timeout: options.callDeadlineMs,
    statement_timeout: options.callDeadlineMs,
    application_name: 'berth',
  };
}

export class Database {
  readonly pool: pg.Pool;
  readonly #deadlineMs: number;

  constructor(options: DatabaseOptions) {
    this.#deadlineMs = options.callDeadlineMs;
    this.pool = new pg.Pool({ ...clientConfig(options), max: options.poolSize, idleTimeoutMillis: 30_000 });
    // An idle connection the server closes (a restart) emits 'error' on the pool: it is dropped
    // from the pool, and the next call opens a new one. Without a listener it would crash the process.
    this.pool.on('error', () => undefined);
  }

  /** One statement outside any transaction. */
  async query<R extends pg.QueryResultRow>(what: string, sql: string, params: readonly unknown[] = []): Promise<pg.QueryResult<R>> {
    return this.#withDeadline(what, async () => {
      try {
        return await this.pool.query<R>(sql, params as unknown[]);
      } catch (error) {
        throw classifyPgError(error, what);
      }
    });
  }

  /**
   * Runs `body` in one transaction (READ COMMITTED), committed when it resolves and rolled back when
   * it throws; run again from the start when the server reports a serialization failure or a
   * deadlock. A connection that failed is destroyed rather than returned to the pool.
   */
  async transaction<T>(what: string, body: (client: Queryable) => Promise<T>): Promise<T> {
    return this.#withDeadline(what, async () => {
      for (let attempt = 1; ; attempt++) {
        let client: pg.PoolClient;
        try {
          client = await this.pool.connect();
        } catch (error) {
          throw classifyPgError(error, what);
        }
        let broken: unknown;
        // A checked-out connection the server cuts between two statements emits 'error' on the
        // client (the pool listens only to idle ones): it is destroyed at release.
        const onError = (error: unknown): void => void (broken ??= error);
        client.on('error', onError);
        try {
          await client.query('BEGIN');
          const result = await body(client);
          await client.query('COMMIT');
          return result;
        } catch (error) {
          if (isUnavailable(error)) {
            broken = error;
          } else {
            // The body's own refusal or a statement's error: the connection is fine once rolled back.
            await client.query('ROLLBACK').catch((rollbackError: unknown) => (broken = rollbackError));
            if (isTransactionConflict(error) && attempt < CONFLICT_ATTEMPTS && broken === undefined) continue;
          }
          throw classifyPgError(error, what);
        } finally {
          // A destroyed connection keeps its listener: it may still report the cut after release.
          if (broken === undefined) client.removeListener('error', onError);
          client.release(broken === undefined ? undefined : true);
        }
      }
    });
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  /** Fails the call with BERTH_CLUSTER_UNAVAILABLE at the deadline; the work under way ends on its own timeouts. */
  async #withDeadline<T>(what: string, work: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new BerthError('BERTH_CLUSTER_UNAVAILABLE', `${what}: the cluster database did not answer within ${this.#deadlineMs} ms`, { context: { operation: what, deadlineMs: this.#deadlineMs } })),
        this.#deadlineMs,
      );
    });
    const running = work();
    // The work may fail after the deadline answered: that failure is already reported.
    running.catch(() => undefined);
    try {
      return await Promise.race([running, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }
}
