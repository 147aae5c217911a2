import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BerthError, isBerthError } from '../../../src/common/errors.js';
import { LABELS, ROLES } from '../../../src/common/labels.js';
import type { ContainerListFilter, ContainerSummary, ImageDeleteOutcome, ImageInspect, NetworkSummary, VolumeSummary } from '../../../src/engine/types.js';
import type { PruneImageSource } from '../../../src/prune/images.js';
import type { Clock } from '../../../src/common/clock.js';
import { Pruner, type PruneEngine, type PrunerInit } from '../../../src/prune/pruner.js';
import { ownerJudge, ownerProcessLabels, readHostIdentity, type OwnerProcess } from '../../../src/common/owner-process.js';
import { fakeProc } from '../../support/proc.js';

const OWNER = 'agent-1';
const NOW = Date.UTC(2024, 4, 2, 12);

const id = (name: string): string => `sha256:${name.padEnd(64, '0')}`;

function stopped(containerId: string, taskId: string, labels: Record<string, string> = {}): ContainerSummary {
  return {
    id: containerId,
    names: [`berth-${taskId}`],
    image: 'busybox',
    labels: { [LABELS.managed]: 'true', [LABELS.ownerId]: OWNER, [LABELS.taskId]: taskId, ...labels },
    createdAt: new Date(NOW - 3_600_000),
    state: 'exited',
    status: 'Exited (0)',
    sizeRwBytes: 100,
  };
}

/** A scripted engine: containers and images in memory, every call recorded. */
class FakePruneEngine {
  containers: ContainerSummary[] = [];
  readonly images = new Map<string, { inspect: ImageInspect; inUse?: boolean }>();
  readonly calls: string[] = [];
  listFilters: ContainerListFilter[] = [];
  /** When set, removeContainer waits on it. */
  removeGate: Promise<void> | undefined;

  image(name: string, sizeBytes: number, options: { tags?: string[]; inUse?: boolean } = {}): string {
    const imageId = id(name);
    this.images.set(imageId, {
      inUse: options.inUse,
      inspect: { id: imageId, repoTags: options.tags ?? [`${name}:1`], repoDigests: [], sizeBytes, createdAt: new Date(NOW - 86_400_000), labels: {} },
    });
    return imageId;
  }

  readonly port: PruneEngine = {
    listContainers: async (filter = {}) => {
      this.calls.push('list containers');
      this.listFilters.push(filter);
      return [...this.containers];
    },
    inspectContainer: async () => {
      throw new Error('not scripted');
    },
    removeContainer: async (containerId) => {
      this.calls.push(`remove ${containerId}`);
      await this.removeGate;
      this.containers = this.containers.filter((c) => c.id !== containerId);
      return 'removed';
    },
    listNetworks: async () => [],
    inspectNetwork: async () => {
      throw new BerthError('BERTH_ENGINE_NOT_FOUND', 'no such network');
    },
    removeNetwork: async () => 'absent',
    listVolumes: async () => [],
    removeVolume: async () => 'absent',
    inspectImage: async (ref) => {
      const found = this.images.get(ref) ?? [...this.images.values()].find((image) => image.inspect.repoTags.includes(ref));
      if (!found) throw new BerthError('BERTH_ENGINE_NOT_FOUND', 'no such image');
      return found.inspect;
    },
    removeImage: async (ref): Promise<ImageDeleteOutcome> => {
      this.calls.push(`delete image ${ref}`);
      for (const [imageId, image] of this.images) {
        const tagged = image.inspect.repoTags.includes(ref);
        if (!tagged && imageId !== ref) continue;
        if (image.inUse) return { kind: 'in-use' };
        image.inspect.repoTags = image.inspect.repoTags.filter((t) => t !== ref);
        if (image.inspect.repoTags.length === 0 || imageId === ref) {
          this.images.delete(imageId);
          return { kind: 'removed', untagged: tagged ? [ref] : [], deleted: [imageId] };
        }
        return { kind: 'removed', untagged: [ref], deleted: [] };
      }
      return { kind: 'absent' };
    },
  };
}

function manualSleepClock(): Pick<Clock, 'now' | 'sleep'> & { sleeps: number[] } {
  const sleeps: number[] = [];
  return { sleeps, now: () => NOW, sleep: async (ms) => void sleeps.push(ms) };
}

