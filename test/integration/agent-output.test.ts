import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Logger } from '../../src/common/logger.js';
import { buildAgent, type AgentRuntime } from '../../src/agent/agent.js';
import { AgentClient } from '../../src/agent/client.js';
import { serveAgent, type ServingAgent } from '../../src/agent/http/serve.js';
import type { AgentConfigInput, ConfigSources } from '../../src/agent/config.js';
import { OUTPUT_CUT_TEXT } from '../../src/agent/task-logs.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { testHost } from '../support/agent.js';

const engine = testEngine();
const run = testRun(engine);
const CONTAINER = '[^/]+';

function recordingLogger(): Logger & { lines: Array<{ level: string; message: string }> } {
  const lines: Array<{ level: string; message: string }> = [];
  const at = (level: string) => (_meta: Record<string, unknown>, message: string): void => void lines.push({ level, message });
  return { lines, debug: () => undefined, info: at('info'), warn: at('warn'), error: at('error') };
}

function sources(dataDir: string, engineSocket: string | undefined, flags: Omit<AgentConfigInput, 'dataDir' | 'socketPath' | 'engine'> = {}): ConfigSources {
  return {
    flags: { dataDir, socketPath: path.join(dataDir, 'agent.sock'), ...(engineSocket ? { engine: { socket: engineSocket } } : {}), ...flags },
    host: testHost(dataDir),
  };
}

/**
 * An agent (built, not started) on a fresh data directory whose engine is a fresh fault proxy.
 * `close` clears the proxy's rules, waits for the agent's tasks, closes the agent and the proxy,
 * removes what the run created and the data directory.
 */
