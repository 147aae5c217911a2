import type { Readable } from 'node:stream';
import { asBerthError, messageOf, type ErrorCode } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { LogEntry } from '../engine/log-entries.js';
import { isDiskFullError } from '../state/disk-full.js';
import type { Store } from '../state/store.js';
import { cutOutput, type PumpOutcome } from './output-pump.js';
import type { TaskLogStore } from './task-logs.js';

/**
 * The output of a task that runs as an exec in a warm pool's container (src/pools): the engine's
 * container log does not hold an exec's output, so the handle's stdout and stderr streams are the
 * one source, and this pump writes them into the task's files as the engine-log pump writes log
 * entries (see output-pump.ts): one record per line, tagged with its stream and stamped with the
 * time the agent read it, so that `GET /v1/tasks/:id/logs`, follow and resume (`since`) work on a
 * warm task as on a cold one.
 */

export interface StreamPumpDeps {
  logs: Pick<TaskLogStore, 'append' | 'flush' | 'markCut'>;
  store: Pick<Store, 'tasks'>;
  logger: Logger;
  /** Told the code of every error met (metrics). */
  onError?: (code: ErrorCode) => void;
  /** Nanoseconds since the epoch (tests); default the wall clock, made finer by the monotonic one. */
  nowNs?: () => bigint;
}

export interface StreamPumpOptions {
  taskId: string;
  stdout: Readable;
  stderr: Readable;
  /** Settles once the task's end is known: from then on streams that stay open this long are given up (`quietAfterEndMs`). */
  ended: Promise<unknown>;
  /** Aborted at shutdown: the pump stops (the next agent cannot follow an exec's output: see driver.recoverWarm). */
  signal: AbortSignal;
  /** Once the end is known, streams that bring nothing for this long are given up. Default 10 000 ms. */
  quietAfterEndMs?: number;
}

/** The engine splits a line longer than this into records of this size; so does this pump. */
export const MAX_RECORD_BYTES = 16 * 1024;

/** Splits a stream's bytes into records the way the engine's log does: at each newline (kept), and every MAX_RECORD_BYTES of a longer line. */
export class LineSplitter {
  #pending: Buffer = Buffer.alloc(0);

  /** The complete records in `chunk` (with what came before it); the rest waits for more. */
  push(chunk: Buffer): Buffer[] {
    let buffered = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    const records: Buffer[] = [];
    for (;;) {
      const newline = buffered.indexOf(0x0a);
      if (newline >= 0 && newline < MAX_RECORD_BYTES) {
        records.push(buffered.subarray(0, newline + 1));
        buffered = buffered.subarray(newline + 1);
      } else if (buffered.length >= MAX_RECORD_BYTES) {
        records.push(buffered.subarray(0, MAX_RECORD_BYTES));
        buffered = buffered.subarray(MAX_RECORD_BYTES);
      } else break;
    }
    this.#pending = Buffer.from(buffered);
    return records;
  }

  /** What is left at the stream's end (a last line without a newline), if anything. */
  end(): Buffer | undefined {
    const rest = this.#pending;
    this.#pending = Buffer.alloc(0);
    return rest.length > 0 ? rest : undefined;
  }
}

/** An RFC 3339 UTC timestamp with nine fractional digits, as the engine writes them, for `ns` nanoseconds since the epoch. */
export function timestampOfNs(ns: bigint): string {
  const seconds = ns / 1_000_000_000n;
  const fraction = (ns % 1_000_000_000n).toString().padStart(9, '0');
  return new Date(Number(seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, `.${fraction}Z`);
}

/** The wall clock in nanoseconds, with the monotonic clock's resolution. */
function wallClockNs(): () => bigint {
  const base = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
  return () => base + process.hrtime.bigint();
}

/**
 * Copies a warm task's stdout and stderr into its files until both end (the exec ended), the end is
 * known and they stay quiet for `quietAfterEndMs`, the agent shuts down, or the data directory is
 * full (the output is then cut, as the engine-log pump cuts it). Records are stamped in the order
 * they are written, strictly increasing, so a reader resuming after a timestamp misses nothing and
 * sees nothing twice. Never throws: every failure is logged, counted and kept to this task.
 */
export async function pumpStreams(deps: StreamPumpDeps, options: StreamPumpOptions): Promise<PumpOutcome> {
  const { taskId, signal } = options;
  const quietAfterEndMs = options.quietAfterEndMs ?? 10_000;
  const now = deps.nowNs ?? wallClockNs();
  let lastNs = 0n;
  let chain: Promise<void> = Promise.resolve();
  let outcome: PumpOutcome | undefined;
  const finish = new AbortController();
  const stop = (reason: PumpOutcome): void => {
    outcome ??= reason;
    finish.abort();
  };

  /** Appends one record, after every record before it, stamped as it is written. */
  const write = (stream: LogEntry['stream'], data: Buffer): Promise<void> => {
    chain = chain.then(async () => {
      if (outcome !== undefined) return;
      const ns = now();
      lastNs = ns > lastNs ? ns : lastNs + 1n;
      try {
        await deps.logs.append(taskId, { stream, timestamp: timestampOfNs(lastNs), data });
      } catch (error) {
        if (isDiskFullError(error)) {
          stop('cut');
          await cutOutput(deps, taskId, signal);
          return;
        }
        report(error);
        stop('unreadable');
      }
    });
    return chain;
  };

  let warned = false;
  const report = (error: unknown): void => {
    const { code } = asBerthError(error);
    deps.onError?.(code);
    if (!warned) deps.logger.warn({ taskId, code, error: messageOf(error) }, 'could not write the output of a warm task');
    warned = true;
  };

  const copy = async (name: LogEntry['stream'], stream: Readable): Promise<void> => {
    const splitter = new LineSplitter();
    try {
      for await (const chunk of stream.iterator({ destroyOnReturn: false })) {
        if (outcome !== undefined) return;
        for (const record of splitter.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)))) await write(name, record);
        timer?.refresh();
      }
    } catch (error) {
      // A stream that breaks ends this stream's output; the other goes on.
      if (outcome === undefined) report(error);
    }
    const rest = splitter.end();
    if (rest && outcome === undefined) await write(name, rest);
  };

  let timer: NodeJS.Timeout | undefined;
  const onShutdown = (): void => stop('stopped');
  signal.addEventListener('abort', onShutdown, { once: true });
  if (signal.aborted) stop('stopped');
  void options.ended.then(
    () => undefined,
    () => undefined,
  ).then(() => {
    if (outcome !== undefined) return;
    timer = setTimeout(() => {
      deps.logger.warn({ taskId, quietAfterEndMs }, 'the output streams of a warm task stayed open after its end; giving them up');
      stop('complete');
    }, quietAfterEndMs);
  });
  const copied = Promise.all([copy('stdout', options.stdout), copy('stderr', options.stderr)]);
  const stopped = new Promise<void>((resolve) => finish.signal.addEventListener('abort', () => resolve(), { once: true }));
  try {
    await Promise.race([copied, stopped]);
    await chain;
    try {
      await deps.logs.flush(taskId);
    } catch (error) {
      if (!isDiskFullError(error)) report(error);
    }
    return outcome ?? 'complete';
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onShutdown);
    // Never wait for these again: a stream given up is destroyed, so its exec's pipe does not fill.
    if (outcome === 'complete' || outcome === 'cut' || outcome === 'unreadable') {
      options.stdout.destroy();
      options.stderr.destroy();
    }
  }
}
