import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Dockerode from 'dockerode';
import { isBerthError } from '../../src/common/errors.js';
import { LABELS } from '../../src/common/labels.js';
import type { PruneFilterInput } from '../../src/prune/filters.js';
import type { PruneImageSource } from '../../src/prune/images.js';
import { Pruner, type PrunerInit } from '../../src/prune/pruner.js';
import { createTestContainer, pollUntil, requireEngine, startTestContainer, TEST_ENGINE_SOCKET, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { buildUniqueImage, removeRunImages, requireRegistryTools } from '../support/registry.js';

const engine = testEngine();
const docker = new Dockerode({ socketPath: TEST_ENGINE_SOCKET });
const run = testRun(engine);
let ownerCounter = 0;

/** A fresh owner id per test: a prune sees only its own test's objects, whatever else the engine holds. */
const newOwner = (): string => `test-${run.id}-${++ownerCounter}`;

const berthLabels = (ownerId: string, taskId: string, extra: Record<string, string> = {}): Record<string, string> => ({
  ...extra,
  [LABELS.managed]: 'true',
  [LABELS.ownerId]: ownerId,
  [LABELS.taskId]: taskId,
});

// Orphans off: these prunes are unfiltered, and another run's orphan on the shared engine is not theirs to report (orphans.test.ts has them).
const pruner = (ownerId: string, init: Partial<PrunerInit> = {}): Pruner => new Pruner({ engine, ownerId, isTaskLive: () => false, options: { orphans: false }, ...init });

/** A stopped (created, never started) berth container of `ownerId`. */
async function stoppedBerthContainer(ownerId: string, name: string, labels: Record<string, string> = {}): Promise<string> {
  return createTestContainer(engine, run, { cmd: ['true'], name: run.name(name), labels: berthLabels(ownerId, `task-${name}`, labels) });
}

async function exists(id: string): Promise<boolean> {
  return (await engine.listContainers({ all: true, labels: [run.labelFilter] })).some((c) => c.id === id);
}

async function imageExists(ref: string): Promise<boolean> {
  try {
    await engine.inspectImage(ref);
    return true;
  } catch (error) {
    if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return false;
    throw error;
  }
}

const sorted = (ids: readonly string[]): string[] => [...ids].sort();

describe('prune against the real engine', { skip: await requireEngine() }, () => {
  after(async () => {
    await run.cleanup();
    for (const network of await docker.listNetworks({ filters: JSON.stringify({ label: [run.labelFilter] }) })) await docker.getNetwork(network.Id).remove().catch(() => undefined);
    const { Volumes: volumes } = await docker.listVolumes({ filters: JSON.stringify({ label: [run.labelFilter] }) });
    for (const volume of volumes ?? []) await docker.getVolume(volume.Name).remove().catch(() => undefined);
  });

  test('each label filter form selects exactly what it should', async () => {
    const owner = newOwner();
    const ids = {
      prod: await stoppedBerthContainer(owner, 'prod', { team: 'a', env: 'prod' }),
      dev: await stoppedBerthContainer(owner, 'dev', { team: 'a', env: 'dev' }),
      teamB: await stoppedBerthContainer(owner, 'team-b', { team: 'b' }),
      bare: await stoppedBerthContainer(owner, 'bare'),
    };
    const p = pruner(owner);
    const selected = async (filters: PruneFilterInput) =>
      sorted((await p.prune({ filters, dryRun: true, kinds: ['containers'] })).containers.ids);
    assert.deepEqual(await selected(['label=team']), sorted([ids.prod, ids.dev, ids.teamB]));
    assert.deepEqual(await selected(['label=team=a']), sorted([ids.prod, ids.dev]));
    assert.deepEqual(await selected(['label!=team']), [ids.bare]);
    assert.deepEqual(await selected(['label!=env=prod']), sorted([ids.dev, ids.teamB, ids.bare]));
    assert.deepEqual(await selected(['label=team=a', 'label!=env=prod']), [ids.dev]);
    assert.deepEqual(await selected({ label: ['env=dev'] }), [ids.dev]);
    assert.deepEqual(await selected([]), sorted(Object.values(ids)));
    // The dry runs removed nothing; a real prune removes exactly what its dry run reported.
    for (const id of Object.values(ids)) assert.ok(await exists(id));
    const report = await p.prune({ filters: ['label=team=a'] });
    assert.deepEqual(sorted(report.containers.ids), sorted([ids.prod, ids.dev]));
    assert.deepEqual([await exists(ids.prod), await exists(ids.dev), await exists(ids.teamB), await exists(ids.bare)], [false, false, true, true]);
  });

  test('until selects what was created before the cut-off, as a duration, an RFC 3339 time or a Unix timestamp', async () => {
    const owner = newOwner();
    const older = await stoppedBerthContainer(owner, 'older');
    const olderCreatedMs = (await engine.inspectContainer(older)).createdAt.getTime();
    await pollUntil('a second past the older container', () => (Date.now() > olderCreatedMs + 1100 ? true : undefined), { timeoutMs: 5000 });
    const cutOffMs = Date.now();
    await pollUntil('a second past the cut-off', () => (Date.now() > cutOffMs + 1100 ? true : undefined), { timeoutMs: 5000 });
    const newer = await stoppedBerthContainer(owner, 'newer');
    const p = pruner(owner);
    const selected = async (until: string) => sorted((await p.prune({ filters: [`until=${until}`], dryRun: true, kinds: ['containers'] })).containers.ids);

    assert.deepEqual(await selected(`${Date.now() - cutOffMs}ms`), [older], 'a duration back from now');
    assert.deepEqual(await selected(new Date(cutOffMs).toISOString()), [older], 'an RFC 3339 time');
    // The same instant written at UTC+02:00.
    assert.deepEqual(await selected(new Date(cutOffMs + 2 * 3_600_000).toISOString().replace('Z', '+02:00')), [older], 'an RFC 3339 time with an offset');
    assert.deepEqual(await selected(String(Math.floor(cutOffMs / 1000))), [older], 'a Unix timestamp');
    assert.deepEqual(await selected((cutOffMs / 1000).toFixed(3)), [older], 'a Unix timestamp with a fraction');
    // To the millisecond: a cut-off 1 ms after the older container's exact creation still selects it alone.
    assert.deepEqual(await selected(((olderCreatedMs + 1) / 1000).toFixed(3)), [older], 'a cut-off inside the second the list reports');
    assert.deepEqual(await selected('2000-01-01T00:00:00Z'), [], 'a cut-off before both');
    assert.deepEqual(await selected('0s'), sorted([older, newer]), 'a cut-off of now');

    const report = await p.prune({ filters: [`until=${new Date(cutOffMs).toISOString()}`] });
    assert.deepEqual(report.containers.ids, [older]);
    assert.deepEqual([await exists(older), await exists(newer)], [false, true]);
  });

  test('a container of a live task and a foreign stopped container are never removed', async () => {
    const owner = newOwner();
    const live = await startTestContainer(engine, run, { cmd: ['true'], name: run.name('live'), labels: berthLabels(owner, 'live-task') });
    const ended = await startTestContainer(engine, run, {
      cmd: ['sh', '-c', 'dd if=/dev/zero of=/written bs=1024 count=64 2>/dev/null'],
      name: run.name('ended'),
      labels: berthLabels(owner, 'ended-task'),
    });
    const foreign = await startTestContainer(engine, run, { cmd: ['true'], name: run.name('foreign') });
    const otherOwner = await startTestContainer(engine, run, { cmd: ['true'], name: run.name('other-owner'), labels: berthLabels(`${owner}-other`, 'theirs') });
    for (const id of [live, ended, foreign, otherOwner]) await engine.waitContainer(id);

    const report = await pruner(owner, { isTaskLive: (taskId) => taskId === 'live-task' }).prune();
    assert.deepEqual(report.containers.ids, [ended]);
    assert.ok(report.containers.reclaimedBytes >= 64 * 1024, `reclaimed ${report.containers.reclaimedBytes} bytes`);
    assert.deepEqual(report.kept, [{ kind: 'containers', id: live, reason: 'live-task' }]);
    assert.deepEqual([await exists(live), await exists(ended), await exists(foreign), await exists(otherOwner)], [true, false, true, true]);
  });

  test('two prunes at once: one runs, the other gets BERTH_PRUNE_RUNNING', async () => {
    const owner = newOwner();
    const ids = [await stoppedBerthContainer(owner, 'c1'), await stoppedBerthContainer(owner, 'c2')];
    const p = pruner(owner);
    const [first, second] = await Promise.allSettled([p.prune(), p.prune()]);
    assert.equal(first.status, 'fulfilled');
    assert.equal(second.status, 'rejected');
    assert.ok(isBerthError(second.reason, 'BERTH_PRUNE_RUNNING'), String(second.reason));
    assert.deepEqual(sorted(first.value.containers.ids), sorted(ids));
    // Once the first has finished, the next one runs.
    assert.deepEqual((await p.prune()).containers.ids, []);
  });

  test('a prune cancelled mid-way stops at the next container and reports what it removed', async () => {
    const owner = newOwner();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await stoppedBerthContainer(owner, `cancel-${i}`));
    const controller = new AbortController();
    let removed = 0;
    const p = pruner(owner);
    p.on('removed', () => void (++removed === 2 && controller.abort()));
    const report = await p.prune({ signal: controller.signal });
    assert.equal(report.cancelled, true);
    assert.equal(report.containers.ids.length, 2);
    const left = ids.filter((id) => !report.containers.ids.includes(id));
    for (const id of report.containers.ids) assert.equal(await exists(id), false);
    for (const id of left) assert.equal(await exists(id), true);
  });

  test('removes berth networks without endpoints and dangling berth volumes, and the anonymous volumes of task containers', async () => {
    const owner = newOwner();
    const labels = { ...run.labels, ...berthLabels(owner, 'net') };
    const unused = await docker.createNetwork({ Name: run.name('net-unused'), Labels: labels });
    const attached = await docker.createNetwork({ Name: run.name('net-attached'), Labels: labels });
    const foreignNetwork = await docker.createNetwork({ Name: run.name('net-foreign'), Labels: { ...run.labels } });
    const user = await startTestContainer(engine, run, { cmd: ['sleep', '300'], name: run.name('net-user'), hostConfig: { NetworkMode: run.name('net-attached') } });
    const danglingVolume = await docker.createVolume({ Name: run.name('vol-dangling'), Labels: labels });
    const foreignVolume = await docker.createVolume({ Name: run.name('vol-foreign'), Labels: { ...run.labels } });
    const withAnonymous = await createTestContainer(engine, run, {
      cmd: ['true'],
      name: run.name('anonymous-volume'),
      labels: berthLabels(owner, 'anon'),
      hostConfig: { Mounts: [{ Type: 'volume', Target: '/data' }] },
    });
    const anonymousName = (await docker.getContainer(withAnonymous).inspect()).Mounts.find((m) => m.Destination === '/data')?.Name;
    assert.ok(anonymousName);
    assert.ok((await engine.listVolumes()).some((v) => v.name === anonymousName));

    const report = await pruner(owner).prune();
    assert.deepEqual(report.networks.ids, [unused.id]);
    assert.deepEqual(report.kept.filter((k) => k.kind === 'networks'), [{ kind: 'networks', id: attached.id, reason: 'in-use' }]);
    assert.deepEqual(report.volumes.ids, [danglingVolume.name]);
    assert.deepEqual(report.containers.ids, [withAnonymous]);
    const networks = new Set((await engine.listNetworks({ labels: [run.labelFilter] })).map((n) => n.id));
    assert.deepEqual([networks.has(unused.id), networks.has(attached.id), networks.has(foreignNetwork.id)], [false, true, true]);
    const volumes = new Set((await engine.listVolumes({ labels: [run.labelFilter] })).map((v) => v.name));
    assert.deepEqual([volumes.has(danglingVolume.name), volumes.has(foreignVolume.name)], [false, true]);
    assert.equal((await engine.listVolumes()).some((v) => v.name === anonymousName), false, 'the anonymous volume went with its container');
    await engine.removeContainer(user);
  });
});