async function agentBehindProxy(prefix: string, logger: Logger, flags: Omit<AgentConfigInput, 'dataDir' | 'socketPath' | 'engine'> = {}): Promise<{ proxy: FaultProxy; runtime: AgentRuntime; close(): Promise<void> }> {
  const proxy = await FaultProxy.start();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), prefix));
  const runtime = await buildAgent(sources(dataDir, proxy.socketPath, flags), logger);
  return {
    proxy,
    runtime,
    async close() {
      proxy.reset();
      await runtime.supervisor.idle();
      await runtime.close();
      await proxy.close();
      await run.cleanup();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** A shell command printing `line-1` … `line-<count>`, optionally pausing between lines. */
function numberedLines(count: number, pause = ''): string[] {
  return ['sh', '-c', `i=1; while [ $i -le ${count} ]; do echo line-$i; ${pause} i=$((i+1)); done`];
}

/** How often each line of the task's recorded output occurs. */
async function lineCounts(runtime: AgentRuntime, taskId: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for await (const record of runtime.logs.read(taskId)) counts.set(record.text.trimEnd(), (counts.get(record.text.trimEnd()) ?? 0) + 1);
  return counts;
}

/** The lines of `line-1` … `line-<count>` missing or recorded more than once. */
async function outputFaults(runtime: AgentRuntime, taskId: string, count: number): Promise<{ lost: string[]; repeated: string[] }> {
  const counts = await lineCounts(runtime, taskId);
  const lost: string[] = [];
  for (let i = 1; i <= count; i++) if (!counts.has(`line-${i}`)) lost.push(`line-${i}`);
  const repeated = [...counts].filter(([, n]) => n > 1).map(([line, n]) => `${line}×${n}`);
  return { lost, repeated };
}

async function untilEnded(runtime: AgentRuntime, taskId: string, timeoutMs = 120_000): Promise<void> {
  await pollUntil(`task ${taskId} to end`, () => (runtime.supervisor.isEnded(taskId) ? true : undefined), { timeoutMs, intervalMs: 100 });
}

describe('agent output through a broken log stream', { skip: await requireEngine() }, () => {
  let proxy: FaultProxy;
  let runtime: AgentRuntime;
  let close: () => Promise<void>;
  const logger = recordingLogger();

  before(async () => {
    ({ proxy, runtime, close } = await agentBehindProxy('berth-output-', logger));
    await runtime.start();
  });

  after(() => close());

  test('a log stream dropped twice is read again from the cursor: every line exactly once', async () => {
    const rule = proxy.addRule({ method: 'GET', path: new RegExp(`^/containers/${CONTAINER}/logs$`), fault: { kind: 'dropAfterForward' }, times: 2 });
    const task = runtime.supervisor.submit({ id: `drop-twice-${run.id}`, spec: { image: TEST_IMAGE, command: numberedLines(300), labels: { ...run.labels } } }).task;
    await untilEnded(runtime, task.id);
    rule.remove();
    assert.equal(rule.fired, 2, 'both drops happened');
    assert.equal(runtime.store.tasks.get(task.id)?.exitCode, 0);
    assert.deepEqual(await outputFaults(runtime, task.id, 300), { lost: [], repeated: [] });
    assert.ok(logger.lines.some((l) => /reading the task output broke/.test(l.message)), 'the break was logged');
  });

  test('a log stream cut mid-way while lines flow, twice, resumes after the last recorded line: every line exactly once', async () => {
    const rule = proxy.addRule({ method: 'GET', path: new RegExp(`^/containers/${CONTAINER}/logs$`), fault: { kind: 'dropAfterBodyBytes', afterBodyBytes: 3000 }, times: 2 });
    const task = runtime.supervisor.submit({ id: `cut-midway-${run.id}`, spec: { image: TEST_IMAGE, command: numberedLines(400, 'usleep 5000;'), labels: { ...run.labels } } }).task;
    await untilEnded(runtime, task.id);
    rule.remove();
    assert.equal(rule.fired, 2, 'both cuts happened');
    assert.equal(runtime.store.tasks.get(task.id)?.exitCode, 0);
    assert.deepEqual(await outputFaults(runtime, task.id, 400), { lost: [], repeated: [] });
  });

  test('long lines, which the engine splits into parts sharing one timestamp, through a stream cut inside a line: every part exactly once', async () => {
    const rule = proxy.addRule({ method: 'GET', path: new RegExp(`^/containers/${CONTAINER}/logs$`), fault: { kind: 'dropAfterBodyBytes', afterBodyBytes: 50_000 }, times: 2 });
    const command = ['sh', '-c', 'i=1; while [ $i -le 20 ]; do printf "line-$i-"; head -c 40000 /dev/zero | tr "\\0" x; echo; i=$((i+1)); done'];
    const task = runtime.supervisor.submit({ id: `long-lines-${run.id}`, spec: { image: TEST_IMAGE, command, labels: { ...run.labels } } }).task;
    await untilEnded(runtime, task.id);
    rule.remove();
    assert.equal(rule.fired, 2, 'both cuts happened');
    // The parts of one line share its timestamp: joined, they give the line back.
    const lines: string[] = [];
    let lastTimestamp: string | undefined;
    let records = 0;
    for await (const record of runtime.logs.read(task.id)) {
      records++;
      if (record.timestamp === lastTimestamp) lines[lines.length - 1] += record.text;
      else lines.push(record.text);
      lastTimestamp = record.timestamp;
    }
    assert.ok(records > 20, `the engine split the lines into parts (${records} records)`);
    const expected = Array.from({ length: 20 }, (_, i) => `line-${i + 1}-${'x'.repeat(40_000)}`);
    const shape = (line: string): string => `${line.slice(0, 12)}… ${line.length}`;
    assert.deepEqual(lines.map((line) => shape(line.trimEnd())), expected.map(shape));
  });

  test('an agent restarted while a task prints resumes its output after the last recorded line: every line exactly once', async () => {
    const restartDir = await mkdtemp(path.join(os.tmpdir(), 'berth-output-restart-'));
    let first: AgentRuntime | undefined = await buildAgent(sources(restartDir, undefined), recordingLogger());
    let second: AgentRuntime | undefined;
    try {
      await first.start();
      const task = first.supervisor.submit({ id: `restart-${run.id}`, spec: { image: TEST_IMAGE, command: numberedLines(300, 'usleep 10000;'), labels: { ...run.labels } } }).task;
      const agent = first;
      await pollUntil('lines to be recorded', async () => ((await lineCounts(agent, task.id)).size >= 50 ? true : undefined), { timeoutMs: 60_000, intervalMs: 20 });
      await first.close();
      first = undefined;
      second = await buildAgent(sources(restartDir, undefined), recordingLogger());
      await second.start();
      await untilEnded(second, task.id);
      assert.equal(second.store.tasks.get(task.id)?.exitCode, 0);
      assert.deepEqual(await outputFaults(second, task.id, 300), { lost: [], repeated: [] });
    } finally {
      await first?.close();
      if (second) {
        await second.supervisor.idle();
        await second.close();
      }
      await rm(restartDir, { recursive: true, force: true });
    }
  });
});

describe('agent output under a mix of engine faults', { skip: await requireEngine() }, () => {
  // 200 tasks under this 10% mix reproduced a task whose every line was recorded twice in 1 of 1 runs
  // before the fix (4 of 200 tasks): a start answered 500 after the engine ran the container, an
  // inspect answered 500, and the start was sent again to the exited container, which ran again.
  test('200 tasks under 10% of 500s after create, start and remove, dropped waits, failed inspects and delays: every line exactly once', async () => {
    const { proxy, runtime, close } = await agentBehindProxy('berth-output-mix-', recordingLogger(), { admission: { maxConcurrent: 16 } });
    try {
      await runtime.start();
      const p = 0.1;
      const rules = [
        proxy.addRule({ method: 'POST', path: /^\/containers\/create$/, fault: { kind: 'error500AfterForward' }, probability: p }),
        proxy.addRule({ method: 'POST', path: new RegExp(`^/containers/${CONTAINER}/start$`), fault: { kind: 'error500AfterForward' }, probability: p }),
        proxy.addRule({ method: 'DELETE', path: new RegExp(`^/containers/${CONTAINER}$`), fault: { kind: 'error500AfterForward' }, probability: p }),
        proxy.addRule({ method: 'POST', path: new RegExp(`^/containers/${CONTAINER}/wait$`), fault: { kind: 'dropAfterForward' }, probability: p }),
        proxy.addRule({ method: 'GET', path: new RegExp(`^/containers/${CONTAINER}/json$`), fault: { kind: 'error500Before' }, probability: p }),
        proxy.addRule({ path: /.*/, fault: { kind: 'delay', delayMs: 300 }, probability: p }),
      ];
      const lines = 5;
      const ids: string[] = [];
      for (let i = 0; i < 200; i++) {
        ids.push(runtime.supervisor.submit({ id: `mix-${i}-${run.id}`, spec: { image: TEST_IMAGE, command: numberedLines(lines), labels: { ...run.labels } } }).task.id);
      }
      await pollUntil('every task to end', () => (ids.every((id) => runtime.supervisor.isEnded(id)) ? true : undefined), { timeoutMs: 150_000, intervalMs: 200 });
      assert.ok(rules[1]!.fired > 0 && rules[4]!.fired > 0, 'starts and inspects were faulted');
      const wrong: string[] = [];
      for (const id of ids) {
        const record = runtime.store.tasks.get(id);
        const faults = await outputFaults(runtime, id, lines);
        if (record?.exitCode !== 0 || faults.lost.length > 0 || faults.repeated.length > 0) wrong.push(`${id}: ${record?.state} ${record?.exitCode} ${JSON.stringify(faults)}`);
      }
      assert.deepEqual(wrong, []);
    } finally {
      await close();
    }
  });
});

describe('agent output on a full data directory', { skip: await requireEngine() }, () => {
  let dataDir: string;
  let runtime: AgentRuntime | undefined;
  let serving: ServingAgent | undefined;
  const logger = recordingLogger();

  before(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-output-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dataDir]);
  });

  after(async () => {
    await serving?.close();
    if (runtime) {
      await runtime.supervisor.idle();
      await runtime.close();
    }
    await run.cleanup();
    execFileSync('umount', [dataDir]);
    await rm(dataDir, { recursive: true, force: true });
  });

  test('a task printing 20 MB has its output cut with a record and a flag; health says disk full; other tasks run; after space is freed new output is whole', async () => {
    const agent = await buildAgent(sources(dataDir, undefined), logger);
    runtime = agent;
    await agent.start();
    serving = await serveAgent(agent, { processMetrics: false });
    const client = AgentClient.connect({ host: `unix://${serving.socketPath}`, token: agent.token });
    const unhandled: unknown[] = [];
    const onUnhandled = (error: unknown): void => void unhandled.push(error);
    process.on('unhandledRejection', onUnhandled);
    try {
      const big = agent.supervisor.submit({ id: `big-${run.id}`, spec: { image: TEST_IMAGE, command: ['sh', '-c', 'dd if=/dev/zero bs=1M count=20 2>/dev/null | tr "\\0" x | fold -w 1000'], labels: { ...run.labels } } }).task;
      const other = agent.supervisor.submit({ id: `other-${run.id}`, spec: { image: TEST_IMAGE, command: ['sh', '-c', 'sleep 1; exit 3'], labels: { ...run.labels } } }).task;
      await untilEnded(agent, big.id);
      await untilEnded(agent, other.id);

      const bigRecord = agent.store.tasks.get(big.id)!;
      assert.equal(bigRecord.exitCode, 0);
      assert.match(bigRecord.outputTruncated ?? '', /no space left/);
      const records = [];
      for await (const record of agent.logs.read(big.id)) records.push(record);
      assert.ok(records.length > 0 && records.length < 20_000, `part of the output was kept (${records.length} of 21 000 lines)`);
      assert.equal(records.at(-1)?.text, OUTPUT_CUT_TEXT, 'the output ends with the record that says it was cut');
      assert.equal(agent.store.tasks.get(other.id)?.exitCode, 3, 'the other task was supervised to its end');
      assert.deepEqual(await client.health(), { agent: 'ok', engine: 'ok', disk: 'full' });
      assert.match((await client.get(big.id)).outputTruncated ?? '', /no space left/);
      const metrics = await client.metrics();
      assert.match(metrics, /^berth_data_dir_full 1$/m);
      assert.match(metrics, /^berth_agent_failures_total\{code="BERTH_DISK_FULL"\} [1-9]/m);
      assert.ok(logger.lines.some((l) => /output is cut/.test(l.message)));

      // Space freed: the big task's output removed; a new task's output is whole again.
      await agent.supervisor.remove(big.id);
      assert.deepEqual(await client.health(), { agent: 'ok', engine: 'ok' });
      const next = agent.supervisor.submit({ id: `next-${run.id}`, spec: { image: TEST_IMAGE, command: numberedLines(100), labels: { ...run.labels } } }).task;
      await untilEnded(agent, next.id);
      assert.equal(agent.store.tasks.get(next.id)?.exitCode, 0);
      assert.equal(agent.store.tasks.get(next.id)?.outputTruncated, undefined);
      assert.deepEqual(await outputFaults(agent, next.id, 100), { lost: [], repeated: [] });
      assert.deepEqual(unhandled, [], 'nothing escaped as an unhandled rejection');
    } finally {
      process.off('unhandledRejection', onUnhandled);
      client.close();
    }
  });
});
