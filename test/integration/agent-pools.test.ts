import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LABELS, ROLES } from '../../src/common/labels.js';
import type { AgentClient } from '../../src/agent/client.js';
import type { AgentEvent } from '../../src/agent/events.js';
import { agentClientOf, agentTestFile, berth, cleanEnv, runBerth, waitForTaskState, writeAgentConfig, type RunningAgent } from '../support/agent.js';
import { pollUntil, requireEngine, startTestContainer, TEST_IMAGE, testEngine } from '../support/engine.js';

/**
 * Warm pools through a real agent process on the real engine: a task whose spec matches a pool
 * configured in the agent's `pools` runs as an exec in one of its idle containers (the view says
 * `start.path: warm`), with its exit code and both streams in its logs (resumable with since and
 * follow); one that does not match starts cold; metrics count hits, misses and the pool's
 * containers; a cold task that needs the budget shrinks the pool, which refills after; the
 * reconciler leaves the pool's containers alone and removes one it does not know; a bad pool in
 * the configuration is refused, naming its field.
 */

const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);
const skip = await requireEngine();

const POOL = 'warm';
const POOL_SIZE = 2;
/** 64 MiB per pool container, and a budget of 256 MiB: the pool holds 128, a 200 MiB task needs all of it. */
const POOL_MEMORY = '64m';
const BUDGET = '256m';
const ENDED = ['exited', 'lost'] as const;

/** The pool's spec: what a task must share to take one of its containers (it may choose its command). */
const poolSpec = () => ({ image: TEST_IMAGE, labels: { ...run.labels }, resources: { memory: POOL_MEMORY, cpuMilli: 100 } });

/** The pool containers of this run on the engine (every state), by id, with their state. */
async function poolContainers(): Promise<Map<string, string>> {
  const rows = await engine.listContainers({ all: true, labels: [run.labelFilter, `${LABELS.role}=${ROLES.pool}`] });
  return new Map(rows.map((row) => [row.id, row.state]));
}

/**
 * Waits until the pool holds `count` running (idle) containers, none is being made or removed, and
 * the agent counts them idle (their launchers run: a container runs before it is offered).
 */
async function poolFilled(client: AgentClient, count: number): Promise<Set<string>> {
  return pollUntil(
    `the pool to hold ${count} running containers`,
    async () => {
      const containers = await poolContainers();
      const running = [...containers].filter(([, state]) => state === 'running').map(([id]) => id);
      if (running.length !== count || containers.size !== count) return undefined;
      const idle = metricValue(await client.metrics(), new RegExp(`^berth_pool_containers\\{pool="${POOL}",state="idle"\\} (\\d+)$`, 'm'));
      return idle === count ? new Set(running) : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 100 },
  );
}

function metricValue(text: string, line: RegExp): number {
  const match = line.exec(text);
  return match ? Number(match[1]) : 0;
}

