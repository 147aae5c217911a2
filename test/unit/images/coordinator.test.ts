import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { describe, it } from 'node:test';
import { BerthError, isBerthError } from '../../../src/common/errors.js';
import { ImageCoordinator, type AcquireOptions } from '../../../src/images/coordinator.js';
import type { ImageCoordinatorEvents, ImageEventType } from '../../../src/images/events.js';
import type { ImageCoordinatorOptions } from '../../../src/images/options.js';
import type { PullProgress } from '../../../src/images/pull.js';
import { ManualClock, settle, until } from '../../support/time.js';
import { FakeImageEngine } from './fakes.js';

const NAME = '127.0.0.1:5000/app:1';
const ID = 'sha256:app1';

function setup(options: ImageCoordinatorOptions = {}) {
  const engine = new FakeImageEngine();
  const clock = new ManualClock();
  const coordinator = new ImageCoordinator({ engine, clock, options: { removeDelay: '3m', pullRetryDelay: 1, removeRetryDelay: 1, ...options } });
  const events: Array<{ type: ImageEventType; event: unknown }> = [];
  for (const type of ['pull-started', 'pull-finished', 'pull-shared', 'image-removed', 'image-kept', 'image-removal-failed'] as const) {
    coordinator.on(type, (event: ImageCoordinatorEvents[typeof type]) => events.push({ type, event }));
  }
  const count = (type: ImageEventType): number => events.filter((e) => e.type === type).length;
  return { engine, clock, coordinator, events, count };
}

