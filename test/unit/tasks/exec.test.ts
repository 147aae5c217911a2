import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { BerthError, isBerthError, type ErrorCode } from '../../../src/common/errors.js';
import { LABELS } from '../../../src/common/labels.js';
import type { ContainerListFilter } from '../../../src/engine/types.js';
import type { ExecOptions, ExecSession } from '../../../src/engine/engine.js';
import type { ContainerStatus, ContainerSummary } from '../../../src/engine/types.js';
import { execInTask, findRunningTaskContainer, type TaskExecEngine } from '../../../src/tasks/exec.js';
import { inspectFixture } from '../../support/inspect.js';

/** A container of the scripted engine: its id, labels, state and creation second. */
interface FakeContainer {
  id: string;
  labels: Record<string, string>;
  status: ContainerStatus;
  created?: number;
}

const berthLabels = (taskId = 't1', ownerId = 'cli'): Record<string, string> => ({ [LABELS.managed]: 'true', [LABELS.taskId]: taskId, [LABELS.ownerId]: ownerId });

const fakeSession = (): ExecSession => ({
  id: 'exec1',
  stdout: Readable.from([]),
  stderr: Readable.from([]),
  close: () => undefined,
  resize: async () => undefined,
  exitCode: async () => 0,
  exitStatus: async () => ({ exitCode: 0 }),
});

/**
 * A scripted engine holding `containers`: the list filters by labels as the engine does; inspect
 * answers by id (an error in `inspectErrors` is thrown instead); exec answers with `execResult` and,
 * when `afterExec` is set, changes the containers as if they had stopped meanwhile.
 */
function fakeEngine(
  containers: FakeContainer[],
  options: { execResult?: ExecSession | BerthError; listError?: BerthError; inspectErrors?: Record<string, BerthError>; afterExec?: () => void } = {},
): TaskExecEngine & { inspected: string[]; listed: ContainerListFilter[]; execs: Array<{ id: string; options: ExecOptions }> } {
  const inspected: string[] = [];
  const listed: ContainerListFilter[] = [];
  const execs: Array<{ id: string; options: ExecOptions }> = [];
  return {
    inspected,
    listed,
    execs,
    listContainers: async (filter: ContainerListFilter = {}) => {
      listed.push(filter);
      if (options.listError) throw options.listError;
      const matches = (c: FakeContainer): boolean =>
        (filter.labels ?? []).every((wanted) => {
          const [key, value] = wanted.split(/=(.*)/s) as [string, string | undefined];
          return value === undefined ? key in c.labels : c.labels[key] === value;
        });
      return containers.filter(matches).map(
        (c): ContainerSummary => ({ id: c.id, names: [], image: 'img', labels: c.labels, createdAt: new Date((c.created ?? 0) * 1000), state: c.status, status: c.status }),
      );
    },
    inspectContainer: async (id: string) => {
      inspected.push(id);
      const error = options.inspectErrors?.[id];
      if (error) throw error;
      const c = containers.find((x) => x.id === id);
      if (!c) throw new BerthError('BERTH_ENGINE_NOT_FOUND', `no such container: ${id}`);
      return inspectFixture({ id: c.id, labels: c.labels, status: c.status, running: c.status === 'running' || c.status === 'paused', paused: c.status === 'paused' });
    },
    exec: async (id: string, execOptions: ExecOptions) => {
      execs.push({ id, options: execOptions });
      options.afterExec?.();
      const result = options.execResult ?? fakeSession();
      if (result instanceof BerthError) throw result;
      return result;
    },
  };
}

async function assertRejectsWith(promise: Promise<unknown>, code: ErrorCode, message: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isBerthError(error, code), `expected ${code}, got ${String(error)}`);
    assert.match(error.message, message);
    return true;
  });
}

