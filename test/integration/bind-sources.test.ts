import assert from 'node:assert/strict';
import { renameSync, symlinkSync } from 'node:fs';
import { mkdir, mkdtemp, readlink, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ValidationError } from '../../src/common/errors.js';
import { LABELS } from '../../src/common/labels.js';
import { Engine } from '../../src/engine/engine.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { toCreatePlan } from '../../src/spec/translate.js';
import { withResolvedSources } from '../../src/tasks/bind-sources.js';
import { TaskDriver, type TaskDriverOptions } from '../../src/tasks/driver.js';
import { runToEnd } from '../../src/tasks/run.js';
import { cleanEnv, runBerth, startServedAgent, type ServedAgent } from '../support/agent.js';
import { pollUntil, readAll, requireEngine, TEST_IMAGE, testRun } from '../support/engine.js';
import { FaultProxy } from '../support/fault-proxy.js';

const ENGINE_SOCKET = '/var/run/docker.sock';
const engine = new Engine({ socketPath: ENGINE_SOCKET });
const run = testRun(engine);
const taskId = (suffix: string): string => `${run.id}-${suffix}`;
const spec = (overrides: Partial<TaskSpec>): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, stopGracePeriod: '1s', ...overrides });
const bindOf = (source: string, target = '/data', readOnly = false) => ({ type: 'bind' as const, source, target, readOnly });
const driverWith = (policy: TaskDriverOptions['policy']): TaskDriver => new TaskDriver({ engine, ownerId: `test-${run.id}`, policy });