describe('ImageCoordinator: shared pulls', () => {
  it('gives 20 concurrent acquires of a missing image one pull and one image id', async () => {
    const { engine, coordinator, count } = setup();
    const acquires = Array.from({ length: 20 }, (_, i) => coordinator.acquire(NAME, `task-${i}`));
    await engine.pullsOpened(1);
    engine.pulls[0]!.complete(NAME, ID);
    const results = await Promise.all(acquires);
    assert.equal(engine.pulls.length, 1);
    assert.ok(results.every((r) => r.imageId === ID && r.pulled && r.ref.canonical === NAME));
    assert.equal(count('pull-started'), 1);
    assert.equal(count('pull-shared'), 19);
    assert.equal(count('pull-finished'), 1);
    assert.equal(coordinator.holders(ID).length, 20);
  });

  it('publishes its events on the berth:images diagnostics channel too', async () => {
    const { engine, coordinator } = setup();
    const published: Array<{ type: string }> = [];
    const listener = (message: unknown): void => void published.push(message as { type: string });
    diagnostics.subscribe('berth:images', listener);
    try {
      const acquires = [coordinator.acquire(NAME, 'a'), coordinator.acquire(NAME, 'b')];
      await engine.pullsOpened(1);
      engine.pulls[0]!.complete(NAME, ID);
      await Promise.all(acquires);
    } finally {
      diagnostics.unsubscribe('berth:images', listener);
    }
    assert.deepEqual(
      published.map((m) => m.type),
      ['pull-shared', 'pull-started', 'pull-progress', 'pull-finished'],
    );
    assert.deepEqual(published[0], { type: 'pull-shared', ref: NAME, holderId: 'b', waiters: 2 });
  });

  it('gives every waiter the same error when the shared pull fails', async () => {
    const { engine, coordinator } = setup();
    const acquires = Array.from({ length: 3 }, (_, i) => coordinator.acquire(NAME, `task-${i}`));
    await engine.pullsOpened(1);
    engine.pulls[0]!.failInStream('manifest unknown: manifest unknown');
    const outcomes = await Promise.allSettled(acquires);
    const errors = outcomes.map((o) => (o.status === 'rejected' ? o.reason : undefined));
    assert.ok(errors.every((e) => isBerthError(e, 'BERTH_IMAGE_NOT_FOUND')));
    assert.equal(new Set(errors).size, 1);
    assert.equal(engine.pulls.length, 1, 'not found is not retried');
    assert.deepEqual(coordinator.snapshot(), { images: [], pulls: [] });
  });

  it('lets a cancelled waiter go without cancelling the pull for the others', async () => {
    const { engine, coordinator } = setup();
    const leaving = new AbortController();
    const staying = coordinator.acquire(NAME, 'stays');
    const gone = coordinator.acquire(NAME, 'leaves', { signal: leaving.signal });
    await engine.pullsOpened(1);
    leaving.abort();
    await assert.rejects(gone, (error: unknown) => isBerthError(error, 'BERTH_CANCELLED'));
    assert.equal(engine.pulls[0]!.signal?.aborted, false);
    engine.pulls[0]!.complete(NAME, ID);
    assert.equal((await staying).imageId, ID);
    assert.deepEqual(coordinator.holders(ID), ['stays']);
  });

  it('cancels the pull once every waiter has gone, and starts afresh for the next acquire', async () => {
    const { engine, coordinator, events } = setup();
    const a = new AbortController();
    const b = new AbortController();
    const first = coordinator.acquire(NAME, 'a', { signal: a.signal });
    const second = coordinator.acquire(NAME, 'b', { signal: b.signal });
    await engine.pullsOpened(1);
    a.abort();
    b.abort();
    await assert.rejects(first, (e: unknown) => isBerthError(e, 'BERTH_CANCELLED'));
    await assert.rejects(second, (e: unknown) => isBerthError(e, 'BERTH_CANCELLED'));
    assert.equal(engine.pulls[0]!.signal?.aborted, true);
    await until(() => events.some((e) => e.type === 'pull-finished'), 'the cancelled pull to finish');
    assert.deepEqual(events.find((e) => e.type === 'pull-finished')?.event, {
      ref: NAME,
      outcome: 'cancelled',
      durationMs: 0,
      attempts: 1,
      waiters: 0,
    });
    const third = coordinator.acquire(NAME, 'c');
    await engine.pullsOpened(2);
    engine.pulls[1]!.complete(NAME, ID);
    assert.equal((await third).imageId, ID);
    assert.deepEqual(coordinator.holders(ID), ['c']);
  });

  it('delivers progress to each waiter from the moment it joined', async () => {
    const { engine, coordinator } = setup();
    const early: PullProgress[] = [];
    const late: PullProgress[] = [];
    const first = coordinator.acquire(NAME, 'early', { onProgress: (p) => early.push(p) });
    await engine.pullsOpened(1);
    engine.pulls[0]!.progress({ status: 'Downloading', id: 'l1', progressDetail: { current: 1, total: 2 } });
    await until(() => early.length === 1, 'the first progress line');
    const second = coordinator.acquire(NAME, 'late', { onProgress: (p) => late.push(p) });
    engine.pulls[0]!.progress({ status: 'Extracting', id: 'l1', progressDetail: { current: 2, total: 2 } });
    engine.pulls[0]!.complete(NAME, ID);
    await Promise.all([first, second]);
    assert.deepEqual(early.map((p) => p.phase), ['downloading', 'extracting', 'other']);
    assert.deepEqual(late.map((p) => p.phase), ['extracting', 'other']);
  });

  it('does not share a pull between acquires with different task credentials', async () => {
    const { engine, coordinator } = setup();
    const one = coordinator.acquire(NAME, 'a', { auth: { username: 'u', password: 'one' } });
    const two = coordinator.acquire(NAME, 'b', { auth: { username: 'u', password: 'two' } });
    await engine.pullsOpened(2);
    assert.deepEqual(engine.pulls.map((p) => p.auth?.password).sort(), ['one', 'two']);
    engine.pulls[0]!.complete(NAME, ID);
    engine.pulls[1]!.complete(NAME, ID);
    await Promise.all([one, two]);
  });

  it('retries a pull that failed for a reason that may pass', async () => {
    const { engine, coordinator } = setup({ pullAttempts: 3 });
    engine.openError = (attempt) => (attempt < 3 ? new BerthError('BERTH_ENGINE_UNAVAILABLE', 'pull image: the engine is unreachable') : undefined);
    const acquired = coordinator.acquire(NAME, 'a');
    await engine.pullsOpened(3);
    engine.pulls[2]!.complete(NAME, ID);
    assert.equal((await acquired).imageId, ID);
  });

  it('gives up after its attempts with the classified, retryable error', async () => {
    const { engine, coordinator } = setup({ pullAttempts: 2 });
    engine.openError = () => new BerthError('BERTH_ENGINE_UNAVAILABLE', 'pull image: the engine is unreachable');
    await assert.rejects(coordinator.acquire(NAME, 'a'), (e: unknown) => isBerthError(e, 'BERTH_IMAGE_PULL_FAILED') && e.retryable);
    assert.equal(engine.pulls.length, 2);
  });
});

