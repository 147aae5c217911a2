/**
 * `cluster`: submit-to-claimed latency of the cluster store's queue with 10,000 tasks queued.
 *
 * The backlog: 10,000 queued tasks (BENCH_N scales it) that no live node may take (they ask for
 * `node.pool: elsewhere`), ahead of every measured task in claim order, so each claim looks past all
 * of them. Three nodes are registered; the claimer (`pool: bench`) waits on a QueueWaker (LISTEN/NOTIFY)
 * and claims when woken, as an agent's claimer will. Each measured task is submitted (`enqueue`) and
 * timed from the start of the submit until the claimer's `claim` returns it; submits go one at a
 * time, so this is latency, not throughput. Targets: p50 <= 10 ms, p99 <= 50 ms.
 *
 * Then submit-to-running of a three-agent cluster as a ratio to a single agent, measured in the same
 * run (bench/cluster-agents.ts; target <= 1.1), in a second database of its own.
 *
 * PostgreSQL: env BERTH_BENCH_PG_URL (a database the bench may create databases in), else the test
 * server that scripts/test-postgres.sh starts (127.0.0.1:5499). The bench's database is dropped at
 * the end. Runnable alone (`node --import tsx bench/cluster.ts`) or from bench/run.ts.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { ClusterStore, QueueWaker, type Budget } from '../src/cluster/index.js';
import { stackOf } from '../src/common/errors.js';
import { benchClusterAgents } from './cluster-agents.js';
import { type CaseContext, quantile, round, standaloneContext } from './support.js';

const BACKLOG = 10_000;
const SUBMITS = 500;
const WARMUP = 20;
const TARGET_P50_MS = 10;
const TARGET_P99_MS = 50;
const CAPACITY: Budget = { memoryBytes: 64 * 1024 ** 3, cpuMilli: 64_000, tasks: 100_000 };

async function serverUrl(ctx: Pick<CaseContext, 'progress'>): Promise<string> {
  const given = process.env.BERTH_BENCH_PG_URL;
  if (given !== undefined && given !== '') return given;
  ctx.progress('cluster: making sure the test PostgreSQL answers (scripts/test-postgres.sh)');
  await promisify(execFile)('bash', [fileURLToPath(new URL('../scripts/test-postgres.sh', import.meta.url))]);
  return 'postgres://postgres@127.0.0.1:5499/postgres';
}

/** `url` with its database named `database`. */
function clusterDbUrl(url: string, database: string): string {
  const dbUrl = new URL(url);
  dbUrl.pathname = `/${database}`;
  return dbUrl.toString();
}

async function admin(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

export async function benchCluster(ctx: CaseContext = standaloneContext()): Promise<void> {
  const url = await serverUrl(ctx);
  const name = `berth_bench_${ctx.runId.replace(/[^a-z0-9]/g, '_')}`;
  await admin(url, `CREATE DATABASE ${name}`);
  await admin(url, `CREATE DATABASE ${name}_agents`);
  const dbUrl = new URL(clusterDbUrl(url, name));
  const store = await ClusterStore.open({ connectionString: dbUrl.toString() });
  const waker = new QueueWaker({ connectionString: dbUrl.toString() });
  const closeQueueHalf = async (): Promise<void> => {
    await waker.close();
    await store.close();
  };
  let queueHalfOpen = true;
  try {
    const backlog = Math.max(100, Math.round(BACKLOG * ctx.scale));
    ctx.progress(`cluster: queueing a backlog of ${backlog} tasks`);
    for (let i = 0; i < backlog; i += 1000) {
      const batch = Array.from({ length: Math.min(1000, backlog - i) }, (_, k) => ({
        id: `backlog-${i + k}`,
        spec: { image: 'berth-test/busybox:latest', cmd: ['true'] },
        constraints: { 'node.pool': 'elsewhere' },
      }));
      await store.enqueueMany(batch);
    }
    const claimer = await store.register({ nodeId: 'bench-a', address: 'https://a:7443', labels: { pool: 'bench' }, capacity: CAPACITY });
    await store.register({ nodeId: 'bench-b', address: 'https://b:7443', labels: { pool: 'other' }, capacity: CAPACITY });
    await store.register({ nodeId: 'bench-c', address: 'https://c:7443', labels: { pool: 'other' }, capacity: CAPACITY });
    await admin(dbUrl.toString(), 'ANALYZE');

    const waiting = new Map<string, (at: number) => void>();
    let claiming = false;
    let again = false;
    const claimNow = async (): Promise<void> => {
      if (claiming) {
        again = true;
        return;
      }
      claiming = true;
      try {
        do {
          again = false;
          const got = await store.claim({ nodeId: claimer.nodeId, epoch: claimer.epoch, free: CAPACITY, limit: 16 });
          const at = performance.now();
          for (const task of got) waiting.get(task.id)?.(at);
        } while (again);
      } finally {
        claiming = false;
      }
    };
    waker.onWork(() => void claimNow().catch((error: unknown) => ctx.progress(`cluster: claim failed: ${stackOf(error)}`)));
    const deadline = Date.now() + 10_000;
    while (!waker.isListening) {
      if (Date.now() > deadline) throw new Error('the queue waker did not listen within 10 s');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }

    const submits = Math.max(50, Math.round(SUBMITS * ctx.scale));
    ctx.progress(`cluster: ${submits} submits, one at a time, each timed until claimed (after ${WARMUP} warm-up submits)`);
    const latencies: number[] = [];
    for (let i = 0; i < WARMUP + submits && !ctx.signal?.aborted; i++) {
      const id = `measured-${i}`;
      const claimed = new Promise<number>((resolve) => waiting.set(id, resolve));
      const start = performance.now();
      await store.enqueue({ id, spec: { image: 'berth-test/busybox:latest', cmd: ['true'] }, constraints: { 'node.pool': 'bench' } });
      const end = await claimed;
      waiting.delete(id);
      if (i >= WARMUP) latencies.push(end - start);
    }
    const p50 = round(quantile(latencies, 0.5), 2);
    const p99 = round(quantile(latencies, 0.99), 2);
    // The queue half's claimer goes before the agents' half: its node's lease would run out meanwhile.
    queueHalfOpen = false;
    await closeQueueHalf();
    const agents = await benchClusterAgents(ctx, clusterDbUrl(url, `${name}_agents`));
    ctx.emit({
      case: 'cluster',
      queued: backlog,
      submits: latencies.length,
      submitToClaimedMs: { p50, p99 },
      targetP50Ms: TARGET_P50_MS,
      targetP99Ms: TARGET_P99_MS,
      meetsTarget: p50 <= TARGET_P50_MS && p99 <= TARGET_P99_MS,
      ...agents,
    });
  } finally {
    if (queueHalfOpen) await closeQueueHalf();
    for (const db of [name, `${name}_agents`]) {
      await admin(url, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch((error: unknown) => ctx.progress(`cluster: could not drop ${db}: ${stackOf(error)}`));
    }
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  benchCluster().catch((error: unknown) => {
    process.stderr.write(`bench cluster: ${stackOf(error)}\n`);
    process.exitCode = 1;
  });
}
