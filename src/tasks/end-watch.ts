import { setTimeout as sleep } from 'node:timers/promises';
import { asBerthError, BerthError, isBerthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { Engine } from '../engine/engine.js';
import type { ContainerInspect, ContainerSummary } from '../engine/types.js';

/** What an end watch needs from the engine. */
export type EndWatchEngine = Pick<Engine, 'waitContainer' | 'inspectContainer'>;

/**
 * Evidence from outside the wait, which the driver gathers for every task it tracks:
 * - `relist-stopped`, `relist-gone`: the periodic list of the owner's containers shows it stopped, or not at all;
 * - `event`: the engine announced a `die`, `oom` or `destroy` for it;
 * - `attach-closed`: its attach connection ended;
 * - `stop-found-stopped`: a stop found nothing to stop (the engine answered "not running");
 * - `engine-answered`: the engine answered a relist (a broken wait may be dialled again at once);
 * - `engine-unreachable`: a relist found the engine unreachable or too slow.
 */
export type EndHint = 'relist-stopped' | 'relist-gone' | 'event' | 'attach-closed' | 'stop-found-stopped' | 'engine-answered' | 'engine-unreachable';

/** What an end watch learned: the container stopped, with the engine's facts, or its end cannot be known. */
export type EndFacts =
  | {
      kind: 'stopped';
      exitCode: number;
      /** Undefined when the end came from the wait, which does not say. */
      oomKilled?: boolean;
      /** When the container stopped, from the inspect; undefined when the end came from the wait (it answers then). */
      finishedAt?: Date;
      seenBy: 'wait' | 'inspect';
    }
  | { kind: 'lost'; reason: string; error?: BerthError };

export interface EndWatchOptions {
  taskId: string;
  /** Delay before dialling a broken wait again; doubles up to `retryMaxDelayMs`. */
  retryInitialDelayMs: number;
  retryMaxDelayMs: number;
  /** End as `lost` once the engine has been unreachable (or too slow) this long without a break. Default: never. */
  lostAfterUnreachableMs?: number;
  logger: Logger;
  /** Milliseconds now; injectable for tests. */
  now?: () => number;
  /** Told when the attach connection ended while the container still runs: it was cut, not finished. */
  onAttachCut?: () => void;
}

/** Hints after which the engine's inspect decides whether the container stopped. */
const HINTS_THAT_NEED_AN_INSPECT: readonly EndHint[] = ['relist-stopped', 'relist-gone', 'event', 'attach-closed', 'stop-found-stopped'];

/** Whether an inspected container has stopped for good: not running, not paused, not being restarted. */
export function hasStopped(state: Pick<ContainerInspect, 'running' | 'paused' | 'status'>): boolean {
  return !state.running && !state.paused && state.status !== 'restarting';
}

/** What a listing of the owner's containers says about one of them. */
export function listingVerdict(containerId: string, rows: readonly Pick<ContainerSummary, 'id' | 'state'>[]): 'running' | 'stopped' | 'gone' {
  const row = rows.find((r) => r.id === containerId);
  if (!row) return 'gone';
  return row.state === 'running' || row.state === 'paused' || row.state === 'restarting' ? 'running' : 'stopped';
}

type Wake =
  | { kind: 'waited'; exitCode: number }
  | { kind: 'wait-failed'; error: unknown }
  | { kind: 'hinted'; hints: Set<EndHint> }
  | { kind: 'retry-due' };

/**
 * Watches one started container until its end is known, never from one connection alone: the
 * engine's wait, and hints from the driver's relist, the owner's events and the attach stream, each
 * of which makes the engine's inspect decide. A wait whose connection breaks is dialled again (with
 * backoff, sooner once a relist finds the engine answering); an unreachable engine is an outage,
 * not an end, unless `lostAfterUnreachableMs` is set and passes.
 */
export class EndWatch {
  /** Resolves once with what ended the container. Never rejects. */
  readonly ended: Promise<EndFacts>;
  readonly #containerId: string;
  readonly #engine: EndWatchEngine;
  readonly #options: EndWatchOptions;
  readonly #now: () => number;
  #pendingHints = new Set<EndHint>();
  #wake: (() => void) | undefined;
  #hinted: Promise<Wake> | undefined;
  #unreachableSince: number | undefined;
  /** Whether a broken wait waits for its backoff before it is dialled again. */
  #inBackoff = false;
  /** Set by `abandon`: the end is known elsewhere (an exec's end, see exec-end-watch.ts). */
  #abandoned: string | undefined;

  constructor(containerId: string, engine: EndWatchEngine, options: EndWatchOptions) {
    this.#containerId = containerId;
    this.#engine = engine;
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.ended = this.#run().catch((error: unknown) => ({
      kind: 'lost' as const,
      reason: `watching the container failed: ${messageOf(error)}`,
      error: asBerthError(error, 'watching the container failed'),
    }));
  }

  /** Tells the watch what was seen elsewhere; it acts on it at once. */
  hint(hint: EndHint): void {
    // The outage is timed from when it was seen, not from when the loop gets to it. These two wake
    // the loop only when it has something to do with them: each wake races the pending wait once more.
    if (hint === 'engine-unreachable') {
      this.#unreachable();
      if (this.#options.lostAfterUnreachableMs === undefined) return;
    }
    if (hint === 'engine-answered') {
      this.#reachable();
      if (!this.#inBackoff) return;
    }
    this.#pendingHints.add(hint);
    this.#wake?.();
  }

  /**
   * Stops watching: `ended` resolves `lost` with `reason` (unless it resolved already) and the
   * wait's connection closes. For an owner that learned the end elsewhere: a warm task's exec
   * ended while its pool container runs on.
   */
  abandon(reason: string): void {
    this.#abandoned ??= reason;
    this.#pendingHints.add('engine-answered');
    this.#wake?.();
  }

  /** Since when the engine has been unreachable for this watch, if it is now. */
  get unreachableSince(): number | undefined {
    return this.#unreachableSince;
  }

  /** One promise until it resolves, so a hint that arrives while the loop is busy is kept for its next turn. */
  #nextHints(): Promise<Wake> {
    if (this.#hinted) return this.#hinted;
    if (this.#pendingHints.size > 0) return Promise.resolve(this.#takeHints());
    this.#hinted = new Promise<Wake>((resolve) => {
      this.#wake = () => {
        this.#wake = undefined;
        this.#hinted = undefined;
        resolve(this.#takeHints());
      };
    });
    return this.#hinted;
  }

  #takeHints(): Wake {
    const hints = this.#pendingHints;
    this.#pendingHints = new Set();
    return { kind: 'hinted', hints };
  }

  #dialWait(signal: AbortSignal): Promise<Wake> {
    return this.#engine.waitContainer(this.#containerId, { signal }).then(
      (result): Wake => ({ kind: 'waited', exitCode: result.exitCode }),
      (error: unknown): Wake => ({ kind: 'wait-failed', error }),
    );
  }

  #reachable(): void {
    this.#unreachableSince = undefined;
  }

  #unreachable(): void {
    this.#unreachableSince ??= this.#now();
  }

  #outageLimitPassed(): EndFacts | undefined {
    const limit = this.#options.lostAfterUnreachableMs;
    if (limit === undefined || this.#unreachableSince === undefined) return undefined;
    const forMs = this.#now() - this.#unreachableSince;
    if (forMs < limit) return undefined;
    return {
      kind: 'lost',
      reason: `the engine was unreachable for ${forMs} ms (the limit is ${limit} ms), so the task's end could not be seen`,
      error: new BerthError('BERTH_ENGINE_UNAVAILABLE', `the engine was unreachable for ${forMs} ms`, { context: { containerId: this.#containerId, unreachableMs: forMs } }),
    };
  }

  /** The engine's inspect as the truth: the facts of a stopped or vanished container, or what to do next. */
  async #inspect(): Promise<EndFacts | 'running' | 'unknown'> {
    try {
      const state = await this.#engine.inspectContainer(this.#containerId);
      this.#reachable();
      if (!hasStopped(state)) return 'running';
      return { kind: 'stopped', exitCode: state.exitCode, oomKilled: state.oomKilled, ...(state.finishedAt ? { finishedAt: state.finishedAt } : {}), seenBy: 'inspect' };
    } catch (error) {
      if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return { kind: 'lost', reason: 'the container vanished before its end was seen', error };
      if (isBerthError(error) && error.retryable) {
        this.#unreachable();
        return 'unknown';
      }
      return { kind: 'lost', reason: lostReason(error), error: asBerthError(error, 'unexpected failure while waiting') };
    }
  }

  async #run(): Promise<EndFacts> {
    const { logger, taskId } = this.#options;
    let attempt: AbortController | undefined;
    let wait: Promise<Wake> | undefined;
    let retryDue: Promise<Wake> | undefined;
    let retryCancel: AbortController | undefined;
    let delayMs = this.#options.retryInitialDelayMs;
    try {
      for (;;) {
        if (!wait && !retryDue) {
          attempt = new AbortController();
          wait = this.#dialWait(attempt.signal);
        }
        const woke = await Promise.race([wait ?? retryDue!, this.#nextHints()]);
        if (this.#abandoned !== undefined && woke.kind !== 'waited') return { kind: 'lost', reason: this.#abandoned };
        let shouldInspect = false;
        switch (woke.kind) {
          case 'waited':
            this.#reachable();
            return { kind: 'stopped', exitCode: woke.exitCode, seenBy: 'wait' };
          case 'wait-failed': {
            wait = undefined;
            const error = woke.error;
            if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return { kind: 'lost', reason: 'the container vanished before its end was seen', error };
            if (!isBerthError(error) || !error.retryable) return { kind: 'lost', reason: lostReason(error), error: asBerthError(error, 'unexpected failure while waiting') };
            // Once per outage, not once per attempt: a long outage would otherwise fill the log.
            if (this.#unreachableSince === undefined) logger.warn({ taskId, code: error.code }, 'the wait for the task broke; checking the container, then waiting again');
            else logger.debug({ taskId, code: error.code }, 'the wait for the task broke again');
            if (isBerthError(error, 'BERTH_ENGINE_UNAVAILABLE') || isBerthError(error, 'BERTH_ENGINE_TIMEOUT')) this.#unreachable();
            // The container may have ended while the connection was down.
            shouldInspect = true;
            retryCancel = new AbortController();
            this.#inBackoff = true;
            retryDue = sleep(delayMs * (0.5 + Math.random() / 2), { kind: 'retry-due' } as Wake, { signal: retryCancel.signal }).catch(() => ({ kind: 'retry-due' }) as Wake);
            delayMs = Math.min(delayMs * 2, this.#options.retryMaxDelayMs);
            break;
          }
          case 'retry-due':
            retryDue = undefined;
            this.#inBackoff = false;
            continue;
          case 'hinted':
            if (woke.hints.has('engine-answered')) {
              // The engine is back: dial the broken wait now rather than after the backoff.
              if (retryDue) {
                retryCancel?.abort();
                retryDue = undefined;
                this.#inBackoff = false;
                delayMs = this.#options.retryInitialDelayMs;
              }
            }
            shouldInspect = HINTS_THAT_NEED_AN_INSPECT.some((hint) => woke.hints.has(hint));
            break;
        }
        if (shouldInspect) {
          const verdict = await this.#inspect();
          if (typeof verdict === 'object') return verdict;
          if (verdict === 'running' && woke.kind === 'hinted' && woke.hints.has('attach-closed')) this.#options.onAttachCut?.();
        }
        const outage = this.#outageLimitPassed();
        if (outage) return outage;
      }
    } finally {
      // Whoever ended the watch, the wait's connection closes and no retry is left pending.
      attempt?.abort();
      retryCancel?.abort();
    }
  }
}


function lostReason(error: unknown): string {
  const berthError = asBerthError(error, 'unexpected failure while waiting');
  return `the engine failed while waiting (${berthError.code}): ${berthError.message}`;
}
