/**
 * `exec`: exec of `true` in a running task through a real `berth agent` process, against a raw
 * dockerode exec (create, start, read to the end, inspect for the exit code) in the same container
 * of the same run. Two ways through the agent: the plain request (`POST /v1/tasks/:id/exec`, with
 * the AgentClient's kept-alive connection) and the WebSocket (`GET /v1/tasks/:id/exec`, a new
 * connection and upgrade per exec, as a CLI does). Each round runs the three back to back, in an
 * order that rotates from round to round, so that engine drift hits all alike; the ratios are the
 * medians of the per-round ratios. Target: each ratio at most 1.1.
 *
 * The agent runs from bin/berth.js (dist/ when built; `agentEntry` says which). Runnable alone
 * (`node --import tsx bench/exec.ts`) or from bench/run.ts.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import Dockerode from 'dockerode';
import { AgentClient } from '../src/agent/client.js';
import { LABELS } from '../src/common/labels.js';
import { stackOf } from '../src/common/errors.js';
import { startAgentProcess, type RunningAgent } from '../test/support/agent.js';
import { BENCH_IMAGE, BENCH_LABEL, type CaseContext, elapsedMs, pairedRatio, quantile, round, standaloneContext } from './support.js';

const ROUNDS = 200;
const WARMUP_ROUNDS = 10;
const TARGET_MAX_RATIO = 1.1;
const READY_DEADLINE_MS = 120_000;

const BERTH_BIN = fileURLToPath(new URL('../bin/berth.js', import.meta.url));
const BUILT_ENTRY = fileURLToPath(new URL('../dist/cli/entry.js', import.meta.url));

/** The raw dockerode exec a platform would write: create, start (hijacked), read to the end, inspect. */
async function rawExec(container: Dockerode.Container): Promise<number> {
  const exec = await container.exec({ Cmd: ['true'], AttachStdout: true, AttachStderr: true });
  const stream = (await exec.start({ hijack: true, stdin: false })) as unknown as Duplex;
  await new Promise<void>((resolve, reject) => {
    stream.on('data', () => undefined);
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', reject);
  });
  const info = (await exec.inspect()) as { ExitCode: number | null };
  return info.ExitCode ?? -1;
}

async function socketExec(client: AgentClient, taskId: string): Promise<number> {
  const session = await client.exec(taskId, { cmd: ['true'] });
  session.stdout.resume();
  session.stderr.resume();
  return session.exitCode;
}

async function timed(work: () => Promise<number>): Promise<number> {
  const start = process.hrtime.bigint();
  const exitCode = await work();
  if (exitCode !== 0) throw new Error(`exec of true exited ${exitCode}`);
  return elapsedMs(start);
}

export async function benchExec(context?: CaseContext): Promise<void> {
  const ctx: CaseContext = context ?? standaloneContext();
  const docker = ctx.docker ?? new Dockerode({ socketPath: '/var/run/docker.sock' });
  const agentId = `bench-${ctx.runId}-exec`;
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-bench-exec-'));
  const configFile = path.join(dataDir, 'agent.yaml');
  await writeFile(configFile, [`agentId: ${agentId}`, 'images: {cleanup: false}', 'reconcile: {enabled: false}', ''].join('\n'));
  const entry = process.env.BENCH_AGENT_ENTRY?.trim() || BERTH_BIN;
  let agent: RunningAgent | undefined;
  let client: AgentClient | undefined;
  try {
    agent = await startAgentProcess(dataDir, ['--config', configFile], { command: [entry], readyTimeoutMs: READY_DEADLINE_MS, ...(ctx.signal ? { signal: ctx.signal } : {}) });
    const token = (await readFile(path.join(dataDir, 'token'), 'utf8')).trim();
    client = AgentClient.connect({ host: `unix://${agent.socketPath}`, token });
    const taskId = `bench-${ctx.runId}-exec`;
    await client.submit({ id: taskId, spec: { image: BENCH_IMAGE, command: ['sleep', '3600'], network: 'none', labels: { [BENCH_LABEL]: ctx.runId }, stopGracePeriod: '1s' } });
    let containerId: string | undefined;
    for (const deadline = Date.now() + 60_000; Date.now() < deadline && containerId === undefined; ) {
      const task = await client.get(taskId);
      if (task.state === 'running') containerId = task.containerId;
      else await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (containerId === undefined) throw new Error(`task ${taskId} did not run within 60 s`);
    const container = docker.getContainer(containerId);
    const agentClient = client;
    const ways: Record<'raw' | 'plain' | 'socket', () => Promise<number>> = {
      raw: () => rawExec(container),
      plain: async () => (await agentClient.execOnce(taskId, { cmd: ['true'] })).exitCode,
      socket: () => socketExec(agentClient, taskId),
    };
    const order = ['raw', 'plain', 'socket'] as const;
    const rounds = Math.max(10, Math.round(ROUNDS * ctx.scale));
    ctx.progress(`exec: ${rounds} rounds of raw, plain and WebSocket exec of true (after ${WARMUP_ROUNDS} warm-up rounds)`);
    for (let i = 0; i < WARMUP_ROUNDS; i++) for (const way of order) await timed(ways[way]);
    const times: Record<'raw' | 'plain' | 'socket', number[]> = { raw: [], plain: [], socket: [] };
    for (let i = 0; i < rounds && !ctx.signal?.aborted; i++) {
      for (let k = 0; k < order.length; k++) {
        const way = order[(i + k) % order.length]!;
        times[way].push(await timed(ways[way]));
      }
    }
    const summary = (values: number[]): { p50: number; p99: number } => ({ p50: round(quantile(values, 0.5), 2), p99: round(quantile(values, 0.99), 2) });
    const plainRatio = round(pairedRatio(times.plain, times.raw), 3);
    const socketRatio = round(pairedRatio(times.socket, times.raw), 3);
    ctx.emit({
      case: 'exec',
      rounds: times.raw.length,
      agentEntry: entry !== BERTH_BIN ? entry : existsSync(BUILT_ENTRY) ? 'dist' : 'tsx',
      rawMs: summary(times.raw),
      plainMs: summary(times.plain),
      socketMs: summary(times.socket),
      plainRatio,
      socketRatio,
      targetMaxRatio: TARGET_MAX_RATIO,
      meetsTarget: plainRatio <= TARGET_MAX_RATIO && socketRatio <= TARGET_MAX_RATIO,
    });
  } finally {
    client?.close();
    if (agent) await agent.stop();
    const rows = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`${LABELS.ownerId}=${agentId}`] }) }).catch(() => []);
    await Promise.all(rows.map((row) => docker.getContainer(row.Id).remove({ force: true, v: true }).catch(() => undefined)));
    await rm(dataDir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  benchExec().catch((error: unknown) => {
    process.stderr.write(`bench exec: ${stackOf(error)}\n`);
    process.exitCode = 1;
  });
}
