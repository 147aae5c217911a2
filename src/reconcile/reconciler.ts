import { systemClock, type Clock } from '../common/clock.js';
import { asBerthError, BerthError, cancelledError, ValidationError } from '../common/errors.js';
import { LABELS, ROLES } from '../common/labels.js';
import { RECONCILE_CHANNEL } from '../common/diagnostics.js';
import { Events, type EventListener, type EventSource, type Unsubscribe } from '../common/events.js';
import { silentLogger, type Logger } from '../common/logger.js';
import { ownerJudge } from '../common/owner-process.js';
import type { Engine } from '../engine/engine.js';
import { decideDangling, isTracked, type DanglingContainer, type TrackedSnapshot } from './decide.js';
import type {
  DanglingContainerRemovedEvent,
  GroupResourceRemovedEvent,
  GroupResourceSweepResult,
  OrphanedContainerRemovedEvent,
  ReconcilerEvents,
  RemovalTally,
  ScheduledSweepOutcome,
  SweepResult,
} from './events.js';
import {
  decideGroupResources,
  GROUP_CONTAINER_LABELS,
  groupRoleLabels,
  needsOccupancy,
  networkAsGroupResource,
  occupiedGroups,
  volumeAsGroupResource,
  type GroupResource,
  type OrphanedGroupResource,
} from './groups.js';
import { decideOrphans, ORPHAN_CANDIDATE_LABELS, type OrphanedContainer, type OwnerJudge } from './orphans.js';
import { resolveDanglingReconcilerOptions, type DanglingReconcilerOptions, type ResolvedDanglingReconcilerOptions } from './options.js';

/** The engine calls the reconciler makes: a narrow port, so tests can script it. */
export type ReconcileEngine = Pick<Engine, 'listContainers' | 'removeContainer' | 'listNetworks' | 'removeNetwork' | 'listVolumes' | 'removeVolume' | 'ping'>;

/** How long the default health check waits for the engine's ping. */
const DEFAULT_HEALTH_CHECK_DEADLINE_MS = 5_000;

export interface DanglingReconcilerInit {
  engine: ReconcileEngine;
  /** Only containers labelled with this owner id are ever considered: never another agent's. */
  ownerId: string;
  /**
   * Ids of the containers the driver or agent tracks now (full ids, or 12-character short ids).
   * Called at every sweep, and again before each removal. At least one of this and `trackedTaskIds` is required.
   */
  trackedContainerIds?: () => Iterable<string>;
  /** Task ids with a live record: a container labelled with one of them is tracked. */
  trackedTaskIds?: () => Iterable<string>;
  /**
   * Ids of this owner's groups that are live (not ended), asked at every sweep and again before each
   * removal: a live group's infrastructure container, network and shared volume are left alone.
   * Required for an owner that runs groups (the agent passes its group records that have not
   * ended); omitted, the owner has no live group, and any infrastructure container, group network
   * or group volume of this owner id is an orphan once past the creation grace period.
   */
  liveGroupIds?: () => Iterable<string>;
  /**
   * For an owner with warm pools (src/pools): the pool containers its pools know now (being made,
   * idle, frozen, serving a task; `driver.pools.containerIds()`), asked at every sweep and again
   * before each removal. Given, the owner's pool containers are listed in any state (an idle one
   * may be frozen, or its holder gone) and every one the pools do not know is dangling once past
   * the creation grace. Omitted, pool containers are judged as other containers are (running, by
   * `trackedContainerIds`).
   */
  livePoolContainerIds?: () => Iterable<string>;
  /**
   * Whether the engine answers, asked before every scheduled sweep; a sweep runs only when it
   * does. Default: a ping with a 5 s deadline.
   */
  isEngineHealthy?: () => Promise<boolean>;
  /**
   * Extra engine-side label filters (`key` or `key=value`): only containers that also carry these
   * are ever considered, dangling or orphaned. For sharing an engine (tests do). Default none.
   */
  labels?: readonly string[];
  /**
   * Makes the judge of owner processes for one sweep (whether a container's owner process is gone).
   * Default: `ownerJudge()` over this host's /proc.
   */
  ownerJudge?: () => OwnerJudge;
  /** Validated once, here. */
  options?: DanglingReconcilerOptions;
  /** Default: silent. */
  logger?: Logger;
  /** Default: the system clock. */
  clock?: Pick<Clock, 'now' | 'setTimeout' | 'clearTimeout'>;
}

