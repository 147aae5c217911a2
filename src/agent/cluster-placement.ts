import { ClusterStore, QueueWaker, type Budget, type CancelResult, type ClusterTask } from '../cluster/index.js';
import { asBerthError, BerthError, codeOf, isBerthError, messageOf, ValidationError } from '../common/errors.js';
import { canonicalJson } from '../common/canonical-json.js';
import type { Logger } from '../common/logger.js';
import { resolveAcceptedTaskSpec, type ResolvedTaskSpec } from '../spec/schema.js';
import type { Store } from '../state/store.js';
import type { OutboxEntry } from '../state/cluster-outbox.js';
import type { TaskRecord } from '../state/tasks.js';
import type { AdmissionSnapshot, ResourceDemand } from './admission.js';
import type { ClusterConfig } from './cluster-config.js';
import { nextBackoffMs, nodeCapacity, type ClusterMember } from './cluster-member.js';
import type { SubmitResult, TaskSupervisor } from './supervisor.js';
import { uploadsNamedBy } from './uploads.js';
import type { AgentEvents } from './events.js';

/**
 * Placement in the agent (docs/cluster.md "Placement in the agent"): in cluster mode a submit goes
 * to the cluster queue; the claimer takes queued tasks that fit this node's free budget while the
 * node holds a lease, records each in SQLite (with the epoch it was claimed under) and starts it
 * through admission as a local submit; the reporter sends the outbox (the claimed tasks' cluster
 * transitions, written with their local state change) in order, and fences a task the cluster no
 * longer gives this node: its container is killed and removed, its record ends `lost`.
 */

/** How many claim refusals (a claimed task this node could not take on) are kept for the submits waiting on them. */
const CLAIM_REFUSALS_KEPT = 256;

/** How many tasks one claim asks for; the claimer claims again while a claim comes back full. */
export const CLAIM_LIMIT = 16;

/** How many times a task is queued again when its node is lost: its restart policy's attempts when it restarts on `lost`, else 0. */
export function restartOnLostOf(restart: ResolvedTaskSpec['restart']): number {
  return restart.policy === 'on-failure' && restart.on.includes('lost') ? restart.attempts : 0;
}

/**
 * What this node can take on now: its capacity (`cluster.capacity`, else the admission budget)
 * less what admitted tasks draw and what waits in admission's queue, never below zero.
 */
export function freeBudget(snapshot: Pick<AdmissionSnapshot, 'budget' | 'used' | 'queued'>, capacity: Pick<ClusterConfig, 'capacity'>): Budget {
  const cap = nodeCapacity(capacity, snapshot.budget);
  const waiting = snapshot.queued.reduce((sum, entry) => ({ memoryBytes: sum.memoryBytes + entry.demand.memoryBytes, cpuMilli: sum.cpuMilli + entry.demand.cpuMilli }), { memoryBytes: 0, cpuMilli: 0 });
  return {
    memoryBytes: Math.max(0, Math.min(cap.memoryBytes, snapshot.budget.memoryBytes) - snapshot.used.memoryBytes - waiting.memoryBytes),
    cpuMilli: Math.max(0, Math.min(cap.cpuMilli, snapshot.budget.cpuMilli) - snapshot.used.cpuMilli - waiting.cpuMilli),
    tasks: Math.max(0, Math.min(cap.tasks, snapshot.budget.maxConcurrent ?? cap.tasks) - snapshot.used.tasks - snapshot.queued.length),
  };
}

/** What a cluster submit queues, from the spec as given and as the local check resolved it; refuses what cannot be queued. */
export function queuedSubmission(input: { id: string; spec: unknown }, resolved: ResolvedTaskSpec, reservation: ResourceDemand): {
  id: string;
  spec: unknown;
  priority: number;
  constraints: Readonly<Record<string, string>>;
  demand: ResourceDemand;
  restartOnLost: number;
} {
  if (resolved.registryAuth !== undefined && !('ref' in resolved.registryAuth)) {
    throw new ValidationError([{ field: 'registryAuth', rule: 'inline registry credentials cannot be queued in the cluster (they would be stored in its database); use registryAuth.ref' }]);
  }
  if (uploadsNamedBy(input.spec).length > 0) {
    throw new ValidationError([{ field: 'files', rule: 'uploads are kept by the node that received them and cannot be queued in the cluster; use inline files' }]);
  }
  return { id: input.id, spec: input.spec, priority: resolved.priority, constraints: resolved.constraints, demand: reservation, restartOnLost: restartOnLostOf(resolved.restart) };
}

