/**
 * The cluster database's schema, in numbered steps recorded in `berth_cluster_migrations`. All
 * pending steps run in one transaction under a transaction-level advisory lock, so agents that
 * start at once against one database apply each step exactly once (the others wait, then find
 * nothing to do). A database recording a step this berth does not know is BERTH_CLUSTER_SCHEMA.
 */
import { BerthError } from '../common/errors.js';
import type { Database, Queryable } from './db.js';

/** One step of the schema. Append only: a released step is never edited or renumbered. */
export interface ClusterMigration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/** The advisory lock key all migrating agents take (an arbitrary constant: "berth" in ASCII). */
export const MIGRATION_LOCK_KEY = 0x6265727468;

export const CLUSTER_MIGRATIONS: readonly ClusterMigration[] = Object.freeze([
  {
    version: 1,
    name: 'nodes, the task queue and index, the event log',
    sql: `
      CREATE TABLE berth_nodes (
        node_id               text PRIMARY KEY,
        address               text NOT NULL,
        labels                jsonb NOT NULL DEFAULT '{}',
        cap_mem               bigint NOT NULL CHECK (cap_mem >= 0),
        cap_cpu               bigint NOT NULL CHECK (cap_cpu >= 0),
        cap_tasks             bigint NOT NULL CHECK (cap_tasks >= 0),
        -- The fencing token: one more at every registration of the node id, never reused.
        epoch                 bigint NOT NULL,
        state                 text NOT NULL CHECK (state IN ('ready', 'down')),
        lease_expires_at      timestamptz NOT NULL,
        registered_at         timestamptz NOT NULL,
        heartbeat_at          timestamptz NOT NULL,
        load_mem              bigint NOT NULL DEFAULT 0,
        load_cpu              bigint NOT NULL DEFAULT 0,
        load_tasks            bigint NOT NULL DEFAULT 0,
        down_reason           text
      );
      CREATE INDEX berth_nodes_by_lease ON berth_nodes (lease_expires_at) WHERE state = 'ready';

      CREATE TABLE berth_tasks (
        -- seq orders submissions: FIFO within a priority.
        seq                   bigserial UNIQUE,
        task_id               text PRIMARY KEY,
        spec                  jsonb NOT NULL,
        priority              integer NOT NULL DEFAULT 0,
        -- The node labels the constraints ask for ({"node.disk":"ssd"} is {"disk":"ssd"}).
        constraint_labels     jsonb NOT NULL DEFAULT '{}',
        demand_memory_bytes   bigint NOT NULL DEFAULT 0 CHECK (demand_memory_bytes >= 0),
        demand_cpu_milli      bigint NOT NULL DEFAULT 0 CHECK (demand_cpu_milli >= 0),
        restart_on_lost       integer NOT NULL DEFAULT 0,
        lost_count            integer NOT NULL DEFAULT 0,
        state                 text NOT NULL CHECK (state IN ('queued', 'claimed', 'running', 'exited', 'lost')),
        node_id               text,
        epoch                 bigint,
        attempt               integer NOT NULL DEFAULT 0,
        container_id          text,
        exit_code             integer,
        end_reason            text,
        submitted_at          timestamptz NOT NULL,
        queued_at             timestamptz NOT NULL,
        claimed_at            timestamptz,
        started_at            timestamptz,
        ended_at              timestamptz,
        -- A held task names its node and epoch; a queued one names none.
        CHECK ((state IN ('claimed', 'running')) = (node_id IS NOT NULL AND epoch IS NOT NULL) OR state IN ('exited', 'lost'))
      );
      -- The queue, in claim order; the partial index stays as small as the queue.
      CREATE INDEX berth_tasks_queue ON berth_tasks (priority DESC, seq) WHERE state = 'queued';
      -- What each node holds: its load for placement, and what an expired lease releases.
      CREATE INDEX berth_tasks_held ON berth_tasks (node_id, epoch) WHERE state IN ('claimed', 'running');

      CREATE TABLE berth_events (
        seq                   bigserial PRIMARY KEY,
        -- The writing transaction: readers only see events of transactions older than every running one.
        xid                   xid8 NOT NULL DEFAULT pg_current_xact_id(),
        at                    timestamptz NOT NULL DEFAULT now(),
        kind                  text NOT NULL,
        task_id               text,
        node_id               text,
        epoch                 bigint,
        data                  jsonb NOT NULL DEFAULT '{}'
      );
      CREATE INDEX berth_events_by_cursor ON berth_events (xid, seq);
    `,
  },
]);

/** The newest schema version this berth knows. */
export const CLUSTER_SCHEMA_VERSION = CLUSTER_MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0);

/** The steps a database that records `applied` still needs, in order; a version beyond `known` is an error. */
export function pendingMigrations(applied: readonly number[], known: readonly ClusterMigration[] = CLUSTER_MIGRATIONS): ClusterMigration[] {
  const newest = known.reduce((max, m) => Math.max(max, m.version), 0);
  const unknown = applied.filter((version) => version > newest || !known.some((m) => m.version === version));
  if (unknown.length > 0) {
    throw new BerthError(
      'BERTH_CLUSTER_SCHEMA',
      `the cluster database has schema version ${Math.max(...unknown)}, newer than this berth supports (${newest}): upgrade berth`,
      { context: { schemaVersion: Math.max(...unknown), supportedVersion: newest } },
    );
  }
  const done = new Set(applied);
  return known.filter((m) => !done.has(m.version)).sort((a, b) => a.version - b.version);
}

async function appliedVersions(client: Queryable): Promise<number[]> {
  const rows = await client.query<{ version: number }>('SELECT version FROM berth_cluster_migrations');
  return rows.rows.map((row) => Number(row.version));
}

/** Brings the cluster schema up to date (see above); resolves with the versions it applied. */
export async function migrateCluster(db: Database, known: readonly ClusterMigration[] = CLUSTER_MIGRATIONS): Promise<number[]> {
  return db.transaction('migrate the cluster database', async (client) => {
    // The lock first: two agents creating the history table at once would collide.
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY]);
    await client.query(`CREATE TABLE IF NOT EXISTS berth_cluster_migrations (
      version    integer PRIMARY KEY,
      name       text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const pending = pendingMigrations(await appliedVersions(client), known);
    for (const step of pending) {
      await client.query(step.sql);
      await client.query('INSERT INTO berth_cluster_migrations (version, name) VALUES ($1, $2)', [step.version, step.name]);
    }
    return pending.map((m) => m.version);
  });
}
