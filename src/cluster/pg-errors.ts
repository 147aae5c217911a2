/**
 * The one place failures of PostgreSQL calls are classified, by SQLSTATE and by error type, never by
 * message text: what means "the database is not there" becomes BERTH_CLUSTER_UNAVAILABLE (retryable),
 * a conflict between transactions is retried, anything else is a bug (BERTH_INTERNAL).
 */
import { BerthError, isBerthError, messageOf } from '../common/errors.js';

/** SQLSTATE classes and codes that mean the server is going away, starting, or out of resources. */
const UNAVAILABLE_CLASSES = new Set(['08', '53', '57']);
/** serialization_failure and deadlock_detected: the transaction may simply be run again. */
const RETRY_CODES = new Set(['40001', '40P01']);

/** A server's error: it carries a five-character SQLSTATE and a severity. */
function sqlState(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { code, severity } = error as { code?: unknown; severity?: unknown };
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && typeof severity === 'string' ? code : undefined;
}

/** Whether the server refused the transaction for a conflict with another one (run it again). */
export function isTransactionConflict(error: unknown): boolean {
  const state = sqlState(error);
  return state !== undefined && RETRY_CODES.has(state);
}

/** Whether a failure means the database cannot be reached (or answers that it cannot serve now). */
export function isUnavailable(error: unknown): boolean {
  const state = sqlState(error);
  // A failure without SQLSTATE came from the connection: refused, reset, closed, timed out.
  if (state === undefined) return !isBerthError(error);
  return UNAVAILABLE_CLASSES.has(state.slice(0, 2));
}

/** A failed call as a BerthError: its own, UNAVAILABLE for the database's absence, INTERNAL for the rest. */
export function classifyPgError(error: unknown, what: string): BerthError {
  if (isBerthError(error)) return error;
  if (isUnavailable(error)) {
    return new BerthError('BERTH_CLUSTER_UNAVAILABLE', `${what}: the cluster database is unavailable: ${messageOf(error)}`, {
      cause: error,
      context: { operation: what, sqlState: sqlState(error) },
    });
  }
  return new BerthError('BERTH_INTERNAL', `${what}: ${messageOf(error)}`, { cause: error, context: { operation: what, sqlState: sqlState(error) } });
}
