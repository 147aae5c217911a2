import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { BerthError, ValidationError } from '../common/errors.js';
import type { PortSpec } from '../spec/schema.js';
import type { PortHold, PortRepository } from '../state/ports.js';
import { isLoopbackHost } from './config.js';

/** The ports repository's part the allocator uses. */
export type PortStore = Pick<PortRepository, 'atomically' | 'held' | 'holderOf' | 'heldInRange' | 'insert' | 'release' | 'owners'>;

/** Whether something on the host listens on `port`/`protocol` where `hostIp` would bind it. */
export type HostPortProbe = (port: number, protocol: 'tcp' | 'udp', hostIp: string) => boolean;

/** The owner kind the agent's tasks hold ports under; a group's holder uses its own (the default, `group`). */
export const TASK_PORT_OWNER = 'task';

export interface PortAllocatorOptions {
  /** The dynamic range, inclusive (`ports.range`, default 20000-29999). */
  range: { from: number; to: number };
  /** Where a port without `hostIp` is bound (`ports.hostIp`, default 127.0.0.1). */
  hostIp: string;
  /**
   * Whether something else on the host listens on a port. Default: the kernel's socket tables
   * (`/proc/net/{tcp,tcp6,udp,udp6}`, see hostListeners); tests pass their own.
   */
  isHostPortInUse?: HostPortProbe;
  /** Picks an index below `count` (dynamic ports). Default Math.random. */
  random?: (count: number) => number;
}

/**
 * Hands out host ports, durably: the store's `ports` table is the truth (its key, protocol and host
 * port, refuses a second holder), so no port is handed out twice, across an agent SIGKILL and
 * restart too. Owners are task ids (the supervisor, kind `task`) or group ids.
 *
 * Dynamic ports are picked at random among the free ones of the range rather than lowest-first:
 * other tools on the host (a `docker run -p`, a dev server) that pick ports of their own collide
 * with berth's less often, and a port freed a moment ago is not handed out again at once (a client
 * of the ended task that still connects to it reaches nothing rather than the next task).
 */
export class PortAllocator {
  readonly #store: PortStore;
  readonly #range: { from: number; to: number };
  readonly #hostIp: string;
  readonly #isHostPortInUse: HostPortProbe | undefined;
  readonly #random: (count: number) => number;

  constructor(store: PortStore, options: PortAllocatorOptions) {
    if (!Number.isInteger(options.range.from) || !Number.isInteger(options.range.to) || options.range.from < 1 || options.range.to > 65_535 || options.range.from > options.range.to) {
      throw new ValidationError([{ field: 'ports.range', rule: `must be FROM-TO with 1 <= FROM <= TO <= 65535 (got ${options.range.from}-${options.range.to})` }]);
    }
    if (isIP(options.hostIp) === 0) throw new ValidationError([{ field: 'ports.hostIp', rule: 'must be an IPv4 or IPv6 address' }]);
    this.#store = store;
    this.#range = { ...options.range };
    this.#hostIp = options.hostIp;
    this.#isHostPortInUse = options.isHostPortInUse;
    this.#random = options.random ?? ((count) => Math.floor(Math.random() * count));
  }

