import { setTimeout as delay } from 'node:timers/promises';
import { BerthError, isBerthError, type ErrorCode } from '../common/errors.js';
import type { Logger } from '../common/logger.js';

/**
 * Codes of a start that failed because the engine did not answer, lost the connection, or answered
 * with a server error: the engine may answer again, and the task should be there when it does.
 * Everything else (a bad spec, a missing image, a name in use …) fails the task at once.
 */
export const TRANSIENT_START_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['BERTH_ENGINE_UNAVAILABLE', 'BERTH_ENGINE_TIMEOUT', 'BERTH_ENGINE_SERVER_ERROR']);

/**
 * Whether a start failed because of the engine, transiently: a transient code, or a pull that failed
 * because the engine (not the registry) did not answer.
 */
export function isTransientStartError(error: BerthError): boolean {
  if (isEngineOutage(error)) return true;
  return error.code === 'BERTH_IMAGE_PULL_FAILED' && isBerthError(error.cause) && isEngineOutage(error.cause);
}

/** Whether the engine did not answer, lost the connection, or answered 5xx: it may answer later, so nothing is concluded. */
export function isEngineOutage(error: BerthError): boolean {
  return TRANSIENT_START_CODES.has(error.code);
}

/**
 * A start that fails with a server error (5xx) while the engine answers its ping is a problem of
 * the engine with this task (a port already allocated answers 500, for one), not an outage: after
 * this many such failures the task fails, with the engine's error. A call that did not answer
 * (timeout) or lost its connection counts as the outage it is, bounded by tasks.startOutageLimit only.
 */
export const MAX_ANSWERED_START_FAILURES = 3;

/** The longest pause between retries of a task the answering engine failed. */
const MAX_RETRY_DELAY_MS = 30_000;

/** The code that decides whether a failure was an answer (a 5xx) or an outage: a pull's is its cause's. */
function engineCode(error: BerthError): ErrorCode {
  return error.code === 'BERTH_IMAGE_PULL_FAILED' && isBerthError(error.cause) ? error.cause.code : error.code;
}

export interface StartOutageOptions {
  /** One ping, never retried, with a short deadline: does the engine answer now? */
  ping(signal: AbortSignal): Promise<void>;
  /**
   * Resolves when no late create may still land under a task's name and be removed by the driver's
   * guard (`TaskDriver.settled`): a start retried inside that window could lose its new container.
   */
  settled(): Promise<void>;
  /** `tasks.startOutageLimit` in force now; undefined waits without bound. */
  limitMs(): number | undefined;
  /** Starts the given tasks again, in the order given (their submission order). */
  retry(taskIds: readonly string[]): void;
  /** Ends a task that waited longer than the limit, as failed with `reason`. */
  expire(taskId: string, reason: string): void;
  /** Aborted at shutdown: waiting stops, and the next agent starts the waiting tasks. */
  signal: AbortSignal;
  logger: Logger;
  /** Time between pings while the engine does not answer. Default 1 s. */
  pollMs?: number;
  now?: () => number;
}

export type StartVerdict = { action: 'wait' } | { action: 'fail'; reason: string };

interface Waiter {
  seq: number;
  /** When the task's first start attempt of this outage failed. */
  sinceMs: number;
  /** Failures while the engine answered its ping: they space the retries out. */
  answeredFailures: number;
  /** Of those, the server errors: MAX_ANSWERED_START_FAILURES of them fail the task. */
  answeredServerErrors: number;
  lastError: BerthError;
  /** Retried no earlier than this (a backoff after a failure the answering engine gave). */
  retryAtMs: number;
  /** False while a retry is under way. */
  waiting: boolean;
}

/**
 * Tasks that could not start because the engine did not answer, or answered with a transient error:
 * they keep their admission share (so that nothing submitted later overtakes them) and their state
 * `starting`, and are started again, in submission order, as soon as the engine answers a ping.
 * A task that waited longer than `tasks.startOutageLimit` ends as failed (exit 125), with a reason
 * that says for how long the engine was unreachable.
 */
export class StartOutage {
  readonly #options: StartOutageOptions;
  readonly #waiters = new Map<string, Waiter>();
  readonly #now: () => number;
  #loop: Promise<void> | undefined;
  #warned = false;

