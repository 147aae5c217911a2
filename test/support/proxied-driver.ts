import assert from 'node:assert/strict';
import { after, afterEach, before } from 'node:test';
import { Engine, type EngineOptions } from '../../src/engine/engine.js';
import { TaskDriver, type TaskDriverOptions } from '../../src/tasks/driver.js';
import type { TestRun } from './engine.js';
import { FaultProxy, type FaultProxyOptions } from './fault-proxy.js';

export interface ProxiedDriver {
  readonly proxy: FaultProxy;
  readonly driver: TaskDriver;
}

/**
 * For a describe block: a fault proxy in front of the real engine and a TaskDriver (owner
 * `test-<run id>`) that reaches the engine through it. After each test the proxy's rules are reset
 * and the run must have left no container behind (checked per case, not only at the end); after the
 * block the run's containers are removed and the proxy closed.
 */
export function useProxiedDriver(
  run: TestRun,
  options: { proxy?: FaultProxyOptions; engine?: Omit<EngineOptions, 'socketPath'>; driver?: Omit<TaskDriverOptions, 'engine' | 'ownerId'> } = {},
): ProxiedDriver {
  let proxy: FaultProxy | undefined;
  let driver: TaskDriver | undefined;
  before(async () => {
    proxy = await FaultProxy.start(options.proxy);
    driver = new TaskDriver({ ...options.driver, engine: new Engine({ ...options.engine, socketPath: proxy.socketPath }), ownerId: `test-${run.id}` });
  });
  afterEach(async () => {
    proxy?.reset();
    assert.deepEqual(await run.leftovers(), []);
  });
  after(async () => {
    await run.cleanup();
    await proxy?.close();
  });
  return {
    get proxy() {
      assert.ok(proxy, 'the proxy starts before the first test');
      return proxy;
    },
    get driver() {
      assert.ok(driver, 'the driver is made before the first test');
      return driver;
    },
  };
}
