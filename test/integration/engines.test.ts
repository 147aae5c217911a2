/**
 * Engine detection and the per-engine adaptations against both real engines: the shared Docker and
 * Podman's Docker-compatible API (scripts/test-podman.sh). Runs in the Docker sweep of `npm test`;
 * the Podman suite (test/podman-suite.txt) runs the areas' own files against Podman.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { Engine } from '../../src/engine/engine.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { runToEnd } from '../../src/tasks/run.js';
import { runBerth, cleanEnv } from '../support/agent.js';
import { PODMAN_SOCKET, pollUntil, readAll, requireEngine, requirePodman, TEST_IMAGE, testRun } from '../support/engine.js';

const docker = new Engine({ socketPath: '/var/run/docker.sock' });
const podman = new Engine({ socketPath: PODMAN_SOCKET });

describe('engine detection against the real engines', { skip: (await requireEngine({ socketPath: '/var/run/docker.sock' })) || (await requirePodman()) }, () => {
  test('checkCompatible tells Docker from Podman, and detect gives each one\'s own version, API version, cgroup and storage driver', async () => {
    const [dockerVersion, podmanVersion] = await Promise.all([docker.checkCompatible(), podman.checkCompatible()]);
    assert.equal(dockerVersion.engine, 'docker');
    assert.equal(podmanVersion.engine, 'podman');
    assert.match(podmanVersion.version, /^\d+\.\d+\.\d+/, 'Podman\'s own version, not the API\'s');
    await Promise.all([docker.detect(), podman.detect()]);
    assert.equal(docker.facts?.name, 'Docker');
    assert.equal(podman.facts?.name, 'Podman');
    assert.match(podman.facts!.version, /^\d+\.\d+\.\d+/);
    assert.match(podman.facts!.apiVersion, /^1\.\d+$/);
    assert.ok(docker.facts!.cgroupVersion === 1 || docker.facts!.cgroupVersion === 2);
    assert.ok(podman.facts!.cgroupVersion === 1 || podman.facts!.cgroupVersion === 2);
    assert.notEqual(docker.facts!.storageDriver.driver, '');
    assert.ok(!podman.facts!.logDrivers.includes('local'), 'Podman lists no local log driver');
    assert.ok(docker.facts!.logDrivers.includes('local'));
  });

  describe('on Podman', () => {
    const run = testRun(podman);
    const driver = new TaskDriver({ engine: podman, ownerId: `test-${run.id}` });
    const spec = (overrides: Partial<TaskSpec>): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, stopGracePeriod: '1s', ...overrides });
    after(() => run.cleanup());

    test('a spec with the default local log driver runs: berth asks Podman for json-file, and the engine log holds the output', async () => {
      const handle = await driver.start(spec({ command: ['sh', '-c', 'echo logged; exit 4'] }), { output: 'engine-log' });
      try {
        const end = await handle.wait();
        assert.deepEqual(end, { kind: 'failed', exitCode: 4 });
        const inspect = await podman.inspectContainer(handle.containerId);
        assert.equal(inspect.hostConfig.logType, 'json-file');
        const logged: string[] = [];
        for await (const entry of podman.logEntries(handle.containerId)) logged.push(entry.data.toString());
        assert.deepEqual(logged, ['logged\n']);
      } finally {
        await handle.destroy();
      }
    });

    test('a task over its memory limit ends as oom with berth\'s reason, not a bare 137', async () => {
      const result = await runToEnd(driver, spec({ command: ['sh', '-c', 'x=$(dd if=/dev/zero bs=1M count=96 2>/dev/null | tr "\\0" a); echo ${#x}'], resources: { memory: '24m' } }));
      assert.equal(result.end.kind, 'oom');
      assert.ok(result.end.kind === 'oom' && /memory limit of 24 MiB/.test(result.end.hint));
    });

    test('a second start of a task whose container holds its name is refused at once (Podman answers 500 where Docker answers 409)', async () => {
      const taskId = `${run.id}-conflict`;
      const first = await driver.start(spec({ command: ['sleep', '30'] }), { taskId });
      try {
        const other = new TaskDriver({ engine: podman, ownerId: driver.ownerId });
        await assert.rejects(other.start(spec({ command: ['true'] }), { taskId }), (error: unknown) => isBerthError(error, 'BERTH_NAME_CONFLICT') || isBerthError(error, 'BERTH_TASK_EXISTS'));
        assert.equal((await podman.inspectContainer(first.containerId)).running, true, 'the first container is left alone');
      } finally {
        await first.destroy();
      }
    });

    test('stdin reaches the task whole: nothing of the attach request is fed to it', async () => {
      const { Readable } = await import('node:stream');
      const handle = await driver.start(spec({ command: ['sh', '-c', 'wc -c'], stdin: Readable.from(['0123456789\n']) }));
      const [stdout] = await Promise.all([readAll(handle.stdout), handle.wait()]);
      await handle.destroy();
      assert.equal(stdout.trim(), '11');
    });

    test('destroying a running task kills it at once, as docker rm -f does: its SIGTERM trap never runs', async () => {
      // Podman's compatible forced removal sends the stop signal and waits the stop timeout first.
      const handle = await driver.start(spec({ command: ['sh', '-c', 'trap "echo term; exit 3" TERM; echo ready; while :; do sleep 0.1; done'], stopGracePeriod: '30s' }));
      let output = '';
      handle.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      await pollUntil('the task to be ready', () => (output.includes('ready') ? true : undefined), { timeoutMs: 30_000 });
      await handle.destroy();
      assert.doesNotMatch(output, /term/);
      await assert.rejects(podman.inspectContainer(handle.containerId), (error) => isBerthError(error, 'BERTH_ENGINE_NOT_FOUND'));
    });

    test('pause, unpause, exec and its resize work on a running task', async () => {
      const handle = await driver.start(spec({ command: ['sleep', '60'], tty: true }));
      try {
        await handle.pause();
        assert.equal((await podman.inspectContainer(handle.containerId)).paused, true);
        await handle.unpause();
        const session = await podman.exec(handle.containerId, { cmd: ['sh', '-c', 'sleep 0.3; echo done'], tty: true });
        await session.resize({ rows: 30, columns: 100 });
        const [output, code] = await Promise.all([readAll(session.stdout), session.exitCode()]);
        assert.equal(code, 0);
        assert.match(output, /done/);
      } finally {
        await handle.destroy();
      }
    });

    test('berth run against Podman (DOCKER_HOST) gives the task\'s exit code and output, and the OOM reason', async () => {
      const env = cleanEnv({ DOCKER_HOST: `unix://${PODMAN_SOCKET}` });
      const ok = await runBerth(['run', '--label', `${Object.keys(run.labels)[0]}=${run.id}`, TEST_IMAGE, 'sh', '-c', 'echo hi; exit 3'], env);
      assert.equal(ok.code, 3, ok.stderr);
      assert.equal(ok.stdout, 'hi\n');
      const oom = await runBerth(['run', '--label', `${Object.keys(run.labels)[0]}=${run.id}`, '--memory', '24m', TEST_IMAGE, 'sh', '-c', 'x=$(dd if=/dev/zero bs=1M count=96 2>/dev/null | tr "\\0" a); echo ${#x}'], env);
      assert.equal(oom.code, 137);
      assert.match(oom.stderr, /out of memory/);
    });
  });
});
