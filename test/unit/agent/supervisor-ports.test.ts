/**
 * The supervisor's use of the port allocator over a scripted engine: ports are allocated at submit
 * and stored in the spec, a retried submit gets the same ones, a refused submit takes none, and
 * they are freed at the task's end (container removed), when it is cancelled in the queue, and by
 * recovery for tasks that no longer need them.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { AdmissionController } from '../../../src/agent/admission.js';
import { AgentEvents } from '../../../src/agent/events.js';
import { PortAllocator, TASK_PORT_OWNER } from '../../../src/agent/ports.js';
import { TaskSupervisor, withPortsAsStored } from '../../../src/agent/supervisor.js';
import { TaskLogStore } from '../../../src/agent/task-logs.js';
import { BerthError, isBerthError } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { LogEntry } from '../../../src/engine/log-entries.js';
import { type Store } from '../../../src/state/index.js';
import { TaskDriver } from '../../../src/tasks/driver.js';
import { until } from '../../support/time.js';
import { ScriptedEngine } from '../tasks/scripted-engine.js';
import { openTestStore } from '../../support/store.js';

const GiB = 1024 ** 3;
const RANGE = { from: 20000, to: 20009 };

async function* emptyLog(): AsyncGenerator<LogEntry> {
  yield* [];
}

let logsDir: string;
const closers: Array<() => Promise<void>> = [];
before(async () => {
  logsDir = await mkdtemp(path.join(tmpdir(), 'berth-supervisor-ports-'));
});
after(async () => {
  await rm(logsDir, { recursive: true, force: true });
});

async function supervisorWithPorts(options: { store?: Store; budget?: { memoryBytes: number; cpuMilli: number } } = {}) {
  const engine = new ScriptedEngine();
  const store = options.store ?? openTestStore();
  const ports = new PortAllocator(store.ports, { range: RANGE, hostIp: '127.0.0.1', isHostPortInUse: () => false });
  const supervisor = new TaskSupervisor({
    store,
    ports,
    driver: new TaskDriver({ engine, ownerId: 'agent-under-test', ownerProcess: 'none', retry: { attempts: 3, initialDelayMs: 1, maxDelayMs: 2 } }),
    engine: { logEntries: emptyLog, inspectContainer: (id) => engine.inspectContainer(id), openContainerEvents: () => engine.openContainerEvents() },
    logs: new TaskLogStore(await mkdtemp(path.join(logsDir, 'logs-')), { maxFileBytes: 1 << 20, maxFiles: 2 }),
    admission: new AdmissionController(options.budget ?? { memoryBytes: 64 * GiB, cpuMilli: 64_000 }),
    policy: () => ({ allowPrivileged: false }),
    defaultDemand: () => ({ memoryBytes: 256 * 1024 ** 2, cpuMilli: 500 }),
    events: new AgentEvents(),
    logger: silentLogger,
    withDefaults: (spec) => spec,
    pingEngine: async () => undefined,
    startOutageLimitMs: () => undefined,
  });
  await supervisor.recover();
  const allEnded = async (): Promise<void> => {
    let isIdle = false;
    void supervisor.idle().then(() => (isIdle = true));
    await until(() => isIdle, 'every task to end', 10_000);
  };
  closers.push(async () => {
    await supervisor.shutdown();
    store.close();
  });
  return { engine, store, supervisor, allEnded };
}

const webSpec = { image: 'img', network: 'bridge', ports: [{ container: 80 }, { container: 53, protocol: 'udp', host: 5353 }] };

describe('the supervisor\'s host ports', () => {
  afterEach(async () => {
    for (const close of closers.splice(0)) await close();
  });

  test('are allocated at submit and stored in the spec; a retried submit gets the same task and ports', async () => {
    const { supervisor, store } = await supervisorWithPorts();
    const { task, created } = supervisor.submit({ id: 'web', spec: webSpec });
    assert.equal(created, true);
    const stored = task.spec.ports as Array<{ container: number; host: number; hostIp: string; protocol: string }>;
    assert.ok(stored[0]!.host >= RANGE.from && stored[0]!.host <= RANGE.to);
    assert.deepEqual(stored[1], { container: 53, protocol: 'udp', host: 5353, hostIp: '127.0.0.1' });
    const again = supervisor.submit({ id: 'web', spec: webSpec });
    assert.equal(again.created, false);
    assert.deepEqual(again.task.spec.ports, stored);
    assert.equal(store.ports.all().length, 2);
    // Another spec under the same id is still another submission.
    assert.throws(() => supervisor.submit({ id: 'web', spec: { ...webSpec, ports: [{ container: 81 }] } }), (e: unknown) => isBerthError(e, 'BERTH_TASK_EXISTS'));
  });

  test('a submit refused for a held port records nothing and takes no port', async () => {
    const { supervisor, store } = await supervisorWithPorts();
    supervisor.submit({ id: 'first', spec: webSpec });
    assert.throws(() => supervisor.submit({ id: 'second', spec: { image: 'img', network: 'bridge', ports: [{ container: 81 }, { container: 53, protocol: 'udp', host: 5353 }] } }), (e: unknown) => isBerthError(e, 'BERTH_PORT_UNAVAILABLE') && e.message.startsWith('ports[1].host:'));
    assert.equal(store.tasks.get('second'), undefined);
    assert.deepEqual([...new Set(store.ports.all().map((h) => h.owner))], ['first']);
  });

  test('a submit the admission budget refuses takes no port', async () => {
    const { supervisor, store } = await supervisorWithPorts({ budget: { memoryBytes: GiB, cpuMilli: 1000 } });
    assert.throws(() => supervisor.submit({ id: 'big', spec: { ...webSpec, resources: { memory: '2g' } } }));
    assert.deepEqual(store.ports.all(), []);
  });

  test('are freed once the task has ended and its container is removed', async () => {
    const { supervisor, store, engine, allEnded } = await supervisorWithPorts();
    supervisor.submit({ id: 'web', spec: webSpec });
    await until(() => store.tasks.get('web')?.state === 'running', 'the task to run');
    assert.equal(store.ports.held('web').length, 2);
    await supervisor.stop('web');
    await allEnded();
    assert.deepEqual(engine.names, [], 'the container is removed');
    assert.deepEqual(store.ports.all(), []);
  });

  test('are freed when the task\'s start fails', async () => {
    const { supervisor, store, engine, allEnded } = await supervisorWithPorts();
    engine.hold('createContainer');
    supervisor.submit({ id: 'refused', spec: webSpec });
    (await engine.next('createContainer')).fail(new BerthError('BERTH_ENGINE_BAD_REQUEST', 'injected: the engine refuses the create'));
    await allEnded();
    assert.equal(store.tasks.get('refused')!.endState?.kind, 'failed');
    assert.deepEqual(store.ports.all(), []);
  });

  test('are freed when a queued task is cancelled before it ever ran', async () => {
    const { supervisor, store } = await supervisorWithPorts({ budget: { memoryBytes: GiB, cpuMilli: 1000 } });
    supervisor.submit({ id: 'runs', spec: { image: 'img', resources: { memory: '1g' } } });
    supervisor.submit({ id: 'queued', spec: { ...webSpec, resources: { memory: '1g' } } });
    assert.equal(store.tasks.get('queued')!.state, 'pending');
    assert.equal(store.ports.held('queued').length, 2);
    await supervisor.stop('queued');
    assert.deepEqual(store.ports.held('queued'), []);
  });

  test('recovery frees the ports of tasks that no longer need them, and keeps those of others', async () => {
    const store = openTestStore();
    const allocator = new PortAllocator(store.ports, { range: RANGE, hostIp: '127.0.0.1', isHostPortInUse: () => false });
    // An agent that died after allocating, before recording its task; a task whose end was recorded; a group's ports.
    allocator.allocate('never-recorded', [{ container: 80, protocol: 'tcp' }], 'ports', { ownerKind: TASK_PORT_OWNER });
    store.tasks.insert({ id: 'ended', spec: { image: 'img' } });
    store.tasks.update('ended', { to: 'exited', endState: { kind: 'success' } } as Parameters<Store['tasks']['update']>[1]);
    allocator.allocate('ended', [{ container: 80, protocol: 'tcp' }], 'ports', { ownerKind: TASK_PORT_OWNER });
    allocator.allocate('group-1', [{ container: 80, protocol: 'tcp' }], 'network.ports');
    await supervisorWithPorts({ store });
    assert.deepEqual(store.ports.all().map((h) => h.owner), ['group-1']);
  });

  test('withPortsAsStored takes the stored ports where the asked ones agree with them', () => {
    const stored = { image: 'img', ports: [{ container: 80, protocol: 'tcp' as const, host: 20001, hostIp: '127.0.0.1' }] };
    assert.deepEqual(withPortsAsStored({ image: 'img', ports: [{ container: 80 }] }, stored), stored);
    assert.deepEqual(withPortsAsStored({ image: 'img', ports: [{ container: 80, host: 20001 }] }, stored), stored);
    const other = { image: 'img', ports: [{ container: 80, host: 9999 }] };
    assert.deepEqual(withPortsAsStored(other, stored), other);
  });
});
