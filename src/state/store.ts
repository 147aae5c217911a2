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
import type { SqlConnection } from './sql.js';

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

/** What differs between the databases a store can live in, beyond its SQL: upkeep and facts about the database. */
export interface StoreBackend {
  readonly kind: 'sqlite' | 'postgres';
  readonly connection: SqlConnection;
  readonly isOpen: boolean;
  journalMode(): string;
  autoVacuum(): 'none' | 'full' | 'incremental';
  sizeBytes(): number;
  freePages(): number;
  /** Gives up to `maxPages` free pages back; returns the free pages left. */
  reclaimSpace(maxPages: number): number;
  checkpoint(): void;
  schemaVersion(): number;
  close(): void;
}

/** The embedded default: one SQLite file in the data directory. */
class SqliteBackend implements StoreBackend {
  readonly kind = 'sqlite' as const;
  readonly connection: SqlConnection;
  readonly #db: Database.Database;

  constructor(db: Database.Database) {
    this.#db = db;
    this.connection = sqliteConnection(db);
  }

  get isOpen(): boolean {
    return this.#db.open;
  }

  journalMode(): string {
    return String(this.#db.pragma('journal_mode', { simple: true }));
  }

  autoVacuum(): 'none' | 'full' | 'incremental' {
    const mode = this.#db.pragma('auto_vacuum', { simple: true }) as number;
    return mode === 2 ? 'incremental' : mode === 1 ? 'full' : 'none';
  }

  sizeBytes(): number {
    return (this.#db.pragma('page_count', { simple: true }) as number) * (this.#db.pragma('page_size', { simple: true }) as number);
  }

  freePages(): number {
    return this.#db.pragma('freelist_count', { simple: true }) as number;
  }

  reclaimSpace(maxPages: number): number {
    if (this.autoVacuum() === 'incremental' && maxPages > 0) asDiskFull(() => this.#db.pragma(`incremental_vacuum(${Math.floor(maxPages)})`));
    return this.freePages();
  }

  checkpoint(): void {
    if (this.journalMode() === 'wal') this.#db.pragma('wal_checkpoint(TRUNCATE)');
  }

  schemaVersion(): number {
    return this.#db.pragma('user_version', { simple: true }) as number;
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}

/** better-sqlite3's database as the repositories' connection: its API is the one they were written for. */
function sqliteConnection(db: Database.Database): SqlConnection {
  return {
    dialect: 'sqlite',
    prepare: <P extends unknown[], R>(sql: string) => db.prepare<P, R>(sql),
    exec: (sql) => void db.exec(sql),
    transaction: (work) => db.transaction(work),
  };
}

/**
 * The agent's durable state: tasks, groups, image holders, host ports, events and a few facts (the
 * agent id), in one database: a SQLite file by default (openStore), or a PostgreSQL schema
 * (openPostgresStore, postgres/backend.ts). The repositories run the same SQL on both.
 *
 * Durability (SQLite): WAL mode with `synchronous=NORMAL`. A committed write survives the process being
 * killed at any point (kill -9, a crash); only an operating-system crash or power loss can drop the
 * last few commits, which the engine-side recovery (containers are found by name and label)
 * tolerates. PostgreSQL's commits are as durable as its server is set up to make them. Every write is one transaction.
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
  /** Where the database lives: a file (`:memory:` for a throw-away store), or `postgres:<schema>`. */
  readonly location: string;
  /** Schema versions applied by this open (empty when the schema was already current). */
  readonly appliedMigrations: readonly number[];
  readonly #backend: StoreBackend;

  /** @internal Use openStore or openPostgresStore. */
  constructor(backend: StoreBackend, location: string, appliedMigrations: readonly number[], nowMs: () => number, logger: Logger) {
    this.#backend = backend;
    const db = backend.connection;
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

  /** Which database holds the store. */
  get backend(): 'sqlite' | 'postgres' {
    return this.#backend.kind;
  }

  /** The journal mode in force (`wal` for a file store; PostgreSQL always writes ahead). */
  journalMode(): string {
    return this.#backend.journalMode();
  }

  /**
   * Runs `work` as one transaction: several writes (each of which is a transaction of its own
   * otherwise) commit together or not at all. For bulk imports (a bench filling the store); the
   * agent's own writes stay one per change.
   */
  transaction<T>(work: () => T): T {
    return asDiskFull(() => this.#backend.connection.transaction(work).immediate());
  }

  /** How the database gives deleted rows' space back: `incremental` for a SQLite store opened by this berth (unless its conversion failed); `full` for PostgreSQL (its autovacuum). */
  autoVacuum(): 'none' | 'full' | 'incremental' {
    return this.#backend.autoVacuum();
  }

  /** The database's size, in bytes (SQLite: its pages, free ones included; PostgreSQL: the schema's tables and indexes). */
  sizeBytes(): number {
    return this.#backend.sizeBytes();
  }

  /** Pages of the database that deleted rows freed and that are not given back to the file system yet (always 0 on PostgreSQL). */
  freePages(): number {
    return this.#backend.freePages();
  }

  /**
   * Gives up to `maxPages` free pages back to the file system (SQLite's incremental vacuum), so the
   * database file shrinks after many deletions; a few at a time, as each call holds the write lock
   * while it moves pages. Returns the free pages left. Does nothing on a database without
   * incremental auto-vacuum (see openStore), nor on PostgreSQL.
   */
  reclaimSpace(maxPages: number): number {
    return this.#backend.reclaimSpace(maxPages);
  }

  /**
   * Copies the write-ahead log into the database and truncates the log: the database file takes
   * its smaller size (a vacuum's truncation lands here) and the log its least. Best effort: a
   * reader in another connection may hold it back, and the next checkpoint finishes the work.
   * PostgreSQL checkpoints by itself.
   */
  checkpoint(): void {
    this.#backend.checkpoint();
  }

  /** The schema version of the database. */
  schemaVersion(): number {
    return this.#backend.schemaVersion();
  }

  get isOpen(): boolean {
    return this.#backend.isOpen;
  }

  /** Closes the database; a second call does nothing. */
  close(): void {
    this.#backend.close();
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
    return new Store(new SqliteBackend(db), file, applied, nowMs, logger);
  } catch (error) {
    db.close();
    throw error;
  }
}
