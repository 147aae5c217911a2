/**
 * `cluster` (second half): submit-to-running of a three-agent cluster against a single agent, in the
 * same run, on the same engine.
 *
 * Four real `berth agent` processes: one alone (no cluster) and three in one cluster over a fresh
 * PostgreSQL database. Each measured task is submitted through an agent's API (the cluster's in turn
 * to each of its three agents) and timed from the start of the submit until the engine announces its
 * container's `start` (the engine's event stream, filtered by the bench's label): the same instant on
 * both sides, whoever runs the task and however the agent learns of it. Submits go one at a time and
 * alternate between the two sides, so drift in the engine's speed weighs on both alike. The cluster
 * places with `spread`, so that its tasks go to all three nodes. Target: the cluster's p50 at most 1.1
 * times the single agent's.
 *
 * A third side is a single agent that keeps its records in PostgreSQL (`state.postgres`, the same
 * database, a schema of its own): the cost of the PostgreSQL store against SQLite's, on the same
 * path. Target: its p50 at most 1.1 times the SQLite agent's.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import Dockerode from 'dockerode';
import { AgentClient } from '../src/agent/client.js';
import { LABELS } from '../src/common/labels.js';
import { startAgentProcess, type RunningAgent } from '../test/support/agent.js';
import { BENCH_IMAGE, BENCH_LABEL, quantile, removeLabelledContainers, round, type CaseContext } from './support.js';

const SUBMITS = 40;
const WARMUP = 4;
const TARGET_RATIO = 1.1;
const READY_DEADLINE_MS = 120_000;
const RUNNING_DEADLINE_MS = 60_000;

interface BenchAgent {
  readonly agent: RunningAgent;
  readonly client: AgentClient;
  readonly dataDir: string;
}

/** Starts one agent with `config` lines (YAML) in a data directory of its own. */
async function startAgent(ctx: CaseContext, name: string, config: readonly string[]): Promise<BenchAgent> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), `berth-bench-${name}-`));
  const file = path.join(dataDir, 'agent.yaml');
  await writeFile(file, [`agentId: bench-${ctx.runId}-${name}`, 'listen: 127.0.0.1:0', 'images: {cleanup: false}', 'reconcile: {enabled: false}', ...config, ''].join('\n'));
  const agent = await startAgentProcess(dataDir, ['--config', file], { readyTimeoutMs: READY_DEADLINE_MS, ...(ctx.signal ? { signal: ctx.signal } : {}) });
  const token = (await readFile(path.join(dataDir, 'token'), 'utf8')).trim();
  return { agent, client: AgentClient.connect({ host: `unix://${agent.socketPath}`, token }), dataDir };
}

/** The engine's container start events of this run, by task id, as they come. */
class StartWatch {
  readonly #waiting = new Map<string, (at: number) => void>();
  readonly #seen = new Map<string, number>();
  #stream: Readable | undefined;
  #buffer = '';

  static async open(docker: Dockerode, runId: string): Promise<StartWatch> {
    const watch = new StartWatch();
    watch.#stream = (await docker.getEvents({ filters: { type: ['container'], event: ['start'], label: [`${BENCH_LABEL}=${runId}`] } })) as Readable;
    watch.#stream.setEncoding('utf8').on('data', (chunk: string) => watch.#take(chunk));
    return watch;
  }

  #take(chunk: string): void {
    const at = performance.now();
    this.#buffer += chunk;
    const lines = this.#buffer.split('\n');
    this.#buffer = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      const event = JSON.parse(line) as { Actor?: { Attributes?: Record<string, string> } };
      const taskId = event.Actor?.Attributes?.[LABELS.taskId];
      if (taskId === undefined) continue;
      const waiter = this.#waiting.get(taskId);
      if (waiter) waiter(at);
      else this.#seen.set(taskId, at);
    }
  }

  /** When the container of `taskId` started (performance.now()), waiting up to the deadline. */
  startOf(taskId: string): Promise<number> {
    const seen = this.#seen.get(taskId);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(taskId);
        reject(new Error(`the container of ${taskId} did not start within ${RUNNING_DEADLINE_MS / 1000} s`));
      }, RUNNING_DEADLINE_MS);
      this.#waiting.set(taskId, (at) => {
        clearTimeout(timer);
        this.#waiting.delete(taskId);
        resolve(at);
      });
    });
  }

  close(): void {
    this.#stream?.destroy();
  }
}

/**
 * Runs the comparison against the database at `dbUrl` (created by the caller, dropped by it) and
 * returns the figures for the `cluster` case's line.
 */
