/**
 * Groups' objects and the garbage collectors, against the real engine: a group's infrastructure
 * container (owning the namespace a task container joins), its shared volume and its own network,
 * made straight through the engine with berth's labels, as a group run leaves them. The reconciler
 * leaves a live group's alone and removes an ended group's (containers first); a network a
 * container not of berth's joined is never removed; prune (the library's and `berth prune` through
 * a real agent) removes orphaned group networks and volumes but never unlabelled ones or ones newer
 * than `until`; a library-owned group's infrastructure container goes once its owner process is gone.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { after, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { groupNetworkName, groupVolumeName, infraContainerName, LABELS, ROLES } from '../../src/common/labels.js';
import { ownerProcessLabels, readOwnerProcess } from '../../src/common/owner-process.js';
import { Engine } from '../../src/engine/engine.js';
import type { PruneView } from '../../src/agent/http/views.js';
import { Pruner } from '../../src/prune/pruner.js';
import type { GroupResourceRemovedEvent, OrphanedContainerRemovedEvent } from '../../src/reconcile/events.js';
import { DanglingReconciler } from '../../src/reconcile/reconciler.js';
import { createdAtUpperBoundMs } from '../../src/reconcile/decide.js';
import { FaultProxy } from '../support/fault-proxy.js';
import type { AgentEvent } from '../../src/agent/events.js';
import { agentClientOf, agentProcesses, berth, tempDirs, writeAgentConfig } from '../support/agent.js';
import { createTestContainer, pollUntil, requireEngine, startTestContainer, testRun, testEngine } from '../support/engine.js';

const engine = testEngine();
const run = testRun(engine);
const OWNER = `test-${run.id}`;

/** berth's labels of a group object of `owner`, with this run's. */
function groupLabels(groupId: string, role: string | undefined, owner = OWNER, extra: Record<string, string> = {}): Record<string, string> {
  return { [LABELS.managed]: 'true', [LABELS.ownerId]: owner, [LABELS.groupId]: groupId, ...(role === undefined ? {} : { [LABELS.role]: role }), ...run.labels, ...extra };
}

interface FakeGroup {
  groupId: string;
  infraId: string;
  taskId: string;
  taskContainerId: string;
  networkId: string;
  networkName: string;
  volumeName: string;
}

/**
 * A group as a group run leaves it: its network and volume, its infrastructure container on the
 * network, and one task container in the infrastructure container's namespace with the volume.
 */
async function makeGroup(name: string, options: { owner?: string; infraLabels?: Record<string, string>; withTask?: boolean } = {}): Promise<FakeGroup> {
  const owner = options.owner ?? OWNER;
  const groupId = `${run.id}-${name}`;
  const networkName = groupNetworkName({ groupId, ownerId: owner });
  const volumeName = groupVolumeName({ groupId, ownerId: owner });
  const { id: networkId } = await engine.createNetwork(networkName, { labels: groupLabels(groupId, ROLES.network, owner) });
  await engine.createVolume(volumeName, groupLabels(groupId, ROLES.sharedDir, owner));
  const infraId = await startTestContainer(engine, run, {
    cmd: ['sleep', '300'],
    name: infraContainerName({ groupId, ownerId: owner }),
    labels: groupLabels(groupId, ROLES.infra, owner, options.infraLabels),
    hostConfig: { NetworkMode: networkName },
  });
  const taskId = `${groupId}-main`;
  let taskContainerId = '';
  if (options.withTask ?? true) {
    taskContainerId = await startTestContainer(engine, run, {
      cmd: ['sleep', '300'],
      name: run.name(`${name}-main`),
      labels: { ...groupLabels(groupId, undefined, owner, options.infraLabels), [LABELS.taskId]: taskId, [LABELS.groupTask]: 'main' },
      hostConfig: { NetworkMode: `container:${infraId}`, Mounts: [{ Type: 'volume', Source: volumeName, Target: '/alloc' }] },
    });
  }
  return { groupId, infraId, taskId, taskContainerId, networkId, networkName, volumeName };
}

