import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { LABELS } from '../../../src/common/labels.js';
import { ownerJudge, ownerProcessLabels, readHostIdentity, type OwnerProcess } from '../../../src/common/owner-process.js';
import type { ContainerSummary } from '../../../src/engine/types.js';
import type { OrphanedContainerRemovedEvent } from '../../../src/reconcile/events.js';
import { decideOrphans, ORPHAN_CANDIDATE_LABELS } from '../../../src/reconcile/orphans.js';
import { DanglingReconciler } from '../../../src/reconcile/reconciler.js';
import { ManualClock } from '../../support/time.js';
import { fakeProc } from '../../support/proc.js';
import { berthContainer, CLOCK_START_MS, FakeReconcileEngine, OWNER, recordingLogger } from './fakes.js';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const LIVE_PID = 100;
const DEAD_PID = 200;
const REUSED_PID = 300;

/** The fake host: pid 100 runs (started at 5000), pid 300 runs but started at 9000; pid 200 is gone. */
const proc = () =>
  fakeProc({
    processes: {
      [LIVE_PID]: { state: 'S', startTime: '5000' },
      [REUSED_PID]: { state: 'S', startTime: '9000' },
    },
  });

function owner(pid: number, overrides: Partial<OwnerProcess> = {}): Record<string, string> {
  return ownerProcessLabels({ ...readHostIdentity(proc())!, pid, startTime: '5000', ...overrides });
}

/** A container of a `berth run` (owner id `cli`) whose owner process is `pid`. */
function cliContainer(id: string, createdAtMs: number, ownerLabels: Record<string, string>, state: ContainerSummary['state'] = 'running'): ContainerSummary {
  return {
    id,
    names: [`berth-${id}`],
    image: 'busybox:latest',
    labels: { [LABELS.managed]: 'true', [LABELS.ownerId]: 'cli', [LABELS.taskId]: `task-${id}`, ...ownerLabels },
    createdAt: new Date(Math.floor(createdAtMs / 1000) * 1000),
    state,
    status: state === 'running' ? 'Up' : 'Exited (0)',
  };
}

describe('orphan decision', () => {
  const now = CLOCK_START_MS;
  const old = now - 10 * MINUTE;

  it('removes containers whose owner is gone (exited, pid reused, rebooted) and spares live, unjudgeable and young ones', () => {
    const candidates = [
      cliContainer('exited', old, owner(DEAD_PID), 'exited'),
      cliContainer('killed-running', old, owner(DEAD_PID)),
      cliContainer('reused', old, owner(REUSED_PID)),
      cliContainer('rebooted', old, owner(LIVE_PID, { bootId: 'an-earlier-boot' })),
      cliContainer('live', old, owner(LIVE_PID)),
      cliContainer('other-host', old, owner(DEAD_PID, { hostId: 'm0123456789abcdef0123456789abcdef' })),
      cliContainer('other-namespace', old, owner(DEAD_PID, { pidNamespace: '4026532999' })),
      cliContainer('young', now - 30 * SECOND, owner(DEAD_PID)),
    ];
    const decision = decideOrphans(candidates, ownerJudge(proc()), now, MINUTE);
    assert.deepEqual(
      decision.orphans.map((o) => [o.id, o.reason, o.state]),
      [
        ['exited', 'exited', 'exited'],
        ['killed-running', 'exited', 'running'],
        ['reused', 'pid-reused', 'running'],
        ['rebooted', 'rebooted', 'running'],
      ],
    );
    assert.deepEqual([decision.skippedLiveOwner, decision.skippedUnknownOwner, decision.skippedGrace], [1, 2, 1]);
    const first = decision.orphans[0]!;
    assert.equal(first.ownerId, 'cli');
    assert.equal(first.ownerPid, DEAD_PID);
    assert.equal(first.taskId, 'task-exited');
    assert.ok(first.ageMs >= 10 * MINUTE - SECOND);
  });

  it('judges the grace by the end of the listed second, so it holds in full', () => {
    const createdMs = now - MINUTE;
    const decision = decideOrphans([cliContainer('edge', createdMs, owner(DEAD_PID))], ownerJudge(proc()), now, MINUTE);
    // Listed as its whole second; judged as that second's last millisecond, so a minute has not quite passed.
    assert.equal(decision.skippedGrace, 1);
    assert.equal(decideOrphans([cliContainer('edge', createdMs - SECOND, owner(DEAD_PID))], ownerJudge(proc()), now, MINUTE).orphans.length, 1);
  });

  it('a container without owner-process labels is never an orphan', () => {
    const decision = decideOrphans([berthContainer('agent-owned', old)], ownerJudge(proc()), now, 0);
    assert.deepEqual([decision.orphans.length, decision.skippedUnknownOwner], [0, 1]);
  });
});

