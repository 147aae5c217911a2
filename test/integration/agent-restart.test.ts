import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LABELS } from '../../src/common/labels.js';
import { startAttemptKey } from '../../src/agent/restart.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import type { AgentClient, TaskView } from '../../src/agent/client.js';
import type { AgentEvent } from '../../src/agent/events.js';
import type { StoredTaskSpec } from '../../src/state/tasks.js';
import { pollUntil, requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';
import { agentClientOf, agentTestFile, berth, submitViaCli, waitForTaskState, writeAgentConfig } from '../support/agent.js';

/**
 * The restart policy (a spec's `restart`), through a real agent process on the real engine: each
 * attempt is a new container of the one task, listed with its end in the task's view, its output
 * appended to the task's logs, its delay (with backoff) honoured; a stop during the wait cancels
 * the task; OOM restarts unless the policy leaves it out; an agent killed between attempts is
 * resumed by the next one; and no attempt leaves a container behind.
 */
const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);

const ENDED = ['exited', 'lost'] as const;
const RESTART_DELAY_MS = 200;

/** A spec of the test's image under this run's labels; `restart` is its restart policy. */
const spec = (command: string[], extra: Partial<StoredTaskSpec> = {}): StoredTaskSpec => ({ image: TEST_IMAGE, command, labels: { ...run.labels }, stopGracePeriod: 0, ...extra });

/**
 * A script that counts its runs in a file of a bind-mounted directory (which outlives each
 * attempt's container) and fails with exit 1 until its `succeedOn`-th run.
 */
const countedRun = (succeedOn: number): string[] => ['sh', '-c', `n=$(cat /count/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /count/n; echo "attempt $n"; [ "$n" -ge ${succeedOn} ] || exit 1`];

/** A data directory and the config of an agent that allows a fresh directory for countedRun as a bind source, and the mount of it. */
async function countingAgentSetup(): Promise<{ dataDir: string; args: string[]; mounts: StoredTaskSpec['mounts'] }> {
  const dataDir = await dirs.make('berth-rs-');
  const countDir = await dirs.make('berth-rs-count-');
  const config = await writeAgentConfig(dataDir, `policy:\n  allowedBindSources: [${JSON.stringify(countDir)}]\n`);
  return { dataDir, args: ['--config', config], mounts: [{ type: 'bind', source: countDir, target: '/count' }] };
}

async function outputOf(client: AgentClient, id: string): Promise<string> {
  let text = '';
  for await (const record of client.logs(id)) text += record.text;
  return text;
}

/** The containers of the task that the engine still has (any state). */
async function containersOf(id: string): Promise<string[]> {
  return (await engine.listContainers({ all: true, labels: [run.labelFilter, `${LABELS.taskId}=${id}`] })).map((c) => c.id);
}

