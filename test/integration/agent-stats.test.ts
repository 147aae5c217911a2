import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import type { AgentClient, StatsRecord, TaskView } from '../../src/agent/client.js';
import type { StoredTaskSpec } from '../../src/state/tasks.js';
import { pollUntil, requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';
import { agentClientOf, agentTestFile, berth, berthInspect, httpGet, spawnBerth, type RunningAgent } from '../support/agent.js';

/**
 * Stats and usage through a real agent process on the real engine: the stats stream of a task that
 * burns CPU under a limit and of one that fills memory, one sample with stream=false, the usage
 * recorded when each ends (CPU time, peak memory, throttling) in the view, the metrics and
 * `berth inspect`, and `berth stats` through the agent with -H and a token.
 */
const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);
const MiB = 1024 * 1024;

const spec = (command: string[], extra: Partial<StoredTaskSpec> = {}): StoredTaskSpec => ({ image: TEST_IMAGE, command, labels: { ...run.labels }, stopGracePeriod: '1s', ...extra });

let agent: RunningAgent;
let client: AgentClient;
let token: string;

async function untilRunning(id: string): Promise<TaskView> {
  return pollUntil(`task ${id} to run`, async () => {
    const task = await client.get(id);
    return task.state === 'running' ? task : undefined;
  }, { timeoutMs: 60_000, intervalMs: 100 });
}

async function outputOf(id: string): Promise<string> {
  let text = '';
  for await (const record of client.logs(id)) text += record.text;
  return text;
}

/** The first `count` samples of the stream that measure CPU over an interval (the first of a stream spans the container's life). */
async function intervalSamples(id: string, count: number): Promise<StatsRecord[]> {
  const samples: StatsRecord[] = [];
  for await (const record of client.stats(id)) {
    if (record.previousAt !== null) samples.push(record);
    if (samples.length === count) break;
  }
  return samples;
}

