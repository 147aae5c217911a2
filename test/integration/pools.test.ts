/**
 * Warm pools through the library's driver against the real engine: a pooled task's exit code,
 * streams, stdin, timeout, stop and OOM are the cold path's for the same spec; what goes cold and
 * why; refill, freeze and thaw; one task per container unless hot reuse; an image with no shell;
 * close leaves nothing.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { LABELS, ROLES } from '../../src/common/labels.js';
import type { PoolDefinition, PoolEvent } from '../../src/pools/types.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver, type StartOptions } from '../../src/tasks/driver.js';
import type { TaskHandle } from '../../src/tasks/handle.js';
import { tarArchive } from '../../src/tasks/tar.js';
import { readFileSync } from 'node:fs';
import { pollUntil, readAll, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

const engine = testEngine();
const run = testRun(engine);
const drivers: TaskDriver[] = [];
let driverCount = 0;

/** A spec of this run (its label scopes clean-up), network none as a pool's would be. */
const spec = (overrides: Partial<TaskSpec> = {}): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, network: 'none', ...overrides });

/** A driver with its own owner id and the given pools, started (its pools fill in the background). */
async function poolDriver(pools: PoolDefinition[]): Promise<{ driver: TaskDriver; events: PoolEvent[] }> {
  const driver = new TaskDriver({ engine, ownerId: `pools-${run.id}-${++driverCount}`, pools });
  drivers.push(driver);
  const events: PoolEvent[] = [];
  driver.pools.onEvent((event) => events.push(event));
  await driver.pools.start();
  return { driver, events };
}

/** Waits until every pool of the driver holds its target of idle (or frozen) containers. */
async function filled(driver: TaskDriver): Promise<void> {
  await pollUntil('the pools to fill', () => (driver.pools.snapshot().every((pool) => pool.idle + pool.frozen >= pool.target && pool.starting === 0) ? true : undefined), { timeoutMs: 30_000 });
}

interface Outcome {
  path: string;
  end: unknown;
  stdout: string;
  stderr: string;
}

/** Runs a task to its end, reading its streams; destroys it. */
async function outcomeOf(driver: TaskDriver, taskSpec: TaskSpec, options: StartOptions = {}, act?: (handle: TaskHandle) => Promise<void>): Promise<Outcome> {
  const handle = await driver.start(taskSpec, options);
  try {
    const reading = Promise.all([readAll(handle.stdout), readAll(handle.stderr)]);
    if (act) await act(handle);
    const end = await handle.wait();
    const [stdout, stderr] = await reading;
    return { path: handle.startPath.kind === 'warm' ? 'warm' : `cold:${handle.startPath.reason}`, end, stdout, stderr };
  } finally {
    await handle.destroy();
  }
}

/** The same spec cold (pool: false) and warm: everything but the path must be equal. */
async function coldAndWarm(driver: TaskDriver, taskSpec: () => TaskSpec, act?: (handle: TaskHandle) => Promise<void>): Promise<{ cold: Outcome; warm: Outcome }> {
  await filled(driver);
  const cold = await outcomeOf(driver, taskSpec(), { pool: false }, act);
  const warm = await outcomeOf(driver, taskSpec(), {}, act);
  assert.equal(cold.path, 'cold:no-pool');
  assert.equal(warm.path, 'warm');
  return { cold, warm };
}

