import type { SqlConnection } from './sql.js';
import { asDiskFull } from './disk-full.js';

/** One host port held by an owner (a task or a group). */
export interface PortHold {
  readonly owner: string;
  /** What the owner is: `task` for the agent's tasks; another word (`group`) for others, whose holders sweep their own. */
  readonly ownerKind: string;
  /** Where the port sits in the owner's list (its `ports[i]`). */
  readonly position: number;
  readonly container: number;
  readonly protocol: 'tcp' | 'udp';
  readonly host: number;
  readonly hostIp: string;
  /** Whether the port was picked from the dynamic range (the spec named no host port). */
  readonly isDynamic: boolean;
  readonly allocatedAtMs: number;
}

interface PortRow {
  owner: string;
  owner_kind: string;
  position: number;
  container_port: number;
  protocol: string;
  host_port: number;
  host_ip: string;
  is_dynamic: number;
  allocated_at_ms: number;
}

const toHold = (row: PortRow): PortHold =>
  Object.freeze({
    owner: row.owner,
    ownerKind: row.owner_kind,
    position: row.position,
    container: row.container_port,
    protocol: row.protocol === 'udp' ? 'udp' : 'tcp',
    host: row.host_port,
    hostIp: row.host_ip,
    isDynamic: row.is_dynamic === 1,
    allocatedAtMs: row.allocated_at_ms,
  });

/**
 * The host ports the agent handed out, keyed by (protocol, host port): the table's primary key is
 * what makes a port impossible to hand out twice, across restarts too (the agent reads it, never a
 * memory of its own). Allocation (agent/ports.ts) reads and writes inside `atomically`, one
 * immediate transaction, so that two writers cannot both take a port they each saw free.
 */
export class PortRepository {
  readonly #db: SqlConnection;
  readonly #nowMs: () => number;

  constructor(db: SqlConnection, nowMs: () => number) {
    this.#db = db;
    this.#nowMs = nowMs;
  }

  /** Runs `work` in one immediate transaction (nested in an outer one, a savepoint): all of its writes or none. */
  atomically<T>(work: () => T): T {
    return asDiskFull(() => this.#db.transaction(work).immediate());
  }

  /** What `owner` holds, in its list's order. */
  held(owner: string): PortHold[] {
    return this.#db.prepare<[string], PortRow>('SELECT * FROM ports WHERE owner = ? ORDER BY position').all(owner).map(toHold);
  }

  /** Who holds `host`/`protocol`, if anyone. */
  holderOf(host: number, protocol: 'tcp' | 'udp'): PortHold | undefined {
    const row = this.#db.prepare<[string, number], PortRow>('SELECT * FROM ports WHERE protocol = ? AND host_port = ?').get(protocol, host);
    return row === undefined ? undefined : toHold(row);
  }

  /** The host ports of `protocol` held in [from, to]. */
  heldInRange(protocol: 'tcp' | 'udp', from: number, to: number): Set<number> {
    const rows = this.#db.prepare<[string, number, number], { host_port: number }>('SELECT host_port FROM ports WHERE protocol = ? AND host_port BETWEEN ? AND ?').all(protocol, from, to);
    return new Set(rows.map((row) => row.host_port));
  }

  /** Records holds; a port someone holds already fails the insert (the primary key), and with it the caller's transaction. */
  insert(holds: ReadonlyArray<Omit<PortHold, 'allocatedAtMs'>>): void {
    const statement = this.#db.prepare(
      'INSERT INTO ports (owner, owner_kind, position, container_port, protocol, host_port, host_ip, is_dynamic, allocated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    const atMs = this.#nowMs();
    this.atomically(() => {
      for (const h of holds) statement.run(h.owner, h.ownerKind, h.position, h.container, h.protocol, h.host, h.hostIp, h.isDynamic ? 1 : 0, atMs);
    });
  }

  /** Drops everything `owner` holds; returns how many ports. */
  release(owner: string): number {
    return asDiskFull(() => this.#db.prepare('DELETE FROM ports WHERE owner = ?').run(owner)).changes;
  }

  /** The owners of `ownerKind` that hold ports. */
  owners(ownerKind: string): string[] {
    return this.#db.prepare<[string], { owner: string }>('SELECT DISTINCT owner FROM ports WHERE owner_kind = ? ORDER BY owner').all(ownerKind).map((row) => row.owner);
  }

  /** Every hold, by protocol and port (metrics, tests). */
  all(): PortHold[] {
    return this.#db.prepare<[], PortRow>('SELECT * FROM ports ORDER BY protocol, host_port').all().map(toHold);
  }
}
