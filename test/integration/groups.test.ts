import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, describe, test } from 'node:test';
import { isBerthError, ValidationError } from '../../src/common/errors.js';
import { groupVolumeName } from '../../src/common/labels.js';
import { GroupRunner } from '../../src/groups/runner.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { pollUntil, readAll, requireEngine, TEST_IMAGE, testContainerBody, testRun, testEngine } from '../support/engine.js';
import { CollectedOutput, groupLeftovers, removeRunObjects } from '../support/groups.js';

const engine = testEngine();
const run = testRun(engine);
const driver = new TaskDriver({ engine, ownerId: `test-${run.id}` });
const runner = new GroupRunner({ driver, engine, labels: run.labels });
const NOTHING = { containers: [], volumes: [], networks: [] };

/** A task of a group: the test image, a shell script, stopped at once (no grace for `sleep`, which ignores SIGTERM), at most a minute. */
const task = (name: string, script: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  name,
  image: TEST_IMAGE,
  command: ['sh', '-c', script],
  stopSignal: 'SIGKILL',
  // A task that waits for something that never comes fails its test, not the file's time limit.
  timeout: '60s',
  ...extra,
});

function httpGet(host: string, port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.once('end', () => resolve(body));
    });
    req.once('timeout', () => req.destroy(new Error('timed out')));
    req.once('error', reject);
    req.end();
  });
}

