/**
 * `faults`: tasks under a mixed fault profile in front of the engine (test/support/fault-mix.ts:
 * drops and 500s after the engine acted, 503s before it, slow calls, a few calls that never answer
 * and streams that stall), run three ways in the same run, each through its own fault proxy with the
 * same profile and seed:
 *
 * - `faults.berth-run`: N `berth run` processes (bin/berth.js, so dist/ when built), DOCKER_HOST on
 *   the proxy, at concurrency 4.
 * - `faults.agent`: N tasks submitted at once to an in-process agent whose engine is the proxy;
 *   output read back from the agent's store of it.
 * - `faults.docker-cli`: N `docker -H unix://<proxy> run --rm` at concurrency 4, the baseline.
 *
 * Every task prints numbered lines and exits with a chosen code. Per side: right end states (exit
 * code, and for the agent the recorded end state), runs that did not finish within the bound (killed
 * and counted as hung), repeated and lost output lines, containers left behind once everything
 * finished (leaked), and the time to finish p50/p99. `faults.summary` sets berth next to the docker
 * CLI as ratios. Target: every end state right, output exactly once, 0 leaked, 0 hung, p99 within
 * the bound the engine's deadlines set (TARGET_P99_MS: three write deadlines and 15 s).
 *
 * N is 12 per side at BENCH_N=1 (at least 4): the docker CLI's hung runs hold the case for the bound. Runnable alone (`node --import tsx bench/faults.ts`).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import Dockerode from 'dockerode';
import { buildAgent } from '../src/agent/agent.js';
import { silentLogger } from '../src/common/logger.js';
import { DEFAULT_DEADLINES } from '../src/engine/engine.js';
import { addMixedFaults, seededRandom } from '../test/support/fault-mix.js';
import { FaultProxy } from '../test/support/fault-proxy.js';
import { DOCKER_CLI } from '../test/support/registry.js';
import { BENCH_IMAGE, BENCH_LABEL, type CaseContext, elapsedMs, quantile, round, standaloneContext } from './support.js';
import { testHost } from '../test/support/agent.js';

const LINES = 20;
const CONCURRENCY = 4;
const FAULT_RATE = 0.1;
/** A run still going after this hangs: it is killed and counted. */
const RUN_BOUND_MS = 120_000;
/** After the last run ends, how long the agent has to remove the last containers before they count as leaked. */
const REMOVAL_GRACE_MS = 30_000;
/**
 * The bound the configured deadlines set on one run: a create that never answers holds it one write
 * deadline; a task whose create timed out then has its name watched for two more after it ends (the
 * driver's late-create guard, which `berth run` waits out so a create landing late is not leaked);
 * 15 s cover the task itself and its retries' backoff.
 */
const TARGET_P99_MS = 3 * DEFAULT_DEADLINES.writeMs + 15_000;
const SIDE_LABEL = 'berth.bench.side';

const BERTH_BIN = fileURLToPath(new URL('../bin/berth.js', import.meta.url));

/** What this case needs of bench/run.ts's context; without one it prints on its own. */
export type FaultsBenchContext = CaseContext;

type Side = 'berth-run' | 'agent' | 'docker-cli';

interface TaskOutcome {
  rightEnd: boolean;
  hung: boolean;
  repeatedLines: number;
  lostLines: number;
  finishMs: number;
}

const exitCodeOf = (i: number): number => i % 4;
const script = (i: number): string => `i=1; while [ $i -le ${LINES} ]; do echo line-$i; i=$((i+1)); done; exit ${exitCodeOf(i)}`;

/** Repeated and lost lines of one task's output against line-1 … line-LINES. */
function countLines(text: string): { repeatedLines: number; lostLines: number } {
  const counts = new Map<string, number>();
  for (const line of text.split('\n')) if (line !== '') counts.set(line, (counts.get(line) ?? 0) + 1);
  let repeatedLines = 0;
  let lostLines = 0;
  for (let i = 1; i <= LINES; i++) {
    const n = counts.get(`line-${i}`) ?? 0;
    if (n === 0) lostLines++;
    else repeatedLines += n - 1;
  }
  return { repeatedLines, lostLines };
}

/** Runs a process to its end, killing it (and counting it as hung) past the bound. */
async function runProcess(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; hung: boolean; ms: number }> {
  const started = process.hrtime.bigint();
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'ignore'], env });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  let hung = false;
  const timer = setTimeout(() => {
    hung = true;
    child.kill('SIGKILL');
  }, RUN_BOUND_MS);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, hung, ms: elapsedMs(started) };
}