function imageSource(images: Array<{ imageId: string; refs: string[]; lastUsedAt: number }>, held: Set<string> = new Set()): PruneImageSource {
  return {
    berthImages: () => images.map(({ imageId, refs }) => ({ imageId, refs })),
    heldImageIds: () => held,
    lastUsedAt: (imageId) => images.find((i) => i.imageId === imageId)?.lastUsedAt,
  };
}

describe('Pruner: one at a time', () => {
  it('refuses a second prune while one runs with BERTH_PRUNE_RUNNING, then accepts one after', async () => {
    const engine = new FakePruneEngine();
    engine.containers = [stopped('c1', 't1')];
    let open!: () => void;
    engine.removeGate = new Promise((resolve) => (open = resolve));
    const pruner = new Pruner({ engine: engine.port, ownerId: OWNER, isTaskLive: () => false, clock: manualSleepClock() });
    const first = pruner.prune();
    assert.equal(pruner.isRunning, true);
    await assert.rejects(pruner.prune(), (error: unknown) => isBerthError(error, 'BERTH_PRUNE_RUNNING') && error.retryable === false);
    await assert.rejects(pruner.enforceImageBudget({ budgetBytes: 0 }), (error: unknown) => isBerthError(error, 'BERTH_PRUNE_RUNNING'));
    open();
    assert.deepEqual((await first).containers.ids, ['c1']);
    assert.equal(pruner.isRunning, false);
    assert.deepEqual((await pruner.prune()).containers.ids, []);
  });

  it('does not take the lock for filters it refuses', async () => {
    const pruner = new Pruner({ engine: new FakePruneEngine().port, ownerId: OWNER, isTaskLive: () => false });
    await assert.rejects(pruner.prune({ filters: ['nope=1'] }), (error: unknown) => isBerthError(error, 'BERTH_VALIDATION'));
    await assert.rejects(pruner.prune({ kinds: ['boats' as never] }), /unknown kind "boats"/);
    assert.equal(pruner.isRunning, false);
  });
});

describe('Pruner: containers', () => {
  it('never removes a pool container the owner\'s pools know (one just created is not started yet), and removes a stopped one they do not', async () => {
    const engine = new FakePruneEngine();
    const pool = (containerId: string): ContainerSummary => {
      const row = stopped(containerId, 'unused', { [LABELS.role]: ROLES.pool, [LABELS.pool]: 'py' });
      const labels = { ...row.labels };
      delete labels[LABELS.taskId];
      return { ...row, labels, state: 'created', status: 'Created' };
    };
    engine.containers = [pool('being-made'), pool('left-over')];
    const pruner = new Pruner({ engine: engine.port, ownerId: OWNER, isTaskLive: () => false, isPoolContainerLive: (containerId) => containerId === 'being-made' });
    const report = await pruner.prune({ kinds: ['containers'] });
    assert.deepEqual(report.containers.ids, ['left-over']);
    assert.deepEqual(report.kept, [{ kind: 'containers', id: 'being-made', reason: 'live-pool' }]);
  });

  it('lists stopped containers of this owner engine-side, with sizes, and spares live tasks', async () => {
    const engine = new FakePruneEngine();
    engine.containers = [stopped('ended', 'done'), stopped('live', 'running-task'), stopped('no-record', 'ghost')];
    const pruner = new Pruner({ engine: engine.port, ownerId: OWNER, isTaskLive: (taskId) => taskId === 'running-task' });
    const report = await pruner.prune({ kinds: ['containers'], filters: ['label=x'] });
    assert.deepEqual(engine.listFilters[0], {
      all: true,
      labels: [`${LABELS.managed}=true`, `${LABELS.ownerId}=${OWNER}`, 'x'],
      status: ['created', 'exited', 'dead'],
      withSize: true,
    });
    // The fake engine ignores label filters; the pruner applies every filter itself as well.
    assert.deepEqual(report.containers.ids, []);
    const all = await pruner.prune({ kinds: ['containers'] });
    assert.deepEqual(all.containers.ids, ['ended', 'no-record']);
    assert.equal(all.containers.reclaimedBytes, 200);
    assert.deepEqual(all.kept, [{ kind: 'containers', id: 'live', reason: 'live-task' }]);
  });

  it('stops at the next container when aborted and reports what it removed so far', async () => {
    const engine = new FakePruneEngine();
    engine.containers = ['a', 'b', 'c', 'd'].map((name) => stopped(name, name));
    const controller = new AbortController();
    const pruner = new Pruner({
      engine: engine.port,
      ownerId: OWNER,
      isTaskLive: () => false,
    });
    pruner.on('removed', (event) => {
      if (event.id === 'b') controller.abort();
    });
    const report = await pruner.prune({ signal: controller.signal });
    assert.equal(report.cancelled, true);
    assert.deepEqual(report.containers.ids, ['a', 'b']);
    assert.deepEqual(engine.containers.map((c) => c.id), ['c', 'd']);
  });

  it('removes nothing in a dry run and reports what it would', async () => {
    const engine = new FakePruneEngine();
    engine.containers = [stopped('a', 'a')];
    const report = await new Pruner({ engine: engine.port, ownerId: OWNER, isTaskLive: () => false }).prune({ dryRun: true });
    assert.deepEqual(report.containers.ids, ['a']);
    assert.equal(engine.calls.filter((c) => c.startsWith('remove')).length, 0);
  });

  it('carries what it removed in the error when a later list fails', async () => {
    const engine = new FakePruneEngine();
    engine.containers = [stopped('a', 'a')];
    engine.port.listNetworks = async () => {
      throw new BerthError('BERTH_ENGINE_UNAVAILABLE', 'connect ECONNREFUSED');
    };
    const pruner = new Pruner({ engine: engine.port, ownerId: OWNER, isTaskLive: () => false });
    await assert.rejects(pruner.prune(), (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_ENGINE_UNAVAILABLE'));
      assert.deepEqual((error.context.partialReport as { containers: { ids: string[] } }).containers.ids, ['a']);
      return true;
    });
    assert.equal(pruner.isRunning, false);
  });
});

