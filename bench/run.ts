/**
 * `npm run bench [case…]`: runs the selected cases (all by default) in sequence against the real
 * engine and prints one JSON line per result on stdout, nothing else; progress goes to stderr.
 * Cases, in the order they run: lifecycle, logs, pull (when bench/pull.ts is present), reconcile,
 * cluster (submit-to-claimed latency of the PostgreSQL queue with 10,000 tasks queued; starts the test
 * PostgreSQL with scripts/test-postgres.sh unless BERTH_BENCH_PG_URL names one),
 * group (start-to-running of a 3-task group against a pause container and three joiners by hand), warm
 * (submit-to-first-output of pooled tasks against cold ones and the raw engine; a frozen pool's CPU),
 * agent (a real `berth agent` process driven through its API), exec (exec of `true` through an
 * agent's plain request and WebSocket against a raw dockerode exec), files-download (a 100 MiB
 * download through an agent against the engine's archive endpoint), faults (berth run, the agent and the
 * docker CLI under a mixed fault profile in front of the engine), retention (ps and submit through an
 * agent with 100,000 ended tasks against an empty one, and a retention pass over them).
 *
 * Env BENCH_N scales every case's counts (default 1; e.g. BENCH_N=0.2 for a quick look). Every
 * container created carries a label unique to the run and is removed at the end, even on failure.
 */
import { existsSync } from 'node:fs';
import { benchAgent } from './agent.js';
import { benchCluster } from './cluster.js';
import { benchExec } from './exec.js';
import { benchFilesUpload } from './files.js';
import { benchFaults } from './faults.js';
import { benchFilesDownload } from './files-download.js';
import { benchGroup } from './group.js';
import { benchWarm } from './warm.js';
import { benchWarmAgent } from './warm-agent.js';
import { benchLifecycle } from './lifecycle.js';
import { benchLogs } from './logs.js';
import { benchReconcile } from './reconcile.js';
import { benchRetention } from './retention.js';
import { BENCH_LABEL, createContext, removeRunContainers, type BenchContext } from './support.js';
import { messageOf, stackOf } from '../src/common/errors.js';

type BenchCase = (ctx: BenchContext) => Promise<void>;

/**
 * bench/pull.ts is optional. When present it exports `benchPull(ctx)`, which emits its own lines
 * through `ctx.emit`; a result object (or array of them) it returns is emitted as well.
 */
async function loadPullCase(): Promise<BenchCase | undefined> {
  if (!existsSync(new URL('./pull.ts', import.meta.url)) && !existsSync(new URL('./pull.js', import.meta.url))) return undefined;
  // A computed specifier: the module may not exist when this file is type-checked.
  const specifier = './pull.js';
  const module = (await import(specifier)) as { benchPull?: unknown };
  if (typeof module.benchPull !== 'function') throw new Error('bench/pull.ts does not export a function benchPull');
  const benchPull = module.benchPull as (ctx: BenchContext) => Promise<unknown>;
  return async (ctx) => {
    const returned = await benchPull(ctx);
    for (const result of Array.isArray(returned) ? returned : [returned]) {
      if (result !== null && typeof result === 'object') ctx.emit(result as Record<string, unknown>);
    }
  };
}

function parseScale(value: string | undefined): number {
  if (value === undefined || value === '') return 1;
  const scale = Number(value);
  if (!Number.isFinite(scale) || scale <= 0) throw new Error(`BENCH_N must be a positive number, not "${value}"`);
  return scale;
}

async function main(): Promise<number> {
  const cases = new Map<string, BenchCase>([
    ['lifecycle', benchLifecycle],
    ['logs', benchLogs],
  ]);
  const pull = await loadPullCase();
  if (pull) cases.set('pull', pull);
  cases.set('reconcile', benchReconcile);
  // Submit-to-claimed latency of the cluster store's queue (PostgreSQL) with 10,000 tasks queued.
  cases.set('cluster', benchCluster);
  // A 3-task group through the GroupRunner against a pause container and three joiners by hand.
  cases.set('group', benchGroup);
  // Submit-to-first-output of warm (pooled) tasks against cold ones and the raw engine, and a frozen pool's CPU.
  // The same through a real agent process (submit to the first line of the followed logs).
  cases.set('warm', async (ctx) => {
    await benchWarm(ctx);
    await benchWarmAgent(ctx);
  });
  // A real agent process driven through its API: last, as it is the longest.
  cases.set('agent', benchAgent);
  // Exec through a real agent against a raw dockerode exec.
  cases.set('exec', benchExec);
  // 100 MiB into a running task through an agent against the engine's own putArchive, then out of
  // one (GET /v1/tasks/:id/archive) against its getArchive; `files-download` runs the second alone.
  cases.set('files', async (ctx) => {
    await benchFilesUpload(ctx);
    await benchFilesDownload(ctx);
  });
  cases.set('files-download', benchFilesDownload);
  // Faults after the agent: berth run, an agent and the docker CLI behind fault proxies.
  cases.set('faults', benchFaults);
  // Two agents, one with 100,000 ended tasks filled in its database: last, as the fill takes a while.
  cases.set('retention', benchRetention);

  const selected = process.argv.slice(2);
  const unknown = selected.filter((name) => !cases.has(name));
  if (unknown.length > 0) {
    process.stderr.write(`bench: unknown case ${unknown.join(', ')}; cases: ${[...cases.keys()].join(', ')}\n`);
    return 2;
  }
  const names = selected.length > 0 ? selected : [...cases.keys()];
  const interrupt = new AbortController();
  const ctx = createContext(parseScale(process.env.BENCH_N), interrupt.signal);
  ctx.progress(`run ${ctx.runId}: ${names.join(', ')} (BENCH_N=${ctx.scale})`);

  const cleanUp = async (): Promise<void> => {
    try {
      const count = await removeRunContainers(ctx.docker, ctx.runId);
      if (count > 0) ctx.progress(`removed ${count} leftover container(s) of run ${ctx.runId}`);
    } catch (error) {
      ctx.progress(`could not remove the containers labelled ${BENCH_LABEL}=${ctx.runId}: ${String(error)}`);
    }
  };
  // An interrupt lets the tasks under way stop and remove their containers (a create in flight
  // would escape a clean-up that ran at once); a second interrupt, or a stuck case, forces it.
  const forceExit = async (): Promise<never> => {
    await cleanUp();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    await cleanUp();
    process.exit(130);
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupt.signal.aborted) {
      ctx.progress(`${signal} again: removing what is left and exiting`);
      void forceExit();
      return;
    }
    ctx.progress(`${signal}: stopping the tasks under way and cleaning up`);
    interrupt.abort(new Error(`interrupted by ${signal}`));
    setTimeout(() => void forceExit(), 30_000).unref();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let failed = false;
  try {
    await ctx.engine.checkCompatible();
    for (const name of names) {
      if (interrupt.signal.aborted) break;
      ctx.progress(`case ${name}`);
      try {
        await cases.get(name)!(ctx);
      } catch (error) {
        failed = true;
        if (interrupt.signal.aborted) break;
        ctx.emit({ case: name, error: messageOf(error), pass: false });
        process.stderr.write(`bench: case ${name} failed: ${stackOf(error)}\n`);
      }
    }
  } finally {
    await cleanUp();
  }
  if (interrupt.signal.aborted) return 130;
  return failed ? 1 : 0;
}

process.exitCode = await main();