const containerExists = (id: string): Promise<boolean> => exists(() => engine.inspectContainer(id));
const networkExists = (id: string): Promise<boolean> => exists(() => engine.inspectNetwork(id));
const volumeExists = async (name: string): Promise<boolean> => (await engine.listVolumes({ labels: [run.labelFilter] })).some((v) => v.name === name);

async function exists(inspect: () => Promise<unknown>): Promise<boolean> {
  try {
    await inspect();
    return true;
  } catch (error) {
    if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return false;
    throw error;
  }
}

/**
 * Waits until this run's containers are past the second the engine's list reports them created in:
 * a container is judged created at the end of that second, so even a grace of 0 spares it until then.
 */
async function pastCreationSecond(): Promise<void> {
  const rows = await engine.listContainers({ all: true, labels: [run.labelFilter] });
  await pollUntil('the containers\' creation second to pass', () => (rows.every((row) => Date.now() >= createdAtUpperBoundMs(row)) ? true : undefined), { timeoutMs: 5000, intervalMs: 20 });
}

/** Removes this run's networks and volumes (its containers first: `run.cleanup`). */
async function cleanupResources(): Promise<void> {
  await run.cleanup();
  for (const row of await engine.listNetworks({ labels: [run.labelFilter] })) await engine.removeNetwork(row.id);
  for (const row of await engine.listVolumes({ labels: [run.labelFilter] })) await engine.removeVolume(row.name);
}

