/**
 * The handle's stop intents against a scripted engine: why berth stopped a task decides its end
 * state, and races that the real engine shows only by timing (a stop that finds the task ended on
 * its own, a stop whose answer is lost) are played here step by step.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { ScriptedEngine, scriptedHandle, startedHandle, stoppingHandle } from './scripted-engine.js';

const serverError = (): BerthError => new BerthError('BERTH_ENGINE_SERVER_ERROR', 'injected fault');

describe('a task handle’s stop intents', () => {
  test('a stopped task ends as cancelled, with the exit code the stop left', async () => {
    const { engine, handle } = await startedHandle();
    await handle.stop();
    assert.deepEqual(await handle.wait(), { kind: 'cancelled', exitCode: 143 });
    assert.equal(engine.count('stopContainer'), 1);
  });

  test('a stop answered "not running" at its first ask leaves the end the task’s own: it had ended before it was asked', async () => {
    const { engine, handle, containerId, stopping, stop } = await stoppingHandle();
    engine.exit(containerId, 3);
    stop.proceed();
    await stopping;
    assert.deepEqual(await handle.wait(), { kind: 'failed', exitCode: 3 });
  });

  test('a stop whose first answer was lost and whose retry finds the task stopped still ends it as cancelled', async () => {
    const { engine, handle } = await startedHandle();
    engine.hold('stopContainer');
    const stopping = handle.stop();
    // The engine stopped the task, but berth never heard: "not running" on the retry is the first stop's doing.
    (await engine.next('stopContainer')).proceedThenFail(serverError());
    (await engine.next('stopContainer')).proceed();
    await stopping;
    assert.deepEqual(await handle.wait(), { kind: 'cancelled', exitCode: 143 });
    assert.equal(engine.count('stopContainer'), 2);
  });

  test('a run time limit that stops the task ends it as timed-out', async () => {
    const engine = new ScriptedEngine();
    const { handle, start } = scriptedHandle(engine, { image: 'img', timeout: 1 });
    engine.hold('stopContainer');
    await start();
    (await engine.next('stopContainer')).proceed();
    assert.deepEqual(await handle.wait(), { kind: 'timed-out', exitCode: 143, timeoutMs: 1 });
  });

  test('a run time limit that fires as the task ends on its own leaves the task’s own end', async () => {
    const engine = new ScriptedEngine();
    const { handle, containerId, start } = scriptedHandle(engine, { image: 'img', timeout: 1 });
    engine.hold('stopContainer');
    await start();
    const stop = await engine.next('stopContainer');
    engine.exit(containerId, 0);
    stop.proceed();
    assert.deepEqual(await handle.wait(), { kind: 'success', exitCode: 0 });
  });

  test('a stop the engine refuses for good is followed by SIGKILL, and the task still ends as cancelled', async () => {
    const { engine, handle } = await startedHandle();
    engine.hold('stopContainer');
    const stopping = handle.stop();
    (await engine.next('stopContainer')).fail(new BerthError('BERTH_ENGINE_BAD_REQUEST', 'refused'));
    await stopping;
    assert.equal(engine.count('killContainer'), 1);
    assert.deepEqual(await handle.wait(), { kind: 'cancelled', exitCode: 137 });
  });

  test('a stop cut short by the caller’s signal sends no kill and leaves the task stopping', async () => {
    const bound = new AbortController();
    const { engine, handle, stopping, stop } = await stoppingHandle({ signal: bound.signal });
    bound.abort();
    stop.fail(new BerthError('BERTH_CANCELLED', 'stop container was cancelled'));
    await stopping;
    assert.equal(engine.count('killContainer'), 0);
    assert.equal(handle.phase, 'stopping');
  });

  test('a second stop while one is under way asks the engine nothing more', async () => {
    const { engine, handle, stopping, stop } = await stoppingHandle();
    await handle.stop();
    stop.proceed();
    await stopping;
    assert.equal(engine.count('stopContainer'), 1);
    assert.deepEqual(await handle.wait(), { kind: 'cancelled', exitCode: 143 });
  });

  test('a task destroyed while running ends as cancelled', async () => {
    const { engine, handle, containerId } = await startedHandle();
    await handle.destroy();
    assert.deepEqual(await handle.wait(), { kind: 'cancelled', exitCode: 137 });
    assert.equal(engine.statusOf(containerId), undefined);
  });

  test('a kill is not a cancellation: the task ends as the engine reports it', async () => {
    const { handle } = await startedHandle();
    await handle.kill();
    assert.deepEqual(await handle.wait(), { kind: 'failed', exitCode: 137 });
  });

  test('a kill while berth is stopping the task leaves it cancelled', async () => {
    const { handle, stopping, stop } = await stoppingHandle();
    await handle.kill();
    stop.proceed();
    await stopping;
    assert.deepEqual(await handle.wait(), { kind: 'cancelled', exitCode: 137 });
  });
});