export async function benchClusterAgents(ctx: CaseContext, dbUrl: string): Promise<Record<string, unknown>> {
  const docker = ctx.docker ?? new Dockerode({ socketPath: '/var/run/docker.sock' });
  const started: BenchAgent[] = [];
  const watch = await StartWatch.open(docker, ctx.runId);
  try {
    ctx.progress('cluster: starting a single agent and a three-agent cluster');
    // spread: consecutive tasks go to different nodes, so the figure covers all three (binpack would give every one to the first).
    const clusterConfig = (node: string): string[] => ['cluster:', `  postgres: ${dbUrl}`, `  nodeId: bench-${node}`, '  strategy: spread'];
    const [single, pgStore, ...members] = await Promise.all([
      startAgent(ctx, 'single', []),
      startAgent(ctx, 'pg-store', ['state:', `  postgres: ${dbUrl}`, '  schema: bench_single_agent']),
      startAgent(ctx, 'node-a', clusterConfig('a')),
      startAgent(ctx, 'node-b', clusterConfig('b')),
      startAgent(ctx, 'node-c', clusterConfig('c')),
    ]);
    started.push(single!, pgStore!, ...members);
    await waitForNodes(members[0]!.client, 3);

    const submits = Math.max(10, Math.round(SUBMITS * ctx.scale));
    ctx.progress(`cluster: ${submits} submits to each side, one at a time, alternating, each timed until its container starts`);
    const singleMs: number[] = [];
    const clusterMs: number[] = [];
    const pgStoreMs: number[] = [];
    const perNode = new Map<string, number>();
    for (let i = 0; i < WARMUP + submits && !ctx.signal?.aborted; i++) {
      for (const side of ['single', 'cluster', 'pgStore'] as const) {
        const via = side === 'single' ? single! : side === 'pgStore' ? pgStore! : members[i % members.length]!;
        const id = `bench-${ctx.runId}-${side}-${i}`;
        const start = performance.now();
        await via.client.submit({ id, spec: { image: BENCH_IMAGE, command: ['sleep', '1'], network: 'none', labels: { [BENCH_LABEL]: ctx.runId }, stopGracePeriod: '1s' } });
        const runningAt = await watch.startOf(id);
        if (i >= WARMUP) (side === 'single' ? singleMs : side === 'pgStore' ? pgStoreMs : clusterMs).push(runningAt - start);
        if (side === 'cluster') {
          const node = await nodeOf(docker, id);
          perNode.set(node, (perNode.get(node) ?? 0) + 1);
        }
      }
    }
    const singleP50 = quantile(singleMs, 0.5);
    const clusterP50 = quantile(clusterMs, 0.5);
    const ratio = round(clusterP50 / singleP50, 3);
    const pgStoreP50 = quantile(pgStoreMs, 0.5);
    const pgStoreRatio = round(pgStoreP50 / singleP50, 3);
    return {
      submitToRunning: {
        single: { p50Ms: round(singleP50, 1), p99Ms: round(quantile(singleMs, 0.99), 1) },
        threeAgents: { p50Ms: round(clusterP50, 1), p99Ms: round(quantile(clusterMs, 0.99), 1), tasksPerNode: Object.fromEntries(perNode) },
        submits: singleMs.length,
        p50Ratio: ratio,
        targetRatio: TARGET_RATIO,
        meetsTarget: ratio <= TARGET_RATIO,
      },
      postgresStore: {
        singleSqlite: { p50Ms: round(singleP50, 1) },
        singlePostgres: { p50Ms: round(pgStoreP50, 1), p99Ms: round(quantile(pgStoreMs, 0.99), 1) },
        p50Ratio: pgStoreRatio,
        targetRatio: TARGET_RATIO,
        meetsTarget: pgStoreRatio <= TARGET_RATIO,
      },
    };
  } finally {
    watch.close();
    for (const { client } of started) client.close();
    await Promise.all(started.map(({ agent }) => agent.stop().catch(() => undefined)));
    await removeLabelledContainers(docker, `${BENCH_LABEL}=${ctx.runId}`).catch(() => undefined);
    await Promise.all(started.map(({ dataDir }) => rm(dataDir, { recursive: true, force: true })));
  }
}

/** Waits until the cluster lists `count` ready nodes. */
async function waitForNodes(client: AgentClient, count: number): Promise<void> {
  const deadline = Date.now() + READY_DEADLINE_MS;
  for (;;) {
    const listing = await client.listNodes();
    if (listing.nodes.filter((node) => node.state === 'ready').length >= count) return;
    if (Date.now() > deadline) throw new Error(`the cluster did not list ${count} ready nodes within ${READY_DEADLINE_MS / 1000} s`);
    await delay(50);
  }
}

/** The agent that ran `taskId`: its container's owner label. */
async function nodeOf(docker: Dockerode, taskId: string): Promise<string> {
  const [container] = await docker.listContainers({ all: true, filters: { label: [`${LABELS.taskId}=${taskId}`] } });
  return container?.Labels[LABELS.ownerId] ?? 'unknown';
}