/** A start refused as it must be: a ValidationError naming mounts[i].source, and nothing created in the engine. */
async function assertStartRefused(driver: TaskDriver, source: string, rule: RegExp): Promise<void> {
  const id = taskId(`refused-${Math.random().toString(36).slice(2, 8)}`);
  await assert.rejects(driver.start(spec({ command: ['true'], mounts: [bindOf(source)] }), { taskId: id }), (error: unknown) => {
    assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${String(error)}`);
    assert.equal(error.issues[0]!.field, 'mounts[0].source');
    assert.match(error.issues[0]!.rule, rule);
    return true;
  });
  const made = await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] });
  assert.deepEqual(made, [], `the engine has a container for the refused task ${id}`);
}

describe('bind sources through the library driver, against the real engine', { skip: await requireEngine() }, () => {
  let tree: string;
  let allowed: string;

  before(async () => {
    tree = await realpath(await mkdtemp(path.join(os.tmpdir(), 'berth-binds-')));
    allowed = path.join(tree, 'allowed');
    await mkdir(allowed);
  });
  after(async () => {
    await run.cleanup();
    await rm(tree, { recursive: true, force: true });
  });

  test('refuses a pre-existing symlink in the allowed directory that points at /run, creating nothing', async () => {
    await symlink('/run', path.join(allowed, 'runlink'));
    await assertStartRefused(driverWith({ allowedBindSources: [allowed] }), path.join(allowed, 'runlink'), /resolved: \/run\b.*allow-list/);
    // With no allow-list at all, /run is still the engine socket's directory.
    await assertStartRefused(driverWith({}), path.join(allowed, 'runlink'), /exposes the engine's socket/);
  });

  test('refuses a symlink that an earlier task planted through a read-write mount of the allowed directory', async () => {
    const driver = driverWith({ allowedBindSources: [allowed] });
    const planter = await runToEnd(
      driver,
      spec({ command: ['sh', '-c', 'ln -s /run/docker.sock /allowed/sock && ln -s / /allowed/root'], mounts: [bindOf(allowed, '/allowed')] }),
      { taskId: taskId('planter') },
    );
    assert.deepEqual(planter.end, { kind: 'success', exitCode: 0 });
    assert.equal(await readlink(path.join(allowed, 'sock')), '/run/docker.sock');
    await assertStartRefused(driver, path.join(allowed, 'sock'), /allow-list/);
    await assertStartRefused(driver, path.join(allowed, 'root'), /resolved: \/\)/);
    await assertStartRefused(driverWith({}), path.join(allowed, 'sock'), /exposes the engine's socket/);
    await assertStartRefused(driverWith({}), path.join(allowed, 'root'), /exposes the engine's socket/);
  });

  test("refuses the engine's socket, its directory and / by default, with no allow-list at all", async () => {
    const driver = new TaskDriver({ engine, ownerId: `test-${run.id}` });
    await assertStartRefused(driver, ENGINE_SOCKET, /exposes the engine's socket/);
    await assertStartRefused(driver, '/var/run', /exposes the engine's socket/);
    await assertStartRefused(driver, '/', /exposes the engine's socket/);
  });

  test("mounts the engine's socket when the policy names it explicitly", async () => {
    const check = spec({ command: ['sh', '-c', 'test -S /engine.sock'], mounts: [bindOf(ENGINE_SOCKET, '/engine.sock')] });
    const byFlag = await runToEnd(driverWith({ allowEngineSocket: true }), check, { taskId: taskId('socket-flag') });
    assert.deepEqual(byFlag.end, { kind: 'success', exitCode: 0 });
    const byList = await runToEnd(driverWith({ allowedBindSources: [ENGINE_SOCKET] }), check, { taskId: taskId('socket-listed') });
    assert.deepEqual(byList.end, { kind: 'success', exitCode: 0 });
  });

  test('a bind inside an allowed root (given as a symlink) works, the task sees its files, and the engine is given the resolved path', async () => {
    const real = path.join(tree, 'real');
    await mkdir(path.join(real, 'sub'), { recursive: true });
    await writeFile(path.join(real, 'sub', 'hello.txt'), 'hello from the host\n');
    const rootLink = path.join(tree, 'rootlink');
    await symlink(real, rootLink);
    const driver = driverWith({ allowedBindSources: [rootLink] });
    const handle = await driver.start(spec({ command: ['cat', '/data/hello.txt'], mounts: [bindOf(path.join(rootLink, 'sub'), '/data', true)] }), { taskId: taskId('legit') });
    try {
      const [stdout, end] = await Promise.all([readAll(handle.stdout), handle.wait()]);
      assert.equal(stdout, 'hello from the host\n');
      assert.deepEqual(end, { kind: 'success', exitCode: 0 });
      const inspect = await engine.inspectContainer(handle.containerId);
      assert.deepEqual(inspect.mounts.map((m) => [m.source, m.destination, m.readWrite]), [[path.join(real, 'sub'), '/data', false]]);
      // The handle keeps the spec as it was written.
      assert.deepEqual(handle.spec.mounts.map((m) => m.type === 'bind' && m.source), [path.join(rootLink, 'sub')]);
    } finally {
      await handle.destroy();
    }
  });

  test('refuses a source that does not exist rather than letting the engine fail or create it', async () => {
    await assertStartRefused(driverWith({ allowedBindSources: [allowed] }), path.join(allowed, 'not-there'), /does not exist/);
  });

  test('recover() checks the binds of a container that was created but never started, and removes it rather than start it once a source escapes', async () => {
    const driver = driverWith({ allowedBindSources: [allowed] });
    const source = path.join(allowed, 'recovered');
    await mkdir(source);
    const id = taskId('recover-swapped');
    const taskSpec = spec({ command: ['true'], mounts: [bindOf(source)] });
    // What a start that died between its create and its start leaves: the container, created from the checked, resolved source.
    const resolved = driver.resolve(taskSpec);
    const plan = toCreatePlan(withResolvedSources(resolved, driver.resolveBindSources(resolved)), { taskId: id, ownerId: driver.ownerId, startAttempt: id });
    await engine.createContainer(plan.name, plan.body);
    // Swapped meanwhile for a symlink to /run.
    await rm(source, { recursive: true });
    await symlink('/run', source);

    await assert.rejects(driver.recover(id, taskSpec), (error: unknown) => error instanceof ValidationError && /mounts\[0\]\.source/.test(error.issues[0]!.field));
    assert.deepEqual(await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] }), [], 'the never-started container is removed');
  });
});

describe("the agent's own state is never a bind source, against the real engine", { skip: await requireEngine() }, () => {
  let agent: ServedAgent;

  before(async () => {
    // The allow-list holds the directory that holds the agent's data directory (the system's temporary directory).
    agent = await startServedAgent(ENGINE_SOCKET, { policy: { allowedBindSources: [os.tmpdir()] } });
  });
  after(async () => {
    await agent?.close();
    await run.cleanup();
  });

  test('a submit binding the data directory, its token or a directory above it is refused with 400, and nothing is created', async () => {
    const planted = await mkdtemp(path.join(os.tmpdir(), 'berth-binds-state-'));
    await symlink(agent.dataDir, path.join(planted, 'state'));
    try {
      const sources = [agent.dataDir, path.join(agent.dataDir, 'token'), os.tmpdir(), path.join(planted, 'state')];
      for (const [i, source] of sources.entries()) {
        const id = taskId(`agent-state-${i}`);
        const answer = await postTask(agent, { id, spec: spec({ command: ['true'], mounts: [bindOf(source)] }) });
        assert.equal(answer.status, 400, source);
        assert.match(answer.json.error?.message ?? '', /spec\.mounts\[0\]\.source: .*berth protects/, source);
        assert.deepEqual(await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] }), []);
      }
      // A directory beside the data directory under the allowed root is still a bind source.
      const ok = await agent.client.submit({ id: taskId('agent-state-ok'), spec: spec({ command: ['true'], mounts: [bindOf(planted, '/data', true)] }) });
      const ended = await pollUntil('the task to end', async () => {
        const view = await agent.client.get(ok.id);
        return view.state === 'exited' ? view : undefined;
      }, { timeoutMs: 60_000, intervalMs: 100 });
      assert.equal(ended.exitCode, 0);
    } finally {
      await rm(planted, { recursive: true, force: true });
    }
  });
});

/** A raw POST /v1/tasks through the agent's socket, to see the status and body a client gets. */
function postTask(agent: ServedAgent, body: unknown): Promise<{ status: number; json: { error?: { code: string; message: string } } }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: agent.serving.socketPath, method: 'POST', path: '/v1/tasks', headers: { authorization: `Bearer ${agent.runtime.token}`, 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (d: string) => (text += d));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as { error?: { code: string; message: string } } }));
      },
    );
    req.once('error', reject);
    req.end(JSON.stringify(body));
  });
}

describe("bind sources through the agent's API, against the real engine", { skip: await requireEngine() }, () => {
  let tree: string;
  let allowed: string;
  let agent: ServedAgent;

  before(async () => {
    tree = await realpath(await mkdtemp(path.join(os.tmpdir(), 'berth-binds-agent-')));
    allowed = path.join(tree, 'allowed');
    await mkdir(allowed);
    agent = await startServedAgent(ENGINE_SOCKET, { policy: { allowedBindSources: [allowed] }, admission: { maxConcurrent: 1 } });
  });
  after(async () => {
    await agent?.close();
    await run.cleanup();
    await rm(tree, { recursive: true, force: true });
  });

  test('a submit binding a symlink (in the allowed directory) to /run is refused with 400 naming the field, and nothing is recorded or created', async () => {
    await symlink('/run', path.join(allowed, 'runlink'));
    const id = taskId('agent-runlink');
    const answer = await postTask(agent, { id, spec: spec({ command: ['true'], mounts: [bindOf(path.join(allowed, 'runlink'))] }) });
    assert.equal(answer.status, 400);
    assert.equal(answer.json.error?.code, 'BERTH_VALIDATION');
    assert.match(answer.json.error?.message ?? '', /spec\.mounts\[0\]\.source: .*resolved: \/run\b.*allow-list/);
    await assert.rejects(agent.client.get(id), (error: unknown) => (error as { code?: string }).code === 'BERTH_TASK_NOT_FOUND');
    assert.deepEqual(await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] }), []);
  });

  test('a submit binding the engine socket is refused with 400 even when the allow-list holds a directory above it', async () => {
    const answer = await postTask(agent, { id: taskId('agent-socket'), spec: spec({ command: ['true'], mounts: [bindOf(ENGINE_SOCKET)] }) });
    assert.equal(answer.status, 400);
    assert.match(answer.json.error?.message ?? '', /spec\.mounts\[0\]\.source/);
  });

  test('a source swapped for a symlink by another task after the submit is refused before the create: the task fails, nothing is created', async () => {
    const target = path.join(allowed, 'x');
    await mkdir(target);
    // The planter holds the only slot until the test lets it swap allowed/x for a symlink to /run.
    const planter = await agent.client.submit({
      id: taskId('agent-planter'),
      spec: spec({ command: ['sh', '-c', 'while [ ! -e /allowed/go ]; do sleep 0.1; done; rmdir /allowed/x && ln -s /run /allowed/x'], mounts: [bindOf(allowed, '/allowed')] }),
    });
    const victimId = taskId('agent-victim');
    const victim = await agent.client.submitTask({ id: victimId, spec: spec({ command: ['true'], mounts: [bindOf(target)] }) });
    assert.equal(victim.created, true, 'allowed/x is a real directory at submit, so the submit is accepted');
    assert.equal(victim.task.state, 'pending');
    await writeFile(path.join(allowed, 'go'), '');

    const planted = await pollUntil('the planter to end', async () => {
      const task = await agent.client.get(planter.id);
      return task.state === 'exited' ? task : undefined;
    }, { timeoutMs: 60_000, intervalMs: 100 });
    assert.equal(planted.exitCode, 0);
    assert.equal(await readlink(target), '/run');

    const ended = await pollUntil('the victim to end', async () => {
      const task = await agent.client.get(victimId);
      return task.state === 'exited' || task.state === 'lost' ? task : undefined;
    }, { timeoutMs: 60_000, intervalMs: 100 });
    assert.equal(ended.exitCode, 125);
    assert.equal(ended.endState?.kind, 'failed');
    assert.match(JSON.stringify(ended.endState), /BERTH_VALIDATION.*mounts\[0\]\.source/);
    assert.equal(ended.containerId, undefined);
    assert.deepEqual(await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${victimId}`] }), []);

    // Submitted now, the planted symlink is refused at once.
    const again = await postTask(agent, { id: taskId('agent-victim-2'), spec: spec({ command: ['true'], mounts: [bindOf(target)] }) });
    assert.equal(again.status, 400);
  });

  test('a legitimate bind inside the allowed directory runs and the task sees the files', async () => {
    await mkdir(path.join(allowed, 'files'));
    await writeFile(path.join(allowed, 'files', 'note.txt'), 'from the host');
    const task = await agent.client.submit({ id: taskId('agent-legit'), spec: spec({ command: ['cat', '/data/note.txt'], mounts: [bindOf(path.join(allowed, 'files'), '/data', true)] }) });
    const ended = await pollUntil('the task to end', async () => {
      const view = await agent.client.get(task.id);
      return view.state === 'exited' ? view : undefined;
    }, { timeoutMs: 60_000, intervalMs: 100 });
    assert.equal(ended.exitCode, 0);
    const records = [];
    for await (const record of agent.client.logs(task.id)) records.push(record);
    assert.equal(records.map((r) => r.text).join(''), 'from the host');
  });
});

