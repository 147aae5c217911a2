import { setTimeout as delay } from 'node:timers/promises';
import { asBerthError, BerthError, isBerthError, messageOf, type ErrorCode } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { Engine } from '../engine/engine.js';
import { isDiskFullError } from '../state/disk-full.js';
import type { Store } from '../state/store.js';
import { OutputCursor, toLogCursor, type OutputPosition } from './output-cursor.js';
import type { TaskLogStore } from './task-logs.js';

export interface OutputPumpDeps {
  engine: Pick<Engine, 'logEntries'>;
  logs: TaskLogStore;
  store: Pick<Store, 'tasks'>;
  logger: Logger;
  /** Told the code of every error met (metrics). */
  onError?: (code: ErrorCode) => void;
}

export interface OutputPumpOptions {
  taskId: string;
  containerId: string;
  /** Where the task's recorded output stands (see `TaskLogStore.position`). */
  position: OutputPosition;
  /** Settles once the task's end is known (its wait answered): from then on the log is read to its end and the pump stops. */
  ended: Promise<unknown>;
  /** Aborted at shutdown: the pump saves its cursor and stops; the next agent resumes it. */
  signal: AbortSignal;
  /** How often the cursor is saved while output flows. Default 1000 ms. */
  saveEveryMs?: number;
  /** Wait before reading again after a broken stream; doubles up to `maxBackoffMs`. Default 100 ms. */
  initialBackoffMs?: number;
  /** Default 5000 ms. */
  maxBackoffMs?: number;
  /**
   * Once the task's end is known, a read that brings no line for this long is cut and read again
   * from the cursor: a log stream that stalls (the engine's, or a proxy's) must not hold the end.
   * Default 10 000 ms.
   */
  quietAfterEndMs?: number;
}

/** How a pump ended: the log read to its end, output cut (disk full), shutdown, or the container (and its log) gone. */
export type PumpOutcome = 'complete' | 'cut' | 'stopped' | 'gone' | 'unreadable';

/** Codes after which reading the log again cannot help. */
const FINAL_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['BERTH_ENGINE_BAD_REQUEST', 'BERTH_ENGINE_FORBIDDEN', 'BERTH_VALIDATION']);

/**
 * Copies a task's output from the engine's log into its files, exactly once. The log is followed;
 * a stream that breaks (a dropped connection, an engine restart, the engine's own read error) is
 * opened again from the cursor after a backoff, as often as it takes, and the cursor decides what
 * is new (see OutputCursor). The pump stops only when the task's end is known and a read that began
 * after it reached the end of the log, or at shutdown, or when the data directory is full (the
 * output is then cut with a record saying so, and the task flagged). It never throws: every failure
 * is logged (once per pump), counted, and kept to this task.
 */
