/**
 * A task's image holds end in one place, the driver's releaseImages: when its container is
 * removed, when its start is undone, or when its owner says the task has no container left.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { TaskDriver, type ImageProvider } from '../../../src/tasks/driver.js';
import { ScriptedEngine } from './scripted-engine.js';

const RETRY = { attempts: 1, initialDelayMs: 1, maxDelayMs: 1 };

function recordingImages(): ImageProvider & { acquired: string[]; released: string[] } {
  const acquired: string[] = [];
  const released: string[] = [];
  return {
    acquired,
    released,
    acquire: async (_image, holderId) => void acquired.push(holderId),
    release: (holderId) => void released.push(holderId),
  };
}

describe('a task\'s image holds', () => {
  test('are released once when its container is removed, and not before', async () => {
    const engine = new ScriptedEngine();
    const images = recordingImages();
    const driver = new TaskDriver({ engine, ownerId: 'holds', ownerProcess: 'none', retry: RETRY, images });
    const handle = await driver.start({ image: 'img', command: ['true'] }, { taskId: 'task-a', output: 'engine-log' });
    assert.deepEqual([images.acquired, images.released, handle.output], [['task-a'], [], 'engine-log']);
    await handle.destroy();
    await handle.destroy();
    assert.deepEqual(images.released, ['task-a']);
  });

  test('are released when its start fails, and the failed container is removed', async () => {
    const engine = new ScriptedEngine();
    const images = recordingImages();
    const driver = new TaskDriver({ engine, ownerId: 'holds', ownerProcess: 'none', retry: RETRY, images });
    engine.hold('startContainer');
    const starting = driver.start({ image: 'img', command: ['true'] }, { taskId: 'task-b', output: 'engine-log' });
    (await engine.next('startContainer')).fail(new BerthError('BERTH_ENGINE_SERVER_ERROR', 'injected fault'));
    await assert.rejects(starting);
    assert.deepEqual(images.released, ['task-b']);
  });

  test('of a task with no container left are released by driver.releaseImages, the same one place', () => {
    const images = recordingImages();
    const driver = new TaskDriver({ engine: new ScriptedEngine(), ownerId: 'holds', ownerProcess: 'none', retry: RETRY, images });
    driver.releaseImages('task-c');
    assert.deepEqual(images.released, ['task-c']);
  });
});
