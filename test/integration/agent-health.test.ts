import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LABELS } from '../../src/common/labels.js';
import type { AgentClient, AgentEvent, EventSubscription, TaskView } from '../../src/agent/client.js';
import type { StoredTaskSpec } from '../../src/state/tasks.js';
import { pollUntil, readAll, requireEngine, TEST_IMAGE, testEngine, TEST_ENGINE_KIND } from '../support/engine.js';
import { agentClientOf, agentTestFile, berth, spawnBerth, waitForTaskState, writeAgentConfig } from '../support/agent.js';

/**
 * Health through a real agent process on the real engine: the task view's `health` (status,
 * failing streak, the last probes), `task.health` events, `berth ps`'s STATUS and `--filter
 * health=`, the metrics, and `waitHealthy` (starting until healthy; unhealthy ends failed and leaves
 * no container; a restarted agent keeps waiting). Checks run at short intervals (the engine takes
 * down to 1 ms); a check that must not fail too early has a long start period, in which failures
 * do not count, and passes once the test creates a file in the container.
 */
const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);

const spec = (extra: Partial<StoredTaskSpec>): StoredTaskSpec => ({ image: TEST_IMAGE, command: ['sleep', '600'], labels: { ...run.labels }, stopGracePeriod: '1s', ...extra });

/** Passes once /tmp/ready exists; fails (uncounted, in the start period) until then. */
const checkOnReadyFile = { shell: 'echo probe-says-hello; test -f /tmp/ready', interval: '200ms', startPeriod: '10m' };

async function touchReady(containerId: string): Promise<void> {
  const session = await engine.exec(containerId, { cmd: ['sh', '-c', ': > /tmp/ready'] });
  await readAll(session.stdout);
  assert.equal(await session.exitCode(), 0);
}

async function untilView(client: AgentClient, id: string, what: string, ok: (task: TaskView) => boolean): Promise<TaskView> {
  return pollUntil(`task ${id}: ${what}`, async () => {
    const task = await client.get(id);
    return ok(task) ? task : undefined;
  }, { timeoutMs: 60_000, intervalMs: 100 });
}

/** Reads a subscription until `done` says so (bounded by a deadline); resolves with what it saw. */
async function readEvents(events: EventSubscription, done: (seen: readonly AgentEvent[]) => boolean): Promise<AgentEvent[]> {
  const seen: AgentEvent[] = [];
  const timer = setTimeout(() => events.close(), 60_000);
  try {
    for await (const event of events) {
      seen.push(event);
      if (done(seen)) return seen;
    }
  } finally {
    clearTimeout(timer);
    events.close();
  }
  throw new Error(`the event stream ended before the expected events; it gave ${seen.map((e) => e.type).join(', ')}`);
}

const healthEventsOf = (events: readonly AgentEvent[], id: string) =>
  events.filter((e): e is Extract<AgentEvent, { type: 'task.health' }> => e.type === 'task.health' && e.taskId === id);

async function metricValue(client: AgentClient, series: string): Promise<number | undefined> {
  const line = (await client.metrics()).split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

async function containersOf(id: string): Promise<string[]> {
  return (await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] })).map((c) => c.id);
}