describe('warm pools against the real engine', { skip: await requireEngine() }, () => {
  after(async () => {
    for (const driver of drivers) await driver.pools.close();
    await run.cleanup();
  });

  test('a pooled task has the exit code, stdout, stderr and stdin of the same task started cold', async () => {
    const { driver } = await poolDriver([{ name: 'streams', spec: spec({ env: { FIXED: 'pool' } }), size: 1 }]);
    const taskSpec = (): TaskSpec => spec({ env: { FIXED: 'pool', EXTRA: 'task' }, workdir: '/tmp', command: ['sh', '-c', 'echo "out $FIXED $EXTRA $(pwd)"; echo err >&2; cat; exit 3'], stdin: Readable.from(['line one\n', 'line two\n']) });
    const { cold, warm } = await coldAndWarm(driver, taskSpec);
    assert.deepEqual({ ...warm, path: '' }, { ...cold, path: '' });
    assert.deepEqual(warm.end, { kind: 'failed', exitCode: 3 });
    assert.equal(warm.stdout, 'out pool task /tmp\nline one\nline two\n');
    assert.equal(warm.stderr, 'err\n');
  });

  test('a pooled task past its time limit gets its stop signal first and ends timed-out, as a cold one', async () => {
    const { driver } = await poolDriver([{ name: 'timeout', spec: spec(), size: 1 }]);
    // The shell traps TERM and exits 42: proves the stop signal came first, on both paths.
    const taskSpec = (): TaskSpec => spec({ command: ['sh', '-c', "trap 'exit 42' TERM; while true; do sleep 0.1; done"], timeout: '500ms', stopGracePeriod: '5s' });
    const { cold, warm } = await coldAndWarm(driver, taskSpec);
    assert.deepEqual(warm.end, cold.end);
    assert.deepEqual(warm.end, { kind: 'timed-out', exitCode: 42, timeoutMs: 500 });
  });

  test('stopping a pooled task ends it cancelled, as a cold one, and kills its whole container', async () => {
    const { driver } = await poolDriver([{ name: 'stop', spec: spec(), size: 1 }]);
    let containerRunningAfterStop: boolean | undefined;
    const stopIt = async (handle: TaskHandle): Promise<void> => {
      await handle.stop({ graceMs: 0 });
      await handle.wait();
      containerRunningAfterStop = (await engine.inspectContainer(handle.containerId)).running;
    };
    const { cold, warm } = await coldAndWarm(driver, () => spec({ command: ['sleep', '600'] }), stopIt);
    assert.deepEqual(warm.end, cold.end);
    assert.equal(warm.end && (warm.end as { kind: string }).kind, 'cancelled');
    assert.equal(containerRunningAfterStop, false);
  });

  test('a pooled task over its memory limit ends oom, as a cold one, from the kernel and engine evidence', async () => {
    const limited = (): TaskSpec => spec({ resources: { memory: '32m' }, command: ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1'] });
    const { driver } = await poolDriver([{ name: 'oom', spec: spec({ resources: { memory: '32m' } }), size: 1 }]);
    const { cold, warm } = await coldAndWarm(driver, limited);
    assert.deepEqual(warm.end, cold.end);
    assert.equal((warm.end as { kind: string }).kind, 'oom');
  });

  test('tasks go cold and say why: no match, not poolable, pool empty, pool refused', async () => {
    const { driver, events } = await poolDriver([{ name: 'why', spec: spec({ env: { ONLY: 'this' } }), size: 1 }]);
    await filled(driver);
    const echo = { command: ['echo', 'hi'] };
    assert.equal((await outcomeOf(driver, spec({ ...echo, env: { ONLY: 'other' } }))).path, 'cold:no-match');
    assert.equal((await outcomeOf(driver, spec({ ...echo, env: { ONLY: 'this' }, resources: { memory: '64m' } }))).path, 'cold:no-match');
    assert.equal((await outcomeOf(driver, spec({ ...echo, env: { ONLY: 'this' }, files: [{ path: '/tmp/f', content: 'x' }] }))).path, 'cold:not-poolable');
    assert.equal((await outcomeOf(driver, spec({ ...echo, env: { ONLY: 'this' } }), { pool: false })).path, 'cold:no-pool');
    // The one idle container serves a long task; the next task finds the pool empty (its refill not yet done, or taken) or a fresh container.
    const long = await driver.start(spec({ command: ['sleep', '600'], env: { ONLY: 'this' } }));
    try {
      assert.equal(long.startPath.kind, 'warm');
      driver.pools.setAllowance('why', 0);
      assert.equal((await outcomeOf(driver, spec({ ...echo, env: { ONLY: 'this' } }))).path, 'cold:pool-empty');
    } finally {
      await long.destroy();
    }
    const misses = events.filter((event) => event.type === 'pool.miss').map((event) => (event.type === 'pool.miss' ? event.reason : ''));
    assert.deepEqual(misses, ['no-match', 'no-match', 'not-poolable', 'pool-empty']);
  });

  test('a pool refills after a take, and a pool container never serves two tasks without reuse', async () => {
    const { driver, events } = await poolDriver([{ name: 'refill', spec: spec(), size: 1 }]);
    await filled(driver);
    const first = await driver.start(spec({ command: ['sleep', '600'] }));
    try {
      assert.equal(first.startPath.kind, 'warm');
      await filled(driver);
      const refilled = events.filter((event) => event.type === 'pool.refilled');
      assert.equal(refilled.length, 2, 'the first fill and the refill after the take');
      const second = await driver.start(spec({ command: ['echo', 'second'] }));
      try {
        assert.equal(second.startPath.kind, 'warm');
        assert.notEqual(second.containerId, first.containerId);
        assert.equal(await readAll(second.stdout), 'second\n');
        await second.wait();
      } finally {
        await second.destroy();
      }
      await assert.rejects(engine.inspectContainer(second.containerId), (error) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'));
    } finally {
      await first.destroy();
    }
    await assert.rejects(engine.inspectContainer(first.containerId), (error) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'));
  });

  test('an idle pool container that dies is removed and replaced (its launcher ended with it); no task is offered it', async () => {
    const { driver, events } = await poolDriver([{ name: 'broken', spec: spec(), size: 1 }]);
    await filled(driver);
    const [brokenId] = [...driver.pools.containerIds()];
    await engine.killContainer(brokenId!, 'SIGKILL');
    await pollUntil('the dead container to be removed', () => (events.some((event) => event.type === 'pool.removed' && event.containerId === brokenId && event.reason === 'failed') ? true : undefined), { timeoutMs: 30_000 });
    await assert.rejects(engine.inspectContainer(brokenId!), (error) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'));
    await filled(driver);
    assert.equal(driver.pools.containerIds().has(brokenId!), false);
    const outcome = await outcomeOf(driver, spec({ command: ['echo', 'still runs'] }));
    assert.deepEqual([outcome.path, outcome.stdout, outcome.end], ['warm', 'still runs\n', { kind: 'success', exitCode: 0 }]);
  });

  test('an idle pool container is frozen after its idle time and thawed when a task takes it', async () => {
    const { driver } = await poolDriver([{ name: 'freeze', spec: spec(), size: 1, freezeAfterMs: 100 }]);
    await pollUntil('the idle container to be frozen', () => (driver.pools.snapshot()[0]!.frozen === 1 ? true : undefined), { timeoutMs: 30_000 });
    const [frozenId] = [...driver.pools.containerIds()];
    const inspected = await engine.inspectContainer(frozenId!);
    assert.equal(inspected.paused, true, 'the engine shows the idle container paused');
    const handle = await driver.start(spec({ command: ['sleep', '600'] }));
    try {
      assert.equal(handle.containerId, frozenId);
      const taken = await engine.inspectContainer(handle.containerId);
      assert.deepEqual([taken.running, taken.paused], [true, false]);
    } finally {
      await handle.destroy();
    }
  });

  test('with hot reuse, one container serves tasks in sequence, never two at once', async () => {
    const { driver } = await poolDriver([{ name: 'reuse', spec: spec(), size: 1, reuse: true }]);
    await filled(driver);
    const first = await outcomeAndContainer(driver, spec({ command: ['sh', '-c', 'echo one > /tmp/left-behind; echo one'] }));
    const second = await driver.start(spec({ command: ['sh', '-c', 'cat /tmp/left-behind; sleep 600'] }));
    try {
      assert.equal(second.containerId, first.containerId, 'the container that served the first task serves the second');
      const third = await driver.start(spec({ command: ['echo', 'three'] }));
      try {
        assert.notEqual(third.containerId, second.containerId, 'a container in use is not handed out');
      } finally {
        await third.destroy();
      }
      const chunk = await new Promise<string>((resolve) => second.stdout.once('data', (data: Buffer) => resolve(data.toString())));
      assert.equal(chunk, 'one\n', 'state passes between tasks with reuse');
    } finally {
      await second.destroy();
    }
    // Stopped rather than ended on its own: removed, not returned.
    await assert.rejects(engine.inspectContainer(second.containerId), (error) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'));
  });

  test('an image with no shell runs pooled, its entrypoint merged with the task\'s command as the engine would', async () => {
    const tag = `noshell-${run.id}`;
    const image = `berth-test/${tag}:latest`;
    const tar = tarArchive([{ header: { name: 'busybox', type: 'file', mode: 0o755, mtime: 0 }, body: readFileSync('/bin/busybox') }]);
    await engine.importImage(Readable.from([tar]), { repo: `berth-test/${tag}`, tag: 'latest' }, ['ENTRYPOINT ["/busybox"]', 'CMD ["echo", "image default"]']);
    try {
      const { driver } = await poolDriver([{ name: 'noshell', spec: spec({ image }), size: 1 }]);
      await filled(driver);
      const own = await outcomeOf(driver, spec({ image, command: ['echo', 'hi'] }));
      assert.deepEqual([own.path, own.stdout, own.end], ['warm', 'hi\n', { kind: 'success', exitCode: 0 }]);
      await filled(driver);
      const byDefault = await outcomeOf(driver, spec({ image }));
      assert.deepEqual([byDefault.path, byDefault.stdout], ['warm', 'image default\n']);
      await driver.pools.close();
    } finally {
      await engine.removeImage(image, { force: true }).catch(() => undefined);
    }
  });

  test('recoverWarm ends a task whose exec ended with its exit code, and kills one whose exec still runs, ending it lost', async () => {
    const ownerId = `pools-${run.id}-recover`;
    const pools: PoolDefinition[] = [{ name: 'recover', spec: spec(), size: 2 }];
    const first = new TaskDriver({ engine, ownerId, pools });
    drivers.push(first);
    await first.pools.start();
    await filled(first);
    const ended = await first.start(spec({ command: ['sh', '-c', 'exit 5'] }));
    const running = await first.start(spec({ command: ['sleep', '600'] }));
    assert.deepEqual([ended.startPath.kind, running.startPath.kind], ['warm', 'warm']);
    await ended.wait();
    const records = [ended, running].map((handle) => ({ containerId: handle.containerId, execId: handle.startPath.kind === 'warm' ? handle.startPath.execId : '' }));
    // The owner "restarts": a new driver of the same owner, which keeps the in-use containers and removes the idle ones.
    const second = new TaskDriver({ engine, ownerId, pools });
    drivers.push(second);
    await second.pools.start({ keep: new Set(records.map((record) => record.containerId)) });
    const recoveredEnded = await second.recoverWarm(ended.taskId, { spec: spec({ command: ['sh', '-c', 'exit 5'] }), ...records[0]! });
    const recoveredRunning = await second.recoverWarm(running.taskId, { spec: spec({ command: ['sleep', '600'] }), ...records[1]! });
    assert.ok(recoveredEnded && recoveredRunning);
    assert.deepEqual(await recoveredEnded.wait(), { kind: 'failed', exitCode: 5 });
    const lost = await recoveredRunning.wait();
    assert.equal(lost.kind, 'lost');
    assert.match(lost.kind === 'lost' ? lost.reason : '', /still running as an exec/);
    assert.equal((await engine.inspectContainer(records[1]!.containerId)).running, false);
    assert.ok(second.pools.containerIds().has(records[0]!.containerId));
    await recoveredEnded.destroy();
    await recoveredRunning.destroy();
    for (const record of records) await assert.rejects(engine.inspectContainer(record.containerId), (error) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'));
    assert.equal(await second.recoverWarm('gone', { spec: spec(), ...records[0]! }), undefined);
    await first.pools.close();
    await second.pools.close();
  });

  test('recoverWarm of a task whose exec was OOM-killed ends it oom, from the container\'s memory cgroup', async () => {
    const ownerId = `pools-${run.id}-recover-oom`;
    const limited = (): TaskSpec => spec({ resources: { memory: '32m' }, command: ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1'] });
    const pools: PoolDefinition[] = [{ name: 'recover-oom', spec: spec({ resources: { memory: '32m' } }), size: 1 }];
    const first = new TaskDriver({ engine, ownerId, pools });
    drivers.push(first);
    await first.pools.start();
    await filled(first);
    const handle = await first.start(limited());
    assert.equal(handle.startPath.kind, 'warm');
    assert.equal((await handle.wait()).kind, 'oom');
    const execId = handle.startPath.kind === 'warm' ? handle.startPath.execId : '';
    const second = new TaskDriver({ engine, ownerId, pools });
    drivers.push(second);
    const recovered = await second.recoverWarm(handle.taskId, { spec: limited(), containerId: handle.containerId, execId });
    assert.ok(recovered);
    try {
      assert.deepEqual(await recovered.wait(), { kind: 'oom', exitCode: 137, hint: 'the task ran out of memory: raise its memory limit of 32 MiB' });
    } finally {
      await recovered.destroy();
    }
    await first.pools.close();
  });

  test('close removes every idle pool container and stops refilling: nothing of the pool is left', async () => {
    const { driver } = await poolDriver([{ name: 'close', spec: spec(), size: 3, freezeAfterMs: 50 }]);
    await filled(driver);
    await driver.pools.close();
    const left = await engine.listContainers({ all: true, labels: [`${LABELS.ownerId}=${driver.ownerId}`, `${LABELS.role}=${ROLES.pool}`] });
    assert.deepEqual(left, []);
    assert.deepEqual(driver.pools.snapshot(), [{ name: 'close', target: 3, idle: 0, frozen: 0, inUse: 0, starting: 0 }]);
  });
});

/** Runs a task that ends on its own and destroys it (with reuse: the container goes back to the pool). */
async function outcomeAndContainer(driver: TaskDriver, taskSpec: TaskSpec): Promise<{ containerId: string; stdout: string }> {
  const handle = await driver.start(taskSpec);
  const stdout = await readAll(handle.stdout);
  assert.equal((await handle.wait()).kind, 'success');
  await handle.destroy();
  return { containerId: handle.containerId, stdout };
}