/** A container of a `berth run` (owner id `cli`) whose owner process is `pid` on the fake host. */
function orphanCandidate(containerId: string, pid: number, options: { state?: ContainerSummary['state']; ageMs?: number; labels?: Record<string, string>; owner?: Partial<OwnerProcess> } = {}): ContainerSummary {
  const state = options.state ?? 'running';
  const ownerLabels = ownerProcessLabels({ ...readHostIdentity(fakeProc())!, pid, startTime: '5000', ...options.owner });
  return {
    id: containerId,
    names: [`berth-${containerId}`],
    image: 'busybox',
    labels: { [LABELS.managed]: 'true', [LABELS.ownerId]: 'cli', [LABELS.taskId]: containerId, ...ownerLabels, ...options.labels },
    createdAt: new Date(NOW - (options.ageMs ?? 3_600_000)),
    state,
    status: state,
    sizeRwBytes: 10,
  };
}

/** The fake engine, answering lists as the engine does: by label (`key`, `key=value`) and status. */
function filteringEngine(): FakePruneEngine {
  const engine = new FakePruneEngine();
  engine.port.listContainers = async (filter = {}) => {
    engine.calls.push('list containers');
    engine.listFilters.push(filter);
    return engine.containers.filter(
      (c) =>
        (filter.labels ?? []).every((condition) => {
          const [key, value] = condition.split(/=(.*)/s) as [string, string | undefined];
          return Object.hasOwn(c.labels, key) && (value === undefined || c.labels[key] === value);
        }) && (filter.status === undefined || filter.status.includes(c.state)),
    );
  };
  return engine;
}

