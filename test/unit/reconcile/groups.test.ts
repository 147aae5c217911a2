import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LABELS, ROLES, groupNetworkName, groupVolumeName, infraContainerName } from '../../../src/common/labels.js';
import { ownerJudge, ownerProcessLabels, readHostIdentity } from '../../../src/common/owner-process.js';
import type { ContainerSummary, NetworkSummary, VolumeSummary } from '../../../src/engine/types.js';
import { decideDangling } from '../../../src/reconcile/decide.js';
import type { GroupResourceRemovedEvent } from '../../../src/reconcile/events.js';
import {
  decideGroupResources,
  groupKey,
  judgeGroupResource,
  networkAsGroupResource,
  occupiedGroups,
  volumeAsGroupResource,
  type GroupResource,
  type GroupResourceContext,
} from '../../../src/reconcile/groups.js';
import { DanglingReconciler } from '../../../src/reconcile/reconciler.js';
import { BerthError } from '../../../src/common/errors.js';
import { ManualClock } from '../../support/time.js';
import { fakeProc } from '../../support/proc.js';
import { berthContainer, CLOCK_START_MS, FakeReconcileEngine, OWNER, recordingLogger } from './fakes.js';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const LIVE_PID = 100;
const DEAD_PID = 200;
const proc = () => fakeProc({ processes: { [LIVE_PID]: { state: 'S', startTime: '5000' } } });
const ownerOf = (pid: number): Record<string, string> => ownerProcessLabels({ ...readHostIdentity(proc())!, pid, startTime: '5000' });

function groupLabels(groupId: string, role: string | undefined, owner = OWNER): Record<string, string> {
  return { [LABELS.managed]: 'true', [LABELS.ownerId]: owner, [LABELS.groupId]: groupId, ...(role === undefined ? {} : { [LABELS.role]: role }) };
}

/** A group's infrastructure container: no task id, the infra role. */
function infra(id: string, groupId: string, createdAtMs: number, options: { owner?: string; labels?: Record<string, string>; state?: ContainerSummary['state'] } = {}): ContainerSummary {
  return {
    id,
    names: [infraContainerName({ groupId, ownerId: options.owner ?? OWNER })],
    image: 'berth/pause:1',
    labels: { ...groupLabels(groupId, ROLES.infra, options.owner), ...options.labels },
    createdAt: new Date(Math.floor(createdAtMs / 1000) * 1000),
    state: options.state ?? 'running',
    status: 'Up',
  };
}

/** A task container of a group: a task id and the group, no role. */
function groupTask(id: string, groupId: string, createdAtMs: number, options: { owner?: string; labels?: Record<string, string> } = {}): ContainerSummary {
  const base = berthContainer(id, createdAtMs, { owner: options.owner, taskId: `${groupId}-task-${id}` });
  return { ...base, labels: { ...base.labels, [LABELS.groupId]: groupId, [LABELS.groupTask]: id, ...options.labels } };
}

function network(groupId: string, createdAtMs: number, options: { owner?: string; labels?: Record<string, string> } = {}): NetworkSummary {
  const name = groupNetworkName({ groupId, ownerId: options.owner ?? OWNER });
  return { id: `net-${groupId}-${options.owner ?? OWNER}`, name, driver: 'bridge', scope: 'local', labels: { ...groupLabels(groupId, ROLES.network, options.owner), ...options.labels }, createdAt: new Date(createdAtMs) };
}

function volume(groupId: string, createdAtMs: number | undefined, options: { owner?: string; labels?: Record<string, string> } = {}): VolumeSummary {
  return {
    name: groupVolumeName({ groupId, ownerId: options.owner ?? OWNER }),
    driver: 'local',
    labels: { ...groupLabels(groupId, ROLES.sharedDir, options.owner), ...options.labels },
    ...(createdAtMs === undefined ? {} : { createdAt: new Date(Math.floor(createdAtMs / 1000) * 1000) }),
  };
}