describe('image prune and the image budget against the real engine', { skip: (await requireEngine()) || requireRegistryTools() }, () => {
  /** Unique images (one layer each, so sizes add up), by letter. */
  const images = new Map<string, { id: string; ref: string; sizeBytes: number }>();
  const repository = (letter: string): string => `berth-test-prune/${run.id}-${letter}`;

  before(async () => {
    for (const letter of ['a', 'b', 'c', 'd', 'e', 'h', 'p', 'q', 'u']) {
      const ref = `${repository(letter)}:1`;
      await buildUniqueImage(ref, run.id, 256 * 1024);
      const inspected = await engine.inspectImage(ref);
      images.set(letter, { id: inspected.id, ref, sizeBytes: inspected.sizeBytes });
    }
  });

  after(async () => {
    await run.cleanup();
    await removeRunImages(engine, run.id);
    for (const tag of baseTags) await engine.removeImage(tag).catch(() => undefined);
  });

  /** Extra names the tests put on the shared base test image. */
  const baseTags = [`berth-test-prune/${run.id}-base-x:1`, `berth-test-prune/${run.id}-base-y:1`];

  const source = (entries: Array<{ letter: string; lastUsedAt?: number; refs?: string[] }>, held: ReadonlySet<string> = new Set()): PruneImageSource => ({
    berthImages: () => entries.map((e) => ({ imageId: images.get(e.letter)!.id, refs: e.refs ?? [images.get(e.letter)!.ref] })),
    heldImageIds: () => [...held].map((letter) => images.get(letter)!.id),
    lastUsedAt: (imageId) => entries.find((e) => images.get(e.letter)!.id === imageId)?.lastUsedAt,
  });

  test('the budget removes least-recently-used unheld images first, never a held or exempt one', async () => {
    const size = (letter: string): number => images.get(letter)!.sizeBytes;
    const entries = [
      { letter: 'a', lastUsedAt: 1_000 },
      { letter: 'b', lastUsedAt: 2_000 },
      { letter: 'c', lastUsedAt: 3_000 },
      { letter: 'd', lastUsedAt: 4_000 },
      // The least recently used of all, but exempt (by reference) or held: never removed.
      { letter: 'e', lastUsedAt: 10 },
      { letter: 'h', lastUsedAt: 10 },
    ];
    const unheldBytes = ['a', 'b', 'c', 'd', 'e'].reduce((sum, letter) => sum + size(letter), 0);
    // Room for all but the two least recently used removable images.
    const budgetBytes = unheldBytes - size('a') - size('b') + 1;
    const removedEvents: string[] = [];
    const p = new Pruner({
      engine,
      ownerId: newOwner(),
      isTaskLive: () => false,
      images: source(entries, new Set(['h'])),
      options: { imageBudgetRemovalsPerSecond: 50 },
    });
    p.on('removed', (event) => removedEvents.push(event.id));

    const dryRun = await p.enforceImageBudget({ budgetBytes, exempt: [repository('e')], dryRun: true });
    assert.deepEqual(dryRun.removed.map((r) => r.imageId), [images.get('a')!.id, images.get('b')!.id]);
    assert.equal(await imageExists(images.get('a')!.ref), true, 'a dry run removes nothing');

    const report = await p.enforceImageBudget({ budgetBytes, exempt: [repository('e')] });
    assert.deepEqual(report.removed.map((r) => r.imageId), [images.get('a')!.id, images.get('b')!.id]);
    assert.equal(report.unheldBytesBefore, unheldBytes);
    assert.equal(report.reclaimedBytes, size('a') + size('b'));
    assert.equal(report.withinBudget, true);
    assert.deepEqual(removedEvents, [images.get('a')!.id, images.get('b')!.id]);
    const present = await Promise.all(['a', 'b', 'c', 'd', 'e', 'h'].map((letter) => imageExists(images.get(letter)!.ref)));
    assert.deepEqual(present, [false, false, true, true, true, true]);

    // A budget of nothing takes every removable image, still never the held or the exempt one.
    const all = await p.enforceImageBudget({ budgetBytes: 0, exempt: [images.get('e')!.id] });
    assert.deepEqual(all.removed.map((r) => r.imageId), [images.get('c')!.id, images.get('d')!.id]);
    assert.equal(all.withinBudget, false);
    assert.deepEqual([await imageExists(images.get('e')!.ref), await imageExists(images.get('h')!.ref)], [true, true]);
  });

  test('prune removes unheld berth images by their names, and keeps images others name or use', async () => {
    const p = images.get('p')!;
    const q = images.get('q')!;
    const u = images.get('u')!;
    // p: two names, both berth's: both are untagged and the image goes with the second.
    const pSecond = `${repository('p')}:2`;
    await docker.getImage(p.ref).tag({ repo: repository('p'), tag: '2' });
    // q: someone else tagged it too: not berth's alone, so berth keeps it.
    await docker.getImage(q.ref).tag({ repo: `${repository('q')}-theirs`, tag: '1' });
    // u: a foreign stopped container uses it: the engine refuses, and berth does not force it.
    await createTestContainer(engine, run, { cmd: ['true'], image: u.ref, name: run.name('image-user') });
    // The base test image under berth's names: it has a name berth did not give it, so it stays, and so do they.
    for (const tag of baseTags) await docker.getImage(TEST_IMAGE).tag({ repo: tag.split(':')[0]!, tag: '1' });
    const base = await engine.inspectImage(TEST_IMAGE);

    const imagePruner = new Pruner({
      engine,
      ownerId: newOwner(),
      isTaskLive: () => false,
      images: {
        berthImages: () => [
          { imageId: p.id, refs: [p.ref, pSecond] },
          { imageId: q.id, refs: [q.ref] },
          { imageId: u.id, refs: [u.ref] },
          { imageId: base.id, refs: baseTags },
        ],
        heldImageIds: () => [],
      },
    });
    const report = await imagePruner.prune({ kinds: ['images'] });
    assert.deepEqual(report.images.ids, [p.id]);
    assert.deepEqual(sorted(report.images.untagged), sorted([p.ref, pSecond]));
    assert.equal(report.images.reclaimedBytes, p.sizeBytes);
    assert.deepEqual(
      report.kept.map((k) => [k.id, k.reason]),
      [
        [q.id, 'shared'],
        [u.id, 'in-use'],
        [base.id, 'shared'],
      ],
    );
    assert.deepEqual(
      await Promise.all([p.ref, pSecond, q.ref, u.ref, TEST_IMAGE, ...baseTags].map(imageExists)),
      [false, false, true, true, true, true, true],
    );
  });
});
