/**
 * The group runner's coordination against scripted fakes of the driver and the engine, for what
 * the real engine cannot make deterministic: the order of the clean-up, listeners that stop the
 * group in the middle of a step, an output callback that throws.
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { GroupRunner, type GroupRunnerEngine } from '../../../src/groups/runner.js';
import { resolveGroupSpec } from '../../../src/spec/group.js';
import { DEFAULT_RETRY_POLICY } from '../../../src/tasks/container-ops.js';
import type { TaskDriver } from '../../../src/tasks/driver.js';
import type { EndState } from '../../../src/tasks/end-state.js';
import type { TaskHandle } from '../../../src/tasks/handle.js';
import { inspectFixture } from '../../support/inspect.js';

interface FakeTask {
  readonly taskId: string;
  end(state: EndState): void;
}

/** A driver whose tasks run until the test ends them (or the group stops them); every call logged in `calls`. */
function fakes() {
  const calls: string[] = [];
  const tasks = new Map<string, FakeTask>();
  const engine = {
    createVolume: async (name: string, labels: Record<string, string>) => (calls.push(`create volume`), { name, driver: 'local', labels }),
    removeVolume: async () => (calls.push('remove volume'), 'removed' as const),
    createNetwork: async (_name: string, body: { labels: Record<string, string> }) => (calls.push('create network'), { id: 'net', created: true, labels: body.labels }),
    removeNetwork: async () => (calls.push('remove network'), 'removed' as const),
    connectNetwork: async () => undefined,
    createContainer: async () => (calls.push('create infra'), 'infra-id'),
    startContainer: async () => (calls.push('start infra'), 'started' as const),
    inspectContainer: async () => inspectFixture({ id: 'infra-id' }),
    removeContainer: async (id: string) => (calls.push(`remove ${id}`), 'removed' as const),
    inspectImage: async () => ({}) as never,
    importImage: async () => undefined,
    version: async () => ({ arch: 'amd64' }) as never,
  } as unknown as GroupRunnerEngine;
  const driver = {
    ownerId: 'fake',
    ownerProcess: undefined,
    retryPolicy: { ...DEFAULT_RETRY_POLICY, initialDelayMs: 1 },
    pullsImages: false,
    resolveGroup: (spec: unknown) => resolveGroupSpec(spec),
    acquireImage: async () => undefined,
    releaseImages: (taskId: string) => void calls.push(`release ${taskId}`),
    startAccepted: async (spec: { command?: string[] }, options: { taskId: string }) => {
      calls.push(`start ${options.taskId}`);
      if (spec.command?.[0] === 'refused') throw new BerthError('BERTH_ENGINE_SERVER_ERROR', 'the engine refused the create');
      let endNow: (state: EndState) => void = () => undefined;
      const ended = new Promise<EndState>((resolve) => (endNow = resolve));
      const handle = {
        taskId: options.taskId,
        containerId: `${options.taskId}-container`,
        phase: 'running',
        stdout: Readable.from([]),
        stderr: Readable.from([]),
        wait: () => ended,
        stop: async () => (calls.push(`stop ${options.taskId}`), endNow({ kind: 'cancelled' })),
        destroy: async () => void calls.push(`destroy ${options.taskId}`),
      };
      tasks.set(options.taskId, { taskId: options.taskId, end: endNow });
      return handle as unknown as TaskHandle;
    },
  } as unknown as TaskDriver;
  return { calls, tasks, runner: new GroupRunner({ driver, engine }) };
}

const task = (name: string, lifecycle = 'main', command = ['run']) => ({ name, lifecycle, image: 'busybox', command });

