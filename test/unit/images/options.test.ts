import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { resolveImageCoordinatorOptions } from '../../../src/images/options.js';

describe('resolveImageCoordinatorOptions', () => {
  it('defaults to a 3 minute removal delay, a 2 minute activity timeout and cleanup on', () => {
    const options = resolveImageCoordinatorOptions();
    assert.equal(options.removeDelayMs, 180_000);
    assert.equal(options.pullActivityTimeoutMs, 120_000);
    assert.equal(options.cleanup, true);
    assert.equal(options.pullAttempts, 3);
    assert.equal(options.dockerConfigDir, undefined);
    assert.ok(Object.isFrozen(options));
  });

  it('parses duration literals once into milliseconds', () => {
    const options = resolveImageCoordinatorOptions({ removeDelay: '3m', pullActivityTimeout: '1m30s', pullRetryDelay: 250, removeRetryDelay: '2s' });
    assert.equal(options.removeDelayMs, 180_000);
    assert.equal(options.pullActivityTimeoutMs, 90_000);
    assert.equal(options.pullRetryDelayMs, 250);
    assert.equal(options.removeRetryDelayMs, 2000);
  });

  it('names every field at fault, under a prefix', () => {
    assert.throws(
      () => resolveImageCoordinatorOptions({ removeDelay: 'soon', pullActivityTimeout: 5, pullAttempts: 0, bogus: true } as never, 'images.'),
      (error: unknown) => {
        assert.ok(error instanceof ValidationError);
        const fields = error.issues.map((i) => i.field).sort();
        assert.deepEqual(fields, ['images.bogus', 'images.pullActivityTimeout', 'images.pullAttempts', 'images.removeDelay']);
        assert.match(error.message, /images\.pullActivityTimeout: must be at least 100ms/);
        return true;
      },
    );
  });

  it('switches cleanup off', () => {
    assert.equal(resolveImageCoordinatorOptions({ cleanup: false }).cleanup, false);
  });
});
