/**
 * Time as the reconciler sees it. The same shape as the image coordinator's clock, so one manual
 * clock can drive both in tests; tests fire sweeps when they choose.
 */
export interface ReconcileClock {
  now(): number;
  /** Schedules `callback` after `delayMs`. The timer must not keep the process alive on its own. */
  setTimeout(callback: () => void, delayMs: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The real clock. Its timers are unref'd: the agent's own lifecycle keeps the process running, not a sweep minutes ahead. */
export const systemReconcileClock: ReconcileClock = Object.freeze({
  now: () => Date.now(),
  setTimeout: (callback: () => void, delayMs: number): unknown => setTimeout(callback, delayMs).unref(),
  clearTimeout: (handle: unknown): void => clearTimeout(handle as NodeJS.Timeout),
});
