import { setTimeout as delay } from 'node:timers/promises';
import { cancelledError, isBerthError } from './errors.js';

export interface RetryOptions {
  /** Attempts in all, including the first. */
  attempts: number;
  /** Delay before the second attempt; doubles each time up to maxDelayMs. */
  initialDelayMs: number;
  maxDelayMs: number;
  signal?: AbortSignal;
  /** Whether an error is worth another attempt; default: a BerthError marked retryable. */
  shouldRetry?: (error: unknown) => boolean;
  onRetry?: (error: unknown, attempt: number) => void;
}

const retryableBerthError = (error: unknown): boolean => isBerthError(error) && error.retryable;

/** Runs `operation` until it succeeds, fails with an error not worth retrying, or runs out of attempts. */
export async function retry<T>(operation: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const shouldRetry = options.shouldRetry ?? retryableBerthError;
  let delayMs = options.initialDelayMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation(attempt);
    } catch (error) {
      if (attempt >= options.attempts || !shouldRetry(error) || options.signal?.aborted) throw error;
      options.onRetry?.(error, attempt);
      // Jitter spreads the retries of many callers hit by the same engine hiccup.
      const jittered = delayMs * (0.5 + Math.random() / 2);
      try {
        await delay(jittered, undefined, { signal: options.signal });
      } catch {
        throw cancelledError('retry', options.signal?.reason);
      }
      delayMs = Math.min(delayMs * 2, options.maxDelayMs);
    }
  }
}
