import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isBerthError } from '../../../src/common/errors.js';
import { LABELS } from '../../../src/common/labels.js';
import { createdAtUpperBoundMs, decideDangling } from '../../../src/reconcile/decide.js';
import type { ScheduledSweepOutcome } from '../../../src/reconcile/events.js';
import { resolveDanglingReconcilerOptions } from '../../../src/reconcile/options.js';
import { DanglingReconciler, type DanglingReconcilerInit } from '../../../src/reconcile/reconciler.js';
import { ManualClock, settle, until } from '../../support/time.js';
import { berthContainer, CLOCK_START_MS, FakeReconcileEngine, OWNER, recordingLogger, unavailable } from './fakes.js';

const SECOND = 1000;
const MINUTE = 60 * SECOND;

function setup(init: Partial<DanglingReconcilerInit> = {}) {
  const engine = new FakeReconcileEngine();
  const clock = new ManualClock(CLOCK_START_MS);
  const logger = recordingLogger();
  const tracked = new Set<string>();
  const outcomes: ScheduledSweepOutcome[] = [];
  const removedEvents: string[] = [];
  const reconciler = new DanglingReconciler({
    engine,
    ownerId: OWNER,
    trackedContainerIds: () => tracked,
    clock,
    logger,
    ...init,
    // Orphans have tests of their own (orphans.test.ts): here a sweep is the dangling pass alone.
    options: { period: '5m', creationGrace: '2m', orphans: false, ...(init.options ?? {}) },
  });
  reconciler.on('sweep', (outcome) => outcomes.push(outcome));
  reconciler.on('removed', (event) => removedEvents.push(event.id));
  return { engine, clock, logger, tracked, outcomes, removedEvents, reconciler };
}

describe('reconciler options', () => {
  it('defaults to a 5 minute period and grace, enabled, not a dry run, removing orphans after the same grace, and groups\' networks and volumes', () => {
    assert.deepEqual(resolveDanglingReconcilerOptions(), {
      enabled: true,
      periodMs: 300_000,
      creationGraceMs: 300_000,
      dryRun: false,
      orphans: true,
      orphanGraceMs: 300_000,
      groups: true,
      removeConcurrency: 4,
    });
  });

  it('takes the orphan grace from the creation grace unless it is given', () => {
    assert.equal(resolveDanglingReconcilerOptions({ creationGrace: '10s' }).orphanGraceMs, 10_000);
    assert.equal(resolveDanglingReconcilerOptions({ creationGrace: '10s', orphanGrace: 0 }).orphanGraceMs, 0);
    assert.throws(() => resolveDanglingReconcilerOptions({ orphanGrace: 'soon' }), /orphanGrace: must be a duration/);
  });

  it('parses "5m"-style durations once', () => {
    const options = resolveDanglingReconcilerOptions({ period: '1m30s', creationGrace: '10s', dryRun: true, enabled: false });
    assert.equal(options.periodMs, 90_000);
    assert.equal(options.creationGraceMs, 10_000);
    assert.equal(options.dryRun, true);
    assert.equal(options.enabled, false);
    assert.ok(Object.isFrozen(options));
  });

  it('names every field at fault, under the prefix, with unknown keys refused', () => {
    assert.throws(
      () => resolveDanglingReconcilerOptions({ period: 'soon', creationGrace: -1, colour: 'red' } as never, 'reconcile.'),
      (error: unknown) => {
        assert.ok(isBerthError(error, 'BERTH_VALIDATION'));
        const fields = (error as unknown as { issues: Array<{ field: string }> }).issues.map((i) => i.field).sort();
        assert.deepEqual(fields, ['reconcile.colour', 'reconcile.creationGrace', 'reconcile.period']);
        return true;
      },
    );
  });

  it('refuses a period below the minimum', () => {
    assert.throws(() => resolveDanglingReconcilerOptions({ period: '10ms' }), /period: must be at least 100ms/);
  });

  it('refuses a reconciler with no source of tracked containers', () => {
    assert.throws(() => new DanglingReconciler({ engine: new FakeReconcileEngine(), ownerId: OWNER }), /trackedContainerIds: one of trackedContainerIds and trackedTaskIds is required/);
  });
});

describe('reconciler decision', () => {
  const now = 1_700_000_000_000;

  it('judges creation by the end of the listed second, so the grace holds in full', () => {
    const container = berthContainer('a', now - 1500);
    assert.equal(createdAtUpperBoundMs(container), Math.floor((now - 1500) / 1000) * 1000 + 999);
  });

  it('spares tracked containers (full id, short id, task id) and young ones; the rest are dangling', () => {
    const old = now - 10 * MINUTE;
    const candidates = [
      berthContainer('a'.repeat(64), old),
      berthContainer('b'.repeat(64), old),
      berthContainer('c'.repeat(64), old, { taskId: 'live-task' }),
      berthContainer('d'.repeat(64), now - 30 * SECOND),
      berthContainer('e'.repeat(64), old),
    ];
    const decision = decideDangling(candidates, { containerIds: new Set(['a'.repeat(64), 'b'.repeat(12)]), taskIds: new Set(['live-task']) }, now, 2 * MINUTE);
    assert.deepEqual(decision.dangling.map((d) => d.id), ['e'.repeat(64)]);
    assert.equal(decision.skippedTracked, 3);
    assert.equal(decision.skippedGrace, 1);
    assert.equal(decision.dangling[0]!.taskId, `task-${'e'.repeat(64)}`);
  });

  it('counts a tracked container as tracked even inside its grace period', () => {
    const decision = decideDangling([berthContainer('young', now)], { containerIds: new Set(['young']), taskIds: new Set() }, now, MINUTE);
    assert.deepEqual([decision.skippedTracked, decision.skippedGrace], [1, 0]);
  });
});

