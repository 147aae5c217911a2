/**
 * `reconcile`: one sweep of the dangling-container reconciler on an engine holding 1000 foreign
 * containers (created, not started: cheap) and 20 dangling berth containers running `sleep`.
 * Through the fault proxy it counts the sweep's engine requests (target: 1 list + 20 removals, no
 * inspect of anything) and times the sweep against one raw label-filtered list call with dockerode,
 * in the same run and through the same proxy. Also reported: a dry-run sweep (list and decision
 * only) against the raw list, and the real sweep against a raw list-and-remove of another 20.
 *
 * Runnable alone (`node --import tsx bench/reconcile.ts`) or from bench/run.ts, which passes its context.
 */
import { fileURLToPath } from 'node:url';
import Dockerode from 'dockerode';
import { LABELS } from '../src/common/labels.js';
import { Engine } from '../src/engine/engine.js';
import type { ContainerCreateBody } from '../src/engine/types.js';
import { DanglingReconciler } from '../src/reconcile/index.js';
import { FaultProxy } from '../test/support/fault-proxy.js';
import { BENCH_IMAGE, BENCH_LABEL, elapsedMs, median, round, runPool, standaloneContext } from './support.js';
import { stackOf } from '../src/common/errors.js';

const FOREIGN_CONTAINERS = 1000;
const DANGLING_CONTAINERS = 20;
const CREATE_CONCURRENCY = 16;
const RAW_LIST_ROUNDS = 5;

/** What this case needs of bench/run.ts's context; without one it prints on its own. */
interface ReconcileBenchContext {
  runId: string;
  scale: number;
  emit(result: Record<string, unknown>): void;
  progress(message: string): void;
}


function body(labels: Record<string, string>, cmd: string[]): ContainerCreateBody {
  return {
    Image: BENCH_IMAGE,
    Cmd: cmd,
    Labels: labels,
    Tty: false,
    OpenStdin: false,
    StdinOnce: false,
    AttachStdin: false,
    AttachStdout: false,
    AttachStderr: false,
    HostConfig: { NetworkMode: 'none' },
  };
}

