import { BerthError, cancelledError, isBerthError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ContainerEventStream, Engine } from '../engine/engine.js';
import type { ContainerInspect } from '../engine/types.js';
import { codeOf } from './container-ops.js';
import { describeEndState, type EndState } from './end-state.js';

/** What waiting for health needs from the engine port. */
export type HealthEngine = Pick<Engine, 'inspectContainer' | 'openContainerEvents'>;

/** The engine's own defaults for settings a health check leaves at 0 (Moby's defaultProbe*). */
const ENGINE_DEFAULTS = { intervalMs: 30_000, timeoutMs: 30_000, startPeriodMs: 0, retries: 3 } as const;

/** Slack on top of the longest time the engine can take to a verdict: probes are execs, and execs queue on a busy engine. */
const VERDICT_SLACK_MS = 10_000;

/** Engine events that may change the answer: a new health status, or the container going away. */
const WAKING_EVENTS = ['health_status', 'die', 'destroy'] as const;

type StoredHealthcheck = NonNullable<ContainerInspect['healthcheck']>;

/** Whether the engine runs a health check for a container with this (merged) configuration. */
export function hasActiveHealthcheck(check: ContainerInspect['healthcheck']): check is StoredHealthcheck {
  const kind = check?.test[0];
  return kind === 'CMD' || kind === 'CMD-SHELL';
}

/** A health check's effective settings in milliseconds, the engine's defaults filled in. */
export function effectiveHealthSettings(check: StoredHealthcheck): { intervalMs: number; timeoutMs: number; startPeriodMs: number; retries: number } {
  const ms = (ns: number, fallback: number): number => (ns > 0 ? ns / 1_000_000 : fallback);
  return {
    intervalMs: ms(check.intervalNs, ENGINE_DEFAULTS.intervalMs),
    timeoutMs: ms(check.timeoutNs, ENGINE_DEFAULTS.timeoutMs),
    startPeriodMs: ms(check.startPeriodNs, ENGINE_DEFAULTS.startPeriodMs),
    retries: check.retries > 0 ? check.retries : ENGINE_DEFAULTS.retries,
  };
}

/**
 * How long berth waits for a verdict before giving up. The engine reaches one (healthy or
 * unhealthy) within the start period plus retries + 1 rounds of interval and timeout (failures in
 * the start period do not count, and a round may start just before it ends); twice that, plus
 * slack, leaves room for an engine slow to run its probes.
 */
export function healthVerdictDeadlineMs(check: StoredHealthcheck): number {
  const { intervalMs, timeoutMs, startPeriodMs, retries } = effectiveHealthSettings(check);
  return 2 * (startPeriodMs + (retries + 1) * (intervalMs + timeoutMs)) + VERDICT_SLACK_MS;
}

/**
 * How often the container is inspected while waiting. Events wake the wait at once; the poll only
 * covers an event missed at subscription or a broken event stream, so it follows the check's own
 * interval, within bounds.
 */
export function healthPollMs(check: StoredHealthcheck): number {
  return Math.min(1000, Math.max(100, effectiveHealthSettings(check).intervalMs));
}

export interface AwaitHealthyOptions {
  taskId: string;
  containerId: string;
  /** Settles when the task ends (the handle's wait): a task that ends is never going to be healthy. */
  ended: Promise<EndState>;
  /** Aborting it rejects with BERTH_CANCELLED. */
  signal?: AbortSignal;
  logger: Logger;
  /** Overrides the deadline derived from the health check's settings (healthVerdictDeadlineMs). */
  deadlineMs?: number;
  /** Overrides the poll period derived from the health check's interval (healthPollMs). */
  pollMs?: number;
  /** Default Date.now. */
  now?: () => number;
}

/**
 * A one-slot alarm: `wait(ms)` resolves after ms or at the next `wake()`, whichever is first; a
 * wake with nobody waiting is kept for the next wait, so that none is lost between two inspects.
 */
export class Wakeup {
  #pending = false;
  #wake: (() => void) | undefined;

  wake(): void {
    if (this.#wake) this.#wake();
    else this.#pending = true;
  }

  wait(ms: number): Promise<void> {
    if (this.#pending) {
      this.#pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.#wake = done;
    });
  }
}

function lastProbeOf(state: ContainerInspect): { exitCode: number; output: string } | undefined {
  const probe = state.health?.probes.at(-1);
  // The engine keeps up to 4 KiB of a probe's output; a message needs its end, where errors are.
  return probe && { exitCode: probe.exitCode, output: probe.output.trim().slice(-300) };
}

function unhealthyError(taskId: string, containerId: string, state: ContainerInspect): BerthError {
  const streak = state.health?.failingStreak ?? 0;
  const last = lastProbeOf(state);
  const detail = last ? ` (last exit code ${last.exitCode}${last.output ? `: ${last.output}` : ''})` : '';
  return new BerthError('BERTH_TASK_UNHEALTHY', `task ${taskId} is unhealthy: its health check failed ${streak} time(s) in a row${detail}`, {
    context: { taskId, containerId, reason: 'unhealthy', failingStreak: streak, ...(last ? { lastProbe: last } : {}) },
  });
}