export interface SweepOptions {
  /** Stops the sweep: before the list, a BERTH_CANCELLED; during removals, no new removal starts. */
  signal?: AbortSignal;
  /** Overrides the configured dry run for this sweep. */
  dryRun?: boolean;
}

/**
 * The reconciler's own state (not a task's: see tasks/lifecycle.ts): idle → active (its periodic
 * sweeps are scheduled) → stopped, or idle → stopped; stopped is final (a new configuration makes
 * a new reconciler). Moves are checked and logged in `#transition`.
 */
export type ReconcilerState = 'idle' | 'active' | 'stopped';

const RECONCILER_TRANSITIONS: Readonly<Record<ReconcilerState, readonly ReconcilerState[]>> = Object.freeze({
  idle: ['active', 'stopped'],
  active: ['stopped'],
  stopped: [],
});

/**
 * Removes dangling containers (Nomad's reconcile_dangling, in Node): running containers that carry
 * berth's labels and this owner's id but that nothing tracks, once they are older than a creation
 * grace period. An engine can start a container and still fail the API call (a wedged engine, a
 * timeout): the driver then thinks the task failed while its container runs on, untracked.
 *
 * One sweep is one engine list call, filtered on the engine side by label and status, plus one
 * force-removal per dangling container; foreign containers are never inspected or touched. A
 * group's infrastructure container runs no task: it is tracked while its group is live
 * (`liveGroupIds`), and dangling once not. With `orphans`, a second list finds containers whose
 * owner process is gone; with `groups`, after every container removal, two more list groups'
 * networks and shared volumes and remove the orphans among them (see groups.ts), never forced.
 */
export class DanglingReconciler implements EventSource<ReconcilerEvents> {
  readonly options: ResolvedDanglingReconcilerOptions;
  readonly ownerId: string;
  readonly #engine: ReconcileEngine;
  readonly #trackedContainerIds: (() => Iterable<string>) | undefined;
  readonly #trackedTaskIds: (() => Iterable<string>) | undefined;
  readonly #liveGroupIds: (() => Iterable<string>) | undefined;
  readonly #livePoolContainerIds: (() => Iterable<string>) | undefined;
  readonly #isEngineHealthy: () => Promise<boolean>;
  readonly #logger: Logger;
  readonly #clock: Pick<Clock, 'now' | 'setTimeout' | 'clearTimeout'>;
  readonly #events: Events<ReconcilerEvents>;
  readonly #scopeLabels: readonly string[];
  readonly #ownerJudge: () => OwnerJudge;
  /** Aborted by stop(): the scheduled sweep under way starts no new removal. */
  readonly #stopping = new AbortController();
  #state: ReconcilerState = 'idle';
  #timer: unknown;
  /** The sweep under way (or the last one); sweeps run one after another, never at once. */
  #tail: Promise<unknown> = Promise.resolve();
  #scheduled: Promise<unknown> | undefined;
  /** Set while the engine fails: the failure is logged when this is set, and recovery when it is cleared. */
  #engineFailure: { sinceMs: number; sweepsMissed: number } | undefined;
  /** Containers whose removal failed and was logged: logged once each, not every period. */
  readonly #loggedRemovalFailures = new Set<string>();

  constructor(init: DanglingReconcilerInit) {
    this.options = resolveDanglingReconcilerOptions(init.options);
    const issues = [];
    if (typeof init.ownerId !== 'string' || init.ownerId.trim() === '') issues.push({ field: 'ownerId', rule: 'must be a non-empty string' });
    if (init.trackedContainerIds === undefined && init.trackedTaskIds === undefined) {
      // Without a source of tracked containers every container of this owner would look dangling.
      issues.push({ field: 'trackedContainerIds', rule: 'one of trackedContainerIds and trackedTaskIds is required' });
    }
    if (issues.length > 0) throw new ValidationError(issues);
    this.ownerId = init.ownerId;
    this.#engine = init.engine;
    this.#trackedContainerIds = init.trackedContainerIds;
    this.#trackedTaskIds = init.trackedTaskIds;
    this.#liveGroupIds = init.liveGroupIds;
    this.#livePoolContainerIds = init.livePoolContainerIds;
    this.#isEngineHealthy = init.isEngineHealthy ?? (() => pingEngine(this.#engine));
    this.#logger = init.logger ?? silentLogger;
    this.#clock = init.clock ?? systemClock;
    this.#events = new Events(this.#logger);
    this.#scopeLabels = Object.freeze([...(init.labels ?? [])]);
    this.#ownerJudge = init.ownerJudge ?? (() => ownerJudge());
  }