describe('DanglingReconciler.sweepOnce', () => {
  it('lists once, filtered engine-side by berth labels, this owner and running, and removes only the dangling', async () => {
    const { engine, clock, tracked, reconciler, removedEvents } = setup();
    const old = clock.now() - 10 * MINUTE;
    engine.listAnswers = [[berthContainer('dangling', old), berthContainer('tracked', old), berthContainer('young', clock.now() - 5 * SECOND)]];
    tracked.add('tracked');
    const result = await reconciler.sweepOnce();
    assert.equal(engine.listCalls.length, 1);
    assert.deepEqual(engine.listCalls[0]!.filter, { all: false, labels: [`${LABELS.managed}=true`, `${LABELS.ownerId}=${OWNER}`], status: ['running'] });
    assert.deepEqual(engine.removals, ['dangling']);
    assert.deepEqual(result.removed.map((c) => c.id), ['dangling']);
    assert.deepEqual([result.skippedTracked, result.skippedGrace, result.listed, result.wouldRemove.length], [1, 1, 3, 0]);
    assert.deepEqual(removedEvents, ['dangling']);
  });

  it('in a dry run reports what it would remove and removes nothing', async () => {
    const { engine, clock, reconciler, removedEvents } = setup({ options: { dryRun: true } });
    engine.listAnswers = [[berthContainer('dangling', clock.now() - 10 * MINUTE)]];
    const result = await reconciler.sweepOnce();
    assert.deepEqual(engine.removals, []);
    assert.deepEqual(result.wouldRemove.map((c) => c.id), ['dangling']);
    assert.deepEqual(result.removed, []);
    assert.deepEqual(removedEvents, []);
    assert.equal(result.dryRun, true);
  });

  it('asks again whether a container is tracked just before removing it', async () => {
    const engine = new FakeReconcileEngine();
    const clock = new ManualClock(CLOCK_START_MS);
    engine.listAnswers = [[berthContainer('re-attached', clock.now() - 10 * MINUTE)]];
    let calls = 0;
    const reconciler = new DanglingReconciler({
      engine,
      ownerId: OWNER,
      clock,
      // Untracked at the list, tracked by the time of the removal: recovery re-attached it meanwhile.
      trackedContainerIds: () => (++calls === 1 ? [] : ['re-attached']),
    });
    const result = await reconciler.sweepOnce();
    assert.deepEqual(engine.removals, []);
    assert.equal(result.skippedTracked, 1);
  });

  it('goes on after a failed removal, reports it, and counts a container already gone', async () => {
    const { engine, clock, reconciler } = setup();
    const old = clock.now() - 10 * MINUTE;
    engine.listAnswers = [[berthContainer('fails', old), berthContainer('gone', old), berthContainer('ok', old)]];
    engine.removeAnswers.set('fails', unavailable());
    engine.removeAnswers.set('gone', 'absent');
    const result = await reconciler.sweepOnce();
    assert.deepEqual(result.removed.map((c) => c.id), ['ok']);
    assert.deepEqual(result.failed.map((f) => [f.container.id, f.error.code]), [['fails', 'BERTH_ENGINE_UNAVAILABLE']]);
    assert.equal(result.alreadyGone, 1);
  });

  it('rejects with the engine error when the list fails', async () => {
    const { engine, reconciler } = setup();
    engine.listAnswers = [unavailable()];
    await assert.rejects(reconciler.sweepOnce(), (error: unknown) => isBerthError(error, 'BERTH_ENGINE_UNAVAILABLE'));
  });

  it('tracks by task id when given live task ids', async () => {
    const engine = new FakeReconcileEngine();
    const clock = new ManualClock(CLOCK_START_MS);
    const old = clock.now() - 10 * MINUTE;
    engine.listAnswers = [[berthContainer('x', old, { taskId: 'live' }), berthContainer('y', old, { taskId: 'ended' })]];
    const reconciler = new DanglingReconciler({ engine, ownerId: OWNER, clock, trackedTaskIds: () => ['live'] });
    const result = await reconciler.sweepOnce();
    assert.deepEqual(result.removed.map((c) => c.id), ['y']);
  });
});