describe('GroupRunner coordination', () => {
  test('at the end every task container goes first, then the infrastructure container, the network and the volume', async () => {
    const { calls, tasks, runner } = fakes();
    const group = await runner.start({ name: 'g', network: { mode: 'private' }, tasks: [task('web'), task('log', 'sidecar')] }, { groupId: 'g-1' });
    tasks.get('g-1.web')!.end({ kind: 'success', exitCode: 0 });
    assert.deepEqual(await group.wait(), { kind: 'success', exitCode: 0 });
    const end = calls.slice(calls.indexOf('stop g-1.log'));
    const last = (entry: string) => end.lastIndexOf(entry);
    assert.ok(last('destroy g-1.web') < last('remove berth-g-1.fake-infra.10') && last('destroy g-1.log') < last('remove berth-g-1.fake-infra.10'), end.join(', '));
    assert.ok(last('remove berth-g-1.fake-infra.10') < last('remove network') && last('remove network') < last('remove volume'), end.join(', '));
    assert.equal(group.state, 'removed');
  });

  test('publishes its events on the berth:groups channel as { type, ...event }', async () => {
    const { tasks, runner } = fakes();
    const seen: string[] = [];
    const listener = (message: unknown): void => {
      const event = message as { type: string; groupId: string; task?: string; to?: string };
      if (event.groupId === 'g-5') seen.push(`${event.type}:${event.task ?? event.to}`);
    };
    diagnostics.subscribe('berth:groups', listener);
    try {
      const group = await runner.start({ name: 'g', tasks: [task('main')] }, { groupId: 'g-5' });
      tasks.get('g-5.main')!.end({ kind: 'success', exitCode: 0 });
      await group.wait();
    } finally {
      diagnostics.unsubscribe('berth:groups', listener);
    }
    assert.deepEqual(seen, ['task-started:main', 'state:running', 'task-ended:main', 'state:exited', 'state:removed']);
  });

  test('a listener that stops the group while a failed prestart skips the others ends it once, cancelled tasks never started', async () => {
    const { calls, tasks, runner } = fakes();
    const group = await runner.start({ name: 'g', tasks: [task('setup', 'prestart'), task('main'), task('side', 'sidecar')] }, { groupId: 'g-2' });
    const states: string[] = [];
    group.on('state', (e) => states.push(e.to));
    group.on('task-ended', (e) => {
      if (e.task === 'main') void group.stop();
    });
    tasks.get('g-2.setup')!.end({ kind: 'failed', exitCode: 1 });
    const end = await group.wait();
    assert.equal(end.kind, 'failed');
    assert.equal(end.task, 'setup');
    assert.deepEqual(states, ['stopping', 'exited', 'removed'], 'one legal path, no move after the end');
    assert.ok(!calls.includes('start g-2.main') && !calls.includes('start g-2.side'), calls.join(', '));
  });

  test('a task whose start is refused after the prestart stops the running sidecar and fails the group', async () => {
    const { calls, tasks, runner } = fakes();
    const group = await runner.start({ name: 'g', tasks: [task('setup', 'prestart'), task('main', 'main', ['refused']), task('side', 'sidecar')] }, { groupId: 'g-3' });
    tasks.get('g-3.setup')!.end({ kind: 'success', exitCode: 0 });
    const end = await group.wait();
    assert.equal(end.kind, 'failed');
    assert.equal(end.exitCode, 125);
    assert.match(end.reason ?? '', /main task main could not start: the engine refused the create/);
    assert.ok(calls.includes('stop g-3.side'), calls.join(', '));
  });

  test('an output callback that throws fails that task\'s start: start rejects with its error after removing everything', async () => {
    const { calls, runner } = fakes();
    await assert.rejects(
      runner.start({ name: 'g', tasks: [task('main')] }, {
        groupId: 'g-4',
        output: () => {
          throw new Error('no sink today');
        },
      }),
      /no sink today/,
    );
    assert.ok(calls.includes('remove berth-g-4.fake-infra.10') && calls.includes('remove volume'), calls.join(', '));
    assert.ok(!calls.includes('start g-4.main'));
  });

  test('a group id that leaves no room for its task names is refused before anything is made', async () => {
    const { calls, runner } = fakes();
    await assert.rejects(runner.start({ name: 'g', tasks: [task('x'.repeat(64))] }, { groupId: 'y'.repeat(64) }), /groupId/);
    await assert.rejects(runner.start({ name: 'g', tasks: [task('a')] }, { groupId: 'bad id' }), /groupId/);
    assert.deepEqual(calls, []);
  });
});
