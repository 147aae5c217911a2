import type { Logger } from '../common/logger.js';
import { resolveAcceptedTaskSpec, type ResolvedRestartPolicy, type RestartOn } from '../spec/schema.js';
import type { StoredEndState, TaskAttempt, TaskRecord } from '../state/tasks.js';
import type { EndState } from '../tasks/end-state.js';

/**
 * The agent's restart policy (a task spec's `restart`, after Nomad's restart stanza): the pure
 * decision of whether an attempt that ended is followed by another, and when; the name of each
 * attempt's start; and the waits between attempts, which a stop cancels. The supervisor wires it
 * into its end path (TaskSupervisor#supervise) and its start (TaskSupervisor#start).
 */

/** What the policy says of an attempt that ended. */
export type RestartDecision =
  | {
      action: 'restart';
      /** The next attempt's number (2 for the first restart). */
      attempt: number;
      /** How long to wait before it. */
      delayMs: number;
    }
  | {
      action: 'end';
      /** Why not: the policy is never, the end is not one it restarts on, or its attempts are used up. */
      why: 'never' | 'not-restarted-on' | 'attempts-exhausted';
    };

/** An attempt as the decision needs it: when it started (the first restart's count starts with the second attempt). */
export interface AttemptTiming {
  startedAtMs?: number;
  finishedAtMs?: number;
}

/**
 * Whether an attempt that ended with `end` is restarted, and after how long. `attempts` lists every
 * attempt so far, the one that just ended last. A success and a cancellation (a stop) never
 * restart; `failed`, `oom`, `timed-out` and `lost` do when `on` lists them. Restarts are counted
 * over the task's life, or, with an interval, those whose attempt started within the interval
 * before `nowMs`. The delay grows by `backoff` with each restart counted, up to `maxDelayMs`. With
 * the restarts used up, mode `fail` ends the task; mode `delay` restarts once the interval lets
 * another in (when the oldest restart counted leaves it), with the delay back at its start.
 */
export function decideRestart(policy: ResolvedRestartPolicy, attempts: readonly AttemptTiming[], end: Pick<EndState | StoredEndState, 'kind'>, nowMs: number): RestartDecision {
  if (policy.policy === 'never') return { action: 'end', why: 'never' };
  if (end.kind === 'success' || end.kind === 'cancelled' || !policy.on.includes(end.kind as RestartOn)) return { action: 'end', why: 'not-restarted-on' };
  const nextAttempt = attempts.length + 1;
  // Every attempt after the first began with a restart.
  const restarts = attempts.slice(1);
  const windowStartMs = policy.intervalMs === undefined ? -Infinity : nowMs - policy.intervalMs;
  const counted = restarts.filter((attempt) => (attempt.startedAtMs ?? attempt.finishedAtMs ?? nowMs) > windowStartMs);
  if (counted.length < policy.attempts) {
    const delayMs = Math.min(policy.maxDelayMs, Math.round(policy.delayMs * policy.backoff ** counted.length));
    return { action: 'restart', attempt: nextAttempt, delayMs };
  }
  if (policy.mode === 'fail' || policy.intervalMs === undefined || policy.attempts === 0) return { action: 'end', why: 'attempts-exhausted' };
  // The interval lets another restart in once the oldest one counted leaves it.
  const oldestMs = Math.min(...counted.map((attempt) => attempt.startedAtMs ?? attempt.finishedAtMs ?? nowMs));
  const freedInMs = Math.max(0, oldestMs + policy.intervalMs - nowMs);
  return { action: 'restart', attempt: nextAttempt, delayMs: Math.max(policy.delayMs, freedInMs) };
}

/** The number of the task's current (or last) attempt: 1 until it restarts. */
export function currentAttempt(record: Pick<TaskRecord, 'attempts'>): number {
  return (record.attempts?.length ?? 0) + 1;
}

/**
 * The name of an attempt's start (the container's start-attempt label, see StartOptions.startAttempt):
 * the task id for the first, as before restarts existed, so that a container an older agent created
 * is still adopted; `<task id>.<n>` for the n-th. One name per attempt: a create a dead agent sent for
 * attempt n is adopted by the next agent's start of attempt n, and never taken for another attempt's.
 */
export function startAttemptKey(taskId: string, attempt: number): string {
  return attempt <= 1 ? taskId : `${taskId}.${attempt}`;
}

