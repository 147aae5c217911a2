import type { SqlConnection, SqlStatement } from './sql.js';
import { BerthError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { PublishedPort } from '../engine/types.js';
import type { GroupEnd } from '../groups/lifecycle.js';
import { asDiskFull } from './disk-full.js';
import { ENDED_STATES_SQL, type Reservation, type StoredTaskSpec, type TaskGroupLink } from './tasks.js';

/**
 * A group's own states (agent/groups.ts): `pending` (waiting for admission, as one unit),
 * `starting` (its infrastructure is being made), `running` (its tasks are driven by the lifecycle
 * planner), `stopping` (a stop was asked, a prestart failed, or its main tasks ended and its
 * sidecars are being stopped), `exited` (every task ended; its end state is recorded: the word tasks use). Only forward.
 */
export const GROUP_STATES = ['pending', 'starting', 'running', 'stopping', 'exited'] as const;
export type GroupState = (typeof GROUP_STATES)[number];

/** The states a group may still move from: a live group holds its share and its engine objects. */
export const LIVE_GROUP_STATES: readonly GroupState[] = Object.freeze(['pending', 'starting', 'running', 'stopping']);

/** One group as the store records it. Every record is frozen. */
export interface GroupRecord {
  readonly id: string;
  /** Submission order. */
  readonly seq: number;
  readonly name: string;
  /** The group document as submitted (its tasks with the agent's defaults applied, secrets redacted). */
  readonly spec: Readonly<Record<string, unknown>>;
  readonly state: GroupState;
  /** Set once the state is `exited`. */
  readonly endState?: GroupEnd;
  /** The share of the admission budget the group draws, as one unit (the sum of its tasks'). */
  readonly reservation?: Reservation;
  readonly infraContainerId?: string;
  /** The start its engine objects carry (createGroupResources adopts only those of this start). */
  readonly startAttempt: string;
  readonly stopRequested: boolean;
  /** The host ports published on its infrastructure container, once it runs. */
  readonly ports?: readonly PublishedPort[];
  readonly createdAtMs: number;
  readonly startedAtMs?: number;
  readonly endedAtMs?: number;
  /** When its engine objects were removed and its share released, after its end; undefined before. */
  readonly cleanedAtMs?: number;
  readonly updatedAtMs: number;
}

/** A task of a new group, recorded pending with it. */
export interface NewGroupTask {
  id: string;
  spec: StoredTaskSpec;
  reservation?: Reservation;
  sealedSecrets?: string;
  link: Omit<TaskGroupLink, 'groupId'>;
}

export interface NewGroup {
  id: string;
  name: string;
  spec: Readonly<Record<string, unknown>>;
  reservation: Reservation;
  startAttempt: string;
  tasks: readonly NewGroupTask[];
}

/** What a group's record may change to (agent/groups.ts moves it); only the fields given change. */
export interface GroupUpdate {
  state?: GroupState;
  endState?: GroupEnd;
  infraContainerId?: string;
  stopRequested?: boolean;
  ports?: readonly PublishedPort[];
  cleaned?: boolean;
}

interface GroupRow {
  seq: number;
  id: string;
  name: string;
  spec: string;
  state: string;
  end_state: string | null;
  reservation: string | null;
  infra_container_id: string | null;
  start_attempt: string;
  stop_requested: number;
  ports: string | null;
  created_at_ms: number;
  started_at_ms: number | null;
  ended_at_ms: number | null;
  cleaned_at_ms: number | null;
  updated_at_ms: number;
}

function toGroupRecord(row: GroupRow): GroupRecord {
  const record: GroupRecord = {
    id: row.id,
    seq: row.seq,
    name: row.name,
    spec: JSON.parse(row.spec) as Record<string, unknown>,
    state: row.state as GroupState,
    ...(row.end_state === null ? {} : { endState: JSON.parse(row.end_state) as GroupEnd }),
    ...(row.reservation === null ? {} : { reservation: JSON.parse(row.reservation) as Reservation }),
    ...(row.infra_container_id === null ? {} : { infraContainerId: row.infra_container_id }),
    startAttempt: row.start_attempt,
    stopRequested: row.stop_requested !== 0,
    ...(row.ports === null ? {} : { ports: JSON.parse(row.ports) as PublishedPort[] }),
    createdAtMs: row.created_at_ms,
    ...(row.started_at_ms === null ? {} : { startedAtMs: row.started_at_ms }),
    ...(row.ended_at_ms === null ? {} : { endedAtMs: row.ended_at_ms }),
    ...(row.cleaned_at_ms === null ? {} : { cleanedAtMs: row.cleaned_at_ms }),
    updatedAtMs: row.updated_at_ms,
  };
  return Object.freeze(record);
}

const RANK: Readonly<Record<GroupState, number>> = { pending: 0, starting: 1, running: 2, stopping: 3, exited: 4 };

/** Whether a group may move from `from` to `to`: forward only (a state may be skipped), and `exited` is final. */
export function isLegalGroupMove(from: GroupState, to: GroupState): boolean {
  return from === to ? from !== 'exited' : RANK[to] > RANK[from];
}

/**
 * The groups table. A group and its tasks are recorded in one transaction (so a crash never leaves
 * half a group), and removed in one (its tasks' records with it).
 */
export class GroupRepository {
  readonly #db: SqlConnection;
  readonly #nowMs: () => number;
  readonly #logger: Logger;
  readonly #select: SqlStatement<[string], GroupRow>;

  constructor(db: SqlConnection, nowMs: () => number, logger: Logger) {
    this.#db = db;
    this.#nowMs = nowMs;
    this.#logger = logger;
    this.#select = db.prepare<[string], GroupRow>('SELECT * FROM groups WHERE id = ?');
  }

  /**
   * Records a submitted group as `pending` and its tasks as pending task records that name it. A
   * group whose id exists is not touched: `inserted` is false and the existing one is returned.
   * A task id that exists (a task of its own with that id) is BERTH_TASK_EXISTS, and nothing is recorded.
   */
  insert(group: NewGroup): { inserted: boolean; group: GroupRecord } {
    const run = this.#db.transaction((): { inserted: boolean; group: GroupRecord } => {
      const existing = this.#select.get(group.id);
      if (existing) return { inserted: false, group: toGroupRecord(existing) };
      const now = this.#nowMs();
      this.#db
        .prepare(
          `INSERT INTO groups (id, name, spec, state, reservation, start_attempt, created_at_ms, updated_at_ms)
           VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)`,
        )
        .run(group.id, group.name, JSON.stringify(group.spec), JSON.stringify(group.reservation), group.startAttempt, now, now);
      const taken = this.#db.prepare<[string], { id: string }>('SELECT id FROM tasks WHERE id = ?');
      const insertTask = this.#db.prepare(
        `INSERT INTO tasks (id, spec, state, reservation, submitted_at_ms, updated_at_ms, sealed_secrets, group_id, group_task, lifecycle)
         VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)`,
      );
      for (const task of group.tasks) {
        if (taken.get(task.id)) throw new BerthError('BERTH_TASK_EXISTS', `a task with id ${task.id} exists already; choose another group id`, { context: { taskId: task.id, groupId: group.id } });
        insertTask.run(task.id, JSON.stringify(task.spec), task.reservation ? JSON.stringify(task.reservation) : null, now, now, task.sealedSecrets ?? null, group.id, task.link.taskName, task.link.lifecycle);
      }
      return { inserted: true, group: toGroupRecord(this.#select.get(group.id)!) };
    });
    const result = asDiskFull(() => run.immediate());
    if (result.inserted) this.#logger.debug({ groupId: group.id, to: 'pending' }, 'group submitted');
    return result;
  }

  get(groupId: string): GroupRecord | undefined {
    const row = this.#select.get(groupId);
    return row ? toGroupRecord(row) : undefined;
  }

  /** Groups in submission order, optionally only those in `states`. */
  list(filter: { state?: readonly GroupState[]; limit?: number } = {}): GroupRecord[] {
    const states = filter.state;
    if (states !== undefined && states.length === 0) return [];
    const where = states === undefined ? '' : ` WHERE state IN (${states.map(() => '?').join(', ')})`;
    const limit = filter.limit === undefined ? '' : ` LIMIT ${Math.max(0, Math.floor(filter.limit))}`;
    return this.#db
      .prepare<string[], GroupRow>(`SELECT * FROM groups${where} ORDER BY seq ASC${limit}`)
      .all(...(states ?? []))
      .map(toGroupRecord);
  }

  /** Groups that have not ended (pending, starting, running, stopping): the reconciler leaves their infrastructure alone. */
  listLive(): GroupRecord[] {
    return this.list({ state: LIVE_GROUP_STATES });
  }

  /** Groups whose work is not over: live ones, and ended ones whose engine objects are still to be removed (recovery resumes them). */
  listUnfinished(): GroupRecord[] {
    return this.#db.prepare<[], GroupRow>(`SELECT * FROM groups WHERE state != 'exited' OR cleaned_at_ms IS NULL ORDER BY seq ASC`).all().map(toGroupRecord);
  }

  /**
   * Changes a group's record in one transaction; a move that is not forward (see isLegalGroupMove)
   * is refused with BERTH_TASK_STATE. Moving to `running` stamps its start, to `exited` its end.
   */
  update(groupId: string, change: GroupUpdate): GroupRecord {
    const run = this.#db.transaction((): { from: GroupState; record: GroupRecord } => {
      const row = this.#select.get(groupId);
      if (!row) throw new BerthError('BERTH_GROUP_NOT_FOUND', `no group ${groupId}`, { context: { groupId } });
      const from = row.state as GroupState;
      const now = this.#nowMs();
      const set: string[] = ['updated_at_ms = ?'];
      const params: Array<string | number | null> = [now];
      if (change.state !== undefined && change.state !== from) {
        if (!isLegalGroupMove(from, change.state)) {
          throw new BerthError('BERTH_TASK_STATE', `group ${groupId} cannot move from ${from} to ${change.state}`, { context: { groupId, state: from, requested: change.state } });
        }
        set.push('state = ?');
        params.push(change.state);
        if (change.state === 'running') set.push(`started_at_ms = COALESCE(started_at_ms, ${now})`);
        if (change.state === 'exited') set.push(`ended_at_ms = ${now}`);
      }
      if (change.endState !== undefined) {
        set.push('end_state = ?');
        params.push(JSON.stringify(change.endState));
      }
      if (change.infraContainerId !== undefined) {
        set.push('infra_container_id = ?');
        params.push(change.infraContainerId);
      }
      if (change.stopRequested !== undefined) {
        set.push('stop_requested = ?');
        params.push(change.stopRequested ? 1 : 0);
      }
      if (change.ports !== undefined) {
        set.push('ports = ?');
        params.push(JSON.stringify(change.ports));
      }
      if (change.cleaned === true) set.push(`cleaned_at_ms = COALESCE(cleaned_at_ms, ${now})`);
      this.#db.prepare(`UPDATE groups SET ${set.join(', ')} WHERE id = ?`).run(...params, groupId);
      return { from, record: toGroupRecord(this.#select.get(groupId)!) };
    });
    const { from, record } = asDiskFull(() => run.immediate());
    if (from !== record.state) this.#logger.debug({ groupId, from, to: record.state, ...(record.endState ? { end: record.endState.kind } : {}) }, 'group state changed');
    return record;
  }

  /** Ended groups whose engine objects are removed, ended first: retention's candidates. */
  oldestEnded(limit: number): Array<{ id: string; endedAtMs: number }> {
    return this.#db
      .prepare<[number], { id: string; ended_at_ms: number }>(`SELECT id, COALESCE(ended_at_ms, updated_at_ms) AS ended_at_ms FROM groups WHERE state = 'exited' AND cleaned_at_ms IS NOT NULL ORDER BY ended_at_ms, seq LIMIT ?`)
      .all(limit)
      .map((row) => Object.freeze({ id: row.id, endedAtMs: row.ended_at_ms }));
  }

  /** How many ended groups are kept. */
  countEnded(): number {
    return this.#db.prepare<[], { n: number }>(`SELECT COUNT(*) AS n FROM groups WHERE state = 'exited'`).get()!.n;
  }

  /**
   * Deletes an ended group and its tasks' records in one transaction. Refused (false, nothing
   * deleted) while a task of it has not ended or still holds an image (its container's removal is
   * not finished); the caller removes the tasks' output first.
   */
  delete(groupId: string): boolean {
    const run = this.#db.transaction((): boolean => {
      const row = this.#select.get(groupId);
      if (!row) return false;
      const busy = this.#db
        .prepare<[string], { n: number }>(
          `SELECT COUNT(*) AS n FROM tasks WHERE group_id = ? AND (NOT (${ENDED_STATES_SQL}) OR EXISTS (SELECT 1 FROM image_holders WHERE image_holders.task_id = tasks.id))`,
        )
        .get(groupId)!.n;
      if (busy > 0) return false;
      this.#db.prepare('DELETE FROM tasks WHERE group_id = ?').run(groupId);
      this.#db.prepare('DELETE FROM groups WHERE id = ?').run(groupId);
      return true;
    });
    const deleted = asDiskFull(() => run.immediate());
    if (deleted) this.#logger.debug({ groupId }, 'group record deleted');
    return deleted;
  }
}
