/**
 * Retention against the real engine and a real agent serving its API on its socket: ended tasks go
 * by age, by count and above the disk watermark (read through the agent's injectable disk reader,
 * the rest of it real: tasks, output files, store), oldest first, records and output files both, with
 * a `task.expired` event and a metric for each; tasks that have not ended stay; and a backlog of
 * thousands of ended tasks goes in one pass, the database file shrinking after it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { buildAgent, type AgentHooks, type AgentRuntime } from '../../src/agent/agent.js';
import { AgentClient, type EventSubscription } from '../../src/agent/client.js';
import type { AgentConfigInput } from '../../src/agent/config.js';
import type { AgentEvent } from '../../src/agent/events.js';
import { serveAgent, type ServingAgent } from '../../src/agent/http/serve.js';
import { TaskLogStore } from '../../src/agent/task-logs.js';
import { isBerthError, messageOf } from '../../src/common/errors.js';
import { silentLogger } from '../../src/common/logger.js';
import { hasEnded, openStore, STORE_FILE_NAME, UNENDED_STATES, type StoredTaskSpec } from '../../src/state/index.js';
import { taskOutput, testHost } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

const engine = testEngine();
const run = testRun(engine);
const dataDirs: string[] = [];

after(async () => {
  await run.cleanup();
  await Promise.all(dataDirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

const spec = (command: string[]): StoredTaskSpec => ({
  image: TEST_IMAGE,
  command,
  labels: { ...run.labels },
  // busybox sleep as PID 1 ignores SIGTERM: keep stops short.
  stopGracePeriod: '1s',
});

interface RetainingAgent {
  readonly dataDir: string;
  readonly runtime: AgentRuntime;
  readonly client: AgentClient;
  /** Every event the agent's API streamed since start. */
  readonly events: AgentEvent[];
  /** The ids of the tasks retention removed, with the reason, as the event stream told them. */
  expired(): Array<[string, string]>;
  close(): Promise<void>;
}

/** An agent on a fresh data directory (after `prepare` has filled it, if given), serving its API, with its event stream read through the API. */
async function startAgent(retention: NonNullable<AgentConfigInput['retention']>, hooks: (dataDir: string) => AgentHooks = () => ({}), prepare?: (dataDir: string) => Promise<void>): Promise<RetainingAgent> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-ret-'));
  dataDirs.push(dataDir);
  await prepare?.(dataDir);
  const runtime = await buildAgent(
    {
      // The test image is shared with other tests: its removal is put off past the end of the run.
      flags: { dataDir, socketPath: path.join(dataDir, 'agent.sock'), images: { cleanup: true, removeDelay: '1h' }, retention, events: { maxCount: 100 } },
      host: testHost(dataDir),
    },
    silentLogger,
    hooks(dataDir),
  );
  const serving: ServingAgent = await serveAgent(runtime, { processMetrics: false });
  const client = AgentClient.connect({ host: `unix://${serving.socketPath}`, token: runtime.token });
  const events: AgentEvent[] = [];
  const subscription: EventSubscription = await client.events();
  const reading = (async () => {
    for await (const event of subscription) events.push(event);
  })().catch(() => undefined);
  await runtime.start();
  return {
    dataDir,
    runtime,
    client,
    events,
    expired: () => events.flatMap((e) => (e.type === 'task.expired' ? [[e.taskId, e.reason] as [string, string]] : [])),
    async close() {
      for (const task of runtime.store.tasks.list({ label: run.labelFilter, state: UNENDED_STATES })) await runtime.supervisor.stop(task.id).catch(() => undefined);
      await runtime.supervisor.idle();
      subscription.close();
      await reading;
      client.close();
      await serving.close();
      await runtime.close();
    },
  };
}

async function waitForEnd(agent: RetainingAgent, id: string): Promise<void> {
  let last = '';
  await pollUntil(`task ${id} to end`, async () => {
    const task = await agent.client.get(id);
    last = task.state;
    return hasEnded(task.state) ? true : undefined;
  }, { timeoutMs: 60_000, intervalMs: 100 }).catch((error: unknown) => assert.fail(`${messageOf(error)}; it is ${last}`));
}

async function waitForRunning(agent: RetainingAgent, id: string): Promise<void> {
  await pollUntil(`task ${id} to run`, async () => ((await agent.client.get(id)).state === 'running' ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(() => true, () => false);
}

/** Asserts that a task is gone for good: the API says not found, its record is gone, its output directory too. */
async function assertGone(agent: RetainingAgent, id: string): Promise<void> {
  await assert.rejects(agent.client.get(id), (error: unknown) => isBerthError(error, 'BERTH_TASK_NOT_FOUND'), id);
  assert.equal(agent.runtime.store.tasks.get(id), undefined, `the record of ${id}`);
  assert.equal(await exists(path.join(agent.dataDir, 'logs', id)), false, `the output directory of ${id}`);
}

/** The value of `berth_tasks_expired_total{reason}` as the API's /metrics serves it. */
async function expiredMetric(agent: RetainingAgent, reason: string): Promise<number | undefined> {
  const text = await agent.client.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`berth_tasks_expired_total{reason="${reason}"}`));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

/** Bytes of every file under `dir`. */
async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const full = path.join(dir, entry.name);
    total += entry.isDirectory() ? await treeBytes(full) : await stat(full).then((s) => s.size, () => 0);
  }
  return total;
}

