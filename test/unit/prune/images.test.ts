import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { selectBudgetVictims } from '../../../src/prune/image-budget.js';
import { canonicalImageName, isExemptImage, isSharedImage, parseExemptImages } from '../../../src/prune/images.js';

const ID = `sha256:${'a'.repeat(64)}`;

describe('image names', () => {
  it('compares names as the engine does', () => {
    assert.equal(canonicalImageName('busybox'), 'docker.io/library/busybox:latest');
    assert.equal(canonicalImageName('docker.io/library/busybox:latest'), 'docker.io/library/busybox:latest');
    assert.equal(canonicalImageName('NOT A REF'), 'NOT A REF');
  });

  it('calls an image shared when the engine knows it by a name berth did not acquire it by', () => {
    assert.equal(isSharedImage(['busybox:latest'], ['busybox:latest']), false);
    assert.equal(isSharedImage(['busybox'], ['docker.io/library/busybox:latest']), false);
    assert.equal(isSharedImage(['busybox:latest'], ['busybox:latest', 'mine:1']), true);
    assert.equal(isSharedImage(['app@sha256:' + 'b'.repeat(64)], []), false);
  });
});

describe('exempt images', () => {
  const image = (refs: string[], repoTags: string[] = [], imageId = ID) => ({ imageId, refs, repoTags, repoDigests: [] });

  it('match by any name of the image or by its id', () => {
    const exempt = parseExemptImages(['busybox:latest', `sha256:${'c'.repeat(64)}`]);
    assert.equal(isExemptImage(image(['busybox:latest']), exempt), true);
    assert.equal(isExemptImage(image([], ['docker.io/library/busybox:latest']), exempt), true);
    assert.equal(isExemptImage(image(['busybox:1.36']), exempt), false);
    assert.equal(isExemptImage(image(['x:1'], [], `sha256:${'c'.repeat(64)}`), exempt), true);
  });

  it('a repository without tag or digest exempts every name in it', () => {
    const exempt = parseExemptImages(['busybox', '127.0.0.1:5000/team/app']);
    assert.equal(isExemptImage(image(['busybox:1.36']), exempt), true);
    assert.equal(isExemptImage(image(['docker.io/library/busybox:latest']), exempt), true);
    assert.equal(isExemptImage(image(['127.0.0.1:5000/team/app:7']), exempt), true);
    assert.equal(isExemptImage(image(['127.0.0.1:5000/team/other:7', 'busyboxes:1']), exempt), false);
  });

  it('refuses an entry that is neither a reference nor an image id, naming it', () => {
    assert.throws(
      () => parseExemptImages(['ok:1', 'Bad Ref']),
      (error: unknown) => error instanceof ValidationError && error.issues[0]!.field === 'exempt[1]',
    );
  });
});

describe('selectBudgetVictims', () => {
  const candidate = (imageId: string, sizeBytes: number, lastUsedAtMs: number, exempt = false) => ({ imageId, sizeBytes, lastUsedAtMs, exempt });

  it('chooses nothing within the budget', () => {
    const selection = selectBudgetVictims([candidate('a', 10, 1), candidate('b', 10, 2)], 20);
    assert.equal(selection.totalBytes, 20);
    assert.deepEqual(selection.victims, []);
  });

  it('chooses the least recently used first until the rest fits', () => {
    const selection = selectBudgetVictims([candidate('new', 10, 3), candidate('old', 10, 1), candidate('mid', 10, 2)], 15);
    assert.deepEqual(selection.victims.map((v) => v.imageId), ['old', 'mid']);
    assert.deepEqual(selection.order.map((v) => v.imageId), ['old', 'mid', 'new']);
  });

  it('counts exempt images toward the total but never chooses them', () => {
    const selection = selectBudgetVictims([candidate('exempt', 100, 0, true), candidate('a', 10, 1), candidate('b', 10, 2)], 50);
    assert.equal(selection.totalBytes, 120);
    assert.deepEqual(selection.victims.map((v) => v.imageId), ['a', 'b']);
  });

  it('breaks ties by size (larger first), then by id', () => {
    const selection = selectBudgetVictims([candidate('b', 5, 1), candidate('a', 5, 1), candidate('big', 50, 1)], 0);
    assert.deepEqual(selection.victims.map((v) => v.imageId), ['big', 'a', 'b']);
  });
});