describe('stats and usage through the agent', { skip: await requireEngine() }, () => {
  before(async () => {
    if (await requireEngine()) return;
    const dataDir = await dirs.make('berth-sta-');
    agent = await agents.start(dataDir);
    client = await agentClientOf(agent);
    token = (await readFile(path.join(dataDir, 'token'), 'utf8')).trim();
  });

  test('a task burning CPU under a half-CPU limit: the stream shows its use within the limit, and its usage the CPU time it burned, throttled', async () => {
    const id = `${run.id}-burn`;
    await client.submit({ id, spec: spec(['sh', '-c', 'while :; do :; done'], { resources: { cpuMilli: 500 } }) });
    await untilRunning(id);
    const samples = await intervalSamples(id, 3);
    for (const sample of samples) {
      assert.equal(sample.taskId, id);
      // The quota allows half of one CPU; the engine's reading windows leave some play.
      assert.ok(sample.cpuPercent < 75, `CPU ${sample.cpuPercent}% with a 0.5 CPU limit`);
      assert.ok(sample.pids >= 1);
      assert.ok(sample.memoryLimitBytes > 0);
    }
    assert.ok(samples.some((sample) => sample.cpuPercent > 5), `a burner shows CPU use: ${samples.map((s) => s.cpuPercent).join(', ')}`);
    // CPU seconds the samples saw it burn: the usage cannot hold less.
    const seenCpuMs = samples.reduce((sum, s) => sum + (s.cpuPercent / 100) * (Date.parse(s.at) - Date.parse(s.previousAt!)), 0);

    // stream=false: one sample, measured over an interval.
    const one: StatsRecord[] = [];
    for await (const record of client.stats(id, { stream: false })) one.push(record);
    assert.equal(one.length, 1);
    assert.notEqual(one[0]!.previousAt, null);

    await client.stop(id);
    const ended = await client.wait(id);
    const usage = ended.usage;
    assert.ok(usage, `usage recorded: ${JSON.stringify(ended)}`);
    const ranMs = Date.parse(ended.finishedAt!) - Date.parse(ended.startedAt!);
    assert.ok(usage.cpuTimeMs >= seenCpuMs * 0.9, `CPU time ${usage.cpuTimeMs} ms, the stream saw ${Math.round(seenCpuMs)} ms`);
    // The quota bounds it: half a CPU for as long as it ran, with a scheduler period or two of play.
    assert.ok(usage.cpuTimeMs <= ranMs * 0.5 + 500, `CPU time ${usage.cpuTimeMs} ms in ${ranMs} ms at 0.5 CPU`);
    assert.equal(usage.throttled, true);
    assert.ok(usage.throttledPeriods > 0);
    assert.equal(usage.oomKilled, false);
    assert.ok(usage.samples >= 2);
    assert.ok(Date.parse(usage.sampledAt) <= Date.parse(ended.finishedAt!) + 1000);

    // A task that has ended has no stats.
    await assert.rejects(async () => {
      for await (const record of client.stats(id)) void record;
    }, (e: unknown) => isBerthError(e, 'BERTH_TASK_STATE'));
  });

  test('a task holding 48 MiB: the stream shows it in use under the limit, its usage records the peak; an idle task is not throttled; metrics count them', async () => {
    const fill = `${run.id}-fill`;
    const idle = `${run.id}-idle`;
    // /dev/shm is a tmpfs: its pages are charged to the container's memory until it ends.
    await client.submit({ id: fill, spec: spec(['sh', '-c', 'dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 2>/dev/null && echo filled && sleep 600'], { resources: { memory: 128 * MiB } }) });
    await client.submit({ id: idle, spec: spec(['sleep', '3']) });
    await untilRunning(fill);
    await pollUntil('the memory to be filled', async () => ((await outputOf(fill)).includes('filled') ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
    const one: StatsRecord[] = [];
    for await (const record of client.stats(fill, { stream: false })) one.push(record);
    assert.equal(one.length, 1);
    const [sample] = one;
    assert.equal(sample!.memoryLimitBytes, 128 * MiB);
    assert.ok(sample!.memoryBytes >= 48 * MiB && sample!.memoryBytes < 128 * MiB, `memory ${sample!.memoryBytes} bytes`);

    await client.stop(fill);
    const filled = await client.wait(fill);
    assert.ok(filled.usage, JSON.stringify(filled));
    assert.ok(filled.usage.peakMemoryBytes >= 48 * MiB && filled.usage.peakMemoryBytes <= 128 * MiB, `peak ${filled.usage.peakMemoryBytes} bytes`);

    const rested = await client.wait(idle);
    assert.equal(rested.endState?.kind, 'success');
    assert.ok(rested.usage, JSON.stringify(rested));
    assert.equal(rested.usage.throttled, false);
    assert.equal(rested.usage.throttledPeriods, 0);
    assert.ok(rested.usage.cpuTimeMs < 1000, `sleep used ${rested.usage.cpuTimeMs} ms of CPU`);
    assert.ok(rested.usage.peakMemoryBytes > 0);

    const metrics = await httpGet(agent.socketPath, '/metrics', token);
    assert.equal(metrics.status, 200);
    const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics.body)?.[1] ?? Number.NaN);
    // The burner of the test before, this file's tasks only: the agent is this file's own.
    assert.ok(value('berth_task_cpu_seconds_total') >= (filled.usage.cpuTimeMs + rested.usage.cpuTimeMs) / 1000, metrics.body);
    assert.ok(value('berth_tasks_throttled_total') >= 1);
    assert.ok(value('berth_task_peak_memory_bytes_count') >= 2);
    assert.ok(value('berth_task_peak_memory_bytes_sum') >= filled.usage.peakMemoryBytes);
  });

  test('berth stats through the agent with -H and --token: one task, every running task, --json; a task that ended is refused; berth inspect shows the usage', async () => {
    const id = `${run.id}-cli`;
    await client.submit({ id, spec: spec(['sleep', '600']) });
    await untilRunning(id);
    // A data directory with no agent of its own: only -H and --token find this one.
    const elsewhere = await dirs.make('berth-sta-cli-');
    const via = ['-H', `unix://${agent.socketPath}`, '--token', token];
    const table = await berth(elsewhere, ['stats', '--no-stream', ...via, id]);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trim().split('\n');
    assert.match(lines[0]!, /^TASK ID\s+CPU %\s+MEM USAGE \/ LIMIT\s+MEM %\s+NET I\/O\s+BLOCK I\/O\s+PIDS$/);
    assert.equal(lines.length, 2, table.stdout);
    assert.ok(lines[1]!.startsWith(id.slice(0, 12)), table.stdout);

    const json = await berth(elsewhere, ['stats', '--no-stream', '--json', '--no-trunc', ...via]);
    assert.equal(json.code, 0, json.stderr);
    const records = json.stdout.trim().split('\n').map((line) => JSON.parse(line) as StatsRecord);
    assert.deepEqual(records.map((r) => r.taskId), [id], 'with no ids: the agent\'s running tasks');
    assert.equal(records[0]!.containerId, (await client.get(id)).containerId);

    // Streaming: a line per sample until the task ends, then the command exits 0.
    const streamId = `${run.id}-cli-stream`;
    await client.submit({ id: streamId, spec: spec(['sleep', '600']) });
    await untilRunning(streamId);
    const streaming = spawnBerth(elsewhere, ['stats', '--json', ...via, streamId]);
    await pollUntil('two streamed samples', async () => (streaming.stdout().trim().split('\n').filter((line) => line !== '').length >= 2 ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
    await client.stop(streamId);
    assert.equal(await streaming.closed, 0, streaming.stderr());
    for (const line of streaming.stdout().trim().split('\n')) assert.equal((JSON.parse(line) as StatsRecord).taskId, streamId);

    const wrongToken = await berth(elsewhere, ['stats', '--no-stream', '-H', `unix://${agent.socketPath}`, '--token', 'not-the-token', id]);
    assert.notEqual(wrongToken.code, 0);
    assert.match(wrongToken.stderr, /BERTH_UNAUTHORIZED/);

    await client.stop(id);
    await client.wait(id);
    const refused = await berth(elsewhere, ['stats', '--no-stream', ...via, id]);
    assert.equal(refused.code, 125, refused.stderr);
    assert.match(refused.stderr, /cannot read the stats of task .*: it is exited \[BERTH_TASK_STATE\]/);

    // berth inspect prints the view, usage and all (through the default agent of its data directory).
    const inspected = await berthInspect<TaskView>(agent.dataDir, id);
    assert.ok(inspected.usage && inspected.usage.samples >= 1, JSON.stringify(inspected));
  });

  test('across an agent restart: a task that ran on keeps its whole usage; one that ended while the agent was down says why it has none', async () => {
    const runsOn = `${run.id}-rec-runs`;
    const endsWhileDown = `${run.id}-rec-ends`;
    await client.submit({ id: runsOn, spec: spec(['sh', '-c', 'dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 2>/dev/null && echo filled && sleep 600']) });
    await client.submit({ id: endsWhileDown, spec: spec(['sleep', '3']) });
    await untilRunning(runsOn);
    const ending = await untilRunning(endsWhileDown);
    await pollUntil('the memory to be filled', async () => ((await outputOf(runsOn)).includes('filled') ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
    client.close();
    await agent.stop('SIGTERM');
    await pollUntil('the short task to end while the agent is down', async () => ((await engine.inspectContainer(ending.containerId!)).running ? undefined : true), { timeoutMs: 60_000, intervalMs: 200 });
    agent = await agents.start(agent.dataDir);
    client = await agentClientOf(agent);
    const ended = await client.wait(endsWhileDown);
    assert.equal(ended.usage, undefined);
    assert.match(ended.usageMissing ?? '', /ended before the agent's first reading/);
    await untilRunning(runsOn);
    await client.stop(runsOn);
    const stopped = await client.wait(runsOn);
    assert.ok(stopped.usage, JSON.stringify(stopped));
    // The counters are the container's own: what it filled before the restart is in its usage.
    assert.ok(stopped.usage.peakMemoryBytes >= 24 * MiB, `peak ${stopped.usage.peakMemoryBytes} bytes`);
    client.close();
  });
});
