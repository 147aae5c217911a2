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
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import Dockerode from 'dockerode';
import { AgentClient } from '../src/agent/client.js';
import { LABELS } from '../src/common/labels.js';
import { stackOf } from '../src/common/errors.js';
import { tarEnd, tarHeader, tarPadding } from '../src/tasks/tar.js';
import { startAgentProcess, type RunningAgent } from '../test/support/agent.js';
import { BENCH_IMAGE, BENCH_LABEL, type CaseContext, elapsedMs, MIB, pairedRatio, round, standaloneContext } from './support.js';

const ARCHIVE_BYTES = 100 * MIB;
const ROUNDS = 6;
const TARGET_MAX_RATIO = 1.2;
const READY_DEADLINE_MS = 120_000;

const BERTH_BIN = fileURLToPath(new URL('../bin/berth.js', import.meta.url));
const BUILT_ENTRY = fileURLToPath(new URL('../dist/cli/entry.js', import.meta.url));

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
  const docker = ctx.docker ?? new Dockerode({ socketPath: '/var/run/docker.sock' });
  const agentId = `bench-${ctx.runId}-files`;
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-bench-files-'));
  const configFile = path.join(dataDir, 'agent.yaml');
  await writeFile(configFile, [`agentId: ${agentId}`, 'images: {cleanup: false}', 'reconcile: {enabled: false}', 'files: {uploadMaxSize: 1g}', ''].join('\n'));
  const entry = process.env.BENCH_AGENT_ENTRY?.trim() || BERTH_BIN;
  let agent: RunningAgent | undefined;
  let client: AgentClient | undefined;
  try {
    agent = await startAgentProcess(dataDir, ['--config', configFile], { command: [entry], readyTimeoutMs: READY_DEADLINE_MS, ...(ctx.signal ? { signal: ctx.signal } : {}) });
    const token = (await readFile(path.join(dataDir, 'token'), 'utf8')).trim();
    client = AgentClient.connect({ host: `unix://${agent.socketPath}`, token });
    const taskId = `bench-${ctx.runId}-files`;
    await client.submit({ id: taskId, spec: { image: BENCH_IMAGE, command: ['sleep', '3600'], network: 'none', labels: { [BENCH_LABEL]: ctx.runId }, stopGracePeriod: '1s' } });
    let containerId: string | undefined;
    for (const deadline = Date.now() + 60_000; Date.now() < deadline && containerId === undefined; ) {
      const task = await client.get(taskId);
      if (task.state === 'running') containerId = task.containerId;
      else await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (containerId === undefined) throw new Error(`task ${taskId} did not run within 60 s`);
    const container = docker.getContainer(containerId);
    const agentClient = client;
    const rounds = Math.max(2, Math.round(ROUNDS * ctx.scale));
    ctx.progress(`files: ${rounds} rounds of a ${ARCHIVE_BYTES / MIB} MiB archive into a running task, raw putArchive and through the agent, and an upload`);
    // Warm-up: one of each.
    await container.putArchive(zeroArchive('raw', ARCHIVE_BYTES), { path: '/tmp' });
    await agentClient.copyIn(taskId, '/tmp', zeroArchive('agent', ARCHIVE_BYTES));
    const hwmBefore = await peakRss(agent.pid);
    const raw: number[] = [];
    const viaAgent: number[] = [];
    const upload: number[] = [];
    for (let i = 0; i < rounds && !ctx.signal?.aborted; i++) {
      const ways = [
        async () => raw.push(await timed(() => container.putArchive(zeroArchive('raw', ARCHIVE_BYTES), { path: '/tmp' }))),
        async () => viaAgent.push(await timed(() => agentClient.copyIn(taskId, '/tmp', zeroArchive('agent', ARCHIVE_BYTES)))),
      ];
      if (i % 2 === 1) ways.reverse();
      for (const way of ways) await way();
      upload.push(await timed(() => agentClient.upload(zeroArchive('upload', ARCHIVE_BYTES))));
    }
    const rssGrowth = (await peakRss(agent.pid)) - hwmBefore;
    const ratio = round(pairedRatio(viaAgent, raw), 3);
    const mibPerSecond = (ms: number[]): number => round((ARCHIVE_BYTES / MIB) / (ms.reduce((a, b) => a + b, 0) / ms.length / 1000), 1);
    ctx.emit({
      case: 'files',
      half: 'upload',
      rounds: raw.length,
      archiveMiB: ARCHIVE_BYTES / MIB,
      agentEntry: entry !== BERTH_BIN ? entry : existsSync(BUILT_ENTRY) ? 'dist' : 'tsx',
      rawPutArchiveMiBps: mibPerSecond(raw),
      agentCopyInMiBps: mibPerSecond(viaAgent),
      agentUploadMiBps: mibPerSecond(upload),
      copyInRatio: ratio,
      agentPeakRssGrowthMiB: round(rssGrowth / MIB, 2),
      targetMaxRatio: TARGET_MAX_RATIO,
      meetsTarget: ratio <= TARGET_MAX_RATIO,
    });
  } finally {
    client?.close();
    if (agent) await agent.stop();
    const rows = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`${LABELS.ownerId}=${agentId}`] }) }).catch(() => []);
    await Promise.all(rows.map((row) => docker.getContainer(row.Id).remove({ force: true, v: true }).catch(() => undefined)));
    await rm(dataDir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  benchFilesUpload().catch((error: unknown) => {
    process.stderr.write(`bench files: ${stackOf(error)}\n`);
    process.exitCode = 1;
  });
}