describe('ImageCoordinator: pull policy', () => {
  it('if-not-present does not pull an image that is present', async () => {
    const { engine, coordinator } = setup();
    engine.names.set(NAME, ID);
    const result = await coordinator.acquire(NAME, 'a');
    assert.deepEqual([result.imageId, result.pulled, engine.pulls.length], [ID, false, 0]);
  });

  it('always pulls an image that is present', async () => {
    const { engine, coordinator } = setup();
    engine.names.set(NAME, ID);
    const acquired = coordinator.acquire(NAME, 'a', { policy: 'always' });
    await engine.pullsOpened(1);
    engine.pulls[0]!.complete(NAME, 'sha256:newer');
    assert.deepEqual([(await acquired).imageId, (await acquired).pulled], ['sha256:newer', true]);
  });

  it('makes an if-not-present resolution pull when an always acquire joins it', async () => {
    const { engine, coordinator } = setup();
    engine.names.set(NAME, ID);
    const lazy = coordinator.acquire(NAME, 'lazy');
    const eager = coordinator.acquire(NAME, 'eager', { policy: 'always' });
    await engine.pullsOpened(1);
    engine.pulls[0]!.complete(NAME, 'sha256:newer');
    assert.deepEqual([(await lazy).imageId, (await eager).imageId], ['sha256:newer', 'sha256:newer']);
    assert.equal(engine.pulls.length, 1);
  });

  it('never fails for a missing image, saying the policy is never, without pulling', async () => {
    const { engine, coordinator } = setup();
    await assert.rejects(coordinator.acquire(NAME, 'a', { policy: 'never' }), (e: unknown) => {
      return isBerthError(e, 'BERTH_IMAGE_NOT_FOUND') && !e.retryable && /pull policy is never/.test(e.message);
    });
    engine.names.set(NAME, ID);
    assert.equal((await coordinator.acquire(NAME, 'a', { policy: 'never' })).imageId, ID);
    assert.equal(engine.pulls.length, 0);
  });

  it('rejects a malformed reference and a bad holder id before touching the engine', async () => {
    const { engine, coordinator } = setup();
    await assert.rejects(coordinator.acquire('Not/Valid', 'a'), (e: unknown) => isBerthError(e, 'BERTH_VALIDATION') && /^image:/.test(e.message));
    await assert.rejects(coordinator.acquire('busybox', ''), (e: unknown) => isBerthError(e, 'BERTH_VALIDATION') && /^holderId:/.test(e.message));
    assert.equal(engine.inspections, 0);
  });

  it('rejects at once when the signal is already aborted', async () => {
    const { engine, coordinator } = setup();
    await assert.rejects(coordinator.acquire(NAME, 'a', { signal: AbortSignal.abort() } satisfies AcquireOptions), (e: unknown) => isBerthError(e, 'BERTH_CANCELLED'));
    assert.equal(engine.inspections, 0);
  });
});


/** Acquires NAME for a holder by pulling it (only images berth pulled are ever removed). */
async function pullIn(engine: FakeImageEngine, coordinator: ImageCoordinator, holderId: string): Promise<void> {
  const before = engine.pulls.length;
  const acquired = coordinator.acquire(NAME, holderId);
  await until(() => engine.pulls.length > before, 'the pull');
  engine.pulls.at(-1)!.complete(NAME, ID);
  await acquired;
}