export async function pumpOutput(deps: OutputPumpDeps, options: OutputPumpOptions): Promise<PumpOutcome> {
  const { taskId, containerId, signal } = options;
  const saveEveryMs = options.saveEveryMs ?? 1000;
  const maxBackoffMs = options.maxBackoffMs ?? 5000;
  const initialBackoffMs = options.initialBackoffMs ?? 100;
  const quietAfterEndMs = options.quietAfterEndMs ?? 10_000;
  const cursor = new OutputCursor(options.position);
  let endKnown = false;
  const ended = options.ended.then(
    () => void (endKnown = true),
    () => void (endKnown = true),
  );
  let backoffMs = initialBackoffMs;
  let warned = false;
  let savedAt = Date.now();
  let saved = JSON.stringify(toLogCursor(cursor.position()));

  const save = async (): Promise<void> => {
    const position = toLogCursor(cursor.position());
    const text = JSON.stringify(position);
    if (text === saved) return;
    try {
      // The files first: a saved cursor never claims a line the files do not hold.
      await deps.logs.flush(taskId);
      deps.store.tasks.setLogCursor(taskId, position);
      saved = text;
    } catch (error) {
      // The files hold the truth and a restarted pump reads its position from them: the cursor waits for the next save.
      report(error, 'could not save the output cursor');
    }
    savedAt = Date.now();
  };

  const report = (error: unknown, message: string): void => {
    const { code } = asBerthError(error);
    deps.onError?.(code);
    const meta = { taskId, containerId, code, error: messageOf(error) };
    if (!warned) deps.logger.warn(meta, message);
    else deps.logger.debug(meta, message);
    warned = true;
  };

  const pause = async (untilEnd: boolean): Promise<void> => {
    const waits: Array<Promise<unknown>> = [delay(backoffMs, undefined, { signal }).catch(() => undefined)];
    // A clean end of the stream while the end is unknown: the end is likely on its way; wake for it.
    if (untilEnd) waits.push(ended);
    await Promise.race(waits);
    backoffMs = Math.min(backoffMs * 2, maxBackoffMs);
  };

  try {
    while (!signal.aborted) {
      const finalRead = endKnown;
      cursor.beginRead();
      // Each read has its own signal: shutdown aborts it, and so does a read gone quiet after the end is known.
      const read = new AbortController();
      const onShutdown = (): void => read.abort();
      signal.addEventListener('abort', onShutdown, { once: true });
      let isQuiet = false;
      let isReadDone = false;
      let quietTimer: NodeJS.Timeout | undefined;
      const watchQuiet = (): void => {
        clearTimeout(quietTimer);
        if (!endKnown || isReadDone || read.signal.aborted) return;
        quietTimer = setTimeout(() => {
          isQuiet = true;
          read.abort();
        }, quietAfterEndMs);
      };
      watchQuiet();
      void ended.then(watchQuiet);
      try {
        const since = cursor.resumeAfter();
        for await (const entry of deps.engine.logEntries(containerId, { follow: !finalRead, ...(since === undefined ? {} : { since }), signal: read.signal })) {
          watchQuiet();
          if (!cursor.take(entry)) continue;
          try {
            await deps.logs.append(taskId, entry);
          } catch (error) {
            if (!isDiskFullError(error)) throw error;
            await cutOutput(deps, taskId, signal);
            return 'cut';
          }
          backoffMs = initialBackoffMs;
          if (Date.now() - savedAt >= saveEveryMs) await save();
        }
        if (signal.aborted) return 'stopped';
        if (isQuiet) {
          // Cut by us, not ended by the engine: the log's end was not reached. Read again from the cursor.
          report(new BerthError('BERTH_ENGINE_TIMEOUT', `the log stream brought nothing for ${quietAfterEndMs} ms after the task ended`), 'reading the task output broke; reading on from the cursor');
          await pause(false);
          continue;
        }
        // A read begun after the end was known reached the end of the log: nothing more will come.
        if (finalRead) return 'complete';
        // The follow ended: the container stopped, or the stream was cut cleanly. Read once more after the end is known.
        if (!endKnown) await pause(true);
      } catch (error) {
        if (signal.aborted) return 'stopped';
        if (isQuiet) {
          report(new BerthError('BERTH_ENGINE_TIMEOUT', `the log stream brought nothing for ${quietAfterEndMs} ms after the task ended`), 'reading the task output broke; reading on from the cursor');
          await pause(false);
          continue;
        }
        if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return 'gone';
        if (isBerthError(error) && FINAL_CODES.has(error.code)) {
          report(error, 'the task output cannot be read from the engine');
          return 'unreadable';
        }
        report(error, 'reading the task output broke; reading on from the cursor');
        await pause(false);
      } finally {
        isReadDone = true;
        clearTimeout(quietTimer);
        signal.removeEventListener('abort', onShutdown);
      }
    }
    return 'stopped';
  } finally {
    await save();
  }
}

/** Cuts the task's output: a record in its files (when it fits), and the flag on the task, written as soon as the store takes it. */
export async function cutOutput(deps: Pick<OutputPumpDeps, 'store' | 'logger' | 'onError'> & { logs: Pick<TaskLogStore, 'markCut'> }, taskId: string, signal: AbortSignal): Promise<void> {
  const marked = await deps.logs.markCut(taskId);
  deps.logger.error({ taskId, markerWritten: marked, code: 'BERTH_DISK_FULL' }, 'the data directory is full: the task output is cut');
  deps.onError?.('BERTH_DISK_FULL');
  const reason = 'the agent\'s data directory had no space left';
  for (let waitMs = 500; !signal.aborted; waitMs = Math.min(waitMs * 2, 10_000)) {
    try {
      deps.store.tasks.setOutputTruncated(taskId, reason);
      return;
    } catch (error) {
      if (!isDiskFullError(error)) {
        deps.logger.error({ taskId, code: asBerthError(error).code }, 'could not record that the task output was cut');
        return;
      }
      await delay(waitMs, undefined, { signal }).catch(() => undefined);
    }
  }
}
