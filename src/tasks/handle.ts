import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { BerthError, isBerthError, ValidationError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { retry } from '../common/retry.js';
import { setLongTimeout, type LongTimer } from '../common/timers.js';
import type { AttachedStreams, ExecInspect, ExecOptions, ExecSession } from '../engine/engine.js';
import type { PublishedPort, StatsSample } from '../engine/types.js';
import { execGateOf, inspectExecOf } from './exec-gate.js';
import { SPEC_BOUNDS, type ResolvedTaskSpec } from '../spec/schema.js';
import { durationBoundRule } from '../common/units.js';
import { codeOf, isAmbiguousFailure, removeContainer, type ContainerEngine, type RetryPolicy } from './container-ops.js';
import { classifyExit, type EndState } from './end-state.js';
import { AttachedOutput } from './attached-output.js';
import { EndWatch, type EndHint } from './end-watch.js';
import { awaitHealthy } from './health.js';
import { Lifecycle, type PhaseChange, type TaskPhase } from './lifecycle.js';
import { collectArtifacts, copyOut, type ArtifactSink, type ArtifactsRecord } from './files-out.js';
import type { OomEvidence } from './oom-watch.js';
import { ExecEndWatch, knownEnd, type EndSource, type ExecEndWatchEngine } from './exec-end-watch.js';
import type { EndFacts } from './end-watch.js';
import type { StartPath } from '../pools/types.js';

/** How long a signal to a warm task's exec waits for the engine to show the exec's pid (it has none just after its start). */
const EXEC_PID_WAIT_MS = 1280;

/** Pauses before each new read of an exited task's OOM flag (see #oomFlagSettled). */
const OOM_FLAG_REREADS_MS = [100, 200, 400, 800, 1500] as const;

/** A task's pauses, as a recovering owner knows them: their length so far, and the current one's start. */
export interface TaskPause {
  pausedForMs: number;
  pausedSinceMs?: number | undefined;
}

/**
 * A warm task (src/pools): it runs as an exec in a pool container. Its output is the exec's
 * streams; its end is the exec's (or its container's, see ExecEndWatch); destroying it hands the
 * container back to its pool, which removes it (or, with hot reuse, keeps it for the next task).
 */
export interface WarmTaskInit {
  pool: string;
  execId: string;
  /** The engine's exec calls, for the exec's end and its signals. */
  engine: ExecEndWatchEngine;
  /** The exec's session, when this process started it; absent when `knownEnd` says how it ended (a recovered task). */
  session?: Pick<ExecSession, 'closed' | 'exitStatus'>;
  knownEnd?: EndFacts;
  /**
   * Asked by destroy: `returned` when the pool took the container back (hot reuse of a task that
   * ended on its own): then it is not removed; `remove` otherwise.
   */
  release(end: EndState | undefined): Promise<'returned' | 'remove'>;
  /** Told once the container is removed. */
  removed(): void;
}

type StopIntent = { kind: 'timeout'; afterMs: number } | { kind: 'cancel' };

export interface HandleDeps {
  engine: ContainerEngine;
  retryPolicy: RetryPolicy;
  logger: Logger;
  onPhase: (change: PhaseChange) => void;
  /** Called once when the handle is destroyed: releases the image, for one. */
  onDestroyed: (taskId: string) => void;
  /** End the task as `lost` once the engine has been unreachable this long while waiting for its end. Default: never. */
  lostAfterUnreachableMs?: number;
  /** The kernel's OOM evidence (the container's memory cgroup, the kernel's log); without it, the engine's flag and events alone decide. */
  oomEvidence?: OomEvidence;
}

/**
 * A running (or finished) task. Read `stdout` and `stderr` (or the task blocks when its pipes fill,
 * as a child process does), `wait()` for its end state, `stop()` or `destroy()` it. Disposable:
 * `await using task = await driver.start(spec)` removes the container on scope exit.
 */
export class TaskHandle implements AsyncDisposable {
  readonly taskId: string;
  readonly containerId: string;
  readonly spec: ResolvedTaskSpec;
  /**
   * Where the task's output goes. `attached`: `stdout` and `stderr` carry it (a task started with
   * `output: 'attach'`, the default). `engine-log`: nothing carries it here (a task started with
   * `output: 'engine-log'`, and every recovered task): it is only in the engine's log, read with
   * `engine.logEntries` (the agent's one output path), and `stdout`/`stderr` are streams that end
   * at once, so code that drains them never waits.
   */
  readonly output: 'attached' | 'engine-log';
  /** The task's stdout (on a TTY: all of its output); ends at once when `output` is `engine-log`. */
  readonly stdout: Readable;
  /** The task's stderr (empty on a TTY); ends at once when `output` is `engine-log`. */
  readonly stderr: Readable;

  readonly #deps: HandleDeps;
  readonly #lifecycle: Lifecycle;
  readonly #streams: AttachedStreams;
  readonly #output: AttachedOutput | undefined;
  #ended: Promise<EndState> | undefined;
  #endWatch: EndSource | undefined;
  #stopIntent: StopIntent | undefined;
  #timeoutTimer: LongTimer | undefined;
  /** The stop under way, whose answer may show the task had ended on its own before it was asked. */
  #stopping: Promise<void> | undefined;
  /** Whether the owner killed the task while berth was stopping it: then a stop that finds it ended did not find its own end. */
  #killedWhileStopping = false;
  #destroying: Promise<void> | undefined;
  #startedAt: Date | undefined;
  #finishedAt: Date | undefined;
  /** The engine's finish time of a container found already stopped (recovered after a restart). */
  #knownFinishedAt: Date | undefined;
  /** When the current pause began (epoch ms); undefined while not paused. */
  #pausedSinceMs: number | undefined;
  /** Whether the engine announced an OOM kill in the container (noteOomEvent). */
  #oomEventSeen = false;
  /** How long the ended pauses lasted: the run time limit does not count them. */
  #pausedForMs = 0;
  readonly #warm: WarmTaskInit | undefined;
  /** The task's end state once known (destroy tells a warm task's pool). */
  #endState: EndState | undefined;
  /** How the task was started: warm (an exec in a pool container) or cold (and why). */
  readonly startPath: StartPath;

  /**
   * `attached`: the streams carry the task's output from an attach; a connection cut before the
   * output ended is then made whole from the engine's log.
   */
  constructor(
    init: { taskId: string; containerId: string; spec: ResolvedTaskSpec; streams: AttachedStreams; attached?: boolean; warm?: WarmTaskInit; startPath?: StartPath },
    deps: HandleDeps,
  ) {
    this.taskId = init.taskId;
    this.containerId = init.containerId;
    this.spec = init.spec;
    this.#streams = init.streams;
    this.#warm = init.warm;
    this.startPath = init.warm ? { kind: 'warm', pool: init.warm.pool, execId: init.warm.execId, containerId: init.containerId } : (init.startPath ?? { kind: 'cold', reason: 'no-pool' });
    // A warm task's output is its exec's streams alone: the engine's log of the container holds none of it.
    if (init.attached && !init.warm) {
      this.#output = new AttachedOutput(init.streams, {
        taskId: init.taskId,
        containerId: init.containerId,
        engine: deps.engine,
        logReadable: init.spec.log.driver !== 'none',
        tty: init.spec.tty,
        logger: deps.logger,
      });
    }
    this.output = this.#output || init.warm ? 'attached' : 'engine-log';
    this.stdout = this.#output?.stdout ?? init.streams.stdout;
    this.stderr = this.#output?.stderr ?? init.streams.stderr;
    this.#deps = deps;
    // Born starting: the handle exists once its container does (see lifecycle.ts).
    this.#lifecycle = new Lifecycle(init.taskId, deps.logger, deps.onPhase);
  }

  get phase(): TaskPhase {
    return this.#lifecycle.phase;
  }

  get startedAt(): Date | undefined {
    return this.#startedAt;
  }

  get finishedAt(): Date | undefined {
    return this.#finishedAt;
  }

  /**
   * @internal Called by the driver when it recovers a task that an earlier owner had asked to stop:
   * that stop may have reached the engine (and ended the task) before this handle existed, so the
   * task ends `cancelled` whatever its own end looks like, as after an ambiguous stop.
   */
  markStopRequested(): void {
    this.#stopIntent ??= { kind: 'cancel' };
  }

  /**
   * @internal Called by the driver once the container is started, or found running or ended after a
   * restart (then `startedAt` is the engine's, and the run time limit counts from it).
   */
  markStarted(startedAt = new Date(), finishedAt?: Date, pause: TaskPause = { pausedForMs: 0 }): void {
    this.#startedAt = startedAt;
    this.#knownFinishedAt = finishedAt;
    this.#pausedForMs = pause.pausedForMs;
    this.#pausedSinceMs = pause.pausedSinceMs;
    this.#lifecycle.moveTo('running');
    this.#feedStdin();
    this.#armTimeout();
    const watchOptions = {
      taskId: this.taskId,
      retryInitialDelayMs: this.#deps.retryPolicy.initialDelayMs,
      retryMaxDelayMs: this.#deps.retryPolicy.maxDelayMs,
      lostAfterUnreachableMs: this.#deps.lostAfterUnreachableMs,
      logger: this.#deps.logger,
      onAttachCut: () => this.#output?.attachCut(),
    };
    const warm = this.#warm;
    this.#endWatch =
      warm === undefined
        ? new EndWatch(this.containerId, this.#deps.engine, watchOptions)
        : warm.knownEnd !== undefined || warm.session === undefined
          ? knownEnd(warm.knownEnd ?? { kind: 'lost', reason: 'the exec of the warm task cannot be followed' })
          : new ExecEndWatch(this.containerId, warm.execId, warm.engine, warm.session, watchOptions);
    this.#ended = this.#watch(this.#endWatch);
    // The promise is also handed out by wait(); this keeps an unobserved end from being "unhandled".
    this.#ended.catch(() => undefined);
  }

  /**
   * @internal The engine announced an `oom` event for the task's container. Its state's OOMKilled
   * flag can miss an OOM kill whose event reached the engine just before the exit (the exit's own
   * flag then overwrites it), so the event counts as well when the end is classified.
   */
  noteOomEvent(): void {
    this.#oomEventSeen = true;
  }

  /**
   * @internal Evidence that the task may have ended, gathered by the driver (relist, events, attach
   * end): the engine's inspect decides at once, without waiting for the wait.
   */
  hintEnd(hint: EndHint): void {
    this.#endWatch?.hint(hint);
  }

  /**
   * Resolves with the task's one end state. Never rejects: engine trouble that leaves the end unknown
   * ends as `lost`. An engine that is down or slow is waited out (see TaskDriverOptions.lostAfterUnreachableMs).
   */
  wait(): Promise<EndState> {
    if (!this.#ended) return Promise.reject(new BerthError('BERTH_TASK_STATE', `task ${this.taskId} was never started`));
    return this.#ended;
  }

  /**
   * Resolves when the engine reports the task healthy (its spec's health check, or its image's own).
   * Rejects with BERTH_TASK_UNHEALTHY when the check reports unhealthy, when the task ends first, or
   * when no verdict comes within twice the longest the engine can take to give one (start period
   * plus retries + 1 rounds of interval and timeout) plus 10 s; with BERTH_TASK_STATE when the task
   * has no health check; with BERTH_CANCELLED when `signal` aborts (which stops the wait, not the task).
   * The engine's health events wake the wait; its inspect data decides.
   */
  healthy(signal?: AbortSignal): Promise<void> {
    if (!this.#ended) return Promise.reject(new BerthError('BERTH_TASK_STATE', `task ${this.taskId} was never started`));
    if (this.spec.healthcheck?.disabled) {
      return Promise.reject(new BerthError('BERTH_TASK_STATE', `task ${this.taskId} has no health check: its spec disables it`, { context: { taskId: this.taskId } }));
    }
    return awaitHealthy(this.#deps.engine, { taskId: this.taskId, containerId: this.containerId, ended: this.#ended, signal, logger: this.#deps.logger });
  }

  /**
   * Stops the task with its stop signal, then SIGKILL after the grace period. The task ends as
   * `cancelled`. Never hangs: each stop call has a deadline (the grace period plus the engine's
   * `stopExtraMs`) and is retried a bounded number of times. A stop that still fails (or never
   * answers) does not leave the task running: berth then sends SIGKILL itself, through `kill()` with
   * its own retries. Only if that fails too is the failure logged, and `wait()` decides the end.
   * `signal` cuts the stop short (a caller's own cleanup bound); then no kill is sent. `graceMs`
   * (default: the spec's `stopGracePeriod`) has the spec's bounds, 0 to 24 h.
   */
  async stop(options: { graceMs?: number; signal?: AbortSignal } = {}): Promise<void> {
    if (options.graceMs !== undefined) {
      // The spec's own bounds: the grace goes to the engine in seconds and into the stop call's deadline timer.
      const rule = Number.isFinite(options.graceMs) ? durationBoundRule(options.graceMs, SPEC_BOUNDS.stopGracePeriod) : 'must be a number of milliseconds';
      if (rule !== undefined) throw new ValidationError([{ field: 'graceMs', rule }]);
    }
    await this.#stopFor({ kind: 'cancel' }, options.graceMs, options.signal);
  }

  /**
   * Sends `signal` (default SIGKILL) to the task's main process, as `docker kill` (or Nomad's
   * Signal) does: no grace period, no stop signal. Resolves once the engine has delivered it; a task
   * that ended meanwhile counts as done. Retried, with the driver's retry policy, after failures that
   * leave it unknown whether the engine delivered the signal (a 5xx, a dropped connection, a call
   * past its deadline): a second SIGKILL is harmless, and other signals may then arrive twice.
   * Rejects with BERTH_TASK_STATE when the task is not running or stopping, with the engine's
   * classified error once the retries are spent, and with BERTH_CANCELLED when `options.signal` aborts.
   *
   * A kill is not a cancellation: the task ends as the engine reports it (SIGKILL: `failed` with
   * exit code 137), unless berth was also stopping it (`stop()`, the run time limit, the start's signal).
   */
  async kill(signal = 'SIGKILL', options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#requirePhase('kill', 'running', 'stopping');
    if (this.#lifecycle.is('stopping')) this.#killedWhileStopping = true;
    // A warm task's main process is its exec's, not the container's PID 1 (the holder, which
    // ignores every signal but SIGKILL): a signal other than SIGKILL goes to the exec's process,
    // SIGKILL to the container (ending the task, as a cold task's SIGKILL does).
    if (this.#warm && !isSigkill(signal)) {
      await this.#signalExecProcess(signal, options.signal);
      return;
    }
    await this.#kill(signal, options.signal);
  }

  /**
   * The graceful part of a warm task's stop: the stop signal to the exec's process (by its host
   * pid), then up to `graceMs` for the task to end. The container is killed afterwards either way
   * (its StopSignal is SIGKILL), so nothing the task started outlives the stop. Where the signal
   * cannot be sent (berth is not on the engine's host, or may not signal its processes), the
   * container is killed at once.
   */
  async #stopExecGracefully(graceMs: number, abort: AbortSignal | undefined): Promise<'ended-before' | 'signalled' | 'not-signalled'> {
    let outcome: 'ended' | 'signalled';
    try {
      // No grace: killed at once, as the engine's stop with no grace does (signal 0 only asks whether the exec still runs).
      outcome = await this.#signalExecProcess(graceMs > 0 ? this.spec.stopSignal : '0', abort);
    } catch (error) {
      this.#deps.logger.debug({ taskId: this.taskId, code: codeOf(error) }, 'could not send the stop signal to the warm task\'s exec; killing its container');
      return 'not-signalled';
    }
    if (outcome === 'ended') return 'ended-before';
    // The exec's end as its watch sees it (not the handle's end, which waits for this stop).
    const execEnded = this.#endWatch?.ended;
    if (graceMs <= 0 || execEnded === undefined) return 'signalled';
    const bound = new AbortController();
    const onAbort = (): void => bound.abort();
    abort?.addEventListener('abort', onAbort, { once: true });
    await Promise.race([execEnded, sleep(graceMs, undefined, { ref: false, signal: bound.signal }).catch(() => undefined)]);
    bound.abort();
    abort?.removeEventListener('abort', onAbort);
    return 'signalled';
  }

  /**
   * Sends a signal to a warm task's exec process, by its host pid (the engine has no call for it;
   * see endExecProcess in exec.ts): berth must run on the engine's host with the right to signal
   * its processes. `ended` when the exec had ended already.
   */
  async #signalExecProcess(signal: string, abort: AbortSignal | undefined): Promise<'ended' | 'signalled'> {
    const warm = this.#warm;
    if (!warm) throw new BerthError('BERTH_TASK_STATE', `task ${this.taskId} is not warm`, { context: { taskId: this.taskId } });
    const inspect = (): Promise<ExecInspect> => retry(() => warm.engine.inspectExec(warm.execId, { signal: abort }), { ...this.#deps.retryPolicy, signal: abort, shouldRetry: isAmbiguousFailure });
    let info = await inspect();
    // Just after its start the engine may show the exec running with no pid yet: asked again, briefly.
    for (let waitMs = 10; info.running && info.pid <= 0 && waitMs <= EXEC_PID_WAIT_MS; waitMs *= 2) {
      await sleep(waitMs, undefined, { ref: false });
      info = await inspect();
    }
    if (!info.running) return 'ended';
    if (info.pid <= 0) throw new BerthError('BERTH_TASK_STATE', `the exec of warm task ${this.taskId} shows no process yet`, { context: { taskId: this.taskId, execId: warm.execId } });
    try {
      process.kill(info.pid, hostSignal(signal));
      return 'signalled';
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ESRCH') return 'ended';
      throw new BerthError(code === 'EINVAL' || code === 'ERR_UNKNOWN_SIGNAL' ? 'BERTH_VALIDATION' : 'BERTH_TASK_STATE', `cannot send ${signal} to the exec of warm task ${this.taskId}: ${(error as Error).message}`, {
        cause: error,
        context: { taskId: this.taskId, execId: warm.execId },
      });
    }
  }



  /**
   * Removes the container and its anonymous volumes. Idempotent; stops a running task first
   * (SIGKILL). Never hangs: each remove has the engine's write deadline and is retried a bounded
   * number of times, then rejects with the engine's classified error (BERTH_ENGINE_TIMEOUT or
   * BERTH_ENGINE_UNAVAILABLE when the engine is wedged or gone); `signal` rejects it sooner with
   * BERTH_CANCELLED. A destroy that failed may be called again.
   */
  destroy(options: { signal?: AbortSignal } = {}): Promise<void> {
    const destroying = (this.#destroying ??= this.#destroy(options.signal));
    // A failed destroy is not remembered: the next call tries again.
    destroying.catch(() => {
      if (this.#destroying === destroying) this.#destroying = undefined;
    });
    return destroying;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.destroy();
  }

  /** Runs a command inside the running task; with `tty` it supports resize and raw input. */
  exec(options: ExecOptions, signal?: AbortSignal): Promise<ExecSession> {
    this.#requirePhase('exec', 'running');
    const { engine } = this.#deps;
    // Set up under the container's gate: a pause waits for it (see exec-gate.ts).
    return execGateOf(engine).setup(this.containerId, () => engine.exec(this.containerId, options, { signal, retry: this.#deps.retryPolicy }), inspectExecOf(engine));
  }

  /**
   * A tar stream of `path` in the task's container, as `docker cp` reads it: while it runs or after
   * it ended, until `destroy()` removes the container. A missing path rejects with
   * BERTH_ENGINE_NOT_FOUND (context `missing: 'path'`).
   */
  copyOut(path: string, signal?: AbortSignal): Promise<Readable> {
    if (this.#destroying !== undefined) return Promise.reject(new BerthError('BERTH_TASK_STATE', `task ${this.taskId} is removed: its files are gone`, { context: { taskId: this.taskId } }));
    return copyOut(this.#deps.engine, this.containerId, path, signal);
  }

  /**
   * Collects `paths` (default: the spec's `collect`) from the container into one sink per path,
   * within `maxBytes` in all (src/tasks/files-out.ts). Call it after `wait()` and before `destroy()`,
   * whatever the end state.
   */
  collectArtifacts(options: { maxBytes: number; open: (path: string, index: number) => ArtifactSink; paths?: readonly string[]; signal?: AbortSignal }): Promise<ArtifactsRecord> {
    return collectArtifacts(this.#deps.engine, this.containerId, options.paths ?? this.spec.collect, options);
  }

  /** Resource samples while the task runs; a slow consumer gets the newest, not a backlog. */
  stats(signal?: AbortSignal): AsyncGenerator<StatsSample> {
    return this.#deps.engine.streamStats(this.containerId, { signal });
  }

  /**
   * The host ports the engine published for the task's `ports`, as it bound them (a dynamic port,
   * one without `host`, shows the host port the engine picked), read from the engine's inspect, as
   * testcontainers' `getMappedPort` does. Empty for a task that publishes nothing, and once its
   * container has stopped (the engine unbinds the ports of a stopped container). Sorted by container
   * port, then protocol.
   */
  async ports(signal?: AbortSignal): Promise<PublishedPort[]> {
    return (await this.#deps.engine.inspectContainer(this.containerId, { signal })).publishedPorts;
  }

  /**
   * The host port the engine published for container port `container` (`protocol` default tcp);
   * BERTH_TASK_STATE when the task publishes no such port or its container no longer runs.
   */
  async mappedPort(container: number, protocol: 'tcp' | 'udp' = 'tcp', signal?: AbortSignal): Promise<PublishedPort> {
    const found = (await this.ports(signal)).find((p) => p.container === container && p.protocol === protocol);
    if (!found) throw new BerthError('BERTH_TASK_STATE', `task ${this.taskId} has no published port for ${container}/${protocol} (it publishes none such, or its container no longer runs)`, { context: { taskId: this.taskId, container, protocol } });
    return found;
  }

  /**
   * Copies a tar archive into the running task's filesystem, extracted at `path` (an existing
   * directory), as `docker cp - TASK:PATH` does: streamed to the engine, never buffered.
   */
  async copyIn(tar: Readable, path: string, signal?: AbortSignal): Promise<void> {
    this.#requirePhase('copy into', 'running');
    await this.#deps.engine.putArchive(this.containerId, path, tar, { signal });
  }

  /**
   * Freezes every process of the task (cgroup freezer). Its run time limit stands still until
   * `unpause`: a paused task is not using its time. A second pause is the engine's to refuse.
   */
  async pause(): Promise<void> {
    this.#requirePhase('pause', 'running');
    // Never while an exec is being set up in the container: that freeze would wedge the engine (see exec-gate.ts).
    await execGateOf(this.#deps.engine).freeze(this.containerId, () =>
      this.#deps.engine.pauseContainer(this.containerId).catch((error: unknown) => this.#unlessReached(error, { paused: true })),
    );
    this.#pausedSinceMs ??= Date.now();
    this.#timeoutTimer?.clear();
    this.#timeoutTimer = undefined;
  }

  /** Thaws the task; its run time limit goes on from where the pause stopped it. */
  async unpause(): Promise<void> {
    this.#requirePhase('unpause', 'running');
    await this.#deps.engine.unpauseContainer(this.containerId).catch((error: unknown) => this.#unlessReached(error, { paused: false }));
    if (this.#pausedSinceMs !== undefined) {
      this.#pausedForMs += Math.max(0, Date.now() - this.#pausedSinceMs);
      this.#pausedSinceMs = undefined;
    }
    this.#armTimeout();
  }

  /**
   * A pause or unpause failed: when its answer was lost (a timeout, a dropped connection, a 500 after
   * the engine acted) or refused as done already (409 on a retry), the container may be as asked all
   * the same. An inspect tells: then it worked, and the handle's clock must know it; else the error stands.
   */
  async #unlessReached(error: unknown, wanted: { paused: boolean }): Promise<void> {
    const code = isBerthError(error) ? error.code : undefined;
    if (code === undefined || code === 'BERTH_ENGINE_NOT_FOUND' || code === 'BERTH_CANCELLED') throw error;
    const state = await this.#deps.engine.inspectContainer(this.containerId).catch(() => undefined);
    if (state === undefined || !state.running || state.paused !== wanted.paused) throw error;
    this.#deps.logger.debug({ taskId: this.taskId, code }, wanted.paused ? 'the pause worked though its answer failed' : 'the unpause worked though its answer failed');
  }

  /** Whether the task is paused (as far as this handle paused it, or found it paused at recovery). */
  get paused(): boolean {
    return this.#pausedSinceMs !== undefined;
  }

  /** How long the task has been paused in all, the current pause included. */
  get pausedForMs(): number {
    return this.#pausedForMs + (this.#pausedSinceMs === undefined ? 0 : Math.max(0, Date.now() - this.#pausedSinceMs));
  }

  /** (Re)arms the run time limit with what is left of it: time paused does not count. */
  #armTimeout(): void {
    this.#timeoutTimer?.clear();
    this.#timeoutTimer = undefined;
    if (this.spec.timeoutMs === undefined || this.#startedAt === undefined || this.#pausedSinceMs !== undefined || !this.#lifecycle.is('running')) return;
    const afterMs = this.spec.timeoutMs;
    const remainingMs = Math.max(0, afterMs - (Date.now() - this.#startedAt.getTime() - this.#pausedForMs));
    // A long timer: a limit past Node's 24.8-day timer range must not fire at once.
    this.#timeoutTimer = setLongTimeout(() => void this.#stopFor({ kind: 'timeout', afterMs }), remainingMs);
  }

  /**
   * Sets the window size of the task's TTY (a spec with `tty: true`), as a terminal resize would:
   * the task's processes get SIGWINCH. BERTH_TASK_STATE unless the task is running; the engine
   * refuses a task without a TTY.
   */
  async resize(size: { rows: number; columns: number }, signal?: AbortSignal): Promise<void> {
    this.#requirePhase('resize', 'running');
    await this.#deps.engine.resizeContainer(this.containerId, size, { signal });
  }

  #requirePhase(operation: string, ...phases: TaskPhase[]): void {
    if (!this.#lifecycle.is(...phases)) {
      throw new BerthError('BERTH_TASK_STATE', `cannot ${operation} task ${this.taskId}: it is ${this.#lifecycle.phase}`, {
        context: { taskId: this.taskId, phase: this.#lifecycle.phase },
      });
    }
  }

  #feedStdin(): void {
    const stdin = this.#streams.stdin;
    const input = this.spec.stdin;
    if (!stdin || input === undefined) return;
    // With openStdin the task's stdin outlives the content: it is written, not ended, so that the
    // attach stays whole (the engine ends an attach whose stdin ends when StdinOnce is off).
    const keepOpen = this.spec.openStdin;
    if (input instanceof Readable) {
      if (!keepOpen) input.once('error', () => stdin.end());
      input.pipe(stdin, { end: !keepOpen });
    } else if (keepOpen) {
      stdin.write(input);
    } else {
      stdin.end(input);
    }
  }

  async #stopFor(intent: StopIntent, graceMs = this.spec.stopGraceMs, signal?: AbortSignal): Promise<void> {
    if (!this.#lifecycle.is('running')) return;
    const setsIntent = this.#stopIntent === undefined;
    this.#stopIntent ??= intent;
    this.#lifecycle.moveTo('stopping');
    this.#timeoutTimer?.clear();
    this.#stopping = this.#stop(graceMs, signal, setsIntent);
    await this.#stopping;
  }

  async #stop(graceMs: number, signal: AbortSignal | undefined, setsIntent: boolean): Promise<void> {
    if (this.#warm) {
      const graceful = await this.#stopExecGracefully(graceMs, signal);
      if (graceful === 'ended-before') {
        // The exec had ended on its own before the stop: its own end wins, as for a cold task, and
        // its container is left as it is (hot reuse may take it back).
        if (setsIntent && !this.#killedWhileStopping) this.#stopIntent = undefined;
        return;
      }
      if (signal?.aborted) return;
    }
    try {
      const answer = await retry(
        async (attempt) => ({ outcome: await this.#deps.engine.stopContainer(this.containerId, Math.ceil(graceMs / 1000), { signal }), attempt }),
        { ...this.#deps.retryPolicy, signal, shouldRetry: (error) => isBerthError(error) && error.retryable },
      );
      // The engine had nothing to stop at the first ask: the task had ended on its own, and its own
      // end wins the race with the timeout or the stop. (After an ambiguous failure, "not running"
      // may be the earlier attempt's doing, so the intent stands.)
      // (After a kill of the owner's, "not running" is the kill's doing, so the intent stands too.)
      if (answer.outcome === 'not-running' && answer.attempt === 1 && setsIntent && !this.#killedWhileStopping) this.#stopIntent = undefined;
      // Either way a container the engine had nothing to stop has ended: the inspect decides now.
      if (answer.outcome === 'not-running') this.#endWatch?.hint('stop-found-stopped');
    } catch (error) {
      if (signal?.aborted) {
        // The caller's bound ran out: it leaves what is left to wait(), the reconciler and prune.
        this.#deps.logger.warn({ taskId: this.taskId, code: codeOf(error) }, 'the stop of the task was cut short');
        return;
      }
      // A stop that failed for good must not leave the task running: SIGKILL is what the stop would
      // have ended with anyway, and a kill that arrives twice is harmless.
      this.#deps.logger.warn({ taskId: this.taskId, code: codeOf(error) }, 'could not stop the task; killing it');
      try {
        await this.#kill('SIGKILL', undefined);
      } catch (killError) {
        // wait() still decides the end state; a task left running ends as lost at worst.
        this.#deps.logger.error({ taskId: this.taskId, code: codeOf(killError) }, 'could not stop or kill the task');
      }
    }
  }

  #kill(signal: string, abort: AbortSignal | undefined): Promise<void> {
    return retry(() => this.#deps.engine.killContainer(this.containerId, signal, { signal: abort }), {
      ...this.#deps.retryPolicy,
      signal: abort,
      shouldRetry: isAmbiguousFailure,
      onRetry: (error, attempt) => this.#deps.logger.warn({ taskId: this.taskId, attempt, code: codeOf(error) }, 'kill failed; retrying'),
    });
  }

  /** Waits for the container to stop and classifies how it ended; survives dropped connections and engine restarts. */
  async #watch(watch: EndSource): Promise<EndState> {
    const facts = await watch.ended;
    // Without an answered wait the engine was away, and the attach connection may have been cut with it.
    void this.#output?.settle(facts.kind === 'stopped' && facts.seenBy !== 'wait');
    // A task destroyed while running was cancelled by its owner, even if its watch saw the container vanish.
    if (facts.kind === 'lost') return this.#end(this.#stopIntent?.kind === 'cancel' ? { kind: 'cancelled' } : { kind: 'lost', reason: facts.reason, ...(facts.error ? { error: facts.error } : {}) });
    const { exitCode } = facts;
    // The cgroup may still be there if the engine has not removed it yet: one more reading of its OOM counter.
    this.#deps.oomEvidence?.readNow(this.containerId);
    // An OOM kill the kernel counted in the task's cgroup is one, whatever the engine's flag says.
    let oomKilled = (facts.oomKilled ?? false) || this.#oomEventSeen || (this.#deps.oomEvidence?.countedKill(this.containerId) ?? false);
    // Only a task that failed or had a memory limit can have been OOM-killed; skip the inspect otherwise.
    if (facts.oomKilled === undefined && (exitCode !== 0 || this.spec.resources.memoryBytes !== undefined)) {
      try {
        oomKilled = (await this.#deps.engine.inspectContainer(this.containerId)).oomKilled || oomKilled || this.#oomEventSeen;
      } catch (error) {
        if (!isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) this.#deps.logger.warn({ taskId: this.taskId, code: codeOf(error) }, 'could not read the OOM flag');
      }
    }
    // The engine's flag misses an OOM kill whose news reached it after the exit (see oom-watch.ts): a
    // SIGKILL (137) that berth did not send, under a memory limit, is asked of the kernel (the
    // cgroup's counter, the kernel's log), and where the kernel cannot tell, the engine's flag is
    // read again for a moment before the end is taken for a plain kill.
    if (!oomKilled && exitCode === 137 && this.spec.resources.memoryBytes !== undefined && this.#stopIntent === undefined) {
      oomKilled = await this.#oomVerdict();
    }
    // A stop under way may yet show that the task had ended before it was asked (see #stop); its
    // answer is waited for at most one read deadline, so a stop that hangs cannot hold the end.
    if (this.#stopping) {
      const bound = new AbortController();
      const deadline = sleep(this.#deps.engine.deadlines.readMs, undefined, { ref: false, signal: bound.signal }).catch(() => undefined);
      await Promise.race([this.#stopping, deadline]);
      bound.abort();
    }
    const intent = this.#stopIntent;
    return this.#end(
      classifyExit({
        exitCode,
        oomKilled,
        cancelled: intent?.kind === 'cancel',
        timedOutAfterMs: intent?.kind === 'timeout' ? intent.afterMs : undefined,
        memoryLimitBytes: this.spec.resources.memoryBytes,
      }),
      facts.finishedAt,
    );
  }

  /** Whether a task killed by a SIGKILL berth did not send was OOM-killed: the kernel's evidence, else the engine's flag settled. */
  async #oomVerdict(): Promise<boolean> {
    if (await this.#deps.oomEvidence?.showsOomKill(this.containerId)) {
      this.#deps.logger.debug({ taskId: this.taskId }, 'the kernel shows the killed task ran out of memory');
      return true;
    }
    return this.#oomFlagSettled();
  }

  /** The OOM flag read again a few times over about 3 s (a loaded engine is slow to record it); true as soon as the engine sets it or announces the OOM, or the kernel's counter shows it. */
  async #oomFlagSettled(): Promise<boolean> {
    for (const waitMs of OOM_FLAG_REREADS_MS) {
      await sleep(waitMs, undefined, { ref: false });
      if (this.#oomEventSeen || this.#deps.oomEvidence?.countedKill(this.containerId)) return true;
      try {
        if ((await this.#deps.engine.inspectContainer(this.containerId)).oomKilled) return true;
      } catch {
        return false;
      }
    }
    return false;
  }

  /** `finishedAt`: the engine's, when known; a wait answers at the end, so now is right for it. */
  #end(state: EndState, finishedAt?: Date): EndState {
    this.#endState = state;
    this.#timeoutTimer?.clear();
    this.#finishedAt = finishedAt ?? this.#knownFinishedAt ?? new Date();
    if (this.#lifecycle.is('running', 'stopping')) this.#lifecycle.moveTo(state.kind === 'lost' ? 'lost' : 'exited');
    return state;
  }

  async #destroy(signal: AbortSignal | undefined): Promise<void> {
    this.#timeoutTimer?.clear();
    if (this.#lifecycle.is('running')) this.#stopIntent ??= { kind: 'cancel' };
    try {
      const outcome = this.#warm ? await this.#warm.release(this.#endState) : 'remove';
      if (outcome === 'remove') {
        await removeContainer(this.#deps.engine, this.containerId, this.#deps.retryPolicy, signal);
        this.#warm?.removed();
        // The container is gone: its watch must not wait for a wait that may never answer.
        this.#endWatch?.hint('relist-gone');
      }
    } finally {
      this.#streams.close();
    }
    if (!this.#lifecycle.is('removed')) this.#lifecycle.moveTo('removed');
    this.#deps.onDestroyed(this.taskId);
  }
}

function isSigkill(signal: string): boolean {
  const name = signal.toUpperCase();
  return name === 'SIGKILL' || name === 'KILL' || name === '9';
}

/** A signal as docker takes it (`SIGTERM`, `TERM`, `15`) in the form process.kill takes. */
function hostSignal(signal: string): NodeJS.Signals | number {
  if (/^[0-9]+$/.test(signal)) return Number(signal);
  const name = signal.toUpperCase();
  return (name.startsWith('SIG') ? name : `SIG${name}`) as NodeJS.Signals;
}
