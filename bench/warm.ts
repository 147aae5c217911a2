/**
 * `warm`: submit-to-first-output of pooled (warm) tasks against cold tasks of the same spec (`echo
 * hi`, network none) through the library's driver, and against the raw engine (create, attach,
 * start with dockerode, until the first output byte), interleaved in the same run so that engine
 * drift hits every mode equally. Warm tasks are measured from a pool that holds an idle container
 * (the refill after each take is waited for, outside the measure), running and frozen (thawed
 * when taken). Then the CPU a frozen pool of 10 containers uses over a few seconds, read from the
 * engine's stats (the cgroups' cpu usage), next to the same pool idle and not frozen.
 *
 * The agent half (the same through a real agent) is left to the caller: `interleavedLatencies`
 * and `latencySummary` take any set of modes.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { PoolDefinition } from '../src/pools/types.js';
import type { TaskSpec } from '../src/spec/schema.js';
import { TaskDriver } from '../src/tasks/driver.js';
import { BENCH_IMAGE, elapsedMs, quantile, round, scaled, type BenchContext } from './support.js';

/** The target: the warm p50 at most a quarter of the cold p50. */
const TARGET_MAX_WARM_COLD_RATIO = 0.25;
const FROZEN_POOL_SIZE = 10;
const CPU_WINDOW_MS = 5000;

/** One measured start: resolves with the milliseconds from submit to the first output byte. */
export type LatencyProbe = () => Promise<number>;

/**
 * Runs each mode's probe `n` times (after `warmup` unmeasured rounds), the order of the modes
 * rotated each round so that none always runs first on a settled engine. `between` runs after each
 * probe, outside the measure (a pool's refill).
 */
export async function interleavedLatencies<M extends string>(
  ctx: Pick<BenchContext, 'signal' | 'progress'>,
  probes: Readonly<Record<M, LatencyProbe>>,
  options: { n: number; warmup: number; label: string; between?: (mode: M) => Promise<void> },
): Promise<Record<M, number[]>> {
  const modes = Object.keys(probes) as M[];
  const times = Object.fromEntries(modes.map((mode) => [mode, [] as number[]])) as unknown as Record<M, number[]>;
  for (let round = 0; round < options.warmup + options.n; round++) {
    const order = modes.map((_, i) => modes[(i + round) % modes.length]!);
    for (const mode of order) {
      ctx.signal.throwIfAborted();
      const ms = await probes[mode]();
      if (round >= options.warmup) times[mode].push(ms);
      await options.between?.(mode);
    }
    if (round >= options.warmup && (round - options.warmup + 1) % 10 === 0) ctx.progress(`${options.label}: ${round - options.warmup + 1}/${options.n}`);
  }
  return times;
}

/** p50 and p99 of a mode's times. */
export function latencySummary(ms: readonly number[]): { p50Ms: number; p99Ms: number } {
  return { p50Ms: round(quantile(ms, 0.5)), p99Ms: round(quantile(ms, 0.99)) };
}

/** A start through the driver until its first stdout byte; the task is then waited for and destroyed, outside the measure. */
async function driverProbe(driver: TaskDriver, spec: TaskSpec, pool: boolean, expectWarm: boolean): Promise<number> {
  const started = process.hrtime.bigint();
  const handle = await driver.start(spec, { pool });
  try {
    await new Promise<void>((resolve, reject) => {
      handle.stdout.once('data', () => resolve());
      handle.stdout.once('error', reject);
      handle.stdout.once('end', () => reject(new Error('the task ended without output')));
    });
    const ms = elapsedMs(started);
    if ((handle.startPath.kind === 'warm') !== expectWarm) throw new Error(`a bench task started ${JSON.stringify(handle.startPath)}, expected ${expectWarm ? 'warm' : 'cold'}`);
    handle.stdout.resume();
    handle.stderr.resume();
    const end = await handle.wait();
    if (end.kind !== 'success') throw new Error(`a bench task ended ${end.kind}`);
    return ms;
  } finally {
    await handle.destroy();
  }
}

/** The raw engine's fastest way to a new container's first output: create with stdout attached, attach, start. */
async function rawProbe(ctx: BenchContext): Promise<number> {
  const started = process.hrtime.bigint();
  const container = await ctx.docker.createContainer({ Image: BENCH_IMAGE, Cmd: ['echo', 'hi'], AttachStdout: true, AttachStderr: true, Labels: { ...ctx.labels }, HostConfig: { NetworkMode: 'none' } });
  try {
    const stream = (await container.attach({ stream: true, stdout: true, stderr: true })) as NodeJS.ReadableStream;
    const first = new Promise<void>((resolve) => stream.once('data', () => resolve()));
    await container.start();
    await first;
    const ms = elapsedMs(started);
    stream.resume();
    await container.wait();
    return ms;
  } finally {
    await container.remove({ force: true, v: true });
  }
}

/** Waits until every pool of the driver holds its target of idle (or frozen) containers. */
async function poolsFilled(driver: TaskDriver, frozen: boolean, signal: AbortSignal): Promise<void> {
  for (;;) {
    signal.throwIfAborted();
    if (driver.pools.snapshot().every((pool) => (frozen ? pool.frozen : pool.idle + pool.frozen) >= pool.target && pool.starting === 0)) return;
    await sleep(10);
  }
}

