import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { isBerthError, ValidationError } from '../../src/common/errors.js';
import { containerNameForTask, LABELS } from '../../src/common/labels.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import type { TaskHandle } from '../../src/tasks/handle.js';
import { runBerth, type CliResult } from '../support/agent.js';
import { createTestContainer, pollUntil, readAll, requireEngine, TEST_ENGINE_KIND, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { DOCKER_CLI } from '../support/registry.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

const engine = testEngine();
const run = testRun(engine);
const driver = new TaskDriver({ engine, ownerId: `test-${run.id}` });
const spec = (overrides: Partial<TaskSpec>): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, ...overrides });
const taskId = (suffix: string): string => `${run.id}-${suffix}`;
const exec = promisify(execFile);

/** The containers of one task, whatever their state. */
async function containersOf(id: string): Promise<string[]> {
  return (await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] })).map((c) => c.id);
}

async function runIn(containerId: string, script: string): Promise<{ code: number; stdout: string }> {
  const session = await engine.exec(containerId, { cmd: ['sh', '-c', script] });
  const [stdout, code] = await Promise.all([readAll(session.stdout), session.exitCode()]);
  return { code, stdout };
}

/** Whether a promise has settled, read without waiting for it. */
function track<T>(promise: Promise<T>): { readonly settled: boolean; readonly promise: Promise<T> } {
  const state = { settled: false, promise };
  promise.then(
    () => (state.settled = true),
    () => (state.settled = true),
  );
  return state;
}

