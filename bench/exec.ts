/**
 * `exec`: exec of `true` in a running task through a real `berth agent` process, against a raw
 * dockerode exec (create, start, read to the end, inspect for the exit code) in the same container
 * of the same run. Two ways through the agent: the plain request (`POST /v1/tasks/:id/exec`, with
 * the AgentClient's kept-alive connection) and the WebSocket (`GET /v1/tasks/:id/exec`, a new
 * connection and upgrade per exec, as a CLI does). Each round runs the three back to back, in an
 * order that rotates from round to round, so that engine drift hits all alike; the ratios are the
 * medians of the per-round ratios. Target: each ratio at most 1.1.
 *
 * The agent runs from bin/berth.js (dist/ when built; `agentEntry` says which). Runnable alone
 * (`node --import tsx bench/exec.ts`) or from bench/run.ts.
 */
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type Dockerode from 'dockerode';
import type { AgentClient } from '../src/agent/client.js';
import { stackOf } from '../src/common/errors.js';
import { withAgentTask } from './agent-task.js';
import { type CaseContext, elapsedMs, pairedRatio, quantile, round, standaloneContext } from './support.js';

const ROUNDS = 200;
const WARMUP_ROUNDS = 10;
const TARGET_MAX_RATIO = 1.1;

/** The raw dockerode exec a platform would write: create, start (hijacked), read to the end, inspect. */
async function rawExec(container: Dockerode.Container): Promise<number> {
  const exec = await container.exec({ Cmd: ['true'], AttachStdout: true, AttachStderr: true });
  const stream = (await exec.start({ hijack: true, stdin: false })) as unknown as Duplex;
  await new Promise<void>((resolve, reject) => {
    stream.on('data', () => undefined);
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', reject);
  });
  const info = (await exec.inspect()) as { ExitCode: number | null };
  return info.ExitCode ?? -1;
}

async function socketExec(client: AgentClient, taskId: string): Promise<number> {
  const session = await client.exec(taskId, { cmd: ['true'] });
  session.stdout.resume();
  session.stderr.resume();
  return session.exitCode;
}

async function timed(work: () => Promise<number>): Promise<number> {
  const start = process.hrtime.bigint();
  const exitCode = await work();
  if (exitCode !== 0) throw new Error(`exec of true exited ${exitCode}`);
  return elapsedMs(start);
}

export async function benchExec(context?: CaseContext): Promise<void> {
  const ctx: CaseContext = context ?? standaloneContext();
  await withAgentTask(ctx, { name: 'exec', command: ['sleep', '3600'] }, async ({ client, taskId, container, agentEntry }) => {
    const ways: Record<'raw' | 'plain' | 'socket', () => Promise<number>> = {
      raw: () => rawExec(container),
      plain: async () => (await client.execOnce(taskId, { cmd: ['true'] })).exitCode,
      socket: () => socketExec(client, taskId),
    };
    const order = ['raw', 'plain', 'socket'] as const;
    const rounds = Math.max(10, Math.round(ROUNDS * ctx.scale));
    ctx.progress(`exec: ${rounds} rounds of raw, plain and WebSocket exec of true (after ${WARMUP_ROUNDS} warm-up rounds)`);
    for (let i = 0; i < WARMUP_ROUNDS; i++) for (const way of order) await timed(ways[way]);
    const times: Record<'raw' | 'plain' | 'socket', number[]> = { raw: [], plain: [], socket: [] };
    for (let i = 0; i < rounds && !ctx.signal?.aborted; i++) {
      for (let k = 0; k < order.length; k++) {
        const way = order[(i + k) % order.length]!;
        times[way].push(await timed(ways[way]));
      }
    }
    const summary = (values: number[]): { p50: number; p99: number } => ({ p50: round(quantile(values, 0.5), 2), p99: round(quantile(values, 0.99), 2) });
    const plainRatio = round(pairedRatio(times.plain, times.raw), 3);
    const socketRatio = round(pairedRatio(times.socket, times.raw), 3);
    ctx.emit({
      case: 'exec',
      rounds: times.raw.length,
      agentEntry,
      rawMs: summary(times.raw),
      plainMs: summary(times.plain),
      socketMs: summary(times.socket),
      plainRatio,
      socketRatio,
      targetMaxRatio: TARGET_MAX_RATIO,
      meetsTarget: plainRatio <= TARGET_MAX_RATIO && socketRatio <= TARGET_MAX_RATIO,
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  benchExec().catch((error: unknown) => {
    process.stderr.write(`bench exec: ${stackOf(error)}\n`);
    process.exitCode = 1;
  });
}
