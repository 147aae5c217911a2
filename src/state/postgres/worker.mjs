// @ts-check
/**
 * The worker thread behind PgSyncClient (sync-client.ts): it owns one PostgreSQL connection and
 * answers one query at a time, posting the answer and then waking the store's thread, which waits
 * on a shared word (Atomics.wait). The connection is opened on the first query and again after it
 * failed.
 *
 * Plain JavaScript on purpose: the store's thread blocks while this worker starts, and a TypeScript
 * loader (tsx, when berth runs from source) needs the blocked thread to load a worker's module.
 * The message shapes are protocol.ts's.
 */
import { parentPort } from 'node:worker_threads';
import pg from 'pg';

const ANSWERED = 1;

/** int8 and numeric come back as numbers: the store's values (ids, milliseconds, counts) fit in a double. */
const NUMERIC_TYPES = new Set([pg.types.builtins.INT8, pg.types.builtins.NUMERIC]);

/** @param {unknown} error */
function codeOf(error) {
  return typeof error === 'object' && error !== null && 'code' in error ? String(error.code) : undefined;
}

/**
 * Whether the connection itself failed (refused, cut, timed out), rather than the statement.
 * @param {unknown} error
 */
function isConnectionFailure(error) {
  const code = codeOf(error) ?? '';
  // SQLSTATE class 08 (connection exception) and 57P01-03 (the server shutting down or starting);
  // Node's errno codes (ECONNREFUSED, ECONNRESET…).
  if (code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || /^E[A-Z]+$/.test(code)) return true;
  const message = error instanceof Error ? error.message : String(error);
  return /Connection terminated|timeout|not queryable|connection error/i.test(message);
}

/** @param {import('./protocol.js').WorkerSetup} setup */
function serve(setup) {
  const signal = new Int32Array(setup.signal);
  const port = setup.port;
  /** @type {pg.Client | undefined} */
  let client;

  async function connected() {
    if (client !== undefined) return client;
    const fresh = new pg.Client({
      connectionString: setup.connectionString,
      connectionTimeoutMillis: setup.deadlineMs,
      query_timeout: setup.deadlineMs,
      statement_timeout: setup.deadlineMs,
      application_name: 'berth-state',
      types: { getTypeParser: /** @type {typeof pg.types.getTypeParser} */ ((oid, format) => (NUMERIC_TYPES.has(oid) ? Number : pg.types.getTypeParser(oid, format))) },
    });
    // A connection the server cuts while idle emits 'error'; the next query opens a new one.
    fresh.on('error', () => {
      if (client === fresh) client = undefined;
    });
    try {
      await fresh.connect();
      await fresh.query(`CREATE SCHEMA IF NOT EXISTS ${setup.schema}`);
      await fresh.query(`SET search_path TO ${setup.schema}`);
    } catch (error) {
      void fresh.end().catch(() => undefined);
      throw error;
    }
    client = fresh;
    return fresh;
  }

  /** @param {import('./protocol.js').QueryAnswer} reply */
  function answer(reply) {
    port.postMessage(reply);
    Atomics.store(signal, 0, ANSWERED);
    Atomics.notify(signal, 0);
  }

  port.on('message', (/** @type {import('./protocol.js').QueryRequest} */ request) => {
    void (async () => {
      try {
        const db = await connected();
        const result = await db.query({ text: request.sql, values: /** @type {unknown[]} */ (request.params) });
        // A text of several statements answers with one result per statement: the last one counts.
        const last = Array.isArray(result) ? result[result.length - 1] : result;
        answer({ ok: true, rows: last.rows, rowCount: last.rowCount ?? 0 });
      } catch (error) {
        const connectionLost = isConnectionFailure(error);
        if (connectionLost && client !== undefined) {
          const lost = client;
          client = undefined;
          void lost.end().catch(() => undefined);
        }
        const code = codeOf(error);
        answer({ ok: false, failure: { message: error instanceof Error ? error.message : String(error), ...(code !== undefined ? { code } : {}), connectionLost } });
      }
    })();
  });
  // Ready: the store's thread waits for this before its first query.
  Atomics.store(signal, 0, ANSWERED);
  Atomics.notify(signal, 0);
}

parentPort?.once('message', serve);
