/**
 * Warm pools under engine faults (through test/support/fault-proxy.ts): a pool container's create
 * and start whose answers are lost are adopted, never doubled or leaked; a container whose
 * launcher's exec create or start fails (lost answer, dropped connection, deadline) is never
 * offered and is replaced; a take whose launcher is gone or whose thaw fails removes the container
 * and the task runs in the next idle one or cold (pool-failed), its output once. After every case,
 * nothing of the run is left.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, afterEach, before, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { LABELS, ROLES } from '../../src/common/labels.js';
import { Engine } from '../../src/engine/engine.js';
import type { PoolDefinition, PoolEvent } from '../../src/pools/types.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { pollUntil, readAll, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { FaultProxy, type Fault } from '../support/fault-proxy.js';

const realEngine = testEngine();
const run = testRun(realEngine);
let proxy: FaultProxy | undefined;
let proxiedEngine: Engine | undefined;
let shortDeadlineEngine: Engine | undefined;
const drivers: TaskDriver[] = [];
let count = 0;

const spec = (overrides: Partial<TaskSpec> = {}): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, network: 'none', ...overrides });

async function poolDriver(pools: PoolDefinition[], engine = proxiedEngine): Promise<{ driver: TaskDriver; events: PoolEvent[] }> {
  const driver = new TaskDriver({ engine: engine!, ownerId: `pf-${run.id}-${++count}`, pools, retry: { initialDelayMs: 50 } });
  drivers.push(driver);
  const events: PoolEvent[] = [];
  driver.pools.onEvent((event) => events.push(event));
  await driver.pools.start();
  return { driver, events };
}

/** The host pid of the launcher waiting in a pool container (the holder in its launch mode), from the container's cgroup. */
async function launcherPidOf(containerId: string): Promise<number> {
  const procs = await readFile(`/sys/fs/cgroup/pids/docker/${containerId}/cgroup.procs`, 'utf8').catch(() => readFile(`/sys/fs/cgroup/system.slice/docker-${containerId}.scope/cgroup.procs`, 'utf8'));
  for (const pid of procs.split('\n').filter(Boolean).map(Number)) {
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (argv[1] === 'launch') return pid;
  }
  throw new Error(`no launcher runs in container ${containerId}`);
}

async function filled(driver: TaskDriver): Promise<void> {
  await pollUntil('the pool to fill', () => (driver.pools.snapshot().every((pool) => pool.idle + pool.frozen >= pool.target && pool.starting === 0) ? true : undefined), { timeoutMs: 30_000 });
}

/** The owner's pool containers as the engine lists them. */
async function poolContainers(driver: TaskDriver): Promise<string[]> {
  return (await realEngine.listContainers({ all: true, labels: [`${LABELS.ownerId}=${driver.ownerId}`, `${LABELS.role}=${ROLES.pool}`] })).map((row) => row.id);
}

/** Faults on the launcher's exec calls; `deadlined`: through an engine whose write deadline (3 s) the fault outlasts. */
const LAUNCHER_FAULTS: ReadonlyArray<{ name: string; fault: Fault; deadlined?: boolean }> = [
  { name: 'a 500 after the engine acted', fault: { kind: 'error500AfterForward', at: 'head' } },
  { name: 'a connection dropped after the engine acted', fault: { kind: 'dropAfterForward', at: 'head' } },
  { name: 'a call past its deadline', fault: { kind: 'delay', delayMs: 6_000 }, deadlined: true },
];

const ONCE: ReadonlyArray<{ name: string; fault: Fault }> = [
  { name: 'a 500 after the engine acted', fault: { kind: 'error500AfterForward' } },
  { name: 'a connection dropped after the engine acted', fault: { kind: 'dropAfterForward' } },
];

