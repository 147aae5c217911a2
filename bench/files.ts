/**
 * `files` (upload half): a 100 MiB tar archive copied into a running task through a real agent
 * process (`PUT /v1/tasks/:id/archive`, AgentClient.copyIn: streamed to the agent, then to the
 * engine) against the engine's own archive endpoint (dockerode `container.putArchive`) in the same
 * run, alternating (ABBA), as a paired ratio (target <= 1.2); and the same archive uploaded for a
 * later task (`POST /v1/uploads`, streamed to the data directory), timed alongside. The agent's
 * peak RSS growth (VmHWM of /proc/<pid>/status) over the uploads and copies is reported (it must
 * stay within a few MiB: the archive is never held in its memory). The archive is generated as it
 * is sent (a file of zeros), so the bench itself holds no 100 MiB either. The download half is
 * bench/files-download.ts (files-out); the lead wires both into the `files` case.
 *
 * Runnable alone (`node --import tsx bench/files.ts`) or from bench/run.ts, which passes its context.
 */
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { stackOf } from '../src/common/errors.js';
import { tarEnd, tarHeader, tarPadding } from '../src/tasks/tar.js';
import { withAgentTask } from './agent-task.js';
import { type CaseContext, elapsedMs, MIB, pairedRatio, round, standaloneContext } from './support.js';

const ARCHIVE_BYTES = 100 * MIB;
const ROUNDS = 6;
const TARGET_MAX_RATIO = 1.2;

/** A tar stream of one file of `size` zero bytes, made as it is read. */
function zeroArchive(name: string, size: number): Readable {
  const chunk = Buffer.alloc(MIB);
  async function* blocks(): AsyncGenerator<Buffer> {
    yield tarHeader({ name, type: 'file', mode: 0o644, size });
    for (let left = size; left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
    yield Buffer.alloc(tarPadding(size));
    yield tarEnd();
  }
  return Readable.from(blocks(), { objectMode: false });
}

async function peakRss(pid: number): Promise<number> {
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmHWM for process ${pid}`);
  return Number(match[1]) * 1024;
}

async function timed(work: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await work();
  return elapsedMs(start);
}

export async function benchFilesUpload(context?: CaseContext): Promise<void> {
  const ctx: CaseContext = context ?? standaloneContext();
  await withAgentTask(ctx, { name: 'files', command: ['sleep', '3600'], config: ['files: {uploadMaxSize: 1g}'] }, async ({ agent, client, taskId, container, agentEntry }) => {
    const rounds = Math.max(2, Math.round(ROUNDS * ctx.scale));
    ctx.progress(`files: ${rounds} rounds of a ${ARCHIVE_BYTES / MIB} MiB archive into a running task, raw putArchive and through the agent, and an upload`);
    // Warm-up: one of each.
    await container.putArchive(zeroArchive('raw', ARCHIVE_BYTES), { path: '/tmp' });
    await client.copyIn(taskId, '/tmp', zeroArchive('agent', ARCHIVE_BYTES));
    const hwmBefore = await peakRss(agent.pid);
    const raw: number[] = [];
    const viaAgent: number[] = [];
    const upload: number[] = [];
    for (let i = 0; i < rounds && !ctx.signal?.aborted; i++) {
      const ways = [
        async () => raw.push(await timed(() => container.putArchive(zeroArchive('raw', ARCHIVE_BYTES), { path: '/tmp' }))),
        async () => viaAgent.push(await timed(() => client.copyIn(taskId, '/tmp', zeroArchive('agent', ARCHIVE_BYTES)))),
      ];
      if (i % 2 === 1) ways.reverse();
      for (const way of ways) await way();
      upload.push(await timed(() => client.upload(zeroArchive('upload', ARCHIVE_BYTES))));
    }
    const rssGrowth = (await peakRss(agent.pid)) - hwmBefore;
    const ratio = round(pairedRatio(viaAgent, raw), 3);
    const mibPerSecond = (ms: number[]): number => round((ARCHIVE_BYTES / MIB) / (ms.reduce((a, b) => a + b, 0) / ms.length / 1000), 1);
    ctx.emit({
      case: 'files',
      half: 'upload',
      rounds: raw.length,
      archiveMiB: ARCHIVE_BYTES / MIB,
      agentEntry,
      rawPutArchiveMiBps: mibPerSecond(raw),
      agentCopyInMiBps: mibPerSecond(viaAgent),
      agentUploadMiBps: mibPerSecond(upload),
      copyInRatio: ratio,
      agentPeakRssGrowthMiB: round(rssGrowth / MIB, 2),
      targetMaxRatio: TARGET_MAX_RATIO,
      meetsTarget: ratio <= TARGET_MAX_RATIO,
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  benchFilesUpload().catch((error: unknown) => {
    process.stderr.write(`bench files: ${stackOf(error)}\n`);
    process.exitCode = 1;
  });
}
