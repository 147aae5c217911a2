import { setTimeout as delay } from 'node:timers/promises';

/**
 * Time as berth's components see it: the image coordinator (delayed removals, pull activity
 * timeouts), the reconciler (sweeps) and the pruner (`until` filters, budget pacing). One shape, so
 * one manual clock drives them all in tests; each component takes only the methods it uses.
 */
export interface Clock {
  now(): number;
  /** Schedules `callback` after `delayMs`. The timer must not keep the process alive on its own. */
  setTimeout(callback: () => void, delayMs: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  /**
   * Resolves after `delayMs`, or early (without rejecting) when `signal` aborts: the caller checks
   * its signal. Unlike `setTimeout`, a sleep keeps the process alive: someone is awaiting it.
   */
  sleep(delayMs: number, signal?: AbortSignal): Promise<void>;
}

/** Opaque to the components: whatever the clock's setTimeout returned. */
export type TimerHandle = unknown;

/**
 * The real clock. Its timers are unref'd: a removal or a sweep scheduled minutes ahead must not hold
 * a process open that has nothing else to do (the agent's own lifecycle keeps it running).
 */
export const systemClock: Clock = Object.freeze({
  now: () => Date.now(),
  setTimeout: (callback: () => void, delayMs: number): TimerHandle => setTimeout(callback, delayMs).unref(),
  clearTimeout: (handle: TimerHandle): void => clearTimeout(handle as NodeJS.Timeout),
  sleep: async (delayMs: number, signal?: AbortSignal): Promise<void> => {
    try {
      await delay(delayMs, undefined, { signal });
    } catch {
      // Aborted: the caller checks its signal.
    }
  },
});
