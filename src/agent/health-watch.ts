import { setTimeout as delay } from 'node:timers/promises';
import { asBerthError, isBerthError, type BerthError, type ErrorCode } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ContainerEventStream, Engine } from '../engine/engine.js';
import type { ContainerInspect } from '../engine/types.js';
import type { TaskHealth, TaskRecord } from '../state/tasks.js';
import type { TaskHandle } from '../tasks/handle.js';
import { effectiveHealthSettings, hasActiveHealthcheck, Wakeup } from '../tasks/health.js';
import type { AgentEvents } from './events.js';
import { healthOf, isSameHealth, lastProbeSummary } from './health-snapshot.js';

/** What following a task's health needs from the engine. */
export type HealthWatchEngine = Pick<Engine, 'inspectContainer' | 'openContainerEvents'>;

/** Bounds of the poll that keeps the probe log fresh between status changes (the engine sends an event only on a change). */
const POLL_MS = { min: 1000, max: 30_000 };

/** Pause before asking again when the engine could not answer a health wait. */
const GATE_RETRY_MS = 2000;

export interface HealthWatchDeps {
  engine: HealthWatchEngine;
  tasks: {
    get(taskId: string): TaskRecord | undefined;
    setHealth(taskId: string, health: TaskHealth): TaskRecord | undefined;
  };
  events: Pick<AgentEvents, 'emit'>;
  logger: Logger;
  onError?: (code: ErrorCode) => void;
  /** Aborted at shutdown: every watch stops, and the next agent follows on. */
  signal: AbortSignal;
}

/** What a task waiting for health (`waitHealthy`) does with the verdict: see `gate`. */
export interface HealthGate {
  /** Whether the task still waits (it is `starting`): a stop or its end makes the verdict moot. */
  isWaiting(): boolean;
  /** The engine says healthy: the task is running now. */
  healthy(): void;
  /** Unhealthy, no health check, or no verdict in time: the task fails with this error. */
  unhealthy(error: BerthError): Promise<void>;
}

/**
 * Follows the health of the agent's tasks whose containers have a health check, records it in the
 * store (the task view's `health`), and announces each change of status as a `task.health` event.
 * The engine's `health_status` events wake the watch at once; a poll at the check's interval (1 to
 * 30 s) keeps the probe log fresh, since the engine sends an event only when the status changes.
 * Inspect data is the one truth, as in the library's awaitHealthy.
 */
export class HealthWatch {
  readonly #deps: HealthWatchDeps;
  /** The health last recorded per followed task, so that an unchanged one is not written again. */
  readonly #last = new Map<string, TaskHealth | undefined>();

  constructor(deps: HealthWatchDeps) {
    this.#deps = deps;
  }

