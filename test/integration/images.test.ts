/**
 * The image coordinator against the real engine and real registries (Debian's docker-registry,
 * plain and with htpasswd authentication, behind a counting proxy): one pull for many acquires,
 * reference counts and removal, registry authentication, error classification and stalls.
 */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { inspect } from 'node:util';
import { after, afterEach, before, describe, test } from 'node:test';
import { isBerthError, type BerthError } from '../../src/common/errors.js';
import { ImageCoordinator, type ImageEngine } from '../../src/images/coordinator.js';
import type { ImageCoordinatorEvents, ImageEventType } from '../../src/images/events.js';
import { systemClock, type Clock } from '../../src/common/clock.js';
import type { ImageCoordinatorOptions } from '../../src/images/options.js';
import type { PullProgress } from '../../src/images/pull.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { runToEnd } from '../../src/tasks/run.js';
import { createTestContainer, requireEngine, testRun, testEngine, TEST_ENGINE_KIND } from '../support/engine.js';
import { buildUniqueImage, pushImage, removeRunImages, requireRegistryTools, startTestRegistries, type TestRegistries } from '../support/registry.js';
import { ManualClock, until } from '../support/time.js';

const engine = testEngine();
const run = testRun(engine);
const skip = (await requireEngine()) || requireRegistryTools();

/** Every name the test image is pushed under, one per test, so that each test pulls a name of its own. */
const NAMES = ['shared', 'tasks', 'refcount', 'foreign', 'auth-task', 'auth-wrong', 'auth-config', 'auth-helper', 'missing', 'stall', 'slow'] as const;
type Name = (typeof NAMES)[number];