describe('findRunningTaskContainer', () => {
  test('finds the task container by its labels, whatever its name', async () => {
    const engine = fakeEngine([{ id: 'c1', labels: berthLabels(), status: 'running' }]);
    const found = await findRunningTaskContainer(engine, 't1');
    assert.equal(found.id, 'c1');
    // The engine's label filter matches whole values: every berth task container is listed, the id matched here.
    assert.deepEqual(engine.listed, [{ all: true, labels: ['io.berth.managed=true', 'io.berth.task-id'] }]);
    assert.deepEqual(engine.inspected, ['c1']);
  });

  test('finds a task by a unique prefix of its id', async () => {
    const engine = fakeEngine([
      { id: 'c1', labels: berthLabels('8cd09326-aaaa'), status: 'running' },
      { id: 'c2', labels: berthLabels('91ab0000-bbbb'), status: 'running' },
    ]);
    assert.equal((await findRunningTaskContainer(engine, '8cd')).id, 'c1');
    await assertRejectsWith(findRunningTaskContainer(engine, '8ce'), 'BERTH_TASK_NOT_FOUND', /task 8ce has no container/);
  });

  test('the exact id wins over a longer id it is a prefix of', async () => {
    const engine = fakeEngine([
      { id: 'long', labels: berthLabels('job-10'), status: 'running' },
      { id: 'short', labels: berthLabels('job-1'), status: 'running' },
    ]);
    assert.equal((await findRunningTaskContainer(engine, 'job-1')).id, 'short');
  });

  test('refuses a prefix that several tasks start with, naming them and the count, and execs in none', async () => {
    const engine = fakeEngine(['abc1', 'abc2', 'abc3', 'abc4', 'abc5', 'abc6', 'abc7'].map((taskId, i) => ({ id: `c${i}`, labels: berthLabels(taskId), status: 'running' as const })));
    await assertRejectsWith(execInTask(engine, 'abc', { cmd: ['true'] }), 'BERTH_TASK_AMBIGUOUS', /^task id prefix abc is ambiguous: 7 tasks start with it \(abc1, abc2, abc3, abc4, abc5, and 2 more\); type more of the id$/);
    assert.deepEqual(engine.execs, []);
  });

  test('accepts a task of any owner (berth run, an agent, a library driver)', async () => {
    const engine = fakeEngine([{ id: 'c7', labels: berthLabels('t1', 'agent-7'), status: 'running' }]);
    assert.equal((await findRunningTaskContainer(engine, 't1')).id, 'c7');
  });

  test('refuses as ambiguous a task id that containers of several owners carry, naming the owners', async () => {
    const engine = fakeEngine([
      { id: 'ca', labels: berthLabels('t1', 'agent-a'), status: 'running' },
      { id: 'cb', labels: berthLabels('t1', 'cli'), status: 'exited' },
    ]);
    await assertRejectsWith(findRunningTaskContainer(engine, 't1'), 'BERTH_TASK_AMBIGUOUS', /task t1 has containers of 2 owners \(agent-a, cli\); name the owner/);
    assert.deepEqual(engine.inspected, [], 'nothing is guessed');
  });

  test('with an owner, finds that owner\'s container of the task and no other', async () => {
    const engine = fakeEngine([
      { id: 'ca', labels: berthLabels('t1', 'agent-a'), status: 'running' },
      { id: 'cb', labels: berthLabels('t1', 'cli'), status: 'running' },
    ]);
    assert.equal((await findRunningTaskContainer(engine, { taskId: 't1', ownerId: 'cli' })).id, 'cb');
    assert.equal((await findRunningTaskContainer(engine, { taskId: 't1', ownerId: 'agent-a' })).id, 'ca');
    assert.deepEqual(engine.listed[0]?.labels, ['io.berth.managed=true', 'io.berth.task-id', 'io.berth.owner-id=cli']);
    await assertRejectsWith(findRunningTaskContainer(engine, { taskId: 't1', ownerId: 'agent-z' }), 'BERTH_TASK_NOT_FOUND', /task t1 of owner agent-z has no container/);
  });

  test('of one owner\'s several containers of a task (an old-named and a new-named one), takes the running one, else the newest', async () => {
    const running = fakeEngine([
      { id: 'new', labels: berthLabels(), status: 'exited', created: 20 },
      { id: 'old', labels: berthLabels(), status: 'running', created: 10 },
    ]);
    assert.equal((await findRunningTaskContainer(running, 't1')).id, 'old');
    const stopped = fakeEngine([
      { id: 'old', labels: berthLabels(), status: 'exited', created: 10 },
      { id: 'new', labels: berthLabels(), status: 'exited', created: 20 },
    ]);
    await assertRejectsWith(findRunningTaskContainer(stopped, 't1'), 'BERTH_TASK_STATE', /exited/);
    assert.deepEqual(stopped.inspected, ['new']);
  });

  test('never takes a container without berth\'s labels for a task', async () => {
    const engine = fakeEngine([
      { id: 'x', labels: {}, status: 'running' },
      { id: 'y', labels: { [LABELS.managed]: 'false', [LABELS.taskId]: 't1' }, status: 'running' },
      { id: 'z', labels: berthLabels('t2'), status: 'running' },
    ]);
    await assertRejectsWith(findRunningTaskContainer(engine, 't1'), 'BERTH_TASK_NOT_FOUND', /task t1 has no container/);
  });

  test('reports a container removed between the list and the inspect as task not found', async () => {
    const engine = fakeEngine([{ id: 'c1', labels: berthLabels(), status: 'running' }], { inspectErrors: { c1: new BerthError('BERTH_ENGINE_NOT_FOUND', 'no such container') } });
    await assertRejectsWith(findRunningTaskContainer(engine, 't1'), 'BERTH_TASK_NOT_FOUND', /task t1 has no container/);
  });

  test('passes other engine failures on unchanged', async () => {
    const engine = fakeEngine([], { listError: new BerthError('BERTH_ENGINE_UNAVAILABLE', 'socket refused') });
    await assertRejectsWith(findRunningTaskContainer(engine, 't1'), 'BERTH_ENGINE_UNAVAILABLE', /socket refused/);
  });

  for (const status of ['created', 'paused', 'restarting', 'exited', 'dead'] as const) {
    test(`refuses a ${status} container with the task state`, async () => {
      await assertRejectsWith(findRunningTaskContainer(fakeEngine([{ id: 'c1', labels: berthLabels(), status }]), 't1'), 'BERTH_TASK_STATE', new RegExp(`is ${status}, not running`));
    });
  }

  test('names what the caller wanted when the container is not running (exec by default)', async () => {
    const exited = (): TaskExecEngine => fakeEngine([{ id: 'c1', labels: berthLabels(), status: 'exited' }]);
    await assertRejectsWith(findRunningTaskContainer(exited(), 't1'), 'BERTH_TASK_STATE', /^cannot exec in task t1: /);
    await assertRejectsWith(findRunningTaskContainer(exited(), 't1', undefined, 'read the stats of'), 'BERTH_TASK_STATE', /^cannot read the stats of task t1: /);
  });

  test('refuses a malformed task or owner id before asking the engine', async () => {
    const engine = fakeEngine([]);
    await assertRejectsWith(findRunningTaskContainer(engine, '../etc'), 'BERTH_VALIDATION', /task-id/);
    await assertRejectsWith(findRunningTaskContainer(engine, { taskId: 't1', ownerId: 'a,b' }), 'BERTH_VALIDATION', /owner/);
    assert.deepEqual(engine.listed, []);
  });
});