/** Waits (bounded) until the engine has no container of the task left. */
async function untilNoContainer(id: string): Promise<void> {
  await pollUntil(`the containers of ${id} to be removed`, async () => ((await containersOf(id)).length === 0 ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
}

/** The task.restart events of a task, replayed from the agent's event log (`since=0`), once there are `count`. */
async function restartEvents(client: AgentClient, id: string, count: number): Promise<Array<Extract<AgentEvent, { type: 'task.restart' }>>> {
  const found: Array<Extract<AgentEvent, { type: 'task.restart' }>> = [];
  const subscription = await client.events({ since: 0, signal: AbortSignal.timeout(30_000) });
  try {
    for await (const event of subscription) {
      if (event.type === 'task.restart' && event.taskId === id) found.push(event);
      if (found.length === count) break;
    }
  } finally {
    subscription.close();
  }
  return found;
}

const ms = (time: string | undefined): number => new Date(time!).getTime();
const endsOf = (task: TaskView): Array<[number, string | undefined, number | undefined]> => (task.attempts ?? []).map((a) => [a.attempt, a.endState?.kind, a.exitCode]);

describe('restart policy through the agent', { skip: await requireEngine() }, () => {
  test('a task that fails twice then succeeds ends success with three attempts, each a new container, its logs holding all three, its delays (with backoff) honoured', async () => {
    const { dataDir, args, mounts } = await countingAgentSetup();
    const agent = await agents.start(dataDir, args);
    const client = await agentClientOf(agent);
    const id = `${run.id}-thrice`;
    await client.submit({ id, spec: spec(countedRun(3), { mounts, restart: { policy: 'on-failure', attempts: 3, delay: RESTART_DELAY_MS, backoff: 2 } }) });
    // A follower (logs -f) follows the task through its restarts, and ends with the task.
    const followed = (async () => {
      let text = '';
      for await (const record of client.logs(id, { follow: true, signal: AbortSignal.timeout(60_000) })) text += record.text;
      return text;
    })();
    const task = await waitForTaskState(client, id, ENDED);
    assert.deepEqual([task.state, task.endState?.kind, task.exitCode, task.restarts], ['exited', 'success', 0, 2], JSON.stringify(task));
    assert.deepEqual(endsOf(task), [[1, 'failed', 1], [2, 'failed', 1], [3, 'success', 0]]);
    const [first, second, third] = task.attempts!;
    const containerIds = task.attempts!.map((a) => a.containerId);
    assert.equal(new Set(containerIds).size, 3, `each attempt is a new container: ${containerIds.join(', ')}`);
    assert.equal(task.containerId, third!.containerId, 'the task shows its last attempt\'s container');
    // The delay before each attempt: 200 ms, then 400 ms (backoff 2). A correctness bound, not a timing.
    assert.ok(ms(second!.startedAt) - ms(first!.finishedAt) >= RESTART_DELAY_MS, `second attempt ${second!.startedAt} after ${first!.finishedAt}`);
    assert.ok(ms(third!.startedAt) - ms(second!.finishedAt) >= RESTART_DELAY_MS * 2, `third attempt ${third!.startedAt} after ${second!.finishedAt}`);
    assert.equal(await outputOf(client, id), 'attempt 1\nattempt 2\nattempt 3\n');
    assert.equal(await followed, 'attempt 1\nattempt 2\nattempt 3\n');

    const events = await restartEvents(client, id, 2);
    assert.deepEqual(events.map((e) => [e.attempt, e.delayMs, e.previousEnd.kind]), [[2, RESTART_DELAY_MS, 'failed'], [3, RESTART_DELAY_MS * 2, 'failed']]);
    assert.match(await client.metrics(), /^berth_task_restarts_total\{end="failed"\} 2$/m);
    // The CLI shows the restarts and the attempts.
    const inspect = await berth(dataDir, ['inspect', id]);
    assert.equal(inspect.code, 0, inspect.stderr);
    const [inspected] = JSON.parse(inspect.stdout) as TaskView[];
    assert.deepEqual([inspected?.restarts, inspected?.attempts?.length], [2, 3]);
    await untilNoContainer(id);
    client.close();
  });

  test('with its attempts used up (mode fail) a task ends failed with the last exit code and attempts + 1 attempts', async () => {
    const dataDir = await dirs.make('berth-rs-');
    const agent = await agents.start(dataDir);
    const client = await agentClientOf(agent);
    // Through the CLI, in docker's words: --restart on-failure:2.
    const id = await submitViaCli(dataDir, run.labelFilter, ['--name', `${run.id}-exhaust`, '--stop-timeout', '0', '--restart', 'on-failure:2', '--restart-delay', `${RESTART_DELAY_MS}ms`, TEST_IMAGE, 'sh', '-c', 'echo try; exit 3']);
    const task = await waitForTaskState(client, id, ENDED);
    assert.deepEqual([task.endState?.kind, task.exitCode, task.restarts], ['failed', 3, 2], JSON.stringify(task));
    assert.deepEqual(endsOf(task), [[1, 'failed', 3], [2, 'failed', 3], [3, 'failed', 3]]);
    assert.equal(await outputOf(client, id), 'try\ntry\ntry\n');
    await untilNoContainer(id);

    // A task under the default policy (never) ends at its first failure, its view as before.
    const once = `${run.id}-never`;
    await client.submit({ id: once, spec: spec(['sh', '-c', 'exit 4']) });
    const ended = await waitForTaskState(client, once, ENDED);
    assert.deepEqual([ended.endState?.kind, ended.exitCode, ended.restarts, ended.attempts], ['failed', 4, undefined, undefined]);
    await untilNoContainer(once);
    client.close();
  });

  test('a stop while the task waits for its next attempt cancels it: no new container is made', async () => {
    const dataDir = await dirs.make('berth-rs-');
    const agent = await agents.start(dataDir);
    const client = await agentClientOf(agent);
    const id = `${run.id}-stopwait`;
    await client.submit({ id, spec: spec(['sh', '-c', 'exit 1'], { restart: { policy: 'on-failure', attempts: 3, delay: '10m' } }) });
    const waiting = await pollUntil('the task to wait for its second attempt', async () => {
      const task = await client.get(id);
      return task.state === 'starting' && task.restarts === 1 ? task : undefined;
    }, { timeoutMs: 60_000, intervalMs: 100 });
    assert.ok(waiting.restartAt, JSON.stringify(waiting));
    assert.equal(waiting.containerId, undefined, 'no container while it waits');
    // berth ps says so, as docker ps does.
    const ps = await berth(dataDir, ['ps', '-a', '--no-trunc', '-f', `label=${run.labelFilter}`]);
    assert.match(ps.stdout.split('\n').find((line) => line.startsWith(`${id} `)) ?? '', /\sRestarting \(1\) /, ps.stdout);
    await untilNoContainer(id);
    const stopped = await client.stop(id);
    assert.deepEqual([stopped.state, stopped.endState?.kind], ['exited', 'cancelled'], JSON.stringify(stopped));
    assert.deepEqual(endsOf(stopped), [[1, 'failed', 1]], 'the cancelled attempt never ran');
    assert.equal(stopped.restartAt, undefined);
    assert.deepEqual(await containersOf(id), []);
    client.close();
  });

  test('an OOM kill and a timeout restart under on-failure; OOM left out of `on` ends the task', async () => {
    const dataDir = await dirs.make('berth-rs-');
    const agent = await agents.start(dataDir);
    const client = await agentClientOf(agent);
    const oomCommand = ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1'];
    const restarted = `${run.id}-oom`;
    const excluded = `${run.id}-oom-excluded`;
    const late = `${run.id}-late`;
    await client.submit({ id: restarted, spec: spec(oomCommand, { resources: { memory: '32m' }, restart: { policy: 'on-failure', attempts: 1, delay: RESTART_DELAY_MS } }) });
    await client.submit({ id: excluded, spec: spec(oomCommand, { resources: { memory: '32m' }, restart: { policy: 'on-failure', attempts: 1, delay: RESTART_DELAY_MS, on: ['failed', 'timed-out'] } }) });
    await client.submit({ id: late, spec: spec(['sleep', '30'], { timeout: '300ms', restart: { policy: 'on-failure', attempts: 1, delay: RESTART_DELAY_MS } }) });
    const [oom, notRestarted, timedOut] = await Promise.all([restarted, excluded, late].map((id) => waitForTaskState(client, id, ENDED)));
    assert.deepEqual([oom!.endState?.kind, oom!.restarts], ['oom', 1], JSON.stringify(oom));
    assert.deepEqual(endsOf(oom!).map(([n, kind]) => [n, kind]), [[1, 'oom'], [2, 'oom']]);
    assert.deepEqual([notRestarted!.endState?.kind, notRestarted!.restarts], ['oom', 0], JSON.stringify(notRestarted));
    assert.deepEqual(endsOf(notRestarted!).map(([n, kind]) => [n, kind]), [[1, 'oom']]);
    assert.deepEqual([timedOut!.endState?.kind, timedOut!.restarts], ['timed-out', 1], JSON.stringify(timedOut));
    await Promise.all([restarted, excluded, late].map(untilNoContainer));
    client.close();
  });

  test('an agent killed (SIGKILL) while a task waits for its next attempt: the next agent resumes the wait and the task finishes', async () => {
    const { dataDir, args, mounts } = await countingAgentSetup();
    const first = await agents.start(dataDir, args);
    let client = await agentClientOf(first);
    const id = `${run.id}-crash`;
    const restartDelayMs = 3000;
    await client.submit({ id, spec: spec(countedRun(2), { mounts, restart: { policy: 'on-failure', attempts: 2, delay: restartDelayMs } }) });
    const waiting = await pollUntil('the task to wait for its second attempt', async () => {
      const task = await client.get(id);
      return task.state === 'starting' && task.restarts === 1 ? task : undefined;
    }, { timeoutMs: 60_000, intervalMs: 50 });
    client.close();
    await first.stop('SIGKILL');

    const second = await agents.start(dataDir, args);
    client = await agentClientOf(second);
    const task = await waitForTaskState(client, id, ENDED);
    assert.deepEqual([task.endState?.kind, task.restarts], ['success', 1], JSON.stringify(task));
    assert.deepEqual(endsOf(task), [[1, 'failed', 1], [2, 'success', 0]]);
    // The resumed wait still ends at the time the first agent set (not sooner), and the second attempt ran once.
    assert.ok(ms(task.attempts![1]!.startedAt) >= ms(waiting.restartAt), `${task.attempts![1]!.startedAt} >= ${waiting.restartAt}`);
    assert.equal(await outputOf(client, id), 'attempt 1\nattempt 2\n');
    await untilNoContainer(id);
    client.close();
  });

  test('a task whose container vanished while the agent was down is lost, and its restart policy restarts it', async () => {
    const { dataDir, args, mounts } = await countingAgentSetup();
    const first = await agents.start(dataDir, args);
    let client = await agentClientOf(first);
    const id = `${run.id}-lost`;
    // The first attempt runs until the test removes its container; the second succeeds.
    const script = 'n=$(cat /count/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /count/n; echo "attempt $n"; [ "$n" -ge 2 ] || sleep 120';
    await client.submit({ id, spec: spec(['sh', '-c', script], { mounts, restart: { policy: 'on-failure', attempts: 1, delay: RESTART_DELAY_MS } }) });
    const running = await waitForTaskState(client, id, ['running']);
    client.close();
    await first.stop('SIGKILL');
    await engine.removeContainer(running.containerId!);

    const second = await agents.start(dataDir, args);
    client = await agentClientOf(second);
    const task = await waitForTaskState(client, id, ENDED);
    assert.deepEqual([task.endState?.kind, task.restarts], ['success', 1], JSON.stringify(task));
    assert.deepEqual(endsOf(task).map(([n, kind]) => [n, kind]), [[1, 'lost'], [2, 'success']]);
    assert.match(task.attempts![0]!.reason ?? '', /gone when the agent restarted/);
    await untilNoContainer(id);
    client.close();
  });

  test('recovering a restarted task removes the container an earlier attempt left (a crash cut its removal short) and recovers only the current attempt\'s', async () => {
    const driver = new TaskDriver({ engine, ownerId: `test-${run.id}` });
    const taskId = `${run.id}-attempts`;
    const taskSpec = { image: TEST_IMAGE, labels: { ...run.labels }, stopGracePeriod: 0 };
    const first = await driver.start({ ...taskSpec, command: ['sh', '-c', 'exit 1'] }, { taskId, startAttempt: startAttemptKey(taskId, 1) });
    assert.equal((await first.wait()).kind, 'failed');
    // The agent recorded the restart (attempt 2 is current) and died before removing attempt 1's container.
    assert.equal(await driver.recover(taskId, taskSpec, { startAttempt: startAttemptKey(taskId, 2) }), undefined);
    assert.deepEqual(await containersOf(taskId), [], 'the dead attempt\'s container is removed');
    // Attempt 2 runs; a recovery asking for it finds it (and never takes it for a dead attempt's).
    const second = await driver.start({ ...taskSpec, command: ['sleep', '30'] }, { taskId, startAttempt: startAttemptKey(taskId, 2) });
    const recovered = await driver.recover(taskId, taskSpec, { startAttempt: startAttemptKey(taskId, 2) });
    assert.equal(recovered?.containerId, second.containerId);
    assert.equal(recovered?.phase, 'running');
    await second.destroy();
    await recovered?.destroy();
    assert.deepEqual(await containersOf(taskId), []);
  });

  test('no attempt of any task of this file left a container behind', async () => {
    assert.deepEqual(await run.leftovers(), []);
  });
});
