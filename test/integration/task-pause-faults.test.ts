import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Engine } from '../../src/engine/engine.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { FaultProxy, type Fault } from '../support/fault-proxy.js';
import { requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { SHORT_DEADLINES } from '../support/fault-matrix.js';

/**
 * A pause or unpause whose answer is lost after the engine acted: the handle must know the task is
 * paused (or thawed) all the same, or its run time limit would run on a frozen task (or stand still
 * on a running one). The engine is the real one, behind the fault proxy.
 */
describe('pause and unpause whose answer is lost', { skip: await requireEngine() }, () => {
  const direct = testEngine();
  const run = testRun(direct);
  let proxy: FaultProxy;
  let driver: TaskDriver;

  before(async () => {
    proxy = await FaultProxy.start();
    const engine = new Engine({ socketPath: proxy.socketPath, deadlines: SHORT_DEADLINES });
    driver = new TaskDriver({ engine, ownerId: `pause-faults-${run.id}`, retry: { attempts: 3, initialDelayMs: 20, maxDelayMs: 200 } });
  });
  after(async () => {
    await proxy.close();
    await run.cleanup();
  });

  const faults: Record<string, Fault> = {
    'a 500 after the engine acted': { kind: 'error500AfterForward', at: 'end' },
    'a connection dropped after the engine acted': { kind: 'dropAfterForward', at: 'end' },
  };
  for (const [words, fault] of Object.entries(faults)) {
    test(`under ${words}, pause and unpause still say they worked, and the handle's clock knows it`, async () => {
      const handle = await driver.start({ image: TEST_IMAGE, labels: run.labels, command: ['sleep', '60'], timeout: '10m' });
      try {
        const pauseRule = proxy.addRule({ method: 'POST', path: /^\/containers\/[^/]+\/pause$/, fault, times: 1 });
        await handle.pause();
        assert.equal(pauseRule.fired, 1, 'the fault was injected on the pause');
        assert.equal(handle.paused, true);
        assert.equal((await direct.inspectContainer(handle.containerId)).paused, true);

        const unpauseRule = proxy.addRule({ method: 'POST', path: /^\/containers\/[^/]+\/unpause$/, fault, times: 1 });
        await handle.unpause();
        assert.equal(unpauseRule.fired, 1, 'the fault was injected on the unpause');
        assert.equal(handle.paused, false);
        const state = await direct.inspectContainer(handle.containerId);
        assert.equal(state.paused, false);
        assert.equal(state.running, true);
      } finally {
        await handle.destroy();
      }
    });
  }

  test('a pause paused behind the handle\'s back is taken as done; one the engine never saw still fails', async () => {
    const handle = await driver.start({ image: TEST_IMAGE, labels: run.labels, command: ['sleep', '60'] });
    try {
      await direct.pauseContainer(handle.containerId);
      // The engine refuses a second pause (409), and the inspect finds the task paused, as asked.
      await handle.pause();
      assert.equal(handle.paused, true);
      await handle.unpause();
      assert.equal(handle.paused, false);
      // The engine never sees the pause: the task runs on, and the error stands.
      const refused = proxy.addRule({ method: 'POST', path: /^\/containers\/[^/]+\/pause$/, fault: { kind: 'error500Before' } });
      try {
        await assert.rejects(handle.pause(), (error: Error & { code?: string }) => error.code === 'BERTH_ENGINE_SERVER_ERROR');
      } finally {
        refused.remove();
      }
      assert.ok(refused.fired >= 1);
      assert.equal(handle.paused, false);
      assert.equal((await direct.inspectContainer(handle.containerId)).paused, false);
    } finally {
      await handle.destroy();
    }
  });
});
