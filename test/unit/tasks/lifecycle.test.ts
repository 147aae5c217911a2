/**
 * What a task handle does on each event of its life, against a scripted engine: the phases it goes
 * through and reports, and what it refuses in each. (The transition table itself is not restated
 * here: a test of the table could only notice that it changed.)
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError, isBerthError } from '../../../src/common/errors.js';
import { Lifecycle, type PhaseChange } from '../../../src/tasks/lifecycle.js';
import { ScriptedEngine, scriptedHandle, startedHandle, stoppingHandle } from './scripted-engine.js';

const refused = (operation: string, phase: string) => (error: unknown) =>
  isBerthError(error, 'BERTH_TASK_STATE') && error.message === `cannot ${operation} task t1: it is ${phase}`;

describe('a task handle through its life', () => {
  test('a handle made for a created container is created, and says so once', () => {
    const { handle, phases } = scriptedHandle(new ScriptedEngine());
    assert.equal(handle.phase, 'created');
    assert.deepEqual(phases, ['creating->created']);
  });

  test('before its start it refuses kill, exec and pause, and has no end to wait for', async () => {
    const engine = new ScriptedEngine();
    const { handle } = scriptedHandle(engine);
    await assert.rejects(handle.kill(), refused('kill', 'created'));
    assert.throws(() => handle.exec({ cmd: ['true'] }), refused('exec', 'created'));
    await assert.rejects(handle.pause(), refused('pause', 'created'));
    await assert.rejects(handle.wait(), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE') && /was never started/.test(error.message));
    await assert.rejects(handle.healthy(), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
    assert.equal(engine.count('killContainer'), 0);
  });

  test('a stop before its start asks the engine nothing and leaves it created', async () => {
    const engine = new ScriptedEngine();
    const { handle } = scriptedHandle(engine);
    await handle.stop();
    assert.equal(handle.phase, 'created');
    assert.equal(engine.count('stopContainer'), 0);
  });

  test('started, it is running and has a start time', async () => {
    const { handle, phases, start } = scriptedHandle(new ScriptedEngine());
    await start();
    assert.equal(handle.phase, 'running');
    assert.ok(handle.startedAt instanceof Date);
    assert.deepEqual(phases, ['creating->created', 'created->running']);
  });

  test('when the task exits on its own it is exited, with its end state and end time', async () => {
    const { engine, handle, containerId, phases } = await startedHandle();
    engine.exit(containerId, 0);
    assert.deepEqual(await handle.wait(), { kind: 'success', exitCode: 0 });
    assert.equal(handle.phase, 'exited');
    assert.ok(handle.finishedAt instanceof Date);
    assert.deepEqual(phases.slice(2), ['running->exited']);
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

  test('destroyed after its end it is destroyed, its container removed, its owner told once', async () => {
    const { engine, handle, containerId, phases, destroyedCalls } = await startedHandle();
    engine.exit(containerId, 0);
    await handle.wait();
    await handle.destroy();
    await handle.destroy();
    assert.equal(handle.phase, 'destroyed');
    assert.equal(engine.statusOf(containerId), undefined);
    assert.equal(destroyedCalls(), 1);
    assert.deepEqual(phases.slice(2), ['running->exited', 'exited->destroyed']);
    await assert.rejects(handle.kill(), refused('kill', 'destroyed'));
  });

  test('destroyed before its start it goes from created to destroyed, and its container is removed', async () => {
    const engine = new ScriptedEngine();
    const { handle, containerId, phases } = scriptedHandle(engine);
    await handle.destroy();
    assert.equal(handle.phase, 'destroyed');
    assert.equal(engine.statusOf(containerId), undefined);
    assert.deepEqual(phases, ['creating->created', 'created->destroyed']);
  });

  test('a destroy the engine fails leaves it as it was, and a second destroy tries again', async () => {
    const engine = new ScriptedEngine();
    const { handle, containerId, destroyedCalls } = scriptedHandle(engine);
    engine.hold('removeContainer');
    const first = handle.destroy();
    (await engine.next('removeContainer')).fail(new BerthError('BERTH_ENGINE_BAD_REQUEST', 'refused'));
    await assert.rejects(first, (error: unknown) => isBerthError(error, 'BERTH_ENGINE_BAD_REQUEST'));
    assert.equal(handle.phase, 'created');
    assert.equal(destroyedCalls(), 0);
    engine.release('removeContainer');
    await handle.destroy();
    assert.equal(handle.phase, 'destroyed');
    assert.equal(engine.statusOf(containerId), undefined);
  });
});

describe('Lifecycle', () => {
  test('refuses a transition it does not allow with BERTH_TASK_STATE, reports nothing, and keeps working', () => {
    const changes: PhaseChange[] = [];
    const lifecycle = new Lifecycle('task-9', (change) => changes.push(change));
    lifecycle.moveTo('created');
    changes.length = 0;
    assert.throws(
      () => lifecycle.moveTo('stopping'),
      (error: unknown) => error instanceof BerthError && error.code === 'BERTH_TASK_STATE' && /task-9 cannot go from created to stopping/.test(error.message),
    );
    assert.equal(lifecycle.phase, 'created');
    assert.deepEqual(changes, []);
    lifecycle.moveTo('running');
    assert.deepEqual(changes, [{ taskId: 'task-9', from: 'created', to: 'running' }]);
  });

  test('treats a move to the phase it is in as a no-op that reports nothing', () => {
    const changes: PhaseChange[] = [];
    const lifecycle = new Lifecycle('t', (change) => changes.push(change));
    lifecycle.moveTo('creating');
    assert.deepEqual(changes, []);
  });
});
