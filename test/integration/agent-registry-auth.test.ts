/**
 * Per-task registry credentials against the real engine and a real registry behind htpasswd
 * authentication: a task whose image needs credentials fails to pull without them and pulls with
 * credentials named from the agent's configuration (`registryAuth: { ref }`, `berth submit
 * --registry-auth`) or given inline; the password appears nowhere in the agent's log, its API, `berth
 * inspect --json`, nor the bytes of its data directory (the state database and its WAL included);
 * a task pending with inline credentials keeps them across an agent restart. The library's
 * TaskDriver takes inline credentials too, and a pull with credentials is never shared with one
 * without them.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { AgentClient, TaskView } from '../../src/agent/client.js';
import { SECRET_KEY_FILE_NAME } from '../../src/agent/secret-box.js';
import { isBerthError } from '../../src/common/errors.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { ImageCoordinator } from '../../src/images/coordinator.js';
import { STORE_FILE_NAME } from '../../src/state/store.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { runToEnd } from '../../src/tasks/run.js';
import { agentClientOf, agentTestFile, berth, berthInspect, waitForTaskState, writeAgentConfig, type RunningAgent } from '../support/agent.js';
import { requireEngine, testEngine } from '../support/engine.js';
import { buildUniqueImage, pushImage, removeRunImages, requireRegistryTools, startTestRegistries, type TestRegistries } from '../support/registry.js';

const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);
const skip = (await requireEngine()) || requireRegistryTools();

/** Every file under `dir`, recursively (the agent's socket excluded: it has no bytes to read). */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const nested = await Promise.all(
    entries.map(async (entry) => {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) return filesUnder(full);
      return entry.isFile() ? [full] : [];
    }),
  );
  return nested.flat();
}

