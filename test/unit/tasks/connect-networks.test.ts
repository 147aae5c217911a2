/**
 * The engine takes one named network at create; the driver connects the others between the create
 * and the start, on every path that starts a container: a fresh start, a create that was adopted,
 * and the recovery of a container that was created but never started.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { containerNameForTask, LABELS } from '../../../src/common/labels.js';
import { TaskDriver } from '../../../src/tasks/driver.js';
import { ScriptedEngine } from './scripted-engine.js';

const RETRY = { attempts: 2, initialDelayMs: 1, maxDelayMs: 1 };
const spec = {
  image: 'img',
  command: ['true'],
  network: 'bridge' as const,
  networks: [{ name: 'front', aliases: ['web'] }, { name: 'back', aliases: ['api', 'web'] }, { name: 'metrics' }],
};

/** The calls that matter here, in order: creates, connects (network and aliases) and starts. */
function story(engine: ScriptedEngine): string[] {
  return engine.calls.flatMap((call) => {
    if (call.method === 'connectNetwork') {
      const target = call.target as { network: string; aliases: string[] };
      return [`connect ${target.network} [${target.aliases.join(',')}]`];
    }
    return call.method === 'createContainer' || call.method === 'startContainer' ? [call.method] : [];
  });
}

describe('connecting a task\'s further networks', () => {
  test('a start connects every network after the first between the create and the start', async () => {
    const engine = new ScriptedEngine();
    const driver = new TaskDriver({ engine, ownerId: 'nets', ownerProcess: 'none', retry: RETRY });
    const handle = await driver.start(spec, { taskId: 'task-a', output: 'engine-log' });
    assert.deepEqual(story(engine), ['createContainer', 'connect back [api,web]', 'connect metrics []', 'startContainer']);
    await handle.destroy();
  });

  test('an adopted create (its first answer lost) is connected too', async () => {
    const engine = new ScriptedEngine();
    const driver = new TaskDriver({ engine, ownerId: 'nets', ownerProcess: 'none', retry: RETRY });
    // The earlier attempt of this very start made the container; the create now meets its name.
    const name = containerNameForTask({ taskId: 'task-b', ownerId: 'nets' });
    engine.addContainer(name, { [LABELS.managed]: 'true', [LABELS.taskId]: 'task-b', [LABELS.ownerId]: 'nets', [LABELS.startAttempt]: 'attempt-1' });
    const handle = await driver.start(spec, { taskId: 'task-b', output: 'engine-log', startAttempt: 'attempt-1' });
    assert.deepEqual(story(engine), ['createContainer', 'connect back [api,web]', 'connect metrics []', 'startContainer']);
    await handle.destroy();
  });

  test('a recovered container that was created but never started is connected before its start', async () => {
    const engine = new ScriptedEngine();
    const driver = new TaskDriver({ engine, ownerId: 'nets', ownerProcess: 'none', retry: RETRY });
    const name = containerNameForTask({ taskId: 'task-c', ownerId: 'nets' });
    engine.addContainer(name, { [LABELS.managed]: 'true', [LABELS.taskId]: 'task-c', [LABELS.ownerId]: 'nets', [LABELS.startAttempt]: 'attempt-1' });
    const handle = await driver.recover('task-c', spec);
    assert.ok(handle);
    assert.deepEqual(story(engine), ['connect back [api,web]', 'connect metrics []', 'startContainer']);
    await handle.destroy();
  });
});
