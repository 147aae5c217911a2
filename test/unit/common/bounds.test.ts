import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { MAX_TIMER_DELAY_MS, setLongTimeout } from '../../../src/common/timers.js';
import {
  DAY_MS,
  DURATION_LIMITS,
  durationBoundRule,
  formatDurationMs,
  formatSize,
  MAX_SIZE_BYTES,
  parseBytes,
  sizeBoundRule,
  type DurationBounds,
} from '../../../src/common/units.js';
import { IMAGE_OPTION_BOUNDS, resolveImageCoordinatorOptions, type ImageCoordinatorOptions } from '../../../src/images/options.js';
import { PRUNE_ORPHAN_GRACE_BOUNDS, resolvePrunerOptions } from '../../../src/prune/options.js';
import { RECONCILE_OPTION_BOUNDS, resolveDanglingReconcilerOptions, type DanglingReconcilerOptions } from '../../../src/reconcile/options.js';
import { SPEC_BOUNDS } from '../../../src/spec/schema.js';
import { DRIVER_OPTION_BOUNDS, TaskDriver, type TaskDriverOptions } from '../../../src/tasks/driver.js';
import { Engine, ENGINE_OPTION_BOUNDS } from '../../../src/engine/engine.js';

function fieldsOf(fn: () => unknown): string[] {
  try {
    fn();
    return [];
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    return error.issues.map((i) => `${i.field}: ${i.rule}`);
  }
}

describe('the shared bounds', () => {
  it('formats bounds as users write them', () => {
    assert.equal(formatDurationMs(365 * DAY_MS), '365d');
    assert.equal(formatDurationMs(DAY_MS), '24h');
    assert.equal(formatDurationMs(90_000), '90s');
    assert.equal(formatDurationMs(1), '1ms');
    assert.equal(formatSize(MAX_SIZE_BYTES), '1p');
    assert.equal(formatSize(6 * 1024 * 1024), '6m');
    assert.equal(formatSize(1), '1 byte');
    assert.equal(formatSize(1023), '1023 bytes');
  });

  it('parses a size in petabytes, and the ceiling is a safe integer', () => {
    assert.equal(parseBytes('1p'), MAX_SIZE_BYTES);
    assert.equal(parseBytes('1024t'), MAX_SIZE_BYTES);
    assert.ok(Number.isSafeInteger(MAX_SIZE_BYTES));
  });

  it('states the rule broken at and just past each bound', () => {
    const bounds = { minMs: 1, maxMs: DURATION_LIMITS.longMs };
    assert.equal(durationBoundRule(1, bounds), undefined);
    assert.equal(durationBoundRule(DURATION_LIMITS.longMs, bounds), undefined);
    assert.equal(durationBoundRule(0, bounds), 'must be at least 1ms');
    assert.equal(durationBoundRule(DURATION_LIMITS.longMs + 1, bounds), 'must be at most 365d (31536000000 ms)');
    const sizes = { minBytes: 1024, maxBytes: MAX_SIZE_BYTES };
    assert.equal(sizeBoundRule(MAX_SIZE_BYTES, sizes), undefined);
    assert.equal(sizeBoundRule(MAX_SIZE_BYTES + 1, sizes), 'must be at most 1p (1125899906842624 bytes)');
    assert.equal(sizeBoundRule(1023, sizes), 'must be at least 1k (1024 bytes)');
  });

  it('keeps durations held by one Node timer under its limit, and the task timeout on setLongTimeout', () => {
    assert.ok(DURATION_LIMITS.operationMs < DURATION_LIMITS.timerMs);
    assert.ok(DURATION_LIMITS.timerMs < MAX_TIMER_DELAY_MS);
    assert.ok(SPEC_BOUNDS.timeout.maxMs > MAX_TIMER_DELAY_MS, 'the timeout needs the chained timer');
    // The engine's stop call waits the grace period plus a margin on AbortSignal.timeout.
    assert.ok(SPEC_BOUNDS.stopGracePeriod.maxMs + 30_000 < MAX_TIMER_DELAY_MS);
  });

  it('a plain timer at the timer bound is honoured by Node, and one past Node\'s limit is not (the overflow the bound avoids)', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error): void => void warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      clearTimeout(setTimeout(() => assert.fail('fired'), DURATION_LIMITS.timerMs));
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => process.nextTick(resolve));
      assert.deepEqual(warnings, []);
      clearTimeout(setTimeout(() => undefined, MAX_TIMER_DELAY_MS + 1));
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(warnings, ['TimeoutOverflowWarning']);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('a run time limit at the spec\'s bound (365 days) fires when due, not at once', () => {
    mock.timers.enable({ apis: ['setTimeout', 'Date'] });
    try {
      let fired = 0;
      setLongTimeout(() => fired++, SPEC_BOUNDS.timeout.maxMs);
      mock.timers.tick(1);
      assert.equal(fired, 0);
      mock.timers.tick(SPEC_BOUNDS.timeout.maxMs - 2);
      assert.equal(fired, 0, 'not a millisecond early');
      mock.timers.tick(1);
      assert.equal(fired, 1);
    } finally {
      mock.timers.reset();
    }
  });
});

/** At each bound accepted; one past it refused, naming the option. */
function checkDurationOption(name: string, bounds: DurationBounds, resolve: (value: number) => unknown, prefix = ''): void {
  it(`${name}: accepts ${bounds.minMs} ms and ${formatDurationMs(bounds.maxMs)}, refuses one past`, () => {
    assert.deepEqual(fieldsOf(() => resolve(bounds.minMs)), []);
    assert.deepEqual(fieldsOf(() => resolve(bounds.maxMs)), []);
    const past = fieldsOf(() => resolve(bounds.maxMs + 1));
    assert.equal(past.length, 1);
    assert.ok(past[0]!.startsWith(`${prefix}${name}: must be at most ${formatDurationMs(bounds.maxMs)}`), past[0]);
    if (bounds.minMs > 0) assert.ok(fieldsOf(() => resolve(bounds.minMs - 1))[0]!.startsWith(`${prefix}${name}: must be at least`));
  });
}

