/**
 * The cluster store against a real PostgreSQL (scripts/test-postgres.sh): migrations from several
 * stores at once, node leases, exactly-once claiming, priority and constraints, binpack and spread,
 * fencing, lease expiry, the event log and the queue waker. Each test works in a database of its own.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { ClusterStore, mayClaim, QueueWaker, type Budget, type ClusterStoreOptions, type NodeLease, type ClusterEvent, type ClusterEventPage, type PlacementNode, type PlacementStrategy, type TaskSubmission, type WakeReason } from '../../src/cluster/index.js';
import { isBerthError } from '../../src/common/errors.js';
import { pollUntil } from '../support/engine.js';
import { requirePostgres, testDatabaseForFile, type TestDatabase } from '../support/postgres.js';

const skip = await requirePostgres();
const newDatabase = testDatabaseForFile();
const stores: ClusterStore[] = [];
after(async () => {
  await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
});

async function openStore(db: TestDatabase, options: Partial<ClusterStoreOptions> = {}): Promise<ClusterStore> {
  const store = await ClusterStore.open({ connectionString: db.url, placementGrace: 0, ...options });
  stores.push(store);
  return store;
}

const BIG: Budget = { memoryBytes: 64 * 1024 ** 3, cpuMilli: 64_000, tasks: 10_000 };

async function node(store: ClusterStore, nodeId: string, labels: Record<string, string> = {}, capacity: Budget = BIG): Promise<NodeLease> {
  return store.register({ nodeId, address: `https://${nodeId}.test:7443`, labels, capacity });
}

function tasks(prefix: string, count: number, extra: Partial<TaskSubmission> = {}): TaskSubmission[] {
  return Array.from({ length: count }, (_, i) => ({ id: `${prefix}-${i}`, spec: { image: 'busybox', cmd: ['true'], n: i }, ...extra }));
}

/**
 * Reads events after `after` until `count` have come. Events show once every older transaction on
 * the server has ended, so one that is still running (an autovacuum's) may hold them back a moment.
 */
async function readEventsUntil(store: ClusterStore, count: number, after?: string): Promise<ClusterEventPage> {
  const events: ClusterEvent[] = [];
  let cursor = after;
  await pollUntil(`${count} events`, async () => {
    const page = await store.readEvents({ after: cursor, limit: count - events.length });
    cursor = page.cursor;
    events.push(...page.events);
    return events.length >= count ? true : undefined;
  });
  return { events, cursor: cursor! };
}

const hasCode = (code: string) => (error: unknown): boolean => isBerthError(error) && error.code === code;