describe('warm pools under engine faults', { skip: await requireEngine() }, () => {
  before(async () => {
    proxy = await FaultProxy.start();
    proxiedEngine = new Engine({ socketPath: proxy.socketPath });
    shortDeadlineEngine = new Engine({ socketPath: proxy.socketPath, deadlines: { writeMs: 3_000 } });
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
        const { driver } = await poolDriver([{ name: 'fill', spec: spec(), size: 2 }]);
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

  for (const { call, path } of [
    { call: 'create', path: /^\/containers\/[^/]+\/exec$/ },
    { call: 'start', path: /^\/exec\/[^/]+\/start$/ },
  ]) {
    for (const { name, fault, deadlined } of LAUNCHER_FAULTS) {
      test(`${name} on the launcher's exec ${call} at fill: that container is never offered, it is removed and replaced, the task runs warm in another`, async () => {
        const rule = proxy!.addRule({ method: 'POST', path, fault, times: 1 });
        const { driver, events } = await poolDriver([{ name: `l-${call}`, spec: spec(), size: 1 }], deadlined ? shortDeadlineEngine : proxiedEngine);
        await filled(driver);
        assert.equal(rule.fired, 1, 'the fault was injected');
        const failed = events.filter((event) => event.type === 'pool.removed' && event.reason === 'failed').map((event) => (event as { containerId: string }).containerId);
        const offered = new Set(events.filter((event) => event.type === 'pool.refilled').map((event) => (event as { containerId: string }).containerId));
        assert.equal(failed.length, 1, 'the container the fault hit was removed');
        assert.equal(offered.has(failed[0]!), false, 'it was never offered to a task');
        if (call === 'create') assert.equal(failed[0], /^\/containers\/([^/]+)\/exec$/.exec(proxy!.requests.filter((record) => record.fault !== undefined && path.test(record.path)).at(-1)!.path)![1]);
        await assert.rejects(realEngine.inspectContainer(failed[0]!), (error) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'));
        assert.deepEqual(await poolContainers(driver), [...driver.pools.containerIds()]);
        const handle = await driver.start(spec({ command: ['echo', 'once'] }));
        try {
          assert.equal(handle.startPath.kind, 'warm');
          assert.notEqual(handle.containerId, failed[0]);
          assert.deepEqual([await readAll(handle.stdout), await handle.wait()], ['once\n', { kind: 'success', exitCode: 0 }]);
        } finally {
          await handle.destroy();
        }
      });
    }
  }

  test('an idle container whose launcher is killed is removed and replaced before any task takes it', async () => {
    const { driver, events } = await poolDriver([{ name: 'l-idle', spec: spec(), size: 1 }]);
    await filled(driver);
    const [broken] = [...driver.pools.containerIds()];
    process.kill(await launcherPidOf(broken!), 'SIGKILL');
    await pollUntil('the container to be removed', () => (events.some((event) => event.type === 'pool.removed' && event.containerId === broken && event.reason === 'failed') ? true : undefined), { timeoutMs: 30_000 });
    await filled(driver);
    const handle = await driver.start(spec({ command: ['echo', 'once'] }));
    try {
      assert.equal(handle.startPath.kind, 'warm');
      assert.notEqual(handle.containerId, broken);
      assert.deepEqual([await readAll(handle.stdout), await handle.wait()], ['once\n', { kind: 'success', exitCode: 0 }]);
    } finally {
      await handle.destroy();
    }
    await assert.rejects(realEngine.inspectContainer(broken!), (error) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'));
  });

  // The launcher is killed while its container is frozen (its process fully set up: no exec is
  // being set up, so the freeze is safe): the kill lands at the thaw, when the task takes it.
  test('a take whose launcher dies before reading the request: that container is removed, the task runs in the next idle one, its output once', async () => {
    const { driver, events } = await poolDriver([{ name: 'l-next', spec: spec(), size: 2, freezeAfterMs: 0 }]);
    await pollUntil('both containers to be frozen', () => (driver.pools.snapshot()[0]!.frozen === 2 ? true : undefined), { timeoutMs: 30_000 });
    // The first slot is the one a take tries first.
    const [broken, sound] = [...driver.pools.containerIds()];
    process.kill(await launcherPidOf(broken!), 'SIGKILL');
    const handle = await driver.start(spec({ command: ['sh', '-c', 'echo once; echo run >> /tmp/runs'] }));
    try {
      assert.deepEqual([handle.startPath.kind, handle.containerId], ['warm', sound]);
      assert.deepEqual([await readAll(handle.stdout), await handle.wait()], ['once\n', { kind: 'success', exitCode: 0 }]);
    } finally {
      await handle.destroy();
    }
    await assert.rejects(realEngine.inspectContainer(broken!), (error) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'));
    assert.ok(events.some((event) => event.type === 'pool.removed' && event.containerId === broken && event.reason === 'failed'));
  });

  test('a take whose only idle container\'s launcher is gone: the container is removed and the task runs cold, saying pool-failed, its output once', async () => {
    const { driver } = await poolDriver([{ name: 'l-cold', spec: spec(), size: 1, freezeAfterMs: 0 }]);
    await pollUntil('the container to be frozen', () => (driver.pools.snapshot()[0]!.frozen === 1 ? true : undefined), { timeoutMs: 30_000 });
    const [broken] = [...driver.pools.containerIds()];
    process.kill(await launcherPidOf(broken!), 'SIGKILL');
    const handle = await driver.start(spec({ command: ['echo', 'once'] }));
    try {
      assert.deepEqual(handle.startPath, { kind: 'cold', reason: 'pool-failed' });
      assert.deepEqual([await readAll(handle.stdout), await handle.wait()], ['once\n', { kind: 'success', exitCode: 0 }]);
    } finally {
      await handle.destroy();
    }
    await assert.rejects(realEngine.inspectContainer(broken!), (error) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'));
  });

  test('a thaw that fails for good: the frozen container is removed and the task runs cold', async () => {
    const { driver } = await poolDriver([{ name: 'thaw', spec: spec(), size: 1, freezeAfterMs: 0 }]);
    await pollUntil('the container to be frozen', () => (driver.pools.snapshot()[0]!.frozen === 1 ? true : undefined), { timeoutMs: 30_000 });
    const [frozen] = [...driver.pools.containerIds()];
    proxy!.addRule({ method: 'POST', path: /^\/containers\/[^/]+\/unpause$/, fault: { kind: 'error500Before' } });
    const handle = await driver.start(spec({ command: ['echo', 'cold'] }));
    try {
      assert.deepEqual(handle.startPath, { kind: 'cold', reason: 'pool-failed' });
      assert.equal(await readAll(handle.stdout), 'cold\n');
      await handle.wait();
    } finally {
      await handle.destroy();
    }
    await assert.rejects(realEngine.inspectContainer(frozen!), (error) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'));
  });
});