/** The attempt that just ended, as the task's attempts list keeps it once the task is restarted. */
export function endedAttempt(record: TaskRecord, end: EndState | StoredEndState, finishedAtMs: number): TaskAttempt {
  return {
    attempt: currentAttempt(record),
    ...(record.containerId !== undefined ? { containerId: record.containerId } : {}),
    ...(record.startedAtMs !== undefined ? { startedAtMs: record.startedAtMs } : {}),
    finishedAtMs,
    // A lost end's error is kept in its JSON form, as the record keeps it.
    endState: JSON.parse(JSON.stringify(end)) as StoredEndState,
    ...('exitCode' in end && end.exitCode !== undefined ? { exitCode: end.exitCode } : {}),
  };
}

/** A restart the policy asks for: the attempt that ended, as the attempts list keeps it, and when the next is due. */
export interface RestartPlan {
  ended: TaskAttempt;
  /** The next attempt's number. */
  attempt: number;
  delayMs: number;
  restartAtMs: number;
}

/**
 * What the task's restart policy (its stored spec's `restart`) asks of the attempt that ended with
 * `end`: a restart, or undefined when the task ends. Only a task recorded `running` restarts: one
 * being stopped (a user's stop) ends, whatever its end.
 */
export function planRestart(record: TaskRecord, end: EndState | StoredEndState, finishedAtMs: number, nowMs: number): RestartPlan | undefined {
  if (record.state !== 'running' || record.spec.restart === undefined) return undefined;
  const policy = resolveAcceptedTaskSpec(record.spec).restart;
  const history: AttemptTiming[] = [...(record.attempts ?? []), { ...(record.startedAtMs !== undefined ? { startedAtMs: record.startedAtMs } : {}), finishedAtMs }];
  const decision = decideRestart(policy, history, end, nowMs);
  if (decision.action === 'end') return undefined;
  return { ended: endedAttempt(record, end, finishedAtMs), attempt: decision.attempt, delayMs: decision.delayMs, restartAtMs: nowMs + decision.delayMs };
}

/** How a wait for a restart ended: it is due, a stop cancelled it, or the agent is shutting down. */
export type RestartWaitOutcome = 'due' | 'cancelled' | 'closing';

interface Waiting {
  wake?: (outcome: RestartWaitOutcome) => void;
}

/**
 * The tasks waiting for their next attempt. A task is marked waiting as soon as its restart is
 * recorded (`arm`), before its old container is removed, so that a stop in between already
 * finds it (and ends it as cancelled: no new container is made). A wait holds one timer, which
 * the agent's shutdown (its closing signal) clears. The caller checks the task is still `starting` before and after
 * a wait: a stop may have ended it meanwhile.
 */
export class RestartWaits {
  readonly #waiting = new Map<string, Waiting>();

  constructor(private readonly logger: Logger) {}

  /** The number of tasks waiting for their next attempt. */
  get size(): number {
    return this.#waiting.size;
  }

  /** Marks the task as waiting for its next attempt (idempotent). */
  arm(taskId: string): void {
    if (!this.#waiting.has(taskId)) this.#waiting.set(taskId, {});
  }

  /**
   * Waits until `dueAtMs` (at once when it has passed: a wait an agent restart interrupted), unless
   * the task's restart is cancelled first, or `signal` aborts (shutdown: the next agent resumes the
   * wait from the stored time). The task is no longer waiting once this resolves.
   */
  async until(taskId: string, dueAtMs: number, signal: AbortSignal): Promise<RestartWaitOutcome> {
    this.arm(taskId);
    const waiting = this.#waiting.get(taskId)!;
    try {
      if (signal.aborted) return 'closing';
      const delayMs = Math.max(0, dueAtMs - Date.now());
      this.logger.debug({ taskId, delayMs }, 'task waits for its next attempt');
      return await new Promise<RestartWaitOutcome>((resolve) => {
        // Not unref'd: the wait is work under way (idle() waits for it); shutdown ends it.
        const timer = setTimeout(() => wake('due'), delayMs);
        const onAbort = (): void => wake('closing');
        const wake = (result: RestartWaitOutcome): void => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          resolve(result);
        };
        waiting.wake = wake;
        signal.addEventListener('abort', onAbort, { once: true });
      });
    } finally {
      if (this.#waiting.get(taskId) === waiting) this.#waiting.delete(taskId);
    }
  }

  /** Cancels the task's restart (a stop): its wait ends. Resolves whether it was waiting for one. */
  cancel(taskId: string): boolean {
    const waiting = this.#waiting.get(taskId);
    if (!waiting) return false;
    this.#waiting.delete(taskId);
    waiting.wake?.('cancelled');
    return true;
  }

  /** Forgets a task that waits no more (its restart was not made after all). */
  forget(taskId: string): void {
    this.#waiting.delete(taskId);
  }
}
