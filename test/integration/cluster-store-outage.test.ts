/**
 * The cluster store while its PostgreSQL goes away: a private server of this file's own (the shared
 * one serves other files) is stopped and restarted. Calls fail with the typed, retryable
 * BERTH_CLUSTER_UNAVAILABLE, work again when it answers without a new store, and a restart in the
 * middle of claiming and reporting loses nothing and doubles nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { ClusterStore, QueueWaker, type Budget, type NodeLease, type TaskTransition, type WakeReason } from '../../src/cluster/index.js';
import { isBerthError } from '../../src/common/errors.js';
import { pollUntil } from '../support/engine.js';
import { createTestDatabase, requirePostgres, startPrivatePostgres, type PrivatePostgres, type TestDatabase } from '../support/postgres.js';

const skip = await requirePostgres();
const BIG: Budget = { memoryBytes: 64 * 1024 ** 3, cpuMilli: 64_000, tasks: 10_000 };
const unavailable = (error: unknown): boolean => isBerthError(error, 'BERTH_CLUSTER_UNAVAILABLE') && error.retryable;

/** Runs `call` until it does not fail with BERTH_CLUSTER_UNAVAILABLE; counts those failures in `outages`. */
async function retrying<T>(outages: { count: number }, call: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await call();
    } catch (error) {
      if (!unavailable(error)) throw error;
      outages.count++;
      // A pause between attempts while the database is away (a back-off, not a wait for a state).
      await delay(50);
    }
  }
}

