import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatBytes } from '../../../src/common/format-bytes.js';

describe('formatBytes', () => {
  it('prints sizes in binary units with at most one decimal', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(256 * 1024 * 1024), '256 MiB');
    assert.equal(formatBytes(2 * 1024 ** 3), '2 GiB');
    assert.equal(formatBytes(3 * 1024 ** 4), '3 TiB');
  });
});
