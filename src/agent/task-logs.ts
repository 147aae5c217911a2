import { EventEmitter, on } from 'node:events';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, open as openFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { BerthError } from '../common/errors.js';
import { compareLogTimestamps, isLogTimestamp, type LogEntry } from '../engine/log-entries.js';
import { isDiskFullError } from '../state/disk-full.js';
import { DiskSpace } from './disk-space.js';
import { OutputCursor, type OutputPosition } from './output-cursor.js';

/** One stored line of a task's output. */
export interface LogRecord {
  stream: 'stdout' | 'stderr';
  /** The engine's timestamp (RFC 3339, nanoseconds). */
  timestamp: string;
  text: string;
}

export interface TaskLogLimits {
  /** A file is rotated when it would grow past this. */
  maxFileBytes: number;
  /** Files kept per task, the current one included. */
  maxFiles: number;
}

/** The text of the record that marks where a task's output was cut. */
export const OUTPUT_CUT_TEXT = '[berth] output cut here: the agent\'s data directory has no space left\n';

const FILE = 'output.log';
const ENDED = 'ended';

interface OpenWriter {
  stream: WriteStream;
  sizeBytes: number;
  /** The first error the file met (e.g. ENOSPC); nothing more is written to it. */
  failure?: Error;
}

/**
 * Each task's stdout and stderr, kept as JSON lines under `<dir>/<taskId>/`, rotated and bounded
 * per task, readable after the container is gone, and followable while the task runs.
 */
export class TaskLogStore {
  readonly #dir: string;
  readonly #limits: TaskLogLimits;
  readonly #writers = new Map<string, Promise<OpenWriter>>();
  readonly #live = new EventEmitter();
  /** Per task and stream, the last timestamp appended and how many records carry it: each live record's place in its group. */
  readonly #tails = new Map<string, GroupCounter>();
  /** The data directory's free space: output stops before the disk is full. */
  readonly space: DiskSpace;

  constructor(dir: string, limits: TaskLogLimits, space: DiskSpace = new DiskSpace(path.dirname(dir))) {
    this.#dir = dir;
    this.#limits = limits;
    this.space = space;
    this.#live.setMaxListeners(0);
  }

  #file(taskId: string, generation = 0): string {
    return path.join(this.#dir, taskId, generation === 0 ? FILE : `${FILE}.${generation}`);
  }

