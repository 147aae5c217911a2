import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BerthError, isBerthError } from '../../../src/common/errors.js';
import { classifyEngineError } from '../../../src/engine/classify.js';
import { classifyPullFailure, runPull, type PullProgress } from '../../../src/images/pull.js';
import { parseImageReference } from '../../../src/images/reference.js';
import { ManualClock, settle, until } from '../../support/time.js';
import { FakeImageEngine } from './fakes.js';

const REF = parseImageReference('127.0.0.1:5000/app:1');

/** What dockerode throws for an engine answer, classified by the engine port as it would be. */
function engineFailure(statusCode: number, message: string): BerthError {
  return classifyEngineError({ statusCode, json: { message }, message: `(HTTP code ${statusCode}) unexpected - ${message}` }, { operation: 'pull image' });
}

describe('classifyPullFailure', () => {
  // The engine's own answers (API 1.41), recorded against a local registry.
  const cases: Array<[string, BerthError, string, boolean]> = [
    ['a missing tag (404)', engineFailure(404, 'manifest for 127.0.0.1:5000/app:nope not found: manifest unknown: manifest unknown'), 'BERTH_IMAGE_NOT_FOUND', false],
    ['missing credentials (500)', engineFailure(500, 'Head "http://127.0.0.1:5000/v2/app/manifests/1": no basic auth credentials'), 'BERTH_IMAGE_ACCESS_DENIED', false],
    ['wrong credentials (500)', engineFailure(500, 'unauthorized: authentication required'), 'BERTH_IMAGE_ACCESS_DENIED', false],
    ['a 401 status', engineFailure(401, 'authentication required'), 'BERTH_IMAGE_ACCESS_DENIED', false],
    ['a registry that is down (500)', engineFailure(500, 'Get "http://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused'), 'BERTH_IMAGE_PULL_FAILED', true],
    ['a rate limit (500)', engineFailure(500, 'toomanyrequests: You have reached your pull rate limit'), 'BERTH_IMAGE_PULL_FAILED', true],
    ['an engine that is unreachable', new BerthError('BERTH_ENGINE_UNAVAILABLE', 'pull image: the engine is unreachable (ECONNREFUSED)'), 'BERTH_IMAGE_PULL_FAILED', true],
  ];
  for (const [what, error, code, retryable] of cases) {
    it(`classifies ${what} as ${code}${retryable ? ', retryable' : ', not retryable'}`, () => {
      const classified = classifyPullFailure(error, REF);
      assert.equal(classified.code, code);
      assert.equal(classified.retryable, retryable);
      assert.match(classified.message, /127\.0\.0\.1:5000\/app:1/);
      assert.equal(classified.cause, error);
    });
  }

  it('classifies an in-stream failure of a layer download as retryable', async () => {
    const engine = new FakeImageEngine();
    const done = runPull(engine, REF, undefined, { activityTimeoutMs: 1000, clock: new ManualClock() });
    await engine.pullsOpened(1);
    engine.pulls[0]!.failInStream('read tcp 127.0.0.1:40000->127.0.0.1:5000: read: connection reset by peer');
    await assert.rejects(done, (error: unknown) => isBerthError(error, 'BERTH_IMAGE_PULL_FAILED') && error.retryable && /connection reset/.test(error.message));
  });

  it('passes a cancellation through untouched', () => {
    const cancelled = new BerthError('BERTH_CANCELLED', 'x');
    assert.equal(classifyPullFailure(cancelled, REF), cancelled);
  });
});

describe('runPull', () => {
  it('reports per-layer progress and resolves when the engine ends the stream', async () => {
    const engine = new FakeImageEngine();
    const clock = new ManualClock();
    const seen: PullProgress[] = [];
    const done = runPull(engine, REF, undefined, { activityTimeoutMs: 1000, clock, onProgress: (p) => seen.push(p) });
    await engine.pullsOpened(1);
    const pull = engine.pulls[0]!;
    assert.equal(pull.fromImage, '127.0.0.1:5000/app');
    assert.equal(pull.tag, '1');
    pull.progress({ status: 'Pulling from app', id: '1' });
    pull.progress({ status: 'Downloading', id: 'abc', progressDetail: { current: 10, total: 100 } });
    pull.progress({ status: 'Extracting', id: 'abc', progressDetail: { current: 100, total: 100 } });
    pull.progress({ status: 'Pull complete', id: 'abc', progressDetail: {} });
    pull.complete('127.0.0.1:5000/app:1', 'sha256:1');
    await done;
    assert.deepEqual(seen, [
      { status: 'Pulling from app', phase: 'other' },
      { status: 'Downloading', phase: 'downloading', layerId: 'abc', currentBytes: 10, totalBytes: 100 },
      { status: 'Extracting', phase: 'extracting', layerId: 'abc', currentBytes: 100, totalBytes: 100 },
      { status: 'Pull complete', phase: 'complete', layerId: 'abc' },
      { status: 'Status: Downloaded newer image for 127.0.0.1:5000/app:1', phase: 'other' },
    ]);
    assert.equal(clock.pending, 0);
  });

  it('classifies an error reported inside the stream', async () => {
    const engine = new FakeImageEngine();
    const done = runPull(engine, REF, undefined, { activityTimeoutMs: 1000, clock: new ManualClock() });
    await engine.pullsOpened(1);
    engine.pulls[0]!.progress({ status: 'Pulling fs layer', id: 'abc' });
    engine.pulls[0]!.failInStream('unauthorized: authentication required');
    await assert.rejects(done, (error: unknown) => isBerthError(error, 'BERTH_IMAGE_ACCESS_DENIED') && /authentication required/.test(error.message));
  });

  it('fails a stream that ends without finishing as retryable', async () => {
    const engine = new FakeImageEngine();
    const done = runPull(engine, REF, undefined, { activityTimeoutMs: 1000, clock: new ManualClock() });
    await engine.pullsOpened(1);
    engine.pulls[0]!.stream.destroy();
    await assert.rejects(done, (error: unknown) => isBerthError(error, 'BERTH_IMAGE_PULL_FAILED') && error.retryable);
  });

  it('aborts a pull that stays silent for the activity timeout, but not one that keeps delivering', async () => {
    const engine = new FakeImageEngine();
    const clock = new ManualClock();
    const done = runPull(engine, REF, undefined, { activityTimeoutMs: 1000, clock });
    await engine.pullsOpened(1);
    const pull = engine.pulls[0]!;
    // Slow but progressing: each line comes within the timeout, so the pull goes on past it.
    for (let i = 1; i <= 5; i++) {
      clock.advance(900);
      pull.progress({ status: 'Downloading', id: 'abc', progressDetail: { current: i, total: 100 } });
      await settle();
    }
    assert.ok(clock.now() > 1000);
    clock.advance(1000);
    await assert.rejects(done, (error: unknown) => isBerthError(error, 'BERTH_IMAGE_PULL_STALLED') && error.retryable && /1000 ms/.test(error.message));
    assert.ok(pull.signal?.aborted, 'the engine request is aborted');
    await until(() => pull.stream.destroyed, 'the stream to be destroyed');
  });

  it('reports cancellation when the caller aborts', async () => {
    const engine = new FakeImageEngine();
    const controller = new AbortController();
    const done = runPull(engine, REF, undefined, { activityTimeoutMs: 1000, clock: new ManualClock(), signal: controller.signal });
    await engine.pullsOpened(1);
    controller.abort();
    await assert.rejects(done, (error: unknown) => isBerthError(error, 'BERTH_CANCELLED'));
    assert.ok(engine.pulls[0]!.signal?.aborted);
  });
});
