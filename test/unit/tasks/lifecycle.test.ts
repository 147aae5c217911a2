/**
 * What a task handle does on each event of its life, against a scripted engine: the phases it goes
 * through and reports, and what it refuses in each. (The transition table itself is not restated
 * here: a test of the table could only notice that it changed.)
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError, isBerthError } from '../../../src/common/errors.js';
import type { Logger } from '../../../src/common/logger.js';
import { isLegalTransition, Lifecycle, refusedTransition, TASK_STATES, type PhaseChange } from '../../../src/tasks/lifecycle.js';
import { ScriptedEngine, scriptedHandle, startedHandle, stoppingHandle } from './scripted-engine.js';

const refused = (operation: string, phase: string) => (error: unknown) =>
  isBerthError(error, 'BERTH_TASK_STATE') && error.message === `cannot ${operation} task t1: it is ${phase}`;

describe('a task handle through its life', () => {
  test('a handle made for a created container is born starting, and says so once', () => {
    const { handle, phases } = scriptedHandle(new ScriptedEngine());
    assert.equal(handle.phase, 'starting');
    assert.deepEqual(phases, ['undefined->starting']);
  });

  test('before its start it refuses kill, exec and pause, and has no end to wait for', async () => {
    const engine = new ScriptedEngine();
    const { handle } = scriptedHandle(engine);
    await assert.rejects(handle.kill(), refused('kill', 'starting'));
    assert.throws(() => handle.exec({ cmd: ['true'] }), refused('exec', 'starting'));
    await assert.rejects(handle.pause(), refused('pause', 'starting'));
    await assert.rejects(handle.wait(), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE') && /was never started/.test(error.message));
    await assert.rejects(handle.healthy(), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
    assert.equal(engine.count('killContainer'), 0);
  });

  test('a stop before its start asks the engine nothing and leaves it starting', async () => {
    const engine = new ScriptedEngine();
    const { handle } = scriptedHandle(engine);
    await handle.stop();
    assert.equal(handle.phase, 'starting');
    assert.equal(engine.count('stopContainer'), 0);
  });

  test('started, it is running and has a start time', async () => {
    const { handle, phases, start } = scriptedHandle(new ScriptedEngine());
    await start();
    assert.equal(handle.phase, 'running');
    assert.ok(handle.startedAt instanceof Date);
    assert.deepEqual(phases, ['undefined->starting', 'starting->running']);
  });

  test('when the task exits on its own it is exited, with its end state and end time', async () => {
    const { engine, handle, containerId, phases } = await startedHandle();
    engine.exit(containerId, 0);
    assert.deepEqual(await handle.wait(), { kind: 'success', exitCode: 0 });
    assert.equal(handle.phase, 'exited');
    assert.ok(handle.finishedAt instanceof Date);
    assert.deepEqual(phases.slice(2), ['running->exited']);
  });

  test('when its container vanishes it is lost, not exited, as the agent records it', async () => {
    const engine = new ScriptedEngine();
    const { handle, containerId, phases } = scriptedHandle(engine);
    await engine.startContainer(containerId);
    // Gone behind berth's back before its watch began: the engine's wait says no such container.
    await engine.removeContainer(containerId);
    handle.markStarted();
    assert.equal((await handle.wait()).kind, 'lost');
    assert.equal(handle.phase, 'lost');
    assert.deepEqual(phases, ['undefined->starting', 'starting->running', 'running->lost']);
  });

  test('once exited it refuses kill and exec, and a stop asks the engine nothing', async () => {
    const { engine, handle, containerId } = await startedHandle();
    engine.exit(containerId, 1);
    await handle.wait();
    await assert.rejects(handle.kill(), refused('kill', 'exited'));
    assert.throws(() => handle.exec({ cmd: ['true'] }), refused('exec', 'exited'));
    await handle.stop();
    assert.equal(engine.count('stopContainer'), 0);
    assert.equal(engine.count('killContainer'), 0);
  });

  test('a stop takes it through stopping to exited', async () => {
    const { handle, phases, stopping, stop } = await stoppingHandle();
    assert.equal(handle.phase, 'stopping');
    stop.proceed();
    await stopping;
    await handle.wait();
    assert.equal(handle.phase, 'exited');
    assert.deepEqual(phases.slice(2), ['running->stopping', 'stopping->exited']);
  });

  test('while stopping it still takes a kill', async () => {
    const { engine, handle, stopping, stop } = await stoppingHandle();
    await handle.kill();
    assert.equal(engine.count('killContainer'), 1);
    stop.proceed();
    await stopping;
  });

  test('destroyed after its end it is removed, its container removed, its owner told once', async () => {
    const { engine, handle, containerId, phases, destroyedCalls } = await startedHandle();
    engine.exit(containerId, 0);
    await handle.wait();
    await handle.destroy();
    await handle.destroy();
    assert.equal(handle.phase, 'removed');
    assert.equal(engine.statusOf(containerId), undefined);
    assert.equal(destroyedCalls(), 1);
    assert.deepEqual(phases.slice(2), ['running->exited', 'exited->removed']);
    await assert.rejects(handle.kill(), refused('kill', 'removed'));
  });

  test('destroyed before its start it goes from starting to removed, and its container is removed', async () => {
    const engine = new ScriptedEngine();
    const { handle, containerId, phases } = scriptedHandle(engine);
    await handle.destroy();
    assert.equal(handle.phase, 'removed');
    assert.equal(engine.statusOf(containerId), undefined);
    assert.deepEqual(phases, ['undefined->starting', 'starting->removed']);
  });

  test('a destroy the engine fails leaves it as it was, and a second destroy tries again', async () => {
    const engine = new ScriptedEngine();
    const { handle, containerId, destroyedCalls } = scriptedHandle(engine);
    engine.hold('removeContainer');
    const first = handle.destroy();
    (await engine.next('removeContainer')).fail(new BerthError('BERTH_ENGINE_BAD_REQUEST', 'refused'));
    await assert.rejects(first, (error: unknown) => isBerthError(error, 'BERTH_ENGINE_BAD_REQUEST'));
    assert.equal(handle.phase, 'starting');
    assert.equal(destroyedCalls(), 0);
    engine.release('removeContainer');
    await handle.destroy();
    assert.equal(handle.phase, 'removed');
    assert.equal(engine.statusOf(containerId), undefined);
  });
});

describe('the one place a task transition is checked and logged', () => {
  /** A logger that keeps its debug lines, as `meta` objects. */
  function debugLines(): { logger: Logger; lines: Array<Record<string, unknown>> } {
    const lines: Array<Record<string, unknown>> = [];
    const ignore = (): void => undefined;
    return { logger: { debug: (meta, message) => lines.push({ ...meta, message }), info: ignore, warn: ignore, error: ignore }, lines };
  }

  test('a handle is born starting, and its birth is logged and reported once', () => {
    const { logger, lines } = debugLines();
    const changes: PhaseChange[] = [];
    const lifecycle = new Lifecycle('task-9', logger, (change) => changes.push(change));
    assert.equal(lifecycle.phase, 'starting');
    assert.deepEqual(changes, [{ taskId: 'task-9', from: undefined, to: 'starting' }]);
    assert.deepEqual(lines, [{ taskId: 'task-9', from: undefined, to: 'starting', mover: 'handle', message: 'task state changed' }]);
  });

  test('refuses an illegal move with BERTH_TASK_STATE naming both states, logs and reports nothing, and keeps working', () => {
    const { logger, lines } = debugLines();
    const changes: PhaseChange[] = [];
    const lifecycle = new Lifecycle('task-9', logger, (change) => changes.push(change));
    lifecycle.moveTo('running');
    lifecycle.moveTo('exited');
    lines.length = 0;
    changes.length = 0;
    assert.throws(
      () => lifecycle.moveTo('running'),
      (error: unknown) =>
        isBerthError(error, 'BERTH_TASK_STATE') &&
        error.message === 'task task-9 cannot move from exited to running' &&
        error.context.state === 'exited' &&
        error.context.requested === 'running',
    );
    assert.equal(lifecycle.phase, 'exited');
    assert.deepEqual(changes, []);
    assert.deepEqual(lines, []);
    lifecycle.moveTo('removed');
    assert.deepEqual(changes, [{ taskId: 'task-9', from: 'exited', to: 'removed' }]);
    assert.deepEqual(lines, [{ taskId: 'task-9', from: 'exited', to: 'removed', mover: 'handle', message: 'task state changed' }]);
  });

  test('a move to the state it is in is no move: nothing is logged or reported', () => {
    const { logger, lines } = debugLines();
    const changes: PhaseChange[] = [];
    const lifecycle = new Lifecycle('t', logger, (change) => changes.push(change));
    lines.length = 0;
    changes.length = 0;
    lifecycle.moveTo('starting');
    assert.deepEqual(changes, []);
    assert.deepEqual(lines, []);
  });

  test('a handle may remove a task that has not ended (its destroy kills it); a record is refused that move', () => {
    for (const from of ['starting', 'running', 'stopping'] as const) {
      assert.equal(refusedTransition({ taskId: 't', from, to: 'removed' }, 'handle'), undefined, `a handle goes from ${from} to removed`);
      const refusal = refusedTransition({ taskId: 't', from, to: 'removed' }, 'record');
      assert.ok(isBerthError(refusal, 'BERTH_TASK_STATE'), `a record is refused ${from} -> removed`);
      assert.deepEqual(refusal.context, { taskId: 't', state: from, requested: 'removed' });
    }
    assert.equal(refusedTransition({ taskId: 't', from: 'lost', to: 'removed' }, 'record'), undefined, 'an ended task is removed');
  });

  test('nothing leaves removed, and nothing goes back to pending', () => {
    for (const state of TASK_STATES) {
      for (const mover of ['handle', 'record'] as const) {
        assert.equal(isLegalTransition('removed', state, mover), false, `removed -> ${state} (${mover})`);
        assert.equal(isLegalTransition(state, 'pending', mover), false, `${state} -> pending (${mover})`);
      }
    }
  });
});