describe('per-task registry credentials through the agent', { skip }, () => {
  let registries: TestRegistries;
  let image: string;
  let dataDir: string;
  let configFile: string;
  let agent: RunningAgent;
  let client: AgentClient;
  /** The password of credentials configured in the agent (inline in its config file) for a registry no test uses: it must never show either. */
  const configPassword = `cfg-${randomBytes(12).toString('hex')}`;
  const label = run.labelFilter;
  const labels = { ...run.labels };

  const submit = async (id: string, spec: Partial<TaskSpec> & { image: string }): Promise<{ task: TaskView; created: boolean }> =>
    client.submitTask({ id: `${run.id}-${id}`, spec: { labels, pull: 'always', command: ['true'], ...spec } });

  before(async () => {
    registries = await startTestRegistries();
    const source = `berth-it-src/${run.id}:auth`;
    await buildUniqueImage(source, run.id);
    const repository = `berth-it/${run.id}/auth`;
    // Pushed to the plain registry; the secured one serves the same storage, behind htpasswd.
    await pushImage(source, [`${registries.plain.host}/${repository}:1`]);
    image = `${registries.secured.host}/${repository}:1`;
    await removeRunImages(engine, run.id);

    dataDir = await dirs.make('berth-regauth-');
    const configDir = await dirs.make('berth-regauth-cfg-');
    // Outside the data directory: the agent reads it at each pull that uses the credentials.
    const passwordFile = path.join(configDir, 'ci-password');
    await writeFile(passwordFile, `${registries.password}\n`, { mode: 0o600 });
    configFile = await writeAgentConfig(
      configDir,
      [
        'policy:',
        '  allowInlineRegistryAuth: true',
        'admission:',
        '  maxConcurrent: 1',
        'registries:',
        '  ci:',
        `    server: ${registries.secured.host}`,
        `    username: ${registries.username}`,
        `    passwordFile: ${passwordFile}`,
        '  elsewhere:',
        '    server: registry.example.com',
        '    username: someone',
        `    password: ${configPassword}`,
      ].join('\n'),
    );
    agent = await agents.start(dataDir, ['--config', configFile, '--log-level', 'debug']);
    client = await agentClientOf(agent);
  });

  after(async () => {
    await client?.close();
    await removeRunImages(engine, run.id).catch(() => undefined);
    await registries?.stop();
  });

  test('a task whose image needs credentials and has none fails its pull: exit 125, the reason naming the registry and the missing credentials', async () => {
    const { task } = await submit('none', { image });
    const ended = await waitForTaskState(client, task.id, ['exited', 'lost']);
    assert.equal(ended.exitCode, 125);
    assert.equal(ended.endState?.kind, 'failed');
    const reason = (ended.endState as { reason?: string }).reason ?? '';
    assert.match(reason, /^BERTH_IMAGE_ACCESS_DENIED: /);
    assert.ok(reason.includes(`registry ${registries.secured.host} refused the pull`), reason);
    assert.match(reason, /no credentials were sent/);
  });

  test('berth submit --registry-auth NAME pulls with the credentials configured in the agent, and the task runs', async () => {
    const result = await berth(dataDir, ['submit', '-l', label, '--pull', 'always', '--registry-auth', 'ci', '--name', `${run.id}-ref`, image, 'cat', '/payload']);
    assert.equal(result.code, 0, result.stderr);
    const taskId = result.stdout.trim();
    const ended = await waitForTaskState(client, taskId, ['exited', 'lost']);
    assert.equal(ended.exitCode, 0, JSON.stringify(ended.endState));
    assert.deepEqual(ended.spec.registryAuth, { ref: 'ci' });
  });

  test('inline credentials pull when the policy allows them, and the task view and berth inspect show them redacted', async () => {
    const { task, created } = await submit('inline', { image, registryAuth: { username: registries.username, password: registries.password } });
    assert.equal(created, true);
    assert.deepEqual(task.spec.registryAuth, { username: registries.username, password: '<redacted>' });
    const ended = await waitForTaskState(client, task.id, ['exited', 'lost']);
    assert.equal(ended.exitCode, 0, JSON.stringify(ended.endState));
    const inspected = await berthInspect<TaskView>(dataDir, task.id);
    assert.deepEqual(inspected.spec.registryAuth, { username: registries.username, password: '<redacted>' });
  });

  test('resubmitting the same id with the same inline credentials is the same task; other credentials are refused (409)', async () => {
    const spec = { image, registryAuth: { password: registries.password, username: registries.username } };
    const again = await submit('inline', spec);
    assert.equal(again.created, false);
    await assert.rejects(submit('inline', { ...spec, registryAuth: { username: registries.username, password: `${registries.password}-other` } }), (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_TASK_EXISTS'), String(error));
      assert.match((error as Error).message, /other registry credentials/);
      return true;
    });
  });

  test('credentials are never sent to another registry, and an unknown name is refused at submit', async () => {
    await assert.rejects(submit('elsewhere', { image, registryAuth: { ref: 'elsewhere' } }), (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_VALIDATION'), String(error));
      assert.match((error as Error).message, /registryAuth\.ref.*registry registry\.example\.com, and the image is on 127\.0\.0\.1/);
      return true;
    });
    await assert.rejects(submit('unknown', { image, registryAuth: { ref: 'nope' } }), (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_VALIDATION'), String(error));
      assert.match((error as Error).message, /no registry credentials named "nope" are configured \(registries: ci, elsewhere\)/);
      return true;
    });
  });

  test('a task pending with inline credentials keeps them across an agent restart, sealed, and pulls with them', async () => {
    // One task at a time (admission.maxConcurrent 1): the blocker runs, the task waits as pending.
    const { task: blocker } = await submit('blocker', { image: 'berth-test/busybox:latest', pull: 'if-not-present', command: ['sleep', '300'] });
    await waitForTaskState(client, blocker.id, ['running']);
    const { task } = await submit('pending', { image, registryAuth: { username: registries.username, password: registries.password } });
    assert.equal((await client.get(task.id)).state, 'pending');
    await client.close();
    assert.equal(await agent.stop('SIGTERM'), 0);
    agent = await agents.start(dataDir, ['--config', configFile, '--log-level', 'debug']);
    client = await agentClientOf(agent);
    await client.stop(blocker.id, { graceMs: 0 });
    const ended = await waitForTaskState(client, task.id, ['exited', 'lost']);
    assert.equal(ended.exitCode, 0, JSON.stringify(ended.endState));
  });

  test('the passwords appear nowhere: not in the agent log, the API, berth inspect --json, nor any file of the data directory (database and WAL included)', async () => {
    const secrets = [registries.password, configPassword];
    const tasks = await client.list();
    assert.ok(tasks.length >= 5);
    const api = JSON.stringify(tasks);
    const inspected = await berth(dataDir, ['inspect', '--json', ...tasks.map((t) => t.id)]);
    assert.equal(inspected.code, 0, inspected.stderr);
    const log = `${agent.logLines().map((line) => JSON.stringify(line)).join('\n')}\n${agent.stderr()}`;
    assert.ok(agent.logLines().length > 20, 'the agent logged (at debug level)');
    const files = await filesUnder(dataDir);
    const database = path.join(dataDir, STORE_FILE_NAME);
    assert.ok(files.includes(database), files.join(', '));
    assert.ok(files.includes(`${database}-wal`) || (await stat(database)).size > 0);
    for (const secret of secrets) {
      assert.ok(!api.includes(secret), 'a password appears in the API task list');
      assert.ok(!inspected.stdout.includes(secret), 'a password appears in berth inspect --json');
      assert.ok(!log.includes(secret), 'a password appears in the agent log');
      for (const file of files) {
        if (path.basename(file) === SECRET_KEY_FILE_NAME) continue;
        const bytes = await readFile(file);
        assert.ok(!bytes.includes(secret), `a password appears in the bytes of ${file}`);
      }
    }
    // The inline tasks' credentials are stored sealed; the key that opens them is private to the agent's user.
    assert.equal((await stat(path.join(dataDir, SECRET_KEY_FILE_NAME))).mode & 0o777, 0o600);
  });
});

