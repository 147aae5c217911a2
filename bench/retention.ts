/**
 * `retention`: two real `berth agent` processes (`node bin/berth.js agent`), one on an empty data
 * directory and one whose database holds 100,000 ended tasks (filled through the state layer, as an
 * agent that ran them leaves them; `retention.*` off so that they stay), driven through their API.
 *
 * - `retention.latency`: `ps` (the list `berth ps` asks for: the tasks that have not ended) and
 *   submit (of `true`, each task run to its end and its container removed before the next submit,
 *   so that only the call is timed) on both agents, interleaved (ABBA), as ratios full/empty of the medians and p99s.
 *   Target: the ratio of the medians at most 1.2 (p99s are reported too).
 * - `retention.pass`: the full agent is then reloaded (SIGHUP) with `retention.maxCount`, and its
 *   next pass removes all but that many: how long the pass took, the database file before and after
 *   (with the WAL), and `ps` latency while the pass runs (the pass works in batches and yields to the
 *   event loop between them, so requests are still answered).
 *
 * Env BENCH_RETENTION_TASKS sets the number of ended tasks (default 100,000, not scaled by BENCH_N,
 * which scales the number of timed calls). Every container carries the bench label and is removed at
 * the end, with both data directories.
 *
 * Runnable alone (`node --import tsx bench/retention.ts`) or from bench/run.ts, which passes its context.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Dockerode from 'dockerode';
import { AgentClient, type TaskView } from '../src/agent/client.js';
import { stackOf } from '../src/common/errors.js';
import { LABELS } from '../src/common/labels.js';
import { openStore, STORE_FILE_NAME, UNENDED_STATES, hasEnded, type StoredTaskSpec } from '../src/state/index.js';
import { startAgentProcess, type RunningAgent } from '../test/support/agent.js';
import { BENCH_IMAGE, BENCH_LABEL, type CaseContext, elapsedMs, median, quantile, round, standaloneContext } from './support.js';

const DEFAULT_ENDED_TASKS = 100_000;
const PS_CALLS = 400;
const SUBMITS = 60;
const KEEP_AFTER_PASS = 1000;
const TARGET_MAX_RATIO = 1.2;
const READY_DEADLINE_MS = 180_000;
const TASK_DEADLINE_MS = 120_000;
const PASS_DEADLINE_MS = 600_000;

const BERTH_BIN = fileURLToPath(new URL('../bin/berth.js', import.meta.url));
const BUILT_ENTRY = fileURLToPath(new URL('../dist/cli/entry.js', import.meta.url));

export type RetentionBenchContext = CaseContext;

interface Side {
  readonly name: 'empty' | 'full';
  readonly agentId: string;
  readonly dataDir: string;
  readonly configFile: string;
  agent?: RunningAgent;
  child?: ChildProcess;
  client?: AgentClient;
}

/** The agent's configuration; retention off unless `maxCount` is given. */
function agentConfig(agentId: string, maxCount?: number): string {
  return [
    `agentId: ${agentId}`,
    'defaults: {resources: {memory: 64m, cpuMilli: 100}}',
    'images: {cleanup: false}',
    'reconcile: {enabled: false}',
    `retention: {maxAge: off, maxCount: ${maxCount ?? 'off'}, diskWatermark: off, interval: 1s}`,
    '',
  ].join('\n');
}

/** A spec as the agent stores a submitted one (with its defaults), for the filled tasks. */
function storedSpec(runId: string, i: number): StoredTaskSpec {
  return {
    image: BENCH_IMAGE,
    command: ['sh', '-c', `echo task ${i}`],
    labels: { [BENCH_LABEL]: runId, 'bench.kind': 'filled' },
    env: { TASK_INDEX: String(i) },
    resources: { memory: 64 * 1024 * 1024, cpuMilli: 100, pidsLimit: 1024 },
    log: { driver: 'local', maxSize: 1024 * 1024 },
  };
}

/** Fills the data directory's database with `count` ended tasks through the state layer. */
async function fill(dataDir: string, runId: string, count: number, progress: (message: string) => void): Promise<number> {
  const store = openStore(path.join(dataDir, STORE_FILE_NAME));
  const startedNs = process.hrtime.bigint();
  const firstEndMs = Date.now() - 3 * 86_400_000;
  try {
    for (let from = 0; from < count; from += 5000) {
      store.transaction(() => {
        for (let i = from; i < Math.min(count, from + 5000); i++) {
          const id = `bench-${runId}-filled-${i}`;
          store.tasks.insert({ id, spec: storedSpec(runId, i), reservation: { memoryBytes: 64 * 1024 * 1024, cpuMilli: 100 } });
          store.tasks.update(id, { to: 'starting' });
          store.tasks.update(id, { to: 'running', containerId: i.toString(16).padStart(64, '0') });
          store.tasks.update(id, { to: 'exited', endState: i % 10 === 0 ? { kind: 'failed', exitCode: 1 } : { kind: 'success', exitCode: 0 }, finishedAtMs: firstEndMs + i });
        }
      });
    }
    store.checkpoint();
  } finally {
    store.close();
  }
  progress(`retention: filled ${count} ended tasks in ${round(elapsedMs(startedNs) / 1000)} s`);
  return databaseBytes(dataDir);
}