describe('cluster store on PostgreSQL', { skip }, () => {
  test('three stores migrating one database at once apply each step exactly once', async () => {
    const db = await newDatabase();
    const opened = await Promise.all([openStore(db), openStore(db), openStore(db)]);
    assert.equal(opened.length, 3);
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const rows = await client.query<{ version: number }>('SELECT version FROM berth_cluster_migrations ORDER BY version');
      assert.deepEqual(rows.rows.map((r) => r.version), Array.from({ length: ClusterStore.schemaVersion }, (_, i) => i + 1));
      // A database a newer berth migrated is refused with a typed error, and changes nothing.
      await client.query(`INSERT INTO berth_cluster_migrations (version, name) VALUES (${ClusterStore.schemaVersion + 1}, 'from the future')`);
    } finally {
      await client.end();
    }
    await assert.rejects(ClusterStore.open({ connectionString: db.url }), hasCode('BERTH_CLUSTER_SCHEMA'));
  });

  test('registration starts a lease with a strictly increasing epoch; heartbeats renew it and record the load', async () => {
    const store = await openStore(await newDatabase(), { lease: '30s' });
    const first = await node(store, 'n1', { disk: 'ssd' });
    const second = await node(store, 'n1', { disk: 'ssd' });
    assert.equal(first.epoch, 1);
    assert.equal(second.epoch, 2);
    const renewed = await store.heartbeat('n1', 2, { memoryBytes: 1024, cpuMilli: 250, tasks: 3 });
    assert.ok(renewed.leaseExpiresAt.getTime() >= second.leaseExpiresAt.getTime());
    const [view] = await store.listNodes();
    assert.equal(view!.state, 'ready');
    assert.equal(view!.epoch, 2);
    assert.deepEqual(view!.labels, { disk: 'ssd' });
    assert.deepEqual(view!.load, { memoryBytes: 1024, cpuMilli: 250, tasks: 3 });
    assert.deepEqual(view!.held, { memoryBytes: 0, cpuMilli: 0, tasks: 0 });
    // The replaced epoch is stale: its heartbeat is refused, typed, and the node must register again.
    await assert.rejects(store.heartbeat('n1', 1, { memoryBytes: 0, cpuMilli: 0, tasks: 0 }), hasCode('BERTH_CLUSTER_LEASE_LOST'));
    await assert.rejects(store.heartbeat('nobody', 1, { memoryBytes: 0, cpuMilli: 0, tasks: 0 }), hasCode('BERTH_CLUSTER_LEASE_LOST'));
  });

  test('many concurrent claimers over thousands of tasks claim each task exactly once', async () => {
    const db = await newDatabase();
    const store = await openStore(db, { poolSize: 20 });
    const submitted = tasks('many', 3000);
    const queued = await store.enqueueMany(submitted);
    assert.equal(queued.length, 3000);
    const leases = await Promise.all(['a', 'b', 'c', 'd'].map((id) => node(store, id)));
    const claimedBy = new Map<string, string[]>();
    // Four nodes with four claim loops each (a node's loops share its lease), as fast as they can.
    const loops = leases.flatMap((lease) =>
      Array.from({ length: 4 }, async () => {
        for (;;) {
          const got = await store.claim({ nodeId: lease.nodeId, epoch: lease.epoch, free: BIG, limit: 25 });
          if (got.length === 0) return;
          for (const task of got) {
            assert.equal(task.nodeId, lease.nodeId);
            assert.equal(task.epoch, lease.epoch);
            claimedBy.set(task.id, [...(claimedBy.get(task.id) ?? []), lease.nodeId]);
          }
        }
      }),
    );
    await Promise.all(loops);
    assert.equal(claimedBy.size, 3000, 'every task was claimed');
    const twice = [...claimedBy].filter(([, by]) => by.length > 1);
    assert.deepEqual(twice, [], 'no task was claimed twice');
    const held = await store.listTasks({ states: ['claimed'], limit: 5000 });
    assert.equal(held.length, 3000);
    for (const task of held) assert.deepEqual([task.nodeId], claimedBy.get(task.id));
    const perNode = new Set(held.map((t) => t.nodeId));
    assert.ok(perNode.size > 1, 'the claims were spread over several claimers');
  });

  test('claims go by priority, higher first, and first in, first out within one priority', async () => {
    const store = await openStore(await newDatabase());
    for (const [id, priority] of [['low-1', 0], ['low-2', 0], ['high-1', 5], ['mid-1', 2], ['high-2', 5], ['low-3', 0]] as const) {
      await store.enqueue({ id, spec: {}, priority });
    }
    const lease = await node(store, 'n1');
    const first = await store.claim({ nodeId: 'n1', epoch: lease.epoch, free: BIG, limit: 3 });
    const rest = await store.claim({ nodeId: 'n1', epoch: lease.epoch, free: BIG, limit: 10 });
    assert.deepEqual([...first, ...rest].map((t) => t.id), ['high-1', 'high-2', 'mid-1', 'low-1', 'low-2', 'low-3']);
  });

  test('a node claims only tasks whose constraints its labels satisfy, and that fit its free budget', async () => {
    const store = await openStore(await newDatabase());
    await store.enqueue({ id: 'ssd-1', spec: {}, constraints: { 'node.disk': 'ssd' } });
    await store.enqueue({ id: 'ssd-eu', spec: {}, constraints: { 'node.disk': 'ssd', 'node.zone': 'eu' } });
    await store.enqueue({ id: 'any', spec: {} });
    const hdd = await node(store, 'hdd', { disk: 'hdd', zone: 'eu' });
    const ssd = await node(store, 'ssd', { disk: 'ssd', zone: 'us' });
    const onHdd = await store.claim({ nodeId: 'hdd', epoch: hdd.epoch, free: BIG });
    assert.deepEqual(onHdd.map((t) => t.id), ['any']);
    const onSsd = await store.claim({ nodeId: 'ssd', epoch: ssd.epoch, free: BIG });
    assert.deepEqual(onSsd.map((t) => t.id), ['ssd-1'], 'ssd-eu needs zone eu too');
    assert.equal((await store.getTask('ssd-eu'))!.state, 'queued');
    await assert.rejects(store.enqueue({ id: 'bad', spec: {}, constraints: { disk: 'ssd' } }), hasCode('BERTH_VALIDATION'));

    // Budget: a task larger than what is free stays queued; a smaller one behind it is taken.
    const gib = 1024 ** 3;
    await store.enqueue({ id: 'big', spec: {}, demand: { memoryBytes: 8 * gib } });
    await store.enqueue({ id: 'small-1', spec: {}, demand: { memoryBytes: gib, cpuMilli: 500 } });
    await store.enqueue({ id: 'small-2', spec: {}, demand: { memoryBytes: gib, cpuMilli: 500 } });
    await store.enqueue({ id: 'small-3', spec: {}, demand: { memoryBytes: gib, cpuMilli: 500 } });
    const fitted = await store.claim({ nodeId: 'ssd', epoch: ssd.epoch, free: { memoryBytes: 4 * gib, cpuMilli: 1000, tasks: 10 } });
    assert.deepEqual(fitted.map((t) => t.id), ['small-1', 'small-2'], 'two fit the 1000 millicores');
    assert.equal((await store.getTask('big'))!.state, 'queued');
  });

  test('binpack places a task on the busiest node that fits, spread on the least busy, and the grace lets any node take it', async () => {
    const db = await newDatabase();
    const store = await openStore(db, { placementGrace: '1h' });
    const capacity: Budget = { memoryBytes: 10 * 1024 ** 3, cpuMilli: 4000, tasks: 10 };
    const a = await node(store, 'a', {}, capacity);
    const b = await node(store, 'b', {}, capacity);
    // a already holds two tasks; b holds none.
    await store.enqueueMany(tasks('held', 2));
    // Under spread both are empty and a (smaller id) wins the tie: it takes the first two.
    assert.equal((await store.claim({ nodeId: 'a', epoch: a.epoch, free: capacity, limit: 2, strategy: 'spread' })).length, 2);
    const freeOf = (held: number): Budget => ({ ...capacity, tasks: capacity.tasks - held });

    await store.enqueue({ id: 'packed', spec: {} });
    assert.deepEqual(await store.claim({ nodeId: 'b', epoch: b.epoch, free: freeOf(0), strategy: 'binpack' }), [], 'binpack: b is not the best node');
    assert.deepEqual((await store.claim({ nodeId: 'a', epoch: a.epoch, free: freeOf(2), strategy: 'binpack' })).map((t) => t.id), ['packed']);

    await store.enqueue({ id: 'spread', spec: {} });
    assert.deepEqual(await store.claim({ nodeId: 'a', epoch: a.epoch, free: freeOf(3), strategy: 'spread' }), [], 'spread: a is not the best node');
    assert.deepEqual((await store.claim({ nodeId: 'b', epoch: b.epoch, free: freeOf(0), strategy: 'spread' })).map((t) => t.id), ['spread']);

    // With no grace, the node that is not the best takes the task anyway.
    const eager = await openStore(db, { placementGrace: 0 });
    await eager.enqueue({ id: 'graced', spec: {} });
    assert.deepEqual((await eager.claim({ nodeId: 'b', epoch: b.epoch, free: freeOf(1), strategy: 'binpack' })).map((t) => t.id), ['graced']);
    // A node that does not fit the task is never the best: a full node leaves it to the others.
    const gib = 1024 ** 3;
    await store.enqueue({ id: 'fill', spec: {}, demand: { memoryBytes: 5 * gib } });
    assert.deepEqual((await store.claim({ nodeId: 'a', epoch: a.epoch, free: freeOf(3) })).map((t) => t.id), ['fill'], 'binpack: equal scores, a wins the tie');
    await store.enqueue({ id: 'to-b', spec: {}, demand: { memoryBytes: 9 * gib } });
    assert.deepEqual(await store.claim({ nodeId: 'a', epoch: a.epoch, free: { ...freeOf(4), memoryBytes: 5 * gib } }), [], 'a has 5 GiB left');
    assert.deepEqual((await store.claim({ nodeId: 'b', epoch: b.epoch, free: freeOf(2) })).map((t) => t.id), ['to-b'], 'b is the only node that fits it');
  });

  test('the claim query places as the TypeScript rule does, over random loads, demands and strategies', async () => {
    const db = await newDatabase();
    const store = await openStore(db, { placementGrace: '1h' });
    const setup = await openStore(db, { placementGrace: 0 });
    // A seeded generator: a failure names its scenario and replays.
    let seed = 20261130;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const gib = 1024 ** 3;
    const winners = new Set<string>();
    for (let k = 0; k < 24; k++) {
      const strategy: PlacementStrategy = k % 2 === 0 ? 'binpack' : 'spread';
      const scenario = `s${k}`;
      const nodes: PlacementNode[] = [];
      const leases = new Map<string, NodeLease>();
      for (const name of ['x', 'y', 'z']) {
        const nodeId = `${scenario}-${name}`;
        const capacity: Budget = { memoryBytes: (4 + random(3) * 2) * gib, cpuMilli: 2000 + random(3) * 1000, tasks: 3 + random(4) };
        // The label `only` lets each node be the one that claims its own held tasks.
        leases.set(nodeId, await setup.register({ nodeId, address: `https://${nodeId}`, labels: { scenario, only: nodeId }, capacity }));
        for (let h = random(3); h > 0; h--) {
          const demand = { memoryBytes: random(3) * gib, cpuMilli: random(3) * 500 };
          await setup.enqueue({ id: `${nodeId}-held-${h}`, spec: {}, demand, constraints: { 'node.only': nodeId } });
        }
        nodes.push({ nodeId, capacity, used: { memoryBytes: 0, cpuMilli: 0, tasks: 0 } });
      }
      // Load the nodes: each claims its own held tasks (constraint `only`) with the no-grace store.
      for (const n of nodes) {
        const lease = leases.get(n.nodeId)!;
        const got = await setup.claim({ nodeId: n.nodeId, epoch: lease.epoch, free: n.capacity, limit: 10 });
        assert.ok(got.every((t) => t.id.startsWith(`${n.nodeId}-held-`)));
        const used = got.reduce((sum, t) => ({ memoryBytes: sum.memoryBytes + t.demand.memoryBytes, cpuMilli: sum.cpuMilli + t.demand.cpuMilli, tasks: sum.tasks + 1 }), { memoryBytes: 0, cpuMilli: 0, tasks: 0 });
        (n as { used: Budget }).used = used;
      }
      const demand = { memoryBytes: random(4) * gib, cpuMilli: random(4) * 500 };
      await store.enqueue({ id: `${scenario}-task`, spec: {}, demand, constraints: { 'node.scenario': scenario } });
      const expected = nodes.filter((n) => mayClaim({ claimer: n, others: nodes.filter((o) => o !== n), demand, strategy, waitedMs: 0, graceMs: 3_600_000 }));
      assert.ok(expected.length <= 1, `${scenario}: at most one best node`);
      winners.add(expected[0]?.nodeId.slice(scenario.length + 1) ?? 'none');
      const order = [...nodes.filter((n) => !expected.includes(n)), ...expected];
      for (const n of order) {
        const free = { memoryBytes: n.capacity.memoryBytes - n.used.memoryBytes, cpuMilli: n.capacity.cpuMilli - n.used.cpuMilli, tasks: n.capacity.tasks - n.used.tasks };
        const got = await store.claim({ nodeId: n.nodeId, epoch: leases.get(n.nodeId)!.epoch, free, strategy });
        assert.deepEqual(got.map((t) => t.id), expected.includes(n) ? [`${scenario}-task`] : [], `${scenario} (${strategy}), node ${n.nodeId}: ${JSON.stringify({ nodes, demand })}`);
      }
    }
    // The scenarios are not all alike: the best node varies (and sometimes none fits).
    assert.ok(winners.size >= 3, `winners: ${[...winners].join(', ')}`);
  });

  test('a node whose lease expired cannot report, heartbeat or claim: its reports are fenced, typed', async () => {
    const store = await openStore(await newDatabase(), { lease: '1h' });
    await store.enqueueMany(tasks('fence', 2));
    const old = await node(store, 'paused');
    const claimed = await store.claim({ nodeId: 'paused', epoch: old.epoch, free: BIG });
    assert.equal(claimed.length, 2);
    await store.report('fence-0', 'paused', old.epoch, { kind: 'running', containerId: 'c0' });
    const expiry = await store.expireLeases(new Date(Date.now() + 2 * 3600_000));
    assert.deepEqual(expiry.nodes, ['paused']);
    assert.deepEqual(expiry.lost, ['fence-0']);
    assert.deepEqual(expiry.requeued, ['fence-1']);
    const lost = (await store.getTask('fence-0'))!;
    assert.equal(lost.state, 'lost');
    assert.match(lost.endReason!, /node paused lost its lease \(epoch 1/);

    await assert.rejects(store.report('fence-0', 'paused', old.epoch, { kind: 'exited', exitCode: 0, end: 'success' }), (error: unknown) =>
      hasCode('BERTH_CLUSTER_FENCED')(error) && isBerthError(error) && error.context.taskId === 'fence-0' && error.context.state === 'lost');
    await assert.rejects(store.report('fence-1', 'paused', old.epoch, { kind: 'running' }), hasCode('BERTH_CLUSTER_FENCED'));
    await assert.rejects(store.heartbeat('paused', old.epoch, { memoryBytes: 0, cpuMilli: 0, tasks: 0 }), hasCode('BERTH_CLUSTER_LEASE_LOST'));
    await assert.rejects(store.claim({ nodeId: 'paused', epoch: old.epoch, free: BIG }), hasCode('BERTH_CLUSTER_LEASE_LOST'));
    assert.equal((await store.listNodes())[0]!.state, 'down');

    // It rejoins with a new epoch and may claim the requeued task; its old epoch stays fenced.
    const rejoined = await node(store, 'paused');
    assert.equal(rejoined.epoch, old.epoch + 1);
    const again = await store.claim({ nodeId: 'paused', epoch: rejoined.epoch, free: BIG });
    assert.deepEqual(again.map((t) => [t.id, t.attempt]), [['fence-1', 2]]);
    await assert.rejects(store.report('fence-1', 'paused', old.epoch, { kind: 'running' }), hasCode('BERTH_CLUSTER_FENCED'));
    const running = await store.report('fence-1', 'paused', rejoined.epoch, { kind: 'running', containerId: 'c1' });
    assert.equal(running.state, 'running');
    // Reports may be sent again (a no-op); a report the state does not allow is BERTH_TASK_STATE.
    assert.equal((await store.report('fence-1', 'paused', rejoined.epoch, { kind: 'running', containerId: 'c1' })).state, 'running');
    const exited = await store.report('fence-1', 'paused', rejoined.epoch, { kind: 'exited', exitCode: 3, end: 'failed' });
    assert.deepEqual([exited.state, exited.exitCode, exited.endReason], ['exited', 3, 'failed']);
    assert.equal((await store.report('fence-1', 'paused', rejoined.epoch, { kind: 'exited', exitCode: 3, end: 'failed' })).state, 'exited');
    await assert.rejects(store.report('fence-1', 'paused', rejoined.epoch, { kind: 'running' }), hasCode('BERTH_TASK_STATE'));
    await assert.rejects(store.report('nosuch', 'paused', rejoined.epoch, { kind: 'running' }), hasCode('BERTH_TASK_NOT_FOUND'));
  });

  test('an expired lease ends running tasks lost or queues them again as their restart policy asks, and returns claimed ones to the queue', async () => {
    const db = await newDatabase();
    const store = await openStore(db, { lease: '1h' });
    await store.enqueue({ id: 'once', spec: {} });
    await store.enqueue({ id: 'again', spec: {}, restartOnLost: 1 });
    await store.enqueue({ id: 'unstarted', spec: {} });
    const dying = await node(store, 'dying');
    assert.equal((await store.claim({ nodeId: 'dying', epoch: dying.epoch, free: BIG })).length, 3);
    await store.report('once', 'dying', dying.epoch, { kind: 'running' });
    await store.report('again', 'dying', dying.epoch, { kind: 'running' });
    // The survivor's lease (3 h) lasts past the moment the sweep looks at; the dying node's (1 h) does not.
    const survivor = await node(await openStore(db, { lease: '3h' }), 'survivor');
    const at = new Date(Date.now() + 3600_000 + 1000);
    // Three sweepers at once (every node runs one): each expired node is handled once.
    const others = await Promise.all([openStore(db), openStore(db)]);
    const results = await Promise.all([store, ...others].map((s) => s.expireLeases(at)));
    const nodes = results.flatMap((r) => r.nodes);
    assert.ok(nodes.filter((n) => n === 'dying').length === 1, `dying declared down once: ${JSON.stringify(results)}`);
    assert.deepEqual(results.flatMap((r) => r.lost), ['once']);
    assert.deepEqual(results.flatMap((r) => r.requeued).sort(), ['again', 'unstarted']);
    const again = (await store.getTask('again'))!;
    assert.deepEqual([again.state, again.lostCount, again.nodeId], ['queued', 1, undefined]);
    // The requeued task runs once more elsewhere; lost again, its restarts are used up and it ends lost.
    const taken = await store.claim({ nodeId: 'survivor', epoch: survivor.epoch, free: BIG });
    assert.deepEqual(taken.map((t) => t.id).sort(), ['again', 'unstarted']);
    await store.report('again', 'survivor', survivor.epoch, { kind: 'running' });
    const later = await store.expireLeases(new Date(Date.now() + 4 * 3600_000));
    assert.deepEqual(later.lost, ['again']);
    assert.deepEqual(later.requeued, ['unstarted']);
  });

  test('reports racing the expiry of their node\'s lease: each task ends once, exited when its report won, lost when the expiry did', async () => {
    const db = await newDatabase();
    const store = await openStore(db, { lease: '1h', poolSize: 12 });
    const sweeper = await openStore(db);
    const count = 200;
    await store.enqueueMany(tasks('race', count));
    const lease = await node(store, 'racer');
    const claimed = await store.claim({ nodeId: 'racer', epoch: lease.epoch, free: BIG, limit: count });
    assert.equal(claimed.length, count);
    await Promise.all(claimed.map((t) => store.report(t.id, 'racer', lease.epoch, { kind: 'running' })));
    const outcomes = new Map<string, 'reported' | 'fenced'>();
    const reports = claimed.map(async (t) => {
      try {
        await store.report(t.id, 'racer', lease.epoch, { kind: 'exited', exitCode: 0, end: 'success' });
        outcomes.set(t.id, 'reported');
      } catch (error) {
        assert.ok(hasCode('BERTH_CLUSTER_FENCED')(error), String(error));
        outcomes.set(t.id, 'fenced');
      }
    });
    // The sweep starts once some reports are in, so both sides win some.
    const sweep = (async () => {
      await pollUntil('some reports', () => (outcomes.size >= count / 10 ? true : undefined), { intervalMs: 1 });
      return sweeper.expireLeases(new Date(Date.now() + 2 * 3600_000));
    })();
    const [expiry] = await Promise.all([sweep, ...reports]);
    const all = await store.listTasks({ limit: count + 1 });
    for (const task of all) {
      const outcome = outcomes.get(task.id);
      assert.equal(task.state, outcome === 'reported' ? 'exited' : 'lost', `${task.id}: ${outcome}`);
    }
    assert.deepEqual([...expiry.lost].sort(), all.filter((t) => t.state === 'lost').map((t) => t.id).sort());
    const ends = await readEventsUntil(store, 1 + count * 4 + 1);
    const endsPerTask = new Map<string, number>();
    for (const e of ends.events) if (e.kind === 'task.exited' || e.kind === 'task.lost') endsPerTask.set(e.taskId!, (endsPerTask.get(e.taskId!) ?? 0) + 1);
    assert.equal(endsPerTask.size, count);
    assert.deepEqual([...endsPerTask.values()].filter((n) => n !== 1), [], 'one end event per task');
    assert.ok(outcomes.size === count);
  });

  test('a node that registers again while its lease is live keeps what its old epoch held, under the new epoch, and the old epoch is fenced', async () => {
    const store = await openStore(await newDatabase(), { lease: '1h' });
    await store.enqueueMany(tasks('restart', 2));
    const before = await node(store, 'restarted');
    assert.equal((await store.claim({ nodeId: 'restarted', epoch: before.epoch, free: BIG })).length, 2);
    await store.report('restart-0', 'restarted', before.epoch, { kind: 'running' });
    const after = await node(store, 'restarted');
    assert.deepEqual([after.epoch, after.kept], [before.epoch + 1, 2]);
    const running = (await store.getTask('restart-0'))!;
    assert.deepEqual([running.state, running.epoch], ['running', after.epoch]);
    assert.deepEqual([(await store.getTask('restart-1'))!.state, (await store.getTask('restart-1'))!.epoch], ['claimed', after.epoch]);
    assert.deepEqual((await store.heldTasks('restarted', after.epoch)).map((t) => t.id).sort(), ['restart-0', 'restart-1']);
    await assert.rejects(store.report('restart-0', 'restarted', before.epoch, { kind: 'exited', exitCode: 0 }), hasCode('BERTH_CLUSTER_FENCED'));
    assert.equal((await store.report('restart-0', 'restarted', after.epoch, { kind: 'exited', exitCode: 0, end: 'success' })).state, 'exited');
  });

  test('a node that registers again after its lease ran out keeps nothing: its running tasks end lost, its claims go back to the queue', async () => {
    const store = await openStore(await newDatabase(), { lease: '300ms' });
    await store.enqueueMany(tasks('late', 2));
    const before = await node(store, 'late');
    assert.equal((await store.claim({ nodeId: 'late', epoch: before.epoch, free: BIG })).length, 2);
    await store.report('late-0', 'late', before.epoch, { kind: 'running' });
    await pollUntil('the lease to run out', async () => ((await store.listNodes())[0]!.state === 'down' ? true : undefined), { timeoutMs: 10_000, intervalMs: 100 });
    const after = await node(store, 'late');
    assert.equal(after.kept, 0);
    const lost = (await store.getTask('late-0'))!;
    assert.equal(lost.state, 'lost');
    assert.match(lost.endReason!, /registered again after its lease ran out/);
    assert.equal((await store.getTask('late-1'))!.state, 'queued');
  });

  test('a lease that ran out with no sweep acting on it (the database away for every node) is renewed by the next heartbeat, keeping what it held', async () => {
    const store = await openStore(await newDatabase(), { lease: '300ms' });
    await store.enqueueMany(tasks('outage', 1));
    const lease = await node(store, 'outaged');
    assert.equal((await store.claim({ nodeId: 'outaged', epoch: lease.epoch, free: BIG })).length, 1);
    await pollUntil('the lease to run out', async () => ((await store.listNodes())[0]!.state === 'down' ? true : undefined), { timeoutMs: 10_000, intervalMs: 100 });
    const renewed = await store.heartbeat('outaged', lease.epoch, { memoryBytes: 0, cpuMilli: 0, tasks: 1 });
    assert.ok(renewed.leaseExpiresAt.getTime() > Date.now() - 1000);
    assert.deepEqual([(await store.listNodes())[0]!.state, (await store.getTask('outage-0'))!.state], ['ready', 'claimed']);
  });

  test('a node that leaves is down at once with reason "left", keeps its running tasks for its lease, and is not placed on', async () => {
    const store = await openStore(await newDatabase(), { lease: '1h' });
    await store.enqueueMany(tasks('leave', 2));
    const lease = await node(store, 'leaving');
    assert.equal((await store.claim({ nodeId: 'leaving', epoch: lease.epoch, free: BIG })).length, 2);
    await store.report('leave-0', 'leaving', lease.epoch, { kind: 'running' });
    assert.equal(await store.leave('leaving', lease.epoch), true);
    const [view] = await store.listNodes();
    assert.deepEqual([view!.state, view!.downReason, view!.epoch], ['down', 'left', lease.epoch]);
    assert.deepEqual([(await store.getTask('leave-0'))!.state, (await store.getTask('leave-1'))!.state], ['running', 'claimed']);
    // Leaving twice, or with a stale epoch, changes nothing; the expiry sweep leaves it alone within its lease.
    assert.equal(await store.leave('leaving', lease.epoch), false);
    assert.deepEqual(await store.expireLeases(), { nodes: [], lost: [], requeued: [] });
    await assert.rejects(store.heartbeat('leaving', lease.epoch, { memoryBytes: 0, cpuMilli: 0, tasks: 0 }), hasCode('BERTH_CLUSTER_LEASE_LOST'));
    await assert.rejects(store.claim({ nodeId: 'leaving', epoch: lease.epoch, free: BIG }), hasCode('BERTH_CLUSTER_LEASE_LOST'));
    // Back within its lease: it keeps both under its new epoch.
    const back = await node(store, 'leaving');
    assert.deepEqual([back.epoch, back.kept, (await store.listNodes())[0]!.state], [lease.epoch + 1, 2, 'ready']);
    assert.equal((await store.getTask('leave-0'))!.epoch, back.epoch);
  });

  test('a node that left and is not back within its lease: the sweep ends its running tasks lost and requeues its claims', async () => {
    const store = await openStore(await newDatabase(), { lease: '300ms' });
    await store.enqueueMany(tasks('gone', 2));
    const lease = await node(store, 'gone');
    assert.equal((await store.claim({ nodeId: 'gone', epoch: lease.epoch, free: BIG })).length, 2);
    await store.report('gone-0', 'gone', lease.epoch, { kind: 'running' });
    assert.equal(await store.leave('gone', lease.epoch), true);
    const swept = await pollUntil('the left node\'s lease time to pass', async () => {
      const result = await store.expireLeases();
      return result.lost.length + result.requeued.length > 0 ? result : undefined;
    }, { timeoutMs: 10_000, intervalMs: 100 });
    assert.deepEqual([swept.nodes, swept.lost, swept.requeued], [[], ['gone-0'], ['gone-1']]);
    const lost = (await store.getTask('gone-0'))!;
    assert.match(lost.endReason!, /left the cluster and did not come back within its lease/);
    assert.deepEqual(await store.expireLeases(), { nodes: [], lost: [], requeued: [] });
  });

  test('a lease not renewed runs out on the database\'s clock and the sweep declares the node down', async () => {
    const store = await openStore(await newDatabase(), { lease: '300ms' });
    await node(store, 'quiet');
    const expiry = await pollUntil('the lease to run out', async () => {
      const result = await store.expireLeases();
      return result.nodes.length > 0 ? result : undefined;
    }, { timeoutMs: 10_000, intervalMs: 100 });
    assert.deepEqual(expiry.nodes, ['quiet']);
    const [view] = await store.listNodes();
    assert.equal(view!.state, 'down');
    assert.match(view!.downReason!, /lost its lease/);
  });

  test('the event log is read with a cursor, in order, each event once', async () => {
    const store = await openStore(await newDatabase());
    const lease = await node(store, 'n1');
    await store.enqueue({ id: 'ev-1', spec: {} });
    const first = await readEventsUntil(store, 2);
    assert.deepEqual(first.events.map((e) => [e.kind, e.taskId ?? e.nodeId]), [['node.registered', 'n1'], ['task.queued', 'ev-1']]);
    await store.claim({ nodeId: 'n1', epoch: lease.epoch, free: BIG });
    await store.report('ev-1', 'n1', lease.epoch, { kind: 'running', containerId: 'abc' });
    await store.report('ev-1', 'n1', lease.epoch, { kind: 'exited', exitCode: 0, end: 'success' });
    const next = await readEventsUntil(store, 3, first.cursor);
    assert.deepEqual(next.events.map((e) => e.kind), ['task.claimed', 'task.running', 'task.exited']);
    assert.deepEqual(next.events[2]!.data, { exitCode: 0, end: 'success' });
    assert.equal(next.events[0]!.epoch, lease.epoch);
    const empty = await store.readEvents({ after: next.cursor });
    assert.deepEqual(empty.events, []);
    assert.equal(empty.cursor, next.cursor);
    const paged = await store.readEvents({ limit: 2 });
    assert.equal(paged.events.length, 2);
    const rest = await readEventsUntil(store, 3, paged.cursor);
    assert.deepEqual([...paged.events, ...rest.events].map((e) => e.seq), [...first.events, ...next.events].map((e) => e.seq));
    await assert.rejects(store.readEvents({ after: 'nonsense' }), hasCode('BERTH_VALIDATION'));
  });

  test('a reader following the cursor never skips an event whose transaction commits after a later one', async () => {
    const db = await newDatabase();
    const store = await openStore(db);
    const slow = new pg.Client({ connectionString: db.url });
    await slow.connect();
    try {
      // A transaction that takes its sequence number first and commits last.
      await slow.query('BEGIN');
      await slow.query(`INSERT INTO berth_events (kind, task_id) VALUES ('task.queued', 'late')`);
      await store.enqueue({ id: 'early', spec: {} });
      const before = await store.readEvents();
      assert.deepEqual(before.events, [], 'nothing is read past a transaction still running');
      await slow.query('COMMIT');
      // Another transaction on the server (an autovacuum) may hold the view back a moment longer.
      const read: (string | undefined)[] = [];
      let cursor = before.cursor;
      await pollUntil('both events', async () => {
        const page = await store.readEvents({ after: cursor });
        cursor = page.cursor;
        read.push(...page.events.map((e) => e.taskId));
        return read.length >= 2 ? true : undefined;
      });
      assert.deepEqual(read, ['late', 'early']);
    } finally {
      await slow.end();
    }
  });

  test('submitting a task again is a no-op with the same content, BERTH_TASK_EXISTS with another', async () => {
    const store = await openStore(await newDatabase());
    const first = await store.enqueue({ id: 'dup', spec: { cmd: ['a'] }, priority: 1 });
    const again = await store.enqueue({ id: 'dup', spec: { cmd: ['a'] }, priority: 1 });
    assert.equal(first.created, true);
    assert.equal(again.created, false);
    assert.deepEqual(again.task.spec, { cmd: ['a'] });
    await assert.rejects(store.enqueue({ id: 'dup', spec: { cmd: ['b'] }, priority: 1 }), hasCode('BERTH_TASK_EXISTS'));
  });

  test('an enqueue wakes a listening waker by NOTIFY; without a connection the polling fallback still wakes it', async () => {
    const db = await newDatabase();
    const store = await openStore(db);
    const waker = new QueueWaker({ connectionString: db.url, pollIntervalMs: 3_600_000 });
    const unreachable = new QueueWaker({ connectionString: 'postgres://postgres@127.0.0.1:1/none', pollIntervalMs: 50, connectTimeoutMs: 500 });
    try {
      await pollUntil('the waker to listen', () => (waker.isListening ? true : undefined));
      const reasons: WakeReason[] = [];
      waker.onWork((reason) => reasons.push(reason));
      await store.enqueue({ id: 'wake', spec: {} });
      await pollUntil('a notification', () => (reasons.includes('notify') ? true : undefined));
      assert.ok(!reasons.includes('poll'));

      const polled: WakeReason[] = [];
      unreachable.onWork((reason) => polled.push(reason));
      await pollUntil('a poll', () => (polled.length >= 2 ? true : undefined));
      assert.ok(polled.every((r) => r === 'poll'));
      assert.equal(unreachable.isListening, false);
    } finally {
      await waker.close();
      await unreachable.close();
    }
  });
  test('a queued task cancelled reads back ended cancelled with no node, with its event; a claim after the cancel takes nothing; a second cancel changes nothing', async () => {
    const store = await openStore(await newDatabase());
    const lease = await node(store, 'n1', { zone: 'a' });
    await store.enqueue({ id: 'doomed', spec: { cmd: ['true'] }, constraints: { 'node.zone': 'b' } });
    const result = await store.cancel('doomed', 'stopped through node n1');
    assert.equal(result.cancelled, true);
    assert.equal(result.task?.state, 'exited');
    assert.equal(result.task?.endReason, 'cancelled');
    assert.equal(result.task?.exitCode, undefined);
    assert.equal(result.task?.nodeId, undefined);
    assert.ok(result.task?.endedAt instanceof Date);
    const read = await store.getTask('doomed');
    assert.deepEqual({ state: read?.state, endReason: read?.endReason, nodeId: read?.nodeId }, { state: 'exited', endReason: 'cancelled', nodeId: undefined });
    // A node that satisfies the constraint now: it still takes nothing, the task has ended.
    await store.register({ nodeId: 'n2', address: 'https://n2.test:7443', labels: { zone: 'b' }, capacity: BIG });
    const n2 = (await store.listNodes()).find((n) => n.nodeId === 'n2')!;
    assert.deepEqual(await store.claim({ nodeId: 'n2', epoch: n2.epoch, free: BIG }), []);
    assert.deepEqual(await store.claim({ nodeId: 'n1', epoch: lease.epoch, free: BIG }), []);
    const again = await store.cancel('doomed', 'again');
    assert.equal(again.cancelled, false);
    assert.equal(again.task?.state, 'exited');
    assert.deepEqual(await store.cancel('nobody', 'x'), { cancelled: false, task: undefined });
    // n1 registered, queued, cancelled, n2 registered.
    const { events } = await readEventsUntil(store, 4);
    const cancelled = events.filter((e) => e.kind === 'task.cancelled');
    assert.equal(cancelled.length, 1);
    assert.deepEqual({ taskId: cancelled[0]!.taskId, reason: cancelled[0]!.data.reason }, { taskId: 'doomed', reason: 'stopped through node n1' });
  });

  test('a cancel of a task that was claimed changes nothing and says where it is', async () => {
    const store = await openStore(await newDatabase());
    const lease = await node(store, 'n1');
    await store.enqueue({ id: 'taken', spec: {} });
    assert.deepEqual((await store.claim({ nodeId: 'n1', epoch: lease.epoch, free: BIG })).map((t) => t.id), ['taken']);
    const result = await store.cancel('taken', 'too late');
    assert.equal(result.cancelled, false);
    assert.deepEqual({ state: result.task?.state, nodeId: result.task?.nodeId }, { state: 'claimed', nodeId: 'n1' });
  });

  test('cancels racing claims: each task ends in exactly one of the two, cancelled or claimed, never both', async () => {
    const db = await newDatabase();
    const store = await openStore(db);
    const other = await openStore(db);
    const leases = await Promise.all(['n1', 'n2'].map((id) => node(store, id)));
    const ids = tasks('race', 200).map((t) => t.id);
    await store.enqueueMany(tasks('race', 200));
    // Two claimers and a canceller (on its own store, its own connections) go at the queue at once.
    const claimed: string[] = [];
    const claimer = async (lease: NodeLease): Promise<void> => {
      for (;;) {
        const got = await store.claim({ nodeId: lease.nodeId, epoch: lease.epoch, free: BIG, limit: 7 });
        claimed.push(...got.map((t) => t.id));
        if (got.length === 0) return;
      }
    };
    const cancelled: string[] = [];
    const canceller = async (): Promise<void> => {
      for (const id of [...ids].reverse()) if ((await other.cancel(id, 'raced')).cancelled) cancelled.push(id);
    };
    await Promise.all([claimer(leases[0]!), claimer(leases[1]!), canceller()]);
    assert.ok(claimed.length > 0 && cancelled.length > 0, `both sides won some (${claimed.length} claimed, ${cancelled.length} cancelled)`);
    assert.equal(new Set(claimed).size, claimed.length, 'no task claimed twice');
    assert.deepEqual(claimed.filter((id) => cancelled.includes(id)), [], 'no task both claimed and cancelled');
    assert.deepEqual([...claimed, ...cancelled].sort(), [...ids].sort(), 'every task one or the other');
    const index = await store.listTasks({ limit: 1000 });
    for (const task of index) {
      if (cancelled.includes(task.id)) assert.deepEqual({ state: task.state, endReason: task.endReason }, { state: 'exited', endReason: 'cancelled' }, task.id);
      else assert.equal(task.state, 'claimed', task.id);
    }
  });

  test('a task cancelled while queued is removed from the index; a queued, claimed or unknown one is not', async () => {
    const store = await openStore(await newDatabase());
    const lease = await node(store, 'n1');
    await store.enqueueMany([{ id: 'gone', spec: {} }, { id: 'held', spec: {} }]);
    await store.cancel('gone', 'x');
    assert.equal(await store.claim({ nodeId: 'n1', epoch: lease.epoch, free: BIG }).then((t) => t.map((x) => x.id).join()), 'held');
    await store.enqueue({ id: 'waiting', spec: {}, constraints: { 'node.zone': 'none' } });
    for (const id of ['held', 'waiting', 'nobody']) assert.equal(await store.removeUnplaced(id), false, id);
    assert.equal(await store.removeUnplaced('gone'), true);
    assert.equal(await store.getTask('gone'), undefined);
    assert.equal(await store.removeUnplaced('gone'), false);
  });

  test('a node withdraws a task it claimed and could not take on (claimed, or reported exited) under its epoch only; another node or epoch withdraws nothing', async () => {
    const store = await openStore(await newDatabase());
    const n1 = await node(store, 'n1');
    await store.enqueueMany([{ id: 'w1', spec: {} }, { id: 'w2', spec: {} }]);
    assert.equal((await store.claim({ nodeId: 'n1', epoch: n1.epoch, free: BIG })).length, 2);
    await store.report('w2', 'n1', n1.epoch, { kind: 'exited', exitCode: 125, end: 'failed' });
    await node(store, 'n2');
    assert.equal(await store.withdraw('w1', 'n2', 1, 'not its'), false);
    assert.equal(await store.withdraw('w1', 'n1', n1.epoch + 1, 'stale'), false);
    assert.equal((await store.getTask('w1'))?.state, 'claimed');
    assert.equal(await store.withdraw('w1', 'n1', n1.epoch, 'its submit was refused'), true);
    assert.equal(await store.withdraw('w2', 'n1', n1.epoch, 'its submit was refused'), true);
    assert.equal(await store.getTask('w1'), undefined);
    assert.equal(await store.getTask('w2'), undefined);
  });

  test('placement news: announcePlaced and a cancel notify the placement channel with the task id, and the waker passes them on', async () => {
    const db = await newDatabase();
    const store = await openStore(db);
    const waker = new QueueWaker({ connectionString: db.url, pollIntervalMs: 3_600_000 });
    try {
      const news: (string | undefined)[] = [];
      waker.onPlacement((taskId) => news.push(taskId));
      await pollUntil('the waker to listen', () => (waker.isListening ? true : undefined));
      await pollUntil('the connection news', () => (news.includes(undefined) ? true : undefined));
      await store.announcePlaced(['p1', 'p2']);
      await store.enqueue({ id: 'c1', spec: {} });
      await store.cancel('c1', 'x');
      await pollUntil('three placement notifications', () => (['p1', 'p2', 'c1'].every((id) => news.includes(id)) ? true : undefined));
    } finally {
      await waker.close();
    }
  });
});