describe('task groups through the library against the real engine', { skip: await requireEngine() }, () => {
  after(() => removeRunObjects(engine, run));

  test('two tasks of a group reach each other on localhost, and the group ends with its main tasks', async () => {
    const output = new CollectedOutput();
    // An HTTP server, not `nc -l`: busybox nc may end on its stdin's EOF before the client's bytes arrive.
    const serve = 'mkdir -p /tmp/www && echo ping-over-localhost > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www';
    const group = await runner.start(
      {
        name: 'localhost',
        network: { mode: 'none' },
        tasks: [task('server', serve, { lifecycle: 'sidecar' }), task('client', 'until wget -qO- http://127.0.0.1:8080/ 2>/dev/null; do sleep 0.1; done')],
      },
      { output: output.sinks },
    );
    const end = await group.wait();
    assert.deepEqual(end, { kind: 'success', exitCode: 0 });
    assert.equal(output.of('client').trim(), 'ping-over-localhost');
    assert.equal(group.state, 'removed');
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });

  test('a prestart task runs to completion first, and the main task reads what it left in the shared directory', async () => {
    const output = new CollectedOutput();
    const started: string[] = [];
    const group = await runner.start(
      {
        name: 'prestart',
        network: { mode: 'none' },
        tasks: [task('main', 'cat /alloc/ready'), task('setup', 'sleep 0.5; echo prepared-by-setup > /alloc/ready', { lifecycle: 'prestart' })],
      },
      { output: output.sinks },
    );
    group.on('task-started', (e) => started.push(e.task));
    group.on('task-ended', (e) => started.push(`${e.task}:${e.end.kind}`));
    assert.deepEqual([...group.tasks.keys()], ['setup'], 'start resolves with the prestart task running, the main task not started');
    const end = await group.wait();
    assert.deepEqual(end, { kind: 'success', exitCode: 0 });
    assert.deepEqual(started, ['setup:success', 'main', 'main:success']);
    assert.equal(output.of('main').trim(), 'prepared-by-setup');
  });

  test('a failed prestart task fails the group: the main task never starts and nothing is left behind', async () => {
    const started: string[] = [];
    const group = await runner.start({
      name: 'bad-prestart',
      tasks: [task('main', 'echo should-never-run'), task('setup', 'exit 3', { lifecycle: 'prestart' }), task('proxy', 'sleep 600', { lifecycle: 'sidecar' })],
    });
    group.on('task-started', (e) => started.push(e.task));
    const end = await group.wait();
    assert.equal(end.kind, 'failed');
    assert.equal(end.exitCode, 3);
    assert.equal(end.task, 'setup');
    assert.deepEqual(started, [], 'neither the main task nor the sidecar started');
    assert.deepEqual(
      group.members().map((m) => [m.name, m.end?.kind]),
      [
        ['main', 'cancelled'],
        ['setup', 'failed'],
        ['proxy', 'cancelled'],
      ],
    );
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });

  test('a sidecar is stopped once the main task ends, and the group ends with the main task\'s exit code', async () => {
    const group = await runner.start({
      name: 'sidecar',
      network: { mode: 'none' },
      tasks: [task('proxy', 'sleep 600', { lifecycle: 'sidecar' }), task('main', 'sleep 0.3; exit 7')],
    });
    const ends = new Map<string, string>();
    group.on('task-ended', (e) => ends.set(e.task, e.end.kind));
    assert.deepEqual([...group.tasks.keys()].sort(), ['main', 'proxy']);
    const end = await group.wait();
    assert.deepEqual(end, { kind: 'failed', exitCode: 7, task: 'main' });
    assert.equal(ends.get('proxy'), 'cancelled', 'the sidecar was stopped, not left running');
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });

  test('the group-shared directory is visible to every task, at the path the group names', async () => {
    const output = new CollectedOutput();
    const group = await runner.start(
      {
        name: 'shared',
        network: { mode: 'none' },
        sharedDir: '/shared',
        tasks: [
          task('writer', 'echo from-prestart > /shared/p', { lifecycle: 'prestart' }),
          task('helper', 'until [ -f /shared/m ]; do sleep 0.1; done; echo from-sidecar > /shared/s; sleep 600', { lifecycle: 'sidecar' }),
          task('main', 'echo from-main > /shared/m; until [ -f /shared/s ]; do sleep 0.1; done; cat /shared/p /shared/s /shared/m'),
        ],
      },
      { output: output.sinks },
    );
    const end = await group.wait();
    assert.equal(end.kind, 'success');
    assert.equal(output.of('main'), 'from-prestart\nfrom-sidecar\nfrom-main\n');
  });

  test('a dynamic group port is reachable from the host at the published address', async () => {
    const group = await runner.start({
      name: 'ports',
      network: { ports: [{ container: 8080 }] },
      tasks: [task('index', 'echo served-by-the-group > /alloc/index.html', { lifecycle: 'prestart' }), task('web', 'httpd -f -p 8080 -h /alloc')],
    });
    try {
      await pollUntil('the web task to run', () => (group.tasks.has('web') ? true : undefined), { timeoutMs: 30_000 });
      const ports = await group.ports();
      assert.equal(ports.length, 1);
      const [port] = ports;
      assert.equal(port!.container, 8080);
      assert.equal(port!.hostIp, '127.0.0.1', 'loopback by default');
      assert.ok(port!.host > 0);
      const body = await pollUntil('the published port to answer', () => httpGet(port!.hostIp, port!.host, '/index.html').catch(() => undefined), { timeoutMs: 20_000, intervalMs: 100 });
      assert.equal(body.trim(), 'served-by-the-group');
    } finally {
      assert.equal((await group.stop()).kind, 'cancelled');
    }
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });

  test('a private network gives the group DNS names (its tasks\' names and its aliases) reachable from another container on it', async () => {
    const group = await runner.start({
      name: 'private',
      network: { mode: 'private', aliases: ['api'] },
      tasks: [task('index', 'echo private-hello > /alloc/index.html', { lifecycle: 'prestart' }), task('web', 'httpd -f -p 8080 -h /alloc')],
    });
    try {
      assert.ok(group.names.network, 'the group has its own network');
      const id = await engine.createContainer(
        run.name('private-client'),
        testContainerBody(run, { cmd: ['sh', '-c', 'for name in api web; do n=0; until wget -qO- http://$name:8080/index.html; do n=$((n+1)); [ $n -lt 300 ] || exit 9; sleep 0.2; done; done'], hostConfig: { NetworkMode: group.names.network } }),
      );
      try {
        await engine.startContainer(id);
        const exit = await engine.waitContainer(id);
        assert.equal(exit.exitCode, 0);
        const logged: string[] = [];
        for await (const entry of engine.logEntries(id)) logged.push(entry.data.toString());
        assert.equal(logged.join(''), 'private-hello\nprivate-hello\n');
      } finally {
        await engine.removeContainer(id);
      }
    } finally {
      await group.stop();
    }
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });

  test('aborting the caller\'s signal stops the group and removes everything', async () => {
    const abort = new AbortController();
    const group = await runner.start({ name: 'aborted', tasks: [task('main', 'sleep 600')] }, { signal: abort.signal });
    assert.equal(group.state, 'running');
    abort.abort();
    assert.deepEqual(await group.wait(), { kind: 'cancelled' });
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });

  test('a task whose image is missing fails the start before anything is made', async () => {
    await assert.rejects(
      runner.start({ name: 'no-image', tasks: [task('main', 'true', { image: 'berth-test/no-such-image:nope', pull: 'never' })] }),
      (error: unknown) => isBerthError(error),
    );
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });

  test('a task whose command cannot run fails the group and stops the others (start rejects, nothing left)', async () => {
    await assert.rejects(
      runner.start({ name: 'bad-command', tasks: [task('proxy', 'sleep 600', { lifecycle: 'sidecar' }), { name: 'main', image: TEST_IMAGE, command: ['/no/such/command'] }] }),
      (error: unknown) => isBerthError(error),
    );
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });

  test('a group whose volume name is held by a volume that is not the group\'s fails with BERTH_GROUP_INFRA and leaves that volume alone', async () => {
    const groupId = `held-${run.id}`;
    const volume = groupVolumeName({ groupId, ownerId: driver.ownerId });
    await engine.createVolume(volume, { ...run.labels });
    try {
      await assert.rejects(runner.start({ name: 'held', tasks: [task('main', 'true')] }, { groupId }), (error: unknown) => isBerthError(error, 'BERTH_GROUP_INFRA'));
      const left = await groupLeftovers(engine, run);
      assert.deepEqual(left, { containers: [], volumes: [volume], networks: [] }, 'only the foreign volume, untouched');
    } finally {
      await engine.removeVolume(volume);
    }
  });

  test('a group joining a named network the engine does not have is refused naming the field, and nothing is made', async () => {
    await assert.rejects(
      runner.start({ name: 'no-network', network: { networks: [{ name: `berth-test-no-such-${run.id}` }] }, tasks: [task('main', 'true')] }),
      (error: unknown) => error instanceof ValidationError && error.issues.some((i) => i.field === 'network.networks[0].name' && /does not exist/.test(i.rule)),
    );
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });

  test('a bad group is refused with every field named, and nothing is made', async () => {
    await assert.rejects(
      runner.start({ name: 'bad', tasks: [{ name: 'a', image: TEST_IMAGE, resources: { memory: 'lots' } }, { name: 'a', image: TEST_IMAGE, network: 'host' }] }),
      (error: unknown) => {
        assert.ok(error instanceof ValidationError);
        const fields = error.issues.map((i) => i.field);
        assert.ok(fields.includes('tasks[0].resources.memory'), fields.join(', '));
        assert.ok(fields.includes('tasks[1].name'), fields.join(', '));
        assert.ok(fields.includes('tasks[1].network'), fields.join(', '));
        return true;
      },
    );
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });

  test('a task handle of a running group reads its output and answers like a task\'s', async () => {
    const group = await runner.start({ name: 'handles', network: { mode: 'none' }, tasks: [task('main', 'echo hi; sleep 600')] });
    try {
      const handle = group.tasks.get('main');
      assert.ok(handle);
      assert.equal(handle.phase, 'running');
      const inspect = await engine.inspectContainer(handle.containerId);
      assert.equal(inspect.labels['io.berth.group-task'], 'main');
      assert.equal(inspect.labels['io.berth.group-id'], group.id);
      assert.equal(await readAll(handle.stdout), '', 'without output sinks nothing is attached');
    } finally {
      await group.destroy();
    }
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });
});
