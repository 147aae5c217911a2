import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BerthError, isBerthError } from '../../../src/common/errors.js';
import { retry } from '../../../src/common/retry.js';

const unavailable = (): BerthError => new BerthError('BERTH_ENGINE_UNAVAILABLE', 'engine gone');
const fast = { initialDelayMs: 1, maxDelayMs: 2 };

describe('retry', () => {
  it('returns the first success, passing the attempt number to the operation', async () => {
    const seen: number[] = [];
    const retried: number[] = [];
    const result = await retry(
      async (attempt) => {
        seen.push(attempt);
        if (attempt < 3) throw unavailable();
        return 'ok';
      },
      { ...fast, attempts: 5, onRetry: (_error, attempt) => retried.push(attempt) },
    );
    assert.equal(result, 'ok');
    assert.deepEqual(seen, [1, 2, 3]);
    assert.deepEqual(retried, [1, 2]);
  });

  it('gives up after the given number of attempts and throws the last error', async () => {
    let calls = 0;
    await assert.rejects(
      retry(async () => {
        calls++;
        throw new BerthError('BERTH_ENGINE_TIMEOUT', `attempt ${calls}`);
      }, { ...fast, attempts: 3 }),
      (error: unknown) => isBerthError(error, 'BERTH_ENGINE_TIMEOUT') && error.message === 'attempt 3',
    );
    assert.equal(calls, 3);
  });

  it('stops at once on an error that is not retryable', async () => {
    let calls = 0;
    await assert.rejects(
      retry(async () => {
        calls++;
        throw new BerthError('BERTH_ENGINE_NOT_FOUND', 'gone');
      }, { ...fast, attempts: 5 }),
      (error: unknown) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'),
    );
    assert.equal(calls, 1);
  });

  it('does not retry errors that are not BerthErrors by default', async () => {
    let calls = 0;
    await assert.rejects(retry(async () => {
      calls++;
      throw new Error('plain');
    }, { ...fast, attempts: 5 }), /plain/);
    assert.equal(calls, 1);
  });

  it('honours a BerthError whose retryability was overridden', async () => {
    let calls = 0;
    await assert.rejects(retry(async () => {
      calls++;
      throw new BerthError('BERTH_ENGINE_UNAVAILABLE', 'no', { retryable: false });
    }, { ...fast, attempts: 5 }));
    assert.equal(calls, 1);
  });

  it('uses a custom shouldRetry', async () => {
    let calls = 0;
    const result = await retry(async () => {
      calls++;
      if (calls === 1) throw new Error('transient');
      return calls;
    }, { ...fast, attempts: 2, shouldRetry: (error) => error instanceof Error && error.message === 'transient' });
    assert.equal(result, 2);
  });

  it('throws BERTH_CANCELLED when the signal aborts during the delay before a retry', async () => {
    const controller = new AbortController();
    let calls = 0;
    await assert.rejects(
      retry(async () => {
        calls++;
        throw unavailable();
      }, {
        attempts: 5,
        initialDelayMs: 60_000,
        maxDelayMs: 60_000,
        signal: controller.signal,
        onRetry: () => controller.abort(new Error('caller gave up')),
      }),
      (error: unknown) => isBerthError(error, 'BERTH_CANCELLED'),
    );
    assert.equal(calls, 1);
  });

  it('does not retry once the signal has aborted', async () => {
    const controller = new AbortController();
    let calls = 0;
    await assert.rejects(
      retry(async () => {
        calls++;
        controller.abort();
        throw unavailable();
      }, { ...fast, attempts: 5, signal: controller.signal }),
      (error: unknown) => isBerthError(error, 'BERTH_ENGINE_UNAVAILABLE'),
    );
    assert.equal(calls, 1);
  });
});
