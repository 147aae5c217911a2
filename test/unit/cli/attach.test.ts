import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isBerthError } from '../../../src/common/errors.js';
import { sigProxyFlag } from '../../../src/cli/attach.js';

describe('berth attach --sig-proxy', () => {
  test('takes docker\'s spellings: alone or =true is on, =false off, anything else a usage error naming the flag', () => {
    assert.equal(sigProxyFlag(undefined), true);
    assert.equal(sigProxyFlag('true'), true);
    assert.equal(sigProxyFlag('false'), false);
    assert.throws(() => sigProxyFlag('no'), (error: unknown) => isBerthError(error, 'BERTH_VALIDATION') && /--sig-proxy/.test(error.message));
  });
});