describe('the agent removes ended tasks by its retention limits', { skip: await requireEngine() }, () => {
  test('beyond maxCount the oldest ended tasks go (one removed by berth rm among them), records and output, with an event and a metric each; a running task older than all stays', async () => {
    const agent = await startAgent({ maxAge: 'off', maxCount: 2, diskWatermark: 'off', interval: '1s' });
    try {
      const live = `${run.id}-count-live`;
      await agent.client.submit({ id: live, spec: spec(['sleep', '300']) });
      await waitForRunning(agent, live);
      const ids = [0, 1, 2, 3].map((i) => `${run.id}-count-${i}`);
      // One after the other, so their end order is their submission order.
      for (const [i, id] of ids.entries()) {
        await agent.client.submit({ id, spec: spec(['sh', '-c', `echo out-${i}`]) });
        await waitForEnd(agent, id);
        assert.ok(await exists(path.join(agent.dataDir, 'logs', id)), `the output of ${id} was written`);
        if (i === 1) {
          // Removed by a user (berth rm): gone from the API, its record kept as removed, until retention deletes it too.
          await agent.client.remove(id);
          assert.equal(agent.runtime.store.tasks.get(id)?.state, 'removed');
        }
      }
      await pollUntil('retention to remove the two oldest', () => (agent.expired().length >= 2 ? true : undefined), { timeoutMs: 30_000 });
      assert.deepEqual(agent.expired(), [[ids[0], 'count'], [ids[1], 'count']]);
      for (const id of ids.slice(0, 2)) await assertGone(agent, id);
      assert.deepEqual(await taskOutput(agent.client, ids[3]!), ['out-3\n']);
      assert.deepEqual((await agent.client.list({})).map((t) => t.id).sort(), [live, ids[2]!, ids[3]!].sort());
      assert.equal((await agent.client.get(live)).state, 'running');
      assert.equal(await expiredMetric(agent, 'count'), 2);
      assert.equal(await expiredMetric(agent, 'age'), 0);
    } finally {
      await agent.close();
    }
  });

  test('past maxAge ended tasks go with reason age, and a task still running stays however long it has run', async () => {
    const agent = await startAgent({ maxAge: '1s', maxCount: 'off', diskWatermark: 'off', interval: '1s' });
    try {
      const live = `${run.id}-age-live`;
      await agent.client.submit({ id: live, spec: spec(['sleep', '300']) });
      await waitForRunning(agent, live);
      const ids = [0, 1].map((i) => `${run.id}-age-${i}`);
      for (const id of ids) await agent.client.submit({ id, spec: spec(['sh', '-c', 'echo aged']) });
      await pollUntil('both tasks to be removed for their age', () => (agent.expired().length >= 2 ? true : undefined), { timeoutMs: 60_000 });
      assert.deepEqual(agent.expired().map(([, reason]) => reason), ['age', 'age']);
      assert.deepEqual(agent.expired().map(([id]) => id).sort(), [...ids].sort());
      // Each ended before it expired: the event stream told its end first.
      for (const id of ids) {
        const endAt = agent.events.findIndex((e) => e.type === 'task.state' && e.taskId === id && hasEnded(e.state));
        const expiredAt = agent.events.findIndex((e) => e.type === 'task.expired' && e.taskId === id);
        assert.ok(endAt >= 0 && endAt < expiredAt, `${id} ended (${endAt}) before it expired (${expiredAt})`);
        await assertGone(agent, id);
      }
      assert.equal((await agent.client.get(live)).state, 'running');
      assert.equal(await expiredMetric(agent, 'age'), 2);
    } finally {
      await agent.close();
    }
  });

  test('above the disk watermark the oldest ended tasks go until the data directory is below it again', async () => {
    // The file system as the agent's disk reader sees it: a fixed share used by others, plus the
    // agent's real output files. The test moves the others' share to cross the watermark.
    const totalBytes = 1_000_000_000;
    let othersBytes = 0;
    const agent = await startAgent({ maxAge: 'off', maxCount: 'off', diskWatermark: '90%', interval: '1s' }, (dataDir) => ({
      diskUsage: async () => ({ usedBytes: othersBytes + (await treeBytes(path.join(dataDir, 'logs'))), totalBytes }),
    }));
    try {
      const live = `${run.id}-disk-live`;
      await agent.client.submit({ id: live, spec: spec(['sleep', '300']) });
      await waitForRunning(agent, live);
      const ids = [0, 1, 2, 3].map((i) => `${run.id}-disk-${i}`);
      for (const id of ids) {
        await agent.client.submit({ id, spec: spec(['sh', '-c', 'yes retention-output-line | head -n 3000']) });
        await waitForEnd(agent, id);
      }
      const perTask = await agent.runtime.logs.outputBytes(ids[0]!);
      assert.ok(perTask > 10_000, `each task wrote ${perTask} bytes of output`);
      assert.deepEqual(agent.expired(), [], 'below the watermark nothing goes');
      // Over the watermark by one and a half tasks' output: the two oldest must go, and no more.
      othersBytes = Math.ceil(0.9 * totalBytes + 1.5 * perTask) - (await treeBytes(path.join(agent.dataDir, 'logs')));
      await pollUntil('retention to bring the disk under its watermark', () => (agent.expired().length >= 2 ? true : undefined), { timeoutMs: 30_000 });
      // Two more passes after it: nothing more goes once the disk is below the watermark.
      const removedSoFar = agent.expired().length;
      assert.deepEqual((await agent.runtime.retention.runNow()).removed, { age: 0, count: 0, disk: 0 });
      assert.deepEqual((await agent.runtime.retention.runNow()).removed, { age: 0, count: 0, disk: 0 });
      assert.equal(agent.expired().length, removedSoFar);
      assert.deepEqual(agent.expired(), [[ids[0], 'disk'], [ids[1], 'disk']]);
      for (const id of ids.slice(0, 2)) await assertGone(agent, id);
      for (const id of ids.slice(2)) assert.equal((await agent.client.get(id)).state, 'exited');
      assert.equal((await agent.client.get(live)).state, 'running');
      assert.equal(await expiredMetric(agent, 'disk'), 2);
    } finally {
      await agent.close();
    }
  });

  test('a backlog of 20,000 ended tasks is cut to maxCount in one pass at start, their output goes, and the database file shrinks', async () => {
    const backlog = 20_000;
    const withOutput = 50;
    const ids = Array.from({ length: backlog }, (_, i) => `${run.id}-backlog-${i}`);
    let before = 0;
    const agent = await startAgent({ maxAge: 'off', maxCount: 100, diskWatermark: 'off', interval: '1h' }, () => ({}), async (dataDir) => {
      // Filled through the state layer, as an agent that ran them would have left them.
      const store = openStore(path.join(dataDir, STORE_FILE_NAME));
      const logs = new TaskLogStore(path.join(dataDir, 'logs'), { maxFileBytes: 1024 * 1024, maxFiles: 2 });
      const start = Date.now() - 3_600_000;
      store.transaction(() => {
        for (const [i, id] of ids.entries()) {
          store.tasks.insert({ id, spec: spec(['sh', '-c', `echo ${i}`]), reservation: { memoryBytes: 256 * 1024 * 1024, cpuMilli: 250 } });
          store.tasks.update(id, { to: 'starting' });
          store.tasks.update(id, { to: 'running', containerId: `${i}`.padStart(64, '0') });
          store.tasks.update(id, { to: 'exited', endState: { kind: 'success', exitCode: 0 }, finishedAtMs: start + i });
        }
      });
      for (const id of [...ids.slice(0, withOutput), ...ids.slice(-withOutput)]) {
        await logs.append(id, { stream: 'stdout', timestamp: '2024-05-01T10:00:00.000000001Z', data: Buffer.from(`${id}\n`) });
        await logs.end(id);
      }
      store.checkpoint();
      store.close();
      before = (await stat(path.join(dataDir, STORE_FILE_NAME))).size;
    });
    try {
      await pollUntil('the first pass to cut the backlog', () => (agent.runtime.store.tasks.countEnded() === 100 ? true : undefined), { timeoutMs: 120_000, intervalMs: 100 });
      // Each removal was announced, and the event log keeps events for its window: trimmed here to
      // events.maxCount (100) as the agent's trimmer does every 10 s, so that their pages are free too.
      agent.runtime.store.events.trim(0, 100);
      // The pass gives the freed pages back and checkpoints once it has removed everything.
      await agent.runtime.retention.runNow();
      const afterBytes = (await stat(path.join(agent.dataDir, STORE_FILE_NAME))).size;
      assert.ok(afterBytes < before / 10, `the database file went from ${before} to ${afterBytes} bytes`);
      const gauge = /^berth_state_database_bytes (\d+)$/m.exec(await agent.client.metrics());
      assert.equal(Number(gauge?.[1]), afterBytes, 'the metric shows the database\'s size');
      const kept = await agent.client.list({ state: ['exited'] });
      assert.deepEqual(kept.map((t) => t.id), ids.slice(-100));
      for (const id of ids.slice(0, withOutput)) assert.equal(await exists(path.join(agent.dataDir, 'logs', id)), false, id);
      for (const id of ids.slice(-withOutput)) assert.ok(await exists(path.join(agent.dataDir, 'logs', id)), id);
      await pollUntil('every expiry to be streamed', () => (agent.expired().length === backlog - 100 ? true : undefined), { timeoutMs: 30_000 });
      assert.ok(agent.expired().every(([, reason]) => reason === 'count'));
      assert.equal(await expiredMetric(agent, 'count'), backlog - 100);
      // The agent takes work as before.
      const next = `${run.id}-backlog-next`;
      await agent.client.submit({ id: next, spec: spec(['true']) });
      await waitForEnd(agent, next);
    } finally {
      await agent.close();
    }
  });
});