async function pool(count: number, concurrency: number, signal: AbortSignal | undefined, work: (i: number) => Promise<TaskOutcome>): Promise<TaskOutcome[]> {
  const outcomes: TaskOutcome[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count && !signal?.aborted) outcomes.push(await work(next++));
    }),
  );
  return outcomes;
}

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('BERTH_') && key !== 'DOCKER_HOST') env[key] = value;
  return { ...env, ...extra };
}

function labelArgs(ctx: FaultsBenchContext, side: Side): string[] {
  return ['-l', `${BENCH_LABEL}=${ctx.runId}`, '-l', `${SIDE_LABEL}=${side}`];
}

async function berthRuns(ctx: FaultsBenchContext, proxy: FaultProxy, count: number): Promise<TaskOutcome[]> {
  return pool(count, CONCURRENCY, ctx.signal, async (i) => {
    const result = await runProcess(process.execPath, [BERTH_BIN, 'run', ...labelArgs(ctx, 'berth-run'), BENCH_IMAGE, 'sh', '-c', script(i)], cleanEnv({ DOCKER_HOST: `unix://${proxy.socketPath}` }));
    return { rightEnd: !result.hung && result.code === exitCodeOf(i), hung: result.hung, ...countLines(result.stdout), finishMs: result.ms };
  });
}

async function dockerRuns(ctx: FaultsBenchContext, proxy: FaultProxy, count: number): Promise<TaskOutcome[]> {
  return pool(count, CONCURRENCY, ctx.signal, async (i) => {
    const args = ['-H', `unix://${proxy.socketPath}`, 'run', '--rm', '--network', 'none', ...labelArgs(ctx, 'docker-cli'), BENCH_IMAGE, 'sh', '-c', script(i)];
    const result = await runProcess(DOCKER_CLI, args, cleanEnv({}));
    return { rightEnd: !result.hung && result.code === exitCodeOf(i), hung: result.hung, ...countLines(result.stdout), finishMs: result.ms };
  });
}

async function agentTasks(ctx: FaultsBenchContext, proxy: FaultProxy, count: number): Promise<TaskOutcome[]> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-bench-faults-'));
  const runtime = await buildAgent(
    {
      flags: {
        dataDir,
        socketPath: path.join(dataDir, 'agent.sock'),
        engine: { socket: proxy.socketPath },
        admission: { maxConcurrent: 16 },
        defaults: { resources: { cpuMilli: 100, memory: '64m' } },
      },
      host: testHost(dataDir),
    },
    silentLogger,
  );
  try {
    await runtime.start();
    const ended = new Map<string, number>();
    const unsubscribe = runtime.events.subscribe((event) => {
      if (event.type === 'task.state' && (event.state === 'exited' || event.state === 'lost') && !ended.has(event.taskId)) ended.set(event.taskId, Date.now());
    });
    const submittedAt = Date.now();
    const ids = Array.from({ length: count }, (_, i) => {
      const spec = { image: BENCH_IMAGE, labels: { [BENCH_LABEL]: ctx.runId, [SIDE_LABEL]: 'agent' }, command: ['sh', '-c', script(i)] };
      return runtime.supervisor.submit({ id: `bench-${ctx.runId}-faults-${i}`, spec }).task.id;
    });
    const deadline = submittedAt + RUN_BOUND_MS;
    while (Date.now() < deadline && ids.some((id) => !ended.has(id)) && !ctx.signal?.aborted) await delay(100);
    unsubscribe();
    const outcomes: TaskOutcome[] = [];
    for (const [i, id] of ids.entries()) {
      const record = runtime.store.tasks.get(id);
      const code = exitCodeOf(i);
      const expectedKind = code === 0 ? 'success' : 'failed';
      const endedAt = ended.get(id);
      let text = '';
      for await (const line of runtime.logs.read(id)) text += `${line.text.replace(/\n$/, '')}\n`;
      outcomes.push({
        rightEnd: record?.state === 'exited' && record.endState?.kind === expectedKind && record.exitCode === code,
        hung: endedAt === undefined,
        ...countLines(text),
        finishMs: (endedAt ?? Date.now()) - submittedAt,
      });
    }
    // The container of an ended task is removed right after its end is recorded.
    await Promise.race([runtime.supervisor.idle(), delay(REMOVAL_GRACE_MS)]);
    return outcomes;
  } finally {
    await runtime.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function leakedContainers(docker: Dockerode, ctx: FaultsBenchContext, side: Side): Promise<number> {
  const rows = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`${BENCH_LABEL}=${ctx.runId}`, `${SIDE_LABEL}=${side}`] }) });
  return rows.length;
}

