/**
 * Fixtures for tests of the cluster store against a real PostgreSQL: the shared test server that
 * scripts/test-postgres.sh starts (127.0.0.1:5499, trust auth), a fresh database per test file, and a
 * private server of a test's own for outages (restart, stop), so the shared one keeps serving the
 * other files running at the same time.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after } from 'node:test';
import pg from 'pg';
import { messageOf } from '../../src/common/errors.js';

const run = promisify(execFile);

/** The shared test server's port (scripts/test-postgres.sh, env BERTH_TEST_PG_PORT). */
export const TEST_PG_PORT = Number(process.env.BERTH_TEST_PG_PORT ?? 5499);

/** A URL of the shared test server for one database. */
export function testPgUrl(database = 'postgres', port = TEST_PG_PORT): string {
  return `postgres://postgres@127.0.0.1:${port}/${database}`;
}

/** Whether a server answers `select 1` on the URL within `timeoutMs`, and why not. */
export async function probePostgres(url = testPgUrl(), timeoutMs = 5000): Promise<{ ok: true } | { ok: false; reason: string }> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: messageOf(error) };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * For node:test's `skip` option, like requireEngine: false when the shared server answers. Under
 * CI=true a missing server is a failure, never a skip: it throws. Locally it resolves to a message
 * saying how to start one.
 */
export async function requirePostgres(): Promise<false | string> {
  const probe = await probePostgres();
  if (probe.ok) return false;
  const message = `no PostgreSQL answers on 127.0.0.1:${TEST_PG_PORT} (${probe.reason}); run \`bash scripts/test-postgres.sh\``;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${message}`);
  return message;
}

async function adminQuery(sql: string, port = TEST_PG_PORT): Promise<void> {
  const client = new pg.Client({ connectionString: testPgUrl('postgres', port), connectionTimeoutMillis: 10_000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export interface TestDatabase {
  readonly name: string;
  readonly url: string;
  /** Drops the database (ending its connections first). Safe to call more than once. */
  drop(): Promise<void>;
}

/** A database of its own on a server (default the shared one): `berth_test_<unique>`. */
export async function createTestDatabase(port = TEST_PG_PORT): Promise<TestDatabase> {
  const name = `berth_test_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${name}`, port);
  let dropped = false;
  return {
    name,
    url: testPgUrl(name, port),
    drop: async () => {
      if (dropped) return;
      dropped = true;
      await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`, port);
    },
  };
}

/**
 * The database `name` on the shared server, made unless it exists (a second call, or a restarted
 * agent's, finds it). Its URL.
 */
export async function ensureTestDatabase(name: string, port = TEST_PG_PORT): Promise<string> {
  try {
    await adminQuery(`CREATE DATABASE ${name}`, port);
  } catch (error) {
    // 42P04 duplicate_database: made before.
    if ((error as { code?: string }).code !== '42P04') throw error;
  }
  return testPgUrl(name, port);
}

/** A fresh database for the test file, dropped after its last test (registers an `after` hook). */
export function testDatabaseForFile(): () => Promise<TestDatabase> {
  const made: TestDatabase[] = [];
  after(async () => {
    await Promise.all(made.map((db) => db.drop()));
  });
  return async () => {
    const db = await createTestDatabase();
    made.push(db);
    return db;
  };
}

/** A free TCP port on 127.0.0.1 (free when asked; the server binds it right after). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function pgBin(): string {
  for (const version of ['15', '16', '17', '14', '13']) {
    const dir = `/usr/lib/postgresql/${version}/bin`;
    if (existsSync(path.join(dir, 'pg_ctl'))) return dir;
  }
  throw new Error('no PostgreSQL binaries under /usr/lib/postgresql; run `bash scripts/test-postgres.sh`');
}

export interface PrivatePostgres {
  readonly port: number;
  /** A URL of this server for `database`. */
  url(database?: string): string;
  /** `pg_ctl restart -m fast`: every connection is cut, and the server answers again when it resolves. */
  restart(): Promise<void>;
  /** `pg_ctl stop -m fast`. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /**
   * SIGSTOPs the server and all its processes: connections open and connects are accepted by the
   * kernel, but nothing answers (a hung or partitioned database). `thaw` continues them.
   */
  freeze(): Promise<void>;
  thaw(): Promise<void>;
  /** Stops the server and removes its directory. */
  destroy(): Promise<void>;
}

/**
 * A PostgreSQL server of the test's own, on a free port in a temporary directory, for tests that
 * restart or stop it. Runs as the postgres user when the test runs as root (the server refuses root).
 */
export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = pgBin();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'berth-pg-'));
  const asRoot = process.getuid?.() === 0;
  const owner = asRoot ? await run('id', ['-u', 'postgres']).then((r) => Number(r.stdout.trim())) : undefined;
  if (owner !== undefined) await chown(dir, owner, owner);
  await chmod(dir, 0o700);
  const port = await freePort();
  const data = path.join(dir, 'data');
  const exec = async (program: string, args: string[]): Promise<void> => {
    const command = path.join(bin, program);
    if (asRoot) {
      const quoted = [command, ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
      await run('su', ['postgres', '-s', '/bin/sh', '-c', quoted], { timeout: 120_000 });
    } else {
      await run(command, args, { timeout: 120_000 });
    }
  };
  const serverOptions = `-k ${dir} -p ${port} -c listen_addresses=127.0.0.1 -c fsync=off`;
  const ctl = (action: string): Promise<void> => exec('pg_ctl', ['-D', data, '-o', serverOptions, '-l', path.join(dir, 'log'), '-w', '-t', '60', '-m', 'fast', action]);
  await exec('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres']);
  await ctl('start');
  let running = true;
  let frozen: number[] = [];
  const serverPids = async (): Promise<number[]> => {
    const postmaster = Number((await readFile(path.join(data, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    const children = await run('pgrep', ['-P', String(postmaster)]).then((r) => r.stdout.split('\n').filter(Boolean).map(Number), () => []);
    return [postmaster, ...children];
  };
  const signalAll = (pids: readonly number[], signal: NodeJS.Signals): void => {
    for (const pid of pids) {
      try {
        process.kill(pid, signal);
      } catch {
        // A backend that ended meanwhile.
      }
    }
  };
  return {
    port,
    url: (database = 'postgres') => testPgUrl(database, port),
    restart: async () => {
      await ctl('restart');
      running = true;
    },
    stop: async () => {
      await ctl('stop');
      running = false;
    },
    start: async () => {
      await ctl('start');
      running = true;
    },
    freeze: async () => {
      frozen = await serverPids();
      signalAll(frozen, 'SIGSTOP');
    },
    thaw: async () => {
      signalAll(frozen, 'SIGCONT');
      frozen = [];
    },
    destroy: async () => {
      if (frozen.length > 0) signalAll(frozen, 'SIGCONT');
      if (running) await ctl('stop').catch(() => undefined);
      running = false;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
