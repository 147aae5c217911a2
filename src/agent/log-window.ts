import { compareLogTimestamps } from '../engine/log-entries.js';
import type { LogRecord } from './task-logs.js';

/**
 * The window of a task's output that `GET /v1/tasks/:id/logs` sends: `since` (exclusive) and
 * `until` (inclusive), one stream or both, and `tail` (the last N of what the rest selects), as
 * docker's logs options. All times are UTC log timestamps (see toUtcLogTimestamp).
 */
export interface LogWindow {
  since?: string | undefined;
  until?: string | undefined;
  stream?: LogRecord['stream'] | undefined;
  tail?: number | undefined;
}

/** The records of `records` that the window's stream and `until` select (not since, which the store applies). */
export async function* selectRecords(records: AsyncIterable<LogRecord>, window: Pick<LogWindow, 'until' | 'stream'>): AsyncGenerator<LogRecord> {
  for await (const record of records) {
    if (window.stream !== undefined && record.stream !== window.stream) continue;
    if (window.until !== undefined && compareLogTimestamps(record.timestamp, window.until) > 0) continue;
    yield record;
  }
}

/**
 * The last `count` records of a stored read (at most `count` held at once), and the latest
 * timestamp it saw among all records: a follow that goes on from there gives nothing twice.
 */
export async function lastRecords(records: AsyncIterable<LogRecord>, count: number, window: Pick<LogWindow, 'until' | 'stream'>): Promise<{ records: LogRecord[]; latest?: string }> {
  const kept: LogRecord[] = [];
  let latest: string | undefined;
  for await (const record of records) {
    if (latest === undefined || compareLogTimestamps(record.timestamp, latest) > 0) latest = record.timestamp;
    if (window.stream !== undefined && record.stream !== window.stream) continue;
    if (window.until !== undefined && compareLogTimestamps(record.timestamp, window.until) > 0) continue;
    if (count === 0) continue;
    kept.push(record);
    if (kept.length > count) kept.shift();
  }
  return latest === undefined ? { records: kept } : { records: kept, latest };
}

/** Milliseconds from `nowMs` until a UTC log timestamp (nanoseconds dropped); negative when past. */
export function msUntil(timestamp: string, nowMs: number): number {
  return Date.parse(timestamp.replace(/(\.\d{3})\d*Z$/, '$1Z')) - nowMs;
}