describe('ImageCoordinator: reference counts and removal', () => {
  it('never removes an image that was present before berth acquired it', async () => {
    const { engine, coordinator, clock } = setup();
    engine.names.set(NAME, ID);
    await coordinator.acquire(NAME, 'a');
    coordinator.release('a');
    assert.equal(clock.pending, 0, 'no removal is scheduled');
    clock.advance(3_600_000);
    await settle();
    assert.deepEqual(engine.removals, []);
    assert.deepEqual(coordinator.snapshot().images, []);
  });

  it('counts a holder that acquires twice once', async () => {
    const { engine, coordinator, clock } = setup();
    await pullIn(engine, coordinator, 'task-1');
    await coordinator.acquire(NAME, 'task-1');
    assert.deepEqual(coordinator.holders(ID), ['task-1']);
    assert.deepEqual(coordinator.release('task-1'), [ID]);
    assert.deepEqual(coordinator.holders(ID), []);
    assert.equal(clock.pending, 1, 'one release of the one holder schedules the removal');
  });

  it('removes an image once, after the delay, when the last holder releases', async () => {
    const { engine, coordinator, clock, count, events } = setup();
    await pullIn(engine, coordinator, 'a');
    await coordinator.acquire(NAME, 'b');
    coordinator.release('a');
    assert.equal(clock.pending, 0, 'b still holds it');
    coordinator.release('b');
    assert.equal(coordinator.snapshot().images[0]?.removalDueAt?.getTime(), 180_000);
    clock.advance(179_999);
    await settle();
    assert.deepEqual(engine.removals, []);
    clock.advance(1);
    await until(() => count('image-removed') === 1, 'the removal');
    assert.deepEqual(engine.removals, [NAME]);
    assert.deepEqual(events.find((e) => e.type === 'image-removed')?.event, { imageId: ID, refs: [NAME], deleted: true });
    assert.deepEqual(coordinator.snapshot().images, []);
  });

  it('cancels the removal when the image is acquired again within the delay', async () => {
    const { engine, coordinator, clock, count } = setup();
    await pullIn(engine, coordinator, 'a');
    coordinator.release('a');
    clock.advance(60_000);
    await coordinator.acquire(NAME, 'b');
    clock.advance(600_000);
    await settle();
    assert.deepEqual(engine.removals, []);
    coordinator.release('b');
    clock.advance(180_000);
    await until(() => count('image-removed') === 1, 'the removal');
    assert.deepEqual(engine.removals, [NAME]);
  });

  it('keeps an image that something else uses, without an error', async () => {
    const { engine, coordinator, clock, count, events } = setup();
    engine.removeAnswers.push('in-use');
    await pullIn(engine, coordinator, 'a');
    coordinator.release('a');
    clock.advance(180_000);
    await until(() => count('image-kept') === 1, 'the kept event');
    assert.deepEqual(events.find((e) => e.type === 'image-kept')?.event, { imageId: ID, refs: [NAME], reason: 'in-use' });
    assert.equal(engine.removals.length, 1, 'in use is not retried');
    assert.deepEqual(coordinator.snapshot().images, []);
  });

  it('retries a removal that failed for a reason that may pass; not found means done', async () => {
    const { engine, coordinator, clock, count } = setup({ removeAttempts: 3 });
    engine.removeAnswers.push(new BerthError('BERTH_ENGINE_UNAVAILABLE', 'remove image: unreachable'), 'absent');
    await pullIn(engine, coordinator, 'a');
    coordinator.release('a');
    clock.advance(180_000);
    await until(() => count('image-removed') === 1, 'the removal');
    assert.equal(engine.removals.length, 2);
  });

  it('reports a removal that keeps failing once, and forgets the image', async () => {
    const { engine, coordinator, clock, count } = setup({ removeAttempts: 2 });
    engine.removeAnswers.push(new BerthError('BERTH_ENGINE_SERVER_ERROR', 'remove image: boom'), new BerthError('BERTH_ENGINE_SERVER_ERROR', 'remove image: boom'));
    await pullIn(engine, coordinator, 'a');
    coordinator.release('a');
    clock.advance(180_000);
    await until(() => count('image-removal-failed') === 1, 'the failure event');
    assert.equal(engine.removals.length, 2);
    assert.deepEqual(coordinator.snapshot().images, []);
  });

  it('does not untag a name that now points to another image', async () => {
    const { engine, coordinator, clock, count, events } = setup();
    await pullIn(engine, coordinator, 'a');
    coordinator.release('a');
    engine.names.set(NAME, 'sha256:other');
    clock.advance(180_000);
    await until(() => count('image-removed') === 1, 'the removal');
    assert.deepEqual(engine.removals, []);
    assert.deepEqual(events.find((e) => e.type === 'image-removed')?.event, { imageId: ID, refs: [NAME], deleted: true });
  });

  it('makes an acquire that starts during a removal wait for it, then pull the image back', async () => {
    const { engine, coordinator, clock } = setup();
    await pullIn(engine, coordinator, 'a');
    coordinator.release('a');
    let finishRemoval!: () => void;
    const removing = new Promise<void>((resolve) => (finishRemoval = resolve));
    const realRemove = engine.removeImage;
    engine.removeImage = async (ref, options) => {
      await removing;
      return realRemove(ref, options);
    };
    const inspectionsBefore = engine.inspections;
    clock.advance(180_000);
    await until(() => coordinator.snapshot().images[0]?.removalDueAt === undefined, 'the removal to start');
    const acquired = coordinator.acquire(NAME, 'b');
    await settle();
    await settle();
    // The removal's own inspect of the name ran; the acquire's has not: it waits for the removal.
    assert.equal(engine.inspections, inspectionsBefore + 1);
    finishRemoval();
    await engine.pullsOpened(2);
    engine.pulls[1]!.complete(NAME, ID);
    assert.equal((await acquired).imageId, ID);
    assert.deepEqual(coordinator.holders(ID), ['b']);
  });

  it('restores holders without counting twice', async () => {
    const { engine, coordinator, clock } = setup();
    coordinator.restoreHolder(ID, 'task-1', NAME, true);
    coordinator.restoreHolder(ID, 'task-1', NAME, true);
    await pullIn(engine, coordinator, 'task-1');
    assert.deepEqual(coordinator.holders(ID), ['task-1']);
    assert.deepEqual(coordinator.snapshot().images, [{ imageId: ID, refs: [NAME], holders: ['task-1'], pulledByBerth: true }]);
    coordinator.release('task-1');
    clock.advance(180_000);
    await until(() => engine.removals.length === 1, 'the removal');
  });

  it('neither counts nor removes anything with cleanup off', async () => {
    const { engine, coordinator, clock } = setup({ cleanup: false });
    await pullIn(engine, coordinator, 'a');
    coordinator.restoreHolder(ID, 'b');
    assert.deepEqual(coordinator.holders(ID), []);
    assert.deepEqual(coordinator.release('a'), []);
    assert.equal(clock.pending, 0);
    assert.deepEqual(coordinator.snapshot(), { images: [], pulls: [] });
  });

  it('drops scheduled removals and cancels waiting acquires on close', async () => {
    const { engine, coordinator, clock } = setup();
    await pullIn(engine, coordinator, 'a');
    coordinator.release('a');
    const waiting = coordinator.acquire('127.0.0.1:5000/other:1', 'b');
    await engine.pullsOpened(2);
    await coordinator.close();
    await assert.rejects(waiting, (e: unknown) => isBerthError(e, 'BERTH_CANCELLED'));
    assert.equal(engine.pulls[1]!.signal?.aborted, true);
    assert.equal(clock.pending, 0);
    await assert.rejects(coordinator.acquire(NAME, 'c'), (e: unknown) => isBerthError(e, 'BERTH_CANCELLED'));
  });
});
