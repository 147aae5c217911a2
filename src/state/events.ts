import type { SqlConnection, SqlStatement } from './sql.js';

/** One stored event: its id (increasing, never reused), when it happened, and its JSON body. */
export interface StoredEvent {
  readonly id: number;
  readonly atMs: number;
  readonly body: string;
}

/** What is kept of the log: the first id still stored, the last id ever given, and the newest trimmed event's time. */
export interface EventLogBounds {
  /** The id the next replay from the very start begins with: the oldest kept, or lastId + 1 when none is kept. */
  readonly firstKeptId: number;
  /** The last id given out; 0 when none ever was. */
  readonly lastId: number;
  /** The time of the newest event trimmed away; undefined when nothing was ever trimmed. */
  readonly trimmedThroughMs: number | undefined;
}

const TRIMMED_THROUGH_KEY = 'events-trimmed-through-ms';

/**
 * The agent's event log: every event it announces, kept for a window (an age and a count) so that a
 * client that lost its stream can ask for what it missed (`Last-Event-ID`). Ids come from the database's
 * AUTOINCREMENT, so they increase across restarts and are never reused.
 */
export class EventLogRepository {
  readonly #db: SqlConnection;
  // Prepared once: the insert runs for every event, bounds and trim every few seconds.
  readonly #insert: SqlStatement<[number, string], { id: number }>;
  readonly #after: SqlStatement<[number, number], StoredEvent>;
  readonly #firstAfterTime: SqlStatement<[number], { id: number }>;
  readonly #lastId: SqlStatement<[], { seq: number }>;
  readonly #firstId: SqlStatement<[], { id: number | null }>;
  readonly #trimmedThrough: SqlStatement<[], { value: string }>;
  readonly #cutId: SqlStatement<[number, number], { id: number | null }>;
  readonly #newestAtThrough: SqlStatement<[number], { atMs: number | null }>;
  readonly #deleteThrough: SqlStatement<[number]>;
  readonly #recordTrimmed: SqlStatement<[string]>;

  constructor(db: SqlConnection) {
    this.#db = db;
    this.#insert = db.prepare('INSERT INTO events (at_ms, body) VALUES (?, ?) RETURNING id');
    this.#after = db.prepare('SELECT id, at_ms AS "atMs", body FROM events WHERE id > ? ORDER BY id LIMIT ?');
    this.#firstAfterTime = db.prepare('SELECT id FROM events WHERE at_ms > ? ORDER BY at_ms, id LIMIT 1');
    // The last id handed out, even when its event was trimmed since: AUTOINCREMENT's counter, or the sequence's.
    this.#lastId = db.prepare(
      db.dialect === 'sqlite' ? "SELECT seq FROM sqlite_sequence WHERE name = 'events'" : 'SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS seq FROM events_id_seq',
    );
    this.#firstId = db.prepare('SELECT MIN(id) AS id FROM events');
    this.#trimmedThrough = db.prepare(`SELECT value FROM meta WHERE key = '${TRIMMED_THROUGH_KEY}'`);
    this.#cutId = db.prepare('SELECT MAX(id) AS id FROM events WHERE at_ms < ? OR id <= ?');
    this.#newestAtThrough = db.prepare('SELECT MAX(at_ms) AS "atMs" FROM events WHERE id <= ?');
    this.#deleteThrough = db.prepare('DELETE FROM events WHERE id <= ?');
    this.#recordTrimmed = db.prepare(
      `INSERT INTO meta (key, value) VALUES ('${TRIMMED_THROUGH_KEY}', ?) ON CONFLICT (key) DO UPDATE SET value = ${db.dialect === 'sqlite' ? 'MAX' : 'GREATEST'}(CAST(meta.value AS BIGINT), CAST(excluded.value AS BIGINT))${db.dialect === 'sqlite' ? '' : '::text'}`,
    );
  }

  /** Stores one event and returns its id. */
  append(atMs: number, body: string): number {
    return Number(this.#insert.get(atMs, body)!.id);
  }

  /** Up to `limit` events after `id`, oldest first. */
  after(id: number, limit: number): StoredEvent[] {
    return this.#after.all(id, limit);
  }

  /** The id just before the first event later than `atMs`, for a replay from a time. */
  idBefore(atMs: number): number {
    const row = this.#firstAfterTime.get(atMs);
    return row ? row.id - 1 : this.bounds().lastId;
  }

  bounds(): EventLogBounds {
    const lastId = this.#lastId.get()?.seq ?? 0;
    const first = this.#firstId.get()?.id ?? null;
    const trimmed = this.#trimmedThrough.get()?.value;
    return { firstKeptId: first ?? lastId + 1, lastId, trimmedThroughMs: trimmed === undefined ? undefined : Number(trimmed) };
  }

  /**
   * Removes the events older than `olderThanMs` and those beyond the newest `keepCount`, and records
   * the newest removed event's time (a replay from before it cannot be whole). Returns how many went.
   */
  trim(olderThanMs: number, keepCount: number): number {
    const run = this.#db.transaction((): number => {
      const cutId = this.#cutId.get(olderThanMs, this.bounds().lastId - keepCount)?.id;
      if (cutId === null || cutId === undefined) return 0;
      const newestCut = this.#newestAtThrough.get(cutId)?.atMs;
      const removed = this.#deleteThrough.run(cutId).changes;
      if (newestCut !== undefined && newestCut !== null) this.#recordTrimmed.run(String(newestCut));
      return removed;
    });
    return run.immediate();
  }
}