  /**
   * Follows a task's health until `ended` settles or the agent shuts down; the last health seen
   * while the container ran stays recorded. A container without a health check is left alone.
   * Never rejects.
   */
  async follow(taskId: string, containerId: string, ended: Promise<unknown>): Promise<void> {
    const { signal } = this.#deps;
    if (signal.aborted) return;
    const watch = new AbortController();
    const wakeup = new Wakeup();
    let hasEnded = false;
    const onAbort = (): void => {
      watch.abort();
      wakeup.wake();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const onEnded = (): void => {
      hasEnded = true;
      wakeup.wake();
    };
    ended.then(onEnded, onEnded);
    let events: ContainerEventStream | undefined;
    try {
      // The engine may not answer yet (an outage at recovery): ask again until it does or the task ends.
      let first = await this.#inspect(taskId, containerId, watch.signal);
      while (first === undefined) {
        await wakeup.wait(POLL_MS.min);
        if (watch.signal.aborted || hasEnded) return;
        first = await this.#inspect(taskId, containerId, watch.signal);
      }
      if (first === 'gone' || !hasActiveHealthcheck(first.healthcheck)) return;
      this.#record(taskId, first);
      const pollMs = Math.min(POLL_MS.max, Math.max(POLL_MS.min, effectiveHealthSettings(first.healthcheck).intervalMs));
      events = await this.#deps.engine.openContainerEvents(containerId, ['health_status'], { signal: watch.signal }).catch(() => undefined);
      if (events) void wakeOn(events, wakeup);
      while (!hasEnded) {
        await wakeup.wait(pollMs);
        if (watch.signal.aborted || hasEnded) return;
        const state = await this.#inspect(taskId, containerId, watch.signal);
        if (state === 'gone') return;
        if (state) this.#record(taskId, state);
      }
    } catch (error) {
      // The last guard: a health watch never ends the agent.
      const code = asBerthError(error).code;
      this.#deps.logger.error({ taskId, code }, 'the task health watch failed');
      this.#deps.onError?.(code);
    } finally {
      signal.removeEventListener('abort', onAbort);
      watch.abort();
      events?.close();
      this.#last.delete(taskId);
    }
  }

  /** Reads a task's health once and records it (before a verdict's consequences, so the view shows why). Never rejects. */
  async refresh(taskId: string, containerId: string): Promise<void> {
    try {
      const state = await this.#inspect(taskId, containerId, this.#deps.signal);
      if (state && state !== 'gone' && hasActiveHealthcheck(state.healthcheck)) this.#record(taskId, state);
    } catch (error) {
      this.#deps.logger.warn({ taskId, code: asBerthError(error).code }, 'could not record the task health');
    }
  }

  /**
   * Waits for a `waitHealthy` task's verdict (the handle's `healthy`, as the library's start with
   * `waitHealthy` does) and hands it to `gate`: healthy, or unhealthy with BERTH_TASK_UNHEALTHY
   * (unhealthy, or no verdict in time) or BERTH_TASK_STATE (no health check). A task that ended on
   * its own first is left to its supervision, which records its real end; one that was stopped, or
   * an agent shutting down (the next agent waits on), changes nothing. Engine trouble is waited out.
   * Never rejects.
   */
  async gate(handle: Pick<TaskHandle, 'taskId' | 'containerId' | 'healthy'>, gate: HealthGate): Promise<void> {
    const { signal, logger } = this.#deps;
    for (;;) {
      if (signal.aborted || !gate.isWaiting()) return;
      let verdict: BerthError | undefined;
      try {
        await handle.healthy(signal);
      } catch (error) {
        verdict = asBerthError(error);
      }
      if (signal.aborted || !gate.isWaiting()) return;
      if (verdict === undefined) {
        // The healthy status is recorded before the move to running, so that whoever sees the task
        // running sees it healthy too (the follower may not have read the engine's verdict yet).
        await this.refresh(handle.taskId, handle.containerId);
        if (signal.aborted || !gate.isWaiting()) return;
        this.#contained(handle.taskId, 'could not record the task running once healthy', () => gate.healthy());
        return;
      }
      if (verdict.code === 'BERTH_TASK_UNHEALTHY' && verdict.context.reason === 'ended') return;
      if (verdict.retryable && verdict.code !== 'BERTH_TASK_UNHEALTHY') {
        logger.warn({ taskId: handle.taskId, code: verdict.code }, 'could not ask the engine about the task health; asking again');
        this.#deps.onError?.(verdict.code);
        await delay(GATE_RETRY_MS, undefined, { signal }).catch(() => undefined);
        continue;
      }
      try {
        await gate.unhealthy(verdict);
      } catch (failure) {
        this.#contained(handle.taskId, 'could not end the task that never became healthy', () => {
          throw failure;
        });
      }
      return;
    }
  }

  /** Runs `work`; a failure is logged once and counted, never thrown. */
  #contained(taskId: string, message: string, work: () => void): void {
    try {
      work();
    } catch (error) {
      const code = asBerthError(error).code;
      this.#deps.logger.error({ taskId, code, error: asBerthError(error).message }, message);
      this.#deps.onError?.(code);
    }
  }

  /** Inspects the container: undefined when the engine could not answer this time, `gone` when the container is. */
  async #inspect(taskId: string, containerId: string, signal: AbortSignal): Promise<ContainerInspect | 'gone' | undefined> {
    if (signal.aborted) return undefined;
    try {
      return await this.#deps.engine.inspectContainer(containerId, { signal });
    } catch (error) {
      if (signal.aborted) return undefined;
      if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return 'gone';
      this.#deps.logger.debug({ taskId, code: asBerthError(error).code }, 'could not read the task health; trying again at the next check');
      return undefined;
    }
  }

  /**
   * Records the health when it changed; announces a change of status. A store that cannot take it
   * (a full disk) is tried at the next read. A container that stopped is not read: the engine calls
   * every stopped container unhealthy, which says nothing of how the task was while it ran.
   */
  #record(taskId: string, state: ContainerInspect): void {
    if (!state.running) return;
    const health = healthOf(state);
    if (!health) return;
    const previous = this.#last.has(taskId) ? this.#last.get(taskId) : this.#deps.tasks.get(taskId)?.health;
    if (isSameHealth(previous, health)) {
      this.#last.set(taskId, health);
      return;
    }
    try {
      if (!this.#deps.tasks.setHealth(taskId, health)) return;
    } catch (error) {
      this.#deps.logger.warn({ taskId, code: asBerthError(error).code }, 'could not record the task health; trying again at the next check');
      return;
    }
    this.#last.set(taskId, health);
    if (previous?.status !== health.status) {
      const last = lastProbeSummary(health);
      this.#deps.logger.info({ taskId, status: health.status, failingStreak: health.failingStreak }, 'task health changed');
      this.#deps.events.emit({ type: 'task.health', taskId, status: health.status, failingStreak: health.failingStreak, ...(last ?? {}) });
    }
  }
}

/** Wakes the watch on every event; a stream that ends or breaks leaves the poll to do the work. */
async function wakeOn(events: ContainerEventStream, wakeup: Wakeup): Promise<void> {
  try {
    for await (const _event of events) wakeup.wake();
  } catch {
    // The poll covers what the stream no longer shows.
  }
}
