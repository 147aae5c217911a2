import type Database from 'better-sqlite3';
import { BerthError } from '../common/errors.js';

/** One step of the schema, applied once, in order, inside the transaction that records it. */
export interface Migration {
  /** 1, 2, 3…: the schema version this step produces. Never renumber a released step. */
  readonly version: number;
  readonly name: string;
  readonly up: (db: Database.Database) => void;
}

/**
 * Every schema step, oldest first. Append only: a released migration is never edited, because a
 * database that already ran it would not run the new text.
 */
export const MIGRATIONS: readonly Migration[] = Object.freeze([
  {
    version: 1,
    name: 'tasks, image holders and meta',
    up(db) {
      db.exec(`
        CREATE TABLE tasks (
          -- seq orders submissions; AUTOINCREMENT never reuses a value, so the pending queue stays FIFO
          -- even across deletions and restarts.
          seq              INTEGER PRIMARY KEY AUTOINCREMENT,
          id               TEXT    NOT NULL UNIQUE,
          spec             TEXT    NOT NULL,
          state            TEXT    NOT NULL,
          reservation      TEXT,
          container_id     TEXT,
          end_state        TEXT,
          exit_code        INTEGER,
          stdout_log_at    TEXT,
          stderr_log_at    TEXT,
          submitted_at_ms  INTEGER NOT NULL,
          admitted_at_ms   INTEGER,
          started_at_ms    INTEGER,
          finished_at_ms   INTEGER,
          updated_at_ms    INTEGER NOT NULL
        );
        CREATE INDEX tasks_by_state ON tasks (state, seq);

        CREATE TABLE image_holders (
          image_id  TEXT NOT NULL,
          image_ref TEXT NOT NULL,
          task_id   TEXT NOT NULL,
          added_at_ms INTEGER NOT NULL,
          -- A set: a task that acquires the same image twice (a retry, a recovery) holds it once.
          PRIMARY KEY (image_id, task_id)
        ) WITHOUT ROWID;
        CREATE INDEX image_holders_by_task ON image_holders (task_id);

        CREATE TABLE meta (
          key   TEXT PRIMARY KEY,
          value TEXT NOT NULL
        ) WITHOUT ROWID;
      `);
    },
  },
  {
    version: 2,
    name: 'why a task\'s output was cut',
    up(db) {
      // NULL while the output is whole; otherwise the reason it was cut (the data directory was full).
      db.exec('ALTER TABLE tasks ADD COLUMN output_truncated TEXT');
    },
  },
  {
    version: 3,
    name: 'the event log, for clients that resume a stream',
    up(db) {
      // AUTOINCREMENT: an id is never reused, even after the oldest events are trimmed, so a client's
      // Last-Event-ID always means the same event. at_ms indexes the window's trim and `since=<time>`.
      db.exec(`
        CREATE TABLE events (
          id    INTEGER PRIMARY KEY AUTOINCREMENT,
          at_ms INTEGER NOT NULL,
          body  TEXT    NOT NULL
        );
        CREATE INDEX events_by_time ON events (at_ms);
      `);
    },
  },
  {
    version: 4,
    name: 'paused tasks',
    up(db) {
      // A paused task's run time limit stands still: when the pause began (NULL while it runs) and
      // how long its earlier pauses lasted, so that a restarted agent knows both.
      db.exec(`
        ALTER TABLE tasks ADD COLUMN paused_at_ms INTEGER;
        ALTER TABLE tasks ADD COLUMN paused_ms INTEGER NOT NULL DEFAULT 0;
      `);
    },
  },
  {
    version: 5,
    name: 'ended tasks by end time, for retention',
    up(db) {
      // Retention picks the oldest ended tasks and counts them on every pass; with this partial
      // index both read only the ended tasks' entries, in end order, however many there are. The
      // WHERE must stay the very text TaskRepository's ended-task queries use (ENDED_STATES_SQL),
      // or SQLite will not use the index for them.
      db.exec(`CREATE INDEX tasks_ended_by_finish ON tasks (finished_at_ms, seq) WHERE state IN ('exited', 'lost', 'removed')`);
    },
  },
  {
    version: 6,
    name: 'what a task used, recorded at its end',
    up(db) {
      // JSON: {"usage": {...}} (CPU time, peak memory, throttling) or {"missing": "<why>"}; NULL for a
      // task that never ran, or whose end was recorded before the agent recorded usage.
      db.exec('ALTER TABLE tasks ADD COLUMN usage TEXT');
    },
  },
  {
    version: 7,
    name: 'restart attempts',
    up(db) {
      // The attempts a task's restart policy restarted (JSON, oldest first; NULL: none) and, while it
      // waits for its next attempt, when that attempt is due, so that a restarted agent resumes the wait.
      db.exec(`
        ALTER TABLE tasks ADD COLUMN attempts TEXT;
        ALTER TABLE tasks ADD COLUMN restart_at_ms INTEGER;
      `);
    },
  },
  {
    version: 8,
    name: 'task health',
    up(db) {
      // The last health the engine reported for the task (status, failing streak, last probes) as
      // JSON; NULL for a task without a health check. Touches no column of another step, so it may
      // be applied before or after versions 6 and 7 (see migrate).
      db.exec('ALTER TABLE tasks ADD COLUMN health TEXT');
    },
  },
  {
    version: 9,
    name: 'sealed task secrets',
    up(db) {
      // A task's inline registry credentials, encrypted with the agent's key (agent/secret-box.ts);
      // NULL when it has none. The spec column holds them redacted: never the secret itself.
      db.exec('ALTER TABLE tasks ADD COLUMN sealed_secrets TEXT');
    },
  },
  {
    version: 10,
    name: 'task artifacts',
    up(db) {
      // What was collected of the spec's `collect` paths at the task's end (JSON: tasks/files-out.ts
      // ArtifactsRecord); NULL while it runs and for a task that collects nothing. The files are under
      // the data directory (agent/artifacts.ts).
      db.exec('ALTER TABLE tasks ADD COLUMN artifacts TEXT');
    },
  },
  {
    version: 11,
    name: 'published host ports',
    up(db) {
      // The host ports the agent handed out (agent/ports.ts). The primary key (protocol, host port)
      // is what makes a port impossible to hand out twice, whoever asks and across restarts. Owners
      // are task ids (owner_kind 'task') or group ids; position is the port's index in the owner's list.
      // Touches no table of another step, so it may be applied before or after its neighbours.
      db.exec(`
        CREATE TABLE ports (
          protocol        TEXT    NOT NULL,
          host_port       INTEGER NOT NULL,
          host_ip         TEXT    NOT NULL,
          owner           TEXT    NOT NULL,
          owner_kind      TEXT    NOT NULL,
          position        INTEGER NOT NULL,
          container_port  INTEGER NOT NULL,
          is_dynamic      INTEGER NOT NULL,
          allocated_at_ms INTEGER NOT NULL,
          PRIMARY KEY (protocol, host_port)
        ) WITHOUT ROWID;
        CREATE INDEX ports_by_owner ON ports (owner, position);
      `);
    },
  },
  {
    version: 12,
    name: 'task groups',
    up(db) {
      // A group of tasks that share a network namespace (agent/groups.ts). Its tasks are ordinary
      // task records that name it (group_id, group_task, lifecycle); the group keeps the spec as
      // submitted, its state and end, its infrastructure container, the start attempt its engine
      // objects carry (a retried create adopts only those), the host ports it published, and when
      // its engine objects were removed after its end (cleaned_at_ms; NULL: not yet).
      db.exec(`
        CREATE TABLE groups (
          seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
          id                  TEXT    NOT NULL UNIQUE,
          name                TEXT    NOT NULL,
          spec                TEXT    NOT NULL,
          state               TEXT    NOT NULL,
          end_state           TEXT,
          reservation         TEXT,
          infra_container_id  TEXT,
          start_attempt       TEXT    NOT NULL,
          stop_requested      INTEGER NOT NULL DEFAULT 0,
          ports               TEXT,
          created_at_ms       INTEGER NOT NULL,
          started_at_ms       INTEGER,
          ended_at_ms         INTEGER,
          cleaned_at_ms       INTEGER,
          updated_at_ms       INTEGER NOT NULL
        );
        CREATE INDEX groups_by_state ON groups (state, seq);
        ALTER TABLE tasks ADD COLUMN group_id TEXT;
        ALTER TABLE tasks ADD COLUMN group_task TEXT;
        ALTER TABLE tasks ADD COLUMN lifecycle TEXT;
        CREATE INDEX tasks_by_group ON tasks (group_id) WHERE group_id IS NOT NULL;
      `);
    },
  },
  {
    version: 13,
    name: 'how a task started (warm pools)',
    up(db) {
      // start_path: 'warm' (an exec in a pool container, which is the task's container_id) or 'cold';
      // a warm task's exec id lets a restarted agent find its end (driver.recoverWarm).
      db.exec(`
        ALTER TABLE tasks ADD COLUMN start_path TEXT;
        ALTER TABLE tasks ADD COLUMN pool TEXT;
        ALTER TABLE tasks ADD COLUMN cold_reason TEXT;
        ALTER TABLE tasks ADD COLUMN exec_id TEXT;
      `);
    },
  },
  {
    version: 14,
    name: 'cluster claims and the report outbox',
    up(db) {
      // cluster_epoch: the lease epoch a task was claimed under (cluster mode; NULL for a local task).
      // cluster_detached: why the node reports nothing more of it (fenced, released), NULL while it does.
      // cluster_outbox: the task's cluster transitions not sent yet, in order (seq), written in the
      // transaction of the local state change they report (agent/cluster-reporter.ts sends them).
      db.exec(`
        ALTER TABLE tasks ADD COLUMN cluster_epoch INTEGER;
        ALTER TABLE tasks ADD COLUMN cluster_detached TEXT;
        CREATE TABLE cluster_outbox (
          seq           INTEGER PRIMARY KEY AUTOINCREMENT,
          task_id       TEXT    NOT NULL,
          epoch         INTEGER NOT NULL,
          transition    TEXT    NOT NULL,
          created_at_ms INTEGER NOT NULL
        );
        CREATE INDEX cluster_outbox_by_task ON cluster_outbox (task_id);
        CREATE INDEX tasks_by_cluster_epoch ON tasks (cluster_epoch) WHERE cluster_epoch IS NOT NULL;
      `);
    },
  },
]);

