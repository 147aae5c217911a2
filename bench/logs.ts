/**
 * `logs`: a task writing 256 MiB to stdout, read through berth (start, consume handle.stdout, wait,
 * destroy) versus raw dockerode (attach before start, docker-modem's demuxStream), per log driver.
 * Throughput is measured from the start request to the end of the output stream, so both sides pay
 * the same engine costs; berth's peak RSS growth is sampled while its task runs.
 */
import diagnostics from 'node:diagnostics_channel';
import { Writable, type Readable } from 'node:stream';
import type { TaskSpec } from '../src/spec/index.js';
import { describeEndState, TASK_PHASE_CHANNEL, type PhaseChange } from '../src/tasks/index.js';
import { BENCH_IMAGE, cpuMsSince, median, MIB, pairedRatio, round, RssSampler, scaled, type BenchContext } from './support.js';

const OUTPUT_MIB = 256;
const OUTPUT_BYTES = OUTPUT_MIB * MIB;
const COMMAND = ['dd', 'if=/dev/zero', 'bs=1M', `count=${OUTPUT_MIB}`];
/** berth's throughput must be at least 90 % of the raw engine's. */
const TARGET_MIN_RATIO = 0.9;
/** Reading 256 MiB must not cost berth more than this much memory: backpressure, not buffering. */
const TARGET_MAX_RSS_MIB = 64;

type LogDriver = 'local' | 'json-file' | 'none';
const LOG_DRIVERS: readonly LogDriver[] = ['local', 'json-file', 'none'];

/** The engine log configuration berth's spec translation produces for `{ driver, maxSize: '1m' }`. */
function rawLogConfig(driver: LogDriver): { Type: LogDriver; Config: Record<string, string> } {
  if (driver === 'none') return { Type: 'none', Config: {} };
  const config: Record<string, string> = { 'max-size': '1m', 'max-file': '1' };
  if (driver === 'local') config.compress = 'false';
  return { Type: driver, Config: config };
}

interface Measurement {
  /** From the start request to the end of stdout. */
  ms: number;
  /** From the first stdout byte to the end of stdout: the streaming part alone. */
  streamMs: number;
  /** This process's CPU time from the start request to the end of stdout. */
  cpuMs: number;
  stdoutBytes: number;
  stderrBytes: number;
}

function checkBytes(who: string, m: Measurement): void {
  if (m.stdoutBytes !== OUTPUT_BYTES) {
    throw new Error(`${who} read ${m.stdoutBytes} bytes of stdout; the task wrote exactly ${OUTPUT_BYTES}`);
  }
}

/** Counts a readable's bytes; resolves at its end with the count and when the first byte came. */
function countReadable(stream: Readable): Promise<{ bytes: number; firstByteNs: bigint | undefined; endNs: bigint }> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    let firstByteNs: bigint | undefined;
    stream.on('data', (chunk: Buffer) => {
      firstByteNs ??= process.hrtime.bigint();
      bytes += chunk.length;
    });
    stream.once('error', reject);
    stream.once('end', () => resolve({ bytes, firstByteNs, endNs: process.hrtime.bigint() }));
  });
}

async function berthRun(ctx: BenchContext, driver: LogDriver): Promise<Measurement & { peakRssGrowthMib: number }> {
  const taskId = ctx.nextTaskId(`logs-${driver}`);
  const spec: TaskSpec = { image: BENCH_IMAGE, command: COMMAND, network: 'none', labels: { ...ctx.labels }, log: { driver, maxSize: '1m' } };
  // The handle is born "starting" right after attach and right before the start request.
  let startNs: bigint | undefined;
  let startCpu: NodeJS.CpuUsage | undefined;
  const onPhase = (message: unknown): void => {
    const change = message as PhaseChange;
    if (change.taskId === taskId && change.from === undefined && change.to === 'starting') {
      startNs = process.hrtime.bigint();
      startCpu = process.cpuUsage();
    }
  };
  const rss = new RssSampler(20);
  diagnostics.subscribe(TASK_PHASE_CHANNEL.name, onPhase);
  try {
    ctx.signal.throwIfAborted();
    // An abort stops the task, which ends its output.
    const handle = await ctx.driver.start(spec, { taskId, signal: ctx.signal });
    try {
      const [out, err] = await Promise.all([countReadable(handle.stdout), countReadable(handle.stderr)]);
      ctx.signal.throwIfAborted();
      const cpuMs = cpuMsSince(startCpu ?? process.cpuUsage());
      const end = await handle.wait();
      if (end.kind !== 'success') throw new Error(`the berth logs task did not succeed: ${describeEndState(end)}`);
      if (startNs === undefined || out.firstByteNs === undefined) throw new Error('the berth logs task produced no output');
      const m = {
        ms: Number(out.endNs - startNs) / 1e6,
        streamMs: Number(out.endNs - out.firstByteNs) / 1e6,
        cpuMs,
        stdoutBytes: out.bytes,
        stderrBytes: err.bytes,
      };
      checkBytes('berth', m);
      return { ...m, peakRssGrowthMib: rss.stop() };
    } finally {
      await handle.destroy();
    }
  } finally {
    diagnostics.unsubscribe(TASK_PHASE_CHANNEL.name, onPhase);
    // Stops the sampler on the failure paths too; a second stop is harmless.
    rss.stop();
  }
}