  /** Calls `listener` with every later event of `type` (see ReconcilerEvents); returns its unsubscribe. */
  on<K extends keyof ReconcilerEvents>(type: K, listener: EventListener<ReconcilerEvents[K]>): Unsubscribe {
    return this.#events.on(type, listener);
  }

  get state(): ReconcilerState {
    return this.#state;
  }

  /** The engine-side label filter of a sweep's dangling containers: berth's, this owner's, and the scope's. */
  get labelFilter(): string[] {
    return [`${LABELS.managed}=true`, `${LABELS.ownerId}=${this.ownerId}`, ...this.#scopeLabels];
  }

  /** The engine-side label filter of a sweep's orphan candidates: berth's, with an owner process, and the scope's. */
  get orphanLabelFilter(): string[] {
    return [...ORPHAN_CANDIDATE_LABELS, ...this.#scopeLabels];
  }

  /**
   * Starts the periodic sweeps. The first waits max(period, creation grace), so that the agent's
   * recovery re-attaches its tasks before anything of theirs can look dangling (as Nomad does);
   * each next one starts a period after the previous ended. A no-op when not `enabled` or already
   * active; refused once stopped (BERTH_INTERNAL).
   */
  start(): void {
    if (this.#state === 'active') return;
    // A stopped one is refused below, disabled or not.
    if (!this.options.enabled && this.#state === 'idle') {
      this.#logger.info({ ownerId: this.ownerId }, 'dangling-container reconciler disabled');
      return;
    }
    this.#transition('active');
    this.#schedule(Math.max(this.options.periodMs, this.options.creationGraceMs));
  }

  /** Stops the sweeps: no new one starts, the one under way starts no new removal, and this resolves when it has ended. */
  async stop(): Promise<void> {
    if (this.#state !== 'stopped') this.#transition('stopped');
    this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#stopping.abort(cancelledError('dangling-container sweep: the reconciler stopped'));
    await this.#scheduled;
    await this.#tail.catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /**
   * One sweep: lists berth's running containers of this owner (one engine call), spares the tracked
   * and the young, and force-removes the rest with their anonymous volumes (or, in a dry run, only
   * reports them). Sweeps queue behind one under way. Rejects when the list fails (a BerthError
   * from the engine) or BERTH_CANCELLED when `signal` aborts before the list; a removal that fails
   * is reported in `failed`, and the sweep goes on.
   */
  sweepOnce(options: SweepOptions = {}): Promise<SweepResult> {
    const run = this.#tail.catch(() => undefined).then(() => this.#sweep(options));
    this.#tail = run;
    return run;
  }

  /**
   * What the timer runs, callable by hand: checks the engine's health, sweeps, logs what it did,
   * and logs an engine failure once (and its recovery once), not every period. Never rejects.
   */
  async runScheduledSweep(): Promise<ScheduledSweepOutcome> {
    let outcome: ScheduledSweepOutcome;
    try {
      const healthy = await this.#isEngineHealthy().catch(() => false);
      outcome = healthy ? { kind: 'swept', result: await this.sweepOnce({ signal: this.#stopping.signal }) } : { kind: 'skipped', reason: 'engine-unhealthy' };
    } catch (error) {
      outcome = { kind: 'failed', error: asBerthError(error) };
    }
    if (!(outcome.kind === 'failed' && outcome.error.code === 'BERTH_CANCELLED' && this.#stopping.signal.aborted)) this.#report(outcome);
    this.#events.emit('sweep', outcome);
    if (RECONCILE_CHANNEL.hasSubscribers) RECONCILE_CHANNEL.publish({ type: 'sweep', outcome });
    return outcome;
  }

  #schedule(delayMs: number): void {
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      if (this.#state !== 'active') return;
      const tick = this.runScheduledSweep().finally(() => {
        this.#scheduled = undefined;
        if (this.#state === 'active') this.#schedule(this.options.periodMs);
      });
      this.#scheduled = tick;
    }, delayMs);
  }

  async #sweep(options: SweepOptions): Promise<SweepResult> {
    const signal = options.signal;
    const dryRun = options.dryRun ?? this.options.dryRun;
    if (signal?.aborted) throw cancelledError('dangling-container sweep', signal.reason);
    const startedAtMs = this.#clock.now();
    const running = await this.#engine.listContainers({ all: false, labels: this.labelFilter, status: ['running'] }, { signal });
    // A warm pool's containers are this owner's in any state: an idle one may be frozen (paused), or
    // its holder may have died. One the owner's pools do not know (tracked) is dangling whatever its state.
    const pooled = this.#livePoolContainerIds ? await this.#engine.listContainers({ all: true, labels: [...this.labelFilter, `${LABELS.role}=${ROLES.pool}`] }, { signal }) : [];
    const runningIds = new Set(running.map((container) => container.id));
    const candidates = [...running, ...pooled.filter((container) => container.labels[LABELS.role] === ROLES.pool && !runningIds.has(container.id))];
    // A live group's infrastructure container is tracked by its group (it runs no task of its own).
    const decision = decideDangling(candidates, this.#tracked(), this.#clock.now(), this.options.creationGraceMs);
    // Orphans are any owner's, running or stopped, and judged by their owner process alone: what this owner tracks says nothing of them.
    const orphanCandidates = this.options.orphans ? await this.#engine.listContainers({ all: true, labels: this.orphanLabelFilter }, { signal }) : [];
    const danglingIds = new Set(decision.dangling.map((container) => container.id));
    const orphanDecision = decideOrphans(
      orphanCandidates.filter((container) => !danglingIds.has(container.id)),
      this.#ownerJudge(),
      this.#clock.now(),
      this.options.orphanGraceMs,
    );
    const result: SweepResult = {
      dryRun,
      removed: [],
      wouldRemove: dryRun ? decision.dangling : [],
      failed: [],
      alreadyGone: 0,
      skippedTracked: decision.skippedTracked,
      skippedLiveGroup: decision.skippedLiveGroup,
      skippedGrace: decision.skippedGrace,
      listed: candidates.length,
      orphans: {
        removed: [],
        wouldRemove: dryRun ? orphanDecision.orphans : [],
        failed: [],
        alreadyGone: 0,
        skippedLiveOwner: orphanDecision.skippedLiveOwner,
        skippedUnknownOwner: orphanDecision.skippedUnknownOwner,
        skippedGrace: orphanDecision.skippedGrace,
        listed: orphanCandidates.length,
      },
      groupResources: emptyGroupResourceResult(),
      cancelled: false,
      startedAt: new Date(startedAtMs),
      durationMs: 0,
    };
    if (!dryRun) {
      // Task containers before infrastructure containers: a task container lives in its infrastructure container's namespace.
      const isInfra = (container: { role?: string }): boolean => container.role === ROLES.infra;
      await this.#removeAll(result, signal, [
        ...decision.dangling.filter((container) => !isInfra(container)).map((container) => () => this.#remove(container, result)),
        ...orphanDecision.orphans.filter((container) => !isInfra(container)).map((container) => () => this.#removeOrphan(container, result)),
      ]);
      await this.#removeAll(result, signal, [
        ...decision.dangling.filter(isInfra).map((container) => () => this.#remove(container, result)),
        ...orphanDecision.orphans.filter(isInfra).map((container) => () => this.#removeOrphan(container, result)),
      ]);
    }
    // Networks and volumes after every container removal: one still in use by a live container is never removed (the engine refuses, and it is left for the next sweep).
    if (this.options.groups && !result.cancelled) {
      const containersGoing = new Set([...decision.dangling, ...orphanDecision.orphans].map((container) => container.id));
      await this.#sweepGroupResources(result, dryRun, containersGoing, signal);
    }
    result.durationMs = this.#clock.now() - startedAtMs;
    return result;
  }

  /** Runs removals, at most `removeConcurrency` at once; an abort stops new ones (the sweep is then `cancelled`). */
  async #removeAll(result: SweepResult, signal: AbortSignal | undefined, removals: Array<() => Promise<void>>): Promise<void> {
    const queue = [...removals];
    const worker = async (): Promise<void> => {
      for (let removal = queue.shift(); removal; removal = queue.shift()) {
        if (signal?.aborted) {
          result.cancelled = true;
          return;
        }
        await removal();
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.removeConcurrency, queue.length) }, worker));
  }

  /**
   * Groups' networks and shared volumes: lists them (two engine calls), and, only when one is
   * another owner's, the containers of groups (one more), to tell whether its group still has any.
   * In a dry run, the containers the sweep would remove count as gone.
   */
  async #sweepGroupResources(result: SweepResult, dryRun: boolean, containersGoing: ReadonlySet<string>, signal: AbortSignal | undefined): Promise<void> {
    const [networks, volumes] = await Promise.all([
      this.#engine.listNetworks({ labels: [...groupRoleLabels(ROLES.network), ...this.#scopeLabels] }, { signal }),
      this.#engine.listVolumes({ labels: [...groupRoleLabels(ROLES.sharedDir), ...this.#scopeLabels] }, { signal }),
    ]);
    const resources: GroupResource[] = [
      ...networks.filter((row) => row.labels[LABELS.role] === ROLES.network).map(networkAsGroupResource),
      ...volumes.filter((row) => row.labels[LABELS.role] === ROLES.sharedDir).map(volumeAsGroupResource),
    ].filter((resource): resource is GroupResource => resource !== undefined);
    const tally = result.groupResources;
    tally.listed = resources.length;
    if (resources.length === 0) return;
    let occupied = new Set<string>();
    if (needsOccupancy(resources, this.ownerId, this.options.orphans)) {
      // Not narrowed by the scope labels: a container of the group without them still uses its network or volume.
      const containers = await this.#engine.listContainers({ all: true, labels: [...GROUP_CONTAINER_LABELS] }, { signal });
      occupied = occupiedGroups(containers.filter((container) => !containersGoing.has(container.id)));
    }
    const decision = decideGroupResources(resources, {
      ownerId: this.ownerId,
      liveGroupIds: this.#liveGroups(),
      orphans: this.options.orphans,
      occupied,
      judge: this.#ownerJudge(),
      nowMs: this.#clock.now(),
      creationGraceMs: this.options.creationGraceMs,
      orphanGraceMs: this.options.orphanGraceMs,
    });
    Object.assign(tally, {
      skippedLiveGroup: decision.skippedLiveGroup,
      skippedGrace: decision.skippedGrace,
      skippedOccupied: decision.skippedOccupied,
      skippedLiveOwner: decision.skippedLiveOwner,
      skippedForeign: decision.skippedForeign,
    });
    if (dryRun) {
      tally.wouldRemove = decision.orphans;
      return;
    }
    await this.#removeAll(result, signal, decision.orphans.map((resource) => () => this.#removeGroupResource(resource, tally)));
  }

  async #removeGroupResource(resource: OrphanedGroupResource, tally: GroupResourceSweepResult): Promise<void> {
    // Asked again just before removing: the agent may have made the group live since the list.
    if (resource.ownerId === this.ownerId && this.#liveGroups().has(resource.groupId)) {
      tally.skippedLiveGroup++;
      return;
    }
    let outcome: 'removed' | 'absent' | 'in-use';
    try {
      // Never forced: the engine refuses a network with endpoints and a volume in use, and then it stays for the next sweep.
      outcome = resource.kind === 'network' ? await this.#engine.removeNetwork(resource.id) : await this.#engine.removeVolume(resource.id);
    } catch (error) {
      tally.failed.push({ container: resource, error: asBerthError(error) });
      return;
    }
    if (outcome === 'absent') {
      tally.alreadyGone++;
      return;
    }
    if (outcome === 'in-use') {
      tally.inUse.push(resource);
      return;
    }
    tally.removed.push(resource);
    this.#loggedRemovalFailures.delete(resource.id);
    const event: GroupResourceRemovedEvent = { ...resource, removedAt: new Date(this.#clock.now()) };
    this.#events.emit('group-resource-removed', event);
    if (RECONCILE_CHANNEL.hasSubscribers) RECONCILE_CHANNEL.publish({ type: 'group-resource-removed', ...event });
  }

  async #remove(container: DanglingContainer, result: SweepResult): Promise<void> {
    // Asked again just before removing: recovery may have re-attached the task since the list.
    const labels: Record<string, string> = {
      ...(container.taskId === undefined ? {} : { [LABELS.taskId]: container.taskId }),
      ...(container.groupId === undefined ? {} : { [LABELS.groupId]: container.groupId }),
      ...(container.role === undefined ? {} : { [LABELS.role]: container.role }),
    };
    if (isTracked({ id: container.id, labels }, this.#tracked())) {
      if (container.role === ROLES.infra) result.skippedLiveGroup++;
      else result.skippedTracked++;
      return;
    }
    await this.#removeTallied(container, result, () => {
      const event: DanglingContainerRemovedEvent = { ...container, ownerId: this.ownerId, removedAt: new Date(this.#clock.now()) };
      this.#events.emit('removed', event);
      if (RECONCILE_CHANNEL.hasSubscribers) RECONCILE_CHANNEL.publish({ type: 'removed', ...event });
    });
  }

  async #removeOrphan(container: OrphanedContainer, result: SweepResult): Promise<void> {
    // No second look before removing: an owner process that is gone never comes back.
    await this.#removeTallied(container, result.orphans, () => {
      const event: OrphanedContainerRemovedEvent = { ...container, removedAt: new Date(this.#clock.now()) };
      this.#events.emit('orphan-removed', event);
      if (RECONCILE_CHANNEL.hasSubscribers) RECONCILE_CHANNEL.publish({ type: 'orphan-removed', ...event });
    });
  }

  /**
   * Removes one container of a sweep and tallies the outcome: gone already, removed (then
   * `announce`d), or failed (the next sweep tries again).
   */
  async #removeTallied<C extends { id: string }>(
    container: C,
    tally: RemovalTally<C>,
    announce: () => void,
  ): Promise<void> {
    try {
      // Not the sweep's signal: once asked, a removal runs to its outcome (under its own deadline), so the result is known.
      if ((await this.#engine.removeContainer(container.id)) === 'absent') {
        tally.alreadyGone++;
        return;
      }
    } catch (error) {
      tally.failed.push({ container, error: asBerthError(error) });
      return;
    }
    tally.removed.push(container);
    this.#loggedRemovalFailures.delete(container.id);
    announce();
  }

  #tracked(): TrackedSnapshot {
    return {
      containerIds: new Set([...(this.#trackedContainerIds?.() ?? []), ...(this.#livePoolContainerIds?.() ?? [])]),
      taskIds: new Set(this.#trackedTaskIds?.() ?? []),
      liveGroupIds: this.#liveGroups(),
    };
  }

  #liveGroups(): ReadonlySet<string> {
    return new Set(this.#liveGroupIds?.() ?? []);
  }

  /** The scheduled path's logging: what was removed, and engine failures once per outage. */
  #report(outcome: ScheduledSweepOutcome): void {
    if (outcome.kind !== 'swept') {
      if (this.#engineFailure) {
        this.#engineFailure.sweepsMissed++;
        return;
      }
      this.#engineFailure = { sinceMs: this.#clock.now(), sweepsMissed: 1 };
      const meta = outcome.kind === 'failed' ? { code: outcome.error.code, reason: outcome.error.message } : { reason: 'the engine did not answer its health check' };
      this.#logger.warn({ ...meta, ownerId: this.ownerId }, 'dangling-container sweeps paused: the engine is not answering (logged once until it recovers)');
      return;
    }
    if (this.#engineFailure) {
      const { sinceMs, sweepsMissed } = this.#engineFailure;
      this.#engineFailure = undefined;
      this.#logger.info({ downMs: this.#clock.now() - sinceMs, sweepsMissed, ownerId: this.ownerId }, 'dangling-container sweeps resumed: the engine answers again');
    }
    const { result } = outcome;
    for (const container of result.removed) {
      if (container.role === ROLES.infra) this.#logger.info(infraLogMeta(container), 'removed the infrastructure container of a group that is not live');
      else this.#logger.info({ containerId: container.id, name: container.name, taskId: container.taskId, ageMs: container.ageMs }, 'removed a dangling container');
    }
    for (const container of result.wouldRemove) {
      if (container.role === ROLES.infra) this.#logger.info(infraLogMeta(container), 'dry run: would remove the infrastructure container of a group that is not live');
      else this.#logger.info({ containerId: container.id, name: container.name, taskId: container.taskId, ageMs: container.ageMs }, 'dry run: would remove a dangling container');
    }
    for (const { container, error } of result.failed) {
      if (this.#loggedRemovalFailures.has(container.id)) continue;
      this.#loggedRemovalFailures.add(container.id);
      this.#logger.warn({ containerId: container.id, code: error.code, reason: error.message }, 'could not remove a dangling container; will retry every sweep (logged once)');
    }
    const { orphans } = result;
    for (const container of orphans.removed) {
      this.#logger.info(orphanLogMeta(container), 'removed an orphaned container: its owner process is gone');
    }
    for (const container of orphans.wouldRemove) {
      this.#logger.info(orphanLogMeta(container), 'dry run: would remove an orphaned container: its owner process is gone');
    }
    for (const { container, error } of orphans.failed) {
      if (this.#loggedRemovalFailures.has(container.id)) continue;
      this.#loggedRemovalFailures.add(container.id);
      this.#logger.warn({ containerId: container.id, code: error.code, reason: error.message }, 'could not remove an orphaned container; will retry every sweep (logged once)');
    }
    const groups = result.groupResources;
    for (const resource of groups.removed) this.#logger.info(groupResourceLogMeta(resource), `removed a group ${resource.kind}: ${groupResourceWhy(resource)}`);
    for (const resource of groups.wouldRemove) this.#logger.info(groupResourceLogMeta(resource), `dry run: would remove a group ${resource.kind}: ${groupResourceWhy(resource)}`);
    for (const resource of groups.inUse) {
      // Said every sweep at debug level only: a network a user's container joined may stay in use for long.
      this.#logger.debug(groupResourceLogMeta(resource), `a group ${resource.kind} to remove is still in use; left for the next sweep`);
    }
    for (const { container: resource, error } of groups.failed) {
      if (this.#loggedRemovalFailures.has(resource.id)) continue;
      this.#loggedRemovalFailures.add(resource.id);
      this.#logger.warn({ ...groupResourceLogMeta(resource), code: error.code, reason: error.message }, `could not remove a group ${resource.kind}; will retry every sweep (logged once)`);
    }
  }

  #transition(to: ReconcilerState): void {
    if (!RECONCILER_TRANSITIONS[this.#state].includes(to)) {
      throw new BerthError('BERTH_INTERNAL', `the dangling-container reconciler cannot go from ${this.#state} to ${to}${this.#state === 'stopped' ? '; make a new one' : ''}`, {
        context: { state: this.#state, requested: to },
      });
    }
    this.#logger.debug({ from: this.#state, to, ownerId: this.ownerId }, 'dangling-container reconciler state');
    this.#state = to;
  }
}

async function pingEngine(engine: ReconcileEngine): Promise<boolean> {
  try {
    await engine.ping({ deadlineMs: DEFAULT_HEALTH_CHECK_DEADLINE_MS });
    return true;
  } catch {
    return false;
  }
}

function infraLogMeta(container: DanglingContainer): Record<string, unknown> {
  return { containerId: container.id, name: container.name, groupId: container.groupId, role: container.role, ageMs: container.ageMs };
}

function groupResourceLogMeta(resource: OrphanedGroupResource): Record<string, unknown> {
  return {
    [resource.kind === 'network' ? 'networkId' : 'volume']: resource.id,
    name: resource.name,
    groupId: resource.groupId,
    ownerId: resource.ownerId,
    reason: resource.reason,
    ...(resource.ownerGoneReason === undefined ? {} : { ownerGoneReason: resource.ownerGoneReason }),
    ageMs: resource.ageMs,
  };
}

function groupResourceWhy(resource: OrphanedGroupResource): string {
  if (resource.reason === 'group-ended') return 'its group is not live';
  if (resource.reason === 'owner-gone') return 'its owner process is gone';
  return 'no container of its group is left';
}

function emptyGroupResourceResult(): GroupResourceSweepResult {
  return {
    removed: [],
    wouldRemove: [],
    failed: [],
    alreadyGone: 0,
    inUse: [],
    listed: 0,
    skippedLiveGroup: 0,
    skippedGrace: 0,
    skippedOccupied: 0,
    skippedLiveOwner: 0,
    skippedForeign: 0,
  };
}

function orphanLogMeta(container: OrphanedContainer): Record<string, unknown> {
  return {
    containerId: container.id,
    name: container.name,
    taskId: container.taskId,
    ...(container.groupId === undefined ? {} : { groupId: container.groupId }),
    ...(container.role === undefined ? {} : { role: container.role }),
    ownerId: container.ownerId,
    ownerPid: container.ownerPid,
    reason: container.reason,
    state: container.state,
    ageMs: container.ageMs,
  };
}