describe('Pruner: orphans', () => {
  const LIVE = 100;
  const DEAD = 200;
  const orphanPruner = (engine: FakePruneEngine, init: Partial<PrunerInit> = {}): Pruner =>
    new Pruner({
      engine: engine.port,
      ownerId: OWNER,
      isTaskLive: () => false,
      clock: manualSleepClock(),
      ownerJudge: () => ownerJudge(fakeProc({ processes: { [LIVE]: { state: 'S', startTime: '5000' } } })),
      options: { orphanGrace: '1m' },
      ...init,
    });

  it('removes containers of any owner whose owner process is gone, running or not, and keeps a live owner\'s', async () => {
    const engine = filteringEngine();
    engine.containers = [
      orphanCandidate('killed-run', DEAD),
      orphanCandidate('ended-run', DEAD, { state: 'exited' }),
      orphanCandidate('live-run', LIVE),
      orphanCandidate('young', DEAD, { ageMs: 30_000 }),
      orphanCandidate('other-host', DEAD, { owner: { hostId: 'm0123456789abcdef0123456789abcdef' } }),
      stopped('own', 'own-task'),
    ];
    const report = await orphanPruner(engine).prune({ kinds: ['containers'] });
    assert.deepEqual(engine.listFilters[1], { all: true, labels: [`${LABELS.managed}=true`, LABELS.ownerPid], withSize: true });
    assert.deepEqual(report.containers.ids, ['own', 'killed-run', 'ended-run']);
    assert.equal(report.containers.reclaimedBytes, 100 + 10 + 10);
    assert.deepEqual(report.kept, [
      { kind: 'containers', id: 'live-run', reason: 'live-owner' },
      { kind: 'containers', id: 'young', reason: 'grace' },
    ]);
    assert.deepEqual(engine.containers.map((c) => c.id).sort(), ['live-run', 'other-host', 'young'], 'another host\'s container is not berth\'s to judge');
  });

  it('applies the filters to orphans: engine-side labels, label! and until', async () => {
    const engine = filteringEngine();
    engine.containers = [
      orphanCandidate('blue', DEAD, { labels: { team: 'blue' } }),
      orphanCandidate('red', DEAD, { labels: { team: 'red' } }),
      orphanCandidate('blue-recent', DEAD, { labels: { team: 'blue' }, ageMs: 2 * 60_000 }),
    ];
    const pruner = orphanPruner(engine);
    const blue = await pruner.prune({ kinds: ['containers'], filters: ['label=team=blue', 'until=10m'], dryRun: true });
    assert.deepEqual(engine.listFilters[1]!.labels, [`${LABELS.managed}=true`, LABELS.ownerPid, 'team=blue']);
    assert.deepEqual(blue.containers.ids, ['blue']);
    const notRed = await pruner.prune({ kinds: ['containers'], filters: ['label!=team=red'], dryRun: true });
    assert.deepEqual(notRed.containers.ids, ['blue', 'blue-recent']);
    assert.equal(engine.calls.filter((c) => c.startsWith('remove')).length, 0, 'dry runs');
  });

  it('removes a container once when it is both this owner\'s stopped container and an orphan', async () => {
    const engine = filteringEngine();
    engine.containers = [orphanCandidate('both', DEAD, { state: 'exited', labels: { [LABELS.ownerId]: OWNER } })];
    const removed: string[] = [];
    const pruner = orphanPruner(engine);
    pruner.on('removed', (event) => removed.push(event.id));
    const report = await pruner.prune({ kinds: ['containers'], dryRun: false });
    assert.deepEqual([report.containers.ids, removed], [['both'], ['both']]);
  });

  it('with orphans off, lists only this owner\'s containers', async () => {
    const engine = filteringEngine();
    engine.containers = [orphanCandidate('killed-run', DEAD)];
    const report = await orphanPruner(engine, { options: { orphans: false } }).prune({ kinds: ['containers'] });
    // Its stopped containers, then its running infrastructure containers of groups.
    assert.deepEqual(engine.listFilters.map((f) => f.labels?.slice(0, 2)), [
      [`${LABELS.managed}=true`, `${LABELS.ownerId}=${OWNER}`],
      [`${LABELS.managed}=true`, `${LABELS.ownerId}=${OWNER}`],
    ]);
    assert.deepEqual(report.containers.ids, []);
  });

  it('defaults the orphan grace to 5 minutes, as the reconciler\'s creation grace', () => {
    const pruner = new Pruner({ engine: new FakePruneEngine().port, ownerId: OWNER, isTaskLive: () => false });
    assert.equal(pruner.options.orphanGraceMs, 300_000);
    assert.equal(pruner.options.orphans, true);
  });
});