/** Whether a cluster call failed for want of the database (retry later), not for what it asked. */
function isOutage(error: unknown): boolean {
  const code = codeOf(error);
  return code === 'BERTH_CLUSTER_UNAVAILABLE' || code === 'BERTH_TIMEOUT' || code === 'BERTH_CLUSTER_LEASE_LOST';
}

export interface ClusterPlacementOptions {
  readonly config: ClusterConfig;
  readonly member: ClusterMember;
  readonly supervisor: Pick<TaskSupervisor, 'prepare' | 'submitClaimed' | 'fence' | 'isOpen' | 'stop'>;
  readonly store: Pick<Store, 'tasks' | 'outbox'>;
  readonly admission: { snapshot(): Pick<AdmissionSnapshot, 'budget' | 'used' | 'queued'>; check(demand: ResourceDemand): void };
  readonly events: Pick<AgentEvents, 'subscribe'>;
  readonly logger: Logger;
  /** The outbox sender's back-off while PostgreSQL is away. Default 200 ms doubling to 5 s. */
  readonly backoff?: { readonly minMs: number; readonly maxMs: number };
}

export class ClusterPlacement {
  readonly #options: ClusterPlacementOptions;
  readonly #logger: Logger;
  readonly #closing = new AbortController();
  #store: ClusterStore | undefined;
  #opening: Promise<ClusterStore> | undefined;
  #waker: QueueWaker | undefined;
  #claiming: Promise<void> | undefined;
  #claimAgain = false;
  /** A claim failed in a way that may have committed: ask what the node holds before the next one. */
  #claimUncertain = false;
  #sending: Promise<void> | undefined;
  #sendAgain = false;
  #sendBackoffMs: number | undefined;
  #sendTimer: NodeJS.Timeout | undefined;
  #claimedTotal = 0;
  #fencedTotal = 0;
  #unsubscribe: (() => void) | undefined;
  #unregistered: (() => void) | undefined;
  readonly #placedListeners = new Set<(taskId: string | undefined) => void>();
  /** Why this node could not take tasks it claimed (the newest CLAIM_REFUSALS_KEPT): a submit waiting for its task's placement answers with it. */
  readonly #claimRefusals = new Map<string, { readonly error: BerthError; readonly epoch: number }>();

  constructor(options: ClusterPlacementOptions) {
    this.#options = options;
    this.#logger = options.logger;
  }

  /** Tasks this node claimed from the queue since it started. */
  get claimedTotal(): number {
    return this.#claimedTotal;
  }

  /** Tasks fenced since it started: the cluster no longer gave them to this node. */
  get fencedTotal(): number {
    return this.#fencedTotal;
  }

  /** Reports waiting in the outbox. */
  get reportsPending(): number {
    try {
      return this.#options.store.outbox.count();
    } catch {
      return 0;
    }
  }