describe('execInTask', () => {
  test('execs in the container it found, with the options given', async () => {
    const engine = fakeEngine([{ id: 'c1', labels: berthLabels(), status: 'running' }]);
    const session = await execInTask(engine, 't1', { cmd: ['echo', 'hi'], tty: true });
    assert.equal(session.id, 'exec1');
    assert.deepEqual(engine.execs, [{ id: 'c1', options: { cmd: ['echo', 'hi'], tty: true } }]);
  });

  test('never execs in a container it refused', async () => {
    const engine = fakeEngine([
      { id: 'ca', labels: berthLabels('t1', 'agent-a'), status: 'running' },
      { id: 'cb', labels: berthLabels('t1', 'cli'), status: 'running' },
    ]);
    await assert.rejects(execInTask(engine, 't1', { cmd: ['true'] }));
    assert.deepEqual(engine.execs, []);
  });

  test('a container that stopped between the check and the exec is reported in the task\'s terms', async () => {
    const containers: FakeContainer[] = [{ id: 'c1', labels: berthLabels(), status: 'running' }];
    const engine = fakeEngine(containers, { execResult: new BerthError('BERTH_ENGINE_CONFLICT', 'container is not running'), afterExec: () => (containers[0]!.status = 'exited') });
    await assertRejectsWith(execInTask(engine, 't1', { cmd: ['true'] }), 'BERTH_TASK_STATE', /exited/);
  });

  test('an exec conflict on a container that still runs is passed on unchanged', async () => {
    const engine = fakeEngine([{ id: 'c1', labels: berthLabels(), status: 'running' }], { execResult: new BerthError('BERTH_ENGINE_CONFLICT', 'something else') });
    await assertRejectsWith(execInTask(engine, 't1', { cmd: ['true'] }), 'BERTH_ENGINE_CONFLICT', /something else/);
  });
});
