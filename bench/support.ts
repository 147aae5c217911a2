/**
 * Shared plumbing for `npm run bench`: one labelled run, a berth driver and a raw dockerode client
 * on the same engine, statistics, the RSS sampler, and clean-up by label.
 *
 * A case is a function of a {@link BenchContext} that calls `ctx.emit` once per result line. stdout
 * carries those JSON lines and nothing else; progress goes to stderr through `ctx.progress`.
 */
import { randomUUID } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import Dockerode from 'dockerode';
import { Engine } from '../src/engine/engine.js';
import { TaskDriver } from '../src/tasks/index.js';

/** Every container a bench run creates carries this label, with the run's id as value. */
export const BENCH_LABEL = 'berth.bench.run';

/** The image every case runs; `scripts/test-engine.sh` makes sure it exists. */
export const BENCH_IMAGE = 'berth-test/busybox:latest';

export const MIB = 1024 * 1024;

export interface BenchContext {
  /** Unique per run: the value of {@link BENCH_LABEL} and a prefix of every task id. */
  runId: string;
  /** Labels to put on every container created outside berth (berth specs take them as `labels`). */
  labels: Readonly<Record<string, string>>;
  engine: Engine;
  driver: TaskDriver;
  /** The raw client the berth numbers are compared against. */
  docker: Dockerode;
  /** Multiplies every case's default counts (env BENCH_N). Default 1. */
  scale: number;
  /** Aborted on SIGINT/SIGTERM: cases start no new task, and stop the ones under way. */
  signal: AbortSignal;
  /** A task id unique within the run, e.g. `nextTaskId('lc')`. */
  nextTaskId(prefix: string): string;
  /** Prints one result as one JSON line on stdout. */
  emit(result: Record<string, unknown>): void;
  /** A progress line on stderr. */
  progress(message: string): void;
}

export function createContext(scale: number, signal: AbortSignal): BenchContext {
  const runId = `${Date.now().toString(36)}-${randomUUID().slice(0, 8)}`;
  let taskCounter = 0;
  const engine = new Engine();
  return {
    runId,
    labels: Object.freeze({ [BENCH_LABEL]: runId }),
    engine,
    driver: new TaskDriver({ engine, ownerId: 'berth-bench' }),
    docker: new Dockerode({ socketPath: '/var/run/docker.sock' }),
    scale,
    signal,
    nextTaskId: (prefix) => `bench-${runId}-${prefix}-${++taskCounter}`,
    emit: (result) => void process.stdout.write(`${JSON.stringify(result)}\n`),
    progress: (message) => void process.stderr.write(`bench: ${message}\n`),
  };
}

/** What a case that can also run on its own needs of bench/run.ts's context (which has more). */
export interface CaseContext {
  runId: string;
  scale: number;
  /** Aborted on SIGINT/SIGTERM: the case starts nothing new and cleans up. */
  signal?: AbortSignal;
  /** The raw client; default one on /var/run/docker.sock. */
  docker?: Dockerode;
  emit(result: Record<string, unknown>): void;
  progress(message: string): void;
}

/** What a case run on its own (`node --import tsx bench/<case>.ts`) gets instead of bench/run.ts's context. */
export interface StandaloneContext {
  runId: string;
  /** BENCH_N, as under bench/run.ts. */
  scale: number;
  /** Aborted on the first SIGINT/SIGTERM, so that the case cleans up; a second one exits at once. */
  signal: AbortSignal;
  emit(result: Record<string, unknown>): void;
  progress(message: string): void;
}

export function standaloneContext(): StandaloneContext {
  const interrupt = new AbortController();
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (interrupt.signal.aborted) process.exit(130);
      interrupt.abort(new Error(`interrupted by ${signal}`));
    });
  }
  return {
    runId: `${Date.now().toString(36)}-${randomUUID().slice(0, 8)}`,
    scale: Number(process.env.BENCH_N) > 0 ? Number(process.env.BENCH_N) : 1,
    signal: interrupt.signal,
    emit: (result) => void process.stdout.write(`${JSON.stringify(result)}\n`),
    progress: (message) => void process.stderr.write(`bench: ${message}\n`),
  };
}

/** Scales a default count by BENCH_N, never below `minimum`. */
export function scaled(ctx: BenchContext, count: number, minimum = 1): number {
  return Math.max(minimum, Math.round(count * ctx.scale));
}

/** Force-removes every container of this run; returns how many there were. */
export async function removeRunContainers(docker: Dockerode, runId: string): Promise<number> {
  return removeLabelledContainers(docker, `${BENCH_LABEL}=${runId}`);
}

/** Force-removes every container carrying `label` (`key=value`), e.g. an agent's owner id; resolves with how many there were. */
export async function removeLabelledContainers(docker: Dockerode, label: string): Promise<number> {
  const rows = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [label] }) });
  await Promise.all(
    rows.map(async (row) => {
      try {
        await docker.getContainer(row.Id).remove({ force: true, v: true });
      } catch (error) {
        // 404 (already gone) and 409 (removal in progress) both end with the container gone.
        const status = (error as { statusCode?: number }).statusCode;
        if (status !== 404 && status !== 409) throw error;
      }
    }),
  );
  return rows.length;
}

export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  // Linear interpolation between closest ranks, as numpy's default.
  const position = (sorted.length - 1) * q;
  const below = Math.floor(position);
  const above = Math.ceil(position);
  return sorted[below]! + (sorted[above]! - sorted[below]!) * (position - below);
}

export const median = (values: readonly number[]): number => quantile(values, 0.5);

/** Rounds for printing: timings to 0.1 ms, ratios to 0.001. */
export const round = (value: number, digits = 1): number => Number(value.toFixed(digits));

export function elapsedMs(startNs: bigint): number {
  return Number(process.hrtime.bigint() - startNs) / 1e6;
}

/** CPU time (user + system) this process spent since `since`, in ms. */
export function cpuMsSince(since: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1000;
}

/** The median of berth/raw over pairs run back to back: drift between pairs cancels out. */
export function pairedRatio(berth: readonly number[], raw: readonly number[]): number {
  return median(berth.map((b, i) => b / raw[i]!));
}

// A full collection before a memory baseline keeps garbage of earlier runs out of the next one's growth.
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

/**
 * Samples the process's RSS every `intervalMs` until stopped; reports the peak growth over the
 * baseline taken at construction. A sample is also taken on stop, so a short run is not missed.
 */
export class RssSampler {
  readonly #baselineBytes: number;
  #peakBytes: number;
  readonly #timer: NodeJS.Timeout;

  constructor(intervalMs = 20) {
    collectGarbage();
    this.#baselineBytes = process.memoryUsage.rss();
    this.#peakBytes = this.#baselineBytes;
    this.#timer = setInterval(() => this.#sample(), intervalMs);
  }

  #sample(): void {
    this.#peakBytes = Math.max(this.#peakBytes, process.memoryUsage.rss());
  }

  /** Stops sampling and returns the peak growth in MiB. */
  stop(): number {
    clearInterval(this.#timer);
    this.#sample();
    return (this.#peakBytes - this.#baselineBytes) / MIB;
  }
}

/**
 * Runs `work` over `items` with at most `concurrency` in flight. After a failure no new item starts,
 * and the first error is thrown only once the items under way have settled, so a clean-up that
 * follows does not race containers still being created.
 */
export async function runPool<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (next < items.length && !failure) {
      const item = items[next++]!;
      try {
        await work(item);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  if (failure) throw failure.error;
}