/** The database file and its write-ahead log, in bytes. */
async function databaseBytes(dataDir: string): Promise<number> {
  const file = path.join(dataDir, STORE_FILE_NAME);
  const size = async (name: string): Promise<number> => stat(name).then((s) => s.size, () => 0);
  return (await size(file)) + (await size(`${file}-wal`));
}

async function timed<T>(work: () => Promise<T>): Promise<number> {
  const startedNs = process.hrtime.bigint();
  await work();
  return elapsedMs(startedNs);
}

const ps = (client: AgentClient): Promise<TaskView[]> => client.list({ state: [...UNENDED_STATES] });

/**
 * Waits until the task has ended and the agent has removed its container, so that the next submit
 * is timed on an agent with nothing else to do (a removal still under way would be timed with it).
 */
async function waitForEndAndRemoval(client: AgentClient, docker: Dockerode, id: string): Promise<void> {
  const deadline = Date.now() + TASK_DEADLINE_MS;
  const filters = JSON.stringify({ label: [`${LABELS.taskId}=${id}`] });
  for (;;) {
    if (hasEnded((await client.get(id)).state) && (await docker.listContainers({ all: true, filters })).length === 0) return;
    if (Date.now() > deadline) throw new Error(`bench retention: task ${id} did not end (and its container go) within ${TASK_DEADLINE_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const latency = (values: readonly number[]): { p50Ms: number; p99Ms: number; maxMs: number } => ({
  p50Ms: round(median(values), 2),
  p99Ms: round(quantile(values, 0.99), 2),
  maxMs: round(Math.max(...values), 2),
});

export async function benchRetention(context?: RetentionBenchContext): Promise<void> {
  const ctx: RetentionBenchContext = context ?? standaloneContext();
  const docker = ctx.docker ?? new Dockerode({ socketPath: '/var/run/docker.sock' });
  const endedTasks = Number(process.env.BENCH_RETENTION_TASKS) > 0 ? Math.round(Number(process.env.BENCH_RETENTION_TASKS)) : DEFAULT_ENDED_TASKS;
  const psCalls = Math.max(20, Math.round(PS_CALLS * ctx.scale));
  const submits = Math.max(4, Math.round(SUBMITS * ctx.scale));
  const entry = process.env.BENCH_AGENT_ENTRY?.trim() || BERTH_BIN;
  const sides: Side[] = [];
  for (const name of ['empty', 'full'] as const) {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), `berth-bench-ret-${name}-`));
    sides.push({ name, agentId: `bench-${ctx.runId}-${name}`, dataDir, configFile: path.join(dataDir, 'agent.yaml') });
  }
  const [empty, full] = sides as [Side, Side];
  const killOnExit = (): void => {
    for (const side of sides) side.child?.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  try {
    const filledBytes = await fill(full.dataDir, ctx.runId, endedTasks, (m) => ctx.progress(m));
    for (const side of sides) {
      await writeFile(side.configFile, agentConfig(side.agentId));
      ctx.progress(`retention: starting the ${side.name} agent`);
      side.agent = await startAgentProcess(side.dataDir, ['--config', side.configFile], {
        command: [entry],
        readyTimeoutMs: READY_DEADLINE_MS,
        signal: ctx.signal,
        onSpawn: (spawned) => (side.child = spawned),
      });
      const token = (await readFile(path.join(side.dataDir, 'token'), 'utf8')).trim();
      side.client = AgentClient.connect({ host: `unix://${side.agent.socketPath}`, token });
    }
    const clientOf = (side: Side): AgentClient => side.client!;
    // A warm-up on both, so that neither side pays for first calls (JIT, prepared statements).
    for (const side of sides) for (let i = 0; i < 20; i++) await ps(clientOf(side));

    // ps, interleaved ABBA.
    const psMs: Record<'empty' | 'full', number[]> = { empty: [], full: [] };
    for (let i = 0; i < psCalls; i++) {
      const order = i % 2 === 0 ? [empty, full] : [full, empty];
      for (const side of order) psMs[side.name].push(await timed(() => ps(clientOf(side))));
      ctx.signal?.throwIfAborted();
    }
    // submit, interleaved ABBA; each task runs to its end before the next submit, untimed.
    const submitMs: Record<'empty' | 'full', number[]> = { empty: [], full: [] };
    let counter = 0;
    for (let i = 0; i < submits; i++) {
      const order = i % 2 === 0 ? [empty, full] : [full, empty];
      for (const side of order) {
        const id = `bench-${ctx.runId}-submit-${++counter}`;
        const spec: StoredTaskSpec = { image: BENCH_IMAGE, command: ['true'], network: 'none', labels: { [BENCH_LABEL]: ctx.runId } };
        submitMs[side.name].push(await timed(() => clientOf(side).submit({ id, spec })));
        await waitForEndAndRemoval(clientOf(side), docker, id);
      }
      ctx.signal?.throwIfAborted();
    }
    const ratio = (values: Record<'empty' | 'full', number[]>, q: number): number => round(quantile(values.full, q) / quantile(values.empty, q), 3);
    const psRatio = ratio(psMs, 0.5);
    const submitRatio = ratio(submitMs, 0.5);
    ctx.emit({
      case: 'retention.latency',
      endedTasks,
      agentEntry: entry !== BERTH_BIN ? entry : existsSync(BUILT_ENTRY) ? 'dist' : 'tsx',
      ps: { calls: psCalls, empty: latency(psMs.empty), full: latency(psMs.full), ratioP50: psRatio, ratioP99: ratio(psMs, 0.99) },
      submit: { calls: submits, empty: latency(submitMs.empty), full: latency(submitMs.full), ratioP50: submitRatio, ratioP99: ratio(submitMs, 0.99) },
      target: `ratio <= ${TARGET_MAX_RATIO}`,
      pass: psRatio <= TARGET_MAX_RATIO && submitRatio <= TARGET_MAX_RATIO,
    });

    // The retention pass: reload the full agent with a count limit, and time its next pass.
    const before = await databaseBytes(full.dataDir);
    await writeFile(full.configFile, agentConfig(full.agentId, KEEP_AFTER_PASS));
    const passStartNs = process.hrtime.bigint();
    full.child!.kill('SIGHUP');
    const duringMs: number[] = [];
    let passLog: Record<string, unknown> | undefined;
    const deadline = Date.now() + PASS_DEADLINE_MS;
    while (!passLog) {
      duringMs.push(await timed(() => ps(clientOf(full))));
      passLog = full.agent!.logLines().find((line) => line.msg === 'retention removed ended tasks');
      if (Date.now() > deadline) throw new Error(`bench retention: the pass did not finish within ${PASS_DEADLINE_MS} ms`);
      ctx.signal?.throwIfAborted();
    }
    const passMs = elapsedMs(passStartNs);
    const after = await databaseBytes(full.dataDir);
    const remaining = (await clientOf(full).list({ state: ['exited'] })).length;
    ctx.emit({
      case: 'retention.pass',
      endedTasks,
      keep: KEEP_AFTER_PASS,
      removed: passLog.removed,
      reclaimedPages: passLog.reclaimedPages,
      remaining,
      passMs: round(passMs),
      databaseMiB: { filled: round(filledBytes / 1024 / 1024, 2), before: round(before / 1024 / 1024, 2), after: round(after / 1024 / 1024, 2) },
      // ps through the API while the pass ran: the event loop keeps answering between batches.
      psDuringPass: { calls: duringMs.length, ...latency(duringMs) },
      pass: remaining === KEEP_AFTER_PASS && after < before,
    });
  } finally {
    for (const side of sides) {
      side.client?.close();
      if (side.agent) {
        const code = await side.agent.stop();
        if (code !== 0) ctx.progress(`retention: the ${side.name} agent exited with ${String(code)}; its last output:\n${side.agent.tail()}`);
      }
    }
    process.off('exit', killOnExit);
    for (const filter of [`${BENCH_LABEL}=${ctx.runId}`, ...sides.map((side) => `${LABELS.ownerId}=${side.agentId}`)]) {
      const rows = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [filter] }) }).catch(() => []);
      await Promise.all(rows.map((row) => docker.getContainer(row.Id).remove({ force: true }).catch(() => undefined)));
    }
    for (const side of sides) await rm(side.dataDir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  benchRetention().catch((error: unknown) => {
    process.stderr.write(`bench retention: ${stackOf(error)}\n`);
    process.exitCode = 1;
  });
}
