/**
 * `files-download`: a 100 MiB download through a real `berth agent` process (GET
 * /v1/tasks/:id/archive of a running task holding a 100 MiB file, read to the end by the
 * AgentClient) against the engine's own archive endpoint (dockerode `getArchive`) for the same
 * path of the same container in the same run. Rounds alternate which goes first; the ratio is the
 * median of the per-round ratios. Target: at most 1.2. The lead wires `benchFilesDownload` into the
 * `files` case beside the upload half; registered alone as `files-download` in bench/run.ts.
 *
 * Runnable alone (`node --import tsx bench/files-download.ts`) or from bench/run.ts.
 */
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { AgentClient } from '../src/agent/client.js';
import type { TaskView } from '../src/agent/http/views.js';
import { stackOf } from '../src/common/errors.js';
import { withAgentTask } from './agent-task.js';
import { type CaseContext, elapsedMs, pairedRatio, quantile, round, standaloneContext } from './support.js';

const FILE_BYTES = 100 * 1024 * 1024;
const ROUNDS = 10;
const TARGET_MAX_RATIO = 1.2;

/** Reads a stream to its end; resolves with the bytes read. */
async function drain(stream: Readable | NodeJS.ReadableStream): Promise<number> {
  let bytes = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) bytes += chunk.length;
  return bytes;
}

async function timed(work: () => Promise<number>): Promise<{ ms: number; bytes: number }> {
  const start = process.hrtime.bigint();
  const bytes = await work();
  if (bytes < FILE_BYTES) throw new Error(`the download held ${bytes} bytes, less than the ${FILE_BYTES}-byte file`);
  return { ms: elapsedMs(start), bytes };
}

export async function benchFilesDownload(context?: CaseContext): Promise<void> {
  const ctx: CaseContext = context ?? standaloneContext();
  const command = `head -c ${FILE_BYTES} /dev/urandom > /data.bin && touch /ready && exec sleep 3600`;
  const ready = (client: AgentClient, task: TaskView): Promise<boolean> => client.archive(task.id, '/ready').then((s) => drain(s).then(() => true), () => false);
  await withAgentTask(ctx, { name: 'files-down', command: ['sh', '-c', command], ready, readyWithinMs: 120_000 }, async ({ client, taskId, container, agentEntry }) => {
    const ways = {
      engine: async () => drain((await container.getArchive({ path: '/data.bin' })) as unknown as Readable),
      agent: async () => drain(await client.archive(taskId, '/data.bin')),
    };
    const rounds = Math.max(3, Math.round(ROUNDS * ctx.scale));
    ctx.progress(`files-download: ${rounds} rounds of a ${FILE_BYTES / 1024 / 1024} MiB download, engine and agent (after a warm-up round)`);
    await timed(ways.engine);
    await timed(ways.agent);
    const times: { engine: number[]; agent: number[] } = { engine: [], agent: [] };
    let bytes = 0;
    for (let i = 0; i < rounds && !ctx.signal?.aborted; i++) {
      for (const way of i % 2 === 0 ? (['engine', 'agent'] as const) : (['agent', 'engine'] as const)) {
        const result = await timed(ways[way]);
        times[way].push(result.ms);
        bytes = result.bytes;
      }
    }
    const summary = (values: number[]): { p50: number; max: number } => ({ p50: round(quantile(values, 0.5), 1), max: round(Math.max(...values), 1) });
    const ratio = round(pairedRatio(times.agent, times.engine), 3);
    ctx.emit({
      case: 'files-download',
      rounds: times.engine.length,
      fileBytes: FILE_BYTES,
      tarBytes: bytes,
      agentEntry,
      engineMs: summary(times.engine),
      agentMs: summary(times.agent),
      engineMiBps: round(FILE_BYTES / 1024 / 1024 / (quantile(times.engine, 0.5) / 1000), 1),
      agentMiBps: round(FILE_BYTES / 1024 / 1024 / (quantile(times.agent, 0.5) / 1000), 1),
      ratio,
      targetMaxRatio: TARGET_MAX_RATIO,
      meetsTarget: ratio <= TARGET_MAX_RATIO,
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  benchFilesDownload().catch((error: unknown) => {
    process.stderr.write(`bench files-download: ${stackOf(error)}\n`);
    process.exitCode = 1;
  });
}
