import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LABELS, ROLES } from '../../../src/common/labels.js';
import type { ContainerSummary } from '../../../src/engine/types.js';
import type { DanglingContainerRemovedEvent } from '../../../src/reconcile/events.js';
import { DanglingReconciler } from '../../../src/reconcile/reconciler.js';
import { ManualClock } from '../../support/time.js';
import { CLOCK_START_MS, FakeReconcileEngine, OWNER, recordingLogger } from './fakes.js';

const MINUTE = 60_000;

/** A warm pool's container of this owner (no task id: a task takes it after its create). */
function poolContainer(id: string, createdAtMs: number, state: ContainerSummary['state'] = 'running'): ContainerSummary {
  return {
    id,
    names: [`berth-py-${id}.${OWNER}-pool.${OWNER.length + 5}`],
    image: 'busybox:latest',
    labels: { [LABELS.managed]: 'true', [LABELS.ownerId]: OWNER, [LABELS.role]: ROLES.pool, [LABELS.pool]: 'py' },
    createdAt: new Date(Math.floor(createdAtMs / 1000) * 1000),
    state,
    status: state === 'running' ? 'Up' : state === 'paused' ? 'Up (Paused)' : 'Exited (0)',
  };
}

describe('DanglingReconciler: warm pools', () => {
  it('lists the owner\'s pool containers in any state, leaves those its pools know and removes the others past the grace, naming the pool', async () => {
    const engine = new FakeReconcileEngine();
    const clock = new ManualClock(CLOCK_START_MS);
    const live = new Set(['idle', 'frozen-live']);
    const old = clock.now() - 10 * MINUTE;
    // The first list (running containers) and the second (pool containers in any state).
    engine.listAnswers = [
      [poolContainer('idle', old), poolContainer('orphan-running', old), poolContainer('young', clock.now() - 1000)],
      [poolContainer('idle', old), poolContainer('orphan-running', old), poolContainer('frozen-live', old, 'paused'), poolContainer('frozen-orphan', old, 'paused'), poolContainer('young', clock.now() - 1000)],
    ];
    const reconciler = new DanglingReconciler({
      engine,
      ownerId: OWNER,
      trackedTaskIds: () => [],
      livePoolContainerIds: () => live,
      clock,
      logger: recordingLogger(),
      options: { period: '5m', creationGrace: '2m', orphans: false },
    });
    const removed: DanglingContainerRemovedEvent[] = [];
    reconciler.on('removed', (event) => removed.push(event));
    const result = await reconciler.sweepOnce();
    assert.deepEqual(engine.listCalls[1]!.filter, { all: true, labels: [`${LABELS.managed}=true`, `${LABELS.ownerId}=${OWNER}`, `${LABELS.role}=${ROLES.pool}`] });
    assert.deepEqual([...engine.removals].sort(), ['frozen-orphan', 'orphan-running']);
    assert.deepEqual([result.skippedTracked, result.skippedGrace], [2, 1]);
    assert.ok(removed.every((event) => event.role === ROLES.pool && event.pool === 'py'), JSON.stringify(removed));
  });

  it('makes no pool list for an owner without pools', async () => {
    const engine = new FakeReconcileEngine();
    const reconciler = new DanglingReconciler({ engine, ownerId: OWNER, trackedTaskIds: () => [], clock: new ManualClock(CLOCK_START_MS), logger: recordingLogger(), options: { orphans: false } });
    await reconciler.sweepOnce();
    assert.equal(engine.listCalls.length, 1);
  });
});