// Each test is bounded well below the file's timeout, so a test that hangs is named, and the others still run.
describe('health checks against the real engine', { skip: await requireEngine(), timeout: 180_000 }, () => {
  after(() => run.cleanup());

  test('a waitHealthy start resolves only once the task has created the file its check reads', async () => {
    const id = taskId('ready');
    // The task creates /tmp/ready only after the test creates /tmp/go: the check fails until then.
    const start = track(
      driver.start(
        spec({
          command: ['sh', '-c', 'while [ ! -e /tmp/go ]; do sleep 0.05; done; echo ok > /tmp/ready; sleep 600'],
          // A long start period: failures before the file exists do not count, so the task cannot turn unhealthy.
          healthcheck: { command: ['cat', '/tmp/ready'], interval: '100ms', timeout: '5s', startPeriod: '10m' },
        }),
        { taskId: id, waitHealthy: true },
      ),
    );
    let handle: TaskHandle | undefined;
    try {
      const containerName = containerNameForTask({ taskId: id, ownerId: driver.ownerId });
      const starting = await pollUntil('a failed health probe', async () => {
        const state = await engine.inspectContainer(containerName).catch(() => undefined);
        return state?.health?.probes.some((probe) => probe.exitCode !== 0) ? state : undefined;
      });
      assert.equal(starting.health?.status, 'starting');
      assert.equal(start.settled, false, 'start resolved while the health check was failing');

      assert.equal((await runIn(starting.id, ': > /tmp/go')).code, 0);
      handle = await start.promise;
      const inspect = await engine.inspectContainer(handle.containerId);
      assert.equal(inspect.health?.status, 'healthy');
      assert.equal((await runIn(handle.containerId, 'cat /tmp/ready')).stdout, 'ok\n');
      // The inspect data shows the spec's check as the engine stores it: the exec form, nanoseconds.
      assert.deepEqual(inspect.healthcheck, {
        test: ['CMD', 'cat', '/tmp/ready'],
        intervalNs: 100_000_000,
        timeoutNs: 5_000_000_000,
        startPeriodNs: 600_000_000_000,
        retries: 3,
      });
      await handle.healthy();
    } finally {
      await (handle ?? (await start.promise.catch(() => undefined)))?.destroy();
    }
  });

  test('a check that always fails makes a waitHealthy start reject with BERTH_TASK_UNHEALTHY, leaving no container', async () => {
    const id = taskId('failing');
    await assert.rejects(
      driver.start(spec({ command: ['sleep', '600'], healthcheck: { command: ['cat', '/tmp/never'], interval: '50ms', retries: 2 } }), { taskId: id, waitHealthy: true }),
      (error: unknown) => {
        assert.ok(isBerthError(error, 'BERTH_TASK_UNHEALTHY'), String(error));
        assert.equal(error.context.reason, 'unhealthy');
        assert.match(error.message, /can't open '\/tmp\/never'/);
        return true;
      },
    );
    assert.deepEqual(await containersOf(id), []);
  });

  test('a shell check that fails turns the handle unhealthy: healthy() rejects, the task runs on', async () => {
    const handle = await driver.start(spec({ command: ['sleep', '600'], healthcheck: { shell: 'test -e /tmp/never', interval: '50ms', retries: 1 } }));
    try {
      await assert.rejects(handle.healthy(), (error: unknown) => isBerthError(error, 'BERTH_TASK_UNHEALTHY') && error.context.reason === 'unhealthy');
      const inspect = await engine.inspectContainer(handle.containerId);
      assert.deepEqual(inspect.healthcheck?.test, ['CMD-SHELL', 'test -e /tmp/never']);
      assert.equal(inspect.running, true);
      assert.equal(handle.phase, 'running');
    } finally {
      await handle.destroy();
    }
  });

  test('a task that ends before its check passes makes a waitHealthy start reject, leaving no container', async () => {
    const id = taskId('ends');
    await assert.rejects(
      driver.start(spec({ command: ['sh', '-c', 'exit 3'], healthcheck: { command: ['cat', '/tmp/ready'], startPeriod: '10m' } }), { taskId: id, waitHealthy: true }),
      (error: unknown) => isBerthError(error, 'BERTH_TASK_UNHEALTHY') && error.context.reason === 'ended',
    );
    assert.deepEqual(await containersOf(id), []);
  });

  test('aborting a waitHealthy start cancels it and removes the container', async () => {
    const id = taskId('abort');
    const controller = new AbortController();
    const start = driver.start(spec({ command: ['sleep', '600'], healthcheck: { command: ['cat', '/tmp/never'], startPeriod: '10m' } }), { taskId: id, waitHealthy: true, signal: controller.signal });
    await pollUntil('the container running', async () => ((await engine.inspectContainer(containerNameForTask({ taskId: id, ownerId: driver.ownerId })).catch(() => undefined))?.running ? true : undefined));
    controller.abort();
    await assert.rejects(start, (error: unknown) => isBerthError(error, 'BERTH_CANCELLED'));
    assert.deepEqual(await containersOf(id), []);
  });

  test('a task without any health check cannot be awaited: BERTH_TASK_STATE, and a waitHealthy start leaves nothing', async () => {
    const handle = await driver.start(spec({ command: ['sleep', '600'] }));
    try {
      assert.equal((await engine.inspectContainer(handle.containerId)).health, undefined);
      await assert.rejects(handle.healthy(), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
    } finally {
      await handle.destroy();
    }
    const id = taskId('no-check');
    await assert.rejects(driver.start(spec({ command: ['sleep', '600'] }), { taskId: id, waitHealthy: true }), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
    assert.deepEqual(await containersOf(id), []);
  });

  test('bad health check fields are rejected, naming the field and the rule, with nothing created', async () => {
    const before = await engine.listContainers({ all: true, labels: [run.labelFilter] });
    const invalid: Array<[string, RegExp, unknown]> = [
      ['healthcheck.interval', /must be at least 1ms/, { command: ['true'], interval: 0 }],
      ['healthcheck.timeout', /must be at least 1ms/, { command: ['true'], timeout: '0.4ms' }],
      ['healthcheck.startPeriod', /must be a duration/, { command: ['true'], startPeriod: 'later' }],
      ['healthcheck.retries', /must be at least 1/, { command: ['true'], retries: 0 }],
      ['healthcheck.command', /non-empty argv array/, { command: [] }],
      ['healthcheck.shell', /cannot be combined with command/, { command: ['true'], shell: 'true' }],
      ['healthcheck.disabled', /cannot be combined with interval/, { disabled: true, interval: '1s' }],
    ];
    for (const [field, rule, healthcheck] of invalid) {
      const id = taskId(`bad-${field.replace(/\W/g, '-')}`);
      await assert.rejects(driver.start(spec({ command: ['true'], healthcheck: healthcheck as TaskSpec['healthcheck'] }), { taskId: id }), (error: unknown) => {
        assert.ok(error instanceof ValidationError, String(error));
        assert.deepEqual(error.issues.map((i) => i.field), [field]);
        assert.match(error.message, rule);
        return true;
      });
      assert.deepEqual(await containersOf(id), []);
    }
    await assert.rejects(
      driver.start(spec({ command: ['true'], healthcheck: { disabled: true } }), { waitHealthy: true }),
      (error: unknown) => error instanceof ValidationError && error.issues[0]?.field === 'waitHealthy',
    );
    assert.equal((await engine.listContainers({ all: true, labels: [run.labelFilter] })).length, before.length);
  });

  describe('an image with a HEALTHCHECK of its own', () => {
    const image = `berth-test/health:${run.id}`;

    before(async () => {
      // The image's check passes once /tmp/ready exists; its start period keeps early failures from counting.
      const change = 'HEALTHCHECK --interval=100ms --start-period=10m CMD cat /tmp/ready';
      if (TEST_ENGINE_KIND === 'podman') {
        // Podman's commit takes no HEALTHCHECK change ("invalid instruction"); its build does, from a
        // Dockerfile over the test image (the docker CLI's legacy build through Podman's API, offline).
        const dir = await mkdtemp(path.join(tmpdir(), 'berth-health-image-'));
        try {
          await writeFile(path.join(dir, 'Dockerfile'), `FROM ${TEST_IMAGE}\n${change}\n`);
          await exec(DOCKER_CLI, ['build', '-q', '-t', image, dir], { env: { ...process.env, DOCKER_BUILDKIT: '0' } });
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
        return;
      }
      const source = await createTestContainer(engine, run, { cmd: ['true'] });
      await exec(DOCKER_CLI, ['commit', '--change', change, source, image]);
      await engine.removeContainer(source);
    });

    after(async () => {
      await run.cleanup();
      await engine.removeImage(image, { force: true });
    });

    test('the image’s own check is awaited when the spec has none', async () => {
      const handle = await driver.start(spec({ image, command: ['sh', '-c', 'echo > /tmp/ready; sleep 600'] }), { waitHealthy: true });
      try {
        const inspect = await engine.inspectContainer(handle.containerId);
        assert.equal(inspect.health?.status, 'healthy');
        assert.deepEqual(inspect.healthcheck?.test, ['CMD-SHELL', 'cat /tmp/ready']);
      } finally {
        await handle.destroy();
      }
    });

    test('disabled switches the image’s check off: Test ["NONE"], no health state', async () => {
      const handle = await driver.start(spec({ image, command: ['sleep', '600'], healthcheck: { disabled: true } }));
      try {
        const inspect = await engine.inspectContainer(handle.containerId);
        assert.deepEqual(inspect.healthcheck?.test, ['NONE']);
        assert.equal(inspect.health, undefined);
        await assert.rejects(handle.healthy(), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
      } finally {
        await handle.destroy();
      }
    });

    test('settings without a command keep the image’s command, and its settings where the spec gives none', async () => {
      const handle = await driver.start(spec({ image, command: ['sh', '-c', 'echo > /tmp/ready; sleep 600'], healthcheck: { retries: 5 } }), { waitHealthy: true });
      try {
        const inspect = await engine.inspectContainer(handle.containerId);
        assert.deepEqual(inspect.healthcheck, {
          test: ['CMD-SHELL', 'cat /tmp/ready'],
          intervalNs: 100_000_000,
          // Podman stores its default timeout (30 s) where Docker keeps 0 and applies the same default.
          timeoutNs: TEST_ENGINE_KIND === 'podman' ? 30_000_000_000 : 0,
          startPeriodNs: 600_000_000_000,
          retries: 5,
        });
      } finally {
        await handle.destroy();
      }
    });
  });
});

const berth = (args: string[]): Promise<CliResult> => runBerth(args, process.env);

describe('berth run health flags against the real engine', { skip: await requireEngine() }, () => {
  const cliRun = testRun(engine);
  const runArgs = (...rest: string[]): string[] => ['run', '-l', `berth-test.run=${cliRun.id}`, ...rest];
  after(() => cliRun.cleanup());

  test('--health-* flags reach the container as a CMD-SHELL check with their settings', async () => {
    const id = `${cliRun.id}-flags`;
    const result = await berth(runArgs('--keep', '--name', id, '--health-cmd', 'cat /tmp/ready || exit 1', '--health-interval', '250ms', '--health-timeout', '2s', '--health-retries', '4', '--health-start-period', '30s', TEST_IMAGE, 'true'));
    assert.equal(result.code, 0, result.stderr);
    const inspect = await engine.inspectContainer(containerNameForTask({ taskId: id, ownerId: 'cli' }));
    assert.deepEqual(inspect.healthcheck, {
      test: ['CMD-SHELL', 'cat /tmp/ready || exit 1'],
      intervalNs: 250_000_000,
      timeoutNs: 2_000_000_000,
      startPeriodNs: 30_000_000_000,
      retries: 4,
    });
    await engine.removeContainer(inspect.id);
  });

  test('--no-healthcheck gives Test ["NONE"]', async () => {
    const id = `${cliRun.id}-none`;
    const result = await berth(runArgs('--keep', '--name', id, '--no-healthcheck', TEST_IMAGE, 'true'));
    assert.equal(result.code, 0, result.stderr);
    const inspect = await engine.inspectContainer(containerNameForTask({ taskId: id, ownerId: 'cli' }));
    assert.deepEqual(inspect.healthcheck?.test, ['NONE']);
    await engine.removeContainer(inspect.id);
  });

  test('a bad health flag exits 2 naming the field and the rule, with nothing created', async () => {
    const id = `${cliRun.id}-bad`;
    const result = await berth(runArgs('--name', id, '--health-cmd', 'true', '--health-interval', '0s', TEST_IMAGE, 'true'));
    assert.equal(result.code, 2);
    assert.match(result.stderr, /--health-interval: must be at least 1ms/);
    const conflict = await berth(runArgs('--name', id, '--no-healthcheck', '--health-cmd', 'true', TEST_IMAGE, 'true'));
    assert.equal(conflict.code, 2);
    assert.match(conflict.stderr, /--no-healthcheck: cannot be combined with --health-cmd/);
    assert.deepEqual(await containersOf(id), []);
  });
});