  /**
   * Appends one engine log entry; resolves once the file has taken it (backpressure). Fails with
   * BERTH_DISK_FULL when the data directory is (nearly) full or the file could not be written:
   * the caller cuts the task's output there (see `markCut`).
   */
  async append(taskId: string, entry: LogEntry): Promise<void> {
    const record: LogRecord = { stream: entry.stream, timestamp: entry.timestamp, text: entry.data.toString('utf8') };
    const line = `${JSON.stringify(record)}\n`;
    const bytes = Buffer.byteLength(line);
    if ((await this.space.beforeWrite(bytes)) === 'full') throw diskFull(taskId);
    let writer = await this.#writer(taskId);
    if (writer.sizeBytes > 0 && writer.sizeBytes + bytes > this.#limits.maxFileBytes) writer = await this.#rotate(taskId, writer);
    await this.#queue(taskId, writer, line);
    writer.sizeBytes += bytes;
    this.#emit(taskId, record);
  }

  /**
   * Resolves once every line appended so far is in the file (not only queued in the process), so
   * that a cursor saved afterwards never claims a line a crash could still lose.
   */
  async flush(taskId: string): Promise<void> {
    const pending = this.#writers.get(taskId);
    if (!pending) return;
    const writer = await pending;
    await this.#write(taskId, writer, '');
  }

  /**
   * Ends the task's output with a record saying it was cut. Best effort: the room kept free is
   * meant for it, but a disk filled by someone else may refuse even that. Resolves whether it was written.
   */
  async markCut(taskId: string): Promise<boolean> {
    const record: LogRecord = { stream: 'stderr', timestamp: nowTimestamp(), text: OUTPUT_CUT_TEXT };
    try {
      const writer = await this.#writer(taskId);
      await this.#write(taskId, writer, `${JSON.stringify(record)}\n`);
      this.#emit(taskId, record);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Queues a write and waits only when the file falls behind (backpressure); a failure is kept on
   * the writer and fails the next write. `flush` waits for everything queued.
   */
  async #queue(taskId: string, writer: OpenWriter, text: string): Promise<void> {
    if (writer.failure) throw writeError(taskId, writer.failure);
    const accepted = writer.stream.write(text, (error) => {
      if (!error) return;
      writer.failure ??= error;
      if (isDiskFullError(error)) this.space.reportFull();
    });
    if (accepted) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        writer.stream.off('drain', done);
        writer.stream.off('close', done);
        resolve();
      };
      writer.stream.once('drain', done);
      writer.stream.once('close', done);
    });
    if (writer.failure) throw writeError(taskId, writer.failure);
  }

  /** Writes to the task's file and waits until it is written; a failed write (a full disk) fails this and every later write. */
  async #write(taskId: string, writer: OpenWriter, text: string): Promise<void> {
    if (writer.failure) throw writeError(taskId, writer.failure);
    await new Promise<void>((resolve, reject) => {
      writer.stream.write(text, (error) => {
        if (error) {
          writer.failure ??= error;
          reject(writeError(taskId, error));
        } else resolve();
      });
    }).catch((error: unknown) => {
      if (isDiskFullError(error)) this.space.reportFull();
      throw error;
    });
  }

  /**
   * Where the task's stored output stands, per stream, exactly (counting the records that share
   * the last timestamp): what a restarted pump resumes from; and whether it was cut.
   */
  async position(taskId: string): Promise<{ position: OutputPosition; isCut: boolean }> {
    const cursor = new OutputCursor();
    let isCut = false;
    for await (const record of this.read(taskId)) {
      if (record.text === OUTPUT_CUT_TEXT && record.stream === 'stderr') isCut = true;
      else cursor.take(record);
    }
    return { position: cursor.position(), isCut };
  }

  /** Tells followers of a new record, with its place among the records of its stream that share its timestamp. */
  #emit(taskId: string, record: LogRecord): void {
    let tail = this.#tails.get(taskId);
    if (!tail) this.#tails.set(taskId, (tail = new GroupCounter()));
    const live: LiveRecord = { record, ordinal: tail.count(record) };
    this.#live.emit(taskId, live);
  }

  /** Marks the task's output as complete: followers finish once they have read everything. */
  async end(taskId: string): Promise<void> {
    const writer = this.#writers.get(taskId);
    this.#writers.delete(taskId);
    if (writer) await closeWriter((await writer.catch(() => undefined))?.stream);
    this.#tails.delete(taskId);
    this.#live.emit(taskId, ENDED);
  }

  /** Every stored record after `since` (exclusive), oldest first. */
  async *read(taskId: string, options: { since?: string } = {}): AsyncGenerator<LogRecord> {
    for (let generation = this.#limits.maxFiles - 1; generation >= 0; generation--) {
      const file = this.#file(taskId, generation);
      const exists = await stat(file).then(() => true, () => false);
      if (!exists) continue;
      const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
      for await (const line of lines) {
        const record = parseRecord(line);
        // A line torn by a full disk (or a crash mid-write) is not output: skip it.
        if (!record) continue;
        if (options.since === undefined || compareLogTimestamps(record.timestamp, options.since) > 0) yield record;
      }
    }
  }

  /**
   * The stored records after `since`, then new ones as they are written, until the task's output
   * ends (`end`) or the signal aborts. `isEnded` says whether the output was complete before.
   */
  async *follow(taskId: string, options: { since?: string; signal?: AbortSignal; isEnded: () => boolean }): AsyncGenerator<LogRecord> {
    // Subscribe before reading the files, so nothing written meanwhile is missed; skip what the files had.
    const controller = new AbortController();
    const onAbort = (): void => controller.abort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const live = on(this.#live, taskId, { signal: controller.signal });
    // What this follower has yielded, per stream: a live record is new unless its place (timestamp,
    // and its rank among the records sharing it) is at or before what the files gave.
    const given = new GroupCounter();
    const fromFiles = async function* (store: TaskLogStore): AsyncGenerator<LogRecord> {
      const reread = new GroupCounter();
      for await (const record of store.read(taskId, { since: options.since })) {
        if (given.has(record, reread.count(record))) continue;
        given.count(record);
        yield record;
      }
    };
    try {
      yield* fromFiles(this);
      if (options.isEnded()) {
        // Lines may have landed between reading the files and this check: read them again, skipping what was given.
        yield* fromFiles(this);
        return;
      }
      for await (const [item] of live as AsyncIterable<[LiveRecord | typeof ENDED]>) {
        if (item === ENDED) return;
        if (options.since !== undefined && compareLogTimestamps(item.record.timestamp, options.since) <= 0) continue;
        if (given.has(item.record, item.ordinal)) continue;
        given.count(item.record);
        yield item.record;
      }
    } catch (error) {
      if (!controller.signal.aborted) throw error;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      controller.abort();
    }
  }

  /** The bytes of a task's stored output files (0 when it has none). */
  async outputBytes(taskId: string): Promise<number> {
    let total = 0;
    for (let generation = 0; generation < this.#limits.maxFiles; generation++) {
      total += await stat(this.#file(taskId, generation)).then((s) => s.size, () => 0);
    }
    return total;
  }

  /** Deletes a task's stored output. */
  async remove(taskId: string): Promise<void> {
    await this.end(taskId);
    await rm(path.join(this.#dir, taskId), { recursive: true, force: true });
  }

  #writer(taskId: string): Promise<OpenWriter> {
    let writer = this.#writers.get(taskId);
    if (!writer) {
      writer = this.#open(taskId);
      this.#writers.set(taskId, writer);
      // A failed open (no space for the directory) is not kept: the next append tries again.
      writer.catch(() => {
        if (this.#writers.get(taskId) === writer) this.#writers.delete(taskId);
      });
    }
    return writer;
  }

  async #open(taskId: string): Promise<OpenWriter> {
    await mkdir(path.join(this.#dir, taskId), { recursive: true });
    const file = this.#file(taskId);
    const sizeBytes = await stat(file).then((s) => s.size, () => 0);
    const torn = sizeBytes > 0 && !(await endsWithNewline(file));
    const writer: OpenWriter = { stream: createWriteStream(file, { flags: 'a' }), sizeBytes };
    // Without a listener, a write error (ENOSPC) would be thrown from the stream and end the process.
    writer.stream.on('error', (error) => {
      writer.failure ??= error;
    });
    // A line torn by a crash or a full disk ends here, so that the next record starts on its own line.
    if (torn) await this.#write(taskId, writer, '\n');
    return writer;
  }

  async #rotate(taskId: string, current: OpenWriter): Promise<OpenWriter> {
    await closeWriter(current.stream);
    await rm(this.#file(taskId, this.#limits.maxFiles - 1), { force: true });
    for (let generation = this.#limits.maxFiles - 2; generation >= 0; generation--) {
      await rename(this.#file(taskId, generation), this.#file(taskId, generation + 1)).catch(() => undefined);
    }
    const next = this.#open(taskId);
    this.#writers.set(taskId, next);
    return next;
  }
}

function parseRecord(line: string): LogRecord | undefined {
  if (line === '') return undefined;
  try {
    const record = JSON.parse(line) as Partial<LogRecord>;
    if ((record.stream !== 'stdout' && record.stream !== 'stderr') || typeof record.text !== 'string') return undefined;
    if (typeof record.timestamp !== 'string' || !isLogTimestamp(record.timestamp)) return undefined;
    return record as LogRecord;
  } catch {
    return undefined;
  }
}

async function endsWithNewline(file: string): Promise<boolean> {
  const handle = await openFile(file, 'r');
  try {
    const { size } = await handle.stat();
    if (size === 0) return true;
    const last = Buffer.alloc(1);
    await handle.read(last, 0, 1, size - 1);
    return last[0] === 0x0a;
  } finally {
    await handle.close();
  }
}

/** Ends a file stream and resolves once it is closed, whether it ended cleanly, had failed, or was gone. */
function closeWriter(stream: WriteStream | undefined): Promise<void> {
  if (!stream || stream.closed) return Promise.resolve();
  return new Promise<void>((resolve) => {
    stream.once('close', () => resolve());
    if (stream.destroyed) return;
    stream.end();
  });
}

function writeError(taskId: string, error: Error): BerthError {
  if (isDiskFullError(error)) return diskFull(taskId, error);
  return new BerthError('BERTH_INTERNAL', `writing the output of task ${taskId} failed: ${error.message}`, { cause: error, context: { taskId } });
}

function diskFull(taskId: string, cause?: unknown): BerthError {
  return new BerthError('BERTH_DISK_FULL', `the data directory has no space left for the output of task ${taskId}`, { cause, context: { taskId } });
}

/** The agent's clock as an engine log timestamp (nanosecond digits), for records berth writes itself. */
function nowTimestamp(): string {
  return new Date().toISOString().replace(/Z$/, '000000Z');
}

/** A record as followers hear it: with its rank (1, 2, …) among its stream's records that share its timestamp. */
interface LiveRecord {
  record: LogRecord;
  ordinal: number;
}

/**
 * Counts, per stream, the records of the current timestamp: the engine gives every part of a long
 * line one timestamp, so a timestamp alone does not say whether a record was seen.
 */
class GroupCounter {
  readonly #last: Partial<Record<'stdout' | 'stderr', { timestamp: string; count: number }>> = {};

  /** Counts the record; resolves with its rank within its timestamp. */
  count(record: { stream: 'stdout' | 'stderr'; timestamp: string }): number {
    const last = this.#last[record.stream];
    if (last && last.timestamp === record.timestamp) return ++last.count;
    this.#last[record.stream] = { timestamp: record.timestamp, count: 1 };
    return 1;
  }

  /** Whether the record of that rank is at or before what was counted. */
  has(record: { stream: 'stdout' | 'stderr'; timestamp: string }, ordinal: number): boolean {
    const last = this.#last[record.stream];
    if (!last) return false;
    const order = compareLogTimestamps(record.timestamp, last.timestamp);
    return order < 0 || (order === 0 && ordinal <= last.count);
  }
}
