import { closeSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { BerthError, messageOf } from '../common/errors.js';
import { silentLogger, type Logger } from '../common/logger.js';
import { EventLogRepository } from './events.js';
import { ImageHolderRepository } from './images.js';
import { MetaRepository } from './meta.js';
import { migrate } from './migrations.js';
import { TaskRepository } from './tasks.js';

export interface StoreOptions {
  /** How long a write waits for another connection's lock before failing. Default 5000 ms. */
  busyTimeoutMs?: number;
  /** Time source for the recorded timestamps (epoch milliseconds). Default Date.now. */
  nowMs?: () => number;
  /** Receives every task state change (debug level). Default silent. */
  logger?: Logger;
}

/** Conventional file name of the store inside the agent's data directory. */
export const STORE_FILE_NAME = 'berth.db';

/**
 * The agent's durable state: tasks, image holders, and a few facts (the agent id), in one SQLite
 * database.
 *
 * Durability: WAL mode with `synchronous=NORMAL`. A committed write survives the process being
 * killed at any point (kill -9, a crash); only an operating-system crash or power loss can drop the
 * last few commits, which the engine-side recovery (containers are found by name and label)
 * tolerates. Every write is one transaction.
 *
 * Use it as a write-ahead record: write the intent before asking the engine to act (`starting`
 * before create, `stopping` before stop, `removed` before remove, an image hold before the task
 * uses the image), and record the outcome when the engine answers. A crash in between leaves a
 * record that recovery on the next start can finish from.
 */
export class Store {
  readonly tasks: TaskRepository;
  readonly images: ImageHolderRepository;
  readonly meta: MetaRepository;
  readonly events: EventLogRepository;
  /** Where the database lives (`:memory:` for a throw-away store). */
  readonly location: string;
  /** Schema versions applied by this open (empty when the schema was already current). */
  readonly appliedMigrations: readonly number[];
  readonly #db: Database.Database;

  /** @internal Use openStore. */
  constructor(db: Database.Database, location: string, appliedMigrations: readonly number[], nowMs: () => number, logger: Logger) {
    this.#db = db;
    this.location = location;
    this.appliedMigrations = Object.freeze([...appliedMigrations]);
    this.tasks = new TaskRepository(db, nowMs, logger);
    this.images = new ImageHolderRepository(db, nowMs);
    this.meta = new MetaRepository(db);
    this.events = new EventLogRepository(db);
  }

  /** The SQLite journal mode in force (`wal` for a file store). */
  journalMode(): string {
    return String(this.#db.pragma('journal_mode', { simple: true }));
  }

  /** The schema version of the database. */
  schemaVersion(): number {
    return this.#db.pragma('user_version', { simple: true }) as number;
  }

  get isOpen(): boolean {
    return this.#db.open;
  }

  /** Closes the database; a second call does nothing. */
  close(): void {
    if (this.#db.open) this.#db.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Opens (creating it if needed) the store at `file` and brings its schema up to date. The file and
 * its directory are created private (0600 and 0700): specs may carry secrets in their environment.
 * Opening the same file from two Store instances is safe: writes serialise on SQLite's lock.
 */
export function openStore(file: string, options: StoreOptions = {}): Store {
  const nowMs = options.nowMs ?? Date.now;
  const logger = options.logger ?? silentLogger;
  const isMemory = file === ':memory:';
  if (!isMemory) {
    try {
      mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      // SQLite would create the file with the umask's mode; create it first so it is private. The WAL
      // and shared-memory files SQLite adds copy the database file's permissions.
      closeSync(openSync(file, 'a', 0o600));
    } catch (error) {
      throw new BerthError('BERTH_VALIDATION', `cannot create the state database ${file}: ${messageOf(error)}`, {
        cause: error,
        context: { location: file },
      });
    }
  }
  const db = new Database(file, { timeout: options.busyTimeoutMs ?? 5000 });
  try {
    if (!isMemory) {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      // A small data directory must not fill up with journal: checkpoint every 256 pages (1 MiB at
      // 4 KiB pages), and give the space back after each checkpoint.
      db.pragma('wal_autocheckpoint = 256');
      db.pragma('journal_size_limit = 1048576');
    }
    db.pragma('foreign_keys = ON');
    const applied = migrate(db, file, nowMs);
    return new Store(db, file, applied, nowMs, logger);
  } catch (error) {
    db.close();
    throw error;
  }
}
