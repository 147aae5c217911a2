import type { SqlConnection, SqlDialect, SqlStatement } from './sql.js';
import { BerthError, ValidationError, type ErrorCode } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { compareLogTimestamps, isLogTimestamp } from '../engine/log-entries.js';
import { asDiskFull } from './disk-full.js';
import { appendOutbox, type OutboxTransition } from './cluster-outbox.js';
import type { TaskSpec } from '../spec/index.js';
import type { EndKind, EndState } from '../tasks/end-state.js';
import type { ArtifactsRecord } from '../tasks/files-out.js';
import { AMBIGUOUS_CANDIDATES_SHOWN, ambiguousPrefixError } from '../tasks/id-prefix.js';
import { logTransition, refusedTransition, TASK_STATES, UNENDED_STATES, type TaskState } from '../tasks/lifecycle.js';

// The task's states and their one machine live with the tasks (see tasks/lifecycle.ts, docs/states.md).
export { TASK_STATES, UNENDED_STATES, hasEnded, isLegalTransition, type TaskState } from '../tasks/lifecycle.js';
export { AMBIGUOUS_CANDIDATES_SHOWN, ambiguousPrefixError } from '../tasks/id-prefix.js';

/**
 * The task spec as it is stored: the user's input (sizes and durations may still be strings), with
 * stdin only as text, since a stream or bytes cannot be recorded and replayed.
 */
export type StoredTaskSpec = Omit<TaskSpec, 'stdin'> & { stdin?: string };

/** A BerthError as JSON (its `toJSON()`), as a lost end state keeps it. */
export interface StoredError {
  code: ErrorCode;
  message: string;
  retryable: boolean;
  context: Readonly<Record<string, unknown>>;
}

/** An EndState as it reads back from the store: a lost task's error is its JSON form. */
export type StoredEndState = Exclude<EndState, { kind: 'lost' }> | { kind: 'lost'; reason: string; error?: StoredError };

/** The share of the admission budget a task draws, fixed at submit so a reload does not change it. */
export interface Reservation {
  memoryBytes: number;
  cpuMilli: number;
}

/** The last engine log timestamp berth has written to the task's files, per stream. */
export interface LogCursor {
  /** RFC 3339 in UTC with up to nine fractional digits, as the engine writes it. */
  stdout?: string;
  stderr?: string;
}

/**
 * One attempt of a task that its restart policy restarted: its container (removed since), when it
 * ran and how it ended. The task's current (or last) attempt is the record's own containerId,
 * startedAtMs, finishedAtMs and endState.
 */
export interface TaskAttempt {
  /** 1 for the first container, 2 for the first restart's, … */
  readonly attempt: number;
  readonly containerId?: string;
  readonly startedAtMs?: number;
  readonly finishedAtMs: number;
  readonly endState: StoredEndState;
  readonly exitCode?: number;
}

/** One run of a task's health check, as the engine kept it (its output capped, see agent/health-snapshot.ts). */
export interface HealthProbeRecord {
  readonly startedAtMs?: number;
  readonly endedAtMs?: number;
  readonly exitCode: number;
  readonly output: string;
}

/** A task's health as the engine last reported it: only tasks whose container has a health check have one. */
export interface TaskHealth {
  readonly status: 'starting' | 'healthy' | 'unhealthy';
  /** Consecutive failed checks (0 after a pass). */
  readonly failingStreak: number;
  /** The last checks, oldest first (the engine keeps 5). */
  readonly log: readonly HealthProbeRecord[];
}

/** One task as the store records it. Every record is frozen. */
export interface TaskRecord {
  readonly id: string;
  /** Submission order; the pending queue is ordered by it. */
  readonly seq: number;
  readonly spec: StoredTaskSpec;
  readonly state: TaskState;
  readonly reservation?: Reservation;
  readonly containerId?: string;
  /** Set when the state is `exited` or `lost` (and kept when `removed`). */
  readonly endState?: StoredEndState;
  /** The end state's exit code, when it has one. */
  readonly exitCode?: number;
  readonly logCursor: Readonly<LogCursor>;
  /** Why the task's output was cut (the data directory was full); undefined while it is whole. */
  readonly outputTruncated?: string;
  /** When its current pause began; undefined while it is not paused. */
  readonly pausedAtMs?: number;
  /** How long its ended pauses lasted in all (the current one not included). */
  readonly pausedForMs: number;
  /** Its health as last seen (kept after its end); undefined for a task without a health check. */
  readonly health?: TaskHealth;
  /** What it used, recorded at its end (see agent/usage.ts); undefined while it runs, and for a task that never ran. */
  readonly usage?: Readonly<TaskUsage>;
  /** Why no usage was recorded at its end, when it ran but none could be read. */
  readonly usageMissing?: string;
  /** What was collected of the spec's `collect` paths at its end (agent/artifacts.ts); undefined before, and when it collects nothing. */
  readonly artifacts?: Readonly<ArtifactsRecord>;
  readonly submittedAtMs: number;
  /** When admission let it start (the move to `starting`). */
  readonly admittedAtMs?: number;
  /** When its container started (the move to `running`). */
  readonly startedAtMs?: number;
  /** When it ended (the move to `exited` or `lost`). */
  readonly finishedAtMs?: number;
  readonly updatedAtMs: number;
  /** The attempts its restart policy restarted, oldest first; undefined when it never restarted. */
  readonly attempts?: readonly TaskAttempt[];
  /** While it waits to be restarted (`starting`): when its next attempt is due. */
  readonly restartAtMs?: number;
  /**
   * The secrets `spec` holds redacted (inline registry credentials), sealed with the agent's key;
   * undefined when it has none. Never shown by the API.
   */
  readonly sealedSecrets?: string;
  /** The group the task belongs to (agent/groups.ts starts it, not admission); undefined for a task of its own. */
  readonly group?: TaskGroupLink;
  /** How its current (or last) attempt started: warm (an exec in a pool's container) or cold; undefined before it started. */
  readonly start?: TaskStart;
  /** Cluster mode: the task was claimed from the cluster queue (agent/cluster-claimer.ts); undefined for a local task. */
  readonly cluster?: TaskClusterLink;
}