  /** The configured dynamic range and address. */
  get settings(): { range: { from: number; to: number }; hostIp: string } {
    return { range: { ...this.#range }, hostIp: this.#hostIp };
  }

  /**
   * Allocates for `owner` (a task id or a group id): static ports are checked free, dynamic ones are
   * picked from the range; returns the ports with host and hostIp filled in. All or none, in one
   * transaction. Idempotent: an owner that holds ports gets them back (whatever it asks now).
   * Throws BERTH_PORT_UNAVAILABLE (naming `${fieldPrefix}[i].host` and the port) when a static
   * port is held by another owner or something else on the host listens on it, or the range is
   * exhausted; BERTH_VALIDATION when a port's own `hostIp` is neither a loopback address nor the
   * configured one (only the operator may publish beyond the host). `options.ownerKind` (default
   * `group`) is what recovery sweeps by: the agent's supervisor passes `task`.
   */
  allocate(owner: string, ports: readonly PortSpec[], fieldPrefix: string, options: { ownerKind?: string } = {}): PortSpec[] {
    const ownerKind = options.ownerKind ?? 'group';
    const addressIssues = ports.flatMap((port, i) =>
      port.hostIp === undefined || port.hostIp === this.#hostIp || isLoopbackHost(port.hostIp)
        ? []
        : [{ field: `${fieldPrefix}[${i}].hostIp`, rule: `${port.hostIp} is not a loopback address nor the agent's publish address (ports.hostIp ${this.#hostIp}): only the agent's configuration may publish beyond the host` }],
    );
    if (addressIssues.length > 0) throw new ValidationError(addressIssues);
    return this.#store.atomically(() => {
      const held = this.#store.held(owner);
      if (held.length > 0) return held.map(toPortSpec);
      if (ports.length === 0) return [];
      // The kernel's tables are read once per allocation.
      let listeners: HostListener[] | undefined;
      const isInUse: HostPortProbe = this.#isHostPortInUse ?? ((port, protocol, hostIp) => hostPortInUse(port, protocol, hostIp, (listeners ??= hostListeners())));
      const holds: Array<Omit<PortHold, 'allocatedAtMs'>> = [];
      const chosen = new Set<string>();
      // Static ones first: a dynamic pick must not take a port a static one of the same owner names.
      ports.forEach((port, i) => {
        if (port.host === undefined) return;
        const hostIp = port.hostIp ?? this.#hostIp;
        const field = `${fieldPrefix}[${i}].host`;
        const holder = this.#store.holderOf(port.host, port.protocol);
        if (holder !== undefined) {
          throw unavailable(field, port.host, port.protocol, `host port ${port.host}/${port.protocol} is held by ${holder.ownerKind} ${holder.owner}`);
        }
        // A bind check as users expect one: a port another program (another docker run -p, a dev
        // server) listens on would fail the engine's bind at start, after the task was accepted.
        if (isInUse(port.host, port.protocol, hostIp)) {
          throw unavailable(field, port.host, port.protocol, `something else on the host listens on ${port.protocol} port ${port.host}`);
        }
        chosen.add(`${port.protocol}/${port.host}`);
        holds.push({ owner, ownerKind, position: i, container: port.container, protocol: port.protocol, host: port.host, hostIp, isDynamic: false });
      });
      ports.forEach((port, i) => {
        if (port.host !== undefined) return;
        const hostIp = port.hostIp ?? this.#hostIp;
        const host = this.#pickDynamic(port.protocol, hostIp, chosen, isInUse);
        if (host === undefined) {
          throw unavailable(`${fieldPrefix}[${i}].host`, undefined, port.protocol, `no ${port.protocol} port is free in the dynamic range ${this.#range.from}-${this.#range.to} (ports.range)`);
        }
        chosen.add(`${port.protocol}/${host}`);
        holds.push({ owner, ownerKind, position: i, container: port.container, protocol: port.protocol, host, hostIp, isDynamic: true });
      });
      this.#store.insert(holds);
      return holds.sort((a, b) => a.position - b.position).map(toPortSpec);
    });
  }

  /** Frees what `owner` holds; returns how many. */
  release(owner: string): number {
    return this.#store.release(owner);
  }

  held(owner: string): PortSpec[] {
    return this.#store.held(owner).map(toPortSpec);
  }

  /**
   * Frees the ports of owners of `ownerKind` that `isNeeded` says no longer need them (recovery:
   * tasks that ended, or whose record is gone, while the agent was down). Returns the owners freed.
   */
  sweep(ownerKind: string, isNeeded: (owner: string) => boolean): string[] {
    const freed = this.#store.owners(ownerKind).filter((owner) => !isNeeded(owner));
    for (const owner of freed) this.#store.release(owner);
    return freed;
  }

  /** A random free port of the range: not held, not chosen by this allocation, nothing listening on it. */
  #pickDynamic(protocol: 'tcp' | 'udp', hostIp: string, chosen: ReadonlySet<string>, isInUse: HostPortProbe): number | undefined {
    const held = this.#store.heldInRange(protocol, this.#range.from, this.#range.to);
    const free: number[] = [];
    for (let port = this.#range.from; port <= this.#range.to; port++) {
      if (!held.has(port) && !chosen.has(`${protocol}/${port}`)) free.push(port);
    }
    while (free.length > 0) {
      const index = this.#random(free.length);
      const port = free[index]!;
      if (!isInUse(port, protocol, hostIp)) return port;
      // Someone else's listener: out of the candidates (swap-remove), and pick again.
      free[index] = free[free.length - 1]!;
      free.pop();
    }
    return undefined;
  }
}

