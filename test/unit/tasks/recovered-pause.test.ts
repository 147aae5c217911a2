import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { recoveredPause } from '../../../src/tasks/driver.js';

describe('a recovered task\'s pauses', () => {
  const now = 1_000_000;
  it('a task the engine shows paused keeps its recorded pause, or one that begins now', () => {
    assert.deepEqual(recoveredPause({ pausedForMs: 500, pausedSinceMs: 900_000 }, true, now), { pausedForMs: 500, pausedSinceMs: 900_000 });
    assert.deepEqual(recoveredPause({ pausedForMs: 500 }, true, now), { pausedForMs: 500, pausedSinceMs: now });
    assert.deepEqual(recoveredPause(undefined, true, now), { pausedForMs: 0, pausedSinceMs: now });
  });

  it('a recorded pause the engine no longer shows counts until now; no pause adds nothing', () => {
    assert.deepEqual(recoveredPause({ pausedForMs: 500, pausedSinceMs: 900_000 }, false, now), { pausedForMs: 100_500 });
    assert.deepEqual(recoveredPause({ pausedForMs: 500 }, false, now), { pausedForMs: 500 });
    assert.deepEqual(recoveredPause(undefined, false, now), { pausedForMs: 0 });
  });
});
