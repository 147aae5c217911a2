/**
 * `lifecycle`: short run-to-completion tasks (`true`, network none) through berth's runToEnd versus
 * the minimal raw dockerode sequence (create, start, wait, remove), interleaved in the same run so
 * that engine drift hits both equally. Against each engine present: the Docker engine, then Podman's
 * Docker-compatible API at /run/podman/podman.sock when it answers (scripts/test-podman.sh), each
 * with berth's ratio to that engine's own raw API; a last line sets the two engines' raw figures
 * side by side.
 */
import Dockerode from 'dockerode';
import { Engine } from '../src/engine/engine.js';
import { describeEndState, runToEnd, TaskDriver } from '../src/tasks/index.js';
import { removeRunContainers, BENCH_IMAGE, elapsedMs, median, pairedRatio, quantile, round, runPool, scaled, type BenchContext } from './support.js';

/** Where scripts/test-podman.sh starts Podman's Docker-compatible API. */
const PODMAN_SOCKET = '/run/podman/podman.sock';

type EngineName = 'docker' | 'podman';

/** berth's median per-task time may exceed the raw engine's by at most 5 %. */
const TARGET_MAX_RATIO = 1.05;
const CONCURRENCY = 8;

type Mode = 'berth' | 'raw';

/** One task through berth; returns its duration in ms. */
async function berthTask(ctx: BenchContext): Promise<number> {
  const started = process.hrtime.bigint();
  const result = await runToEnd(
    ctx.driver,
    { image: BENCH_IMAGE, command: ['true'], network: 'none', labels: { ...ctx.labels } },
    // No signal: the default options are what is measured; an interrupt lets a `true` task finish.
    { taskId: ctx.nextTaskId('lc') },
  );
  const ms = elapsedMs(started);
  if (result.end.kind !== 'success') throw new Error(`a berth lifecycle task did not succeed: ${describeEndState(result.end)}`);
  return ms;
}

/** The same task with the fewest engine calls that do the job; returns its duration in ms. */
async function rawTask(ctx: BenchContext): Promise<number> {
  const started = process.hrtime.bigint();
  const container = await ctx.docker.createContainer({
    Image: BENCH_IMAGE,
    Cmd: ['true'],
    Labels: { ...ctx.labels },
    HostConfig: { NetworkMode: 'none' },
  });
  try {
    await container.start();
    const { StatusCode } = (await container.wait()) as { StatusCode: number };
    if (StatusCode !== 0) throw new Error(`a raw lifecycle task exited with ${StatusCode}`);
  } finally {
    await container.remove({ force: true, v: true });
  }
  return elapsedMs(started);
}

function runOne(ctx: BenchContext, mode: Mode): Promise<number> {
  ctx.signal.throwIfAborted();
  return mode === 'berth' ? berthTask(ctx) : rawTask(ctx);
}

/** Alternates which mode goes first (ABBA), so neither always runs on a freshly settled engine. */
const orderFor = (i: number): readonly Mode[] => (i % 2 === 0 ? ['berth', 'raw'] : ['raw', 'berth']);

function summary(ms: readonly number[]): { medianMs: number; p90Ms: number } {
  return { medianMs: round(median(ms)), p90Ms: round(quantile(ms, 0.9)) };
}

async function sequential(ctx: BenchContext, engine: EngineName): Promise<{ medianMs: number; p90Ms: number }> {
  const n = scaled(ctx, 30, 2);
  const warmup = 3;
  ctx.progress(`lifecycle/sequential: ${warmup} warm-up and ${n} measured tasks of each`);
  for (let i = 0; i < warmup; i++) for (const mode of orderFor(i)) await runOne(ctx, mode);
  const times: Record<Mode, number[]> = { berth: [], raw: [] };
  for (let i = 0; i < n; i++) {
    for (const mode of orderFor(i)) times[mode].push(await runOne(ctx, mode));
    if ((i + 1) % 10 === 0) ctx.progress(`lifecycle/sequential: ${i + 1}/${n}`);
  }
  const berth = summary(times.berth);
  const raw = summary(times.raw);
  const ratio = round(berth.medianMs / raw.medianMs, 3);
  ctx.emit({
    case: 'lifecycle.sequential',
    engine,
    tasks: n,
    berth,
    raw,
    ratio,
    ratioP90: round(berth.p90Ms / raw.p90Ms, 3),
    pairedRatio: round(pairedRatio(times.berth, times.raw), 3),
    target: { field: 'ratio', max: TARGET_MAX_RATIO },
    pass: ratio <= TARGET_MAX_RATIO,
  });
  return raw;
}

/**
 * Runs batches of tasks with at most CONCURRENCY in flight, alternating berth and raw batches. Each
 * batch is twice the concurrency, so the pool is full most of its time in either mode.
 */