describe('groups\' objects and the reconciler and prune', { skip: await requireEngine() }, () => {
  const children: ChildProcess[] = [];
  const agents = agentProcesses();
  const dirs = tempDirs();

  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    await agents.killAll();
    await cleanupResources();
    await dirs.removeAll();
  });

  test('the reconciler leaves a live group\'s infrastructure container, network and volume; once the group has ended it removes all three, the containers first', async () => {
    const group = await makeGroup('lifecycle');
    const live = new Set([group.groupId]);
    const tracked = new Set([group.taskId]);
    const proxy = await FaultProxy.start();
    try {
      const reconciler = new DanglingReconciler({
        engine: new Engine({ socketPath: proxy.socketPath }),
        ownerId: OWNER,
        trackedTaskIds: () => tracked,
        liveGroupIds: () => live,
        labels: [run.labelFilter],
        // No grace: the owner id and the run label are this test's alone.
        options: { creationGrace: 0, orphans: false },
      });
      const removedResources: GroupResourceRemovedEvent[] = [];
      reconciler.on('group-resource-removed', (event) => removedResources.push(event));

      const kept = await reconciler.sweepOnce();
      assert.deepEqual([kept.removed, kept.groupResources.removed], [[], []]);
      assert.equal(kept.skippedLiveGroup, 1, 'the infrastructure container is spared for its live group');
      assert.equal(kept.skippedTracked, 1, 'the task container, for its task');
      assert.deepEqual([kept.groupResources.listed, kept.groupResources.skippedLiveGroup], [2, 2]);
      assert.ok(await containerExists(group.infraId));
      assert.ok(await networkExists(group.networkId));
      assert.ok(await volumeExists(group.volumeName));

      live.clear();
      tracked.clear();
      await pastCreationSecond();
      proxy.clearLog();
      const swept = await reconciler.sweepOnce();
      assert.deepEqual(swept.removed.map((c) => [c.id, c.role ?? 'task']), [[group.taskContainerId, 'task'], [group.infraId, 'infra']]);
      assert.deepEqual(swept.removed[1]!.groupId, group.groupId);
      // The network and the volume are removed at once, in either order.
      const byKind = <T extends { kind: string }>(items: T[]): T[] => [...items].sort((a, b) => a.kind.localeCompare(b.kind));
      assert.deepEqual(byKind(swept.groupResources.removed).map((r) => [r.kind, r.name, r.reason]), [
        ['network', group.networkName, 'group-ended'],
        ['volume', group.volumeName, 'group-ended'],
      ]);
      assert.deepEqual(byKind(removedResources).map((e) => [e.kind, e.groupId]), [['network', group.groupId], ['volume', group.groupId]]);
      // The order the engine saw: both containers, then the network and the volume.
      const deletes = proxy.requests.filter((r) => r.method === 'DELETE').map((r) => r.path.split('/')[1]);
      assert.deepEqual([...deletes.slice(0, 2), ...deletes.slice(2).sort()], ['containers', 'containers', 'networks', 'volumes']);
      assert.equal(await containerExists(group.infraId), false);
      assert.equal(await networkExists(group.networkId), false);
      assert.equal(await volumeExists(group.volumeName), false);
    } finally {
      await proxy.close();
    }
  });

  test('a group network still used by a container not of berth\'s is never removed: it is left for the next sweep, and said', async () => {
    const groupId = `${run.id}-shared-net`;
    const networkName = groupNetworkName({ groupId, ownerId: OWNER });
    const { id: networkId } = await engine.createNetwork(networkName, { labels: groupLabels(groupId, ROLES.network) });
    // Someone's own container (the run's label only, none of berth's) joined the group's network.
    const stranger = await startTestContainer(engine, run, { cmd: ['sleep', '300'], name: run.name('stranger'), hostConfig: { NetworkMode: networkName } });
    const reconciler = new DanglingReconciler({ engine, ownerId: OWNER, trackedTaskIds: () => [], labels: [run.labelFilter], options: { creationGrace: 0, orphans: false } });
    const first = await reconciler.sweepOnce();
    assert.deepEqual(first.groupResources.inUse.map((r) => [r.kind, r.id]), [['network', networkId]]);
    assert.deepEqual([first.groupResources.removed, first.groupResources.failed], [[], []]);
    assert.ok(await networkExists(networkId));
    assert.ok(await containerExists(stranger), 'the stranger\'s container is never touched');
    await engine.removeContainer(stranger);
    const second = await reconciler.sweepOnce();
    assert.deepEqual(second.groupResources.removed.map((r) => r.id), [networkId]);
  });

  test('prune removes an ended group\'s network and volume, and leaves unlabelled ones and ones newer than until', async () => {
    const make = async (name: string, labelled: boolean): Promise<{ networkId: string; volume: string }> => {
      const groupId = `${run.id}-${name}`;
      const labels = (role: string) => (labelled ? groupLabels(groupId, role) : { ...run.labels });
      const network = await engine.createNetwork(groupNetworkName({ groupId, ownerId: OWNER }), { labels: labels(ROLES.network) });
      const volume = await engine.createVolume(groupVolumeName({ groupId, ownerId: OWNER }), labels(ROLES.sharedDir));
      return { networkId: network.id, volume: volume.name };
    };
    const old = await make('prune-old', true);
    const unlabelled = await make('prune-unlabelled', false);
    // A volume's creation time is in whole seconds: the cut-off and the newer objects are in later seconds.
    const nextSecond = async (): Promise<number> => {
      const second = Math.floor(Date.now() / 1000);
      return pollUntil('the next second', () => (Math.floor(Date.now() / 1000) > second ? Date.now() : undefined), { timeoutMs: 5000, intervalMs: 20 });
    };
    const cutMs = await nextSecond();
    await nextSecond();
    const recent = await make('prune-recent', true);
    const pruner = new Pruner({ engine, ownerId: OWNER, isTaskLive: () => false, isGroupLive: () => false, options: { orphans: false } });
    const filters = [`label=${run.labelFilter}`, `until=${new Date(cutMs).toISOString()}`];
    const dry = await pruner.prune({ kinds: ['networks', 'volumes'], filters, dryRun: true });
    assert.deepEqual([dry.networks.ids, dry.volumes.ids], [[old.networkId], [old.volume]]);
    assert.ok(await networkExists(old.networkId), 'a dry run removes nothing');

    const report = await pruner.prune({ kinds: ['networks', 'volumes'], filters });
    assert.deepEqual([report.networks.ids, report.volumes.ids], [[old.networkId], [old.volume]]);
    assert.deepEqual(report.networks.names, [groupNetworkName({ groupId: `${run.id}-prune-old`, ownerId: OWNER })]);
    assert.equal(await networkExists(old.networkId), false);
    assert.equal(await volumeExists(old.volume), false);
    for (const kept of [unlabelled, recent]) {
      assert.ok(await networkExists(kept.networkId));
      assert.ok(await volumeExists(kept.volume));
    }
    // Without until, the newer labelled ones go too; never the unlabelled ones.
    const rest = await pruner.prune({ kinds: ['networks', 'volumes'], filters: [`label=${run.labelFilter}`] });
    assert.deepEqual([rest.networks.ids, rest.volumes.ids], [[recent.networkId], [recent.volume]]);
    assert.ok(await networkExists(unlabelled.networkId));
    assert.ok(await volumeExists(unlabelled.volume));
  });

  test('a library-owned group\'s infrastructure container goes once its owner process is gone, and then its network and volume', async () => {
    // The owner: a short-lived process, as a library driver in a job or a script.
    const owner = spawn('sleep', ['300'], { stdio: 'ignore' });
    children.push(owner);
    const exited = once(owner, 'exit');
    const ownerProcess = await pollUntil('the owner process to show in /proc', () => readOwnerProcess(undefined, owner.pid!), { timeoutMs: 5000, intervalMs: 20 });
    const libOwner = `lib-${run.id}`;
    const group = await makeGroup('library', { owner: libOwner, infraLabels: ownerProcessLabels(ownerProcess), withTask: false });
    const orphansRemoved: OrphanedContainerRemovedEvent[] = [];
    const reconciler = new DanglingReconciler({
      engine,
      // Another owner (an agent, say): the library's group is not its own, and is judged by its owner process.
      ownerId: OWNER,
      trackedTaskIds: () => [],
      labels: [run.labelFilter],
      options: { creationGrace: 0, orphanGrace: 0 },
    });
    reconciler.on('orphan-removed', (event) => orphansRemoved.push(event));

    const alive = await reconciler.sweepOnce();
    assert.equal(alive.orphans.skippedLiveOwner, 1, 'its owner runs: the infrastructure container stays');
    assert.equal(alive.groupResources.skippedOccupied, 2, 'the network and volume wait for the group\'s containers');
    assert.ok(await containerExists(group.infraId));

    owner.kill('SIGKILL');
    await exited;
    await pastCreationSecond();
    const gone = await reconciler.sweepOnce();
    assert.deepEqual(gone.orphans.removed.map((c) => [c.id, c.role, c.groupId, c.ownerId, c.reason]), [[group.infraId, 'infra', group.groupId, libOwner, 'exited']]);
    assert.deepEqual(orphansRemoved.map((e) => e.id), [group.infraId]);
    assert.deepEqual(gone.groupResources.removed.map((r) => [r.kind, r.ownerId, r.reason]).sort(), [['network', libOwner, 'abandoned'], ['volume', libOwner, 'abandoned']]);
    assert.equal(await containerExists(group.infraId), false);
    assert.equal(await networkExists(group.networkId), false);
    assert.equal(await volumeExists(group.volumeName), false);
  });

  test('berth prune through the agent removes another owner\'s group network and volume with no container left, and keeps the unlabelled', async () => {
    const dataDir = await dirs.make('berth-grp-');
    // The reconciler is off, so that only the prune removes; its orphan pass uses reconcile.orphanGrace.
    const config = await writeAgentConfig(dataDir, 'reconcile: { enabled: false, orphanGrace: 1s }\n');
    await agents.start(dataDir, ['--config', config]);
    const libOwner = `lib-${run.id}-gone`;
    const groupId = `${run.id}-agent-prune`;
    const network = await engine.createNetwork(groupNetworkName({ groupId, ownerId: libOwner }), { labels: groupLabels(groupId, ROLES.network, libOwner) });
    const volume = await engine.createVolume(groupVolumeName({ groupId, ownerId: libOwner }), groupLabels(groupId, ROLES.sharedDir, libOwner));
    const plain = await engine.createVolume(`berth-test-${run.id}-plain`, { ...run.labels });
    await createTestContainer(engine, run, { cmd: ['true'], name: run.name('unrelated') });
    const prune = async (): Promise<PruneView> => {
      const result = await berth(dataDir, ['prune', '--json', '--filter', `label=${run.labelFilter}`]);
      assert.equal(result.code, 0, result.stderr);
      return JSON.parse(result.stdout) as PruneView;
    };
    // The network was made a moment before the volume: one prune may pass its grace and not yet the volume's.
    const pruned = { networkIds: [] as string[], networkNames: [] as string[], volumeNames: [] as string[] };
    await pollUntil(
      'the group\'s network and volume to be past the orphan grace and pruned',
      async () => {
        const view = await prune();
        pruned.networkIds.push(...view.networks.ids);
        pruned.networkNames.push(...(view.networks.names ?? []));
        pruned.volumeNames.push(...(view.volumes.names ?? []));
        return pruned.networkIds.length > 0 && pruned.volumeNames.length > 0 ? true : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 300 },
    );
    assert.deepEqual(pruned.networkIds, [network.id]);
    assert.deepEqual(pruned.networkNames, [groupNetworkName({ groupId, ownerId: libOwner })]);
    assert.deepEqual(pruned.volumeNames, [volume.name]);
    assert.equal(await networkExists(network.id), false);
    assert.ok(await volumeExists(plain.name), 'a volume without berth\'s label is never pruned');
    const human = await berth(dataDir, ['prune', '--dry-run', '--filter', `label=${run.labelFilter}`]);
    assert.equal(human.code, 0, human.stderr);
    assert.doesNotMatch(human.stdout, /plain/);
  });

  test('the agent\'s reconciler announces the removal of a group\'s infrastructure container, network and volume, and counts them by role', async () => {
    const dataDir = await dirs.make('berth-grp-');
    const agentId = `t-${run.id}`;
    // This agent runs no group (none is live): a group labelled with its id is an ended one.
    const config = await writeAgentConfig(dataDir, `agentId: ${agentId}\nreconcile: { period: 1s, creationGrace: 1s }\n`);
    const agent = await agents.start(dataDir, ['--config', config]);
    const client = await agentClientOf(agent);
    const deadline = AbortSignal.timeout(60_000);
    const subscription = await client.events({ signal: deadline });
    try {
      const group = await makeGroup('agent', { owner: agentId });
      const seen: AgentEvent[] = [];
      // The task container may be past its creation grace a sweep later than the infrastructure container.
      const wanted = (): boolean =>
        seen.some((e) => e.type === 'container.reconciled' && e.containerId === group.taskContainerId) &&
        seen.some((e) => e.type === 'container.reconciled' && e.role === 'infra') &&
        seen.some((e) => e.type === 'network.reconciled') &&
        seen.some((e) => e.type === 'volume.reconciled');
      for await (const event of subscription) {
        if ('groupId' in event && event.groupId === group.groupId) seen.push(event);
        if (wanted()) break;
      }
      const infraEvent = seen.find((e) => e.type === 'container.reconciled' && e.role === 'infra');
      assert.deepEqual(infraEvent?.type === 'container.reconciled' && [infraEvent.containerId, infraEvent.reason, infraEvent.dryRun], [group.infraId, 'dangling', false]);
      const network = seen.find((e) => e.type === 'network.reconciled');
      assert.deepEqual(network?.type === 'network.reconciled' && [network.networkId, network.network, network.ownerId, network.reason], [group.networkId, group.networkName, agentId, 'group-ended']);
      const volume = seen.find((e) => e.type === 'volume.reconciled');
      assert.deepEqual(volume?.type === 'volume.reconciled' && [volume.volume, volume.reason], [group.volumeName, 'group-ended']);
      const taskEvent = seen.find((e) => e.type === 'container.reconciled' && e.containerId === group.taskContainerId);
      assert.ok(taskEvent, 'the group\'s untracked task container went too, as a task container');
      const metrics = await client.metrics();
      for (const role of ['infra', 'network', 'shared-dir']) assert.match(metrics, new RegExp(`^berth_reconciler_group_removals_total\\{role="${role}"\\} 1$`, 'm'));
      assert.equal(await containerExists(group.infraId), false);
      assert.equal(await networkExists(group.networkId), false);
      assert.equal(await volumeExists(group.volumeName), false);
    } finally {
      subscription.close();
      client.close();
    }
  });
});