/** A claimed task's link to the cluster. */
export interface TaskClusterLink {
  /** The lease epoch the node holds it under (its claim's, or a re-registration's that kept it). */
  readonly epoch: number;
  /** Why the node reports nothing more of it (fenced, released); undefined while it does. */
  readonly detached?: string;
}

/**
 * How a task started (see src/pools): `warm` took an idle container of `pool` and runs as the exec
 * `execId` in it (the record's containerId is that container); `cold` created its own container,
 * for `reason` (no pool, no matching pool, the pool was empty, or the spec cannot be pooled).
 */
export type TaskStart = { readonly path: 'warm'; readonly pool: string; readonly execId: string } | { readonly path: 'cold'; readonly reason: string };

/** A group's task: its group, its name in the group and its lifecycle role. */
export interface TaskGroupLink {
  readonly groupId: string;
  readonly taskName: string;
  readonly lifecycle: 'prestart' | 'sidecar' | 'main';
}

/** What a task used, as the agent records it when the task ends. */
export interface TaskUsage {
  /** CPU time (user + system) up to the last reading, in milliseconds. */
  cpuTimeMs: number;
  /** The highest memory use (page cache included, as the kernel counts it against the limit). */
  peakMemoryBytes: number;
  /** Whether the CPU quota held it back at least once, or it ran out of memory. */
  throttled: boolean;
  /** Scheduler periods in which the CPU quota held it back. */
  throttledPeriods: number;
  /** How long the CPU quota held it back in all, in milliseconds. */
  throttledTimeMs: number;
  /** Whether it ended killed for lack of memory. */
  oomKilled: boolean;
  /** How many readings the figures come from. */
  samples: number;
  /** When the last reading was taken (ISO 8601): what came after it, up to the end, is not counted. */
  sampledAt: string;
}

/** What the store keeps at a task's end: its usage, or why there is none. */
export type UsageOutcome = { usage: TaskUsage } | { missing: string };

export interface NewTask {
  /** The caller's id (unique). */
  id: string;
  spec: StoredTaskSpec;
  reservation?: Reservation;
  /** The secrets `spec` holds redacted, sealed (see TaskRecord.sealedSecrets). */
  sealedSecrets?: string;
  /** Cluster mode: the lease epoch the task was claimed under. */
  clusterEpoch?: number;
}

/** An end state that is not lost (it moves the task to `exited`). */
type KnownEndState = Exclude<EndState | StoredEndState, { kind: 'lost' }>;
/** A lost end state (it moves the task to `lost`). */
type LostEndState = Extract<EndState | StoredEndState, { kind: 'lost' }>;

/**
 * A move of a task's record, named by the state it goes to. A move to `exited` or `lost` records
 * the end state (`endTransition` picks the one the end state belongs to); `finishedAtMs` is when
 * the container stopped, as the engine saw it (default now).
 */
export type TaskTransition =
  | { to: 'starting' }
  | { to: 'running'; containerId?: string }
  | { to: 'stopping' }
  | { to: 'exited'; endState: KnownEndState; finishedAtMs?: number }
  | { to: 'lost'; endState: LostEndState; finishedAtMs?: number }
  | { to: 'removed' };

/** The move that records this end: to `lost` when the end state is lost, else to `exited`. */
export function endTransition(endState: EndState | StoredEndState, finishedAtMs?: number): Extract<TaskTransition, { to: 'exited' | 'lost' }> {
  const at = finishedAtMs === undefined ? {} : { finishedAtMs };
  return endState.kind === 'lost' ? { to: 'lost', endState, ...at } : { to: 'exited', endState, ...at };
}

export interface TaskFilter {
  /** One state or any of several. */
  state?: TaskState | readonly TaskState[];
  /** Labels of the spec that must all match, docker style: `key` (present) or `key=value`. */
  label?: string | readonly string[];
  /** At most this many records. */
  limit?: number;
  /** Default `oldest-first` (submission order). */
  order?: 'oldest-first' | 'newest-first';
  /** Only ended tasks whose end state is one of these kinds (`oom`, `timed-out`, `failed` …). */
  endKind?: EndKind | readonly EndKind[];
  /** Only the tasks of this group (agent/groups.ts); false: only tasks of their own. */
  group?: string | false;
}

/** The tasks an id prefix matches: the first few in id order, and how many there are in all. */
export interface PrefixMatches {
  tasks: TaskRecord[];
  count: number;
}