/** The newest schema version this build of berth knows. */
export const SCHEMA_VERSION = Math.max(...MIGRATIONS.map((migration) => migration.version));

/**
 * Brings the database to SCHEMA_VERSION. Runs under BEGIN IMMEDIATE so that two processes opening
 * the same file at once cannot both apply a step; the second waits (busy timeout) and then finds
 * nothing to do. Returns the versions applied (empty when the schema was current).
 */
export function migrate(db: Database.Database, location: string, nowMs: () => number = Date.now): number[] {
  const run = db.transaction((): number[] => {
    db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version       INTEGER PRIMARY KEY,
      name          TEXT    NOT NULL,
      applied_at_ms INTEGER NOT NULL
    )`);
    const current = db.pragma('user_version', { simple: true }) as number;
    if (current > SCHEMA_VERSION) {
      throw new BerthError(
        'BERTH_VALIDATION',
        `the state database ${location} has schema version ${current}, newer than this berth supports (${SCHEMA_VERSION}): upgrade berth`,
        { context: { location, schemaVersion: current, supportedVersion: SCHEMA_VERSION } },
      );
    }
    const applied: number[] = [];
    const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)');
    // Steps developed side by side may be released out of order (8 before 6 and 7): a step is
    // applied when the history does not list it, even below user_version. A database whose history
    // lists nothing (made before the history existed) has every step up to user_version.
    const recorded = new Set(db.prepare<[], { version: number }>('SELECT version FROM schema_migrations').all().map((row) => row.version));
    const isApplied = (version: number): boolean => recorded.has(version) || (recorded.size === 0 && version <= current);
    for (const migration of [...MIGRATIONS].sort((a, b) => a.version - b.version)) {
      if (isApplied(migration.version)) continue;
      migration.up(db);
      record.run(migration.version, migration.name, nowMs());
      // user_version is the newest step applied; schema_migrations is the history of every step.
      db.pragma(`user_version = ${Math.max(migration.version, db.pragma('user_version', { simple: true }) as number)}`);
      applied.push(migration.version);
    }
    return applied;
  });
  return run.immediate();
}