describe('Pruner: groups', () => {
  const DEAD = 200;
  const group = (groupId: string, role: string, owner = OWNER): Record<string, string> => ({
    [LABELS.managed]: 'true',
    [LABELS.ownerId]: owner,
    [LABELS.groupId]: groupId,
    [LABELS.role]: role,
  });
  const infraRow = (containerId: string, groupId: string, state: ContainerSummary['state'], ageMs = 3_600_000): ContainerSummary => ({
    id: containerId,
    names: [`berth-${groupId}.${OWNER}-infra.${OWNER.length + 6}`],
    image: 'berth/pause:1',
    labels: group(groupId, ROLES.infra),
    createdAt: new Date(NOW - ageMs),
    state,
    status: state,
    sizeRwBytes: 1,
  });
  const networkRow = (groupId: string, owner = OWNER, labels: Record<string, string> = {}): NetworkSummary => ({
    id: `net-${groupId}-${owner}`,
    name: `berth-${groupId}.${owner}.net`,
    driver: 'bridge',
    scope: 'local',
    labels: { ...group(groupId, ROLES.network, owner), ...labels },
    createdAt: new Date(NOW - 3_600_000),
  });
  const volumeRow = (groupId: string, owner = OWNER, labels: Record<string, string> = {}): VolumeSummary => ({
    name: `berth-${groupId}.${owner}.shared`,
    driver: 'local',
    labels: { ...group(groupId, ROLES.sharedDir, owner), ...labels },
    createdAt: new Date(NOW - 3_600_000),
  });
  /** An engine with groups' networks and volumes that answers lists by label, as the engine does. */
  function groupEngine() {
    const engine = filteringEngine();
    const state = { networks: [] as NetworkSummary[], volumes: [] as VolumeSummary[], attached: new Map<string, string[]>(), removedResources: [] as string[] };
    const matches = (labels: Record<string, string>, conditions: string[] | undefined) =>
      (conditions ?? []).every((condition) => {
        const [key, value] = condition.split(/=(.*)/s) as [string, string | undefined];
        return Object.hasOwn(labels, key) && (value === undefined || labels[key] === value);
      });
    engine.port.listNetworks = async (filter = {}) => state.networks.filter((n) => matches(n.labels, filter.labels));
    engine.port.inspectNetwork = async (networkId) => ({ ...state.networks.find((n) => n.id === networkId)!, containerIds: state.attached.get(networkId) ?? [] });
    engine.port.removeNetwork = async (networkId) => {
      state.removedResources.push(`network ${networkId}`);
      state.networks = state.networks.filter((n) => n.id !== networkId);
      return 'removed';
    };
    engine.port.listVolumes = async (filter = {}) => state.volumes.filter((v) => matches(v.labels, filter.labels));
    engine.port.removeVolume = async (name) => {
      state.removedResources.push(`volume ${name}`);
      state.volumes = state.volumes.filter((v) => v.name !== name);
      return 'removed';
    };
    return { engine, state };
  }
  const groupPruner = (engine: FakePruneEngine, live: string[]): Pruner =>
    new Pruner({
      engine: engine.port,
      ownerId: OWNER,
      isTaskLive: () => false,
      isGroupLive: (groupId) => live.includes(groupId),
      clock: manualSleepClock(),
      ownerJudge: () => ownerJudge(fakeProc()),
      options: { orphanGrace: '1m' },
    });

  it('keeps a live group\'s stopped infrastructure container, network and volume (live-group), and prunes an ended group\'s, named', async () => {
    const { engine, state } = groupEngine();
    engine.containers = [infraRow('live-infra', 'live', 'exited'), infraRow('ended-infra', 'ended', 'exited')];
    state.networks = [networkRow('live'), networkRow('ended')];
    state.volumes = [volumeRow('live'), volumeRow('ended')];
    const report = await groupPruner(engine, ['live']).prune({});
    assert.deepEqual(report.containers.ids, ['ended-infra']);
    assert.deepEqual([report.networks.ids, report.networks.names], [[`net-ended-${OWNER}`], [`berth-ended.${OWNER}.net`]]);
    assert.deepEqual([report.volumes.ids, report.volumes.names], [[`berth-ended.${OWNER}.shared`], [`berth-ended.${OWNER}.shared`]]);
    assert.deepEqual(
      report.kept.map((k) => [k.kind, k.reason]),
      [['containers', 'live-group'], ['networks', 'live-group'], ['volumes', 'live-group']],
    );
  });

  it('removes a running infrastructure container of a group that is not live once past the orphan grace; never a live group\'s', async () => {
    const { engine } = groupEngine();
    engine.containers = [infraRow('orphan', 'ended', 'running'), infraRow('young', 'new', 'running', 30_000), infraRow('live', 'live', 'running')];
    const report = await groupPruner(engine, ['live']).prune({ kinds: ['containers'] });
    assert.deepEqual(report.containers.ids, ['orphan']);
    assert.deepEqual(report.kept, [{ kind: 'containers', id: 'young', reason: 'grace' }], 'a running live one is not reported, as running task containers are not');
    assert.deepEqual(engine.containers.map((c) => c.id).sort(), ['live', 'young']);
  });

  it('removes the stopped task containers of a group before its infrastructure container', async () => {
    const { engine } = groupEngine();
    engine.containers = [infraRow('infra', 'ended', 'exited'), stopped('task', 'ended-main', { [LABELS.groupId]: 'ended' })];
    await groupPruner(engine, []).prune({ kinds: ['containers'] });
    assert.deepEqual(engine.calls.filter((c) => c.startsWith('remove')), ['remove task', 'remove infra']);
  });

  it('another owner\'s group network and volume: kept while a container of the group is left, removed once none is and its owner is gone', async () => {
    const { engine, state } = groupEngine();
    const deadOwner = ownerProcessLabels({ ...readHostIdentity(fakeProc())!, pid: DEAD, startTime: '5000' });
    state.networks = [networkRow('busy', 'cli'), networkRow('gone', 'cli', deadOwner)];
    state.volumes = [volumeRow('busy', 'cli'), volumeRow('gone', 'cli')];
    engine.containers = [{ ...stopped('cli-task', 'busy-main', { [LABELS.groupId]: 'busy', [LABELS.ownerId]: 'cli' }), state: 'running' }];
    const report = await groupPruner(engine, []).prune({ kinds: ['networks', 'volumes'] });
    assert.deepEqual(report.networks.names, ['berth-gone.cli.net']);
    assert.deepEqual(report.volumes.names, ['berth-gone.cli.shared']);
    assert.deepEqual(report.kept.map((k) => [k.kind, k.id, k.reason]), [['networks', 'net-busy-cli', 'in-use'], ['volumes', 'berth-busy.cli.shared', 'in-use']]);
    assert.equal(engine.listFilters.filter((f) => f.labels?.includes(LABELS.groupId)).length, 1, 'the groups\' containers are listed once per prune');
  });

  it('a network with endpoints is never removed (a container not of berth\'s joined it)', async () => {
    const { engine, state } = groupEngine();
    state.networks = [networkRow('ended')];
    state.attached.set(`net-ended-${OWNER}`, ['someone-elses-container']);
    const report = await groupPruner(engine, []).prune({ kinds: ['networks'] });
    assert.deepEqual([report.networks.ids, state.removedResources], [[], []]);
    assert.deepEqual(report.kept, [{ kind: 'networks', id: `net-ended-${OWNER}`, reason: 'in-use' }]);
  });

  it('applies the filters to groups\' networks and volumes: label and until; nothing without berth\'s label is listed', async () => {
    const { engine, state } = groupEngine();
    state.networks = [networkRow('old'), { ...networkRow('recent'), createdAt: new Date(NOW - 60_000) }];
    state.volumes = [volumeRow('old', OWNER, { team: 'blue' }), volumeRow('red', OWNER, { team: 'red' })];
    const report = await groupPruner(engine, []).prune({ kinds: ['networks', 'volumes'], filters: ['until=10m', 'label!=team=red'] });
    assert.deepEqual(report.networks.names, [`berth-old.${OWNER}.net`]);
    assert.deepEqual(report.volumes.names, [`berth-old.${OWNER}.shared`]);
  });
});