const NOW = CLOCK_START_MS;
const OLD = NOW - 10 * MINUTE;

function context(overrides: Partial<GroupResourceContext> = {}): GroupResourceContext {
  return {
    ownerId: OWNER,
    liveGroupIds: new Set(),
    orphans: true,
    occupied: new Set(),
    judge: ownerJudge(proc()),
    nowMs: NOW,
    creationGraceMs: 2 * MINUTE,
    orphanGraceMs: MINUTE,
    ...overrides,
  };
}

const asResource = (row: NetworkSummary | VolumeSummary): GroupResource => ('id' in row ? networkAsGroupResource(row) : volumeAsGroupResource(row))!;

describe('group decisions (pure)', () => {
  it('a live group\'s infrastructure container is tracked by its group, an ended group\'s is dangling, a young one waits', () => {
    const decision = decideDangling(
      [infra('live', 'g-live', OLD), infra('ended', 'g-ended', OLD), infra('young', 'g-new', NOW - 5 * SECOND)],
      { containerIds: new Set(), taskIds: new Set(), liveGroupIds: new Set(['g-live']) },
      NOW,
      2 * MINUTE,
    );
    assert.deepEqual(decision.dangling.map((c) => [c.id, c.groupId, c.role, c.taskId]), [['ended', 'g-ended', 'infra', undefined]]);
    assert.deepEqual([decision.skippedLiveGroup, decision.skippedTracked, decision.skippedGrace], [1, 0, 1]);
  });

  it('a group\'s task container is judged as a task container: by its task, not by its group being live', () => {
    const tracked = groupTask('t-tracked', 'g-live', OLD);
    const untracked = groupTask('t-untracked', 'g-live', OLD);
    const decision = decideDangling([tracked, untracked], { containerIds: new Set(), taskIds: new Set([tracked.labels[LABELS.taskId]!]), liveGroupIds: new Set(['g-live']) }, NOW, 0);
    assert.deepEqual(decision.dangling.map((c) => [c.id, c.groupId, c.role]), [['t-untracked', 'g-live', undefined]]);
    assert.equal(decision.skippedTracked, 1);
  });

  it('without live groups (an owner that runs none), every infrastructure container of the owner is dangling', () => {
    const decision = decideDangling([infra('i', 'g', OLD)], { containerIds: new Set(), taskIds: new Set(['g']) }, NOW, 0);
    assert.equal(decision.dangling.length, 1, 'a task id equal to the group id does not track an infrastructure container');
  });

  it('this owner\'s network and volume: kept while the group is live or young, orphans (group-ended) once it is not', () => {
    const live = context({ liveGroupIds: new Set(['g']) });
    assert.equal(judgeGroupResource(asResource(network('g', OLD)), live).kind, 'live-group');
    assert.equal(judgeGroupResource(asResource(volume('g', OLD)), live).kind, 'live-group');
    assert.equal(judgeGroupResource(asResource(network('g', NOW - SECOND)), context()).kind, 'grace');
    const ended = judgeGroupResource(asResource(volume('g', OLD)), context());
    assert.equal(ended.kind, 'orphan');
    assert.equal(ended.kind === 'orphan' && ended.resource.reason, 'group-ended');
    // A volume whose driver reports no creation time is judged by the rest alone.
    assert.equal(judgeGroupResource(asResource(volume('g', undefined)), context()).kind, 'orphan');
  });

  it('this owner\'s objects are judged by its groups even when orphans are off; another owner\'s are then not touched', () => {
    assert.equal(judgeGroupResource(asResource(network('g', OLD)), context({ orphans: false })).kind, 'orphan');
    assert.equal(judgeGroupResource(asResource(network('g', OLD, { owner: 'cli' })), context({ orphans: false })).kind, 'foreign');
  });

  it('another owner\'s network or volume waits while a container of its group is left (the containers go first)', () => {
    const occupied = occupiedGroups([groupTask('t', 'g', OLD, { owner: 'cli' }), infra('i', 'other', OLD, { owner: 'cli' })]);
    assert.deepEqual([...occupied].sort(), [groupKey('cli', 'g'), groupKey('cli', 'other')].sort());
    assert.equal(judgeGroupResource(asResource(network('g', OLD, { owner: 'cli' })), context({ occupied })).kind, 'occupied');
    // The same group id of another owner is another group.
    assert.equal(judgeGroupResource(asResource(network('g', OLD, { owner: 'lib' })), context({ occupied })).kind, 'orphan');
  });

  it('another owner\'s network or volume with no container left: by its own owner labels when it has them, abandoned after the orphan grace when not', () => {
    const gone = judgeGroupResource(asResource(volume('g', OLD, { owner: 'cli', labels: ownerOf(DEAD_PID) })), context());
    assert.deepEqual(gone.kind === 'orphan' && [gone.resource.reason, gone.resource.ownerGoneReason], ['owner-gone', 'exited']);
    assert.equal(judgeGroupResource(asResource(volume('g', OLD, { owner: 'cli', labels: ownerOf(LIVE_PID) })), context()).kind, 'live-owner');
    const otherHost = ownerProcessLabels({ ...readHostIdentity(proc())!, hostId: 'm0123456789abcdef0123456789abcdef', pid: DEAD_PID, startTime: '5000' });
    assert.deepEqual(judgeGroupResource(asResource(volume('g', OLD, { owner: 'cli', labels: otherHost })), context()), { kind: 'foreign', reason: 'other-host' });
    const abandoned = judgeGroupResource(asResource(network('g', OLD, { owner: 'cli' })), context());
    assert.equal(abandoned.kind === 'orphan' && abandoned.resource.reason, 'abandoned');
    assert.equal(judgeGroupResource(asResource(network('g', NOW - 30 * SECOND, { owner: 'cli' })), context()).kind, 'grace', 'younger than the orphan grace');
  });

  it('counts what it spares, by reason', () => {
    const decision = decideGroupResources(
      [network('live', OLD), network('young', NOW), volume('ended', OLD), volume('busy', OLD, { owner: 'cli' }), volume('runs', OLD, { owner: 'cli', labels: ownerOf(LIVE_PID) })].map(asResource),
      context({ liveGroupIds: new Set(['live']), occupied: new Set([groupKey('cli', 'busy')]) }),
    );
    assert.deepEqual(decision.orphans.map((o) => [o.kind, o.groupId]), [['volume', 'ended']]);
    assert.deepEqual(
      [decision.skippedLiveGroup, decision.skippedGrace, decision.skippedOccupied, decision.skippedLiveOwner, decision.skippedForeign],
      [1, 1, 1, 1, 0],
    );
  });

  it('a network or volume without a group id or owner id is not a group\'s', () => {
    assert.equal(networkAsGroupResource({ ...network('g', OLD), labels: { [LABELS.managed]: 'true', [LABELS.role]: ROLES.network } }), undefined);
    assert.equal(volumeAsGroupResource({ ...volume('g', OLD), labels: { [LABELS.managed]: 'true', [LABELS.groupId]: 'g' } }), undefined);
  });
});