describe('agent warm pools', { skip }, () => {
  let agent: RunningAgent;
  let client: AgentClient;
  let agentId: string;

  test('starts with the pool filled from its configuration', async () => {
    const dataDir = await dirs.make('berth-pools-');
    agentId = `pools-${run.id}`;
    const config = await writeAgentConfig(
      dataDir,
      JSON.stringify({
        agentId,
        admission: { memory: BUDGET },
        reconcile: { period: '1s', creationGrace: '2s' },
        pools: [{ name: POOL, size: POOL_SIZE, spec: poolSpec() }],
      }),
    );
    agent = await agents.start(dataDir, ['--config', config]);
    client = await agentClientOf(agent);
    await poolFilled(client, POOL_SIZE);
  });

  test('a matching task runs warm in a pool container: exit code, both streams, the started event and the view say so', async () => {
    const idle = await poolFilled(client, POOL_SIZE);
    const events = await client.events();
    const seen: AgentEvent[] = [];
    const id = `warm-${run.id}`;
    const collecting = (async () => {
      for await (const event of events) {
        seen.push(event);
        if (event.type === 'task.state' && event.taskId === id && (ENDED as readonly string[]).includes(event.state)) return;
      }
    })();
    await client.submit({ id, spec: { ...poolSpec(), command: ['sh', '-c', 'echo out 1; echo err 1 >&2; echo out 2; exit 3'] } });
    const task = await waitForTaskState(client, id, ENDED);
    await collecting;
    events.close();
    assert.equal(task.state, 'exited');
    assert.equal(task.exitCode, 3);
    assert.deepEqual(task.start, { path: 'warm', pool: POOL });
    assert.ok(task.containerId && idle.has(task.containerId), 'the task ran in one of the idle pool containers');
    const running = seen.find((event) => event.type === 'task.state' && event.taskId === id && event.state === 'running');
    assert.deepEqual(running && 'start' in running ? running.start : undefined, { path: 'warm', pool: POOL });
    const records: Array<{ stream: string; text: string }> = [];
    for await (const record of client.logs(id)) records.push({ stream: record.stream, text: record.text });
    assert.deepEqual(records.filter((r) => r.stream === 'stdout').map((r) => r.text), ['out 1\n', 'out 2\n']);
    assert.deepEqual(records.filter((r) => r.stream === 'stderr').map((r) => r.text), ['err 1\n']);
    // The container served this one task and is removed; the pool refills.
    await pollUntil('the served container to go', async () => ((await poolContainers()).has(task.containerId!) ? undefined : true), { timeoutMs: 30_000 });
    await poolFilled(client, POOL_SIZE);
    const ps = await berth(agent.dataDir, ['ps', '-a', '--filter', `label=${run.labelFilter}`, '--format', '{{.Names}} {{.Start}}']);
    assert.equal(ps.code, 0, ps.stderr);
    assert.match(ps.stdout, new RegExp(`^${id} warm:${POOL}$`, 'm'));
  });

  test('a warm task\'s logs follow it live and resume after a timestamp, as a cold task\'s do', async () => {
    await poolFilled(client, POOL_SIZE);
    const id = `warm-follow-${run.id}`;
    await client.submit({ id, spec: { ...poolSpec(), command: ['sh', '-c', 'for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done'] } });
    const followed: Array<{ timestamp: string; text: string }> = [];
    for await (const record of client.logs(id, { follow: true })) followed.push({ timestamp: record.timestamp, text: record.text });
    assert.deepEqual(followed.map((r) => r.text), ['line 1\n', 'line 2\n', 'line 3\n', 'line 4\n', 'line 5\n']);
    const task = await waitForTaskState(client, id, ENDED);
    assert.equal(task.exitCode, 0);
    assert.equal(task.start?.path, 'warm');
    const resumed: string[] = [];
    for await (const record of client.logs(id, { since: followed[1]!.timestamp })) resumed.push(record.text);
    assert.deepEqual(resumed, ['line 3\n', 'line 4\n', 'line 5\n']);
    const tail: string[] = [];
    for await (const record of client.logs(id, { tail: 2 })) tail.push(record.text);
    assert.deepEqual(tail, ['line 4\n', 'line 5\n']);
  });

  test('a warm task reads its stdin, and a stop ends a running one as cancelled', async () => {
    await poolFilled(client, POOL_SIZE);
    const piped = `warm-stdin-${run.id}`;
    await client.submit({ id: piped, spec: { ...poolSpec(), stdin: 'from stdin\n', command: ['sh', '-c', 'cat; echo after'] } });
    const done = await waitForTaskState(client, piped, ENDED);
    assert.equal(done.exitCode, 0);
    assert.equal(done.start?.path, 'warm');
    const texts: string[] = [];
    for await (const record of client.logs(piped)) texts.push(record.text);
    assert.deepEqual(texts, ['from stdin\n', 'after\n']);

    await poolFilled(client, POOL_SIZE);
    const stopped = `warm-stop-${run.id}`;
    await client.submit({ id: stopped, spec: { ...poolSpec(), command: ['sh', '-c', 'echo ready; exec sleep 60'] } });
    const running = await waitForTaskState(client, stopped, ['running']);
    assert.equal(running.start?.path, 'warm');
    // Stopped once its process runs (its first line is out).
    await pollUntil('the warm task\'s first line', async () => {
      for await (const record of client.logs(stopped)) if (record.text === 'ready\n') return true;
      return undefined;
    });
    await client.stop(stopped, { graceMs: 1000 });
    const ended = await waitForTaskState(client, stopped, ENDED);
    assert.equal(ended.state, 'exited');
    assert.equal(ended.endState?.kind, 'cancelled');
    await pollUntil('the stopped task\'s container to go', async () => ((await poolContainers()).has(running.containerId!) ? undefined : true), { timeoutMs: 30_000 });
  });

  test('a task that does not match the pool starts cold, and says why', async () => {
    const id = `cold-${run.id}`;
    await client.submit({ id, spec: { ...poolSpec(), resources: { memory: '32m', cpuMilli: 100 }, command: ['sh', '-c', 'echo cold; exit 4'] } });
    const task = await waitForTaskState(client, id, ENDED);
    assert.equal(task.exitCode, 4);
    assert.deepEqual(task.start, { path: 'cold', reason: 'no-match' });
    assert.ok(task.containerId && !(await poolContainers()).has(task.containerId), 'its own container, not a pool\'s');
    const texts: string[] = [];
    for await (const record of client.logs(id)) texts.push(record.text);
    assert.deepEqual(texts, ['cold\n']);
  });

  test('metrics show the pool\'s hits, misses and containers', async () => {
    await poolFilled(client, POOL_SIZE);
    const text = await client.metrics();
    assert.ok(metricValue(text, new RegExp(`^berth_pool_hits_total\\{pool="${POOL}"\\} (\\d+)$`, 'm')) >= 2, text);
    assert.ok(metricValue(text, /^berth_pool_misses_total\{reason="no-match"\} (\d+)$/m) >= 1);
    assert.equal(metricValue(text, new RegExp(`^berth_pool_containers\\{pool="${POOL}",state="idle"\\} (\\d+)$`, 'm')), POOL_SIZE);
    assert.equal(metricValue(text, new RegExp(`^berth_pool_containers\\{pool="${POOL}",state="in_use"\\} (\\d+)$`, 'm')), 0);
    assert.ok(metricValue(text, new RegExp(`^berth_pool_refill_seconds_count\\{pool="${POOL}"\\} (\\d+)$`, 'm')) >= 1);
  });

  test('a cold task that needs the budget shrinks the pool, which refills once it ended', async () => {
    await poolFilled(client, POOL_SIZE);
    const id = `big-${run.id}`;
    // 200 MiB beside the pool's 128 MiB is over the 256 MiB budget: the pool gives its containers up.
    await client.submit({ id, spec: { image: TEST_IMAGE, labels: { ...run.labels }, resources: { memory: '200m', cpuMilli: 100 }, command: ['sleep', '30'] } });
    const running = await waitForTaskState(client, id, ['running']);
    assert.equal(running.start?.path, 'cold');
    await pollUntil('the pool to give up its idle containers', async () => ((await poolContainers()).size === 0 ? true : undefined), { timeoutMs: 30_000 });
    const text = await client.metrics();
    assert.equal(metricValue(text, new RegExp(`^berth_pool_containers\\{pool="${POOL}",state="idle"\\} (\\d+)$`, 'm')), 0);
    await client.stop(id, { graceMs: 0 });
    await waitForTaskState(client, id, ENDED);
    await poolFilled(client, POOL_SIZE);
  });

  test('the reconciler leaves the live pool containers alone and removes one the pools do not know', async () => {
    const live = await poolFilled(client, POOL_SIZE);
    const events = await client.events();
    const orphan = await startTestContainer(engine, run, {
      cmd: ['sleep', '300'],
      name: run.name('pool-orphan'),
      labels: { [LABELS.managed]: 'true', [LABELS.ownerId]: agentId, [LABELS.role]: ROLES.pool, [LABELS.pool]: POOL },
    });
    let reconciled: AgentEvent | undefined;
    for await (const event of events) {
      if (event.type === 'container.reconciled' && event.containerId === orphan) {
        reconciled = event;
        break;
      }
    }
    events.close();
    assert.ok(reconciled && reconciled.type === 'container.reconciled');
    assert.equal(reconciled.role, 'pool');
    assert.equal(reconciled.pool, POOL);
    assert.equal(reconciled.reason, 'dangling');
    await pollUntil('the orphan to be gone', async () => ((await poolContainers()).has(orphan) ? undefined : true), { timeoutMs: 30_000 });
    // Several sweeps passed (one a second, the orphan waited out its 2 s grace): the live ones are all still there.
    const after = await poolContainers();
    for (const id of live) assert.equal(after.get(id), 'running', `live pool container ${id} was left alone`);
  });

  test('stopping the agent removes the idle pool containers', async () => {
    await poolFilled(client, POOL_SIZE);
    client.close();
    assert.equal(await agent.stop('SIGTERM'), 0);
    assert.equal((await poolContainers()).size, 0);
  });
});

describe('agent warm pools: configuration', { skip }, () => {
  test('a pool the policy refuses stops the agent at start, naming pools[i].spec.<field> and the rule', async () => {
    const dataDir = await dirs.make('berth-pools-bad-');
    const config = await writeAgentConfig(
      dataDir,
      JSON.stringify({ pools: [{ name: 'ok', spec: { image: TEST_IMAGE } }, { name: 'bad', spec: { image: TEST_IMAGE, privileged: true } }] }),
    );
    const result = await runBerth(['agent', '--data-dir', dataDir, '--config', config], cleanEnv(), { timeoutMs: 30_000 });
    assert.notEqual(result.code, 0);
    const output = `${result.stdout}${result.stderr}`;
    assert.match(output, /pools\[1\]\.spec\.privileged/);
    assert.doesNotMatch(output, /pools\[0\]/, 'the good pool is not blamed');
  });
});