function endedError(taskId: string, containerId: string, how: string, endState?: EndState): BerthError {
  return new BerthError('BERTH_TASK_UNHEALTHY', `task ${taskId} ended before it was healthy: ${how}`, {
    context: { taskId, containerId, reason: 'ended', ...(endState ? { endState } : {}) },
  });
}

/**
 * Resolves when the engine reports the container healthy. Rejects with BERTH_TASK_UNHEALTHY when it
 * reports unhealthy, when the task ends (or its container vanishes) first, or when no verdict comes
 * by the deadline; with BERTH_TASK_STATE when the container has no health check (neither its spec
 * nor its image defines one, or it is disabled); with BERTH_CANCELLED when the signal aborts.
 *
 * The container's inspect data is the one truth. The engine's events for the container only wake
 * the wait early; a poll at the check's interval covers an event missed while subscribing and an
 * event stream that breaks, so a dropped connection costs latency, never a wrong answer.
 */
export async function awaitHealthy(engine: HealthEngine, options: AwaitHealthyOptions): Promise<void> {
  const { taskId, containerId, signal, logger } = options;
  const now = options.now ?? Date.now;
  const what = `waiting for task ${taskId} to be healthy`;
  if (signal?.aborted) throw cancelledError(what, signal.reason);

  const wakeup = new Wakeup();
  // Ends the event stream and any inspect in flight, on abort and on the way out.
  const watch = new AbortController();
  const onAbort = (): void => {
    watch.abort(signal?.reason);
    wakeup.wake();
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  let endState: EndState | undefined;
  let hasEnded = false;
  options.ended.then(
    (state) => {
      endState = state;
      hasEnded = true;
      wakeup.wake();
    },
    () => {
      hasEnded = true;
      wakeup.wake();
    },
  );

  let events: ContainerEventStream | undefined;
  try {
    // Subscribe before the first inspect, so that a change right after it still wakes the wait.
    events = await engine.openContainerEvents(containerId, WAKING_EVENTS, { signal: watch.signal }).catch((error: unknown) => {
      if (signal?.aborted) throw cancelledError(what, error);
      logger.debug({ taskId, code: codeOf(error) }, 'no event stream for the health wait; polling only');
      return undefined;
    });
    if (events) void wakeOnEvents(events, wakeup);

    let deadlineAt: number | undefined;
    let verdictWithinMs = 0;
    let pollMs = options.pollMs ?? 1000;
    let inspectFailuresLogged = false;
    for (;;) {
      if (signal?.aborted) throw cancelledError(what, signal.reason);
      if (hasEnded) throw endedError(taskId, containerId, endState ? describeEndState(endState) : 'its wait failed', endState);
      let state: ContainerInspect | undefined;
      try {
        state = await engine.inspectContainer(containerId, { signal: watch.signal });
      } catch (error) {
        if (signal?.aborted) throw cancelledError(what, error);
        if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) throw endedError(taskId, containerId, 'its container is gone');
        // Before the first answer there are no settings to wait by: the error is the answer.
        if (deadlineAt === undefined || !isBerthError(error) || !error.retryable) throw error;
        if (!inspectFailuresLogged) logger.warn({ taskId, code: codeOf(error) }, 'could not inspect the task while waiting for health; still waiting');
        inspectFailuresLogged = true;
      }
      if (state) {
        if (!hasActiveHealthcheck(state.healthcheck)) {
          throw new BerthError('BERTH_TASK_STATE', `task ${taskId} has no health check: neither its spec nor its image defines one, or it is disabled`, {
            context: { taskId, containerId },
          });
        }
        if (deadlineAt === undefined) {
          verdictWithinMs = options.deadlineMs ?? healthVerdictDeadlineMs(state.healthcheck);
          deadlineAt = now() + verdictWithinMs;
        }
        pollMs = options.pollMs ?? healthPollMs(state.healthcheck);
        const status = state.health?.status ?? 'starting';
        if (!state.running && state.status !== 'created' && state.status !== 'restarting') {
          throw endedError(taskId, containerId, `its container is ${state.status} (exit code ${state.exitCode})`);
        }
        if (status === 'healthy') {
          logger.debug({ taskId }, 'task is healthy');
          return;
        }
        if (status === 'unhealthy') throw unhealthyError(taskId, containerId, state);
      }
      const remainingMs = deadlineAt! - now();
      if (remainingMs <= 0) {
        throw new BerthError('BERTH_TASK_UNHEALTHY', `task ${taskId} gave no health verdict within ${verdictWithinMs} ms: its health check neither passed nor failed for good`, {
          context: { taskId, containerId, reason: 'no-verdict', deadlineMs: verdictWithinMs },
        });
      }
      await wakeup.wait(Math.min(pollMs, remainingMs));
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    watch.abort();
    events?.close();
  }
}

/** Wakes the wait on every event; a stream that ends or breaks leaves the poll to do the work. */
async function wakeOnEvents(events: ContainerEventStream, wakeup: Wakeup): Promise<void> {
  try {
    for await (const _event of events) wakeup.wake();
  } catch {
    // The poll covers what the stream no longer shows.
  }
}