function setup(options: { dryRun?: boolean; labels?: string[] } = {}) {
  const engine = new FakeReconcileEngine();
  const clock = new ManualClock(CLOCK_START_MS);
  const logger = recordingLogger();
  const host = proc();
  const removed: OrphanedContainerRemovedEvent[] = [];
  const reconciler = new DanglingReconciler({
    engine,
    ownerId: OWNER,
    trackedContainerIds: () => [],
    ownerJudge: () => ownerJudge(host),
    clock,
    logger,
    ...(options.labels ? { labels: options.labels } : {}),
    options: { creationGrace: '2m', orphanGrace: '1m', ...(options.dryRun ? { dryRun: true } : {}) },
  });
  reconciler.on('orphan-removed', (event) => removed.push(event));
  return { engine, clock, logger, host, removed, reconciler };
}

describe('DanglingReconciler: orphans', () => {
  it('lists berth containers with an owner pid in every state, in a second engine-side filtered call, and removes those whose owner is gone', async () => {
    const { engine, clock, reconciler, removed, logger } = setup();
    const old = clock.now() - 10 * MINUTE;
    // First list: this owner's running containers (none dangling); second: orphan candidates.
    engine.listAnswers = [[], [cliContainer('orphan', old, owner(DEAD_PID), 'exited'), cliContainer('live', old, owner(LIVE_PID)), cliContainer('young', clock.now(), owner(DEAD_PID))]];
    const result = await reconciler.sweepOnce();
    assert.equal(engine.listCalls.length, 2);
    assert.deepEqual(engine.listCalls[1]!.filter, { all: true, labels: [`${LABELS.managed}=true`, LABELS.ownerPid] });
    assert.deepEqual(engine.removals, ['orphan']);
    assert.deepEqual(result.orphans.removed.map((c) => c.id), ['orphan']);
    assert.deepEqual(
      [result.orphans.listed, result.orphans.skippedLiveOwner, result.orphans.skippedUnknownOwner, result.orphans.skippedGrace],
      [3, 1, 0, 1],
    );
    assert.deepEqual(result.removed, [], 'nothing dangling');
    assert.deepEqual(removed.map((e) => [e.id, e.ownerId, e.ownerPid, e.reason]), [['orphan', 'cli', DEAD_PID, 'exited']]);
    assert.equal(logger.count('info'), 0, 'sweepOnce returns its result; only scheduled sweeps log');
  });

  it('a scheduled sweep logs each orphan it removed once, with its owner', async () => {
    const { engine, clock, reconciler, logger } = setup();
    engine.listAnswers = [[], [cliContainer('orphan', clock.now() - 10 * MINUTE, owner(DEAD_PID))]];
    const outcome = await reconciler.runScheduledSweep();
    assert.equal(outcome.kind, 'swept');
    const line = logger.lines.find((l) => l.message.startsWith('removed an orphaned container'));
    assert.ok(line);
    assert.equal(line.meta.ownerPid, DEAD_PID);
    assert.equal(line.meta.reason, 'exited');
  });

  it('narrows both lists by the scope labels', async () => {
    const { engine, reconciler } = setup({ labels: ['team=blue'] });
    await reconciler.sweepOnce();
    assert.deepEqual(engine.listCalls.map((c) => c.filter.labels), [
      [`${LABELS.managed}=true`, `${LABELS.ownerId}=${OWNER}`, 'team=blue'],
      [...ORPHAN_CANDIDATE_LABELS, 'team=blue'],
    ]);
  });

  it('a dry run reports the orphans and removes nothing', async () => {
    const { engine, clock, reconciler, removed } = setup({ dryRun: true });
    engine.listAnswers = [[], [cliContainer('orphan', clock.now() - 10 * MINUTE, owner(DEAD_PID))]];
    const result = await reconciler.sweepOnce();
    assert.deepEqual(result.orphans.wouldRemove.map((c) => c.id), ['orphan']);
    assert.deepEqual([engine.removals, removed], [[], []]);
  });

  it('a failed removal is reported, the sweep goes on, and the next sweep tries again', async () => {
    const { engine, clock, reconciler } = setup();
    const old = clock.now() - 10 * MINUTE;
    engine.listAnswers = [[], [cliContainer('stuck', old, owner(DEAD_PID)), cliContainer('gone', old, owner(DEAD_PID)), cliContainer('ok', old, owner(DEAD_PID))]];
    engine.removeAnswers.set('stuck', new BerthError('BERTH_ENGINE_SERVER_ERROR', 'driver failed'));
    engine.removeAnswers.set('gone', 'absent');
    const first = await reconciler.sweepOnce();
    assert.deepEqual(first.orphans.removed.map((c) => c.id), ['ok']);
    assert.deepEqual(first.orphans.failed.map((f) => [f.container.id, f.error.code]), [['stuck', 'BERTH_ENGINE_SERVER_ERROR']]);
    assert.equal(first.orphans.alreadyGone, 1);
    engine.removeAnswers.delete('stuck');
    engine.listAnswers = [[], [cliContainer('stuck', old, owner(DEAD_PID))]];
    assert.deepEqual((await reconciler.sweepOnce()).orphans.removed.map((c) => c.id), ['stuck']);
  });

  it('an owner seen alive in one sweep and gone in the next: its container goes in the next', async () => {
    const { engine, clock, reconciler, host } = setup();
    engine.listAnswers = [[], [cliContainer('run', clock.now() - 10 * MINUTE, owner(LIVE_PID))]];
    assert.deepEqual((await reconciler.sweepOnce()).orphans.skippedLiveOwner, 1);
    assert.deepEqual(engine.removals, []);
    host.processes.delete(LIVE_PID);
    engine.listAnswers = [[], [cliContainer('run', clock.now() - 10 * MINUTE, owner(LIVE_PID))]];
    assert.deepEqual((await reconciler.sweepOnce()).orphans.removed.map((c) => c.id), ['run']);
  });

  it('a container this owner would call dangling is removed once, as dangling', async () => {
    const { engine, clock, reconciler, removed } = setup();
    const both: ContainerSummary = { ...cliContainer('both', clock.now() - 10 * MINUTE, owner(DEAD_PID)), labels: { ...cliContainer('both', 0, owner(DEAD_PID)).labels, [LABELS.ownerId]: OWNER } };
    engine.listAnswers = [[both], [both]];
    const result = await reconciler.sweepOnce();
    assert.deepEqual(engine.removals, ['both']);
    assert.deepEqual(result.removed.map((c) => c.id), ['both']);
    assert.deepEqual([result.orphans.listed, result.orphans.removed.length, removed.length], [1, 0, 0]);
  });

  it('with orphans off, one list call and no orphan is touched', async () => {
    const engine = new FakeReconcileEngine();
    const reconciler = new DanglingReconciler({ engine, ownerId: OWNER, trackedContainerIds: () => [], ownerJudge: () => ownerJudge(proc()), options: { orphans: false, creationGrace: 0 } });
    engine.listAnswers = [[]];
    const result = await reconciler.sweepOnce();
    assert.equal(engine.listCalls.length, 1);
    assert.equal(result.orphans.listed, 0);
  });
});
