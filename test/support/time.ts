/**
 * Time under the test's control: a manual clock for the ports that take one (the image coordinator,
 * the image pull, the reconciler, the pruner), and waits that let the event loop run instead of sleeping.
 */
import type { Clock, TimerHandle } from '../../src/common/clock.js';

/** A clock whose time moves only when the test says so. Starts at `startMs` (default 0). */
export class ManualClock implements Clock {
  #now: number;
  readonly #timers = new Map<number, { at: number; callback: () => void }>();
  #nextId = 1;

  constructor(startMs = 0) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(callback: () => void, delayMs: number): TimerHandle {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.#now + delayMs, callback });
    return id;
  }

  clearTimeout(handle: TimerHandle): void {
    this.#timers.delete(handle as number);
  }

  /** Resolves when time is advanced past `delayMs`, or at once when `signal` aborts. */
  sleep(delayMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const onAbort = (): void => {
        this.clearTimeout(handle);
        resolve();
      };
      const handle = this.setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, delayMs);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Timers pending now. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Delays of the pending timers, from now. */
  get pendingDelays(): number[] {
    return [...this.#timers.values()].map((t) => t.at - this.#now);
  }

  /** Moves time forward, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const target = this.#now + ms;
    for (;;) {
      const due = [...this.#timers.entries()].filter(([, t]) => t.at <= target).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.#now = due[1].at;
      due[1].callback();
    }
    this.#now = target;
  }
}

/** Lets pending promise continuations and I/O callbacks run. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Polls `condition` until it holds; fails after `timeoutMs` (a deadline, not a timing assertion). */
export async function until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await settle();
  }
}