describe('library options are bounded', () => {
  for (const [name, bounds] of Object.entries(IMAGE_OPTION_BOUNDS)) {
    checkDurationOption(name, bounds, (value) => resolveImageCoordinatorOptions({ [name]: value } as ImageCoordinatorOptions, 'images.'), 'images.');
  }
  it('every image coordinator duration and the reconciler\'s period fit one Node timer', () => {
    for (const bounds of Object.values(IMAGE_OPTION_BOUNDS)) assert.ok(bounds.maxMs <= DURATION_LIMITS.timerMs);
    assert.ok(RECONCILE_OPTION_BOUNDS.period.maxMs <= DURATION_LIMITS.timerMs);
  });
  for (const [name, bounds] of Object.entries(RECONCILE_OPTION_BOUNDS)) {
    checkDurationOption(name, bounds, (value) => resolveDanglingReconcilerOptions({ [name]: value } as DanglingReconcilerOptions));
  }
  checkDurationOption('orphanGrace', PRUNE_ORPHAN_GRACE_BOUNDS, (value) => resolvePrunerOptions({ orphanGrace: value }));

  it('takes a bounded duration written as text, and refuses a wrong type by its rule', () => {
    assert.equal(resolveDanglingReconcilerOptions({ period: '24d' }).periodMs, 24 * DAY_MS);
    assert.deepEqual(fieldsOf(() => resolveDanglingReconcilerOptions({ period: '25d' })), ['period: must be at most 24d (2073600000 ms)']);
    assert.deepEqual(fieldsOf(() => resolveDanglingReconcilerOptions({ period: true as unknown as string })), ['period: must be a duration such as "5m"']);
  });

  const driver = (options: Partial<TaskDriverOptions>) => new TaskDriver({ engine: {} as TaskDriverOptions['engine'], ownerProcess: 'none', ...options });
  it('the driver\'s relist period, unreachable limit and retry policy: accepted at their bounds, refused one past', () => {
    const { relistPeriodMs, lostAfterUnreachableMs, retryAttempts, retryDelayMs } = DRIVER_OPTION_BOUNDS;
    assert.deepEqual(fieldsOf(() => driver({ relistPeriodMs: relistPeriodMs.maxMs, lostAfterUnreachableMs: lostAfterUnreachableMs.maxMs, retry: { attempts: retryAttempts.max, initialDelayMs: retryDelayMs.maxMs, maxDelayMs: retryDelayMs.maxMs } })), []);
    assert.deepEqual(fieldsOf(() => driver({ relistPeriodMs: relistPeriodMs.minMs, lostAfterUnreachableMs: lostAfterUnreachableMs.minMs, retry: { attempts: 1, initialDelayMs: 0, maxDelayMs: 0 } })), []);
    assert.deepEqual(fieldsOf(() => driver({ relistPeriodMs: relistPeriodMs.maxMs + 1 })), ['relistPeriodMs: must be at most 24d (2073600000 ms)']);
    assert.deepEqual(fieldsOf(() => driver({ relistPeriodMs: 99 })), ['relistPeriodMs: must be at least 100ms']);
    assert.deepEqual(fieldsOf(() => driver({ lostAfterUnreachableMs: lostAfterUnreachableMs.maxMs + 1 })), ['lostAfterUnreachableMs: must be at most 365d (31536000000 ms)']);
    assert.deepEqual(fieldsOf(() => driver({ lostAfterUnreachableMs: 0 })), ['lostAfterUnreachableMs: must be at least 1ms']);
    assert.deepEqual(fieldsOf(() => driver({ retry: { attempts: 101 } })), ['retry.attempts: must be at most 100']);
    assert.deepEqual(fieldsOf(() => driver({ retry: { maxDelayMs: retryDelayMs.maxMs + 1 } })), ['retry.maxDelayMs: must be at most 24h (86400000 ms)']);
    assert.deepEqual(fieldsOf(() => driver({ relistPeriodMs: Number.NaN })), ['relistPeriodMs: must be a number of milliseconds']);
  });
});

describe('the engine\'s options are bounded', () => {
  it('accepts deadlines of 1 ms and 24 h and 1 to 100 read attempts, and refuses one past, naming the option', () => {
    const { maxMs } = ENGINE_OPTION_BOUNDS.deadlineMs;
    assert.deepEqual(fieldsOf(() => new Engine({ deadlines: { readMs: maxMs, writeMs: maxMs, stopExtraMs: maxMs }, readAttempts: 100 })), []);
    assert.deepEqual(fieldsOf(() => new Engine({ deadlines: { readMs: 1, writeMs: 1, stopExtraMs: 1 }, readAttempts: 1 })), []);
    assert.deepEqual(fieldsOf(() => new Engine({ deadlines: { readMs: maxMs + 1, writeMs: 0 }, readAttempts: 101 })), [
      'deadlines.readMs: must be at most 24h (86400000 ms)',
      'deadlines.writeMs: must be at least 1ms',
      'readAttempts: must be a whole number from 1 to 100',
    ]);
    // A stop's deadline is its grace period (at most the spec's 24 h) plus stopExtraMs, on one timer.
    assert.ok(SPEC_BOUNDS.stopGracePeriod.maxMs + maxMs < MAX_TIMER_DELAY_MS);
    assert.ok(2 * maxMs < MAX_TIMER_DELAY_MS, 'the late-create guard waits twice the write deadline');
  });
});