describe('image coordinator against the real engine and registry', { skip }, () => {
  let registries: TestRegistries;
  const coordinators: ImageCoordinator[] = [];
  const repository = (name: Name | string): string => `berth-it/${run.id}/${name}`;
  const plainRef = (name: Name): string => `${registries.plain.host}/${repository(name)}:1`;
  const securedRef = (name: Name): string => `${registries.secured.host}/${repository(name)}:1`;

  /** The engine port, counting pulls opened. */
  let pullsOpened = 0;
  const countingEngine: ImageEngine = {
    openPull: (...args) => {
      pullsOpened++;
      return engine.openPull(...args);
    },
    inspectImage: (...args) => engine.inspectImage(...args),
    removeImage: (...args) => engine.removeImage(...args),
  };

  /** A coordinator on a manual clock (removals fire when the test says), or on `clock`. */
  function coordinator(options: ImageCoordinatorOptions = {}, clock: Clock = new ManualClock()) {
    const created = new ImageCoordinator({ engine: countingEngine, clock, options: { pullRetryDelay: 10, removeRetryDelay: 10, ...options } });
    coordinators.push(created);
    const events: Array<{ type: ImageEventType; event: unknown }> = [];
    for (const type of ['pull-started', 'pull-finished', 'pull-shared', 'image-removed', 'image-kept', 'image-removal-failed'] as const) {
      created.on(type, (event: ImageCoordinatorEvents[typeof type]) => events.push({ type, event }));
    }
    const count = (type: ImageEventType): number => events.filter((e) => e.type === type).length;
    return { coordinator: created, clock: clock as ManualClock, events, count };
  }

  async function isPresent(name: string): Promise<boolean> {
    try {
      await engine.inspectImage(name);
      return true;
    } catch (error) {
      if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return false;
      throw error;
    }
  }

  /** The error must not reveal the password anywhere: message, JSON, causes. */
  function assertNoSecret(error: unknown, secret: string): void {
    assert.ok(!inspect(error, { depth: 20 }).includes(secret), 'the password appears in the error');
    assert.ok(!JSON.stringify(error).includes(secret), 'the password appears in the error JSON');
  }

  before(async () => {
    registries = await startTestRegistries();
    const source = `berth-it-src/${run.id}:1`;
    await buildUniqueImage(source, run.id);
    await pushImage(source, NAMES.map((name) => plainRef(name)));
    // The image exists only in the registry from now on: each test's acquire is a real pull.
    await removeRunImages(engine, run.id);
  });

  afterEach(async () => {
    await Promise.all(coordinators.splice(0).map((c) => c.close()));
    registries.plain.stallBlobs(undefined);
    registries.plain.trickleBlobs(undefined);
    pullsOpened = 0;
    await run.cleanup();
    await removeRunImages(engine, run.id);
  });

  after(async () => {
    await run.cleanup();
    await removeRunImages(engine, run.id);
    await registries?.stop();
  });

  test('20 concurrent acquires of an image not present make exactly one pull, and all get the image id', async () => {
    const { coordinator: images, count } = coordinator();
    const ref = plainRef('shared');
    assert.equal(await isPresent(ref), false);
    const before = registries.plain.manifestRequests(repository('shared'), '1');
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => images.acquire(ref, `${run.id}-task-${i}`)));
    const imageId = (await engine.inspectImage(ref)).id;
    assert.ok(results.every((r) => r.imageId === imageId && r.pulled));
    assert.equal(registries.plain.manifestRequests(repository('shared'), '1') - before, 1, 'the registry resolved the tag once');
    assert.equal(registries.plain.blobRequests(repository('shared')) > 0, true, 'layers were downloaded');
    assert.equal(pullsOpened, 1);
    assert.equal(count('pull-started'), 1);
    assert.equal(count('pull-shared'), 19);
    assert.equal(images.holders(imageId).length, 20);
  });

  test('20 tasks of an image not present share one pull and release the image when they end', async () => {
    const { coordinator: images, clock, count } = coordinator();
    const driver = new TaskDriver({ engine, ownerId: `test-${run.id}`, images });
    const ref = plainRef('tasks');
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => runToEnd(driver, { image: ref, command: ['true'], labels: { ...run.labels } }, { taskId: `${run.id}-t${i}` })),
    );
    assert.ok(results.every((r) => r.end.kind === 'success'));
    assert.equal(registries.plain.manifestRequests(repository('tasks'), '1'), 1);
    assert.equal(pullsOpened, 1);
    const imageId = (await engine.inspectImage(ref)).id;
    assert.deepEqual(images.holders(imageId), []);
    clock.advance(images.options.removeDelayMs);
    await until(() => count('image-removed') === 1, 'the removal of the released image', 30_000);
    assert.equal(await isPresent(ref), false);
  });

  test('reference counts: acquire twice counts once, re-acquire within the delay keeps the image, the last release removes it once', async () => {
    const { coordinator: images, clock, count, events } = coordinator({ removeDelay: '3m' });
    const ref = plainRef('refcount');
    const first = await images.acquire(ref, 'holder-a');
    await images.acquire(ref, 'holder-a');
    assert.deepEqual(images.holders(first.imageId), ['holder-a']);
    await images.acquire(ref, 'holder-b');
    assert.deepEqual(images.holders(first.imageId), ['holder-a', 'holder-b']);

    images.release('holder-a');
    images.release('holder-b');
    assert.ok(images.snapshot().images[0]?.removalDueAt, 'removal scheduled after the last release');
    clock.advance(60_000);
    const again = await images.acquire(ref, 'holder-c');
    assert.equal(again.imageId, first.imageId);
    assert.equal(again.pulled, false);
    clock.advance(10 * 60_000);
    assert.equal(images.snapshot().images[0]?.removalDueAt, undefined);
    assert.equal(await isPresent(ref), true, 'the re-acquire cancelled the removal');

    images.release('holder-c');
    clock.advance(3 * 60_000 - 1);
    assert.equal(count('image-removed'), 0);
    clock.advance(1);
    await until(() => count('image-removed') === 1, 'the removal', 30_000);
    assert.deepEqual(events.find((e) => e.type === 'image-removed')?.event, { imageId: first.imageId, refs: [ref], deleted: true });
    assert.equal(await isPresent(ref), false);
    assert.equal(await isPresent(first.imageId), false);
    clock.advance(60 * 60_000);
    assert.equal(count('image-removed'), 1);
  });

  test('an image used by a container berth does not own is kept when its last holder releases it', async () => {
    const { coordinator: images, clock, count } = coordinator();
    const ref = plainRef('foreign');
    const { imageId } = await images.acquire(ref, 'holder');
    const containerId = await createTestContainer(engine, run, { name: run.name('foreign'), image: ref, cmd: ['true'] });
    images.release('holder');
    clock.advance(images.options.removeDelayMs);
    await until(() => count('image-kept') + count('image-removed') + count('image-removal-failed') === 1, 'the removal attempt', 30_000);
    assert.equal(count('image-kept'), 1);
    assert.equal((await engine.inspectImage(ref)).id, imageId);
    assert.deepEqual(images.snapshot().images, []);
    await engine.removeContainer(containerId);
  });

  test('the right task credentials pull from the authenticated registry', async () => {
    const { coordinator: images, events } = coordinator();
    const ref = securedRef('auth-task');
    const result = await images.acquire(ref, 'holder', { auth: { username: registries.username, password: registries.password } });
    assert.equal(result.imageId, (await engine.inspectImage(ref)).id);
    assert.equal((events.find((e) => e.type === 'pull-started')?.event as { authSource: string }).authSource, 'task');
  });

  test('wrong or missing credentials give BERTH_IMAGE_ACCESS_DENIED without the password, and are not retried', async () => {
    const { coordinator: images } = coordinator();
    const ref = securedRef('auth-wrong');
    const wrongPassword = `${registries.password}-wrong`;
    await assert.rejects(images.acquire(ref, 'holder', { auth: { username: registries.username, password: wrongPassword } }), (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_IMAGE_ACCESS_DENIED'), String(error));
      assert.equal(error.retryable, false);
      assert.match(error.message, new RegExp(ref.replace(/[.]/g, '\\.')));
      assertNoSecret(error, wrongPassword);
      return true;
    });
    assert.equal(pullsOpened, 1);
    await assert.rejects(images.acquire(ref, 'holder'), (error: unknown) => isBerthError(error, 'BERTH_IMAGE_ACCESS_DENIED'));
    assert.equal(await isPresent(ref), false);
  });

  test('credentials from a config.json auths entry pull from the authenticated registry', async () => {
    const configDir = await mkdtemp(path.join(registries.dir, 'docker-config-'));
    const auth = Buffer.from(`${registries.username}:${registries.password}`).toString('base64');
    await writeFile(path.join(configDir, 'config.json'), JSON.stringify({ auths: { [`http://${registries.secured.host}`]: { auth } } }));
    const { coordinator: images, events } = coordinator({ dockerConfigDir: configDir });
    const ref = securedRef('auth-config');
    assert.equal((await images.acquire(ref, 'holder')).imageId, (await engine.inspectImage(ref)).id);
    assert.equal((events.find((e) => e.type === 'pull-started')?.event as { authSource: string }).authSource, 'config-auths');
  });

  test('credentials from a docker-credential helper pull from the authenticated registry', async () => {
    const dir = await mkdtemp(path.join(registries.dir, 'helper-'));
    const marker = path.join(dir, 'asked-for');
    await writeFile(
      path.join(dir, 'docker-credential-berthtest'),
      [
        '#!/bin/sh',
        '[ "$1" = get ] || exit 1',
        'read -r server',
        `printf '%s' "$server" > '${marker}'`,
        `if [ "$server" = '${registries.secured.host}' ]; then`,
        `  printf '{"ServerURL":"%s","Username":"%s","Secret":"%s"}\\n' "$server" '${registries.username}' '${registries.password}'`,
        'else echo "credentials not found in native keychain"; exit 1; fi',
      ].join('\n'),
    );
    await chmod(path.join(dir, 'docker-credential-berthtest'), 0o755);
    await writeFile(path.join(dir, 'config.json'), JSON.stringify({ credHelpers: { [registries.secured.host]: 'berthtest' } }));
    const { coordinator: images, events } = coordinator({ dockerConfigDir: dir, credentialHelperEnv: { PATH: `${dir}:/usr/bin:/bin` } });
    const ref = securedRef('auth-helper');
    assert.equal((await images.acquire(ref, 'holder')).imageId, (await engine.inspectImage(ref)).id);
    assert.equal(await readFile(marker, 'utf8'), registries.secured.host);
    assert.equal((events.find((e) => e.type === 'pull-started')?.event as { authSource: string }).authSource, 'credential-helper');
  });

  test('an image that does not exist gives BERTH_IMAGE_NOT_FOUND after one engine pull, not retried', async () => {
    const { coordinator: images } = coordinator({ pullAttempts: 3 });
    const ref = `${registries.plain.host}/${repository('missing')}:nope`;
    let failure: BerthError | undefined;
    await assert.rejects(images.acquire(ref, 'holder'), (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_IMAGE_NOT_FOUND'), String(error));
      failure = error;
      return true;
    });
    assert.equal(failure?.retryable, false);
    assert.match(failure?.message ?? '', new RegExp(`${ref.replace(/[.]/g, '\\.')}.*manifest unknown`));
    assert.equal(pullsOpened, 1);
    // One engine pull of a missing tag asks the registry more than once (HEAD, then GET); measure one.
    // (Docker refuses the pull with a 404; Podman answers 200 and says so in the stream: one pull either way.)
    await assert.rejects(coordinator({ pullAttempts: 1 }).coordinator.acquire(`${registries.plain.host}/${repository('missing')}:baseline`, 'holder'));
    const onePull = registries.plain.manifestRequests(repository('missing'), 'baseline');
    assert.ok(onePull >= 1);
    assert.equal(registries.plain.manifestRequests(repository('missing'), 'nope'), onePull);
  });

  test('a pull whose registry stops sending blob bytes midway is aborted as BERTH_IMAGE_PULL_STALLED', async () => {
    // The real clock: the activity timeout fires on its own.
    const { coordinator: stalling, count } = coordinator({ pullActivityTimeout: '1s', pullAttempts: 1 }, systemClock);
    registries.plain.stallBlobs(64 * 1024);
    const ref = plainRef('stall');
    const progress: PullProgress[] = [];
    await assert.rejects(stalling.acquire(ref, 'holder', { onProgress: (p) => progress.push(p) }), (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_IMAGE_PULL_STALLED'), String(error));
      assert.match(error.message, /no progress for 1000 ms/);
      return true;
    });
    assert.ok(registries.plain.stalledBlobs > 0, 'the proxy stalled a blob download');
    // Podman reports a layer's start and end, never its bytes: its pull had begun when a layer was waiting.
    assert.ok(progress.some((p) => p.phase === (TEST_ENGINE_KIND === 'podman' ? 'waiting' : 'downloading')), 'the pull had begun downloading');
    assert.equal(count('pull-finished'), 1);
    assert.equal(await isPresent(ref), false);

    // The stalled pull was cancelled in the engine too: healed, the next pull goes through.
    registries.plain.stallBlobs(undefined);
    const healed = await stalling.acquire(ref, 'holder');
    assert.equal(healed.imageId, (await engine.inspectImage(ref)).id);
  });

  test('a slow pull that keeps delivering bytes outlasts the activity timeout', async () => {
    const activityTimeoutMs = 1500;
    // A manual clock: the activity timeout counts only the time the test moves.
    const { coordinator: slow, clock } = coordinator({ pullActivityTimeout: activityTimeoutMs, pullAttempts: 1 });
    // About 5 MiB at 256 KiB a time: many deliveries.
    registries.plain.trickleBlobs({ chunkBytes: 256 * 1024, intervalMs: 50 });
    const ref = plainRef('slow');
    const progress: PullProgress[] = [];
    let moves = 0;
    const onProgress = (p: PullProgress): void => {
      progress.push(p);
      // Bytes arrived and re-armed the activity timer at a full timeout: move time to just before it would fire.
      if (clock.pendingDelays.includes(activityTimeoutMs)) {
        clock.advance(activityTimeoutMs - 1);
        moves++;
      }
    };
    const result = await slow.acquire(ref, 'holder', { onProgress });
    assert.equal(result.imageId, (await engine.inspectImage(ref)).id);
    if (TEST_ENGINE_KIND === 'podman') {
      // Podman's compatible API sends no byte progress (a layer's start and end only): nothing re-arms
      // the activity timer while a layer downloads, which is why README's Engines section says that on
      // Podman the activity timeout bounds each layer's whole download.
      assert.ok(progress.filter((p) => p.phase === 'downloading').length <= 1, 'no per-delivery progress');
      assert.ok(progress.some((p) => p.phase === 'waiting'));
      return;
    }
    // The premise: time moved well past one activity timeout while the pull went on, and it was never stalled.
    assert.ok(moves > 3, `the activity timer was re-armed by later deliveries (${moves} times)`);
    assert.ok(clock.now() > 3 * activityTimeoutMs, 'more than the activity timeout passed during the pull');
    assert.ok(progress.filter((p) => p.phase === 'downloading').length > 3);
  });
});