export interface InsertResult {
  /** False when a task with the id already existed; `task` is then the existing one, unchanged. */
  inserted: boolean;
  task: TaskRecord;
}

interface TaskRow {
  seq: number;
  id: string;
  spec: string;
  state: string;
  reservation: string | null;
  container_id: string | null;
  end_state: string | null;
  exit_code: number | null;
  stdout_log_at: string | null;
  stderr_log_at: string | null;
  output_truncated: string | null;
  paused_at_ms: number | null;
  paused_ms: number;
  health: string | null;
  usage: string | null;
  submitted_at_ms: number;
  admitted_at_ms: number | null;
  started_at_ms: number | null;
  finished_at_ms: number | null;
  updated_at_ms: number;
  attempts: string | null;
  restart_at_ms: number | null;
  sealed_secrets: string | null;
  artifacts: string | null;
  group_id?: string | null;
  group_task?: string | null;
  lifecycle?: string | null;
  start_path?: string | null;
  pool?: string | null;
  cold_reason?: string | null;
  exec_id?: string | null;
  cluster_epoch?: number | null;
  cluster_detached?: string | null;
}

function startOf(row: TaskRow): TaskStart | undefined {
  if (row.start_path === 'warm' && row.pool && row.exec_id) return { path: 'warm', pool: row.pool, execId: row.exec_id };
  if (row.start_path === 'cold') return { path: 'cold', reason: row.cold_reason ?? 'unknown' };
  return undefined;
}


function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

function usageFields(column: string | null): { usage?: TaskUsage; usageMissing?: string } {
  if (column === null) return {};
  const outcome = JSON.parse(column) as UsageOutcome;
  return 'usage' in outcome ? { usage: outcome.usage } : { usageMissing: outcome.missing };
}

function toRecord(row: TaskRow): TaskRecord {
  const record: TaskRecord = {
    id: row.id,
    seq: row.seq,
    spec: JSON.parse(row.spec) as StoredTaskSpec,
    state: row.state as TaskState,
    ...(row.reservation === null ? {} : { reservation: JSON.parse(row.reservation) as Reservation }),
    ...(row.container_id === null ? {} : { containerId: row.container_id }),
    ...(row.end_state === null ? {} : { endState: JSON.parse(row.end_state) as StoredEndState }),
    ...(row.exit_code === null ? {} : { exitCode: row.exit_code }),
    logCursor: {
      ...(row.stdout_log_at === null ? {} : { stdout: row.stdout_log_at }),
      ...(row.stderr_log_at === null ? {} : { stderr: row.stderr_log_at }),
    },
    ...(row.output_truncated === null ? {} : { outputTruncated: row.output_truncated }),
    ...(row.paused_at_ms === null ? {} : { pausedAtMs: row.paused_at_ms }),
    pausedForMs: row.paused_ms,
    ...(row.health === null ? {} : { health: JSON.parse(row.health) as TaskHealth }),
    ...usageFields(row.usage),
    ...(row.artifacts === null || row.artifacts === undefined ? {} : { artifacts: JSON.parse(row.artifacts) as ArtifactsRecord }),
    submittedAtMs: row.submitted_at_ms,
    ...(row.admitted_at_ms === null ? {} : { admittedAtMs: row.admitted_at_ms }),
    ...(row.started_at_ms === null ? {} : { startedAtMs: row.started_at_ms }),
    ...(row.finished_at_ms === null ? {} : { finishedAtMs: row.finished_at_ms }),
    updatedAtMs: row.updated_at_ms,
    ...(row.attempts === null ? {} : { attempts: JSON.parse(row.attempts) as TaskAttempt[] }),
    ...(row.restart_at_ms === null ? {} : { restartAtMs: row.restart_at_ms }),
    ...(row.sealed_secrets === null ? {} : { sealedSecrets: row.sealed_secrets }),
    ...(row.group_id === null || row.group_id === undefined ? {} : { group: { groupId: row.group_id, taskName: row.group_task ?? '', lifecycle: (row.lifecycle ?? 'main') as TaskGroupLink['lifecycle'] } }),
  };
  const start = startOf(row);
  if (start) (record as { start?: TaskStart }).start = start;
  if (row.cluster_epoch !== null && row.cluster_epoch !== undefined) {
    (record as { cluster?: TaskClusterLink }).cluster = { epoch: row.cluster_epoch, ...(row.cluster_detached ? { detached: row.cluster_detached } : {}) };
  }
  return deepFreeze(record);
}

/**
 * The ended states as SQL, word for word the WHERE of the partial index `tasks_ended_by_finish`
 * (migration 3): SQLite uses a partial index only for a query whose WHERE contains its terms.
 */
export const ENDED_STATES_SQL = `state IN ('exited', 'lost', 'removed')`;

/** An ended task as retention sees it (TaskRepository.oldestEnded). */
export interface EndedTask {
  readonly id: string;
  readonly state: TaskState;
  /** When it ended (its record's `finishedAtMs`; the last update for a record without one). */
  readonly endedAtMs: number;
}

function missingError(taskId: string): BerthError {
  // A record is deleted only after its task ended (retention), and the supervisor checks a task
  // exists in the same tick as it moves it, so an unknown id here is the caller's bug.
  return new BerthError('BERTH_INTERNAL', `task ${taskId} is not in the store`, { context: { taskId } });
}