describe('Pruner: images', () => {
  it('removes unheld berth images by untagging their names, never held, shared or in-use ones', async () => {
    const engine = new FakePruneEngine();
    const unheld = engine.image('unheld', 1000, { tags: ['unheld:1', 'unheld:2'] });
    const held = engine.image('held', 1000);
    const shared = engine.image('shared', 1000, { tags: ['shared:1', 'someone-else:1'] });
    const busy = engine.image('busy', 1000, { inUse: true });
    const source = imageSource(
      [
        { imageId: unheld, refs: ['unheld:1', 'unheld:2'], lastUsedAt: 1 },
        { imageId: held, refs: ['held:1'], lastUsedAt: 1 },
        { imageId: shared, refs: ['shared:1'], lastUsedAt: 1 },
        { imageId: busy, refs: ['busy:1'], lastUsedAt: 1 },
      ],
      new Set([held]),
    );
    const report = await new Pruner({ engine: engine.port, ownerId: OWNER, isTaskLive: () => false, images: source }).prune({ kinds: ['images'] });
    assert.deepEqual(report.images.ids, [unheld]);
    assert.deepEqual(report.images.untagged, ['unheld:1', 'unheld:2']);
    assert.equal(report.images.reclaimedBytes, 1000);
    assert.deepEqual(
      report.kept.map((k) => [k.id, k.reason]),
      [
        [held, 'held'],
        [shared, 'shared'],
        [busy, 'in-use'],
      ],
    );
    assert.ok(engine.images.has(held) && engine.images.has(shared) && engine.images.has(busy));
  });
});

