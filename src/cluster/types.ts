/**
 * The cluster store's own types: nodes, their capacity and load, queued tasks, claims, reports and
 * events. Plain data, JSON-safe; times are JavaScript Dates read from PostgreSQL's clock.
 */

/** What a node offers, or holds: memory, CPU and a count of tasks. */
export interface Budget {
  readonly memoryBytes: number;
  readonly cpuMilli: number;
  readonly tasks: number;
}

/** What one task needs of a node. */
export interface Demand {
  readonly memoryBytes: number;
  readonly cpuMilli: number;
}

/** How a node asks to join the cluster. */
export interface NodeRegistration {
  /** Stable across restarts of the node's agent: the lease epoch grows per node id. */
  readonly nodeId: string;
  /** The address of the node's API, for forwarding (e.g. `https://10.0.0.5:7443`). */
  readonly address: string;
  /** Matched by task constraints `node.<label>`, e.g. `{ disk: 'ssd' }`. Default none. */
  readonly labels?: Readonly<Record<string, string>>;
  readonly capacity: Budget;
}

/** A node's lease: the epoch is the fencing token every claim and report carries. */
export interface NodeLease {
  readonly nodeId: string;
  /** Strictly increasing per node id: 1 at the first registration, one more at each. */
  readonly epoch: number;
  readonly leaseExpiresAt: Date;
  /** From `register`: the claimed and running tasks a still-live previous epoch held that moved to this one. */
  readonly kept?: number;
}

/** `ready`: its lease is live. `down`: its lease ran out (or it was replaced by a newer registration). */
export type NodeState = 'ready' | 'down';

/** A node as `listNodes` shows it. */
export interface NodeView {
  readonly nodeId: string;
  readonly address: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly capacity: Budget;
  /** `down` also for a node whose lease ran out that no `expireLeases` has declared down yet. */
  readonly state: NodeState;
  readonly epoch: number;
  /** What the node's last heartbeat said it runs (its own view, including work outside the cluster). */
  readonly load: Budget;
  /** What the cluster has placed on it: the demand of its claimed and running tasks. */
  readonly held: Budget;
  readonly registeredAt: Date;
  readonly heartbeatAt: Date;
  readonly leaseExpiresAt: Date;
  /** Why it is down, when it is. */
  readonly downReason: string | undefined;
}

/** binpack (default) fills the busiest node that fits; spread the least busy. */
export type PlacementStrategy = 'binpack' | 'spread';

/** A task submitted to the cluster's queue. */
export interface TaskSubmission {
  /** The task id, unique in the cluster. Submitting it again with the same content is a no-op. */
  readonly id: string;
  /** The task spec, stored as JSON and handed to the claiming node as it was given. */
  readonly spec: unknown;
  /** Higher first; FIFO within one priority. Default 0. */
  readonly priority?: number;
  /** `{ "node.<label>": value }`: only nodes with every such label claim the task. Default none. */
  readonly constraints?: Readonly<Record<string, string>>;
  /** Default nothing (the task fits any node with a free task slot). */
  readonly demand?: Partial<Demand>;
  /**
   * How many times the task is queued again when the node running it is lost (the task's restart
   * policy allows restarts on `lost`); default 0: it ends `lost`.
   */
  readonly restartOnLost?: number;
}

/** The cluster states of a task (docs/cluster.md). A task cancelled while queued is `exited` with end reason `cancelled` and no node. */
export type ClusterTaskState = 'queued' | 'claimed' | 'running' | 'exited' | 'lost';

/** A task in the cluster-wide index. */
export interface ClusterTask {
  readonly id: string;
  readonly spec: unknown;
  readonly priority: number;
  readonly constraints: Readonly<Record<string, string>>;
  readonly demand: Demand;
  readonly restartOnLost: number;
  /** Times the task was queued again after its node was lost. */
  readonly lostCount: number;
  readonly state: ClusterTaskState;
  /** The node holding it (claimed, running) or that held it last (exited, lost). */
  readonly nodeId: string | undefined;
  /** The lease epoch of that node's claim: the fencing token. */
  readonly epoch: number | undefined;
  /** Claims so far (1 on its first). */
  readonly attempt: number;
  readonly containerId: string | undefined;
  readonly exitCode: number | undefined;
  /** For exited: the end's kind as the node classified it (success, failed, oom, …); for lost: why. */
  readonly endReason: string | undefined;
  readonly submittedAt: Date;
  readonly queuedAt: Date;
  readonly claimedAt: Date | undefined;
  readonly startedAt: Date | undefined;
  readonly endedAt: Date | undefined;
}

/** What a node asks of the queue. */
export interface ClaimRequest {
  readonly nodeId: string;
  readonly epoch: number;
  /** What the node can take on now; tasks are claimed while their demand fits it (one task slot each). */
  readonly free: Budget;
  /** At most this many tasks. Default 16. */
  readonly limit?: number;
  /** Default binpack. */
  readonly strategy?: PlacementStrategy;
}

/** A node's report of a task it holds. */
export type TaskTransition =
  | { readonly kind: 'running'; readonly containerId?: string }
  | { readonly kind: 'exited'; readonly exitCode: number | null; readonly end?: string }
  | { readonly kind: 'lost'; readonly reason: string };

export type ClusterEventKind =
  | 'node.registered'
  | 'node.down'
  | 'task.queued'
  | 'task.claimed'
  | 'task.running'
  | 'task.exited'
  | 'task.lost'
  | 'task.requeued'
  | 'task.released'
  /** A queued task was cancelled (stopped before any node claimed it); `data.reason` says by whom. */
  | 'task.cancelled'
  /** A task cancelled while queued was removed from the index. */
  | 'task.removed';

/** One entry of the append-only cluster event log. */
export interface ClusterEvent {
  /** Increasing in the order events were written (not always the order they committed). */
  readonly seq: number;
  readonly at: Date;
  readonly kind: ClusterEventKind;
  readonly taskId: string | undefined;
  readonly nodeId: string | undefined;
  readonly epoch: number | undefined;
  readonly data: Readonly<Record<string, unknown>>;
}

/** A page of events and the cursor to read the next page from. */
export interface ClusterEventPage {
  readonly events: readonly ClusterEvent[];
  /** Opaque; pass it back as `after`. Unchanged when the page is empty. */
  readonly cursor: string;
}
