import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { systemClock } from '../../src/common/clock.js';
import { LABELS } from '../../src/common/labels.js';
import type { Logger } from '../../src/common/logger.js';
import { Engine } from '../../src/engine/engine.js';
import { createdAtUpperBoundMs } from '../../src/reconcile/decide.js';
import type { ScheduledSweepOutcome } from '../../src/reconcile/events.js';
import { DanglingReconciler } from '../../src/reconcile/reconciler.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { pollUntil, requireEngine, startTestContainer, testRun, testEngine } from '../support/engine.js';

const direct = testEngine();
const run = testRun(direct);
const OWNER = `test-${run.id}`;
const GRACE_MS = 2000;

const berthLabels = (ownerId: string, taskId: string): Record<string, string> => ({
  [LABELS.managed]: 'true',
  [LABELS.ownerId]: ownerId,
  [LABELS.taskId]: taskId,
});

/** A logger that counts its lines by level, and keeps the info messages. */
function countingLogger(): Logger & { count(level: 'debug' | 'info' | 'warn' | 'error'): number; infos: string[] } {
  const counts = { debug: 0, info: 0, warn: 0, error: 0 };
  const infos: string[] = [];
  return {
    count: (level) => counts[level],
    infos,
    debug: () => void counts.debug++,
    info: (_meta, message) => void (counts.info++, infos.push(message)),
    warn: () => void counts.warn++,
    error: () => void counts.error++,
  };
}

/** Ids of the run's containers that still exist. */
async function remaining(): Promise<Set<string>> {
  return new Set((await direct.listContainers({ all: true, labels: [run.labelFilter] })).map((c) => c.id));
}

describe('dangling-container reconciler against the real engine', { skip: await requireEngine() }, () => {
  let proxy: FaultProxy;
  const ids = { dangling: '', otherOwner: '', unlabelled: '', tracked: '', young: '' };
  // The sweeps' "now": the moment the young container was made. A loaded machine may take longer than
  // the grace between that and a sweep; a frozen clock keeps it young, and the others stay old.
  let sweepNowMs = 0;

  before(async () => {
    proxy = await FaultProxy.start();
    const sleep = ['sleep', '300'];
    // Created outside berth, straight through the engine: as a wedged engine would leave them.
    ids.dangling = await startTestContainer(direct, run, { cmd: sleep, name: run.name('dangling'), labels: berthLabels(OWNER, 'no-record') });
    ids.otherOwner = await startTestContainer(direct, run, { cmd: sleep, name: run.name('other-owner'), labels: berthLabels(`${OWNER}-other`, 'theirs') });
    ids.unlabelled = await startTestContainer(direct, run, { cmd: sleep, name: run.name('unlabelled') });
    ids.tracked = await startTestContainer(direct, run, { cmd: sleep, name: run.name('tracked'), labels: berthLabels(OWNER, 'live') });
    // Wait, by the engine's own creation times, until these are past the grace period.
    await pollUntil(
      'the first containers to be older than the creation grace',
      async () => {
        const rows = await direct.listContainers({ all: true, labels: [run.labelFilter] });
        return rows.every((row) => Date.now() - createdAtUpperBoundMs(row) >= GRACE_MS) ? true : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100 },
    );
    ids.young = await startTestContainer(direct, run, { cmd: sleep, name: run.name('young'), labels: berthLabels(OWNER, 'being-created') });
    sweepNowMs = Date.now();
  });

  after(async () => {
    await run.cleanup();
    await proxy.close();
  });

  const reconciler = (options: { dryRun?: boolean } = {}): DanglingReconciler =>
    new DanglingReconciler({
      engine: new Engine({ socketPath: proxy.socketPath }),
      ownerId: OWNER,
      trackedContainerIds: () => [ids.tracked],
      clock: { ...systemClock, now: () => sweepNowMs },
      // The dangling pass alone (orphans have test/integration/orphans.test.ts): one list per sweep, and no other run's orphan touched.
      options: { creationGrace: GRACE_MS, orphans: false, groups: false, ...options },
    });

  test('a dry run removes nothing and reports only the dangling container', async () => {
    const result = await reconciler({ dryRun: true }).sweepOnce();
    assert.deepEqual(result.wouldRemove.map((c) => c.id), [ids.dangling]);
    assert.deepEqual(result.removed, []);
    assert.equal((await remaining()).size, 5);
  });

  test('one sweep removes only the running container with this owner\'s labels and no record, in 1 list + 1 removal', async () => {
    proxy.clearLog();
    const result = await reconciler().sweepOnce();
    assert.deepEqual(result.removed.map((c) => c.id), [ids.dangling]);
    assert.equal(result.removed[0]!.taskId, 'no-record');
    assert.equal(result.skippedTracked, 1);
    assert.equal(result.skippedGrace, 1, 'the young container is inside its grace period');
    assert.equal(proxy.count('GET', /^\/containers\/json$/), 1);
    assert.equal(proxy.count('DELETE', /^\/containers\/[^/]+$/), 1);
    assert.equal(proxy.requests.length, 2, 'no inspect of any container, foreign or not');
    const left = await remaining();
    assert.equal(left.has(ids.dangling), false);
    for (const kept of [ids.otherOwner, ids.unlabelled, ids.tracked, ids.young]) assert.ok(left.has(kept), `${kept} was kept`);
  });

  test('while the engine socket is unreachable, sweeps log once and never throw; recovery is logged once', async () => {
    const logger = countingLogger();
    const outcomes: ScheduledSweepOutcome[] = [];
    const faulty = new DanglingReconciler({
      engine: new Engine({ socketPath: proxy.socketPath, readAttempts: 1 }),
      // An owner nothing carries: the sweeps that do run find nothing to remove.
      ownerId: `${OWNER}-faults`,
      trackedContainerIds: () => [],
      logger,
      // Orphans off: with no grace, this reconciler would otherwise remove any orphan on the shared engine.
      options: { period: '100ms', creationGrace: 0, orphans: false },
    });
    faulty.on('sweep', (outcome) => outcomes.push(outcome));
    proxy.refuseAll = true;
    try {
      faulty.start();
      await pollUntil('four sweeps while the engine is unreachable', () => (outcomes.length >= 4 ? true : undefined), { timeoutMs: 15_000 });
      assert.equal(outcomes.some((o) => o.kind === 'swept'), false);
      assert.equal(logger.count('warn') + logger.count('error'), 1);
      proxy.refuseAll = false;
      const before = outcomes.length;
      await pollUntil('three sweeps after recovery', () => (outcomes.slice(before).filter((o) => o.kind === 'swept').length >= 3 ? true : undefined), {
        timeoutMs: 15_000,
      });
      assert.equal(logger.count('warn') + logger.count('error'), 1);
      assert.equal(logger.infos.filter((message) => /resumed/.test(message)).length, 1);
    } finally {
      proxy.refuseAll = false;
      await faulty.stop();
    }
  });
});
