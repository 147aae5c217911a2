import { BerthError, messageOf } from '../common/errors.js';

/** SQLite's result codes, and PostgreSQL's SQLSTATE 53100 (disk_full), for a write that found no room. */
const FULL_CODES = new Set(['SQLITE_FULL', 'SQLITE_IOERR_WRITE', 'SQLITE_IOERR_FSYNC', 'SQLITE_IOERR_SHMSIZE', '53100']);

/** Whether an error is a file system's "no space left" (ENOSPC, EDQUOT) or SQLite's "database or disk is full". */
export function isDiskFullError(error: unknown): boolean {
  if (error instanceof BerthError) return error.code === 'BERTH_DISK_FULL';
  const code = typeof error === 'object' && error !== null && 'code' in error ? String((error as { code: unknown }).code) : '';
  return code === 'ENOSPC' || code === 'EDQUOT' || FULL_CODES.has(code);
}

/**
 * Runs a store write, turning "database or disk is full" into BERTH_DISK_FULL (retryable: the
 * same write succeeds once space is freed). Other errors pass through unchanged.
 */
export function asDiskFull<T>(write: () => T): T {
  try {
    return write();
  } catch (error) {
    if (!isDiskFullError(error) || error instanceof BerthError) throw error;
    throw new BerthError('BERTH_DISK_FULL', `the state database could not be written: ${messageOf(error)}`, { cause: error });
  }
}
