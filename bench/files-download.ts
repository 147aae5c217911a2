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
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import Dockerode from 'dockerode';
import { AgentClient } from '../src/agent/client.js';
import { LABELS } from '../src/common/labels.js';
import { stackOf } from '../src/common/errors.js';
import { startAgentProcess, type RunningAgent } from '../test/support/agent.js';
import { BENCH_IMAGE, BENCH_LABEL, type CaseContext, elapsedMs, pairedRatio, quantile, round, standaloneContext } from './support.js';

const FILE_BYTES = 100 * 1024 * 1024;
const ROUNDS = 10;
const TARGET_MAX_RATIO = 1.2;
const READY_DEADLINE_MS = 120_000;

const BERTH_BIN = fileURLToPath(new URL('../bin/berth.js', import.meta.url));
const BUILT_ENTRY = fileURLToPath(new URL('../dist/cli/entry.js', import.meta.url));

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
  const docker = ctx.docker ?? new Dockerode({ socketPath: '/var/run/docker.sock' });
  const agentId = `bench-${ctx.runId}-files-down`;
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-bench-fdown-'));
  const configFile = path.join(dataDir, 'agent.yaml');
  await writeFile(configFile, [`agentId: ${agentId}`, 'images: {cleanup: false}', 'reconcile: {enabled: false}', ''].join('\n'));
  const entry = process.env.BENCH_AGENT_ENTRY?.trim() || BERTH_BIN;
  let agent: RunningAgent | undefined;
  let client: AgentClient | undefined;
  try {
    agent = await startAgentProcess(dataDir, ['--config', configFile], { command: [entry], readyTimeoutMs: READY_DEADLINE_MS, ...(ctx.signal ? { signal: ctx.signal } : {}) });
    const token = (await readFile(path.join(dataDir, 'token'), 'utf8')).trim();
    client = AgentClient.connect({ host: `unix://${agent.socketPath}`, token });
    const taskId = `bench-${ctx.runId}-files-down`;
    const command = `head -c ${FILE_BYTES} /dev/urandom > /data.bin && touch /ready && exec sleep 3600`;
    await client.submit({ id: taskId, spec: { image: BENCH_IMAGE, command: ['sh', '-c', command], network: 'none', labels: { [BENCH_LABEL]: ctx.runId }, stopGracePeriod: '1s' } });
    let containerId: string | undefined;
    for (const deadline = Date.now() + 120_000; Date.now() < deadline && containerId === undefined; ) {
      const task = await client.get(taskId);
      const ready = task.state === 'running' && task.containerId !== undefined && (await client.archive(taskId, '/ready').then((s) => drain(s).then(() => true), () => false));
      if (ready) containerId = task.containerId;
      else await new Promise((resolve) => setTimeout(resolve, 200));
    }
    if (containerId === undefined) throw new Error(`task ${taskId} did not write its file within 120 s`);
    const container = docker.getContainer(containerId);
    const agentClient = client;
    const ways = {
      engine: async () => drain((await container.getArchive({ path: '/data.bin' })) as unknown as Readable),
      agent: async () => drain(await agentClient.archive(taskId, '/data.bin')),
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
      agentEntry: entry !== BERTH_BIN ? entry : existsSync(BUILT_ENTRY) ? 'dist' : 'tsx',
      engineMs: summary(times.engine),
      agentMs: summary(times.agent),
      engineMiBps: round(FILE_BYTES / 1024 / 1024 / (quantile(times.engine, 0.5) / 1000), 1),
      agentMiBps: round(FILE_BYTES / 1024 / 1024 / (quantile(times.agent, 0.5) / 1000), 1),
      ratio,
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
  benchFilesDownload().catch((error: unknown) => {
    process.stderr.write(`bench files-download: ${stackOf(error)}\n`);
    process.exitCode = 1;
  });
}
