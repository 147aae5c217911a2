/**
 * Waiting for a task's placement in cluster mode (a request for a task queued a moment ago, a submit
 * that publishes ports): the wait looks at where the task is, then sleeps until there is news of its
 * placement — a NOTIFY on the placement channel naming it (the node that claimed it has recorded it,
 * or it was cancelled), this node's claimer recording it, or the listening connection coming up or
 * going away (news may have been missed) — with a slow poll as the fallback that needs no connection.
 * It ends when the task is placed (`settled`), at its deadline, or when it is aborted (the client went
 * away, the agent shuts down). A look that fails (PostgreSQL away) fails the wait at once.
 */

/** Where placement news comes from: a task's id, or `undefined` for "look again, news may have been missed". */
export type PlacementNews = (listener: (taskId: string | undefined) => void) => () => void;

/**
 * How long a request for a task not placed yet waits for its placement (claims take milliseconds;
 * a task no node can take yet is answered as it is after this). Default of `timeoutMs`.
 */
export const PLACEMENT_WAIT_MS = 10_000;

/** How often the wait looks without news: the fallback when notifications do not arrive. Default of `fallbackPollMs`. */
export const PLACEMENT_FALLBACK_POLL_MS = 1_000;

export interface PlacementWaitOptions<T> {
  readonly taskId: string;
  /** Where the task is now (one read of the cluster index). Its failure fails the wait. */
  readonly look: () => Promise<T>;
  /** Whether what `look` found ends the wait (placed, ended, gone). */
  readonly isSettled: (found: T) => boolean;
  readonly news: PlacementNews;
  /** Default PLACEMENT_WAIT_MS. */
  readonly timeoutMs?: number;
  /** Default PLACEMENT_FALLBACK_POLL_MS. */
  readonly fallbackPollMs?: number;
  /** Ends the wait at once (`aborted`). */
  readonly signal?: AbortSignal;
}

export interface PlacementWaitResult<T> {
  /** What the last look found. */
  readonly found: T;
  /** `settled`: `isSettled` said so; `timeout`: the deadline passed first; `aborted`: the signal. */
  readonly outcome: 'settled' | 'timeout' | 'aborted';
  /** How many looks it took (the first included). */
  readonly looks: number;
}

/** Waits for a task's placement (see the file's comment). */
export async function waitForPlacement<T>(options: PlacementWaitOptions<T>): Promise<PlacementWaitResult<T>> {
  const timeoutMs = options.timeoutMs ?? PLACEMENT_WAIT_MS;
  const pollMs = options.fallbackPollMs ?? PLACEMENT_FALLBACK_POLL_MS;
  const signal = options.signal;
  let news = false;
  let wake: (() => void) | undefined;
  const poke = (): void => {
    news = true;
    wake?.();
  };
  // Subscribed before the first look: news between the look and the sleep is not missed.
  const unsubscribe = options.news((taskId) => {
    if (taskId === undefined || taskId === options.taskId) poke();
  });
  let expired = false;
  const deadline = setTimeout(() => {
    expired = true;
    wake?.();
  }, timeoutMs);
  const onAbort = (): void => wake?.();
  signal?.addEventListener('abort', onAbort, { once: true });
  let looks = 0;
  try {
    for (;;) {
      news = false;
      const found = await options.look();
      looks++;
      if (options.isSettled(found)) return { found, outcome: 'settled', looks };
      if (signal?.aborted) return { found, outcome: 'aborted', looks };
      if (expired) return { found, outcome: 'timeout', looks };
      if (!news) {
        await new Promise<void>((resolve) => {
          const poll = setTimeout(() => done(), pollMs);
          const done = (): void => {
            clearTimeout(poll);
            wake = undefined;
            resolve();
          };
          wake = done;
        });
      }
      if (signal?.aborted) return { found, outcome: 'aborted', looks };
      if (expired) return { found, outcome: 'timeout', looks };
    }
  } finally {
    clearTimeout(deadline);
    signal?.removeEventListener('abort', onAbort);
    unsubscribe();
  }
}