/** The CPU (ms) the containers used over the window, from the engine's stats (their cgroups' cpu usage counters). */
async function cpuUsedMs(ctx: BenchContext, containerIds: readonly string[], windowMs: number): Promise<number> {
  const usage = async (): Promise<number> => {
    const samples = await Promise.all(containerIds.map(async (id) => ((await ctx.docker.getContainer(id).stats({ stream: false })) as { cpu_stats: { cpu_usage: { total_usage: number } } }).cpu_stats.cpu_usage.total_usage));
    return samples.reduce((sum, ns) => sum + ns, 0);
  };
  const before = await usage();
  await sleep(windowMs);
  const after = await usage();
  return round((after - before) / 1e6, 3);
}

async function idleCpu(ctx: BenchContext): Promise<{ frozenCpuMs: number; idleCpuMs: number }> {
  const spec: TaskSpec = { image: BENCH_IMAGE, network: 'none', labels: { ...ctx.labels } };
  const measure = async (freezeAfterMs: number | undefined): Promise<number> => {
    const pools: PoolDefinition[] = [{ name: 'cpu', spec, size: FROZEN_POOL_SIZE, ...(freezeAfterMs === undefined ? {} : { freezeAfterMs }) }];
    const driver = new TaskDriver({ engine: ctx.engine, ownerId: `berth-bench-${ctx.runId}-cpu`, pools });
    try {
      await driver.pools.start();
      await poolsFilled(driver, freezeAfterMs !== undefined, ctx.signal);
      return await cpuUsedMs(ctx, [...driver.pools.containerIds()], CPU_WINDOW_MS);
    } finally {
      await driver.pools.close();
    }
  };
  return { frozenCpuMs: await measure(0), idleCpuMs: await measure(undefined) };
}

export async function benchWarm(ctx: BenchContext): Promise<void> {
  const n = scaled(ctx, 40, 5);
  const spec: TaskSpec = { image: BENCH_IMAGE, command: ['echo', 'hi'], network: 'none', labels: { ...ctx.labels } };
  const poolSpec: TaskSpec = { image: BENCH_IMAGE, network: 'none', labels: { ...ctx.labels } };
  const running = new TaskDriver({ engine: ctx.engine, ownerId: `berth-bench-${ctx.runId}-warm`, pools: [{ name: 'warm', spec: poolSpec, size: 1 }] });
  const frozen = new TaskDriver({ engine: ctx.engine, ownerId: `berth-bench-${ctx.runId}-frozen`, pools: [{ name: 'frozen', spec: poolSpec, size: 1, freezeAfterMs: 0 }] });
  ctx.progress(`warm: 2 warm-up and ${n} measured starts of each mode (warm, warm-frozen, cold, raw)`);
  try {
    await running.pools.start();
    await frozen.pools.start();
    await poolsFilled(running, false, ctx.signal);
    await poolsFilled(frozen, true, ctx.signal);
    const times = await interleavedLatencies(
      ctx,
      {
        warm: () => driverProbe(running, spec, true, true),
        warmFrozen: () => driverProbe(frozen, spec, true, true),
        cold: () => driverProbe(running, spec, false, false),
        raw: () => rawProbe(ctx),
      },
      {
        n,
        warmup: 2,
        label: 'warm',
        // Each warm start finds an idle container: the refill (and freeze) is waited for, outside the measure.
        between: async (mode) => {
          if (mode === 'warm') await poolsFilled(running, false, ctx.signal);
          if (mode === 'warmFrozen') await poolsFilled(frozen, true, ctx.signal);
        },
      },
    );
    const warm = latencySummary(times.warm);
    const warmFrozen = latencySummary(times.warmFrozen);
    const cold = latencySummary(times.cold);
    const raw = latencySummary(times.raw);
    ctx.progress('warm: CPU of a frozen pool of 10 containers');
    const cpu = await idleCpu(ctx);
    const ratioWarmCold = round(warm.p50Ms / cold.p50Ms, 3);
    ctx.emit({
      case: 'warm',
      tasks: n,
      measure: 'submit to first output byte, through the library',
      warm,
      warmFrozen,
      cold,
      raw,
      ratioWarmCold,
      ratioWarmColdP99: round(warm.p99Ms / cold.p99Ms, 3),
      ratioWarmFrozenCold: round(warmFrozen.p50Ms / cold.p50Ms, 3),
      ratioWarmRaw: round(warm.p50Ms / raw.p50Ms, 3),
      ratioColdRaw: round(cold.p50Ms / raw.p50Ms, 3),
      frozenPool: { containers: FROZEN_POOL_SIZE, windowMs: CPU_WINDOW_MS, frozenCpuMs: cpu.frozenCpuMs, idleNotFrozenCpuMs: cpu.idleCpuMs },
      target: { field: 'ratioWarmCold', max: TARGET_MAX_WARM_COLD_RATIO },
      pass: ratioWarmCold <= TARGET_MAX_WARM_COLD_RATIO,
    });
  } finally {
    await running.pools.close();
    await frozen.pools.close();
  }
}
