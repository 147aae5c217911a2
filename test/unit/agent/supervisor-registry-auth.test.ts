/**
 * The supervisor's handling of a spec's inline registry credentials, over a scripted engine and an
 * image provider that records the credentials each acquire is given: the store holds the spec
 * redacted and the secrets sealed; the pull gets them back whole; resubmitting is idempotent with
 * the same secrets and refused with others; a restarted supervisor (same store, same key) still
 * pulls with them.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { AdmissionController } from '../../../src/agent/admission.js';
import { AgentEvents } from '../../../src/agent/events.js';
import { SecretBox } from '../../../src/agent/secret-box.js';
import { TaskSupervisor } from '../../../src/agent/supervisor.js';
import { TaskLogStore } from '../../../src/agent/task-logs.js';
import { BerthError, isBerthError } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { LogEntry } from '../../../src/engine/log-entries.js';
import type { InlineRegistryAuth } from '../../../src/spec/registry-auth.js';
import { openStore, type Store } from '../../../src/state/store.js';
import { TaskDriver, type ImageProvider } from '../../../src/tasks/driver.js';
import { until } from '../../support/time.js';
import { ScriptedEngine } from '../tasks/scripted-engine.js';
import { openTestStore } from '../../support/store.js';

const SECRET = 'pw-5e4d3c2b1a';
const GiB = 1024 ** 3;

async function* emptyLog(): AsyncGenerator<LogEntry> {
  yield* [];
}

let dir: string;
const closers: Array<() => Promise<void>> = [];
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'berth-supervisor-auth-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A supervisor whose image provider records each acquire's credentials and then refuses the pull (nothing is created). */
async function supervisorWith(store: Store, secrets: SecretBox | undefined) {
  const acquired: Array<InlineRegistryAuth | undefined> = [];
  const images: ImageProvider = {
    async acquire(_image, _holderId, options) {
      acquired.push(options.auth);
      throw new BerthError('BERTH_IMAGE_ACCESS_DENIED', 'registry r.example.com refused the pull of r.example.com/app:1: denied', { retryable: false });
    },
    release: () => undefined,
  };
  const engine = new ScriptedEngine();
  const supervisor = new TaskSupervisor({
    store,
    driver: new TaskDriver({ engine, ownerId: 'agent-under-test', ownerProcess: 'none', images }),
    engine: { logEntries: emptyLog, inspectContainer: (id) => engine.inspectContainer(id), openContainerEvents: () => engine.openContainerEvents() },
    logs: new TaskLogStore(await mkdtemp(path.join(dir, 'logs-')), { maxFileBytes: 1 << 20, maxFiles: 2 }),
    admission: new AdmissionController({ memoryBytes: 64 * GiB, cpuMilli: 64_000 }),
    policy: () => ({ allowPrivileged: false }),
    defaultDemand: () => ({ memoryBytes: 256 * 1024 ** 2, cpuMilli: 500 }),
    events: new AgentEvents(),
    logger: silentLogger,
    withDefaults: (spec) => spec,
    pingEngine: async () => undefined,
    startOutageLimitMs: () => undefined,
    ...(secrets ? { secrets } : {}),
  });
  await supervisor.recover();
  closers.push(async () => {
    await supervisor.shutdown();
    store.close();
  });
  const ended = (taskId: string) => until(() => supervisor.isEnded(taskId), `task ${taskId} to end`, 10_000);
  return { supervisor, acquired, ended };
}

const inline = (password = SECRET) => ({ image: 'r.example.com/app:1', registryAuth: { username: 'ci', password } });

describe('the supervisor and inline registry credentials', () => {
  afterEach(async () => {
    for (const close of closers.splice(0)) await close();
  });

  test('stores the spec redacted and the secret sealed, and the pull gets the credentials whole', async () => {
    const store = openTestStore();
    const { supervisor, acquired, ended } = await supervisorWith(store, await SecretBox.openIn(await mkdtemp(path.join(dir, 'data-'))));
    const { task, created } = supervisor.submit({ id: 't1', spec: inline() });
    assert.equal(created, true);
    assert.deepEqual(task.spec.registryAuth, { username: 'ci', password: '<redacted>' });
    await ended('t1');
    assert.deepEqual(acquired, [{ username: 'ci', password: SECRET }]);
    const record = store.tasks.get('t1')!;
    assert.ok(record.sealedSecrets !== undefined && !record.sealedSecrets.includes(SECRET));
    assert.ok(!JSON.stringify(record.spec).includes(SECRET));
    assert.equal(record.endState?.kind, 'failed');
  });

  test('resubmitting with the same credentials is the same task; with others it is BERTH_TASK_EXISTS', async () => {
    const store = openTestStore();
    const { supervisor, ended } = await supervisorWith(store, await SecretBox.openIn(await mkdtemp(path.join(dir, 'data-'))));
    supervisor.submit({ id: 't2', spec: inline() });
    await ended('t2');
    assert.equal(supervisor.submit({ id: 't2', spec: { registryAuth: { password: SECRET, username: 'ci' }, image: 'r.example.com/app:1' } }).created, false);
    assert.throws(() => supervisor.submit({ id: 't2', spec: inline(`${SECRET}x`) }), (error: unknown) => isBerthError(error, 'BERTH_TASK_EXISTS') && /other registry credentials/.test(error.message));
    assert.throws(() => supervisor.submit({ id: 't2', spec: { image: 'r.example.com/app:1', registryAuth: { ref: 'ci' } } }), (error: unknown) => isBerthError(error, 'BERTH_TASK_EXISTS'));
  });

  test('a pending task\'s sealed credentials open again in a new supervisor over the same store and key', async () => {
    const dataDir = await mkdtemp(path.join(dir, 'data-'));
    const file = path.join(dataDir, 'berth.db');
    const first = openStore(file);
    // A task a previous agent accepted and left pending: its spec redacted, its secret sealed with this data directory's key.
    first.tasks.insert({ id: 't3', spec: { image: 'r.example.com/app:1', registryAuth: { username: 'ci', password: '<redacted>' } }, sealedSecrets: (await SecretBox.openIn(dataDir)).seal(JSON.stringify({ password: SECRET })) });
    first.close();
    const store = openStore(file);
    const { acquired, ended } = await supervisorWith(store, await SecretBox.openIn(dataDir));
    await ended('t3');
    assert.deepEqual(acquired, [{ username: 'ci', password: SECRET }]);
  });

  test('without a secret box, inline credentials are refused at submit and nothing is stored', async () => {
    const store = openTestStore();
    const { supervisor } = await supervisorWith(store, undefined);
    assert.throws(() => supervisor.submit({ id: 't4', spec: inline() }), (error: unknown) => isBerthError(error, 'BERTH_VALIDATION') && /no secret key/.test(error.message));
    assert.equal(store.tasks.get('t4'), undefined);
  });
});