describe('bind sources through `berth run`, against the real engine', { skip: await requireEngine() }, () => {
  let tree: string;
  const env = cleanEnv({ DOCKER_HOST: `unix://${ENGINE_SOCKET}` });
  const runArgs = (...rest: string[]): string[] => ['run', '-l', `berth-test.run=${run.id}`, ...rest];

  before(async () => {
    tree = await realpath(await mkdtemp(path.join(os.tmpdir(), 'berth-binds-cli-')));
  });
  after(async () => {
    await run.cleanup();
    await rm(tree, { recursive: true, force: true });
  });

  test("the person at the terminal may mount the engine's socket by naming it", async () => {
    const result = await runBerth(runArgs('--mount', `type=bind,source=${ENGINE_SOCKET},target=/engine.sock,readonly`, TEST_IMAGE, 'sh', '-c', 'test -S /engine.sock'), env);
    assert.equal(result.code, 0, result.stderr);
  });

  test('a source that does not exist is refused before anything is created, naming the field (exit 2)', async () => {
    const missing = path.join(tree, 'missing');
    const result = await runBerth(runArgs('--mount', `type=bind,source=${missing},target=/x`, TEST_IMAGE, 'true'), env);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /^berth: --mount\[0\] source: host path .*missing does not exist/);
    assert.deepEqual(await run.leftovers(), []);
  });

  test('a symlinked source is resolved on the host and the task sees its target\'s files', async () => {
    await mkdir(path.join(tree, 'real'));
    await writeFile(path.join(tree, 'real', 'f'), 'through the link');
    await symlink(path.join(tree, 'real'), path.join(tree, 'link'));
    const result = await runBerth(runArgs('--mount', `type=bind,source=${path.join(tree, 'link')},target=/data,readonly`, TEST_IMAGE, 'cat', '/data/f'), env);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'through the link');
  });
});

