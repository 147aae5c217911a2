/**
 * The agent's task supervisor against the real driver and handle over a scripted engine port
 * (test/unit/tasks/scripted-engine.ts), with a real store, log store and admission: races that
 * the real engine shows only by timing (a stop while the create or the start is under way, a create
 * whose answer is lost) are played step by step, the test holding and answering each engine call.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { AdmissionController, type AdmissionBudget } from '../../../src/agent/admission.js';
import { AgentEvents } from '../../../src/agent/events.js';
import { TaskSupervisor } from '../../../src/agent/supervisor.js';
import { TaskLogStore } from '../../../src/agent/task-logs.js';
import { BerthError } from '../../../src/common/errors.js';
import { containerNameForTask, LABELS } from '../../../src/common/labels.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { LogEntry } from '../../../src/engine/log-entries.js';
import type { SpecPolicy } from '../../../src/spec/schema.js';
import type { TaskRecord } from '../../../src/state/tasks.js';
import { TaskDriver } from '../../../src/tasks/driver.js';
import { until } from '../../support/time.js';
import { ScriptedEngine } from '../tasks/scripted-engine.js';
import { openTestStore } from '../../support/store.js';

const OWNER = 'agent-under-test';
const GiB = 1024 ** 3;
const RETRY = { attempts: 3, initialDelayMs: 1, maxDelayMs: 2 };
const serverError = (): BerthError => new BerthError('BERTH_ENGINE_SERVER_ERROR', 'injected fault');

/** The engine's log of every task: empty (output is not what these tests are about). */
async function* emptyLog(): AsyncGenerator<LogEntry> {
  yield* [];
}

let logsDir: string;
/** Shut down after each test: its supervisor and store. */
const closers: Array<() => Promise<void>> = [];
before(async () => {
  logsDir = await mkdtemp(path.join(tmpdir(), 'berth-supervisor-'));
});
after(async () => {
  await rm(logsDir, { recursive: true, force: true });
});

/** A supervisor, open (recovered with nothing to recover), over a scripted engine. */
async function scriptedSupervisor(budget: AdmissionBudget = { memoryBytes: 64 * GiB, cpuMilli: 64_000 }, policy: () => SpecPolicy = () => ({ allowPrivileged: false })) {
  const engine = new ScriptedEngine();
  const store = openTestStore();
  const states = new Map<string, string[]>();
  const events = new AgentEvents();
  events.subscribe((event) => {
    if (event.type === 'task.state') states.set(event.taskId, [...(states.get(event.taskId) ?? []), event.state]);
  });
  const logs = new TaskLogStore(await mkdtemp(path.join(logsDir, 'logs-')), { maxFileBytes: 1 << 20, maxFiles: 2 });
  const supervisor = new TaskSupervisor({
    store,
    driver: new TaskDriver({ engine, ownerId: OWNER, ownerProcess: 'none', retry: RETRY }),
    engine: { logEntries: emptyLog, inspectContainer: (id) => engine.inspectContainer(id), openContainerEvents: () => engine.openContainerEvents() },
    logs,
    admission: new AdmissionController(budget),
    policy,
    defaultDemand: () => ({ memoryBytes: 256 * 1024 ** 2, cpuMilli: 500 }),
    events,
    logger: silentLogger,
    withDefaults: (spec) => spec,
    pingEngine: async () => undefined,
    startOutageLimitMs: () => undefined,
  });
  await supervisor.recover();
  const record = (taskId: string): TaskRecord => {
    const found = store.tasks.get(taskId);
    assert.ok(found, `task ${taskId} is recorded`);
    return found;
  };
  /** Resolves when every task has ended and its end is recorded; fails (a deadline, not a threshold) if one never ends. */
  const allEnded = async (): Promise<void> => {
    let isIdle = false;
    void supervisor.idle().then(() => (isIdle = true));
    await until(() => isIdle, 'every task to end', 10_000);
  };
  closers.push(async () => {
    await supervisor.shutdown();
    store.close();
  });
  return { engine, supervisor, store, logs, record, states: (taskId: string) => states.get(taskId) ?? [], allEnded };
}

const spec = { image: 'img' };
const nameOf = (taskId: string): string => containerNameForTask({ taskId, ownerId: OWNER });

