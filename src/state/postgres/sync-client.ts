/**
 * A synchronous PostgreSQL connection for the agent's store.
 *
 * The store's API is synchronous (it was written for SQLite, and the supervisor relies on a write
 * being recorded before its next step), so the PostgreSQL backend answers synchronously too: a
 * worker thread owns the connection, and the calling thread blocks on a shared word
 * (Atomics.wait) until the worker has posted the answer, which it then takes off the port with
 * receiveMessageOnPort. The block is bounded by the call's deadline; a call that passes it fails
 * with BERTH_STORE_UNAVAILABLE and the worker is replaced, so a wedged server or network never
 * holds the agent longer than one deadline per call.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { BerthError } from '../../common/errors.js';
import { SIGNAL_ANSWERED, SIGNAL_PENDING, type QueryAnswer, type QueryFailure, type WorkerSetup } from './protocol.js';

export interface PgSyncClientOptions {
  readonly connectionString: string;
  /** The schema the store's tables live in (created when missing). */
  readonly schema: string;
  /** How long one call may take, connecting included. */
  readonly deadlineMs: number;
}

export interface SyncQueryResult {
  readonly rows: Record<string, unknown>[];
  readonly rowCount: number;
}

/** How long a new worker may take to load before the first call counts against its deadline. */
const WORKER_BOOT_MS = 30_000;

/** The worker's module: plain JavaScript beside this file, in the source and in the build (see worker.mjs). */
function workerUrl(): URL {
  const url = new URL('./worker.mjs', import.meta.url);
  if (!existsSync(fileURLToPath(url))) throw new BerthError('BERTH_INTERNAL', `the PostgreSQL store's worker module is missing: ${fileURLToPath(url)}`);
  return url;
}

/** An error with pg's SQLSTATE (or errno) as its code, like the SqliteError the SQLite backend throws. */
export class PgStatementError extends Error {
  readonly code: string | undefined;
  constructor(failure: QueryFailure) {
    super(failure.message);
    this.name = 'PgStatementError';
    this.code = failure.code;
  }
}

interface Channel {
  readonly worker: Worker;
  readonly port: MessagePort;
  readonly signal: Int32Array;
}

export class PgSyncClient {
  readonly #options: PgSyncClientOptions;
  #channel: Channel | undefined;
  #closed = false;

  constructor(options: PgSyncClientOptions) {
    this.#options = options;
  }

  get isOpen(): boolean {
    return !this.#closed;
  }

  /** Runs one statement (or several, separated by semicolons, when there are no parameters). */
  query(sql: string, params: readonly unknown[] = []): SyncQueryResult {
    if (this.#closed) throw new BerthError('BERTH_INTERNAL', 'the state database is closed');
    const channel = this.#ready();
    Atomics.store(channel.signal, 0, SIGNAL_PENDING);
    channel.port.postMessage({ sql, params });
    // The worker's own deadlines (connect, query, statement) end a call first; this one is a backstop
    // for a worker that cannot answer at all.
    const outcome = Atomics.wait(channel.signal, 0, SIGNAL_PENDING, this.#options.deadlineMs * 2 + 1000);
    const received = receiveMessageOnPort(channel.port) as { message: QueryAnswer } | undefined;
    if (outcome === 'timed-out' || received === undefined) {
      this.#discard();
      throw unavailable(`no answer within ${this.#options.deadlineMs * 2 + 1000} ms`);
    }
    const reply = received.message;
    if (reply.ok) return { rows: reply.rows, rowCount: reply.rowCount };
    if (reply.failure.connectionLost) throw unavailable(reply.failure.message, reply.failure.code);
    throw new PgStatementError(reply.failure);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#discard();
  }

  #ready(): Channel {
    if (this.#channel !== undefined) return this.#channel;
    const signal = new Int32Array(new SharedArrayBuffer(4));
    const { port1, port2 } = new MessageChannel();
    // No TypeScript loader in the worker: it is plain JavaScript, and it starts faster without one.
    const worker = new Worker(workerUrl(), { execArgv: [] });
    // The worker holds no request of the process open: an idle store must not keep the agent alive.
    worker.unref();
    port1.unref();
    const setup: WorkerSetup = { connectionString: this.#options.connectionString, schema: this.#options.schema, deadlineMs: this.#options.deadlineMs, signal: signal.buffer as SharedArrayBuffer, port: port2 };
    worker.postMessage(setup, [port2]);
    if (Atomics.wait(signal, 0, SIGNAL_PENDING, WORKER_BOOT_MS) === 'timed-out' || Atomics.load(signal, 0) !== SIGNAL_ANSWERED) {
      void worker.terminate();
      throw unavailable(`the PostgreSQL store's worker did not start within ${WORKER_BOOT_MS} ms`);
    }
    this.#channel = { worker, port: port1, signal };
    return this.#channel;
  }

  #discard(): void {
    const channel = this.#channel;
    this.#channel = undefined;
    if (channel === undefined) return;
    channel.port.close();
    void channel.worker.terminate();
  }
}

function unavailable(reason: string, code?: string): BerthError {
  return new BerthError('BERTH_STORE_UNAVAILABLE', `the state database (PostgreSQL) is unreachable: ${reason}`, { context: code !== undefined ? { code } : {} });
}