  /** Starts the claimer (woken by NOTIFY, reconnections and polling) and the reporter. */
  start(): void {
    const config = this.#options.config;
    this.#waker = new QueueWaker({ connectionString: config.postgresUrl, pollIntervalMs: Math.min(1_000, config.heartbeatMs) });
    this.#waker.onWork(() => this.#wakeClaimer());
    this.#waker.onPlacement((taskId) => this.#announce(taskId));
    this.#unregistered = this.#options.member.onRegistered(async (lease) => this.#reconcile(lease.epoch));
    // A local change of a claimed task may have written to the outbox.
    this.#unsubscribe = this.#options.events.subscribe((event) => {
      if (event.type === 'task.state') this.#wakeSender();
    });
    this.#wakeSender();
  }

  /**
   * `POST /v1/tasks` in cluster mode: the spec is checked exactly as a local submit checks it
   * (nothing is queued on bad input), then queued in the cluster. The answer is the task `pending`
   * (queued); the same id with the same spec again is the same task (`created` false).
   */
  async submit(input: { id: string; spec: unknown }): Promise<SubmitResult> {
    const prepared = this.#options.supervisor.prepare(input.spec);
    const resolved = resolveAcceptedTaskSpec(prepared.spec);
    const submission = queuedSubmission(input, resolved, prepared.reservation);
    const store = await this.#openStore();
    await this.#mustFitSomeNode(store, prepared.reservation);
    const { task, created } = await store.enqueue(submission).catch(async (error: unknown) => {
      // The same id again: the same task when its spec, with this agent's defaults, is the same (key order and defaults spelled out aside).
      if (!isBerthError(error, 'BERTH_TASK_EXISTS')) throw error;
      const existing = await store.getTask(input.id);
      if (existing === undefined || !this.#sameSpec(existing.spec, prepared.spec)) throw error;
      return { task: existing, created: false };
    });
    const atMs = task.submittedAt.getTime();
    const record: TaskRecord = { id: task.id, seq: 0, spec: prepared.spec, state: 'pending', reservation: { ...prepared.reservation }, logCursor: {}, pausedForMs: 0, submittedAtMs: atMs, updatedAtMs: atMs };
    return { task: record, created };
  }

  /**
   * Placement news (placement-wait.ts): a task's id when a node (this one or another) has recorded
   * it after claiming it, or it was cancelled; `undefined` when the listening connection came up or
   * went away (news may have been missed). Returns the unsubscribe.
   */
  onPlaced(listener: (taskId: string | undefined) => void): () => void {
    this.#placedListeners.add(listener);
    return () => void this.#placedListeners.delete(listener);
  }

  /** Requests waiting for a task's placement now (each listens to the placement news while it waits). */
  get placementWaits(): number {
    return this.#placedListeners.size;
  }

  #announce(taskId: string | undefined): void {
    for (const listener of [...this.#placedListeners]) listener(taskId);
  }

  /** Why this node could not take the task it claimed (it was reported failed), when it could not and that was lately. */
  claimRefusal(taskId: string): BerthError | undefined {
    return this.#claimRefusals.get(taskId)?.error;
  }

  /**
   * The submit that waited here for a task this node's claim refused answers the refusal, as a single
   * agent's submit does, and leaves nothing behind as it does: its failed report is dropped and the
   * task withdrawn from the cluster (ClusterStore.withdraw). Resolves whether it was.
   */
  async withdrawRefused(taskId: string): Promise<boolean> {
    const refusal = this.#claimRefusals.get(taskId);
    if (refusal === undefined) return false;
    for (const entry of this.#options.store.outbox.list(1_000)) if (entry.taskId === taskId && entry.epoch === refusal.epoch) this.#options.store.outbox.delete(entry.seq);
    const store = await this.#openStore();
    const withdrawn = await store.withdraw(taskId, this.#options.member.nodeId, refusal.epoch, `its submit was refused: ${refusal.error.message}`);
    this.#claimRefusals.delete(taskId);
    return withdrawn;
  }

  /** Stop of a task still queued (through any node): ClusterStore.cancel. */
  async cancelQueued(taskId: string, reason: string): Promise<CancelResult> {
    const store = await this.#openStore();
    return store.cancel(taskId, reason);
  }

  /** Remove of a task cancelled while queued (the index is its only record): ClusterStore.removeUnplaced. */
  async removeUnplaced(taskId: string): Promise<boolean> {
    const store = await this.#openStore();
    return store.removeUnplaced(taskId);
  }

  /**
   * A task larger than this node's whole budget is refused at submit (as a single agent refuses it,
   * in its words) unless another ready node of the cluster has the capacity for it.
   */
  async #mustFitSomeNode(store: ClusterStore, demand: ResourceDemand): Promise<void> {
    try {
      this.#options.admission.check(demand);
    } catch (error) {
      const self = this.#options.member.nodeId;
      const others = (await store.listNodes()).filter((node) => node.nodeId !== self && node.state === 'ready');
      if (!others.some((node) => node.capacity.memoryBytes >= demand.memoryBytes && node.capacity.cpuMilli >= demand.cpuMilli)) throw error;
    }
  }

  #sameSpec(stored: unknown, prepared: unknown): boolean {
    try {
      return canonicalJson(this.#options.supervisor.prepare(stored).spec) === canonicalJson(prepared);
    } catch {
      return false;
    }
  }

  /**
   * Stops claiming, releases the claimed tasks this node has not started (back to the queue; they
   * end here as cancelled), sends what the outbox holds (within a few seconds), and closes. Running
   * tasks stay running and held: the node is back within its lease, or they are lost then.
   */
  async close(): Promise<void> {
    if (this.#closing.signal.aborted) return;
    this.#closing.abort();
    this.#unsubscribe?.();
    this.#unregistered?.();
    clearTimeout(this.#sendTimer);
    await this.#waker?.close().catch(() => undefined);
    await this.#claiming;
    await this.#sending;
    const epoch = this.#options.member.epoch;
    if (this.#store !== undefined && epoch !== undefined && this.#options.member.isMember) {
      for (const record of this.#options.store.tasks.listClusterUnended()) {
        if (record.state !== 'pending' || record.cluster?.epoch !== epoch) continue;
        try {
          await this.#store.release(record.id, this.#options.member.nodeId, epoch, `node ${this.#options.member.nodeId} shut down before starting it`);
          this.#options.store.tasks.detachFromCluster(record.id, 'released back to the cluster queue at shutdown');
          await this.#options.supervisor.stop(record.id);
        } catch (error) {
          this.#logger.warn({ taskId: record.id, code: codeOf(error), error: messageOf(error) }, 'could not release a claimed task at shutdown; it goes back to the queue when the node\'s lease runs out');
        }
      }
      await this.#sendOutbox({ deadlineMs: 3_000 }).catch(() => undefined);
    }
    await this.#store?.close().catch(() => undefined);
  }

  async #openStore(): Promise<ClusterStore> {
    if (this.#store !== undefined) return this.#store;
    this.#opening ??= ClusterStore.open({ connectionString: this.#options.config.postgresUrl, lease: this.#options.config.leaseMs }).finally(() => (this.#opening = undefined));
    this.#store = await this.#opening;
    return this.#store;
  }

  // ---- the claimer ----

  #wakeClaimer(): void {
    if (this.#closing.signal.aborted) return;
    if (this.#claiming !== undefined) {
      this.#claimAgain = true;
      return;
    }
    this.#claiming = (async () => {
      do {
        this.#claimAgain = false;
        await this.#claimRound().catch((error: unknown) => {
          if (!isOutage(error)) this.#logger.warn({ code: codeOf(error), error: messageOf(error) }, 'a claim round failed');
        });
      } while (this.#claimAgain && !this.#closing.signal.aborted);
    })().finally(() => (this.#claiming = undefined));
  }

  /** Claims while the node is a member and claims come back full; starts each claimed task. */
  async #claimRound(): Promise<void> {
    const member = this.#options.member;
    const supervisor = this.#options.supervisor;
    for (;;) {
      const epoch = member.epoch;
      if (this.#closing.signal.aborted || !member.isMember || epoch === undefined || !supervisor.isOpen) return;
      const store = await this.#openStore();
      if (this.#claimUncertain) {
        // The last claim may have committed with its answer lost: start what is held but unknown here.
        const held = await store.heldTasks(member.nodeId, epoch);
        this.#claimUncertain = false;
        for (const task of held) {
          if (task.state === 'claimed' && this.#options.store.tasks.get(task.id)?.cluster?.epoch !== epoch) await this.#startClaimed(task, epoch);
        }
        this.#announcePlaced(store, held.map((task) => task.id));
      }
      const free = freeBudget(this.#options.admission.snapshot(), this.#options.config);
      if (free.tasks === 0) return;
      let claimed: ClusterTask[];
      try {
        claimed = await store.claim({ nodeId: member.nodeId, epoch, free, limit: CLAIM_LIMIT, strategy: this.#options.config.strategy });
      } catch (error) {
        if (codeOf(error) === 'BERTH_CLUSTER_UNAVAILABLE' || codeOf(error) === 'BERTH_TIMEOUT') this.#claimUncertain = true;
        throw error;
      }
      this.#claimedTotal += claimed.length;
      for (const task of claimed) await this.#startClaimed(task, epoch);
      this.#announcePlaced(store, claimed.map((task) => task.id));
      if (claimed.length < CLAIM_LIMIT) return;
    }
  }

  /**
   * Tells the waiters that the claimed tasks are recorded here: this node's at once, every node's by
   * NOTIFY on the placement channel (not awaited: a waiter that misses it looks again by its poll).
   */
  #announcePlaced(store: ClusterStore, taskIds: readonly string[]): void {
    if (taskIds.length === 0) return;
    for (const taskId of taskIds) this.#announce(taskId);
    void store.announcePlaced(taskIds).catch((error: unknown) => this.#logger.debug({ code: codeOf(error), error: messageOf(error) }, 'could not announce the placed tasks'));
  }

  /** Records a claimed task in SQLite (with its epoch) and starts it; one the node cannot take is reported failed. */
  async #startClaimed(task: ClusterTask, epoch: number): Promise<void> {
    try {
      await this.#options.supervisor.submitClaimed({ id: task.id, spec: task.spec, epoch });
      this.#logger.debug({ taskId: task.id, epoch, attempt: task.attempt }, 'claimed a task from the cluster queue');
    } catch (error) {
      const berthError = asBerthError(error);
      this.#logger.warn({ taskId: task.id, code: berthError.code, error: berthError.message }, 'a claimed task could not be taken on here; it is reported failed');
      this.#claimRefusals.set(task.id, { error: berthError, epoch });
      if (this.#claimRefusals.size > CLAIM_REFUSALS_KEPT) this.#claimRefusals.delete(this.#claimRefusals.keys().next().value!);
      // No local record may exist: the report goes to the outbox alone.
      this.#options.store.outbox.append(task.id, epoch, { kind: 'exited', exitCode: 125, end: 'failed' });
      this.#wakeSender();
    }
  }

  // ---- the reporter ----

  #wakeSender(): void {
    if (this.#closing.signal.aborted) return;
    if (this.#sending !== undefined) {
      this.#sendAgain = true;
      return;
    }
    this.#sending = (async () => {
      do {
        this.#sendAgain = false;
        try {
          await this.#sendOutbox({});
          this.#sendBackoffMs = undefined;
        } catch (error) {
          if (!isOutage(error)) this.#logger.warn({ code: codeOf(error), error: messageOf(error) }, 'sending the cluster reports failed; trying again');
          const bounds = this.#options.backoff ?? { minMs: 200, maxMs: 5_000 };
          this.#sendBackoffMs = nextBackoffMs(this.#sendBackoffMs, bounds);
          clearTimeout(this.#sendTimer);
          this.#sendTimer = setTimeout(() => this.#wakeSender(), this.#sendBackoffMs);
          this.#sendTimer.unref();
          return;
        }
      } while (this.#sendAgain && !this.#closing.signal.aborted);
    })().finally(() => (this.#sending = undefined));
  }

  /**
   * Sends the outbox in order, deleting what the store took. Throws on an outage (the caller backs
   * off); a report the store refuses for good is dropped (logged), a fenced one fences its task.
   * Sends only while the node is a member (its registration reconciled), so a report never goes
   * out under an epoch that a re-registration is about to move.
   */
  async #sendOutbox(options: { deadlineMs?: number }): Promise<void> {
    const until = options.deadlineMs === undefined ? undefined : Date.now() + options.deadlineMs;
    const member = this.#options.member;
    for (;;) {
      const entries = this.#options.store.outbox.list(100);
      if (entries.length === 0) return;
      if (!member.isMember) {
        // Not a member now: the membership loop registers again and wakes the sender (reconcile).
        throw new BerthError('BERTH_CLUSTER_UNAVAILABLE', 'this node is not a cluster member now; reports wait');
      }
      const store = await this.#openStore();
      for (const entry of entries) {
        if (until !== undefined && Date.now() > until) return;
        await this.#sendOne(store, entry);
      }
    }
  }

  async #sendOne(store: ClusterStore, entry: OutboxEntry): Promise<void> {
    const nodeId = this.#options.member.nodeId;
    try {
      await store.report(entry.taskId, nodeId, entry.epoch, entry.transition);
      this.#options.store.outbox.delete(entry.seq);
    } catch (error) {
      if (isBerthError(error, 'BERTH_CLUSTER_FENCED')) {
        await this.#fence(entry.taskId, error.message);
        return;
      }
      if (isOutage(error)) throw error;
      // Refused for good (a state it cannot take, a task the cluster does not know): it is not sent again.
      this.#logger.warn({ taskId: entry.taskId, epoch: entry.epoch, report: entry.transition.kind, code: codeOf(error), error: messageOf(error) }, 'the cluster refused a report; it is dropped');
      this.#options.store.outbox.delete(entry.seq);
    }
  }

  /** The cluster no longer gives this node the task: kill and remove its container, end it lost, report it never again. */
  async #fence(taskId: string, why: string): Promise<void> {
    const reason = `fenced: ${why}`;
    const attached = await this.#options.supervisor.fence(taskId, reason);
    // A task with no local record (a claim it could not take) has only outbox entries.
    if (this.#options.store.tasks.get(taskId) === undefined) {
      for (const entry of this.#options.store.outbox.list(1_000)) if (entry.taskId === taskId) this.#options.store.outbox.delete(entry.seq);
    }
    if (attached) {
      this.#fencedTotal++;
      this.#logger.warn({ taskId, reason }, 'the cluster no longer gives this node the task: its container is stopped and removed, and it ends lost');
    }
  }

  /**
   * After every (re)registration: what the cluster says this node holds against what it has. Held
   * tasks it knows move to the new epoch (with their unsent reports); held ones it has no record of
   * are released (claimed) or reported lost (running); its unfinished claimed tasks the cluster no
   * longer gives it are fenced.
   */
  async #reconcile(epoch: number): Promise<void> {
    if (this.#closing.signal.aborted) return;
    // Recovery first: the local records are what the node knows (the membership tries again at its next beat).
    if (!this.#options.supervisor.isOpen) throw new BerthError('BERTH_AGENT_UNAVAILABLE', 'the agent is still recovering its tasks');
    const store = await this.#openStore();
    const nodeId = this.#options.member.nodeId;
    const held = await store.heldTasks(nodeId, epoch);
    const heldIds = new Set(held.map((task) => task.id));
    let kept = 0;
    for (const task of held) {
      const local = this.#options.store.tasks.get(task.id);
      if (local?.cluster !== undefined && local.cluster.detached === undefined) {
        if (local.cluster.epoch !== epoch) this.#options.store.tasks.setClusterEpoch(task.id, epoch);
        kept++;
        continue;
      }
      if (task.state === 'claimed') {
        await store.release(task.id, nodeId, epoch, `node ${nodeId} has no record of it`).catch((error: unknown) => {
          if (!isBerthError(error, 'BERTH_CLUSTER_FENCED') && !isBerthError(error, 'BERTH_TASK_STATE')) throw error;
        });
      } else {
        await store.report(task.id, nodeId, epoch, { kind: 'lost', reason: `node ${nodeId} has no record of it (its agent's state was lost)` }).catch((error: unknown) => {
          if (!isBerthError(error, 'BERTH_CLUSTER_FENCED') && !isBerthError(error, 'BERTH_TASK_STATE')) throw error;
        });
      }
    }
    for (const record of this.#options.store.tasks.listClusterUnended()) {
      if (heldIds.has(record.id)) continue;
      const now = await store.getTask(record.id);
      const where = now === undefined ? 'it is not in the cluster' : `it is ${now.state}${now.nodeId === undefined ? '' : ` on ${now.nodeId} (epoch ${now.epoch})`}${now.endReason === undefined ? '' : `: ${now.endReason}`}`;
      await this.#fence(record.id, `node ${nodeId} (epoch ${epoch}) no longer holds task ${record.id}: ${where}`);
    }
    this.#claimUncertain = false;
    if (kept > 0) this.#logger.info({ nodeId, epoch, kept }, 'kept the tasks of this node\'s previous registration');
    // Reports and claims wait for this: wake them once the member loop marks the node a member.
    setImmediate(() => {
      this.#wakeSender();
      this.#wakeClaimer();
    });
  }
}