describe('the task supervisor over a scripted engine', () => {
  afterEach(async () => {
    for (const close of closers.splice(0)) await close();
  });

  for (const [call, what] of [
    ['createContainer', 'created'],
    ['startContainer', 'started'],
  ] as const) {
    test(`a task stopped while its container is being ${what} ends as cancelled, and its container is removed`, async () => {
      const { engine, supervisor, record, states, allEnded } = await scriptedSupervisor();
      engine.hold(call);
      supervisor.submit({ id: 'job-1', spec });
      const held = await engine.next(call);
      assert.equal((await supervisor.stop('job-1')).state, 'stopping');
      held.proceed();
      await allEnded();
      assert.deepEqual(record('job-1').endState, { kind: 'cancelled', exitCode: 143 });
      assert.deepEqual(states('job-1'), ['pending', 'starting', 'stopping', 'exited']);
      assert.deepEqual(engine.names, [], 'the container is removed');
    });
  }

  test('a stop\'s own grace period reaches the engine, also when the stop came while the container was being created', async () => {
    const { engine, supervisor, record, allEnded } = await scriptedSupervisor();
    supervisor.submit({ id: 'job-g1', spec: { ...spec, stopGracePeriod: '30s' } });
    await until(() => record('job-g1').state === 'running', 'the task to run');
    await supervisor.stop('job-g1', { graceMs: 2000 });
    engine.hold('createContainer');
    supervisor.submit({ id: 'job-g2', spec: { ...spec, stopGracePeriod: '30s' } });
    const held = await engine.next('createContainer');
    assert.equal((await supervisor.stop('job-g2', { graceMs: 0 })).state, 'stopping');
    held.proceed();
    await allEnded();
    assert.deepEqual(engine.stopTimeouts, [2, 0], 'not the spec\'s 30 s');
    assert.equal(record('job-g2').endState?.kind, 'cancelled');
  });

  test('a wait answers with the task as it is once its client goes away or the agent shuts down, not after its whole timeout', async () => {
    const { supervisor, record } = await scriptedSupervisor();
    supervisor.submit({ id: 'job-w', spec });
    await until(() => record('job-w').state === 'running', 'the task to run');
    const gone = new AbortController();
    const byClient = supervisor.wait('job-w', 600_000, gone.signal);
    gone.abort();
    assert.equal((await byClient).state, 'running');
    // An already aborted signal answers at once too.
    assert.equal((await supervisor.wait('job-w', 600_000, gone.signal)).state, 'running');
    const byShutdown = supervisor.wait('job-w', 600_000);
    await supervisor.shutdown(0);
    assert.equal((await byShutdown).state, 'running');
  });

  test('retention forgets the ended tasks whose output it can remove, and keeps the record of one it cannot for the next try', async () => {
    const { supervisor, store, logs, record, allEnded } = await scriptedSupervisor();
    for (const id of ['job-f1', 'job-f2']) supervisor.submit({ id, spec });
    await until(() => record('job-f1').state === 'running' && record('job-f2').state === 'running', 'the tasks to run');
    await Promise.all([supervisor.stop('job-f1'), supervisor.stop('job-f2')]);
    await allEnded();
    const remove = logs.remove.bind(logs);
    logs.remove = async (taskId: string) => {
      if (taskId === 'job-f1') throw new Error('EACCES: permission denied');
      return remove(taskId);
    };
    assert.deepEqual(await supervisor.forget(['job-f1', 'job-f2']), ['job-f2']);
    assert.equal(store.tasks.get('job-f2'), undefined);
    assert.equal(record('job-f1').state, 'exited', 'kept for the next pass');
  });

  test('a stop with no grace kills a task that is being stopped already, and it still ends as cancelled', async () => {
    const { engine, supervisor, record, allEnded } = await scriptedSupervisor();
    supervisor.submit({ id: 'job-k', spec: { ...spec, stopGracePeriod: '30s' } });
    await until(() => record('job-k').state === 'running', 'the task to run');
    engine.hold('stopContainer');
    const firstStop = supervisor.stop('job-k');
    const stopCall = await engine.next('stopContainer');
    assert.equal(engine.count('killContainer'), 0);
    await supervisor.stop('job-k', { graceMs: 0 });
    assert.equal(engine.count('killContainer'), 1, 'killed, not left to its 30 s grace');
    stopCall.proceed();
    await firstStop;
    await allEnded();
    assert.equal(record('job-k').endState?.kind, 'cancelled');
  });

  test('a task stopped while a start the engine did not answer waits for it ends as cancelled, never having run', async () => {
    const { engine, supervisor, record, allEnded } = await scriptedSupervisor();
    engine.hold('startContainer');
    supervisor.submit({ id: 'job-3', spec });
    const start = await engine.next('startContainer');
    await supervisor.stop('job-3');
    const unreachable = (): BerthError => new BerthError('BERTH_ENGINE_UNAVAILABLE', 'connect ECONNREFUSED');
    start.fail(unreachable());
    // The driver's inspect finds the container never started, and tries again: every attempt finds the engine away.
    for (let attempt = 2; attempt <= RETRY.attempts; attempt++) (await engine.next('startContainer')).fail(unreachable());
    await allEnded();
    assert.deepEqual(record('job-3').endState, { kind: 'cancelled' });
    assert.equal(engine.count('startContainer'), RETRY.attempts);
    assert.deepEqual(engine.names, [], 'the created container is removed');
  });

  test('a task stopped while its start fails for good ends as failed with exit code 125 and the start’s error', async () => {
    const { engine, supervisor, record, allEnded } = await scriptedSupervisor();
    engine.hold('startContainer');
    supervisor.submit({ id: 'job-4', spec });
    const start = await engine.next('startContainer');
    await supervisor.stop('job-4');
    start.fail(new BerthError('BERTH_ENGINE_BAD_REQUEST', 'invalid mount'));
    await allEnded();
    assert.deepEqual(record('job-4').endState, { kind: 'failed', exitCode: 125, reason: 'BERTH_ENGINE_BAD_REQUEST: invalid mount' });
    assert.deepEqual(engine.names, []);
  });

  test('a create whose answer is lost is followed by an inspect, and the task runs in the container the lost create made', async () => {
    const { engine, supervisor, record, allEnded } = await scriptedSupervisor();
    engine.hold('createContainer');
    supervisor.submit({ id: 'job-5', spec });
    (await engine.next('createContainer')).proceedThenFail(serverError());
    engine.release('createContainer');
    await until(() => record('job-5').state === 'running', 'the task to run');
    const containerId = record('job-5').containerId;
    assert.ok(containerId);
    assert.deepEqual(engine.names, [nameOf('job-5')], 'one container: the inspect after the lost create adopted it instead of making another');
    assert.equal(engine.count('createContainer'), 1);
    engine.exit(containerId, 0);
    await allEnded();
    assert.deepEqual(record('job-5').endState, { kind: 'success', exitCode: 0 });
  });

  test('a container under the task’s name made by another start attempt fails the task with BERTH_NAME_CONFLICT and is left alone', async () => {
    const { engine, supervisor, record, allEnded } = await scriptedSupervisor();
    const theirs = engine.addContainer(nameOf('job-6'), { [LABELS.managed]: 'true', [LABELS.taskId]: 'job-6', [LABELS.ownerId]: OWNER, [LABELS.startAttempt]: 'another-attempt' }, 'running');
    supervisor.submit({ id: 'job-6', spec });
    await allEnded();
    const end = record('job-6').endState;
    assert.equal(end?.kind, 'failed');
    assert.match(end?.kind === 'failed' ? (end.reason ?? '') : '', /^BERTH_NAME_CONFLICT: task job-6 of agent-under-test already has a container/);
    assert.equal(engine.statusOf(theirs), 'running');
    assert.equal(engine.count('removeContainer'), 0);
  });

  test('a running task whose stop finds it ended on its own keeps its own end', async () => {
    const { engine, supervisor, record, allEnded } = await scriptedSupervisor();
    supervisor.submit({ id: 'job-7', spec });
    await until(() => record('job-7').state === 'running', 'the task to run');
    engine.hold('stopContainer');
    const stopping = supervisor.stop('job-7');
    const stop = await engine.next('stopContainer');
    engine.exit(record('job-7').containerId!, 3);
    stop.proceed();
    await stopping;
    await allEnded();
    assert.deepEqual(record('job-7').endState, { kind: 'failed', exitCode: 3 });
  });

  test('a pending task that is stopped ends as cancelled without a container, and the next one waits no more', async () => {
    const { engine, supervisor, record, allEnded } = await scriptedSupervisor({ memoryBytes: 64 * GiB, cpuMilli: 64_000, maxConcurrent: 1 });
    supervisor.submit({ id: 'job-8', spec });
    supervisor.submit({ id: 'job-9', spec });
    supervisor.submit({ id: 'job-10', spec });
    assert.equal(record('job-9').state, 'pending');
    assert.deepEqual((await supervisor.stop('job-9')).endState, { kind: 'cancelled' });
    await until(() => record('job-8').state === 'running', 'the first task to run');
    engine.exit(record('job-8').containerId!, 0);
    await until(() => record('job-10').state === 'running', 'the third task to run once the first ended');
    engine.exit(record('job-10').containerId!, 0);
    await allEnded();
    assert.equal(engine.count('createContainer'), 2, 'the stopped task never had a container');
    assert.equal(record('job-9').containerId, undefined);
  });

  test('a task accepted under the policy starts later though the policy was tightened since, and the driver applies no policy of its own to it', async () => {
    let allowPrivileged = true;
    // The driver keeps its default policy (privileged refused): the supervisor's policy is the one that decides.
    const { engine, supervisor, record, allEnded } = await scriptedSupervisor({ memoryBytes: 64 * GiB, cpuMilli: 64_000, maxConcurrent: 1 }, () => ({ allowPrivileged }));
    supervisor.submit({ id: 'job-11', spec });
    supervisor.submit({ id: 'job-12', spec: { ...spec, privileged: true } });
    assert.equal(record('job-12').state, 'pending');
    allowPrivileged = false;
    assert.throws(() => supervisor.submit({ id: 'job-13', spec: { ...spec, privileged: true } }), (error: unknown) => error instanceof BerthError && error.code === 'BERTH_VALIDATION');
    await until(() => record('job-11').state === 'running', 'the first task to run');
    engine.exit(record('job-11').containerId!, 0);
    await until(() => record('job-12').state === 'running', 'the accepted privileged task to run once the first ended');
    engine.exit(record('job-12').containerId!, 0);
    await allEnded();
    assert.deepEqual(record('job-12').endState, { kind: 'success', exitCode: 0 });
  });
});