async function rawRun(ctx: BenchContext, driver: LogDriver): Promise<Measurement> {
  ctx.signal.throwIfAborted();
  const container = await ctx.docker.createContainer({
    Image: BENCH_IMAGE,
    Cmd: COMMAND,
    Labels: { ...ctx.labels },
    AttachStdout: true,
    AttachStderr: true,
    HostConfig: { NetworkMode: 'none', LogConfig: rawLogConfig(driver) },
  });
  try {
    const stream = (await container.attach({ stream: true, stdout: true, stderr: true })) as unknown as Readable;
    let stdoutBytes = 0;
    let stderrBytes = 0;
    let firstByteNs: bigint | undefined;
    const counter = (add: (n: number) => void): Writable =>
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          add(chunk.length);
          callback();
        },
      });
    (ctx.docker.modem as { demuxStream(s: Readable, out: Writable, err: Writable): void }).demuxStream(
      stream,
      counter((n) => {
        firstByteNs ??= process.hrtime.bigint();
        stdoutBytes += n;
      }),
      counter((n) => (stderrBytes += n)),
    );
    const ended = new Promise<bigint>((resolve, reject) => {
      stream.once('error', reject);
      stream.once('end', () => resolve(process.hrtime.bigint()));
    });
    const kill = (): void => void container.kill().catch(() => undefined);
    ctx.signal.addEventListener('abort', kill, { once: true });
    const startNs = process.hrtime.bigint();
    const startCpu = process.cpuUsage();
    await container.start();
    const endNs = await ended.finally(() => ctx.signal.removeEventListener('abort', kill));
    ctx.signal.throwIfAborted();
    const cpuMs = cpuMsSince(startCpu);
    const { StatusCode } = (await container.wait()) as { StatusCode: number };
    if (StatusCode !== 0) throw new Error(`the raw logs task exited with ${StatusCode}`);
    if (firstByteNs === undefined) throw new Error('the raw logs task produced no output');
    const m = { ms: Number(endNs - startNs) / 1e6, streamMs: Number(endNs - firstByteNs) / 1e6, cpuMs, stdoutBytes, stderrBytes };
    checkBytes('raw dockerode', m);
    return m;
  } finally {
    await container.remove({ force: true, v: true });
  }
}

const mibPerSec = (ms: number): number => OUTPUT_MIB / (ms / 1000);

export async function benchLogs(ctx: BenchContext): Promise<void> {
  const repeats = scaled(ctx, 3, 1);
  for (const driver of LOG_DRIVERS) {
    ctx.progress(`logs/${driver}: ${repeats} pairs of ${OUTPUT_MIB} MiB`);
    const berth: Array<Measurement & { peakRssGrowthMib: number }> = [];
    const raw: Measurement[] = [];
    for (let i = 0; i < repeats; i++) {
      // Alternate which goes first, so page cache and engine state favour neither.
      if (i % 2 === 0) {
        berth.push(await berthRun(ctx, driver));
        raw.push(await rawRun(ctx, driver));
      } else {
        raw.push(await rawRun(ctx, driver));
        berth.push(await berthRun(ctx, driver));
      }
      ctx.progress(
        `logs/${driver}: pair ${i + 1}: berth ${round(mibPerSec(berth.at(-1)!.ms))} MiB/s, raw ${round(mibPerSec(raw.at(-1)!.ms))} MiB/s`,
      );
    }
    const describe = (ms: Measurement[]) => ({
      mibPerSec: round(mibPerSec(median(ms.map((m) => m.ms)))),
      streamMibPerSec: round(mibPerSec(median(ms.map((m) => m.streamMs)))),
      medianMs: round(median(ms.map((m) => m.ms))),
      cpuMs: round(median(ms.map((m) => m.cpuMs))),
      stdoutBytes: ms[0]!.stdoutBytes,
    });
    const b = describe(berth);
    const r = describe(raw);
    // Pairs run back to back, so the median of their ratios cancels the drift of an engine shared
    // with other work; the ratio of the medians is printed too. Throughput ratio = raw time / berth time.
    const ratio = round(pairedRatio(raw.map((m) => m.ms), berth.map((m) => m.ms)), 3);
    const peakRssGrowthMib = round(Math.max(...berth.map((m) => m.peakRssGrowthMib)));
    ctx.emit({
      case: `logs.${driver}`,
      outputMib: OUTPUT_MIB,
      repeats,
      berth: { ...b, peakRssGrowthMib },
      raw: r,
      ratio,
      ratioOfMedians: round(b.mibPerSec / r.mibPerSec, 3),
      streamRatio: round(pairedRatio(raw.map((m) => m.streamMs), berth.map((m) => m.streamMs)), 3),
      target: { ratio: { field: 'ratio', min: TARGET_MIN_RATIO }, rss: { field: 'berth.peakRssGrowthMib', max: TARGET_MAX_RSS_MIB } },
      pass: ratio >= TARGET_MIN_RATIO && peakRssGrowthMib < TARGET_MAX_RSS_MIB,
    });
  }
}