interface SideResult {
  case: string;
  runs: number;
  rightEnds: number;
  hung: number;
  repeatedLines: number;
  lostLines: number;
  leaked: number;
  faultsInjected: number;
  p50FinishMs: number;
  p99FinishMs: number;
}

async function runSide(ctx: FaultsBenchContext, docker: Dockerode, side: Side, seed: number, count: number): Promise<SideResult> {
  ctx.progress(`faults: ${count} × ${side}`);
  const proxy = await FaultProxy.start({ random: seededRandom(seed) });
  try {
    const rules = addMixedFaults(proxy, { rate: FAULT_RATE, neverAnswering: 1 });
    const outcomes = side === 'berth-run' ? await berthRuns(ctx, proxy, count) : side === 'agent' ? await agentTasks(ctx, proxy, count) : await dockerRuns(ctx, proxy, count);
    const finish = outcomes.map((o) => o.finishMs);
    return {
      case: `faults.${side}`,
      runs: outcomes.length,
      rightEnds: outcomes.filter((o) => o.rightEnd).length,
      hung: outcomes.filter((o) => o.hung).length,
      repeatedLines: outcomes.reduce((n, o) => n + o.repeatedLines, 0),
      lostLines: outcomes.reduce((n, o) => n + o.lostLines, 0),
      leaked: await leakedContainers(docker, ctx, side),
      faultsInjected: rules.reduce((n, r) => n + r.fired, 0),
      p50FinishMs: round(quantile(finish, 0.5)),
      p99FinishMs: round(quantile(finish, 0.99)),
    };
  } finally {
    await proxy.close();
  }
}

const ratio = (berth: number, docker: number): number | null => (docker === 0 ? null : round(berth / docker, 3));

export async function benchFaults(ctx: FaultsBenchContext): Promise<void> {
  const docker = ctx.docker ?? new Dockerode({ socketPath: '/var/run/docker.sock' });
  const count = Math.max(4, Math.round(12 * ctx.scale));
  const seed = Number(process.env.BERTH_MIX_SEED ?? Date.now() % 1_000_000);
  const results = new Map<Side, SideResult>();
  for (const side of ['berth-run', 'agent', 'docker-cli'] as const) {
    if (ctx.signal?.aborted) return;
    const result = await runSide(ctx, docker, side, seed, count);
    results.set(side, result);
    const meetsTarget =
      side === 'docker-cli'
        ? undefined
        : result.rightEnds === result.runs && result.hung === 0 && result.repeatedLines === 0 && result.lostLines === 0 && result.leaked === 0 && result.p99FinishMs <= TARGET_P99_MS;
    ctx.emit({ ...result, seed, faultRate: FAULT_RATE, ...(meetsTarget === undefined ? {} : { targetP99Ms: TARGET_P99_MS, pass: meetsTarget }) });
  }
  const baseline = results.get('docker-cli')!;
  const berthRun = results.get('berth-run')!;
  const agent = results.get('agent')!;
  ctx.emit({
    case: 'faults.summary',
    seed,
    runsPerSide: count,
    // Right ends as a share of the docker CLI's, under the same faults.
    rightEndsRatioBerthRun: ratio(berthRun.rightEnds, baseline.rightEnds),
    rightEndsRatioAgent: ratio(agent.rightEnds, baseline.rightEnds),
    p99RatioBerthRun: ratio(berthRun.p99FinishMs, baseline.p99FinishMs),
    p99RatioAgent: ratio(agent.p99FinishMs, baseline.p99FinishMs),
    dockerCli: { rightEnds: baseline.rightEnds, hung: baseline.hung, repeatedLines: baseline.repeatedLines, lostLines: baseline.lostLines, leaked: baseline.leaked },
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const ctx = standaloneContext();
  const docker = new Dockerode({ socketPath: '/var/run/docker.sock' });
  try {
    await benchFaults({ ...ctx, docker });
  } finally {
    const rows = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`${BENCH_LABEL}=${ctx.runId}`] }) });
    await Promise.all(rows.map((row) => docker.getContainer(row.Id).remove({ force: true }).catch(() => undefined)));
  }
}
