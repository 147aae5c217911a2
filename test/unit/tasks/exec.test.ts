import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { BerthError, isBerthError, type ErrorCode } from '../../../src/common/errors.js';
import { LABELS } from '../../../src/common/labels.js';
import type { ExecOptions, ExecSession } from '../../../src/engine/engine.js';
import type { ContainerInspect, ContainerStatus } from '../../../src/engine/types.js';
import { execInTask, findRunningTaskContainer, type TaskExecEngine } from '../../../src/tasks/exec.js';
import { inspectFixture } from '../../support/inspect.js';

/** A container as inspect returns it, with only the fields exec looks at set meaningfully. */
function container(status: ContainerStatus, labels: Record<string, string>): ContainerInspect {
  return inspectFixture({ labels, status, running: status === 'running' || status === 'paused', paused: status === 'paused' });
}

const berthLabels = (taskId = 't1'): Record<string, string> => ({ [LABELS.managed]: 'true', [LABELS.taskId]: taskId, [LABELS.ownerId]: 'cli' });

const fakeSession = (): ExecSession => ({
  id: 'exec1',
  stdout: Readable.from([]),
  stderr: Readable.from([]),
  close: () => undefined,
  resize: async () => undefined,
  exitCode: async () => 0,
});

/** A scripted engine: inspect answers from `inspections` in turn (an error is thrown), exec from `execResult`. */
function fakeEngine(inspections: Array<ContainerInspect | BerthError>, execResult: ExecSession | BerthError = fakeSession()): TaskExecEngine & { inspected: string[]; execs: Array<{ id: string; options: ExecOptions }> } {
  const inspected: string[] = [];
  const execs: Array<{ id: string; options: ExecOptions }> = [];
  return {
    inspected,
    execs,
    inspectContainer: async (idOrName: string) => {
      inspected.push(idOrName);
      const next = inspections.shift();
      if (next === undefined) throw new Error('unexpected inspect');
      if (next instanceof BerthError) throw next;
      return next;
    },
    exec: async (id: string, options: ExecOptions) => {
      execs.push({ id, options });
      if (execResult instanceof BerthError) throw execResult;
      return execResult;
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
  test('finds the task container by its deterministic name', async () => {
    const engine = fakeEngine([container('running', berthLabels())]);
    const found = await findRunningTaskContainer(engine, 't1');
    assert.equal(found.id, 'c0ffee');
    assert.deepEqual(engine.inspected, ['berth-t1']);
  });

  test('accepts a task of any owner (berth run, an agent, a library driver)', async () => {
    const engine = fakeEngine([container('running', { ...berthLabels(), [LABELS.ownerId]: 'agent-7' })]);
    assert.equal((await findRunningTaskContainer(engine, 't1')).id, 'c0ffee');
  });

  test('refuses a container without berth\'s marker label as a name conflict', async () => {
    await assertRejectsWith(findRunningTaskContainer(fakeEngine([container('running', {})]), 't1'), 'BERTH_NAME_CONFLICT', /berth-t1 is not berth's/);
    await assertRejectsWith(
      findRunningTaskContainer(fakeEngine([container('running', { [LABELS.managed]: 'false', [LABELS.taskId]: 't1' })]), 't1'),
      'BERTH_NAME_CONFLICT',
      /not berth's/,
    );
  });

  test('refuses a berth container labelled for another task', async () => {
    await assertRejectsWith(findRunningTaskContainer(fakeEngine([container('running', berthLabels('t2'))]), 't1'), 'BERTH_NAME_CONFLICT', /task t2/);
  });

  test('reports a missing container as task not found', async () => {
    const engine = fakeEngine([new BerthError('BERTH_ENGINE_NOT_FOUND', 'no such container')]);
    await assertRejectsWith(findRunningTaskContainer(engine, 't1'), 'BERTH_TASK_NOT_FOUND', /task t1 has no container/);
  });

  test('passes other engine failures on unchanged', async () => {
    const engine = fakeEngine([new BerthError('BERTH_ENGINE_UNAVAILABLE', 'socket refused')]);
    await assertRejectsWith(findRunningTaskContainer(engine, 't1'), 'BERTH_ENGINE_UNAVAILABLE', /socket refused/);
  });

  for (const status of ['created', 'paused', 'restarting', 'exited', 'dead'] as const) {
    test(`refuses a ${status} container with the task state`, async () => {
      await assertRejectsWith(findRunningTaskContainer(fakeEngine([container(status, berthLabels())]), 't1'), 'BERTH_TASK_STATE', new RegExp(`is ${status}, not running`));
    });
  }

  test('names what the caller wanted when the container is not running (exec by default)', async () => {
    await assertRejectsWith(findRunningTaskContainer(fakeEngine([container('exited', berthLabels())]), 't1'), 'BERTH_TASK_STATE', /^cannot exec in task t1: /);
    await assertRejectsWith(findRunningTaskContainer(fakeEngine([container('exited', berthLabels())]), 't1', undefined, 'read the stats of'), 'BERTH_TASK_STATE', /^cannot read the stats of task t1: /);
  });

  test('refuses a malformed task id before asking the engine', async () => {
    const engine = fakeEngine([]);
    await assertRejectsWith(findRunningTaskContainer(engine, '../etc'), 'BERTH_VALIDATION', /task-id/);
    assert.deepEqual(engine.inspected, []);
  });
});

describe('execInTask', () => {
  test('execs in the container it found, with the options given', async () => {
    const engine = fakeEngine([container('running', berthLabels())]);
    const session = await execInTask(engine, 't1', { cmd: ['echo', 'hi'], tty: true });
    assert.equal(session.id, 'exec1');
    assert.deepEqual(engine.execs, [{ id: 'c0ffee', options: { cmd: ['echo', 'hi'], tty: true } }]);
  });

  test('never execs in a container it refused', async () => {
    const engine = fakeEngine([container('running', {})]);
    await assert.rejects(execInTask(engine, 't1', { cmd: ['true'] }));
    assert.deepEqual(engine.execs, []);
  });

  test('a container that stopped between the check and the exec is reported in the task\'s terms', async () => {
    const engine = fakeEngine(
      [container('running', berthLabels()), container('exited', berthLabels())],
      new BerthError('BERTH_ENGINE_CONFLICT', 'container is not running'),
    );
    await assertRejectsWith(execInTask(engine, 't1', { cmd: ['true'] }), 'BERTH_TASK_STATE', /exited/);
  });

  test('an exec conflict on a container that still runs is passed on unchanged', async () => {
    const engine = fakeEngine(
      [container('running', berthLabels()), container('running', berthLabels())],
      new BerthError('BERTH_ENGINE_CONFLICT', 'something else'),
    );
    await assertRejectsWith(execInTask(engine, 't1', { cmd: ['true'] }), 'BERTH_ENGINE_CONFLICT', /something else/);
  });
});
