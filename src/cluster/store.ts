/**
 * The cluster's shared state in PostgreSQL (docs/cluster.md): nodes and their leases, the queue of
 * submitted tasks, the cluster-wide task index and the event log. Every call is one transaction
 * with a deadline; a database that cannot be reached fails it with BERTH_CLUSTER_UNAVAILABLE
 * (retryable), and the next call works again once it answers.
 *
 * Fencing: a node's claims carry its lease epoch, and a report moves a task only while that node
 * still holds it under that epoch; once a lease expired, the node's reports are BERTH_CLUSTER_FENCED
 * and its heartbeats and claims BERTH_CLUSTER_LEASE_LOST.
 */
import { BerthError } from '../common/errors.js';
import { Database, type Queryable } from './db.js';
import { checkBudget, checkLease, checkRegistration, queueRowOf, resolveClaim, takeWithinBudget } from './input.js';
import { CLUSTER_SCHEMA_VERSION, migrateCluster } from './migrations.js';
import { resolveClusterStoreOptions, type ClusterStoreOptions, type ResolvedClusterStoreOptions } from './options.js';
import { betterNodeExistsSql } from './placement.js';
import { eventFromRow, formatCursor, nodeFromRow, parseCursor, START_CURSOR, taskFromRow, type EventRow, type NodeRow, type TaskRow } from './rows.js';
import type { Budget, ClaimRequest, ClusterEventPage, ClusterTask, ClusterTaskState, NodeLease, NodeRegistration, NodeView, TaskSubmission, TaskTransition } from './types.js';

/** The channel enqueues (and tasks going back to the queue) notify; QueueWaker listens on it. */
export const QUEUE_CHANNEL = 'berth_queue';

/**
 * The channel a task's placement news goes on, its id the payload: a node notifies it once it has
 * recorded the tasks it claimed (`announcePlaced`), and a cancel notifies it. Requests waiting for a
 * task's placement wait on it (QueueWaker `onPlacement`), not by polling the index.
 */
export const PLACEMENT_CHANNEL = 'berth_placement';

/** The end a task cancelled while queued reads back with (state `exited`, no exit code, no node): a local task stopped before it started ends the same. */
export const CANCELLED_END = 'cancelled';

/** What `cancel` did: `cancelled` true when the task was queued and is now ended; else the task as it is (claimed meanwhile, ended, or unknown). */
export interface CancelResult {
  readonly cancelled: boolean;
  readonly task: ClusterTask | undefined;
}

const NODE_COLUMNS = `n.node_id, n.address, n.labels, n.cap_mem, n.cap_cpu, n.cap_tasks, n.epoch, n.state,
  n.lease_expires_at > now() AS lease_live, n.lease_expires_at, n.registered_at, n.heartbeat_at,
  n.load_mem, n.load_cpu, n.load_tasks, n.down_reason`;

/** What each node holds: the demand of its claimed and running tasks. */
const HELD_SQL = `SELECT node_id, sum(demand_memory_bytes) AS held_mem, sum(demand_cpu_milli) AS held_cpu, count(*) AS held_tasks
  FROM berth_tasks WHERE state IN ('claimed', 'running') GROUP BY node_id`;

/** The tasks a node held under an epoch, released: queued again, or lost (see releaseHeld). */
export interface ExpiryResult {
  /** The nodes declared down. */
  readonly nodes: readonly string[];
  /** Tasks that were running on them and ended `lost`. */
  readonly lost: readonly string[];
  /** Tasks back in the queue: claimed but not started, or running with restarts on `lost` left. */
  readonly requeued: readonly string[];
}

/** Where a task submission landed: `created` false when the same task was in the queue or index already. */
export interface EnqueueResult {
  readonly task: ClusterTask;
  readonly created: boolean;
}

export interface ListTasksFilter {
  readonly states?: readonly ClusterTaskState[];
  readonly nodeId?: string;
  /** Default 1000. */
  readonly limit?: number;
  /** Default `oldest-first` (submission order); `newest-first` with `limit` gives the newest. */
  readonly order?: 'oldest-first' | 'newest-first';
}

export class ClusterStore {
  readonly options: ResolvedClusterStoreOptions;
  readonly #db: Database;

  private constructor(options: ResolvedClusterStoreOptions, db: Database) {
    this.options = options;
    this.#db = db;
  }

  /**
   * Connects to the cluster database and brings its schema up to date (safe with several agents
   * starting at once). BERTH_CLUSTER_UNAVAILABLE when it does not answer, BERTH_CLUSTER_SCHEMA when
   * its schema is newer than this berth.
   */
  static async open(input: ClusterStoreOptions): Promise<ClusterStore> {
    const options = resolveClusterStoreOptions(input);
    const db = new Database(options);
    try {
      await migrateCluster(db);
    } catch (error) {
      await db.close().catch(() => undefined);
      throw error;
    }
    return new ClusterStore(options, db);
  }

  /** The newest cluster schema version this berth knows. */
  static readonly schemaVersion = CLUSTER_SCHEMA_VERSION;

  // ---- nodes ----

