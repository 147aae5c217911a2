import type { SqlConnection } from './sql.js';
import { asDiskFull } from './disk-full.js';

/**
 * A cluster transition of a claimed task, as the node reports it to the cluster store (the same
 * shape as the cluster's TaskTransition; src/state does not depend on src/cluster).
 */
export type OutboxTransition =
  | { readonly kind: 'running'; readonly containerId?: string }
  | { readonly kind: 'exited'; readonly exitCode: number | null; readonly end: string }
  | { readonly kind: 'lost'; readonly reason: string };

/** One report waiting to be sent, in the order the node made them (`seq`). */
export interface OutboxEntry {
  readonly seq: number;
  readonly taskId: string;
  /** The lease epoch the report is made under (the task's claim, or the registration that kept it). */
  readonly epoch: number;
  readonly transition: OutboxTransition;
  readonly createdAtMs: number;
}

interface OutboxRow {
  seq: number;
  task_id: string;
  epoch: number;
  transition: string;
  created_at_ms: number;
}

/**
 * The cluster report outbox (docs/cluster.md "Reports"): entries are written with the local state
 * change they report (TaskRepository.update writes them in its transaction), sent in `seq` order by
 * the agent's reporter, and deleted once the cluster store took them.
 */
export class ClusterOutboxRepository {
  readonly #db: SqlConnection;
  readonly #nowMs: () => number;

  constructor(db: SqlConnection, nowMs: () => number) {
    this.#db = db;
    this.#nowMs = nowMs;
  }

  /** Appends a report (outside a task update: a claim that could not be recorded, say). */
  append(taskId: string, epoch: number, transition: OutboxTransition): void {
    asDiskFull(() => appendOutbox(this.#db, taskId, epoch, transition, this.#nowMs()));
  }

  /** The oldest entries first, at most `limit`. */
  list(limit = 100): OutboxEntry[] {
    return this.#db
      .prepare<[number], OutboxRow>('SELECT * FROM cluster_outbox ORDER BY seq LIMIT ?')
      .all(limit)
      .map((row) => ({ seq: row.seq, taskId: row.task_id, epoch: row.epoch, transition: JSON.parse(row.transition) as OutboxTransition, createdAtMs: row.created_at_ms }));
  }

  /** Entries waiting to be sent. */
  count(): number {
    return this.#db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM cluster_outbox').get()!.n;
  }

  /** Deletes a sent entry. */
  delete(seq: number): void {
    asDiskFull(() => this.#db.prepare('DELETE FROM cluster_outbox WHERE seq = ?').run(seq));
  }
}

/** Writes one outbox entry with the caller's connection (inside the caller's transaction). */
export function appendOutbox(db: SqlConnection, taskId: string, epoch: number, transition: OutboxTransition, nowMs: number): void {
  db.prepare('INSERT INTO cluster_outbox (task_id, epoch, transition, created_at_ms) VALUES (?, ?, ?, ?)').run(taskId, epoch, JSON.stringify(transition), nowMs);
}