/** Runs the case and prints one JSON line. */
export async function benchReconcile(context?: ReconcileBenchContext): Promise<void> {
  const ctx = context ?? standaloneContext();
  const foreignCount = Math.max(10, Math.round(FOREIGN_CONTAINERS * ctx.scale));
  const danglingCount = Math.max(2, Math.round(DANGLING_CONTAINERS * ctx.scale));
  const benchLabels = { [BENCH_LABEL]: ctx.runId };
  const ownerId = `bench-${ctx.runId}`;
  const rawOwnerId = `bench-${ctx.runId}-raw`;
  const berthLabels = (owner: string, i: number): Record<string, string> => ({
    ...benchLabels,
    [LABELS.managed]: 'true',
    [LABELS.ownerId]: owner,
    [LABELS.taskId]: `${owner}-task-${i}`,
  });
  const engine = new Engine();
  const proxy = await FaultProxy.start();
  const rawDocker = new Dockerode({ socketPath: proxy.socketPath });
  const index = (count: number): number[] => Array.from({ length: count }, (_, i) => i);

  try {
    ctx.progress(`reconcile: creating ${foreignCount} foreign containers and ${2 * danglingCount} dangling berth containers`);
    const createStarted = process.hrtime.bigint();
    await runPool(index(foreignCount), CREATE_CONCURRENCY, (i) => engine.createContainer(`bench-${ctx.runId}-foreign-${i}`, body(benchLabels, ['true'])));
    // Two sets of dangling containers: one for berth's sweep, one for the raw list-and-remove it is compared with.
    for (const owner of [ownerId, rawOwnerId]) {
      await runPool(index(danglingCount), CREATE_CONCURRENCY, async (i) => {
        const id = await engine.createContainer(`bench-${ctx.runId}-${owner === ownerId ? 'dangling' : 'raw'}-${i}`, body(berthLabels(owner, i), ['sleep', '600']));
        await engine.startContainer(id);
      });
    }
    ctx.progress(`reconcile: created in ${round(elapsedMs(createStarted) / 1000)} s`);

    const filters = (owner: string): string => JSON.stringify({ label: [`${LABELS.managed}=true`, `${LABELS.ownerId}=${owner}`], status: ['running'] });
    // Warm both paths once, so neither pays for a cold engine cache.
    await rawDocker.listContainers({ all: false, filters: filters(ownerId) });
    const rawListMs: number[] = [];
    for (let i = 0; i < RAW_LIST_ROUNDS; i++) {
      const started = process.hrtime.bigint();
      const rows = await rawDocker.listContainers({ all: false, filters: filters(ownerId) });
      rawListMs.push(elapsedMs(started));
      if (rows.length !== danglingCount) throw new Error(`bench reconcile: the raw list found ${rows.length} containers, not ${danglingCount}`);
    }

    const reconciler = new DanglingReconciler({
      engine: new Engine({ socketPath: proxy.socketPath }),
      ownerId,
      trackedContainerIds: () => [],
      // The dangling pass alone, as the raw list it is measured against (no orphans, no group networks or volumes); and no orphan of anyone else removed.
      options: { creationGrace: 0, orphans: false, groups: false },
    });
    const dryRunMs: number[] = [];
    for (let i = 0; i < RAW_LIST_ROUNDS; i++) {
      const started = process.hrtime.bigint();
      const dry = await reconciler.sweepOnce({ dryRun: true });
      dryRunMs.push(elapsedMs(started));
      if (dry.wouldRemove.length !== danglingCount) throw new Error(`bench reconcile: the dry run found ${dry.wouldRemove.length} dangling containers, not ${danglingCount}`);
    }

    ctx.progress('reconcile: one sweep through the proxy');
    proxy.clearLog();
    const sweepStarted = process.hrtime.bigint();
    const result = await reconciler.sweepOnce();
    const sweepMs = elapsedMs(sweepStarted);
    const listCalls = proxy.count('GET', /^\/containers\/json$/);
    const removeCalls = proxy.count('DELETE', /^\/containers\/[^/]+$/);
    const otherCalls = proxy.requests.length - listCalls - removeCalls;

    // The same work done by hand with dockerode: one list, then force-removals with the sweep's concurrency.
    const rawSweepStarted = process.hrtime.bigint();
    const rawRows = await rawDocker.listContainers({ all: false, filters: filters(rawOwnerId) });
    await runPool(rawRows, reconciler.options.removeConcurrency, (row) => rawDocker.getContainer(row.Id).remove({ force: true, v: true }));
    const rawSweepMs = elapsedMs(rawSweepStarted);

    const rawListMedianMs = median(rawListMs);
    const dryRunMedianMs = median(dryRunMs);
    ctx.emit({
      case: 'reconcile',
      foreignContainers: foreignCount,
      danglingContainers: danglingCount,
      removed: result.removed.length,
      listCalls,
      removeCalls,
      otherCalls,
      sweepMs: round(sweepMs),
      rawListMs: round(rawListMedianMs, 2),
      ratio: round(sweepMs / rawListMedianMs, 3),
      dryRunSweepMs: round(dryRunMedianMs, 2),
      dryRunRatio: round(dryRunMedianMs / rawListMedianMs, 3),
      rawSweepMs: round(rawSweepMs),
      ratioToRawSweep: round(sweepMs / rawSweepMs, 3),
      target: `1 list + ${danglingCount} removals, nothing else`,
      pass: listCalls === 1 && removeCalls === danglingCount && otherCalls === 0 && result.removed.length === danglingCount,
    });
  } finally {
    ctx.progress('reconcile: removing the bench containers');
    const leftovers = await engine.listContainers({ all: true, labels: [`${BENCH_LABEL}=${ctx.runId}`] });
    await runPool(leftovers, CREATE_CONCURRENCY, (row) => engine.removeContainer(row.id)).catch((error: unknown) =>
      ctx.progress(`reconcile: could not remove every bench container: ${String(error)}`),
    );
    await proxy.close();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  benchReconcile().catch((error: unknown) => {
    process.stderr.write(`bench reconcile: ${stackOf(error)}\n`);
    process.exitCode = 1;
  });
}
