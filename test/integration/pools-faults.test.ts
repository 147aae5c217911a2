/**
 * Warm pools under engine faults (through test/support/fault-proxy.ts): a pool container's create
 * and start whose answers are lost are adopted, never doubled or leaked; a take whose thaw or exec
 * fails removes the container and starts the task cold, which ends as it should with its output
 * once. After every case, nothing of the run is left.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { LABELS, ROLES } from '../../src/common/labels.js';
import { Engine } from '../../src/engine/engine.js';
import type { PoolDefinition } from '../../src/pools/types.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { pollUntil, readAll, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { FaultProxy, type Fault } from '../support/fault-proxy.js';

const realEngine = testEngine();
const run = testRun(realEngine);
let proxy: FaultProxy | undefined;
let proxiedEngine: Engine | undefined;
const drivers: TaskDriver[] = [];
let count = 0;

const spec = (overrides: Partial<TaskSpec> = {}): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, network: 'none', ...overrides });

async function poolDriver(pools: PoolDefinition[]): Promise<TaskDriver> {
  const driver = new TaskDriver({ engine: proxiedEngine!, ownerId: `pf-${run.id}-${++count}`, pools, retry: { initialDelayMs: 50 } });
  drivers.push(driver);
  await driver.pools.start();
  return driver;
}

async function filled(driver: TaskDriver): Promise<void> {
  await pollUntil('the pool to fill', () => (driver.pools.snapshot().every((pool) => pool.idle + pool.frozen >= pool.target && pool.starting === 0) ? true : undefined), { timeoutMs: 30_000 });
}

/** The owner's pool containers as the engine lists them. */
async function poolContainers(driver: TaskDriver): Promise<string[]> {
  return (await realEngine.listContainers({ all: true, labels: [`${LABELS.ownerId}=${driver.ownerId}`, `${LABELS.role}=${ROLES.pool}`] })).map((row) => row.id);
}

const ONCE: ReadonlyArray<{ name: string; fault: Fault }> = [
  { name: 'a 500 after the engine acted', fault: { kind: 'error500AfterForward' } },
  { name: 'a connection dropped after the engine acted', fault: { kind: 'dropAfterForward' } },
];

describe('warm pools under engine faults', { skip: await requireEngine() }, () => {
  before(async () => {
    proxy = await FaultProxy.start();
    proxiedEngine = new Engine({ socketPath: proxy.socketPath });
  });
  afterEach(async () => {
    proxy?.reset();
    for (const driver of drivers.splice(0)) await driver.pools.close();
    assert.deepEqual(await run.leftovers(), []);
  });
  after(async () => {
    await run.cleanup();
    await proxy?.close();
  });

  for (const { call, path } of [
    { call: 'create', path: /^\/containers\/create$/ },
    { call: 'start', path: /^\/containers\/[^/]+\/start$/ },
  ]) {
    for (const { name, fault } of ONCE) {
      test(`${name} on a pool container's ${call}: the pool holds exactly its size, the container adopted, not doubled`, async () => {
        const rule = proxy!.addRule({ method: 'POST', path, fault, times: 1 });
        const driver = await poolDriver([{ name: 'fill', spec: spec(), size: 2 }]);
        await filled(driver);
        assert.equal(rule.fired, 1, 'the fault was injected');
        const listed = await poolContainers(driver);
        assert.deepEqual(listed.sort(), [...driver.pools.containerIds()].sort());
        assert.equal(listed.length, 2);
        const handle = await driver.start(spec({ command: ['echo', 'warm'] }));
        try {
          assert.equal(handle.startPath.kind, 'warm');
          assert.equal(await readAll(handle.stdout), 'warm\n');
        } finally {
          await handle.destroy();
        }
      });
    }
  }

  test('a 500 on the exec\'s create: the create is made again and the task runs warm', async () => {
    const driver = await poolDriver([{ name: 'exec-create', spec: spec(), size: 1 }]);
    await filled(driver);
    const rule = proxy!.addRule({ method: 'POST', path: /^\/containers\/[^/]+\/exec$/, fault: { kind: 'error500AfterForward' }, times: 1 });
    const handle = await driver.start(spec({ command: ['echo', 'once'] }));
    try {
      assert.equal(rule.fired, 1);
      assert.equal(handle.startPath.kind, 'warm');
      assert.deepEqual([await readAll(handle.stdout), await handle.wait()], ['once\n', { kind: 'success', exitCode: 0 }]);
    } finally {
      await handle.destroy();
    }
  });

  test('a connection dropped after the exec\'s start (its process may run): the container is removed and the task runs cold, its output once', async () => {
    const driver = await poolDriver([{ name: 'exec-start', spec: spec(), size: 1 }]);
    await filled(driver);
    const [taken] = [...driver.pools.containerIds()];
    const rule = proxy!.addRule({ method: 'POST', path: /^\/exec\/[^/]+\/start$/, fault: { kind: 'dropAfterForward', at: 'head' }, times: 1 });
    const handle = await driver.start(spec({ command: ['echo', 'once'] }));
    try {
      assert.equal(rule.fired, 1);
      assert.deepEqual(handle.startPath, { kind: 'cold', reason: 'pool-empty' });
      assert.deepEqual([await readAll(handle.stdout), await handle.wait()], ['once\n', { kind: 'success', exitCode: 0 }]);
    } finally {
      await handle.destroy();
    }
    await assert.rejects(realEngine.inspectContainer(taken!), (error) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'));
  });

  test('a thaw that fails for good: the frozen container is removed and the task runs cold', async () => {
    const driver = await poolDriver([{ name: 'thaw', spec: spec(), size: 1, freezeAfterMs: 0 }]);
    await pollUntil('the container to be frozen', () => (driver.pools.snapshot()[0]!.frozen === 1 ? true : undefined), { timeoutMs: 30_000 });
    const [frozen] = [...driver.pools.containerIds()];
    proxy!.addRule({ method: 'POST', path: /^\/containers\/[^/]+\/unpause$/, fault: { kind: 'error500Before' } });
    const handle = await driver.start(spec({ command: ['echo', 'cold'] }));
    try {
      assert.deepEqual(handle.startPath, { kind: 'cold', reason: 'pool-empty' });
      assert.equal(await readAll(handle.stdout), 'cold\n');
      await handle.wait();
    } finally {
      await handle.destroy();
    }
    await assert.rejects(realEngine.inspectContainer(frozen!), (error) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'));
  });
});