describe('cluster store through a PostgreSQL outage', { skip }, () => {
  let server: PrivatePostgres;
  const stores: ClusterStore[] = [];
  const databases: TestDatabase[] = [];
  before(async () => {
    server = await startPrivatePostgres();
  });
  after(async () => {
    await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
    await Promise.all(databases.map((d) => d.drop().catch(() => undefined)));
    await server?.destroy();
  });
  async function open(): Promise<{ store: ClusterStore; db: TestDatabase }> {
    const db = await createTestDatabase(server.port);
    databases.push(db);
    const store = await ClusterStore.open({ connectionString: db.url, callDeadline: '2s', lease: '1h', placementGrace: 0, poolSize: 12 });
    stores.push(store);
    return { store, db };
  }

  test('every call fails typed and retryable while PostgreSQL is down, and works again once it is back, with the same store and waker', async () => {
    const { store, db } = await open();
    const waker = new QueueWaker({ connectionString: db.url, pollIntervalMs: 3_600_000, reconnectDelayMs: 50 });
    const reasons: WakeReason[] = [];
    waker.onWork((reason) => reasons.push(reason));
    try {
      const lease = await store.register({ nodeId: 'n1', address: 'https://n1:7443', capacity: BIG });
      await store.enqueue({ id: 'before', spec: {} });
      await pollUntil('the waker to listen', () => (waker.isListening ? true : undefined));

      await server.stop();
      await assert.rejects(store.enqueue({ id: 'during', spec: {} }), unavailable);
      await assert.rejects(store.claim({ nodeId: 'n1', epoch: lease.epoch, free: BIG }), unavailable);
      await assert.rejects(store.heartbeat('n1', lease.epoch, { memoryBytes: 0, cpuMilli: 0, tasks: 0 }), unavailable);
      await assert.rejects(store.listNodes(), unavailable);
      await assert.rejects(store.readEvents(), unavailable);
      await pollUntil('the waker to notice', () => (waker.isListening ? undefined : true));

      const connectedBefore = reasons.filter((r) => r === 'connected').length;
      await server.start();
      await pollUntil('the store to answer again', async () => ((await store.listNodes().catch(() => undefined)) === undefined ? undefined : true), { timeoutMs: 20_000, intervalMs: 100 });
      await store.heartbeat('n1', lease.epoch, { memoryBytes: 0, cpuMilli: 0, tasks: 0 });
      await pollUntil('the waker to listen again', () => (waker.isListening && reasons.filter((r) => r === 'connected').length > connectedBefore ? true : undefined), { timeoutMs: 20_000 });
      const notifiesBefore = reasons.filter((r) => r === 'notify').length;
      await store.enqueue({ id: 'after', spec: {} });
      await pollUntil('a notification after the restart', () => (reasons.filter((r) => r === 'notify').length > notifiesBefore ? true : undefined));
      const claimed = await store.claim({ nodeId: 'n1', epoch: lease.epoch, free: BIG });
      assert.deepEqual(claimed.map((t) => t.id), ['before', 'after'], 'the task refused while it was down was never queued');
    } finally {
      await waker.close();
    }
  });

  test('a database that stops answering fails every call at its deadline, typed and retryable, and answers again when it continues', async () => {
    const { store } = await open();
    const lease = await store.register({ nodeId: 'frozen', address: 'https://frozen:7443', capacity: BIG });
    await store.enqueue({ id: 'before-freeze', spec: {} });
    await server.freeze();
    try {
      // Open connections hang and new ones are never answered: only the deadline ends the calls.
      const calls = await Promise.allSettled([
        store.enqueue({ id: 'while-frozen', spec: {} }),
        store.claim({ nodeId: 'frozen', epoch: lease.epoch, free: BIG }),
        store.heartbeat('frozen', lease.epoch, { memoryBytes: 0, cpuMilli: 0, tasks: 0 }),
        store.listTasks(),
      ]);
      for (const call of calls) {
        assert.equal(call.status, 'rejected');
        assert.ok(unavailable(call.status === 'rejected' ? call.reason : undefined), String(call.status === 'rejected' ? call.reason : ''));
      }
    } finally {
      await server.thaw();
    }
    await pollUntil('the store to answer again', async () => ((await store.listNodes().catch(() => undefined)) === undefined ? undefined : true), { timeoutMs: 20_000, intervalMs: 100 });
    await store.heartbeat('frozen', lease.epoch, { memoryBytes: 0, cpuMilli: 0, tasks: 0 });
    // The submit cut off by the deadline may or may not have landed: sent again, it is queued once.
    await retrying({ count: 0 }, () => store.enqueue({ id: 'while-frozen', spec: {} }));
    const claimed = await retrying({ count: 0 }, () => store.claim({ nodeId: 'frozen', epoch: lease.epoch, free: BIG }));
    const held = await store.heldTasks('frozen', lease.epoch);
    assert.deepEqual(held.map((t) => t.id).sort(), ['before-freeze', 'while-frozen']);
    assert.ok(claimed.length <= 2);
  });

  test('a restart in the middle of claiming and reporting loses no task and runs none twice', async () => {
    const { store } = await open();
    const total = 600;
    await store.enqueueMany(Array.from({ length: total }, (_, i) => ({ id: `t-${i}`, spec: { i } })));
    const leases: NodeLease[] = [];
    for (const nodeId of ['a', 'b', 'c']) leases.push(await store.register({ nodeId, address: `https://${nodeId}:7443`, capacity: BIG }));
    const outages = { count: 0 };
    const ranBy = new Map<string, string[]>();
    const finish = async (lease: NodeLease, taskId: string): Promise<void> => {
      ranBy.set(taskId, [...(ranBy.get(taskId) ?? []), lease.nodeId]);
      for (const step of [{ kind: 'running', containerId: `c-${taskId}` }, { kind: 'exited', exitCode: 0, end: 'success' }] satisfies TaskTransition[]) {
        await retrying(outages, () => store.report(taskId, lease.nodeId, lease.epoch, step));
      }
    };
    let claimedSoFar = 0;
    const loops = leases.flatMap((lease) =>
      Array.from({ length: 2 }, async () => {
        for (;;) {
          const got = await retrying(outages, () => store.claim({ nodeId: lease.nodeId, epoch: lease.epoch, free: BIG, limit: 5 }));
          if (got.length === 0) return;
          claimedSoFar += got.length;
          for (const task of got) await finish(lease, task.id);
        }
      }),
    );
    const restart = (async () => {
      await pollUntil('a third of the tasks to be claimed', () => (claimedSoFar >= total / 3 ? true : undefined), { timeoutMs: 60_000 });
      await server.restart();
    })();
    await Promise.all([...loops, restart]);
    // A claim whose commit's answer was lost leaves tasks held that the node did not learn of: it
    // finds them by asking what it holds, as a node does after a failed claim.
    for (const lease of leases) {
      for (const task of await store.heldTasks(lease.nodeId, lease.epoch)) {
        if (task.state === 'claimed') await finish(lease, task.id);
      }
    }
    assert.ok(outages.count > 0, 'the restart failed some calls');
    const all = await store.listTasks({ limit: total + 1 });
    assert.equal(all.length, total, 'nothing lost, nothing added');
    assert.deepEqual(all.filter((t) => t.state !== 'exited').map((t) => [t.id, t.state]), [], 'every task ended');
    assert.deepEqual(all.filter((t) => t.attempt !== 1).map((t) => t.id), [], 'every task was claimed once');
    assert.deepEqual([...ranBy].filter(([, by]) => by.length !== 1), [], 'every task ran on one node, once');
    assert.equal(ranBy.size, total);
    for (const task of all) assert.deepEqual([task.nodeId], ranBy.get(task.id));
    // An empty page means nothing more is visible yet (a transaction still running, such as an
    // autovacuum's ANALYZE, holds the view back), so the reader follows the cursor until it has all.
    const claimEvents = new Map<string, number>();
    const seen = new Set<number>();
    let cursor: string | undefined;
    await pollUntil('every claim event', async () => {
      const page = await store.readEvents({ after: cursor });
      cursor = page.cursor;
      for (const event of page.events) {
        assert.ok(!seen.has(event.seq), `event ${event.seq} read once`);
        seen.add(event.seq);
        if (event.kind === 'task.claimed') claimEvents.set(event.taskId!, (claimEvents.get(event.taskId!) ?? 0) + 1);
      }
      return claimEvents.size >= total && page.events.length === 0 ? true : undefined;
    }, { timeoutMs: 30_000, intervalMs: 50 });
    const claimedEvents = [...claimEvents.values()].reduce((a, b) => a + b, 0);
    assert.equal(claimedEvents, total, 'one claim event per task');
  });
});