  /**
   * Registers a node and starts its lease with a new epoch, one more than its last. A previous
   * registration whose lease is still live (the agent restarted, or left with SIGTERM, and is back
   * within its lease) is replaced and what it held (claimed and running) moves to the new epoch, so
   * the restarted agent goes on with its recovered tasks (`kept` counts them). One whose lease ran
   * out keeps nothing: what it held is released as an expiry releases it.
   */
  async register(node: NodeRegistration): Promise<NodeLease> {
    checkRegistration(node);
    return this.#db.transaction('register the node', async (client) => {
      const previous = await client.query<{ epoch: string; state: string; down_reason: string | null; live: boolean }>(
        'SELECT epoch, state, down_reason, lease_expires_at > now() AS live FROM berth_nodes WHERE node_id = $1 FOR UPDATE',
        [node.nodeId],
      );
      const old = previous.rows[0];
      const keeps = old !== undefined && old.live && (old.state === 'ready' || old.down_reason === 'left');
      if (old !== undefined && !keeps && (old.state === 'ready' || old.down_reason === 'left')) {
        await releaseHeld(client, [{ nodeId: node.nodeId, epoch: Number(old.epoch), reason: `node ${node.nodeId} registered again after its lease ran out (epoch ${old.epoch} replaced)` }]);
      }
      const result = await client.query<{ epoch: string; lease_expires_at: Date }>(
        `INSERT INTO berth_nodes AS n (node_id, address, labels, cap_mem, cap_cpu, cap_tasks, epoch, state, lease_expires_at, registered_at, heartbeat_at)
         VALUES ($1, $2, $3::jsonb, $4, $5, $6, 1, 'ready', now() + $7 * interval '1 millisecond', now(), now())
         ON CONFLICT (node_id) DO UPDATE SET address = EXCLUDED.address, labels = EXCLUDED.labels, cap_mem = EXCLUDED.cap_mem,
           cap_cpu = EXCLUDED.cap_cpu, cap_tasks = EXCLUDED.cap_tasks, epoch = n.epoch + 1, state = 'ready',
           lease_expires_at = EXCLUDED.lease_expires_at, registered_at = now(), heartbeat_at = now(),
           load_mem = 0, load_cpu = 0, load_tasks = 0, down_reason = NULL
         RETURNING epoch, lease_expires_at`,
        [node.nodeId, node.address, JSON.stringify(node.labels ?? {}), node.capacity.memoryBytes, node.capacity.cpuMilli, node.capacity.tasks, this.options.leaseMs],
      );
      const row = result.rows[0]!;
      let kept = 0;
      if (keeps) {
        const moved = await client.query('UPDATE berth_tasks SET epoch = $3 WHERE node_id = $1 AND epoch = $2 AND state IN (\'claimed\', \'running\')', [node.nodeId, Number(old.epoch), Number(row.epoch)]);
        kept = moved.rowCount ?? 0;
      }
      await appendEvent(client, 'node.registered', {
        nodeId: node.nodeId,
        epoch: Number(row.epoch),
        data: { address: node.address, labels: node.labels ?? {}, capacity: node.capacity, ...(keeps ? { keptFromEpoch: Number(old.epoch), kept } : {}) },
      });
      return { nodeId: node.nodeId, epoch: Number(row.epoch), leaseExpiresAt: row.lease_expires_at, kept };
    });
  }

  /**
   * Renews the node's lease and records its load. BERTH_CLUSTER_LEASE_LOST when the epoch is not
   * the node's current one, or the node was declared down (an expiry swept it, or it left): it must
   * register again. A lease that ran out but that no sweep has acted on yet (the database was away
   * for every node: nobody could sweep) is renewed: nothing it held was given to another node.
   */
  async heartbeat(nodeId: string, epoch: number, load: Budget): Promise<NodeLease> {
    checkLease(nodeId, epoch);
    checkBudget(load, 'load');
    return this.#db.transaction('renew the node\'s lease', async (client) => {
      const result = await client.query<{ lease_expires_at: Date }>(
        `UPDATE berth_nodes SET lease_expires_at = now() + $3 * interval '1 millisecond', heartbeat_at = now(),
           load_mem = $4, load_cpu = $5, load_tasks = $6
         WHERE node_id = $1 AND epoch = $2 AND state = 'ready'
         RETURNING lease_expires_at`,
        [nodeId, epoch, this.options.leaseMs, load.memoryBytes, load.cpuMilli, load.tasks],
      );
      const row = result.rows[0];
      if (row === undefined) throw await leaseLost(client, nodeId, epoch);
      return { nodeId, epoch, leaseExpiresAt: row.lease_expires_at };
    });
  }

  /**
   * The node leaves the cluster (its agent shuts down gracefully): its row is marked `down` with
   * reason `left` at once (nothing more is placed on it), and what it still holds stays held, as a
   * single agent leaves its containers running for the next agent to follow: back within its lease,
   * the node registers again and keeps it; otherwise the first expiry after its lease time releases
   * it (running tasks end lost or are requeued, claimed ones are requeued). The agent releases the
   * claimed tasks it has not started before it leaves. A stale epoch (the node was replaced or
   * declared down already) changes nothing and is not an error: `false` says so.
   */
  async leave(nodeId: string, epoch: number): Promise<boolean> {
    checkLease(nodeId, epoch);
    return this.#db.transaction('leave the cluster', async (client) => {
      const result = await client.query<{ node_id: string }>(
        `UPDATE berth_nodes SET state = 'down', down_reason = 'left' WHERE node_id = $1 AND epoch = $2 AND state = 'ready' RETURNING node_id`,
        [nodeId, epoch],
      );
      if (result.rows.length === 0) return false;
      await appendEvent(client, 'node.down', { nodeId, epoch, data: { reason: 'left' } });
      return true;
    });
  }

  /** Every node ever registered, by id, with its state, its reported load and what the cluster placed on it. */
  async listNodes(): Promise<NodeView[]> {
    const result = await this.#db.query<NodeRow>(
      'list the nodes',
      `SELECT ${NODE_COLUMNS}, h.held_mem, h.held_cpu, h.held_tasks FROM berth_nodes n LEFT JOIN (${HELD_SQL}) h USING (node_id) ORDER BY n.node_id`,
    );
    return result.rows.map(nodeFromRow);
  }

  // ---- queue ----

  /**
   * Queues a task and wakes the claimers (NOTIFY on commit). The same id with the same content is a
   * no-op (`created` false), so a submit may be sent again after a failure; with other content it is
   * BERTH_TASK_EXISTS.
   */
  async enqueue(task: TaskSubmission): Promise<EnqueueResult> {
    const row = queueRowOf(task);
    return this.#db.transaction('queue the task', async (client) => {
      const inserted = await client.query<TaskRow>(
        `INSERT INTO berth_tasks (task_id, spec, priority, constraint_labels, demand_memory_bytes, demand_cpu_milli, restart_on_lost, state, submitted_at, queued_at)
         VALUES ($1, $2::jsonb, $3, $4::jsonb, $5, $6, $7, 'queued', now(), now())
         ON CONFLICT (task_id) DO NOTHING RETURNING *`,
        [row.id, row.specJson, row.priority, JSON.stringify(row.constraintLabels), row.demandMemoryBytes, row.demandCpuMilli, row.restartOnLost],
      );
      const created = inserted.rows[0];
      if (created !== undefined) {
        await appendEvent(client, 'task.queued', { taskId: row.id, data: { priority: row.priority } });
        await client.query('SELECT pg_notify($1, $2)', [QUEUE_CHANNEL, row.id]);
        return { task: taskFromRow(created), created: true };
      }
      const same = await client.query<TaskRow & { same: boolean }>(
        `SELECT *, (spec = $2::jsonb AND priority = $3 AND constraint_labels = $4::jsonb AND demand_memory_bytes = $5
           AND demand_cpu_milli = $6 AND restart_on_lost = $7) AS same FROM berth_tasks WHERE task_id = $1`,
        [row.id, row.specJson, row.priority, JSON.stringify(row.constraintLabels), row.demandMemoryBytes, row.demandCpuMilli, row.restartOnLost],
      );
      const existing = same.rows[0]!;
      if (!existing.same) throw new BerthError('BERTH_TASK_EXISTS', `a task with id ${row.id} was submitted already, with another spec`, { context: { taskId: row.id } });
      return { task: taskFromRow(existing), created: false };
    });
  }

  /**
   * Queues many tasks in one transaction (one NOTIFY); ids already in the index are skipped without
   * comparing their content. Resolves with the ids queued.
   */
  async enqueueMany(tasks: readonly TaskSubmission[]): Promise<string[]> {
    const rows = tasks.map((task, i) => queueRowOf(task, `tasks[${i}]`));
    const records = rows.map((r) => ({
      task_id: r.id,
      spec: JSON.parse(r.specJson) as unknown,
      priority: r.priority,
      constraint_labels: r.constraintLabels,
      demand_memory_bytes: r.demandMemoryBytes,
      demand_cpu_milli: r.demandCpuMilli,
      restart_on_lost: r.restartOnLost,
    }));
    return this.#db.transaction('queue the tasks', async (client) => {
      const inserted = await client.query<{ task_id: string }>(
        `WITH ins AS (
           INSERT INTO berth_tasks (task_id, spec, priority, constraint_labels, demand_memory_bytes, demand_cpu_milli, restart_on_lost, state, submitted_at, queued_at)
           SELECT x.task_id, x.spec, x.priority, x.constraint_labels, x.demand_memory_bytes, x.demand_cpu_milli, x.restart_on_lost, 'queued', now(), now()
           FROM jsonb_to_recordset($1::jsonb) AS x(task_id text, spec jsonb, priority integer, constraint_labels jsonb,
             demand_memory_bytes bigint, demand_cpu_milli bigint, restart_on_lost integer, ord integer)
           ORDER BY x.ord
           ON CONFLICT (task_id) DO NOTHING RETURNING task_id, priority, seq
         ), ev AS (
           INSERT INTO berth_events (kind, task_id, data) SELECT 'task.queued', task_id, jsonb_build_object('priority', priority) FROM ins ORDER BY seq
         )
         SELECT task_id FROM ins ORDER BY seq`,
        [JSON.stringify(records.map((r, ord) => ({ ...r, ord })))],
      );
      if (inserted.rows.length > 0) await client.query('SELECT pg_notify($1, $2)', [QUEUE_CHANNEL, '']);
      return inserted.rows.map((r) => r.task_id);
    });
  }

  /**
   * Claims queued tasks for a node: FIFO within priority (higher first), only tasks whose constraints
   * the node's labels satisfy, whose demand fits its free budget, and that the placement rule gives
   * it (placement.ts: the best live node under the strategy, or any node once the task has waited the
   * placement grace). Rows are taken with FOR UPDATE SKIP LOCKED, so concurrent claimers never get the
   * same task; each taken task records the node and its epoch. BERTH_CLUSTER_LEASE_LOST when the
   * epoch is not the node's live lease.
   */
  async claim(request: ClaimRequest): Promise<ClusterTask[]> {
    const claim = resolveClaim(request);
    const scan = Math.max(claim.limit * 4, 64);
    return this.#db.transaction('claim tasks', async (client) => {
      // FOR SHARE: an expiry (FOR UPDATE of the node) cannot declare the node down under this claim.
      const node = await client.query<{ cap_mem: string; cap_cpu: string; cap_tasks: string; labels: Record<string, string> }>(
        `SELECT cap_mem, cap_cpu, cap_tasks, labels FROM berth_nodes
         WHERE node_id = $1 AND epoch = $2 AND state = 'ready' AND lease_expires_at > now() FOR SHARE`,
        [claim.nodeId, claim.epoch],
      );
      const me = node.rows[0];
      if (me === undefined) throw await leaseLost(client, claim.nodeId, claim.epoch);
      const capacity = { memoryBytes: Number(me.cap_mem), cpuMilli: Number(me.cap_cpu), tasks: Number(me.cap_tasks) };
      const used = {
        memoryBytes: Math.max(0, capacity.memoryBytes - claim.free.memoryBytes),
        cpuMilli: Math.max(0, capacity.cpuMilli - claim.free.cpuMilli),
        tasks: Math.max(0, capacity.tasks - claim.free.tasks),
      };
      const candidates = await client.query<TaskRow & { seq: string }>(
        `WITH me AS (
           SELECT $1::text AS node_id, $2::bigint AS cap_mem, $3::bigint AS cap_cpu, $4::bigint AS cap_tasks,
                  $5::bigint AS used_mem, $6::bigint AS used_cpu, $7::bigint AS used_tasks
         ), others AS (
           SELECT n.node_id, n.labels, n.cap_mem, n.cap_cpu, n.cap_tasks,
                  COALESCE(h.held_mem, 0) AS used_mem, COALESCE(h.held_cpu, 0) AS used_cpu, COALESCE(h.held_tasks, 0) AS used_tasks
           FROM berth_nodes n LEFT JOIN (${HELD_SQL}) h USING (node_id)
           WHERE n.state = 'ready' AND n.lease_expires_at > now() AND n.node_id <> $1
         )
         SELECT t.* FROM berth_tasks t, me
         WHERE t.state = 'queued'
           AND $8::jsonb @> t.constraint_labels
           AND t.demand_memory_bytes <= $9 AND t.demand_cpu_milli <= $10
           AND (t.queued_at <= now() - $11 * interval '1 millisecond' OR NOT ${betterNodeExistsSql(claim.strategy)})
         ORDER BY t.priority DESC, t.seq
         LIMIT $12
         FOR UPDATE OF t SKIP LOCKED`,
        [
          claim.nodeId, capacity.memoryBytes, capacity.cpuMilli, capacity.tasks, used.memoryBytes, used.cpuMilli, used.tasks,
          JSON.stringify(me.labels), claim.free.memoryBytes, claim.free.cpuMilli, this.options.placementGraceMs, scan,
        ],
      );
      const taken = takeWithinBudget(
        candidates.rows.map((row) => ({ row, demandMemoryBytes: Number(row.demand_memory_bytes), demandCpuMilli: Number(row.demand_cpu_milli) })),
        claim.free,
        claim.limit,
      );
      if (taken.length === 0) return [];
      const ids = taken.map((t) => t.row.task_id);
      const updated = await client.query<TaskRow>(
        `WITH up AS (
           UPDATE berth_tasks SET state = 'claimed', node_id = $2, epoch = $3, attempt = attempt + 1, claimed_at = now()
           WHERE task_id = ANY($1::text[]) AND state = 'queued' RETURNING *
         ), ev AS (
           INSERT INTO berth_events (kind, task_id, node_id, epoch, data) SELECT 'task.claimed', task_id, node_id, epoch, jsonb_build_object('attempt', attempt) FROM up ORDER BY seq
         )
         SELECT * FROM up`,
        [ids, claim.nodeId, claim.epoch],
      );
      const byId = new Map(updated.rows.map((row) => [row.task_id, row]));
      return ids.flatMap((id) => {
        const row = byId.get(id);
        return row === undefined ? [] : [taskFromRow(row)];
      });
    });
  }

  /**
   * A node's report of a task it holds: running (from claimed), exited or lost (from claimed or
   * running). Applied only while the node holds the task under that epoch and its lease is live;
   * otherwise BERTH_CLUSTER_FENCED: the node must stop and remove the task's container. A report
   * the task already shows is a no-op, so reports may be sent again; one its state does not allow
   * (running after exited) is BERTH_TASK_STATE.
   */
  async report(taskId: string, nodeId: string, epoch: number, transition: TaskTransition): Promise<ClusterTask> {
    checkLease(nodeId, epoch);
    const step = transitionSql(transition);
    return this.#db.transaction('report the task', async (client) => {
      const updated = await client.query<TaskRow>(
        `WITH up AS (
           UPDATE berth_tasks t SET ${step.set}
           FROM berth_nodes n
           WHERE t.task_id = $1 AND t.node_id = $2 AND t.epoch = $3 AND t.state = ANY($4::text[])
             AND n.node_id = t.node_id AND n.epoch = t.epoch AND n.state = 'ready'
           RETURNING t.*
         ), ev AS (
           INSERT INTO berth_events (kind, task_id, node_id, epoch, data) SELECT $5, task_id, node_id, epoch, $6::jsonb FROM up
         )
         SELECT * FROM up`,
        [taskId, nodeId, epoch, step.from, `task.${transition.kind}`, JSON.stringify(step.event), ...step.params],
      );
      const row = updated.rows[0];
      if (row !== undefined) return taskFromRow(row);
      return refusedReport(client, taskId, nodeId, epoch, transition.kind);
    });
  }

  /** Gives a claimed task that the node will not start back to the queue (and wakes the claimers). */
  async release(taskId: string, nodeId: string, epoch: number, reason = 'released by its node'): Promise<ClusterTask> {
    checkLease(nodeId, epoch);
    return this.#db.transaction('release the task', async (client) => {
      const updated = await client.query<TaskRow>(
        `WITH up AS (
           UPDATE berth_tasks t SET state = 'queued', node_id = NULL, epoch = NULL, queued_at = now(), claimed_at = NULL
           FROM berth_nodes n
           WHERE t.task_id = $1 AND t.node_id = $2 AND t.epoch = $3 AND t.state = 'claimed'
             AND n.node_id = t.node_id AND n.epoch = t.epoch AND n.state = 'ready'
           RETURNING t.*
         ), ev AS (
           INSERT INTO berth_events (kind, task_id, node_id, epoch, data) SELECT 'task.released', task_id, $2, $3, jsonb_build_object('reason', $4::text) FROM up
         )
         SELECT * FROM up`,
        [taskId, nodeId, epoch, reason],
      );
      const row = updated.rows[0];
      if (row === undefined) return refusedReport(client, taskId, nodeId, epoch, 'queued');
      await client.query('SELECT pg_notify($1, $2)', [QUEUE_CHANNEL, taskId]);
      return taskFromRow(row);
    });
  }

  /**
   * Cancels a task still queued: one row update guarded by `state = 'queued'` ends it `exited` with
   * end `cancelled`, no exit code and no node (a local task stopped before it started ends the
   * same), with a `task.cancelled` event carrying `reason`, and notifies the placement channel. A
   * claim racing it either took the row first (the update then finds it claimed and changes nothing:
   * `cancelled` false, the task as it is, for the caller to stop it on its holder) or finds it ended
   * (the row is locked by the update, and the claim's own update is guarded by `state = 'queued'`):
   * exactly one of the two happens.
   */
  async cancel(taskId: string, reason: string): Promise<CancelResult> {
    return this.#db.transaction('cancel the task', async (client) => {
      const updated = await client.query<TaskRow>(
        `WITH up AS (
           UPDATE berth_tasks SET state = 'exited', end_reason = $2, exit_code = NULL, ended_at = now()
           WHERE task_id = $1 AND state = 'queued' RETURNING *
         ), ev AS (
           INSERT INTO berth_events (kind, task_id, data) SELECT 'task.cancelled', task_id, jsonb_build_object('reason', $3::text) FROM up
         )
         SELECT * FROM up`,
        [taskId, CANCELLED_END, reason],
      );
      const row = updated.rows[0];
      if (row !== undefined) {
        await client.query('SELECT pg_notify($1, $2)', [PLACEMENT_CHANNEL, taskId]);
        return { cancelled: true, task: taskFromRow(row) };
      }
      const found = await client.query<TaskRow>('SELECT * FROM berth_tasks WHERE task_id = $1', [taskId]);
      const existing = found.rows[0];
      return { cancelled: false, task: existing === undefined ? undefined : taskFromRow(existing) };
    });
  }

  /**
   * Removes a task that ended without ever being placed (cancelled while queued) from the index,
   * with a `task.removed` event: no node holds a record of it, so the index is its only one.
   * Resolves false (and changes nothing) for any other task: one that ran is removed on its node.
   */
  async removeUnplaced(taskId: string): Promise<boolean> {
    return this.#db.transaction('remove the task', async (client) => {
      const deleted = await client.query<{ task_id: string }>(
        `WITH del AS (
           DELETE FROM berth_tasks WHERE task_id = $1 AND state = 'exited' AND node_id IS NULL RETURNING task_id
         ), ev AS (
           INSERT INTO berth_events (kind, task_id) SELECT 'task.removed', task_id FROM del
         )
         SELECT task_id FROM del`,
        [taskId],
      );
      return deleted.rows.length > 0;
    });
  }

  /**
   * Withdraws a task this node claimed and could not take on, for the submit that waited for it here
   * and answered the refusal (as a single agent's submit records nothing it refuses): the row is
   * deleted while this node holds it under `epoch`, claimed or already reported exited, with a
   * `task.removed` event carrying `reason`. Resolves false (nothing changed) otherwise.
   */
  async withdraw(taskId: string, nodeId: string, epoch: number, reason: string): Promise<boolean> {
    checkLease(nodeId, epoch);
    return this.#db.transaction('withdraw the task', async (client) => {
      const deleted = await client.query<{ task_id: string }>(
        `WITH del AS (
           DELETE FROM berth_tasks WHERE task_id = $1 AND node_id = $2 AND epoch = $3 AND state IN ('claimed', 'exited') RETURNING task_id
         ), ev AS (
           INSERT INTO berth_events (kind, task_id, node_id, epoch, data) SELECT 'task.removed', task_id, $2, $3, jsonb_build_object('reason', $4::text) FROM del
         )
         SELECT task_id FROM del`,
        [taskId, nodeId, epoch, reason],
      );
      return deleted.rows.length > 0;
    });
  }

  /**
   * Tells the cluster that this node has recorded the tasks it claimed (NOTIFY on the placement
   * channel, one per task): requests waiting on any node for their placement go on to this node.
   */
  async announcePlaced(taskIds: readonly string[]): Promise<void> {
    if (taskIds.length === 0) return;
    await this.#db.query('announce the placed tasks', 'SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id', [PLACEMENT_CHANNEL, [...taskIds]]);
  }

  /** What a node holds under its epoch (claimed and running), in claim order: for a node to check its own view after a failed call. */
  async heldTasks(nodeId: string, epoch: number): Promise<ClusterTask[]> {
    checkLease(nodeId, epoch);
    const result = await this.#db.query<TaskRow>(
      'list the node\'s tasks',
      `SELECT * FROM berth_tasks WHERE node_id = $1 AND epoch = $2 AND state IN ('claimed', 'running') ORDER BY claimed_at, seq`,
      [nodeId, epoch],
    );
    return result.rows.map(taskFromRow);
  }

  async getTask(taskId: string): Promise<ClusterTask | undefined> {
    const result = await this.#db.query<TaskRow>('read the task', 'SELECT * FROM berth_tasks WHERE task_id = $1', [taskId]);
    const row = result.rows[0];
    return row === undefined ? undefined : taskFromRow(row);
  }

  /** The cluster-wide task index, in submission order (or newest first). */
  async listTasks(filter: ListTasksFilter = {}): Promise<ClusterTask[]> {
    const result = await this.#db.query<TaskRow>(
      'list the tasks',
      `SELECT * FROM berth_tasks WHERE ($1::text[] IS NULL OR state = ANY($1::text[])) AND ($2::text IS NULL OR node_id = $2)
       ORDER BY seq ${filter.order === 'newest-first' ? 'DESC' : 'ASC'} LIMIT $3`,
      [filter.states === undefined ? null : [...filter.states], filter.nodeId ?? null, filter.limit ?? 1000],
    );
    return result.rows.map(taskFromRow);
  }

  // ---- failure ----

  /**
   * Declares down every ready node whose lease ran out by `at` (default: the database's now), and
   * releases what they held: running tasks end `lost` (reason naming the node and its lease), or go
   * back to the queue while their `restartOnLost` allows; claimed tasks go back to the queue. Safe to
   * run on every node at once: each expired node is handled by one caller (SKIP LOCKED), and each
   * task changes in one row update.
   */
  async expireLeases(at?: Date): Promise<ExpiryResult> {
    return this.#db.transaction('expire node leases', async (client) => {
      const expired = await client.query<{ node_id: string; epoch: string; lease_expires_at: Date }>(
        `SELECT node_id, epoch, lease_expires_at FROM berth_nodes
         WHERE state = 'ready' AND lease_expires_at <= COALESCE($1::timestamptz, now())
         ORDER BY node_id FOR UPDATE SKIP LOCKED`,
        [at ?? null],
      );
      // Nodes that left (SIGTERM) and did not come back within their lease: what they still hold is released now.
      const left = await client.query<{ node_id: string; epoch: string }>(
        `SELECT n.node_id, n.epoch FROM berth_nodes n
         WHERE n.state = 'down' AND n.down_reason = 'left' AND n.lease_expires_at <= COALESCE($1::timestamptz, now())
           AND EXISTS (SELECT 1 FROM berth_tasks t WHERE t.node_id = n.node_id AND t.epoch = n.epoch AND t.state IN ('claimed', 'running'))
         ORDER BY n.node_id FOR UPDATE OF n SKIP LOCKED`,
        [at ?? null],
      );
      const leftReleased = await releaseHeld(
        client,
        left.rows.map((row) => ({ nodeId: row.node_id, epoch: Number(row.epoch), reason: `node ${row.node_id} left the cluster and did not come back within its lease (epoch ${row.epoch})` })),
      );
      if (expired.rows.length === 0) return { nodes: [], ...leftReleased };
      const nodes = expired.rows.map((row) => ({
        nodeId: row.node_id,
        epoch: Number(row.epoch),
        reason: `node ${row.node_id} lost its lease (epoch ${row.epoch}, expired ${row.lease_expires_at.toISOString()})`,
      }));
      await client.query(
        `WITH down AS (
           UPDATE berth_nodes n SET state = 'down', down_reason = x.reason
           FROM unnest($1::text[], $2::text[]) AS x(node_id, reason) WHERE n.node_id = x.node_id RETURNING n.node_id, n.epoch, x.reason
         )
         INSERT INTO berth_events (kind, node_id, epoch, data) SELECT 'node.down', node_id, epoch, jsonb_build_object('reason', reason) FROM down`,
        [nodes.map((n) => n.nodeId), nodes.map((n) => n.reason)],
      );
      const released = await releaseHeld(client, nodes);
      return { nodes: nodes.map((n) => n.nodeId), lost: [...leftReleased.lost, ...released.lost], requeued: [...leftReleased.requeued, ...released.requeued] };
    });
  }

  // ---- events ----

  /**
   * Events after the cursor (default: from the start), oldest first, at most `limit` (default 1000).
   * Only events of transactions older than every transaction still running are returned, so a
   * reader that follows the cursor never skips one that commits late.
   */
  async readEvents(options: { after?: string; limit?: number } = {}): Promise<ClusterEventPage> {
    const after = options.after ?? START_CURSOR;
    const cursor = parseCursor(after);
    if (cursor === undefined) throw new BerthError('BERTH_VALIDATION', `after: "${after}" is not an event cursor`, { context: { issues: [{ field: 'after', rule: 'must be a cursor from readEvents' }] } });
    const result = await this.#db.query<EventRow & { xid_text: string }>(
      'read the cluster events',
      `SELECT seq, xid::text AS xid_text, at, kind, task_id, node_id, epoch, data FROM berth_events
       WHERE (xid, seq) > ($1::text::xid8, $2::bigint) AND xid < pg_snapshot_xmin(pg_current_snapshot())
       ORDER BY xid, seq LIMIT $3`,
      [cursor.xid.toString(), cursor.seq.toString(), options.limit ?? 1000],
    );
    const last = result.rows.at(-1);
    return {
      events: result.rows.map(eventFromRow),
      cursor: last === undefined ? after : formatCursor({ xid: BigInt(last.xid_text), seq: BigInt(last.seq) }),
    };
  }

  /** Closes the pool; calls after it fail. */
  async close(): Promise<void> {
    await this.#db.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

async function appendEvent(client: Queryable, kind: string, fields: { taskId?: string; nodeId?: string; epoch?: number; data?: Record<string, unknown> }): Promise<void> {
  await client.query('INSERT INTO berth_events (kind, task_id, node_id, epoch, data) VALUES ($1, $2, $3, $4, $5::jsonb)', [
    kind,
    fields.taskId ?? null,
    fields.nodeId ?? null,
    fields.epoch ?? null,
    JSON.stringify(fields.data ?? {}),
  ]);
}

/**
 * Releases what nodes held under the given epochs, each task in one row update: claimed tasks go
 * back to the queue; running ones too while `lost_count < restart_on_lost` (counting one more), else
 * they end `lost` with the node's reason. Wakes the claimers when anything was queued.
 */
async function releaseHeld(client: Queryable, nodes: readonly { nodeId: string; epoch: number; reason: string }[]): Promise<{ lost: string[]; requeued: string[] }> {
  if (nodes.length === 0) return { lost: [], requeued: [] };
  const result = await client.query<{ task_id: string; state: ClusterTaskState }>(
    `WITH held AS (
       SELECT t.task_id, t.node_id, t.epoch, t.state AS old_state, x.reason,
              (t.state = 'claimed' OR t.lost_count < t.restart_on_lost) AS requeue
       FROM berth_tasks t JOIN unnest($1::text[], $2::bigint[], $3::text[]) AS x(node_id, epoch, reason)
         ON t.node_id = x.node_id AND t.epoch = x.epoch
       WHERE t.state IN ('claimed', 'running')
       FOR UPDATE OF t
     ), up AS (
       UPDATE berth_tasks t SET
         state = CASE WHEN h.requeue THEN 'queued' ELSE 'lost' END,
         lost_count = CASE WHEN h.requeue AND h.old_state = 'running' THEN t.lost_count + 1 ELSE t.lost_count END,
         node_id = CASE WHEN h.requeue THEN NULL ELSE t.node_id END,
         epoch = CASE WHEN h.requeue THEN NULL ELSE t.epoch END,
         queued_at = CASE WHEN h.requeue THEN now() ELSE t.queued_at END,
         container_id = CASE WHEN h.requeue THEN NULL ELSE t.container_id END,
         claimed_at = CASE WHEN h.requeue THEN NULL ELSE t.claimed_at END,
         started_at = CASE WHEN h.requeue THEN NULL ELSE t.started_at END,
         end_reason = CASE WHEN h.requeue THEN NULL ELSE h.reason END,
         ended_at = CASE WHEN h.requeue THEN NULL ELSE now() END
       FROM held h WHERE t.task_id = h.task_id
       RETURNING t.task_id, t.state, t.seq, h.node_id, h.epoch, h.old_state, h.reason
     ), ev AS (
       INSERT INTO berth_events (kind, task_id, node_id, epoch, data)
       SELECT CASE WHEN state = 'lost' THEN 'task.lost' ELSE 'task.requeued' END, task_id, node_id, epoch,
              jsonb_build_object('reason', reason, 'from', old_state)
       FROM up ORDER BY seq
     )
     SELECT task_id, state FROM up ORDER BY seq`,
    [nodes.map((n) => n.nodeId), nodes.map((n) => n.epoch), nodes.map((n) => n.reason)],
  );
  const lost = result.rows.filter((r) => r.state === 'lost').map((r) => r.task_id);
  const requeued = result.rows.filter((r) => r.state === 'queued').map((r) => r.task_id);
  if (requeued.length > 0) await client.query('SELECT pg_notify($1, $2)', [QUEUE_CHANNEL, '']);
  return { lost, requeued };
}

/** The error for a heartbeat or claim whose epoch is not the node's live lease. */
async function leaseLost(client: Queryable, nodeId: string, epoch: number): Promise<BerthError> {
  const current = await client.query<{ epoch: string; state: string; live: boolean }>(
    'SELECT epoch, state, lease_expires_at > now() AS live FROM berth_nodes WHERE node_id = $1',
    [nodeId],
  );
  const row = current.rows[0];
  const why =
    row === undefined ? 'it is not registered'
    : Number(row.epoch) !== epoch ? `its current epoch is ${row.epoch}`
    : row.state === 'down' ? 'it was declared down'
    : 'its lease ran out';
  return new BerthError('BERTH_CLUSTER_LEASE_LOST', `node ${nodeId}'s lease of epoch ${epoch} is no longer valid: ${why}; register again`, {
    context: { nodeId, epoch, currentEpoch: row === undefined ? undefined : Number(row.epoch), nodeState: row?.state },
  });
}

/** Why a report (or a release) changed nothing: not found, already so (a no-op), a state it cannot leave, or fenced. */
async function refusedReport(client: Queryable, taskId: string, nodeId: string, epoch: number, wanted: string): Promise<ClusterTask> {
  const found = await client.query<TaskRow & { node_live: boolean | null }>(
    `SELECT t.*, (n.epoch = $3 AND n.state = 'ready') AS node_live
     FROM berth_tasks t LEFT JOIN berth_nodes n ON n.node_id = $2 WHERE t.task_id = $1`,
    [taskId, nodeId, epoch],
  );
  const row = found.rows[0];
  if (row === undefined) throw new BerthError('BERTH_TASK_NOT_FOUND', `no task ${taskId} in the cluster`, { context: { taskId } });
  const task = taskFromRow(row);
  const heldByCaller = task.nodeId === nodeId && task.epoch === epoch;
  if (row.node_live === true && heldByCaller) {
    if (task.state === wanted) return task;
    throw new BerthError('BERTH_TASK_STATE', `task ${taskId} is ${task.state}: it cannot become ${wanted}`, { context: { taskId, state: task.state, wanted } });
  }
  throw new BerthError(
    'BERTH_CLUSTER_FENCED',
    `node ${nodeId} (epoch ${epoch}) no longer holds task ${taskId}: it is ${task.state}${task.nodeId === undefined ? '' : ` on ${task.nodeId} (epoch ${task.epoch})`}; stop and remove its container`,
    { context: { taskId, nodeId, epoch, state: task.state, heldBy: task.nodeId, heldEpoch: task.epoch } },
  );
}

/** The SET clause of a report, the states it may leave, its event's data and its parameters ($7 on). */
function transitionSql(transition: TaskTransition): { set: string; from: string[]; event: Record<string, unknown>; params: unknown[] } {
  switch (transition.kind) {
    case 'running':
      return { set: `state = 'running', started_at = now(), container_id = $7`, from: ['claimed'], event: { containerId: transition.containerId ?? null }, params: [transition.containerId ?? null] };
    case 'exited':
      return {
        set: `state = 'exited', exit_code = $7, end_reason = $8, ended_at = now()`,
        from: ['claimed', 'running'],
        event: { exitCode: transition.exitCode, end: transition.end ?? null },
        params: [transition.exitCode, transition.end ?? null],
      };
    case 'lost':
      return { set: `state = 'lost', end_reason = $7, ended_at = now()`, from: ['claimed', 'running'], event: { reason: transition.reason }, params: [transition.reason] };
  }
}
