import { closeSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { BerthError, messageOf } from '../common/errors.js';
import { silentLogger, type Logger } from '../common/logger.js';
import { asDiskFull } from './disk-full.js';
import { EventLogRepository } from './events.js';
import { ImageHolderRepository } from './images.js';
import { MetaRepository } from './meta.js';
import { migrate } from './migrations.js';
import { PortRepository } from './ports.js';
import { TaskRepository } from './tasks.js';
import { GroupRepository } from './groups.js';
import { ClusterOutboxRepository } from './cluster-outbox.js';

export interface StoreOptions {
  /** How long a write waits for another connection's lock before failing. Default 5000 ms. */
  busyTimeoutMs?: number;
  /** Time source for the recorded timestamps (epoch milliseconds). Default Date.now. */
  nowMs?: () => number;
  /** Receives every task state change (debug level). Default silent. */
  logger?: Logger;
}

/** SQLite's `PRAGMA auto_vacuum` value for incremental. */
const AUTO_VACUUM_INCREMENTAL = 2;

/**
 * Turns on incremental auto-vacuum in a store made before berth set it: only a VACUUM can, which
 * rewrites the file once (it needs as much free space again, and no other connection reading).
 * When it fails the store works as before, keeping freed pages for reuse rather than giving them
 * back; the next open tries again.
 */
function convertToIncrementalVacuum(db: Database.Database, file: string, logger: Logger): void {
  try {
    db.pragma('auto_vacuum = INCREMENTAL');
    db.exec('VACUUM');
    logger.info({ location: file }, 'the state database now gives the space of deleted records back (incremental auto-vacuum)');
  } catch (error) {
    logger.warn({ location: file, error: messageOf(error) }, 'could not turn on incremental auto-vacuum in the state database; freed space is reused but not given back');
  }
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
  /** Task groups (agent/groups.ts); their tasks are task records that name them. */
  readonly groups: GroupRepository;
  readonly images: ImageHolderRepository;
  readonly meta: MetaRepository;
  readonly events: EventLogRepository;
  /** Host ports handed out to tasks and groups (agent/ports.ts). */
  readonly ports: PortRepository;
  /** Cluster reports not sent yet (cluster mode: agent/cluster-reporter.ts). */
  readonly outbox: ClusterOutboxRepository;
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
    this.groups = new GroupRepository(db, nowMs, logger);
    this.images = new ImageHolderRepository(db, nowMs);
    this.meta = new MetaRepository(db);
    this.events = new EventLogRepository(db);
    this.ports = new PortRepository(db, nowMs);
    this.outbox = new ClusterOutboxRepository(db, nowMs);
  }

  /** The SQLite journal mode in force (`wal` for a file store). */
  journalMode(): string {
    return String(this.#db.pragma('journal_mode', { simple: true }));
  }

  /**
   * Runs `work` as one transaction: several writes (each of which is a transaction of its own
   * otherwise) commit together or not at all. For bulk imports (a bench filling the store); the
   * agent's own writes stay one per change.
   */
  transaction<T>(work: () => T): T {
    return asDiskFull(() => this.#db.transaction(work).immediate());
  }

  /** SQLite's auto_vacuum mode (`incremental` for a store opened by this berth, unless its conversion failed). */
  autoVacuum(): 'none' | 'full' | 'incremental' {
    const mode = this.#db.pragma('auto_vacuum', { simple: true }) as number;
    return mode === 2 ? 'incremental' : mode === 1 ? 'full' : 'none';
  }

  /** The database's size, in bytes: its pages, free ones included (what the file holds after a checkpoint). */
  sizeBytes(): number {
    return (this.#db.pragma('page_count', { simple: true }) as number) * (this.#db.pragma('page_size', { simple: true }) as number);
  }

  /** Pages of the database that deleted rows freed and that are not given back to the file system yet. */
  freePages(): number {
    return this.#db.pragma('freelist_count', { simple: true }) as number;
  }

  /**
   * Gives up to `maxPages` free pages back to the file system (SQLite's incremental vacuum), so the
   * database file shrinks after many deletions; a few at a time, as each call holds the write lock
   * while it moves pages. Returns the free pages left. Does nothing on a database without
   * incremental auto-vacuum (see openStore).
   */
  reclaimSpace(maxPages: number): number {
    if (this.autoVacuum() === 'incremental' && maxPages > 0) asDiskFull(() => this.#db.pragma(`incremental_vacuum(${Math.floor(maxPages)})`));
    return this.freePages();
  }

  /**
   * Copies the write-ahead log into the database and truncates the log: the database file takes
   * its smaller size (a vacuum's truncation lands here) and the log its least. Best effort: a
   * reader in another connection may hold it back, and the next checkpoint finishes the work.
   */
  checkpoint(): void {
    if (this.journalMode() === 'wal') this.#db.pragma('wal_checkpoint(TRUNCATE)');
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
    // Deleted records (retention) must give their space back: with incremental auto-vacuum, free
    // pages can be returned a few at a time (Store.reclaimSpace) instead of by a VACUUM that
    // rewrites the whole file under the write lock. The mode takes effect in a database without
    // tables; an older store is converted once by a VACUUM below.
    if ((db.pragma('auto_vacuum', { simple: true }) as number) !== AUTO_VACUUM_INCREMENTAL) db.pragma('auto_vacuum = INCREMENTAL');
    const applied = migrate(db, file, nowMs);
    if (!isMemory && (db.pragma('auto_vacuum', { simple: true }) as number) !== AUTO_VACUUM_INCREMENTAL) convertToIncrementalVacuum(db, file, logger);
    return new Store(db, file, applied, nowMs, logger);
  } catch (error) {
    db.close();
    throw error;
  }
}
