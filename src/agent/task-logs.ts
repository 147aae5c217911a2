import { EventEmitter, on } from 'node:events';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { compareLogTimestamps, type LogEntry } from '../engine/log-entries.js';

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

const FILE = 'output.log';
const ENDED = 'ended';

interface OpenWriter {
  stream: WriteStream;
  sizeBytes: number;
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

  constructor(dir: string, limits: TaskLogLimits) {
    this.#dir = dir;
    this.#limits = limits;
    this.#live.setMaxListeners(0);
  }

  #file(taskId: string, generation = 0): string {
    return path.join(this.#dir, taskId, generation === 0 ? FILE : `${FILE}.${generation}`);
  }

  /** Appends one engine log entry; resolves once the file has taken it (backpressure). */
  async append(taskId: string, entry: LogEntry): Promise<void> {
    const record: LogRecord = { stream: entry.stream, timestamp: entry.timestamp, text: entry.data.toString('utf8') };
    const line = `${JSON.stringify(record)}\n`;
    const bytes = Buffer.byteLength(line);
    let writer = await this.#writer(taskId);
    if (writer.sizeBytes > 0 && writer.sizeBytes + bytes > this.#limits.maxFileBytes) writer = await this.#rotate(taskId, writer);
    writer.sizeBytes += bytes;
    if (!writer.stream.write(line)) await EventEmitter.once(writer.stream, 'drain');
    this.#live.emit(taskId, record);
  }

  /** Marks the task's output as complete: followers finish once they have read everything. */
  async end(taskId: string): Promise<void> {
    const writer = this.#writers.get(taskId);
    this.#writers.delete(taskId);
    if (writer) {
      const { stream } = await writer;
      await new Promise<void>((resolve) => stream.end(resolve));
    }
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
        if (line === '') continue;
        const record = JSON.parse(line) as LogRecord;
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
    let last = options.since;
    try {
      for await (const record of this.read(taskId, { since: last })) {
        last = record.timestamp;
        yield record;
      }
      if (options.isEnded()) {
        // Lines may have landed between reading the files and this check: read on from the last one.
        for await (const record of this.read(taskId, { since: last })) yield record;
        return;
      }
      for await (const [item] of live as AsyncIterable<[LogRecord | typeof ENDED]>) {
        if (item === ENDED) return;
        if (last !== undefined && compareLogTimestamps(item.timestamp, last) <= 0) continue;
        last = item.timestamp;
        yield item;
      }
    } catch (error) {
      if (!controller.signal.aborted) throw error;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      controller.abort();
    }
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
    }
    return writer;
  }

  async #open(taskId: string): Promise<OpenWriter> {
    await mkdir(path.join(this.#dir, taskId), { recursive: true });
    const file = this.#file(taskId);
    const sizeBytes = await stat(file).then((s) => s.size, () => 0);
    return { stream: createWriteStream(file, { flags: 'a' }), sizeBytes };
  }

  async #rotate(taskId: string, current: OpenWriter): Promise<OpenWriter> {
    await new Promise<void>((resolve) => current.stream.end(resolve));
    await rm(this.#file(taskId, this.#limits.maxFiles - 1), { force: true });
    for (let generation = this.#limits.maxFiles - 2; generation >= 0; generation--) {
      await rename(this.#file(taskId, generation), this.#file(taskId, generation + 1)).catch(() => undefined);
    }
    const next = this.#open(taskId);
    this.#writers.set(taskId, next);
    return next;
  }
}