/**
 * The least string above every string that starts with `prefix`: the prefix with its last
 * character raised by one. Task ids are ASCII (TASK_ID), where character order is byte order (PostgreSQL's id column collates "C").
 */
function prefixUpperBound(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

/** A top-level field of a JSON text column, as text: SQLite's json_extract, PostgreSQL's ->>. */
function jsonField(dialect: SqlDialect, column: string, field: string): string {
  return dialect === 'sqlite' ? `json_extract(${column}, '$.${field}')` : `(${column}::jsonb ->> '${field}')`;
}

/**
 * The tasks table. Every write is one transaction. Write before acting: record `starting` before
 * asking the engine to create, `stopping` before stop, `removed` before remove; so that a crash
 * between the record and the engine's answer leaves a record that recovery can act on (the
 * container's name derives from the task id, so even a container whose id was never recorded is
 * found again).
 */
export class TaskRepository {
  readonly #db: SqlConnection;
  readonly #nowMs: () => number;
  readonly #logger: Logger;
  readonly #select: SqlStatement<[string], TaskRow>;
  /** Prefix lookups' statements by their SQL (one per number of states passed over), prepared once. */
  readonly #prefixStatements = new Map<string, SqlStatement>();
  /** SQLite is told to read ended tasks through their index (without statistics it would sort them all); PostgreSQL plans by its own statistics. */
  readonly #endedIndex: string;

  constructor(db: SqlConnection, nowMs: () => number, logger: Logger) {
    this.#db = db;
    this.#endedIndex = db.dialect === 'sqlite' ? ' INDEXED BY tasks_ended_by_finish' : '';
    this.#nowMs = nowMs;
    this.#logger = logger;
    this.#select = db.prepare<[string], TaskRow>('SELECT * FROM tasks WHERE id = ?');
  }

  /**
   * Records a submitted task as `pending`, at the back of the queue. A task whose id exists is not
   * touched: `inserted` is false and the existing record is returned (the API's 409).
   */
  insert(task: NewTask): InsertResult {
    if (task.id === '') throw new ValidationError([{ field: 'id', rule: 'must be a non-empty task id' }]);
    const run = this.#db.transaction((): InsertResult => {
      const existing = this.#select.get(task.id);
      if (existing) return { inserted: false, task: toRecord(existing) };
      const now = this.#nowMs();
      this.#db
        .prepare(
          `INSERT INTO tasks (id, spec, state, reservation, submitted_at_ms, updated_at_ms, sealed_secrets, cluster_epoch)
           VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)`,
        )
        .run(task.id, JSON.stringify(task.spec), task.reservation ? JSON.stringify(task.reservation) : null, now, now, task.sealedSecrets ?? null, task.clusterEpoch ?? null);
      return { inserted: true, task: toRecord(this.#select.get(task.id)!) };
    });
    const result = asDiskFull(() => run.immediate());
    if (result.inserted) this.#logger.debug({ taskId: task.id, to: 'pending' }, 'task submitted');
    return result;
  }

  get(taskId: string): TaskRecord | undefined {
    const row = this.#select.get(taskId);
    return row ? toRecord(row) : undefined;
  }

  list(filter: TaskFilter = {}): TaskRecord[] {
    const where: string[] = [];
    const params: Array<string | number> = [];
    if (filter.state !== undefined) {
      const states = typeof filter.state === 'string' ? [filter.state] : [...filter.state];
      if (states.length === 0) return [];
      where.push(`state IN (${states.map(() => '?').join(', ')})`);
      params.push(...states);
    }
    if (filter.endKind !== undefined) {
      const kinds = typeof filter.endKind === 'string' ? [filter.endKind] : [...filter.endKind];
      if (kinds.length === 0) return [];
      where.push(`${jsonField(this.#db.dialect, 'end_state', 'kind')} IN (${kinds.map(() => '?').join(', ')})`);
      params.push(...kinds);
    }
    if (filter.group === false) where.push('group_id IS NULL');
    else if (filter.group !== undefined) {
      where.push('group_id = ?');
      params.push(filter.group);
    }
    const labels = filter.label === undefined ? [] : typeof filter.label === 'string' ? [filter.label] : [...filter.label];
    for (const label of labels) {
      const equals = label.indexOf('=');
      const key = equals < 0 ? label : label.slice(0, equals);
      // json_each rather than a JSON path: label keys have dots and may have quotes.
      const eachLabel = this.#db.dialect === 'sqlite' ? "json_each(tasks.spec, '$.labels')" : "jsonb_each_text(tasks.spec::jsonb -> 'labels')";
      if (equals < 0) {
        where.push(`EXISTS (SELECT 1 FROM ${eachLabel} WHERE key = ?)`);
        params.push(key);
      } else {
        where.push(`EXISTS (SELECT 1 FROM ${eachLabel} WHERE key = ? AND value = ?)`);
        params.push(key, label.slice(equals + 1));
      }
    }
    let sql = 'SELECT * FROM tasks';
    if (where.length > 0) sql += ` WHERE ${where.join(' AND ')}`;
    sql += filter.order === 'newest-first' ? ' ORDER BY seq DESC' : ' ORDER BY seq ASC';
    if (filter.limit !== undefined) {
      if (!Number.isInteger(filter.limit) || filter.limit < 0) {
        throw new ValidationError([{ field: 'limit', rule: 'must be a whole number, 0 or more' }]);
      }
      sql += ' LIMIT ?';
      params.push(filter.limit);
    }
    return this.#db.prepare<Array<string | number>, TaskRow>(sql).all(...params).map(toRecord);
  }

  /**
   * The tasks whose id starts with `prefix`, in any state but those in `exceptStates`: the first
   * `limit` in id order, and the count of all. A range over the id's unique index (ids sort by
   * their bytes), so a lookup reads only the matching rows, however many tasks the store holds.
   */
  findByIdPrefix(prefix: string, options: { limit?: number; exceptStates?: readonly TaskState[] } = {}): PrefixMatches {
    if (prefix === '') throw new ValidationError([{ field: 'id', rule: 'must be a non-empty task id or id prefix' }]);
    const except = options.exceptStates ?? [];
    const notIn = except.length > 0 ? ` AND state NOT IN (${except.map(() => '?').join(', ')})` : '';
    const range = [prefix, prefixUpperBound(prefix), ...except];
    const limit = options.limit ?? AMBIGUOUS_CANDIDATES_SHOWN;
    const tasks = (this.#prefixStatement(`SELECT * FROM tasks WHERE id >= ? AND id < ?${notIn} ORDER BY id LIMIT ?`).all(...range, limit) as TaskRow[]).map(toRecord);
    // Counted only when there may be more than were read: a unique prefix costs one query.
    const count = tasks.length < limit ? tasks.length : ((this.#prefixStatement(`SELECT COUNT(*) AS n FROM tasks WHERE id >= ? AND id < ?${notIn}`).get(...range) as { n: number } | undefined)?.n ?? 0);
    return { tasks, count };
  }

  #prefixStatement(sql: string): SqlStatement {
    let statement = this.#prefixStatements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#prefixStatements.set(sql, statement);
    }
    return statement;
  }

  /**
   * The task a user means by `idOrPrefix`, as docker resolves container ids: the task with exactly
   * that id, else the one task whose id starts with it. Tasks in `exceptStates` (the API passes
   * `removed`: gone, as far as it is concerned) are not seen. Throws BERTH_TASK_NOT_FOUND when none
   * matches and BERTH_TASK_AMBIGUOUS (context: prefix, count, candidates) when several do.
   */
  resolve(idOrPrefix: string, options: { exceptStates?: readonly TaskState[] } = {}): TaskRecord {
    const except = options.exceptStates ?? [];
    const exact = this.get(idOrPrefix);
    if (exact && !except.includes(exact.state)) return exact;
    const { tasks, count } = idOrPrefix === '' ? { tasks: [], count: 0 } : this.findByIdPrefix(idOrPrefix, { exceptStates: except });
    if (count === 1 && tasks[0]) return tasks[0];
    if (count === 0) throw new BerthError('BERTH_TASK_NOT_FOUND', `no task ${idOrPrefix}`, { context: { taskId: idOrPrefix } });
    throw ambiguousPrefixError(idOrPrefix, tasks.map((task) => task.id), count);
  }

  /** Every task that has not ended, in submission order: what recovery reloads. */
  listUnended(): TaskRecord[] {
    return this.list({ state: UNENDED_STATES });
  }

  /** The head of the pending queue (the oldest pending task), if any. */
  nextPending(): TaskRecord | undefined {
    return this.list({ state: 'pending', limit: 1 })[0];
  }

  /** How many tasks are in each state (for metrics). */
  counts(): Record<TaskState, number> {
    const counts = Object.fromEntries(TASK_STATES.map((s) => [s, 0])) as Record<TaskState, number>;
    const rows = this.#db.prepare<[], { state: string; n: number }>('SELECT state, COUNT(*) AS n FROM tasks GROUP BY state').all();
    for (const row of rows) counts[row.state as TaskState] = row.n;
    return counts;
  }

  /** How many tasks have ended (exited, lost or removed): what `retention.maxCount` bounds. Reads the ended-tasks index only. */
  countEnded(): number {
    // A group's tasks are counted with their group (GroupRepository.countEnded), not here.
    return this.#db.prepare<[], { n: number }>(`SELECT COUNT(*) AS n FROM tasks${this.#endedIndex} WHERE ${ENDED_STATES_SQL} AND group_id IS NULL`).get()!.n;
  }

  /**
   * The `limit` ended tasks that ended first (then in submission order), oldest first: retention's
   * candidates. A group's task is left out (it goes with its group, see GroupRepository). A task that still holds an image is left out: its container's removal is still to
   * be finished (by the supervisor, or the next agent's start, which needs its record).
   */
  oldestEnded(limit: number): EndedTask[] {
    return this.#db
      .prepare<[number], { id: string; state: string; ended_at_ms: number }>(
        // INDEXED BY: without statistics the planner would sort every ended task by end time.
        `SELECT id, state, COALESCE(finished_at_ms, updated_at_ms) AS ended_at_ms FROM tasks${this.#endedIndex}
         WHERE ${ENDED_STATES_SQL} AND group_id IS NULL AND NOT EXISTS (SELECT 1 FROM image_holders WHERE image_holders.task_id = tasks.id)
         ORDER BY finished_at_ms, seq LIMIT ?`,
      )
      .all(limit)
      .map((row) => Object.freeze({ id: row.id, state: row.state as TaskState, endedAtMs: row.ended_at_ms }));
  }

  /**
   * Deletes the records of ended tasks for good, in one transaction: a task that has not ended
   * (or that holds an image again) is left as it is. Returns the ids deleted. Their output files
   * are the caller's to remove first (see TaskSupervisor.forget).
   */
  deleteEnded(taskIds: readonly string[]): string[] {
    const remove = this.#db.prepare<[string], { id: string }>(
      `DELETE FROM tasks WHERE id = ? AND ${ENDED_STATES_SQL} AND NOT EXISTS (SELECT 1 FROM image_holders WHERE image_holders.task_id = tasks.id) RETURNING id`,
    );
    const run = this.#db.transaction((): string[] => taskIds.flatMap((id) => remove.all(id).map((row) => row.id)));
    const deleted = asDiskFull(() => run.immediate());
    for (const taskId of deleted) this.#logger.debug({ taskId }, 'task record deleted');
    return deleted;
  }

  /**
   * Moves a task to a new state in one transaction, refusing an illegal move with
   * BERTH_TASK_STATE (context: taskId, state, requested). Returns the updated record.
   */
  update(taskId: string, transition: TaskTransition): TaskRecord {
    const to: TaskState = transition.to;
    const run = this.#db.transaction((): { from: TaskState; record: TaskRecord } => {
      const row = this.#select.get(taskId);
      if (!row) throw missingError(taskId);
      const from = row.state as TaskState;
      const refusal = refusedTransition({ taskId, from, to }, 'record');
      if (refusal) throw refusal;
      const now = this.#nowMs();
      const set: string[] = ['state = ?', 'updated_at_ms = ?'];
      const params: Array<string | number | null> = [to, now];
      switch (transition.to) {
        case 'starting':
          set.push('admitted_at_ms = ?');
          params.push(now);
          break;
        case 'running':
          // A restarted task's next attempt is no longer due: it runs.
          set.push('started_at_ms = ?', 'restart_at_ms = NULL');
          params.push(now);
          if (transition.containerId !== undefined) {
            set.push('container_id = ?');
            params.push(transition.containerId);
          }
          break;
        case 'exited':
        case 'lost': {
          const end = transition.endState;
          set.push('end_state = ?', 'exit_code = ?', 'finished_at_ms = ?');
          // JSON.stringify turns a BerthError into its toJSON() form: code, message, retryable, context.
          params.push(JSON.stringify(end), 'exitCode' in end && end.exitCode !== undefined ? end.exitCode : null, transition.finishedAtMs ?? now);
          break;
        }
        case 'stopping':
        case 'removed':
          break;
      }
      this.#db.prepare(`UPDATE tasks SET ${set.join(', ')} WHERE id = ?`).run(...params, taskId);
      // A claimed task's cluster transition goes to the outbox with the change it reports.
      const report = clusterReportOf(transition, row.container_id);
      if (report !== undefined && row.cluster_epoch !== null && row.cluster_epoch !== undefined && !row.cluster_detached) {
        appendOutbox(this.#db, taskId, row.cluster_epoch, report, now);
      }
      return { from, record: toRecord(this.#select.get(taskId)!) };
    });
    const { from, record } = asDiskFull(() => run.immediate());
    logTransition(this.#logger, { taskId, from, to, mover: 'record', ...(record.endState ? { end: record.endState.kind } : {}) });
    return record;
  }

  /** Unended tasks claimed from the cluster and not detached from it, in submission order. */
  listClusterUnended(): TaskRecord[] {
    return this.#db
      .prepare<[], TaskRow>(`SELECT * FROM tasks WHERE cluster_epoch IS NOT NULL AND cluster_detached IS NULL AND state NOT IN ('exited', 'lost', 'removed') ORDER BY seq`)
      .all()
      .map(toRecord);
  }

  /**
   * A re-registration kept the task for the node under a new epoch: the record and its reports not
   * sent yet move to it, in one transaction.
   */
  setClusterEpoch(taskId: string, epoch: number): void {
    const run = this.#db.transaction(() => {
      this.#db.prepare('UPDATE tasks SET cluster_epoch = ? WHERE id = ? AND cluster_epoch IS NOT NULL').run(epoch, taskId);
      this.#db.prepare('UPDATE cluster_outbox SET epoch = ? WHERE task_id = ?').run(epoch, taskId);
    });
    asDiskFull(() => run.immediate());
  }

  /**
   * The node reports nothing more of the task (fenced: the cluster gave it to another node or
   * ended it; released: back in the queue): `why` is recorded and its unsent reports are dropped,
   * in one transaction. Resolves whether it was attached until now.
   */
  detachFromCluster(taskId: string, why: string): boolean {
    const run = this.#db.transaction((): boolean => {
      const changed = this.#db.prepare('UPDATE tasks SET cluster_detached = ? WHERE id = ? AND cluster_epoch IS NOT NULL AND cluster_detached IS NULL').run(why, taskId).changes;
      this.#db.prepare('DELETE FROM cluster_outbox WHERE task_id = ?').run(taskId);
      return changed > 0;
    });
    return asDiskFull(() => run.immediate());
  }

  /**
   * Records a restart in one transaction: the attempt that ended joins the task's attempts, and the
   * task moves from `running` back to `starting` (refused otherwise, as `update` refuses a move),
   * without a container, to wait until `restartAtMs` for its next one. Its run time limit starts
   * afresh with that attempt, so its pauses are forgotten.
   */
  recordRestart(taskId: string, ended: TaskAttempt, restartAtMs: number): TaskRecord {
    const run = this.#db.transaction((): { from: TaskState; record: TaskRecord } => {
      const row = this.#select.get(taskId);
      if (!row) throw missingError(taskId);
      const from = row.state as TaskState;
      const refusal = refusedTransition({ taskId, from, to: 'starting' }, 'record');
      if (refusal) throw refusal;
      const attempts = [...(row.attempts === null ? [] : (JSON.parse(row.attempts) as TaskAttempt[])), ended];
      this.#db
        .prepare(
          `UPDATE tasks SET state = 'starting', attempts = ?, restart_at_ms = ?, container_id = NULL, start_path = NULL, pool = NULL, exec_id = NULL, cold_reason = NULL, paused_at_ms = NULL, paused_ms = 0, updated_at_ms = ? WHERE id = ?`,
        )
        .run(JSON.stringify(attempts), restartAtMs, this.#nowMs(), taskId);
      return { from, record: toRecord(this.#select.get(taskId)!) };
    });
    const { from, record } = asDiskFull(() => run.immediate());
    logTransition(this.#logger, { taskId, from, to: 'starting', mover: 'record', end: ended.endState.kind });
    return record;
  }

  /**
   * Records the container's id once create returns (the task is `starting`, `running` or
   * `stopping`).
   */
  setContainerId(taskId: string, containerId: string): TaskRecord {
    const run = this.#db.transaction((): TaskRecord => {
      const row = this.#select.get(taskId);
      if (!row) throw missingError(taskId);
      const state = row.state as TaskState;
      if (state !== 'starting' && state !== 'running' && state !== 'stopping') {
        throw new BerthError('BERTH_TASK_STATE', `task ${taskId} is ${state}; a container id is recorded only while it starts or runs`, {
          context: { taskId, state },
        });
      }
      this.#db.prepare('UPDATE tasks SET container_id = ?, updated_at_ms = ? WHERE id = ?').run(containerId, this.#nowMs(), taskId);
      return toRecord(this.#select.get(taskId)!);
    });
    return asDiskFull(() => run.immediate());
  }

  /**
   * Records how the task's attempt started, with its container: written as soon as the start
   * returns, before the task is recorded running, so that a restarted agent knows a warm task's
   * exec (recovered with driver.recoverWarm). Allowed while it starts, runs or is being stopped.
   */
  setStart(taskId: string, start: TaskStart, containerId: string): TaskRecord {
    const run = this.#db.transaction((): TaskRecord => {
      const row = this.#select.get(taskId);
      if (!row) throw missingError(taskId);
      const state = row.state as TaskState;
      if (state !== 'starting' && state !== 'running' && state !== 'stopping') {
        throw new BerthError('BERTH_TASK_STATE', `task ${taskId} is ${state}; how it started is recorded only while it starts or runs`, { context: { taskId, state } });
      }
      const warm = start.path === 'warm' ? start : undefined;
      this.#db
        .prepare('UPDATE tasks SET start_path = ?, pool = ?, exec_id = ?, cold_reason = ?, container_id = ?, updated_at_ms = ? WHERE id = ?')
        .run(start.path, warm?.pool ?? null, warm?.execId ?? null, start.path === 'cold' ? start.reason : null, containerId, this.#nowMs(), taskId);
      return toRecord(this.#select.get(taskId)!);
    });
    return asDiskFull(() => run.immediate());
  }

  /**
   * Records how far the task's output has been written to its files, per stream. A cursor never
   * moves backwards: an older timestamp than the recorded one is ignored, so that a late writer
   * cannot make recovery fetch (and duplicate) lines already written. Allowed in any state, since
   * output of a task that ended while the agent was down is fetched after the fact.
   */
  setLogCursor(taskId: string, cursor: LogCursor): TaskRecord {
    const issues = (['stdout', 'stderr'] as const)
      .filter((stream) => cursor[stream] !== undefined && !isLogTimestamp(cursor[stream]!))
      .map((stream) => ({ field: `logCursor.${stream}`, rule: 'must be an RFC 3339 UTC timestamp such as 2024-05-01T10:00:00.123456789Z' }));
    if (issues.length > 0) throw new ValidationError(issues);
    const run = this.#db.transaction((): TaskRecord => {
      const row = this.#select.get(taskId);
      if (!row) throw missingError(taskId);
      const later = (recorded: string | null, offered: string | undefined): string | null =>
        offered === undefined || (recorded !== null && compareLogTimestamps(offered, recorded) <= 0) ? recorded : offered;
      const stdout = later(row.stdout_log_at, cursor.stdout);
      const stderr = later(row.stderr_log_at, cursor.stderr);
      if (stdout !== row.stdout_log_at || stderr !== row.stderr_log_at) {
        this.#db
          .prepare('UPDATE tasks SET stdout_log_at = ?, stderr_log_at = ?, updated_at_ms = ? WHERE id = ?')
          .run(stdout, stderr, this.#nowMs(), taskId);
      }
      return toRecord(this.#select.get(taskId)!);
    });
    return asDiskFull(() => run.immediate());
  }

  /**
   * Records a pause of a running task (`paused` true, from `atMs`) or its end (false: the pause's
   * length is added to the paused time). A second pause or unpause changes nothing.
   */
  setPaused(taskId: string, paused: boolean, atMs: number = this.#nowMs()): TaskRecord {
    const run = this.#db.transaction((): TaskRecord => {
      const row = this.#select.get(taskId);
      if (!row) throw missingError(taskId);
      if (paused && row.paused_at_ms === null) {
        this.#db.prepare('UPDATE tasks SET paused_at_ms = ?, updated_at_ms = ? WHERE id = ?').run(atMs, this.#nowMs(), taskId);
      } else if (!paused && row.paused_at_ms !== null) {
        const pausedMs = row.paused_ms + Math.max(0, atMs - row.paused_at_ms);
        this.#db.prepare('UPDATE tasks SET paused_at_ms = NULL, paused_ms = ?, updated_at_ms = ? WHERE id = ?').run(pausedMs, this.#nowMs(), taskId);
      }
      return toRecord(this.#select.get(taskId)!);
    });
    return asDiskFull(() => run.immediate());
  }

  /**
   * Records the task's health as last seen. Allowed in any state, so that the last word of a task
   * that just ended is kept; a task whose record is gone (retention) is skipped, not an error.
   */
  setHealth(taskId: string, health: TaskHealth): TaskRecord | undefined {
    const run = this.#db.transaction((): TaskRecord | undefined => {
      const changes = this.#db.prepare('UPDATE tasks SET health = ?, updated_at_ms = ? WHERE id = ?').run(JSON.stringify(health), this.#nowMs(), taskId).changes;
      return changes === 0 ? undefined : toRecord(this.#select.get(taskId)!);
    });
    return asDiskFull(() => run.immediate());
  }

  /** How many tasks that have not ended are unhealthy, as last seen (for metrics). */
  countUnhealthy(): number {
    return this.#db
      .prepare<[], { n: number }>(`SELECT COUNT(*) AS n FROM tasks WHERE state IN ('starting', 'running', 'stopping') AND health IS NOT NULL AND ${jsonField(this.#db.dialect, 'health', 'status')} = 'unhealthy'`)
      .get()!.n;
  }

  /**
   * Records that the task's output was cut, and why. The first reason stands; allowed in any state,
   * since the pump of a task that ended may be the one that meets the full disk.
   */
  setOutputTruncated(taskId: string, reason: string): TaskRecord {
    const run = this.#db.transaction((): TaskRecord => {
      const row = this.#select.get(taskId);
      if (!row) throw missingError(taskId);
      if (row.output_truncated === null) {
        this.#db.prepare('UPDATE tasks SET output_truncated = ?, updated_at_ms = ? WHERE id = ?').run(reason, this.#nowMs(), taskId);
      }
      return toRecord(this.#select.get(taskId)!);
    });
    return asDiskFull(() => run.immediate());
  }

  /** Records what a task used (or why that is unknown), at its end; the first record stands. */
  setUsage(taskId: string, outcome: UsageOutcome): TaskRecord {
    const run = this.#db.transaction((): TaskRecord => {
      const row = this.#select.get(taskId);
      if (!row) throw missingError(taskId);
      if (row.usage === null) {
        this.#db.prepare('UPDATE tasks SET usage = ?, updated_at_ms = ? WHERE id = ?').run(JSON.stringify(outcome), this.#nowMs(), taskId);
      }
      return toRecord(this.#select.get(taskId)!);
    });
    return asDiskFull(() => run.immediate());
  }

  /** Records what was collected of the task's `collect` paths at its end; the first record stands. */
  setArtifacts(taskId: string, artifacts: ArtifactsRecord): TaskRecord {
    const run = this.#db.transaction((): TaskRecord => {
      const row = this.#select.get(taskId);
      if (!row) throw missingError(taskId);
      if (row.artifacts === null) {
        this.#db.prepare('UPDATE tasks SET artifacts = ?, updated_at_ms = ? WHERE id = ?').run(JSON.stringify(artifacts), this.#nowMs(), taskId);
      }
      return toRecord(this.#select.get(taskId)!);
    });
    return asDiskFull(() => run.immediate());
  }
}

/**
 * The cluster report of a local transition of a claimed task: running with its container, or its
 * end (exited with the exit code and the end's kind; lost with the reason). Other moves (starting,
 * stopping, removed, a restart's attempts) are the node's own.
 */
export function clusterReportOf(transition: TaskTransition, containerId: string | null | undefined): OutboxTransition | undefined {
  switch (transition.to) {
    case 'running': {
      const id = transition.containerId ?? containerId ?? undefined;
      return id === undefined ? { kind: 'running' } : { kind: 'running', containerId: id };
    }
    case 'exited': {
      const end = transition.endState;
      return { kind: 'exited', exitCode: 'exitCode' in end && end.exitCode !== undefined ? end.exitCode : null, end: end.kind };
    }
    case 'lost':
      return { kind: 'lost', reason: transition.endState.reason };
    default:
      return undefined;
  }
}