describe('task health through the agent', { skip: await requireEngine() }, () => {
  test('a passing check moves health from starting to healthy with the probe log, as task.health events in order, in ps, events and metrics; an ended task keeps it', async () => {
    const dataDir = await dirs.make('berth-hl-');
    const agent = await agents.start(dataDir);
    const client = await agentClientOf(agent);
    const id = `${run.id}-pass`;
    const plain = `${run.id}-plain`;
    const events = await client.events();
    await client.submit({ id, spec: spec({ healthcheck: checkOnReadyFile }) });
    await client.submit({ id: plain, spec: spec({}) });
    const starting = await untilView(client, id, 'running with health starting', (t) => t.state === 'running' && t.health?.status === 'starting');
    assert.equal(starting.health!.failingStreak, 0, 'failures in the start period do not count');

    const ps = await berth(dataDir, ['ps', '--filter', `label=${Object.keys(run.labels)[0]}`, '--format', '{{.Names}}|{{.Status}}']);
    assert.equal(ps.code, 0, ps.stderr);
    assert.match(ps.stdout, new RegExp(`^${id}\\|Up .* \\(health: starting\\)$`, 'm'));
    assert.match(ps.stdout, new RegExp(`^${plain}\\|Up [^(]*$`, 'm'), 'a task without a health check shows no health');

    await touchReady(starting.containerId!);
    const healthy = await untilView(client, id, 'healthy', (t) => t.health?.status === 'healthy');
    assert.equal(healthy.state, 'running');
    assert.equal(healthy.health!.failingStreak, 0);
    const last = healthy.health!.log.at(-1)!;
    assert.equal(last.exitCode, 0);
    assert.match(last.output, /probe-says-hello/);
    assert.ok(last.start !== undefined && last.end !== undefined && Date.parse(last.end) >= Date.parse(last.start), JSON.stringify(last));
    assert.ok(healthy.health!.log.length <= 5);
    assert.equal((await client.get(plain)).health, undefined, 'a task without a health check has no health in its view');

    const seen = healthEventsOf(await readEvents(events, (all) => healthEventsOf(all, id).some((e) => e.status === 'healthy')), id);
    assert.deepEqual(seen.map((e) => e.status), ['starting', 'healthy']);
    assert.equal(seen[1]!.exitCode, 0);
    assert.match(seen[1]!.output ?? '', /probe-says-hello/);

    const psHealthy = await berth(dataDir, ['ps', '--filter', 'health=healthy', '--format', '{{.Names}}|{{.Status}}']);
    assert.match(psHealthy.stdout, new RegExp(`^${id}\\|Up .* \\(healthy\\)$`, 'm'));
    assert.doesNotMatch(psHealthy.stdout, new RegExp(plain));

    // berth events shows them, replayed from the start of the log.
    const cli = spawnBerth(dataDir, ['events', '--since', '0', '--filter', 'type=task.health', '--filter', `task=${id}`]);
    try {
      await pollUntil('berth events to show the healthy change', async () => (/task\.health\s+\S+ healthy/.test(cli.stdout()) ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
    } finally {
      cli.interrupt();
      await cli.closed;
    }
    assert.match(cli.stdout(), new RegExp(`task\\.health  ${id} starting[^\\n]*\\n.*task\\.health  ${id} healthy \\(last check exit 0: probe-says-hello\\)`));

    assert.ok((await metricValue(client, 'berth_task_health_changes_total{status="healthy"}'))! >= 1);
    assert.equal(await metricValue(client, 'berth_tasks_unhealthy'), 0);

    // Ended, it keeps its last known health; inspect shows it.
    await client.stop(id);
    const ended = await waitForTaskState(client, id, ['exited']);
    assert.equal(ended.health?.status, 'healthy');
    const inspect = await berth(dataDir, ['inspect', id]);
    assert.equal((JSON.parse(inspect.stdout) as TaskView[])[0]!.health?.status, 'healthy');
    await client.stop(plain);
    client.close();
  });

  test('a failing check shows unhealthy with its failing streak and the probe output; the task keeps running', async () => {
    const dataDir = await dirs.make('berth-hl-');
    const agent = await agents.start(dataDir);
    const client = await agentClientOf(agent);
    const id = `${run.id}-fail`;
    const events = await client.events();
    await client.submit({ id, spec: spec({ healthcheck: { shell: 'echo database-is-down; exit 3', interval: '200ms', retries: 2 } }) });
    const sick = await untilView(client, id, 'unhealthy', (t) => t.health?.status === 'unhealthy');
    assert.equal(sick.state, 'running', 'without waitHealthy an unhealthy task runs on');
    assert.ok(sick.health!.failingStreak >= 2, JSON.stringify(sick.health));
    // Podman records a failed probe's exit code as 1 whatever the command's own (its health log keeps pass or fail).
    const probeExit = TEST_ENGINE_KIND === 'podman' ? 1 : 3;
    assert.equal(sick.health!.log.at(-1)!.exitCode, probeExit);
    assert.match(sick.health!.log.at(-1)!.output, /database-is-down/);

    const seen = healthEventsOf(await readEvents(events, (all) => healthEventsOf(all, id).some((e) => e.status === 'unhealthy')), id);
    const unhealthy = seen.at(-1)!;
    assert.deepEqual([unhealthy.status, unhealthy.exitCode], ['unhealthy', probeExit]);
    assert.ok(unhealthy.failingStreak >= 2);
    assert.match(unhealthy.output ?? '', /database-is-down/);

    const ps = await berth(dataDir, ['ps', '--filter', 'health=unhealthy', '--format', '{{.Names}}|{{.Status}}']);
    assert.match(ps.stdout, new RegExp(`^${id}\\|Up .* \\(unhealthy\\)$`, 'm'));
    assert.equal(await metricValue(client, 'berth_tasks_unhealthy'), 1);
    assert.ok((await metricValue(client, 'berth_task_health_changes_total{status="unhealthy"}'))! >= 1);
    await client.stop(id);
    await waitForTaskState(client, id, ['exited']);
    client.close();
  });

  test('waitHealthy: the task is starting, holding its admission share, until healthy, then running', async () => {
    const dataDir = await dirs.make('berth-hl-');
    const config = await writeAgentConfig(dataDir, 'admission:\n  cpuMilli: 1000\n');
    const agent = await agents.start(dataDir, ['--config', config]);
    const client = await agentClientOf(agent);
    const id = `${run.id}-gate`;
    const behind = `${run.id}-behind`;
    await client.submit({ id, spec: spec({ waitHealthy: true, healthcheck: checkOnReadyFile, resources: { cpuMilli: 1000 } }) });
    const waiting = await untilView(client, id, 'a container whose health is starting', (t) => t.containerId !== undefined && t.health?.status === 'starting');
    assert.equal(waiting.state, 'starting');
    assert.equal((await engine.inspectContainer(waiting.containerId!)).running, true, 'its container runs');
    await client.submit({ id: behind, spec: spec({ resources: { cpuMilli: 1000 } }) });
    const ps = await berth(dataDir, ['ps', '--format', '{{.Names}}|{{.Status}}']);
    assert.match(ps.stdout, new RegExp(`^${id}\\|Starting \\(health: starting\\)$`, 'm'));
    assert.equal((await client.get(id)).state, 'starting', 'no verdict yet: still starting');
    assert.equal((await client.get(behind)).state, 'pending', 'the starting task holds its share');

    await touchReady(waiting.containerId!);
    const running = await waitForTaskState(client, id, ['running']);
    assert.equal(running.health?.status, 'healthy');
    assert.ok(running.startedAt !== undefined);
    await client.stop(id);
    await waitForTaskState(client, behind, ['running', 'starting']);
    await client.stop(behind);
    client.close();
  });

  test('waitHealthy: an unhealthy task ends failed with BERTH_TASK_UNHEALTHY and leaves no container; one stopped while it waits ends cancelled', async () => {
    const dataDir = await dirs.make('berth-hl-');
    const agent = await agents.start(dataDir);
    const client = await agentClientOf(agent);
    const id = `${run.id}-never`;
    const stopped = `${run.id}-stopped`;
    const events = await client.events();
    await client.submit({ id, spec: spec({ waitHealthy: true, healthcheck: { shell: 'echo not-today; exit 1', interval: '200ms', retries: 2 } }) });
    await client.submit({ id: stopped, spec: spec({ waitHealthy: true, healthcheck: checkOnReadyFile }) });

    const ended = await client.wait(id);
    assert.equal(ended.state, 'exited');
    assert.equal(ended.endState?.kind, 'failed');
    assert.match((ended.endState as { reason?: string }).reason ?? '', /^BERTH_TASK_UNHEALTHY: .*is unhealthy.*not-today/);
    assert.equal(ended.health?.status, 'unhealthy');
    const states = (await readEvents(events, (all) => all.some((e) => e.type === 'task.state' && e.taskId === id && e.state === 'exited')))
      .filter((e) => e.type === 'task.state' && e.taskId === id)
      .map((e) => (e as { state: string }).state);
    assert.ok(!states.includes('running'), `never running: ${states.join(', ')}`);
    await pollUntil('its container to be removed', async () => ((await containersOf(id)).length === 0 ? true : undefined), { timeoutMs: 30_000, intervalMs: 200 });
    const ps = await berth(dataDir, ['ps', '-a', '--no-trunc', '--format', '{{.Names}}|{{.Status}}']);
    assert.match(ps.stdout, new RegExp(`^${id}\\|Failed to start: task ${id} is unhealthy`, 'm'));

    await untilView(client, stopped, 'a container whose health is starting', (t) => t.containerId !== undefined && t.health !== undefined);
    const stop = await berth(dataDir, ['stop', stopped]);
    assert.equal(stop.code, 0, stop.stderr);
    const cancelled = await waitForTaskState(client, stopped, ['exited']);
    assert.equal(cancelled.endState?.kind, 'cancelled');
    await pollUntil('its container to be removed', async () => ((await containersOf(stopped)).length === 0 ? true : undefined), { timeoutMs: 30_000, intervalMs: 200 });
    client.close();
  });

  test('a task waiting for health keeps waiting across an agent killed with SIGKILL, keeps its recorded health, and runs once healthy', async () => {
    const dataDir = await dirs.make('berth-hl-');
    const first = await agents.start(dataDir);
    let client = await agentClientOf(first);
    const id = `${run.id}-restart`;
    await client.submit({ id, spec: spec({ waitHealthy: true, healthcheck: checkOnReadyFile }) });
    const waiting = await untilView(client, id, 'a container whose health is starting', (t) => t.containerId !== undefined && t.health?.status === 'starting');
    client.close();
    first.child.kill('SIGKILL');
    assert.equal(await first.exited, null);

    const second = await agents.start(dataDir);
    client = await agentClientOf(second);
    const recovered = await client.get(id);
    assert.equal(recovered.state, 'starting', 'still waiting for health');
    assert.equal(recovered.containerId, waiting.containerId, 'the same container');
    assert.equal(recovered.health?.status, 'starting', 'the recorded health survives the restart');

    await touchReady(waiting.containerId!);
    const running = await waitForTaskState(client, id, ['running']);
    assert.equal(running.health?.status, 'healthy');
    await client.stop(id);
    await waitForTaskState(client, id, ['exited']);
    client.close();
  });
});