async function concurrent(ctx: BenchContext, engine: EngineName): Promise<{ medianMs: number; tasksPerSec: number }> {
  const total = scaled(ctx, 48, CONCURRENCY);
  const batchSize = CONCURRENCY * 2;
  const batches = Math.max(1, Math.round(total / batchSize));
  ctx.progress(`lifecycle/concurrent: ${batches} batches of ${batchSize} per mode, ${CONCURRENCY} in flight`);
  interface Measured {
    ms: number[];
    wallMs: number;
    batchWallMs: number[];
  }
  const batch = async (mode: Mode, size: number, into?: Measured): Promise<void> => {
    const started = process.hrtime.bigint();
    await runPool(
      Array.from({ length: size }, (_, i) => i),
      CONCURRENCY,
      async () => {
        const ms = await runOne(ctx, mode);
        into?.ms.push(ms);
      },
    );
    if (into) {
      const wallMs = elapsedMs(started);
      into.wallMs += wallMs;
      into.batchWallMs.push(wallMs);
    }
  };
  for (const mode of orderFor(0)) await batch(mode, CONCURRENCY);
  const measured: Record<Mode, Measured> = { berth: { ms: [], wallMs: 0, batchWallMs: [] }, raw: { ms: [], wallMs: 0, batchWallMs: [] } };
  for (let i = 0; i < batches; i++) {
    for (const mode of orderFor(i)) await batch(mode, batchSize, measured[mode]);
    ctx.progress(`lifecycle/concurrent: batch ${i + 1}/${batches}`);
  }
  const describe = (m: Measured) => ({
    ...summary(m.ms),
    wallMs: round(m.wallMs),
    tasksPerSec: round((m.ms.length / m.wallMs) * 1000, 2),
  });
  const berth = describe(measured.berth);
  const raw = describe(measured.raw);
  const ratio = round(berth.medianMs / raw.medianMs, 3);
  // raw tasks/s over berth tasks/s: like `ratio`, above 1 means berth is slower.
  const ratioThroughput = round(raw.tasksPerSec / berth.tasksPerSec, 3);
  ctx.emit({
    case: 'lifecycle.concurrent',
    engine,
    tasks: batches * batchSize,
    concurrency: CONCURRENCY,
    berth,
    raw,
    ratio,
    ratioThroughput,
    pairedRatioThroughput: round(pairedRatio(measured.berth.batchWallMs, measured.raw.batchWallMs), 3),
    // With the engine saturated, a task's latency is mostly its wait in the engine's queue; what
    // berth can cost is throughput, so the target applies to it.
    target: { field: 'ratioThroughput', max: TARGET_MAX_RATIO },
    pass: ratioThroughput <= TARGET_MAX_RATIO,
  });
  return { medianMs: raw.medianMs, tasksPerSec: raw.tasksPerSec };
}

/** The bench's context on Podman, when Podman answers; undefined otherwise (the Podman half is then left out, and said so). */
async function podmanContext(ctx: BenchContext): Promise<BenchContext | undefined> {
  const engine = new Engine({ socketPath: PODMAN_SOCKET, readAttempts: 1 });
  try {
    await engine.ping({ deadlineMs: 2000 });
    // Podman's /info takes a second or more (it measures its storage): no short deadline here.
    await engine.checkCompatible();
  } catch {
    ctx.progress(`lifecycle: no Podman answers at ${PODMAN_SOCKET}; Docker only`);
    return undefined;
  }
  return { ...ctx, engine, driver: new TaskDriver({ engine, ownerId: 'berth-bench' }), docker: new Dockerode({ socketPath: PODMAN_SOCKET }) };
}

export async function benchLifecycle(ctx: BenchContext): Promise<void> {
  const docker = { sequential: await sequential(ctx, 'docker'), concurrent: await concurrent(ctx, 'docker') };
  const onPodman = await podmanContext(ctx);
  if (onPodman === undefined) return;
  try {
    const podman = { sequential: await sequential(onPodman, 'podman'), concurrent: await concurrent(onPodman, 'podman') };
    // The engines' own costs side by side (raw API, same tasks, same host): what each engine costs, not berth.
    ctx.emit({
      case: 'lifecycle.engines',
      raw: {
        sequentialMedianMs: { docker: docker.sequential.medianMs, podman: podman.sequential.medianMs },
        concurrentTasksPerSec: { docker: docker.concurrent.tasksPerSec, podman: podman.concurrent.tasksPerSec },
      },
      podmanOverDocker: round(podman.sequential.medianMs / docker.sequential.medianMs, 3),
    });
  } finally {
    await removeRunContainers(onPodman.docker, ctx.runId);
  }
}