function toPortSpec(hold: Omit<PortHold, 'allocatedAtMs'>): PortSpec {
  return { container: hold.container, protocol: hold.protocol, host: hold.host, hostIp: hold.hostIp };
}

function unavailable(field: string, port: number | undefined, protocol: 'tcp' | 'udp', reason: string): BerthError {
  return new BerthError('BERTH_PORT_UNAVAILABLE', `${field}: ${reason}`, { context: { field, ...(port === undefined ? {} : { port }), protocol } });
}

/** A socket the kernel lists as listening (TCP) or bound (UDP). */
export interface HostListener {
  protocol: 'tcp' | 'udp';
  /** The local address: dotted IPv4, or IPv6 as eight hex groups (`0:0:0:0:0:0:0:1`). */
  address: string;
  port: number;
}

const TCP_LISTEN = '0A';

/**
 * The sockets listening on the host, from the kernel's tables (`/proc/net/tcp`, `tcp6`, `udp`,
 * `udp6`) of the agent's network namespace. Read rather than bound because allocation is one
 * synchronous transaction, and a bind in Node is asynchronous; the tables show the same thing a
 * bind would refuse on (docker-proxy's listeners for other containers' published ports included).
 * Empty where there are no such files (not Linux).
 */
export function hostListeners(read: (file: string) => string = (file) => readFileSync(file, 'utf8')): HostListener[] {
  const listeners: HostListener[] = [];
  for (const [file, protocol] of [['/proc/net/tcp', 'tcp'], ['/proc/net/tcp6', 'tcp'], ['/proc/net/udp', 'udp'], ['/proc/net/udp6', 'udp']] as const) {
    let text: string;
    try {
      text = read(file);
    } catch {
      continue;
    }
    listeners.push(...parseProcNet(text, protocol));
  }
  return listeners;
}

/** The listening (TCP) or bound (UDP) sockets of one /proc/net table. */
export function parseProcNet(text: string, protocol: 'tcp' | 'udp'): HostListener[] {
  const listeners: HostListener[] = [];
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 4) continue;
    const [local, remote, state] = [fields[1]!, fields[2]!, fields[3]!];
    // UDP has no listen state: a bound socket with no peer (remote port 0) holds the port.
    if (protocol === 'tcp' ? state !== TCP_LISTEN : !remote.endsWith(':0000')) continue;
    const [hexAddress, hexPort] = local.split(':');
    if (hexAddress === undefined || hexPort === undefined) continue;
    listeners.push({ protocol, address: decodeProcAddress(hexAddress), port: Number.parseInt(hexPort, 16) });
  }
  return listeners;
}

/** /proc/net's address: 32-bit words in host (little-endian) order; IPv4 as one word, IPv6 as four. */
function decodeProcAddress(hex: string): string {
  const words = hex.match(/.{8}/g) ?? [];
  const bytes = words.flatMap((word) => (word.match(/../g) ?? []).reverse().map((b) => Number.parseInt(b, 16)));
  if (bytes.length === 4) return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return groups.join(':');
}

const WILDCARDS = new Set(['0.0.0.0', '0:0:0:0:0:0:0:0', '::']);

/** The default probe: whether a listener in the kernel's tables would refuse a bind of `hostIp`:`port`. */
export function hostPortInUse(port: number, protocol: 'tcp' | 'udp', hostIp: string, listeners: readonly HostListener[] = hostListeners()): boolean {
  return listeners.some((l) => {
    if (l.protocol !== protocol || l.port !== port) return false;
    // A wildcard on either side overlaps everything; so does a listener on an address we cannot
    // compare cheaply (IPv6 other than the wildcard): better a port skipped than a start refused.
    if (WILDCARDS.has(l.address) || WILDCARDS.has(hostIp)) return true;
    if (l.address.includes(':')) return isIP(hostIp) === 6 || l.address.startsWith('0:0:0:0:0:ffff:');
    return l.address === hostIp;
  });
}
