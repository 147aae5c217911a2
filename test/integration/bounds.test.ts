import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isBerthError, ValidationError } from '../../src/common/errors.js';
import { MAX_SIZE_BYTES } from '../../src/common/units.js';
import { SPEC_BOUNDS, type TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { cleanEnv, runBerth, startServedAgent, type ServedAgent } from '../support/agent.js';
import { readAll, requireEngine, TEST_IMAGE, testRun, testEngine, TEST_ENGINE_SOCKET } from '../support/engine.js';

const engine = testEngine();
const run = testRun(engine);
const driver = new TaskDriver({ engine, ownerId: `test-${run.id}` });
const spec = (overrides: Partial<TaskSpec>): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, ...overrides });
const DAY_NS = 86_400_000_000_000;

describe('values up to every bound work against the real engine', { skip: await requireEngine() }, () => {
  after(() => run.cleanup());

  test('a task at every upper bound of the spec is created, started and inspected with those values', async () => {
    const handle = await driver.start(
      spec({
        command: ['sh', '-c', 'cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; grep " /scratch " /proc/mounts'],
        resources: { memory: '1p', memoryReservation: '1p', cpuMilli: SPEC_BOUNDS.cpuMilli.max, cpuShares: SPEC_BOUNDS.cpuShares.max, pidsLimit: SPEC_BOUNDS.pidsLimit.max },
        mounts: [{ type: 'tmpfs', target: '/scratch', size: '1p' }],
        log: { driver: 'local', maxSize: '1p', maxFiles: SPEC_BOUNDS.logMaxFiles.max },
        timeout: '365d',
        stopGracePeriod: '24h',
        healthcheck: { command: ['true'], interval: '24h', timeout: '24h', startPeriod: '24h', retries: SPEC_BOUNDS.healthRetries.max },
      }),
    );
    try {
      const [stdout, end] = await Promise.all([readAll(handle.stdout), handle.wait()]);
      assert.deepEqual(end, { kind: 'success', exitCode: 0 });
      const [pidsMax, tmpfs] = stdout.trim().split('\n');
      assert.equal(pidsMax, String(SPEC_BOUNDS.pidsLimit.max));
      assert.match(tmpfs ?? '', /size=1099511627776k/, '1 PiB in KiB, as the kernel shows it');
      const inspect = await engine.inspectContainer(handle.containerId);
      assert.deepEqual(inspect.healthcheck, { test: ['CMD', 'true'], intervalNs: DAY_NS, timeoutNs: DAY_NS, startPeriodNs: DAY_NS, retries: SPEC_BOUNDS.healthRetries.max });
      assert.equal(inspect.hostConfig.memoryBytes, MAX_SIZE_BYTES);
      assert.equal(inspect.hostConfig.memorySwapBytes, MAX_SIZE_BYTES);
      assert.equal(inspect.hostConfig.memoryReservationBytes, MAX_SIZE_BYTES);
      assert.equal(inspect.hostConfig.cpuQuota, SPEC_BOUNDS.cpuMilli.max * 100);
      assert.equal(inspect.hostConfig.cpuShares, SPEC_BOUNDS.cpuShares.max);
      assert.equal(inspect.hostConfig.pidsLimit, SPEC_BOUNDS.pidsLimit.max);
      assert.deepEqual(inspect.hostConfig.logConfig, { 'max-size': '1048576g', 'max-file': '100' });
      const raw = await rawStopTimeout(handle.containerId);
      assert.equal(raw, 86_400);
    } finally {
      await handle.destroy();
    }
  });

  test('a task at every lower bound of the spec runs: the engine refuses none of them', async () => {
    const handle = await driver.start(
      spec({
        command: ['true'],
        resources: { memory: '6m', memoryReservation: '6m', cpuMilli: SPEC_BOUNDS.cpuMilli.min, cpuShares: SPEC_BOUNDS.cpuShares.min, pidsLimit: SPEC_BOUNDS.pidsLimit.min },
        mounts: [{ type: 'tmpfs', target: '/scratch', size: 1 }],
        log: { driver: 'json-file', maxSize: '1k', maxFiles: 1 },
        stopGracePeriod: 0,
        healthcheck: { command: ['true'], interval: '1ms', timeout: '1ms', startPeriod: '1ms', retries: 1 },
      }),
    );
    try {
      assert.deepEqual(await handle.wait(), { kind: 'success', exitCode: 0 });
      const inspect = await engine.inspectContainer(handle.containerId);
      assert.equal(inspect.hostConfig.cpuQuota, 1000);
      assert.equal(inspect.healthcheck?.intervalNs, 1_000_000);
    } finally {
      await handle.destroy();
    }
  });

  test('a 30-day timeout does not end the task at once: it runs to its own end', async () => {
    const handle = await driver.start(spec({ command: ['sh', '-c', 'sleep 1; exit 3'], timeout: '30d' }));
    try {
      assert.deepEqual(await handle.wait(), { kind: 'failed', exitCode: 3 });
    } finally {
      await handle.destroy();
    }
  });

  test('a stop with a grace period past its bound is refused, naming graceMs, and leaves the task running', async () => {
    const handle = await driver.start(spec({ command: ['sleep', '300'] }));
    try {
      await assert.rejects(handle.stop({ graceMs: SPEC_BOUNDS.stopGracePeriod.maxMs + 1 }), (error: unknown) => {
        assert.ok(error instanceof ValidationError);
        assert.deepEqual(error.issues, [{ field: 'graceMs', rule: 'must be at most 24h (86400000 ms)' }]);
        return true;
      });
      assert.equal((await engine.inspectContainer(handle.containerId)).running, true);
      await handle.stop({ graceMs: 0 });
      assert.equal((await handle.wait()).kind, 'cancelled');
    } finally {
      await handle.destroy();
    }
  });

  test('the driver refuses an invalid image reference before anything is made, naming image', async () => {
    for (const image of ['Busybox:latest', 'busy..box', `busybox@sha256:${'a'.repeat(63)}`, 'busybox@']) {
      await assert.rejects(driver.start(spec({ image, command: ['true'] })), (error: unknown) => {
        assert.ok(error instanceof ValidationError);
        assert.deepEqual(error.issues.map((i) => i.field), ['image']);
        return true;
      });
    }
    assert.deepEqual(await run.leftovers(), []);
  });

  test('the CLI refuses an invalid image reference and a timeout past its bound, exit 2, naming the image and the flag', async () => {
    const image = await runBerth(['run', '-l', `berth-test.run=${run.id}`, 'busy..box', 'true'], cleanEnv());
    assert.equal(image.code, 2, image.stderr);
    assert.match(image.stderr, /image: "busy\.\.box" is not a valid image reference/);
    const timeout = await runBerth(['run', '-l', `berth-test.run=${run.id}`, '--timeout', '366d', TEST_IMAGE, 'true'], cleanEnv());
    assert.equal(timeout.code, 2, timeout.stderr);
    assert.match(timeout.stderr, /--timeout: must be at most 365d/);
    assert.deepEqual(await run.leftovers(), []);
  });

  describe('the agent', () => {
    let agent: ServedAgent;
    before(async () => {
      agent = await startServedAgent(TEST_ENGINE_SOCKET);
    });
    after(() => agent.close());

    test('answers 400 naming spec.image for an invalid reference, and spec.timeout for one past its bound', async () => {
      for (const [body, field] of [
        [{ image: 'BusyBox', command: ['true'], labels: { ...run.labels } }, 'spec.image'],
        [{ image: `busybox:${'t'.repeat(129)}`, labels: { ...run.labels } }, 'spec.image'],
        [{ image: TEST_IMAGE, timeout: '365d1ms', labels: { ...run.labels } }, 'spec.timeout'],
        [{ image: TEST_IMAGE, resources: { pidsLimit: 4_194_305 }, labels: { ...run.labels } }, 'spec.resources.pidsLimit'],
      ] as const) {
        await assert.rejects(agent.client.submit({ spec: body as TaskSpec }), (error: unknown) => {
          assert.ok(isBerthError(error, 'BERTH_VALIDATION'), String(error));
          assert.ok(error instanceof ValidationError);
          assert.equal(error.context.status, 400);
          assert.deepEqual(error.issues.map((i) => i.field), [field]);
          return true;
        });
      }
      assert.deepEqual(await run.leftovers(), []);
    });
  });
});

/** StopTimeout as the engine stored it (berth's inspect type does not carry it). */
async function rawStopTimeout(containerId: string): Promise<number | undefined> {
  const { request } = await import('node:http');
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: TEST_ENGINE_SOCKET, path: `/containers/${containerId}/json` }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve((JSON.parse(body) as { Config: { StopTimeout?: number } }).Config.StopTimeout));
    });
    req.on('error', reject).end();
  });
}