  constructor(options: StartOutageOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Tasks waiting for the engine now (for health). */
  get waitingCount(): number {
    return [...this.#waiters.values()].filter((w) => w.waiting).length;
  }

  /** Whether the task waits for the engine (no start attempt of it is under way). */
  isWaiting(taskId: string): boolean {
    return this.#waiters.get(taskId)?.waiting ?? false;
  }

  /**
   * Decides what becomes of a task whose start failed: `fail` (with the end state's reason) for an
   * error that is not transient, for a task past the outage limit, or after
   * MAX_ANSWERED_START_FAILURES server errors while the engine answers its ping; otherwise `wait`,
   * and the task is retried when the engine answers (with a growing pause when it answered all along).
   */
  async onStartFailed(task: { id: string; seq: number }, error: BerthError): Promise<StartVerdict> {
    if (!isTransientStartError(error)) {
      this.#waiters.delete(task.id);
      return { action: 'fail', reason: `${error.code}: ${error.message}` };
    }
    const now = this.#now();
    const waiter = this.#waiters.get(task.id) ?? {
      seq: task.seq,
      sinceMs: now,
      answeredFailures: 0,
      answeredServerErrors: 0,
      lastError: error,
      retryAtMs: 0,
      waiting: false,
    };
    waiter.lastError = error;
    this.#waiters.set(task.id, waiter);
    const limit = this.#options.limitMs();
    if (limit !== undefined && now - waiter.sinceMs >= limit) {
      this.#waiters.delete(task.id);
      return { action: 'fail', reason: outageReason(waiter, now, limit) };
    }
    const answers = await this.#answers();
    if (answers) {
      waiter.answeredFailures++;
      if (engineCode(error) === 'BERTH_ENGINE_SERVER_ERROR' && ++waiter.answeredServerErrors >= MAX_ANSWERED_START_FAILURES) {
        this.#waiters.delete(task.id);
        return { action: 'fail', reason: `${error.code}: ${error.message} (the engine answers; the start failed ${waiter.answeredServerErrors} times)` };
      }
      waiter.retryAtMs = this.#now() + Math.min(MAX_RETRY_DELAY_MS, 1000 * 2 ** (waiter.answeredFailures - 1));
    } else {
      waiter.retryAtMs = 0;
    }
    waiter.waiting = true;
    if (!this.#warned) {
      this.#warned = true;
      this.#options.logger.warn({ taskId: task.id, code: error.code }, 'a task could not start because the engine does not answer; tasks wait and start when it answers again');
    }
    this.#ensureWatching();
    return { action: 'wait' };
  }

  /** The task started or ended: nothing of it is kept. */
  forget(taskId: string): void {
    this.#waiters.delete(taskId);
  }

  /**
   * Takes a waiting task out of the wait (it is being stopped) and returns true; returns false when
   * the task does not wait, or a start attempt of it is under way (whose end then sees the stop).
   */
  cancel(taskId: string): boolean {
    if (!this.isWaiting(taskId)) return false;
    this.#waiters.delete(taskId);
    return true;
  }

  /** Resolves when no watch loop runs (every waiting task was retried or ended, or shutdown began). */
  async idle(): Promise<void> {
    while (this.#loop) await this.#loop;
  }

  /** One watch loop runs while tasks wait; a task that starts waiting as the loop ends gets a new one. */
  #ensureWatching(): void {
    if (this.#loop || this.#options.signal.aborted) return;
    this.#loop = this.#watch().finally(() => {
      this.#loop = undefined;
      if (this.waitingCount > 0) this.#ensureWatching();
    });
  }

  async #answers(): Promise<boolean> {
    if (this.#options.signal.aborted) return false;
    return this.#options.ping(this.#options.signal).then(
      () => true,
      () => false,
    );
  }

  async #watch(): Promise<void> {
    const { signal } = this.#options;
    const pollMs = this.#options.pollMs ?? 1000;
    while (!signal.aborted && this.waitingCount > 0) {
      this.#expire();
      if (this.waitingCount === 0) break;
      if (await this.#answers()) {
        await this.#options.settled();
        if (signal.aborted) break;
        const now = this.#now();
        const due = [...this.#waiters.entries()].filter(([, w]) => w.waiting && w.retryAtMs <= now).sort(([, a], [, b]) => a.seq - b.seq);
        if (due.length > 0) {
          if (this.#warned) this.#options.logger.info({ tasks: due.length }, 'the engine answers; starting the tasks that waited for it');
          this.#warned = false;
          for (const [, waiter] of due) waiter.waiting = false;
          this.#options.retry(due.map(([id]) => id));
        }
      }
      await delay(pollMs, undefined, { signal }).catch(() => undefined);
    }
  }

  /** Ends the waiting tasks that are past the limit. */
  #expire(): void {
    const limit = this.#options.limitMs();
    if (limit === undefined) return;
    const now = this.#now();
    for (const [taskId, waiter] of [...this.#waiters.entries()]) {
      if (!waiter.waiting || now - waiter.sinceMs < limit) continue;
      this.#waiters.delete(taskId);
      this.#options.expire(taskId, outageReason(waiter, now, limit));
    }
  }
}

function outageReason(waiter: Waiter, now: number, limitMs: number): string {
  const { code, message } = waiter.lastError;
  return `${code}: the engine was unreachable for ${formatMs(now - waiter.sinceMs)} while the task waited to start (tasks.startOutageLimit is ${formatMs(limitMs)}); last error: ${message}`;
}

/** `90500` → `1m30s`; whole seconds, or milliseconds below one second. */
export function formatMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  let seconds = Math.round(ms / 1000);
  const hours = Math.floor(seconds / 3600);
  seconds -= hours * 3600;
  const minutes = Math.floor(seconds / 60);
  seconds -= minutes * 60;
  return `${hours > 0 ? `${hours}h` : ''}${minutes > 0 ? `${minutes}m` : ''}${seconds > 0 || (hours === 0 && minutes === 0) ? `${seconds}s` : ''}`;
}

/** The error a start threw, as a BerthError (anything else is a bug, BERTH_INTERNAL). */