describe('Pruner: image budget', () => {
  function budgetSetup(options: { maxRemovals?: number } = {}) {
    const engine = new FakePruneEngine();
    const images = ['a', 'b', 'c', 'd'].map((name, i) => ({ imageId: engine.image(name, 100), refs: [`${name}:1`], lastUsedAt: i + 1 }));
    const exempt = { imageId: engine.image('exempt', 100), refs: ['exempt:1'], lastUsedAt: 0 };
    const held = { imageId: engine.image('held', 100), refs: ['held:1'], lastUsedAt: 0 };
    const heldIds = new Set([held.imageId]);
    const clock = manualSleepClock();
    const pruner = new Pruner({
      engine: engine.port,
      ownerId: OWNER,
      isTaskLive: () => false,
      images: imageSource([...images, exempt, held], heldIds),
      clock,
      options: { imageBudgetMaxRemovals: options.maxRemovals ?? 10, imageBudgetRemovalsPerSecond: 4 },
    });
    return { engine, images, exempt, held, heldIds, clock, pruner };
  }

  it('removes least recently used unheld images until they fit, never a held or exempt one, paced', async () => {
    const { images, engine, clock, pruner, exempt, held } = budgetSetup();
    // Unheld: a, b, c, d and exempt, 100 bytes each: 500. A budget of 250 needs three to go.
    const report = await pruner.enforceImageBudget({ budgetBytes: 250, exempt: ['exempt:1'] });
    assert.deepEqual(report.removed.map((r) => r.imageId), [images[0]!.imageId, images[1]!.imageId, images[2]!.imageId]);
    assert.deepEqual([report.unheldBytesBefore, report.unheldBytesAfter, report.reclaimedBytes, report.withinBudget], [500, 200, 300, true]);
    assert.ok(engine.images.has(exempt.imageId) && engine.images.has(held.imageId) && engine.images.has(images[3]!.imageId));
    assert.deepEqual(clock.sleeps, [250, 250], 'a pause of 1/rate between removals');
  });

  it('does nothing within the budget', async () => {
    const { pruner, engine } = budgetSetup();
    const report = await pruner.enforceImageBudget({ budgetBytes: 500 });
    assert.deepEqual(report.removed, []);
    assert.equal(engine.calls.filter((c) => c.startsWith('delete')).length, 0);
  });

  it('stops at the per-call limit and says so', async () => {
    const { pruner } = budgetSetup({ maxRemovals: 1 });
    const report = await pruner.enforceImageBudget({ budgetBytes: 0 });
    assert.equal(report.removed.length, 1);
    assert.equal(report.limitReached, true);
    assert.equal(report.withinBudget, false);
  });

  it('goes on to the next image when one is in use', async () => {
    const { pruner, engine, images } = budgetSetup();
    engine.images.get(images[0]!.imageId)!.inUse = true;
    const report = await pruner.enforceImageBudget({ budgetBytes: 400, exempt: ['exempt:1'] });
    assert.deepEqual(report.removed.map((r) => r.imageId), [images[1]!.imageId]);
    assert.deepEqual(
      report.kept.filter((k) => k.reason !== 'exempt').map((k) => [k.id, k.reason]),
      [[images[0]!.imageId, 'in-use']],
    );
  });

  it('asks again whether an image is held just before removing it', async () => {
    const { pruner, heldIds, images, engine } = budgetSetup();
    let asked = 0;
    const original = engine.port.removeImage;
    engine.port.removeImage = async (ref, options) => {
      // A task acquires b while a is being removed.
      if (++asked === 1) heldIds.add(images[1]!.imageId);
      return original(ref, options);
    };
    const report = await pruner.enforceImageBudget({ budgetBytes: 300, exempt: ['exempt:1'] });
    assert.deepEqual(report.removed.map((r) => r.imageId), [images[0]!.imageId, images[2]!.imageId]);
    assert.ok(report.kept.some((k) => k.id === images[1]!.imageId && k.reason === 'held'));
  });

  it('refuses a bad budget or exempt entry', async () => {
    const { pruner } = budgetSetup();
    await assert.rejects(pruner.enforceImageBudget({ budgetBytes: -1 }), /budgetBytes: must be a whole number of bytes/);
    await assert.rejects(pruner.enforceImageBudget({ budgetBytes: 1, exempt: ['Not A Ref'] }), /exempt\[0\]/);
  });
});