describe('per-task registry credentials in the library', { skip }, () => {
  let registries: TestRegistries;
  let image: string;

  before(async () => {
    registries = await startTestRegistries();
    const source = `berth-it-src/${run.id}:lib`;
    await buildUniqueImage(source, run.id);
    const repository = `berth-it/${run.id}/lib`;
    await pushImage(source, [`${registries.plain.host}/${repository}:1`]);
    image = `${registries.secured.host}/${repository}:1`;
    await removeRunImages(engine, run.id);
  });

  after(async () => {
    await removeRunImages(engine, run.id).catch(() => undefined);
    await registries?.stop();
  });

  test('a TaskDriver runs a task with inline credentials; a task without them, started at the same time, does not ride on its pull', async () => {
    // No Docker configuration: the task's own credentials are the only ones.
    const images = new ImageCoordinator({ engine, options: { cleanup: false, pullAttempts: 1 } });
    const driver = new TaskDriver({ engine, ownerId: `test-${run.id}`, images });
    try {
      const labels = { ...run.labels };
      const [withCredentials, without] = await Promise.allSettled([
        runToEnd(driver, { image, pull: 'always', labels, command: ['cat', '/payload'], registryAuth: { username: registries.username, password: registries.password } }),
        runToEnd(driver, { image, pull: 'always', labels, command: ['true'] }),
      ]);
      assert.equal(withCredentials.status, 'fulfilled', String((withCredentials as PromiseRejectedResult).reason));
      assert.deepEqual(withCredentials.value.end, { kind: 'success', exitCode: 0 });
      assert.equal(without.status, 'rejected');
      assert.ok(isBerthError(without.reason, 'BERTH_IMAGE_ACCESS_DENIED'), String(without.reason));
      assert.match((without.reason as Error).message, /no credentials were sent/);
    } finally {
      await images.close();
    }
  });

  test('a TaskDriver refuses a ref it cannot resolve, and a ref whose registry is not the image\'s', async () => {
    const images = new ImageCoordinator({ engine, options: { cleanup: false } });
    const driver = new TaskDriver({
      engine,
      ownerId: `test-${run.id}`,
      images,
      registryCredentials: async (ref) => (ref === 'other' ? { host: 'registry.example.com', credentials: { username: 'u', password: 'p' } } : undefined),
    });
    try {
      await assert.rejects(runToEnd(driver, { image, registryAuth: { ref: 'missing' } }), /registryAuth\.ref.*no registry credentials named "missing"/);
      await assert.rejects(runToEnd(driver, { image, registryAuth: { ref: 'other' } }), /never sent to another registry/);
    } finally {
      await images.close();
    }
  });
});
