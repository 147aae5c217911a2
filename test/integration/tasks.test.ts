import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { containerNameForTask, LABELS } from '../../src/common/labels.js';
import type { Engine } from '../../src/engine/engine.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { runToEnd } from '../../src/tasks/run.js';
import { readAll, requireEngine, TEST_IMAGE, testRun, testEngine, TEST_ENGINE_KIND } from '../support/engine.js';

const engine = testEngine();
const run = testRun(engine);
const driver = new TaskDriver({ engine, ownerId: `test-${run.id}` });
const spec = (overrides: Partial<TaskSpec>): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, ...overrides });
const taskId = (suffix: string): string => `${run.id}-${suffix}`;

describe('task lifecycle against the real engine', { skip: await requireEngine() }, () => {
  after(() => run.cleanup());

  test('a failing task reports its exit code and keeps stdout and stderr apart', async () => {
    const handle = await driver.start(spec({ command: ['sh', '-c', 'echo to-out; echo to-err >&2; exit 3'] }));
    const [stdout, stderr, end] = await Promise.all([readAll(handle.stdout), readAll(handle.stderr), handle.wait()]);
    await handle.destroy();
    assert.deepEqual(end, { kind: 'failed', exitCode: 3 });
    assert.equal(stdout, 'to-out\n');
    assert.equal(stderr, 'to-err\n');
  });

  test('a task started with output engine-log says so, its handle streams end empty, and the engine log holds its output', async () => {
    const handle = await driver.start(spec({ command: ['sh', '-c', 'echo to-out; echo to-err >&2'] }), { output: 'engine-log' });
    try {
      const [stdout, stderr, end] = await Promise.all([readAll(handle.stdout), readAll(handle.stderr), handle.wait()]);
      assert.deepEqual([handle.output, stdout, stderr, end.kind], ['engine-log', '', '', 'success']);
      const logged: string[] = [];
      for await (const entry of engine.logEntries(handle.containerId)) logged.push(`${entry.stream}:${entry.data.toString()}`);
      assert.deepEqual(logged.sort(), ['stderr:to-err\n', 'stdout:to-out\n']);
    } finally {
      await handle.destroy();
    }
  });

  test('a driver announces each phase change of its handles to on(\'phase\') listeners until they unsubscribe', async () => {
    const phases: string[] = [];
    const id = taskId('phases');
    const unsubscribe = driver.on('phase', (change) => {
      if (change.taskId === id) phases.push(`${change.from}->${change.to}`);
    });
    const handle = await driver.start(spec({ command: ['true'] }), { taskId: id });
    assert.equal(handle.output, 'attached');
    await handle.wait();
    const beforeUnsubscribe = phases.length;
    const phaseAtUnsubscribe = handle.phase;
    unsubscribe();
    await handle.destroy();
    assert.ok(beforeUnsubscribe > 0, 'phase changes were announced');
    assert.equal(phases.length, beforeUnsubscribe, 'no change announced after the unsubscribe');
    assert.equal(phases.at(-1)?.split('->')[1], phaseAtUnsubscribe, `the last announced change is the handle's phase: ${phases.join(', ')}`);
  });

  test('a successful task ends as success and its container is removed', async () => {
    const result = await runToEnd(driver, spec({ command: ['true'] }));
    assert.deepEqual(result.end, { kind: 'success', exitCode: 0 });
    await assert.rejects(engine.inspectContainer(result.containerId), (e: unknown) => isBerthError(e, 'BERTH_ENGINE_NOT_FOUND'));
  });

  test('stdin is piped to the task and closed at its end', async () => {
    const handle = await driver.start(spec({ command: ['sh', '-c', 'wc -c; cat'], stdin: Readable.from(['line one\n', 'line two\n']) }));
    const [stdout, end] = await Promise.all([readAll(handle.stdout), handle.wait()]);
    await handle.destroy();
    assert.equal(end.kind, 'success');
    assert.equal(stdout.trim(), '18');
  });

  test('memory, cpu and pids limits appear in the container inspect data, with swap disabled', async () => {
    const handle = await driver.start(spec({ command: ['sleep', '30'], resources: { memory: '48m', memoryReservation: '16m', cpuMilli: 250, pidsLimit: 32, cpuShares: 512 } }));
    try {
      const inspect = await engine.inspectContainer(handle.containerId);
      assert.equal(inspect.hostConfig.memoryBytes, 48 * 1024 * 1024);
      assert.equal(inspect.hostConfig.memorySwapBytes, 48 * 1024 * 1024);
      assert.equal(inspect.hostConfig.memoryReservationBytes, 16 * 1024 * 1024);
      assert.equal(inspect.hostConfig.cpuQuota, 25_000);
      assert.equal(inspect.hostConfig.cpuPeriod, 100_000);
      assert.equal(inspect.hostConfig.cpuShares, 512);
      assert.equal(inspect.hostConfig.pidsLimit, 32);
      assert.equal(inspect.hostConfig.networkMode, 'none');
      // Podman has no local log driver: berth asks it for json-file instead (engine/detect.ts).
      assert.equal(inspect.hostConfig.logType, TEST_ENGINE_KIND === 'podman' ? 'json-file' : 'local');
      // Podman applies the size but its compatible inspect answers the log config's options as null.
      if (TEST_ENGINE_KIND === 'docker') assert.equal(inspect.hostConfig.logConfig['max-size'], '1m');
      assert.equal(inspect.labels[LABELS.taskId], handle.taskId);
      assert.equal(inspect.labels[LABELS.ownerId], driver.ownerId);
      assert.equal(inspect.labels[LABELS.managed], 'true');
      assert.equal(inspect.name, containerNameForTask({ taskId: handle.taskId, ownerId: driver.ownerId }));
    } finally {
      await handle.destroy();
    }
  });

  test('a task over its memory limit ends as oom from the engine flag', async () => {
    const result = await runToEnd(driver, spec({ command: ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1'], resources: { memory: '32m' } }));
    assert.equal(result.end.kind, 'oom');
    assert.ok(result.end.kind === 'oom' && /memory limit of 32 MiB/.test(result.end.hint));
  });

  test('a task past its run time limit is stopped with its signal and ends as timed-out', async () => {
    // The shell traps TERM and exits 42: proves the stop signal came first.
    const result = await runToEnd(driver, spec({ command: ['sh', '-c', "trap 'exit 42' TERM; while true; do sleep 0.1; done"], timeout: '500ms', stopGracePeriod: '5s' }));
    assert.deepEqual(result.end, { kind: 'timed-out', exitCode: 42, timeoutMs: 500 });
  });

  test('a task that ignores its stop signal is killed after the grace period', async () => {
    const result = await runToEnd(driver, spec({ command: ['sh', '-c', "trap '' TERM; while true; do sleep 0.1; done"], timeout: '300ms', stopGracePeriod: '1s' }));
    assert.equal(result.end.kind, 'timed-out');
    assert.equal(result.end.kind === 'timed-out' && result.end.exitCode, 137);
  });

  test('aborting the signal cancels the task and runToEnd removes its container', async () => {
    const controller = new AbortController();
    const handle = await driver.start(spec({ command: ['sleep', '30'], stopGracePeriod: '1s' }), { taskId: taskId('cancel'), signal: controller.signal });
    controller.abort();
    const end = await handle.wait();
    await handle.destroy();
    assert.equal(end.kind, 'cancelled');
    assert.deepEqual(await engine.listContainers({ labels: [`${LABELS.taskId}=${taskId('cancel')}`] }), []);
  });

  test('destroy of a running task removes it and is idempotent', async () => {
    const handle = await driver.start(spec({ command: ['sleep', '30'] }));
    await handle.destroy();
    await handle.destroy();
    assert.equal(handle.phase, 'removed');
    assert.equal((await handle.wait()).kind, 'cancelled');
    await assert.rejects(engine.inspectContainer(handle.containerId), (e: unknown) => isBerthError(e, 'BERTH_ENGINE_NOT_FOUND'));
  });

  test('adopts a container under the task name only when the same start attempt made it', async () => {
    const id = taskId('adopt');
    const first = await driver.start(spec({ command: ['sleep', '30'] }), { taskId: id, startAttempt: 'attempt-1' });
    try {
      // An owner starting the task again after a crash passes the same attempt: the container is its own.
      const again = await driver.start(spec({ command: ['sleep', '30'] }), { taskId: id, startAttempt: 'attempt-1' });
      assert.equal(again.containerId, first.containerId);
    } finally {
      await first.destroy();
    }
  });

  test('refuses a second start with the same task id, sequential or concurrent, and leaves the first alone', async () => {
    const id = taskId('twice');
    const first = await driver.start(spec({ command: ['sleep', '30'], env: { RUN: 'first' } }), { taskId: id });
    try {
      await assert.rejects(driver.start(spec({ command: ['sleep', '30'], env: { RUN: 'second' } }), { taskId: id }), (e: unknown) => isBerthError(e, 'BERTH_NAME_CONFLICT'));
      const container = await engine.inspectContainer(first.containerId);
      assert.equal(container.running, true, 'the first task still runs, in its own container');
    } finally {
      await first.destroy();
    }
    const concurrent = taskId('concurrent');
    const starts = await Promise.allSettled([1, 2].map(() => driver.start(spec({ command: ['sleep', '30'] }), { taskId: concurrent })));
    const started = starts.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const refused = starts.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []));
    try {
      assert.equal(started.length, 1, 'one of two concurrent starts with one id runs');
      assert.ok(refused.length === 1 && isBerthError(refused[0], 'BERTH_NAME_CONFLICT'), `the other is a name conflict: ${String(refused[0])}`);
    } finally {
      await Promise.all(started.map((handle) => handle.destroy()));
    }
  });

  test('refuses a name conflict with a container of another owner, and leaves it alone', async () => {
    const id = taskId('foreign');
    const foreignId = await engine.createContainer(containerNameForTask({ taskId: id, ownerId: driver.ownerId }), {
      Image: TEST_IMAGE, Cmd: ['true'], Labels: { ...run.labels }, Tty: false, OpenStdin: false, StdinOnce: false,
      AttachStdin: false, AttachStdout: false, AttachStderr: false, HostConfig: { NetworkMode: 'none' },
    });
    await assert.rejects(driver.start(spec({ command: ['true'] }), { taskId: id }), (e: unknown) => isBerthError(e, 'BERTH_NAME_CONFLICT'));
    assert.equal((await engine.inspectContainer(foreignId)).id, foreignId);
    await engine.removeContainer(foreignId);
  });

  test('a task recovered with a stop its owner had asked for ends cancelled even if that stop already ended it; without one, as the engine says', async () => {
    // Stands for a task an earlier agent's stop had SIGKILLed before the new agent recovered it.
    const first = await driver.start(spec({ command: ['sh', '-c', 'exit 137'] }), { taskId: taskId('recover-stopped') });
    assert.deepEqual(await first.wait(), { kind: 'failed', exitCode: 137 });
    const stopped = await driver.recover(first.taskId, spec({ command: ['sh', '-c', 'exit 137'] }), { stopRequested: true });
    assert.ok(stopped, 'the ended container is found');
    assert.deepEqual(await stopped.wait(), { kind: 'cancelled', exitCode: 137 });
    const asIs = await driver.recover(first.taskId, spec({ command: ['sh', '-c', 'exit 137'] }));
    assert.deepEqual(await asIs!.wait(), { kind: 'failed', exitCode: 137 });
    await asIs!.destroy();
  });

  test('bind mount propagation modes map to rprivate, rslave and rshared', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'berth-bind-'));
    // rslave and rshared need a source on a shared mount (the host's / here is private): make one.
    execFileSync('mount', ['--bind', dir, dir]);
    execFileSync('mount', ['--make-shared', dir]);
    try {
      const handle = await driver.start(spec({
        command: ['sleep', '30'],
        mounts: [
          { type: 'bind', source: dir, target: '/private', propagation: 'private', readOnly: true },
          { type: 'bind', source: dir, target: '/slave', propagation: 'host-to-task' },
          { type: 'bind', source: dir, target: '/shared', propagation: 'bidirectional' },
          { type: 'tmpfs', target: '/scratch', size: '8m' },
        ],
      }));
      try {
        const mounts = Object.fromEntries((await engine.inspectContainer(handle.containerId)).mounts.map((m) => [m.destination, m]));
        assert.equal(mounts['/private']?.propagation, 'rprivate');
        assert.equal(mounts['/private']?.readWrite, false);
        assert.equal(mounts['/slave']?.propagation, 'rslave');
        assert.equal(mounts['/shared']?.propagation, 'rshared');
        assert.equal(mounts['/shared']?.readWrite, true);
        const exec = await handle.exec({ cmd: ['sh', '-c', 'grep " /scratch " /proc/mounts'] });
        const [mountLine, code] = await Promise.all([readAll(exec.stdout), exec.exitCode()]);
        assert.equal(code, 0);
        assert.match(mountLine, /tmpfs \/scratch tmpfs .*size=8192k/);
      } finally {
        await handle.destroy();
      }
    } finally {
      execFileSync('umount', [dir]);
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('exec, stats and pause work on a running task', async () => {
    const handle = await driver.start(spec({ command: ['sleep', '30'], resources: { memory: '64m' } }));
    try {
      const exec = await handle.exec({ cmd: ['sh', '-c', 'echo inside; exit 5'] });
      const [out, code] = await Promise.all([readAll(exec.stdout), exec.exitCode()]);
      assert.equal(out, 'inside\n');
      assert.equal(code, 5);
      const controller = new AbortController();
      for await (const sample of handle.stats(controller.signal)) {
        assert.equal(sample.memoryLimitBytes, 64 * 1024 * 1024);
        controller.abort();
        break;
      }
      await handle.pause();
      assert.equal((await engine.inspectContainer(handle.containerId)).paused, true);
      await handle.unpause();
      assert.equal((await engine.inspectContainer(handle.containerId)).paused, false);
    } finally {
      await handle.destroy();
    }
  });

  test('every invalid field is rejected before anything is created', async () => {
    const before = await run.leftovers();
    const invalid: Array<[string, Partial<TaskSpec> & Record<string, unknown>]> = [
      ['image', { image: '' }],
      ['resources.memory', { resources: { memory: '1k' } }],
      ['resources.cpuMilli', { resources: { cpuMilli: 0 } }],
      ['resources.pidsLimit', { resources: { pidsLimit: 0 } }],
      ['mounts[0].propagation', { mounts: [{ type: 'bind', source: '/tmp', target: '/x', readOnly: true, propagation: 'bidirectional' }] }],
      ['mounts[0].source', { mounts: [{ type: 'bind', source: 'relative', target: '/x' }] }],
      ['labels.io.berth.managed', { labels: { 'io.berth.managed': 'false' } }],
      ['env.1BAD', { env: { '1BAD': 'x' } }],
      ['network', { network: 'overlay' as 'none' }],
      ['timeout', { timeout: 'soon' }],
      ['privileged', { privileged: true }],
      ['workdir', { workdir: 'relative' }],
      ['bogus', { bogus: true }],
    ];
    for (const [field, overrides] of invalid) {
      await assert.rejects(
        driver.start(spec({ command: ['true'], ...overrides } as TaskSpec)),
        (e: unknown) => isBerthError(e, 'BERTH_VALIDATION') && e.message.includes(field === 'bogus' ? 'bogus' : field),
        `expected a validation error naming ${field}`,
      );
    }
    assert.deepEqual(await run.leftovers(), before);
  });

  test('no test leaves a container behind', async () => {
    assert.deepEqual(await run.leftovers(), []);
  });
});

describe('engine version', { skip: await requireEngine() }, () => {
  let version: Awaited<ReturnType<Engine['checkCompatible']>>;
  before(async () => {
    version = await engine.checkCompatible();
  });
  test('the engine speaks at least the minimum API version', () => {
    assert.match(version.apiVersion, /^1\.\d+$/);
  });
});
