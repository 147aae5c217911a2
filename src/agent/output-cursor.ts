import { compareLogTimestamps, oneNanosecondBefore } from '../engine/log-entries.js';
import type { LogCursor } from '../state/tasks.js';

export type OutputStream = 'stdout' | 'stderr';

/**
 * How far one stream of a task's output is recorded: the timestamp of the last entry taken, and how
 * many entries with exactly that timestamp were taken (the engine gives one timestamp to every part
 * of a long line, and a coarse clock may give it to several lines).
 */
export interface StreamPosition {
  timestamp: string;
  /** Entries at `timestamp` taken; `Infinity` when unknown (a cursor from the store): all of them. */
  taken: number;
}

export type OutputPosition = Partial<Record<OutputStream, StreamPosition>>;

interface StreamState extends StreamPosition {
  /** Entries at `timestamp` seen in the current read. */
  seen: number;
  /** Whether the current read has passed the recorded position: what follows is all new. */
  caughtUp: boolean;
}

/**
 * Decides, entry by entry, what of a container's log is new, so that output is recorded exactly
 * once however often the log is read again: after a dropped stream, an engine restart, a reattach
 * or an agent restart. Pure: it holds positions, not files or connections.
 *
 * A read starts with `beginRead()` and asks the engine from `resumeAfter()` (exclusive), which lies
 * one nanosecond before the earliest position, because the entries at a position's own timestamp
 * must be read again to be counted. Within a read the engine sends each stream in order, so an
 * entry is new when it is later than the position, or is the (taken + 1)-th at the position's
 * timestamp; once a stream has had a new entry in a read, the rest of that read is new too.
 */
export class OutputCursor {
  readonly #streams: Partial<Record<OutputStream, StreamState>> = {};

  constructor(position: OutputPosition = {}) {
    for (const stream of ['stdout', 'stderr'] as const) {
      const at = position[stream];
      if (at) this.#streams[stream] = { ...at, seen: 0, caughtUp: false };
    }
  }


  /** Starts a new read of the log: entries at the positions are counted again from zero. */
  beginRead(): void {
    for (const state of Object.values(this.#streams)) {
      state.seen = 0;
      state.caughtUp = false;
    }
  }

  /**
   * The engine timestamp to read after (exclusive), or undefined to read from the start. A stream
   * with no position yet is read from the start: its first entry may be stamped earlier than the
   * other stream's position (the engine stamps the two streams apart).
   */
  resumeAfter(): string | undefined {
    const stdout = this.#streams.stdout?.timestamp;
    const stderr = this.#streams.stderr?.timestamp;
    if (stdout === undefined || stderr === undefined) return undefined;
    return oneNanosecondBefore(compareLogTimestamps(stdout, stderr) <= 0 ? stdout : stderr);
  }

  /** Whether the entry is new; a new entry moves the position. Call in the order the log gives. */
  take(entry: { stream: OutputStream; timestamp: string }): boolean {
    const state = this.#streams[entry.stream];
    if (!state) {
      this.#streams[entry.stream] = { timestamp: entry.timestamp, taken: 1, seen: 1, caughtUp: true };
      return true;
    }
    const order = compareLogTimestamps(entry.timestamp, state.timestamp);
    if (state.caughtUp) {
      this.#advance(state, entry.timestamp, order);
      return true;
    }
    if (order < 0) return false;
    if (order === 0) {
      state.seen++;
      if (state.seen <= state.taken) return false;
      state.taken = state.seen;
      state.caughtUp = true;
      return true;
    }
    state.timestamp = entry.timestamp;
    state.taken = 1;
    state.seen = 1;
    state.caughtUp = true;
    return true;
  }

  #advance(state: StreamState, timestamp: string, order: number): void {
    if (order === 0) {
      state.taken++;
      state.seen = state.taken;
    } else {
      state.timestamp = timestamp;
      state.taken = 1;
      state.seen = 1;
    }
  }

  /** The positions now, e.g. to hand to a later reader. */
  position(): OutputPosition {
    const position: OutputPosition = {};
    for (const stream of ['stdout', 'stderr'] as const) {
      const state = this.#streams[stream];
      if (state) position[stream] = { timestamp: state.timestamp, taken: state.taken };
    }
    return position;
  }
}

/** The store's form of a position: timestamps only (the counts are rebuilt from the files). */
export function toLogCursor(position: OutputPosition): LogCursor {
  return {
    ...(position.stdout ? { stdout: position.stdout.timestamp } : {}),
    ...(position.stderr ? { stderr: position.stderr.timestamp } : {}),
  };
}

/**
 * Where to resume, stream by stream, from what the task's files hold (`files`, exact) and what the
 * store says (`stored`, timestamps only). The store's cursor is saved only after the files took
 * the lines, so the files are never behind it unless they were removed: the files win at an equal
 * timestamp (their counts are exact), the store where it is later or the files know nothing.
 */
export function resumePosition(files: OutputPosition, stored: OutputPosition): OutputPosition {
  const result: OutputPosition = {};
  for (const stream of ['stdout', 'stderr'] as const) {
    const fromFiles = files[stream];
    const fromStore = stored[stream];
    const pick = !fromFiles ? fromStore : !fromStore || compareLogTimestamps(fromFiles.timestamp, fromStore.timestamp) >= 0 ? fromFiles : fromStore;
    if (pick) result[stream] = { ...pick };
  }
  return result;
}

/** The store's cursor as a position: every entry at a stored timestamp counts as taken. */
export function fromLogCursor(cursor: Readonly<LogCursor>): OutputPosition {
  const position: OutputPosition = {};
  for (const stream of ['stdout', 'stderr'] as const) {
    const timestamp = cursor[stream];
    if (timestamp !== undefined) position[stream] = { timestamp, taken: Infinity };
  }
  return position;
}