describe('a source swapped after the create is refused before the start, against the real engine', { skip: await requireEngine() }, () => {
  let tree: string;
  let allowed: string;
  let proxy: FaultProxy;

  before(async () => {
    tree = await realpath(await mkdtemp(path.join(os.tmpdir(), 'berth-binds-swap-')));
    allowed = path.join(tree, 'allowed');
    await mkdir(allowed);
    proxy = await FaultProxy.start({ upstreamSocketPath: ENGINE_SOCKET });
  });
  after(async () => {
    await run.cleanup();
    await proxy?.close();
    await rm(tree, { recursive: true, force: true });
  });

  test('a directory swapped for a symlink to /run while the container is created is never started, and its container is removed', async () => {
    const driver = new TaskDriver({ engine: new Engine({ socketPath: proxy.socketPath }), ownerId: `test-${run.id}`, policy: { allowedBindSources: [allowed] } });
    const source = path.join(allowed, 'swapped');
    await mkdir(source);
    const id = taskId('swap-after-create');
    let swapped = false;
    // The swap runs in the proxy's notice of the create request, synchronously, before the proxy
    // forwards it: after berth's last check before the create, before the engine mounts at start.
    const sawCreate = proxy.waitForRequest((record) => {
      if (record.method !== 'POST' || record.path !== '/containers/create') return false;
      if (!swapped) {
        renameSync(source, `${source}-old`);
        symlinkSync('/run', source);
        swapped = true;
      }
      return true;
    }, 60_000);
    await assert.rejects(driver.start(spec({ command: ['true'], mounts: [bindOf(source)] }), { taskId: id }), (error: unknown) => {
      assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${String(error)}`);
      assert.equal(error.issues[0]!.field, 'mounts[0].source');
      assert.match(error.issues[0]!.rule, /changed on the host/);
      return true;
    });
    await sawCreate;
    assert.equal(swapped, true);
    assert.equal(proxy.count('POST', /^\/containers\/[^/]+\/start$/), 0, 'the engine was asked to start the container');
    assert.deepEqual(await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] }), []);
  });
});