function setup(options: { liveGroups?: Set<string>; dryRun?: boolean; orphans?: boolean } = {}) {
  const engine = new FakeReconcileEngine();
  const clock = new ManualClock(CLOCK_START_MS);
  const logger = recordingLogger();
  const live = options.liveGroups ?? new Set<string>();
  const removedResources: GroupResourceRemovedEvent[] = [];
  const reconciler = new DanglingReconciler({
    engine,
    ownerId: OWNER,
    trackedTaskIds: () => [],
    liveGroupIds: () => live,
    ownerJudge: () => ownerJudge(proc()),
    clock,
    logger,
    options: { creationGrace: '2m', orphanGrace: '1m', orphans: options.orphans ?? false, ...(options.dryRun ? { dryRun: true } : {}) },
  });
  reconciler.on('group-resource-removed', (event) => removedResources.push(event));
  return { engine, clock, logger, live, removedResources, reconciler };
}

describe('DanglingReconciler: groups', () => {
  it('leaves a live group\'s infrastructure container, network and volume alone', async () => {
    const { engine, reconciler } = setup({ liveGroups: new Set(['g']) });
    engine.listAnswers = [[infra('i', 'g', OLD)]];
    engine.networks = [network('g', OLD)];
    engine.volumes = [volume('g', OLD)];
    const result = await reconciler.sweepOnce();
    assert.deepEqual([engine.removals, engine.resourceRemovals], [[], []]);
    assert.equal(result.skippedLiveGroup, 1);
    assert.deepEqual([result.groupResources.listed, result.groupResources.skippedLiveGroup], [2, 2]);
  });

  it('once the group has ended: the containers first (tasks, then infrastructure), then its network and volume', async () => {
    const { engine, reconciler, removedResources } = setup();
    const order: string[] = [];
    const removeContainer = engine.removeContainer;
    engine.removeContainer = async (id) => (order.push(`container ${id}`), removeContainer(id));
    const removeNetwork = engine.removeNetwork;
    engine.removeNetwork = async (id) => (order.push(`network ${id}`), removeNetwork(id));
    const removeVolume = engine.removeVolume;
    engine.removeVolume = async (name) => (order.push(`volume ${name}`), removeVolume(name));
    engine.listAnswers = [[infra('i', 'g', OLD), groupTask('t', 'g', OLD)]];
    engine.networks = [network('g', OLD)];
    engine.volumes = [volume('g', OLD)];
    const result = await reconciler.sweepOnce();
    assert.deepEqual(order, ['container t', 'container i', `network net-g-${OWNER}`, `volume ${groupVolumeName({ groupId: 'g', ownerId: OWNER })}`]);
    assert.deepEqual(result.removed.map((c) => [c.id, c.role]), [['t', undefined], ['i', 'infra']]);
    assert.deepEqual(result.groupResources.removed.map((r) => [r.kind, r.reason]), [['network', 'group-ended'], ['volume', 'group-ended']]);
    assert.deepEqual(removedResources.map((e) => [e.kind, e.groupId, e.ownerId]), [['network', 'g', OWNER], ['volume', 'g', OWNER]]);
    assert.deepEqual(engine.networkListFilters, [[`${LABELS.managed}=true`, `${LABELS.role}=network`]]);
    assert.deepEqual(engine.volumeListFilters, [[`${LABELS.managed}=true`, `${LABELS.role}=shared-dir`]]);
  });

  it('a group made live between the list and the removal keeps its network and volume', async () => {
    const { engine, reconciler, live } = setup();
    engine.networks = [network('g', OLD)];
    engine.listNetworks = async () => {
      live.add('g');
      return [network('g', OLD)];
    };
    const result = await reconciler.sweepOnce();
    assert.deepEqual(engine.resourceRemovals, []);
    assert.equal(result.groupResources.skippedLiveGroup, 1);
  });

  it('a network with endpoints or a volume in use is left for the next sweep, and said in the result; a failure is retried', async () => {
    const { engine, reconciler, clock, logger } = setup();
    engine.networks = [network('g', OLD)];
    engine.volumes = [volume('g', OLD), volume('h', OLD)];
    engine.resourceRemoveAnswers.set(`net-g-${OWNER}`, 'in-use');
    engine.resourceRemoveAnswers.set(groupVolumeName({ groupId: 'g', ownerId: OWNER }), 'in-use');
    engine.resourceRemoveAnswers.set(groupVolumeName({ groupId: 'h', ownerId: OWNER }), new BerthError('BERTH_ENGINE_SERVER_ERROR', 'driver failed'));
    const first = await reconciler.runScheduledSweep();
    assert.equal(first.kind, 'swept');
    const result = first.kind === 'swept' ? first.result.groupResources : undefined;
    assert.deepEqual(result?.inUse.map((r) => r.kind), ['network', 'volume']);
    assert.deepEqual(result?.failed.map((f) => [f.container.groupId, f.error.code]), [['h', 'BERTH_ENGINE_SERVER_ERROR']]);
    assert.deepEqual(result?.removed, []);
    assert.equal(logger.lines.filter((l) => l.level === 'warn').length, 1, 'the failure is logged once');
    engine.resourceRemoveAnswers.clear();
    clock.advance(MINUTE);
    const second = await reconciler.sweepOnce();
    assert.deepEqual(second.groupResources.removed.map((r) => r.groupId).sort(), ['g', 'g', 'h']);
    assert.deepEqual([engine.networks, engine.volumes], [[], []]);
  });

  it('a dry run reports the group\'s objects it would remove and removes nothing', async () => {
    const { engine, reconciler, removedResources } = setup({ dryRun: true });
    engine.listAnswers = [[infra('i', 'g', OLD)]];
    engine.networks = [network('g', OLD)];
    const result = await reconciler.sweepOnce();
    assert.deepEqual(result.wouldRemove.map((c) => [c.id, c.role]), [['i', 'infra']]);
    assert.deepEqual(result.groupResources.wouldRemove.map((r) => r.kind), ['network']);
    assert.deepEqual([engine.removals, engine.resourceRemovals, removedResources], [[], [], []]);
  });

  it('another owner\'s group: its orphaned infrastructure container goes (owner gone), then its network and volume, in one sweep', async () => {
    const { engine, reconciler } = setup({ orphans: true });
    const orphanInfra = infra('cli-infra', 'g', OLD, { owner: 'cli', labels: ownerOf(DEAD_PID), state: 'running' });
    const orphanTask = groupTask('cli-task', 'g', OLD, { owner: 'cli', labels: ownerOf(DEAD_PID) });
    const liveInfra = infra('live-infra', 'h', OLD, { owner: 'cli', labels: ownerOf(LIVE_PID) });
    // Lists: this owner's running containers (none), orphan candidates, then the groups' containers left.
    engine.listAnswers = [[], [orphanInfra, orphanTask, liveInfra], [orphanInfra, orphanTask, liveInfra]];
    engine.networks = [network('g', OLD, { owner: 'cli' }), network('h', OLD, { owner: 'cli' })];
    engine.volumes = [volume('g', OLD, { owner: 'cli' })];
    const result = await reconciler.sweepOnce();
    assert.deepEqual(engine.removals, ['cli-task', 'cli-infra'], 'the task container before the infrastructure container');
    assert.deepEqual(result.orphans.removed.map((c) => [c.id, c.role, c.groupId]), [['cli-task', undefined, 'g'], ['cli-infra', 'infra', 'g']]);
    assert.deepEqual(engine.listCalls[2]!.filter, { all: true, labels: [`${LABELS.managed}=true`, LABELS.groupId] });
    assert.deepEqual(result.groupResources.removed.map((r) => [r.kind, r.groupId, r.reason]), [['network', 'g', 'abandoned'], ['volume', 'g', 'abandoned']]);
    assert.equal(result.groupResources.skippedOccupied, 1, 'the live owner\'s group keeps its network');
  });

  it('with groups off, no network or volume is listed; infrastructure containers are still judged by their group', async () => {
    const engine = new FakeReconcileEngine();
    const reconciler = new DanglingReconciler({ engine, ownerId: OWNER, trackedTaskIds: () => [], liveGroupIds: () => ['g'], options: { orphans: false, groups: false, creationGrace: 0 } });
    engine.listAnswers = [[infra('i', 'g', OLD)]];
    const result = await reconciler.sweepOnce();
    assert.deepEqual([engine.networkListFilters.length, engine.volumeListFilters.length, engine.removals.length, result.skippedLiveGroup], [0, 0, 0, 1]);
  });
});
