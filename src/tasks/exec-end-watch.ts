/**
 * The end of a warm task: the task runs as an exec in a pool container (src/pools), so it ends when
 * its exec ends (the exec's stream closes and the engine's exec inspect shows it not running, with
 * its exit code), or when its container stops (killed by a stop, a timeout, an OOM of the holder, or
 * the engine), whichever comes first. The container is watched as a cold task's is (EndWatch: the
 * wait, and the driver's relist, events and stop hints), so no single connection can hide the end.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { isBerthError } from '../common/errors.js';
import type { Engine, ExecExitStatus } from '../engine/engine.js';
import { EndWatch, type EndFacts, type EndHint, type EndWatchEngine, type EndWatchOptions } from './end-watch.js';

/** What a task's end comes from: a container's watch (cold), an exec's (warm), or a known end (recovered). */
export interface EndSource {
  /** Resolves once with what ended the task. Never rejects. */
  readonly ended: Promise<EndFacts>;
  /** Evidence gathered elsewhere (see EndHint). */
  hint(hint: EndHint): void;
}

/** An end known already (a warm task recovered after its exec ended, or one whose exec was lost). */
export function knownEnd(facts: EndFacts): EndSource {
  return { ended: Promise.resolve(facts), hint: () => undefined };
}

export type ExecEndWatchEngine = EndWatchEngine & Pick<Engine, 'inspectExec'>;

export interface ExecEndWatchOptions extends EndWatchOptions {
  /** How often a running exec whose stream was cut is inspected again. Default 1000 ms. */
  execPollMs?: number;
}

/** How long, after the container stopped, the exec's own exit code is waited for (the engine records it as the exec's stream closes). */
const EXEC_CODE_AFTER_CONTAINER_END_MS = 2000;

/**
 * Watches a warm task's exec and its container. The exit code is the exec's (the engine's exec
 * inspect once its stream has ended); when the container stopped first, the exec's process died
 * with it (the engine kills a container's every process), and its code is still the exec's as
 * the engine records it, or 137 (SIGKILL, which is how a container's remaining processes end) when
 * the engine recorded none. OOM is not decided here: the handle reads the container's memory
 * cgroup counter and the engine's `oom` events, as for a cold task.
 */
export class ExecEndWatch implements EndSource {
  readonly ended: Promise<EndFacts>;
  readonly #execId: string;
  readonly #engine: ExecEndWatchEngine;
  readonly #container: EndWatch;
  readonly #pollMs: number;
  #streamClosed: () => void = () => undefined;
  readonly #streamClosedOnce: Promise<void>;

  /**
   * `session`: the exec's own connection (its `closed` and `exitStatus`), when this process started it.
   */
  constructor(containerId: string, execId: string, engine: ExecEndWatchEngine, session: { closed?: Promise<void>; exitStatus(): Promise<ExecExitStatus> }, options: ExecEndWatchOptions) {
    this.#execId = execId;
    this.#engine = engine;
    this.#pollMs = options.execPollMs ?? 1000;
    this.#container = new EndWatch(containerId, engine, { ...options, onAttachCut: () => undefined });
    this.#streamClosedOnce = new Promise<void>((resolve) => (this.#streamClosed = resolve));
    void session.closed?.then(() => this.#streamClosed());
    const execSide = this.#execEnd(session);
    const containerSide = this.#container.ended.then((facts) => this.#afterContainerEnd(facts, execSide));
    this.ended = Promise.race([execSide, containerSide]).then((facts) => {
      // The container runs on after the exec (it may serve the next task, or wait for its removal): its wait is let go.
      this.#container.abandon('the exec ended');
      return facts;
    });
  }

  hint(hint: EndHint): void {
    if (hint === 'attach-closed') this.#streamClosed();
    else this.#container.hint(hint);
  }

  /** The exec's end as its stream and inspect show it; never resolves while the exec runs (the container side may end first). */
  async #execEnd(session: { exitStatus(): Promise<ExecExitStatus> }): Promise<EndFacts> {
    await this.#streamClosedOnce;
    for (;;) {
      try {
        const info = await this.#engine.inspectExec(this.#execId);
        if (!info.running && (info.exitCode !== null || info.pid === 0)) {
          // The session's status tells a command that could not start (126/127) from one that ran.
          const status = await session.exitStatus().catch(() => ({ exitCode: info.exitCode ?? -1 }));
          return { kind: 'stopped', exitCode: status.exitCode, seenBy: 'wait' };
        }
      } catch (error) {
        // An exec the engine forgot went with its container: the container side decides.
        if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return new Promise<never>(() => undefined);
      }
      // The stream was cut while the exec runs (or the engine did not answer): asked again.
      await sleep(this.#pollMs, undefined, { ref: false });
    }
  }

  async #afterContainerEnd(facts: EndFacts, execSide: Promise<EndFacts>): Promise<EndFacts> {
    if (facts.kind === 'lost') return facts;
    // The exec's own code, once the engine has recorded it; else SIGKILL's.
    const bound = sleep(EXEC_CODE_AFTER_CONTAINER_END_MS, undefined, { ref: false }).then(() => undefined);
    const fromExec = await Promise.race([execSide, this.#recordedExecCode(), bound]);
    const exitCode = fromExec === undefined ? 137 : fromExec.kind === 'stopped' ? fromExec.exitCode : 137;
    return { ...facts, exitCode };
  }

  async #recordedExecCode(): Promise<EndFacts | undefined> {
    try {
      const info = await this.#engine.inspectExec(this.#execId);
      if (!info.running && info.exitCode !== null) return { kind: 'stopped', exitCode: info.exitCode, seenBy: 'inspect' };
    } catch {
      // Gone with the container: the bound decides.
    }
    return new Promise<never>(() => undefined);
  }
}