describe('DanglingReconciler schedule', () => {
  it('waits max(period, grace) before the first sweep, then a period after each', async () => {
    const { engine, clock, reconciler, outcomes } = setup({ options: { period: '1m', creationGrace: '3m' } });
    reconciler.start();
    assert.deepEqual(clock.pendingDelays, [3 * MINUTE]);
    clock.advance(3 * MINUTE - 1);
    assert.equal(engine.listCalls.length, 0);
    clock.advance(1);
    await until(() => outcomes.length === 1, 'the first sweep');
    assert.equal(engine.listCalls.length, 1);
    assert.deepEqual(clock.pendingDelays, [MINUTE]);
    clock.advance(MINUTE);
    await until(() => outcomes.length === 2, 'the second sweep');
    await reconciler.stop();
    assert.deepEqual(clock.pendingDelays, []);
  });

  it('with a period longer than the grace, waits the period first', () => {
    const { clock, reconciler } = setup({ options: { period: '5m', creationGrace: '1m' } });
    reconciler.start();
    assert.deepEqual(clock.pendingDelays, [5 * MINUTE]);
    void reconciler.stop();
  });

  it('does nothing when disabled', async () => {
    const { clock, reconciler, logger } = setup({ options: { enabled: false } });
    reconciler.start();
    assert.deepEqual(clock.pendingDelays, []);
    assert.equal(reconciler.state, 'idle');
    assert.equal(logger.count('info'), 1);
    await reconciler.stop();
  });

  it('refuses to start again once stopped, enabled or not', async () => {
    const { reconciler } = setup();
    reconciler.start();
    assert.equal(reconciler.state, 'active');
    await reconciler.stop();
    assert.equal(reconciler.state, 'stopped');
    assert.throws(() => reconciler.start(), (error: unknown) => isBerthError(error, 'BERTH_INTERNAL') && error.context.state === 'stopped' && error.context.requested === 'active');
    assert.equal(reconciler.state, 'stopped');
    const disabled = setup({ options: { enabled: false } }).reconciler;
    await disabled.stop();
    assert.throws(() => disabled.start(), (error: unknown) => isBerthError(error, 'BERTH_INTERNAL'));
  });

  it('skips sweeps while the engine fails its health check, logging once, and logs the recovery once', async () => {
    const { engine, clock, reconciler, logger, outcomes } = setup({ options: { period: '1m', creationGrace: '1m' } });
    engine.pingAnswer = unavailable();
    reconciler.start();
    for (let i = 1; i <= 4; i++) {
      clock.advance(MINUTE);
      await until(() => outcomes.length === i, `sweep ${i}`);
    }
    assert.ok(outcomes.every((o) => o.kind === 'skipped'));
    assert.equal(engine.listCalls.length, 0, 'no sweep runs while the engine is unhealthy');
    assert.equal(logger.count('warn'), 1);
    engine.pingAnswer = undefined;
    for (let i = 5; i <= 7; i++) {
      clock.advance(MINUTE);
      await until(() => outcomes.length === i, `sweep ${i}`);
    }
    assert.equal(logger.count('warn'), 1);
    const recoveries = logger.lines.filter((l) => l.level === 'info' && /resumed/.test(l.message));
    assert.equal(recoveries.length, 1);
    assert.equal(recoveries[0]!.meta.sweepsMissed, 4);
    await reconciler.stop();
  });

  it('logs a failing list once and never rejects', async () => {
    const { engine, reconciler, logger } = setup();
    engine.listAnswers = [unavailable()];
    for (let i = 0; i < 3; i++) assert.equal((await reconciler.runScheduledSweep()).kind, 'failed');
    assert.equal(logger.count('warn'), 1);
  });

  it('logs a container that cannot be removed once, not every sweep', async () => {
    const { engine, clock, reconciler, logger } = setup();
    engine.listAnswers = [[berthContainer('stuck', clock.now() - 10 * MINUTE)]];
    engine.removeAnswers.set('stuck', unavailable());
    for (let i = 0; i < 3; i++) await reconciler.runScheduledSweep();
    assert.equal(engine.removals.length, 3);
    assert.equal(logger.count('warn'), 1);
  });

  it('stop() waits for the sweep under way, which starts no new removal', async () => {
    const { engine, clock, reconciler } = setup({ options: { removeConcurrency: 1 } });
    const old = clock.now() - 10 * MINUTE;
    engine.listAnswers = [[berthContainer('first', old), berthContainer('second', old)]];
    let releaseFirst!: (value: 'removed') => void;
    engine.removeAnswers.set('first', new Promise((resolve) => (releaseFirst = resolve)));
    reconciler.start();
    clock.advance(5 * MINUTE);
    await until(() => engine.removals.length === 1, 'the first removal');
    let stopped = false;
    const stopping = reconciler.stop().then(() => (stopped = true));
    await settle();
    assert.equal(stopped, false, 'stop() waits for the removal under way');
    releaseFirst('removed');
    await stopping;
    assert.deepEqual(engine.removals, ['first']);
  });

  it('implements Symbol.asyncDispose', async () => {
    const { reconciler, clock } = setup();
    reconciler.start();
    await reconciler[Symbol.asyncDispose]();
    assert.equal(reconciler.state, 'stopped');
    assert.deepEqual(clock.pendingDelays, []);
  });
});
