/** The messages between the store's thread and the worker that owns its PostgreSQL connection. */

/** Set up once: where to connect, which schema to use, and the shared word the worker signals on. */
export interface WorkerSetup {
  readonly connectionString: string;
  readonly schema: string;
  readonly deadlineMs: number;
  readonly signal: SharedArrayBuffer;
  readonly port: import('node:worker_threads').MessagePort;
}

export interface QueryRequest {
  readonly sql: string;
  readonly params: readonly unknown[];
}

/** A failure as the worker saw it: pg's SQLSTATE (or Node's errno code) and its message. */
export interface QueryFailure {
  readonly message: string;
  readonly code?: string;
  /** True when the connection itself failed (refused, cut, timed out): the worker reconnects on the next query. */
  readonly connectionLost: boolean;
}

export type QueryAnswer =
  | { readonly ok: true; readonly rows: Record<string, unknown>[]; readonly rowCount: number }
  | { readonly ok: false; readonly failure: QueryFailure };

/** Index 0 of the shared Int32Array: 0 while a call is out, 1 once its answer is posted. */
export const SIGNAL_PENDING = 0;
export const SIGNAL_ANSWERED = 1;
