/** Time as the image coordinator sees it; tests pass a manual clock to fire removals when they choose. */
export interface Clock {
  now(): number;
  /** Schedules `callback` after `delayMs`. The timer must not keep the process alive on its own. */
  setTimeout(callback: () => void, delayMs: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** Opaque to the coordinator: whatever the clock's setTimeout returned. */
export type TimerHandle = unknown;

/**
 * The real clock. Its timers are unref'd: a removal scheduled minutes ahead must not hold a process
 * open that has nothing else to do (the agent's own lifecycle keeps it running).
 */
export const systemClock: Clock = Object.freeze({
  now: () => Date.now(),
  setTimeout: (callback: () => void, delayMs: number): TimerHandle => setTimeout(callback, delayMs).unref(),
  clearTimeout: (handle: TimerHandle): void => clearTimeout(handle as NodeJS.Timeout),
});
