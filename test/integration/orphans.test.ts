/**
 * No orphans from the CLI: a `berth run` killed with SIGKILL leaves its container running, and both
 * the reconciler and `berth prune` remove it once the grace period has passed, while a live run's
 * container is left alone. Real CLI processes, a real agent process, the real engine and /proc.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { after, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { LABELS } from '../../src/common/labels.js';
import { readHostIdentity } from '../../src/common/owner-process.js';
import type { PruneView } from '../../src/agent/http/views.js';
import { createdAtUpperBoundMs } from '../../src/reconcile/decide.js';
import type { OrphanedContainerRemovedEvent } from '../../src/reconcile/events.js';
import { DanglingReconciler } from '../../src/reconcile/reconciler.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { agentProcesses, BERTH_CLI, berth, cleanEnv, tempDirs, writeAgentConfig } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

const engine = testEngine();
const run = testRun(engine);
const GRACE_MS = 2000;
const OWNER_PROCESS_KEYS = [LABELS.ownerHost, LABELS.ownerBootId, LABELS.ownerPidNamespace, LABELS.ownerPid, LABELS.ownerStartTime];

interface BerthRun {
  readonly child: ChildProcess;
  readonly containerId: string;
  readonly exited: Promise<unknown>;
}

const runs: BerthRun[] = [];

/** Starts `berth run … sleep 300` as a user would, and resolves once its container runs. */
async function startRun(name: string): Promise<BerthRun> {
  const taskId = `${run.id}-${name}`;
  const child = spawn(process.execPath, [...BERTH_CLI, 'run', '-l', run.labelFilter, '--name', taskId, '--stop-timeout', '1', TEST_IMAGE, 'sleep', '300'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: cleanEnv(),
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let exitCode: number | null | undefined;
  const exited = once(child, 'exit').then(([code]) => (exitCode = code as number | null));
  const started: BerthRun = { child, exited, containerId: '' };
  runs.push(started);
  const containerId = await pollUntil(
    `the container of berth run ${name} to run`,
    async () => {
      if (exitCode !== undefined) throw new Error(`berth run exited with ${exitCode}: ${stderr}`);
      const found = await engine.listContainers({ labels: [`${LABELS.taskId}=${taskId}`], status: ['running'] });
      return found[0]?.id;
    },
    { timeoutMs: 60_000, intervalMs: 100 },
  );
  return Object.assign(started, { containerId });
}

/** SIGKILL: the run gets no chance to clean up. Resolves once the process is gone (and reaped). */
async function kill(target: BerthRun): Promise<void> {
  target.child.kill('SIGKILL');
  await target.exited;
}

/** Waits, by the engine's own creation time, until the container is past the grace period. */
async function pastGrace(containerId: string): Promise<void> {
  const [row] = await engine.listContainers({ all: true, labels: [run.labelFilter, `${LABELS.managed}=true`] }).then((rows) => rows.filter((r) => r.id === containerId));
  assert.ok(row, `container ${containerId} is listed`);
  await pollUntil('the container to be past the grace period', () => (Date.now() - createdAtUpperBoundMs(row) >= GRACE_MS ? true : undefined), { timeoutMs: 15_000, intervalMs: 100 });
}

async function isGone(containerId: string): Promise<boolean> {
  return engine.inspectContainer(containerId).then(
    () => false,
    (error: unknown) => {
      if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return true;
      throw error;
    },
  );
}

describe('no orphans from berth run', { skip: await requireEngine() }, () => {
  const agents = agentProcesses();
  const dirs = tempDirs();

  after(async () => {
    await Promise.all(runs.map((r) => kill(r)));
    await agents.killAll();
    await run.cleanup();
    await dirs.removeAll();
  });

  test('a berth run labels its container with its own process: host, boot, pid namespace, pid and start time', async () => {
    const live = await startRun('labels');
    const { labels } = await engine.inspectContainer(live.containerId);
    const host = readHostIdentity()!;
    assert.equal(labels[LABELS.ownerId], 'cli');
    assert.equal(labels[LABELS.ownerPid], String(live.child.pid));
    assert.equal(labels[LABELS.ownerHost], host.hostId);
    assert.equal(labels[LABELS.ownerBootId], host.bootId);
    assert.equal(labels[LABELS.ownerPidNamespace], host.pidNamespace);
    assert.match(labels[LABELS.ownerStartTime] ?? '', /^\d+$/);
    await kill(live);
    await engine.removeContainer(live.containerId);
  });

  test('a library driver labels its containers with its process by default, and not with ownerProcess: none', async () => {
    const spec = { image: TEST_IMAGE, command: ['sleep', '300'], labels: { ...run.labels } };
    const own = await new TaskDriver({ engine, ownerId: `test-${run.id}` }).start(spec, { taskId: `${run.id}-lib-self` });
    const durable = await new TaskDriver({ engine, ownerId: `test-${run.id}`, ownerProcess: 'none' }).start(spec, { taskId: `${run.id}-lib-none` });
    try {
      const ownLabels = (await engine.inspectContainer(own.containerId)).labels;
      assert.equal(ownLabels[LABELS.ownerPid], String(process.pid));
      assert.equal(ownLabels[LABELS.ownerHost], readHostIdentity()!.hostId);
      const durableLabels = (await engine.inspectContainer(durable.containerId)).labels;
      for (const key of OWNER_PROCESS_KEYS) assert.equal(durableLabels[key], undefined, key);
    } finally {
      await Promise.all([own.destroy(), durable.destroy()]);
    }
  });

  test('the reconciler removes the container of a berth run killed with SIGKILL, and leaves a live run\'s alone', async () => {
    const [killed, live] = await Promise.all([startRun('reconcile-killed'), startRun('reconcile-live')]);
    const removed: OrphanedContainerRemovedEvent[] = [];
    const reconciler = new DanglingReconciler({
      engine,
      ownerId: `test-${run.id}`,
      trackedContainerIds: () => [],
      // Only this test's containers: the engine is shared, and other runs' orphans are not this test's to remove.
      labels: [run.labelFilter],
      options: { creationGrace: GRACE_MS },
    });
    reconciler.on('orphan-removed', (event) => removed.push(event));
    await pastGrace(live.containerId);
    const before = await reconciler.sweepOnce();
    assert.deepEqual(before.orphans.removed, [], 'both owners run: nothing is an orphan');
    assert.equal(before.orphans.skippedLiveOwner, 2);

    await kill(killed);
    assert.equal((await engine.inspectContainer(killed.containerId)).running, true, 'SIGKILL left the task running');
    await pastGrace(killed.containerId);
    const sweep = await reconciler.sweepOnce();
    assert.deepEqual(sweep.orphans.removed.map((c) => c.id), [killed.containerId]);
    assert.deepEqual(
      removed.map((e) => [e.id, e.ownerId, e.ownerPid, e.reason]),
      [[killed.containerId, 'cli', killed.child.pid, 'exited']],
    );
    assert.ok(await isGone(killed.containerId));
    assert.equal((await engine.inspectContainer(live.containerId)).running, true, 'the live run\'s container still runs');
    assert.equal(sweep.orphans.skippedLiveOwner, 1);
    await kill(live);
    await engine.removeContainer(live.containerId);
  });

  test('berth prune removes the container of a berth run killed with SIGKILL, and keeps a live run\'s', async () => {
    const dataDir = await dirs.make('berth-orph-');
    // The reconciler is off, so that only the prune removes; its orphan pass uses reconcile.orphanGrace.
    const config = await writeAgentConfig(dataDir, 'reconcile: { enabled: false, orphanGrace: 2s }\n');
    await agents.start(dataDir, ['--config', config]);
    const [killed, live] = await Promise.all([startRun('prune-killed'), startRun('prune-live')]);
    await kill(killed);
    await Promise.all([pastGrace(killed.containerId), pastGrace(live.containerId)]);

    const prune = async (...extra: string[]): Promise<PruneView> => {
      const result = await berth(dataDir, ['prune', '--json', '--filter', `label=${run.labelFilter}`, ...extra]);
      assert.equal(result.code, 0, result.stderr);
      return JSON.parse(result.stdout) as PruneView;
    };
    const dry = await prune('--dry-run');
    assert.deepEqual(dry.containers.ids, [killed.containerId]);
    assert.equal((await engine.inspectContainer(killed.containerId)).running, true, 'a dry run removes nothing');

    const report = await prune();
    assert.deepEqual(report.containers.ids, [killed.containerId]);
    assert.deepEqual(report.kept, [{ kind: 'containers', id: live.containerId, reason: 'live-owner' }]);
    assert.ok(await isGone(killed.containerId));
    assert.equal((await engine.inspectContainer(live.containerId)).running, true, 'the live run\'s container still runs');

    // Its owner gone, the live run's container goes too: what protected it was its owner, nothing else.
    await kill(live);
    assert.deepEqual((await prune()).containers.ids, [live.containerId]);

    // The agent's own containers carry no owner process: they outlive the agent's process, which recovers them.
    const submitted = await berth(dataDir, ['submit', '-l', run.labelFilter, '--stop-timeout', '1', TEST_IMAGE, 'sleep', '300']);
    assert.equal(submitted.code, 0, submitted.stderr);
    const taskId = submitted.stdout.trim();
    const agentContainer = await pollUntil(
      'the agent\'s task to run',
      async () => (await engine.listContainers({ labels: [`${LABELS.taskId}=${taskId}`], status: ['running'] }))[0],
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    assert.notEqual(agentContainer.labels[LABELS.ownerId], 'cli');
    for (const key of OWNER_PROCESS_KEYS) assert.equal(agentContainer.labels[key], undefined, key);
    assert.equal((await berth(dataDir, ['stop', taskId])).code, 0);
  });
});
