/**
 * The agent half of the `warm` case: submit-to-first-output of tasks that take a warm pool's
 * container against tasks that start cold, through a real `berth agent` process, in the same run.
 * A task's time runs from its submit to the first line its logs (followed) deliver. Warm and cold
 * tasks alternate, so that both meet the same engine load.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Dockerode from 'dockerode';
import { AgentClient } from '../src/agent/client.js';
import { LABELS } from '../src/common/labels.js';
import { startAgentProcess, type RunningAgent } from '../test/support/agent.js';
import { BENCH_IMAGE, BENCH_LABEL, elapsedMs, round, scaled, type BenchContext, removeLabelledContainers, type CaseContext } from './support.js';
import { latencySummary } from './warm.js';

const BERTH_BIN = fileURLToPath(new URL('../bin/berth.js', import.meta.url));
const POOL = 'bench';
const POOL_SIZE = 4;
/** What a warm task may differ in from its pool: its command. A cold task differs in its hostname, a create-time part. */
const COMMAND = ['echo', 'first-line'];

/** The target, as for the library: the warm p50 at most a quarter of the cold p50. */
const TARGET_MAX_WARM_COLD_RATIO = 0.25;

export interface WarmAgentFigures {
  warm: { p50Ms: number; p99Ms: number };
  cold: { p50Ms: number; p99Ms: number };
  /** How many of the tasks meant to be warm took a pool container. */
  warmHits: number;
  tasks: number;
}

/** Submit-to-first-output of `count` warm and `count` cold tasks through one agent with a pool of POOL_SIZE. */
export async function measureWarmThroughAgent(ctx: CaseContext, count: number): Promise<WarmAgentFigures> {
  const docker = ctx.docker ?? new Dockerode({ socketPath: '/var/run/docker.sock' });
  const agentId = `bench-${ctx.runId}-warm`;
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-bench-warm-'));
  const configFile = path.join(dataDir, 'agent.yaml');
  const spec = { image: BENCH_IMAGE, network: 'none' as const, labels: { [BENCH_LABEL]: ctx.runId } };
  await writeFile(
    configFile,
    [`agentId: ${agentId}`, 'images: {cleanup: false}', 'reconcile: {enabled: false}', `pools: [${JSON.stringify({ name: POOL, size: POOL_SIZE, spec })}]`, ''].join('\n'),
  );
  let agent: RunningAgent | undefined;
  let client: AgentClient | undefined;
  try {
    agent = await startAgentProcess(dataDir, ['--config', configFile], { command: [process.env.BENCH_AGENT_ENTRY?.trim() || BERTH_BIN], readyTimeoutMs: 120_000, ...(ctx.signal ? { signal: ctx.signal } : {}) });
    const token = (await readFile(path.join(dataDir, 'token'), 'utf8')).trim();
    const agentClient = (client = AgentClient.connect({ host: `unix://${agent.socketPath}`, token }));
    const idle = /^berth_pool_containers\{(?=[^}]*pool="bench")(?=[^}]*state="idle")[^}]*\} (\d+)$/m;
    const poolFull = async (): Promise<boolean> => idle.exec(await agentClient.metrics())?.[1] === String(POOL_SIZE);
    await until(poolFull, 60_000, 'the pool to fill');
    const warm: number[] = [];
    const cold: number[] = [];
    let warmHits = 0;
    for (let i = 0; i < count && !ctx.signal?.aborted; i++) {
      // The order turns each round, so that neither path always meets a settled engine.
      for (const path of i % 2 === 0 ? (['warm', 'cold'] as const) : (['cold', 'warm'] as const)) {
        const taskId = `${agentId}-${path}-${i}`;
        const started = process.hrtime.bigint();
        await agentClient.submit({ id: taskId, spec: { ...spec, command: COMMAND, ...(path === 'cold' ? { hostname: 'cold' } : {}) } });
        for await (const record of agentClient.logs(taskId, { follow: true })) {
          if (record.text.length > 0) break;
        }
        (path === 'warm' ? warm : cold).push(elapsedMs(started));
        const ended = await agentClient.wait(taskId);
        if (path === 'warm' && ended.start?.path === 'warm') warmHits++;
        await agentClient.remove(taskId);
      }
      // The next warm task finds the pool refilled, as a steady trickle of requests would.
      await until(poolFull, 30_000, 'the pool to refill');
    }
    return { warm: latencySummary(warm), cold: latencySummary(cold), warmHits, tasks: warm.length };
  } finally {
    client?.close();
    if (agent) await agent.stop();
    await removeLabelledContainers(docker, `${LABELS.ownerId}=${agentId}`).catch(() => undefined);
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function until(condition: () => Promise<boolean>, withinMs: number, what: string): Promise<void> {
  for (const deadline = Date.now() + withinMs; Date.now() < deadline; ) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`bench warm: timed out waiting for ${what}`);
}

/** The `warm` case's agent half: one JSON line with the warm and cold figures through a real agent. */
export async function benchWarmAgent(ctx: BenchContext): Promise<void> {
  const n = scaled(ctx, 30, 5);
  ctx.progress(`warm (agent): ${n} warm and ${n} cold tasks through a real agent`);
  const figures = await measureWarmThroughAgent(ctx, n);
  const ratio = round(figures.warm.p50Ms / figures.cold.p50Ms, 3);
  ctx.emit({
    case: 'warm-agent',
    tasks: figures.tasks,
    measure: 'submit to the first line of the followed logs, through a real agent',
    warm: figures.warm,
    cold: figures.cold,
    warmHits: figures.warmHits,
    ratioWarmCold: ratio,
    ratioWarmColdP99: round(figures.warm.p99Ms / figures.cold.p99Ms, 3),
    target: { field: 'ratioWarmCold', max: TARGET_MAX_WARM_COLD_RATIO },
    pass: ratio <= TARGET_MAX_WARM_COLD_RATIO && figures.warmHits === figures.tasks,
  });
}
