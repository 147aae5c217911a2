import { setTimeout as delay } from 'node:timers/promises';
import { ClusterStore, type Budget, type ClusterEventPage, type ClusterStoreOptions, type ClusterTask, type ListTasksFilter, type NodeLease, type NodeView } from '../cluster/index.js';
import { BerthError, codeOf, isBerthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { AdmissionSnapshot } from './admission.js';
import { DEFAULT_NODE_TASKS, maskPostgresUrl, type ClusterConfig } from './cluster-config.js';

/**
 * The agent as a member of a cluster (docs/cluster.md "Nodes and leases"): it opens the cluster
 * store, registers its node, renews its lease with its load every `cluster.heartbeat`, and sweeps
 * expired leases (every node does; each expired node is handled by one of them). PostgreSQL being
 * away never stops the agent: the loop retries with a back-off, logging once when the database goes
 * away and once when it is back. A heartbeat refused with BERTH_CLUSTER_LEASE_LOST (the agent was
 * paused or cut off past its lease) registers again, for a new epoch. `leave` (a graceful shutdown)
 * marks the node down with reason `left`.
 */

/** The cluster store calls membership makes (a `ClusterStore` is one). */
export type MembershipStore = Pick<ClusterStore, 'register' | 'heartbeat' | 'expireLeases' | 'listNodes' | 'leave' | 'close'> & Partial<Pick<ClusterStore, 'getTask' | 'listTasks' | 'readEvents'>>;

/** The membership's state: `joining` until the first registration, `member` while its lease is renewed, `away` while PostgreSQL does not answer, `left` after `leave`. */
export type MembershipState = 'joining' | 'member' | 'away' | 'left';

export interface ClusterMemberOptions {
  readonly config: ClusterConfig;
  /** The node id when `cluster.nodeId` is not set: the agent's id. */
  readonly agentId: string;
  /** What the node offers when `cluster.capacity` does not say, and what it runs now (its heartbeat's load). */
  readonly admission: { snapshot(): Pick<AdmissionSnapshot, 'budget' | 'used'> };
  readonly logger: Logger;
  /** Opens the store; default `ClusterStore.open`. */
  readonly openStore?: (options: ClusterStoreOptions) => Promise<MembershipStore>;
  /** The back-off after a failure: from `minMs` doubling to `maxMs`. Default 200 ms to 5 s (at most the heartbeat period's double). */
  readonly backoff?: { readonly minMs: number; readonly maxMs: number };
}

/** The next back-off delay: doubled, within its bounds. */
export function nextBackoffMs(previousMs: number | undefined, bounds: { minMs: number; maxMs: number }): number {
  return previousMs === undefined ? bounds.minMs : Math.min(bounds.maxMs, previousMs * 2);
}

/** What the node offers the cluster: `cluster.capacity`, else the admission budget (tasks: its cap, else 1000). */
export function nodeCapacity(config: Pick<ClusterConfig, 'capacity'>, budget: AdmissionSnapshot['budget']): Budget {
  return {
    memoryBytes: config.capacity.memoryBytes ?? budget.memoryBytes,
    cpuMilli: config.capacity.cpuMilli ?? budget.cpuMilli,
    tasks: config.capacity.tasks ?? budget.maxConcurrent ?? DEFAULT_NODE_TASKS,
  };
}

export class ClusterMember {
  readonly nodeId: string;
  readonly #config: ClusterConfig;
  readonly #options: ClusterMemberOptions;
  readonly #logger: Logger;
  readonly #backoff: { minMs: number; maxMs: number };
  readonly #stopping = new AbortController();
  readonly #failureListeners = new Set<() => void>();
  readonly #registeredListeners = new Set<(lease: NodeLease) => Promise<void>>();
  /** A registration whose listeners have not all run yet (they run again at the next beat until they do). */
  #unreconciled = false;
  /** When the node last became a member (after joining, or after the database or its lease was away): it sweeps only a lease later. */
  #memberSinceMs: number | undefined;
  #address: string | undefined;
  #store: MembershipStore | undefined;
  #lease: NodeLease | undefined;
  #state: MembershipState = 'joining';
  #loop: Promise<void> | undefined;
  #databaseAway = false;

  constructor(options: ClusterMemberOptions) {
    this.#options = options;
    this.#config = options.config;
    this.#logger = options.logger;
    this.nodeId = options.config.nodeId ?? options.agentId;
    this.#backoff = options.backoff ?? { minMs: 200, maxMs: Math.max(400, Math.min(5_000, options.config.heartbeatMs * 2)) };
  }

  /** The database URL as the agent shows it (its password redacted). */
  get database(): string {
    return maskPostgresUrl(this.#config.postgresUrl);
  }

  get state(): MembershipState {
    return this.#state;
  }

  /** Whether the node holds a live lease as far as it knows (its last heartbeat was answered). */
  get isMember(): boolean {
    return this.#state === 'member';
  }

  /** The epoch of the node's current lease, when it has one. */
  get epoch(): number | undefined {
    return this.#lease?.epoch;
  }

  /** The node's address (`cluster.address`, or the one `start` was given). */
  get address(): string | undefined {
    return this.#address;
  }

  /** Calls the listener on every failed registration or heartbeat (a metric); returns the unsubscribe. */
  onHeartbeatFailure(listener: () => void): () => void {
    this.#failureListeners.add(listener);
    return () => this.#failureListeners.delete(listener);
  }

  /**
   * Calls the listener after every (re)registration, before the node counts as a member (the agent
   * reconciles its tasks with what the cluster says it holds); a listener that throws makes the
   * next beat call it again. Returns the unsubscribe.
   */
  onRegistered(listener: (lease: NodeLease) => Promise<void>): () => void {
    this.#registeredListeners.add(listener);
    return () => this.#registeredListeners.delete(listener);
  }

  /** Starts the membership loop with the node's address (`cluster.address` wins over `listenAddress`). Idempotent. */
  start(listenAddress: string | undefined): void {
    if (this.#loop !== undefined || this.#stopping.signal.aborted) return;
    this.#address = this.#config.address ?? listenAddress;
    if (this.#address === undefined) throw new BerthError('BERTH_INTERNAL', 'a cluster node needs an address (the configuration check lets none through)');
    this.#loop = this.#run();
  }

  /** Every node of the cluster, as the store shows them. BERTH_CLUSTER_UNAVAILABLE while PostgreSQL does not answer. */
  async listNodes(): Promise<NodeView[]> {
    return (await this.#openStore()).listNodes();
  }

  /** The cluster index's entry of a task (reads through any node). BERTH_CLUSTER_UNAVAILABLE while PostgreSQL does not answer. */
  async getTask(taskId: string): Promise<ClusterTask | undefined> {
    const store = await this.#openStore();
    return store.getTask === undefined ? undefined : store.getTask(taskId);
  }

  /** The cluster-wide task index (`GET /v1/tasks` in cluster mode). */
  async listTasks(filter: ListTasksFilter = {}): Promise<ClusterTask[]> {
    const store = await this.#openStore();
    return store.listTasks === undefined ? [] : store.listTasks(filter);
  }

  /** A page of the cluster's event log (`GET /v1/events?scope=cluster`). */
  async readEvents(options: { after?: string; limit?: number } = {}): Promise<ClusterEventPage> {
    const store = await this.#openStore();
    return store.readEvents === undefined ? { events: [], cursor: options.after ?? '' } : store.readEvents(options);
  }

  /**
   * Leaves the cluster (a graceful shutdown): stops the loop, marks the node down with reason `left`
   * (what it held is released), and closes the store. A database that does not answer is logged and
   * the node's lease then simply runs out. Idempotent.
   */
  async leave(): Promise<void> {
    if (this.#stopping.signal.aborted) return;
    this.#stopping.abort();
    await this.#loop;
    const lease = this.#lease;
    this.#state = 'left';
    if (lease !== undefined && this.#store !== undefined) {
      try {
        await this.#store.leave(this.nodeId, lease.epoch);
        this.#logger.info({ nodeId: this.nodeId, epoch: lease.epoch }, 'left the cluster');
      } catch (error) {
        this.#logger.warn({ nodeId: this.nodeId, epoch: lease.epoch, code: codeOf(error), error: messageOf(error) }, 'could not leave the cluster; the node\'s lease runs out instead');
      }
    }
    this.#lease = undefined;
    await this.#store?.close().catch(() => undefined);
  }

  async #openStore(): Promise<MembershipStore> {
    if (this.#store !== undefined) return this.#store;
    const open = this.#options.openStore ?? ((options: ClusterStoreOptions) => ClusterStore.open(options));
    this.#store = await open({ connectionString: this.#config.postgresUrl, lease: this.#config.leaseMs });
    return this.#store;
  }

  #load(): Budget {
    const used = this.#options.admission.snapshot().used;
    return { memoryBytes: used.memoryBytes, cpuMilli: used.cpuMilli, tasks: used.tasks };
  }

  async #run(): Promise<void> {
    const signal = this.#stopping.signal;
    let backoffMs: number | undefined;
    while (!signal.aborted) {
      let waitMs = this.#config.heartbeatMs;
      try {
        await this.#beat();
        backoffMs = undefined;
      } catch (error) {
        if (signal.aborted) break;
        for (const listener of this.#failureListeners) listener();
        if (isBerthError(error, 'BERTH_CLUSTER_LEASE_LOST')) {
          // Paused or cut off past the lease: what it held was released; it registers again at once.
          this.#logger.warn({ nodeId: this.nodeId, epoch: this.#lease?.epoch, code: error.code, error: error.message }, 'this node lost its cluster lease (paused or cut off past it); registering again');
          this.#lease = undefined;
          this.#state = 'joining';
          continue;
        }
        backoffMs = nextBackoffMs(backoffMs, this.#backoff);
        waitMs = backoffMs;
        this.#away(error);
      }
      await delay(waitMs, undefined, { signal }).catch(() => undefined);
    }
  }

  /** One round: register (or renew the lease), then sweep expired leases. */
  async #beat(): Promise<void> {
    const store = await this.#openStore();
    if (this.#lease === undefined) {
      this.#lease = await store.register({ nodeId: this.nodeId, address: this.#address!, labels: this.#config.labels, capacity: nodeCapacity(this.#config, this.#options.admission.snapshot().budget) });
      this.#unreconciled = true;
      this.#back();
      this.#logger.info(
        { nodeId: this.nodeId, epoch: this.#lease.epoch, address: this.#address, labels: this.#config.labels, database: this.database },
        this.#lease.epoch > 1 ? `registered in the cluster again with a new epoch (${this.#lease.epoch})` : 'joined the cluster',
      );
    } else {
      this.#lease = await store.heartbeat(this.nodeId, this.#lease.epoch, this.#load());
      this.#back();
    }
    if (this.#unreconciled) {
      const lease = this.#lease;
      try {
        for (const listener of this.#registeredListeners) await listener(lease);
      } catch (error) {
        // The database away: as any failed beat. Anything else (the agent still recovering its
        // tasks): the lease is renewed, and the next beat tries again before the node is a member.
        if (isBerthError(error, 'BERTH_CLUSTER_UNAVAILABLE') || isBerthError(error, 'BERTH_CLUSTER_LEASE_LOST')) throw error;
        this.#logger.debug({ nodeId: this.nodeId, code: codeOf(error), error: messageOf(error) }, 'not reconciled with the cluster yet; trying again at the next heartbeat');
        this.#state = 'joining';
        return;
      }
      this.#unreconciled = false;
    }
    if (this.#state !== 'member' || this.#memberSinceMs === undefined) this.#memberSinceMs = Date.now();
    this.#state = 'member';
    // A node back from an outage sweeps only once it has been a member for a whole lease: when the
    // database was away for every node, no lease could be renewed, and the others need that long to
    // renew theirs before anyone declares them down.
    if (Date.now() - this.#memberSinceMs < this.#config.leaseMs) return;
    const expired = await store.expireLeases();
    if (expired.nodes.length > 0) {
      this.#logger.info({ nodes: expired.nodes, lost: expired.lost.length, requeued: expired.requeued.length }, `declared down the nodes whose lease ran out: ${expired.nodes.join(', ')}`);
    }
  }

  /** Logs once that the database went away (or refused the node otherwise). */
  #away(error: unknown): void {
    if (this.#state === 'member' || this.#state === 'joining') this.#state = 'away';
    if (this.#databaseAway) return;
    this.#databaseAway = true;
    const message = isBerthError(error, 'BERTH_CLUSTER_UNAVAILABLE')
      ? 'the cluster database does not answer: this node is out of the cluster until it does (the agent keeps serving); retrying'
      : 'the cluster refused this node: it is out of the cluster (the agent keeps serving); retrying';
    this.#logger.warn({ nodeId: this.nodeId, database: this.database, code: codeOf(error), error: messageOf(error) }, message);
  }

  #back(): void {
    if (!this.#databaseAway) return;
    this.#databaseAway = false;
    this.#logger.info({ nodeId: this.nodeId, database: this.database }, 'the cluster database answers again');
  }
}

/** `GET /v1/nodes`: the nodes, and which one answered. */
export interface NodeListing {
  /** `cluster` with `cluster.postgres`; `single` lists the agent alone. */
  readonly mode: 'single' | 'cluster';
  /** The answering node's id. */
  readonly self: string;
  readonly nodes: readonly NodeView[];
}

/** A single agent (no cluster) as a node: ready, epoch 0, its admission budget and what it runs. */
export function singleNode(agentId: string, address: string, admission: Pick<AdmissionSnapshot, 'budget' | 'used'>, startedAt: Date, now: Date): NodeView {
  return {
    nodeId: agentId,
    address,
    labels: {},
    capacity: nodeCapacity({ capacity: {} }, admission.budget),
    state: 'ready',
    epoch: 0,
    load: { memoryBytes: admission.used.memoryBytes, cpuMilli: admission.used.cpuMilli, tasks: admission.used.tasks },
    held: { memoryBytes: 0, cpuMilli: 0, tasks: 0 },
    registeredAt: startedAt,
    heartbeatAt: now,
    leaseExpiresAt: now,
    downReason: undefined,
  };
}
