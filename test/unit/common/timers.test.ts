import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import { MAX_TIMER_DELAY_MS, setLongInterval, setLongTimeout } from '../../../src/common/timers.js';

describe('setLongTimeout', () => {
  it('fires a delay past Node\'s timer limit when it is due, not at once', () => {
    mock.timers.enable({ apis: ['setTimeout', 'Date'] });
    try {
      let fired = 0;
      const thirtyDaysMs = 30 * 24 * 3600 * 1000;
      assert.ok(thirtyDaysMs > MAX_TIMER_DELAY_MS);
      setLongTimeout(() => fired++, thirtyDaysMs);
      mock.timers.tick(1);
      assert.equal(fired, 0, 'not at once');
      mock.timers.tick(MAX_TIMER_DELAY_MS);
      assert.equal(fired, 0, 'not after the first link of the chain');
      mock.timers.tick(thirtyDaysMs - MAX_TIMER_DELAY_MS - 2);
      assert.equal(fired, 0, 'not a millisecond early');
      mock.timers.tick(1);
      assert.equal(fired, 1, 'when due');
    } finally {
      mock.timers.reset();
    }
  });

  it('fires a short delay as setTimeout does, and not at all once cleared', () => {
    mock.timers.enable({ apis: ['setTimeout', 'Date'] });
    try {
      let fired = 0;
      setLongTimeout(() => fired++, 50);
      const cleared = setLongTimeout(() => fired++, 50);
      cleared.clear();
      mock.timers.tick(50);
      assert.equal(fired, 1);
    } finally {
      mock.timers.reset();
    }
  });

  it('clears a chained timer before and after its first link', () => {
    mock.timers.enable({ apis: ['setTimeout', 'Date'] });
    try {
      let fired = 0;
      const long = setLongTimeout(() => fired++, MAX_TIMER_DELAY_MS * 2);
      mock.timers.tick(MAX_TIMER_DELAY_MS + 1);
      long.clear();
      mock.timers.tick(MAX_TIMER_DELAY_MS * 2);
      assert.equal(fired, 0);
    } finally {
      mock.timers.reset();
    }
  });
});

describe('setLongInterval', () => {
  it('fires a 30-day period every 30 days, not at once nor every millisecond', () => {
    mock.timers.enable({ apis: ['setTimeout', 'Date'] });
    try {
      let fired = 0;
      const thirtyDaysMs = 30 * 24 * 3600 * 1000;
      const interval = setLongInterval(() => fired++, thirtyDaysMs);
      mock.timers.tick(1);
      assert.equal(fired, 0, 'not at once');
      mock.timers.tick(thirtyDaysMs - 2);
      assert.equal(fired, 0, 'not a millisecond early');
      mock.timers.tick(1);
      assert.equal(fired, 1, 'after one period');
      mock.timers.tick(thirtyDaysMs - 1);
      assert.equal(fired, 1);
      mock.timers.tick(1);
      assert.equal(fired, 2, 'after two periods');
      interval.clear();
      mock.timers.tick(thirtyDaysMs * 2);
      assert.equal(fired, 2, 'not once cleared');
    } finally {
      mock.timers.reset();
    }
  });

  it('fires a short period as setInterval does, and stops when cleared from its own callback', () => {
    mock.timers.enable({ apis: ['setTimeout', 'Date'] });
    try {
      let fired = 0;
      const interval = setLongInterval(() => {
        fired++;
        if (fired === 3) interval.clear();
      }, 100);
      for (let round = 0; round < 10; round++) mock.timers.tick(100);
      assert.equal(fired, 3);
    } finally {
      mock.timers.reset();
    }
  });
});
