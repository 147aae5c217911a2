import { systemClock, type Clock } from '../common/clock.js';
import { asBerthError, BerthError, isBerthError, ValidationError } from '../common/errors.js';
import { LABELS, ROLES } from '../common/labels.js';
import { PRUNE_CHANNEL } from '../common/diagnostics.js';
import { Events, type EventListener, type EventSource, type Unsubscribe } from '../common/events.js';
import { silentLogger, type Logger } from '../common/logger.js';
import { ownerJudge } from '../common/owner-process.js';
import type { Engine } from '../engine/engine.js';
import type { ContainerSummary, RemovalOutcome } from '../engine/types.js';
import { engineLabelFilters, formatPruneFilters, matchesPruneFilters, parsePruneFilters, type PruneFilterInput, type PruneFilters } from './filters.js';
import {
  isSharedImage,
  mergeBerthImages,
  parseExemptImages,
  type BerthImageFacts,
  type PruneImageSource,
} from './images.js';
import { removeBerthImage, type ImageRemoval } from '../images/removal.js';
import { enforceImageBudget, type ImageBudgetOptions } from './image-budget.js';
import { judgeOrphan, ORPHAN_CANDIDATE_LABELS, type OwnerJudge } from '../reconcile/orphans.js';
import { createdAtUpperBoundMs } from '../reconcile/decide.js';
import {
  GROUP_CONTAINER_LABELS,
  groupRoleLabels,
  isInfraContainer,
  judgeGroupResource,
  networkAsGroupResource,
  occupiedGroups,
  volumeAsGroupResource,
  type GroupResource,
} from '../reconcile/groups.js';
import { resolvePrunerOptions, type PrunerOptions, type ResolvedPrunerOptions } from './options.js';
import {
  emptyPruneReport,
  type PrunerEvents,
  PRUNE_KINDS,
  type ImageBudgetReport,
  type PruneKind,
  type PruneRemovedEvent,
  type PruneReport,
} from './report.js';

/** The engine calls the pruner makes: a narrow port. */
export type PruneEngine = Pick<
  Engine,
  | 'listContainers'
  | 'inspectContainer'
  | 'removeContainer'
  | 'listNetworks'
  | 'inspectNetwork'
  | 'removeNetwork'
  | 'listVolumes'
  | 'removeVolume'
  | 'inspectImage'
  | 'removeImage'
>;

export interface PrunerInit {
  engine: PruneEngine;
  /** Only objects labelled with berth's managed label and this owner id are ever considered. */
  ownerId: string;
  /** Whether a task's record is live (not ended): its containers are never pruned. A task id without a record is not live. */
  isTaskLive: (taskId: string) => boolean;
  /**
   * Whether a group of this owner is live (not ended): its infrastructure container, network and
   * shared volume are never pruned. Required for an owner that runs groups (the agent passes its
   * group records); omitted, this owner has no live group, and its groups' objects are pruned as
   * unused.
   */
  isGroupLive?: (groupId: string) => boolean;
  /**
   * Whether a warm pool's container of this owner is live: the owner's pools know it (being made,
   * idle, frozen or serving a task), and it is never pruned, whatever its state (one just created
   * is not started yet). Omitted: this owner has no pools, and its pool containers are pruned once stopped.
   */
  isPoolContainerLive?: (containerId: string) => boolean;
  /**
   * Makes the judge of owner processes for one prune (whether a container's owner process is gone).
   * Default: `ownerJudge()` over this host's /proc.
   */
  ownerJudge?: () => OwnerJudge;
  /** Which images berth pulled and which are held. Without it, no image is ever pruned. */
  images?: PruneImageSource;
  /** Validated once, here. */
  options?: PrunerOptions;
  /** Default: silent. The pruner returns reports; it logs only at debug level. */
  logger?: Logger;
  /** Default: the system clock. `until` durations count back from `now()`; the image budget paces itself with `sleep`. */
  clock?: Pick<Clock, 'now' | 'sleep'>;
}

export interface PruneOptions {
  /** Moby's filters: `label=k`, `label=k=v`, `label!=k`, `label!=k=v`, `until=<time>`. Default: none. */
  filters?: PruneFilterInput;
  /** Report what would be removed; remove nothing. Default false. */
  dryRun?: boolean;
  /** Aborting stops the prune at the next object; it resolves with what it removed so far and `cancelled: true`. */
  signal?: AbortSignal;
  /** The kinds to prune. Default: all (containers, networks, volumes, images, in that order). */
  kinds?: readonly PruneKind[];
}

const OWN_STOPPED_STATES = ['created', 'exited', 'dead'] as const;

/**
 * Removes what berth created and nobody uses (Moby's prune, scoped to berth): stopped task
 * containers whose task is not live (with their anonymous volumes), containers of any short-lived
 * owner on this host whose owner process is gone (orphans, running or not, past the orphan grace
 * period), networks and dangling volumes
 * labelled as berth's, and images berth pulled that no task holds and nobody else names. Groups'
 * objects: a live group's infrastructure container, network and volume are kept (`isGroupLive`); a
 * group that is not live loses its stopped infrastructure container at once and a running one past
 * the orphan grace; another owner's group network or volume goes by the reconciler's rule (see
 * `judgeGroupResource`). Removal is never forced past the engine's "in use": such objects are kept
 * and reported.
 *
 * One prune (or budget enforcement) runs at a time: another call meanwhile rejects with
 * BERTH_PRUNE_RUNNING at once, rather than queueing.
 */
export class Pruner implements EventSource<PrunerEvents> {
  readonly options: ResolvedPrunerOptions;
  readonly ownerId: string;
  readonly #engine: PruneEngine;
  readonly #isTaskLive: (taskId: string) => boolean;
  readonly #isGroupLive: (groupId: string) => boolean;
  readonly #isPoolContainerLive: (containerId: string) => boolean;
  readonly #images: PruneImageSource | undefined;
  readonly #logger: Logger;
  readonly #clock: Pick<Clock, 'now' | 'sleep'>;
  readonly #events: Events<PrunerEvents>;
  readonly #ownerJudge: () => OwnerJudge;
  #running: 'prune' | 'image budget' | undefined;

  constructor(init: PrunerInit) {
    this.options = resolvePrunerOptions(init.options);
    if (typeof init.ownerId !== 'string' || init.ownerId.trim() === '') throw new ValidationError([{ field: 'ownerId', rule: 'must be a non-empty string' }]);
    this.ownerId = init.ownerId;
    this.#engine = init.engine;
    this.#isTaskLive = init.isTaskLive;
    this.#isGroupLive = init.isGroupLive ?? (() => false);
    this.#isPoolContainerLive = init.isPoolContainerLive ?? (() => false);
    this.#images = init.images;
    this.#logger = init.logger ?? silentLogger;
    this.#clock = init.clock ?? systemClock;
    this.#events = new Events(this.#logger);
    this.#ownerJudge = init.ownerJudge ?? (() => ownerJudge());
  }

  /** Calls `listener` with every later event of `type` (see PrunerEvents); returns its unsubscribe. */
  on<K extends keyof PrunerEvents>(type: K, listener: EventListener<PrunerEvents[K]>): Unsubscribe {
    return this.#events.on(type, listener);
  }

  /** Whether a prune or a budget enforcement is under way. */
  get isRunning(): boolean {
    return this.#running !== undefined;
  }

  /** The engine-side labels every object berth prunes carries. */
  get ownLabels(): string[] {
    return [`${LABELS.managed}=true`, `${LABELS.ownerId}=${this.ownerId}`];
  }

  /**
   * Prunes. Rejects with a ValidationError for bad filters or kinds, BERTH_PRUNE_RUNNING when a
   * prune is already running, or the engine's error when a list fails (its context carries
   * `partialReport`, what was removed before). A failed removal is reported in `failed`, and the
   * prune goes on.
   */
  prune(options: PruneOptions = {}): Promise<PruneReport> {
    let filters: PruneFilters;
    let kinds: ReadonlySet<PruneKind>;
    try {
      filters = parsePruneFilters(options.filters, this.#clock.now());
      kinds = parseKinds(options.kinds);
      this.#begin('prune');
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#prune(filters, kinds, options.dryRun ?? false, options.signal).finally(() => (this.#running = undefined));
  }

  /**
   * Fn's image cleaner: when the images berth pulled and nobody holds take more than `budgetBytes`,
   * removes the least recently used first until they fit, never a held or exempt one, at most
   * `imageBudgetMaxRemovals` per call and `imageBudgetRemovalsPerSecond`. Images someone else names
   * are not berth's to manage: they neither count nor go. Rejects like `prune()`.
   */
  enforceImageBudget(options: ImageBudgetOptions): Promise<ImageBudgetReport> {
    let exempt: ReturnType<typeof parseExemptImages>;
    try {
      if (typeof options.budgetBytes !== 'number' || !Number.isSafeInteger(options.budgetBytes) || options.budgetBytes < 0) {
        throw new ValidationError([{ field: 'budgetBytes', rule: 'must be a whole number of bytes, 0 or more' }]);
      }
      exempt = parseExemptImages(options.exempt);
      this.#begin('image budget');
    } catch (error) {
      return Promise.reject(error);
    }
    const deps = {
      images: this.#images,
      maxRemovals: this.options.imageBudgetMaxRemovals,
      removalIntervalMs: this.options.imageBudgetRemovalIntervalMs,
      clock: this.#clock,
      logger: this.#logger,
      imageFacts: (image: { imageId: string; refs: string[] }, signal: AbortSignal | undefined) => this.#imageFacts(image, signal),
      removeImage: (image: BerthImageFacts, failed: ImageBudgetReport['failed']) => this.#removeImage(image, failed, 'image-budget'),
    };
    const request = { budgetBytes: options.budgetBytes, exempt, dryRun: options.dryRun ?? false, signal: options.signal };
    return enforceImageBudget(deps, request).finally(() => (this.#running = undefined));
  }

  #begin(what: 'prune' | 'image budget'): void {
    if (this.#running !== undefined) {
      throw new BerthError('BERTH_PRUNE_RUNNING', `cannot start a ${what}: a ${this.#running} is already running`, { context: { running: this.#running } });
    }
    this.#running = what;
  }

  async #prune(filters: PruneFilters, kinds: ReadonlySet<PruneKind>, dryRun: boolean, signal: AbortSignal | undefined): Promise<PruneReport> {
    const startedAtMs = this.#clock.now();
    const report = emptyPruneReport(dryRun, formatPruneFilters(filters), new Date(startedAtMs));
    const run: PruneRun = { filters, dryRun, signal, report, occupiedGroups: undefined };
    try {
      for (const kind of PRUNE_KINDS) {
        if (!kinds.has(kind)) continue;
        if (this.#stopped(run)) break;
        if (kind === 'containers') await this.#pruneContainers(run);
        else if (kind === 'networks') await this.#pruneNetworks(run);
        else if (kind === 'volumes') await this.#pruneVolumes(run);
        else await this.#pruneImages(run);
      }
    } catch (error) {
      if (signal?.aborted && isBerthError(error, 'BERTH_CANCELLED')) report.cancelled = true;
      else {
        report.durationMs = this.#clock.now() - startedAtMs;
        throw partialFailure(error, report);
      }
    }
    report.durationMs = this.#clock.now() - startedAtMs;
    this.#logger.debug(
      { dryRun, cancelled: report.cancelled, containers: report.containers.ids.length, networks: report.networks.ids.length, volumes: report.volumes.ids.length, images: report.images.ids.length },
      'prune done',
    );
    return report;
  }

  /** Checks the signal between objects: an aborted prune stops at the next one. */
  #stopped(run: { signal: AbortSignal | undefined; report: { cancelled: boolean } }): boolean {
    if (run.signal?.aborted) run.report.cancelled = true;
    return run.report.cancelled;
  }

  async #pruneContainers(run: PruneRun): Promise<void> {
    const { filters, signal, report } = run;
    const rows = await this.#engine.listContainers(
      { all: true, labels: [...this.ownLabels, ...engineLabelFilters(filters)], status: [...OWN_STOPPED_STATES], withSize: true },
      { signal },
    );
    // Task containers before infrastructure containers: a task container lives in its infrastructure container's namespace.
    for (const row of infraLast(rows)) {
      if (this.#stopped(run)) return;
      if (!(await this.#containerMatches(row, filters, signal))) continue;
      if (isInfraContainer(row.labels)) {
        if (this.#isLiveGroupOf(row.labels)) report.kept.push({ kind: 'containers', id: row.id, reason: 'live-group' });
        else await this.#removeListed(run, row);
        continue;
      }
      if (row.labels[LABELS.role] === ROLES.pool && this.#isPoolContainerLive(row.id)) {
        report.kept.push({ kind: 'containers', id: row.id, reason: 'live-pool' });
        continue;
      }
      const taskId = row.labels[LABELS.taskId];
      if (taskId !== undefined && this.#isTaskLive(taskId)) {
        report.kept.push({ kind: 'containers', id: row.id, reason: 'live-task' });
        continue;
      }
      await this.#removeListed(run, row);
    }
    const seen = new Set(rows.map((row) => row.id));
    if (this.options.orphans) await this.#pruneOrphans(run, seen);
    if (this.#stopped(run)) return;
    await this.#pruneRunningInfra(run, seen);
  }

  /** Whether an object of this owner belongs to a live group (by its group id label). */
  #isLiveGroupOf(labels: Readonly<Record<string, string>>): boolean {
    const groupId = labels[LABELS.groupId];
    return groupId !== undefined && this.#isGroupLive(groupId);
  }

  /**
   * This owner's infrastructure containers that still run (or are paused): one of a live group is
   * not prune's (running containers never are), one of a group that is not live is an orphan,
   * force-removed once past the orphan grace period (kept as `grace` before: a group being created
   * right now). `seen` holds the ones handled already (stopped, and orphans), and gains these.
   */
  async #pruneRunningInfra(run: PruneRun, seen: Set<string>): Promise<void> {
    const { filters, signal, report } = run;
    const rows = await this.#engine.listContainers({ all: true, labels: [...this.ownLabels, `${LABELS.role}=${ROLES.infra}`, ...engineLabelFilters(filters)], withSize: true }, { signal });
    for (const row of rows) {
      if (this.#stopped(run)) return;
      if (seen.has(row.id) || !isInfraContainer(row.labels) || row.labels[LABELS.ownerId] !== this.ownerId) continue;
      seen.add(row.id);
      if (!(await this.#containerMatches(row, filters, signal))) continue;
      if (this.#isLiveGroupOf(row.labels)) continue;
      if (this.#clock.now() - createdAtUpperBoundMs(row) < this.options.orphanGraceMs) {
        report.kept.push({ kind: 'containers', id: row.id, reason: 'grace' });
        continue;
      }
      await this.#removeListed(run, row);
    }
  }

  /**
   * Containers of short-lived owners (any owner id) whose owner process is gone: force-removed,
   * running or not, once past the orphan grace period. A container whose owner runs is kept
   * (`live-owner`); one whose owner cannot be judged from here (another host) is not berth's to
   * judge, and is neither removed nor reported.
   */
  async #pruneOrphans(run: PruneRun, seen: Set<string>): Promise<void> {
    const { filters, dryRun, signal, report } = run;
    const rows = await this.#engine.listContainers({ all: true, labels: [...ORPHAN_CANDIDATE_LABELS, ...engineLabelFilters(filters)], withSize: true }, { signal });
    const judge = this.#ownerJudge();
    for (const row of infraLast(rows)) {
      if (this.#stopped(run)) return;
      if (seen.has(row.id)) continue;
      seen.add(row.id);
      if (!(await this.#containerMatches(row, filters, signal))) continue;
      const judgement = judgeOrphan(row, judge, this.#clock.now(), this.options.orphanGraceMs);
      if (judgement.kind === 'unknown-owner') continue;
      if (judgement.kind !== 'orphan') {
        report.kept.push({ kind: 'containers', id: row.id, reason: judgement.kind === 'live-owner' ? 'live-owner' : 'grace' });
        continue;
      }
      if ((await this.#removeListed(run, row)) && !dryRun) {
        this.#logger.debug({ containerId: row.id, ownerId: judgement.container.ownerId, ownerPid: judgement.container.ownerPid, reason: judgement.container.reason }, 'pruned an orphaned container');
      }
    }
  }

  /**
   * Removes a listed container. Forced: a stopped container needs no stop first, and an orphan may
   * still run (a killed `berth run` leaves its task running). Anonymous volumes go with it.
   */
  #removeListed(run: PruneRun, row: ContainerSummary): Promise<boolean> {
    return this.#removeListedObject(run, 'containers', row.id, row.sizeRwBytes ?? 0, () => this.#engine.removeContainer(row.id));
  }

  /**
   * Removes one listed container, network or volume (not in a dry run) and reports it. False when it
   * was gone already, in use (reported as kept: the engine refused) or its removal failed (reported
   * as failed): the prune goes on with the next.
   */
  async #removeListedObject(
    run: PruneRun,
    kind: 'containers' | 'networks' | 'volumes',
    id: string,
    reclaimedBytes: number,
    remove: () => Promise<RemovalOutcome>,
    name?: string,
  ): Promise<boolean> {
    if (!run.dryRun) {
      let outcome: RemovalOutcome;
      try {
        outcome = await remove();
      } catch (error) {
        run.report.failed.push({ kind, id, error: asBerthError(error) });
        return false;
      }
      if (outcome === 'absent') return false;
      if (outcome === 'in-use') {
        run.report.kept.push({ kind, id, reason: 'in-use' });
        return false;
      }
      this.#emit({ kind, id, reclaimedBytes, cause: 'prune' });
    }
    run.report[kind].ids.push(id);
    run.report[kind].reclaimedBytes += reclaimedBytes;
    if (kind !== 'containers') run.report[kind].names.push(name ?? id);
    return true;
  }

  /**
   * The list reports creation in whole seconds; when an `until` cut-off falls inside that second,
   * only the exact time (one inspect, of this berth container only) can tell which side it is on.
   */
  async #containerMatches(row: ContainerSummary, filters: PruneFilters, signal: AbortSignal | undefined): Promise<boolean> {
    let createdAtMs = row.createdAt.getTime();
    if (filters.untilMs !== undefined && Math.floor(filters.untilMs / 1000) * 1000 === createdAtMs) {
      try {
        createdAtMs = (await this.#engine.inspectContainer(row.id, { signal })).createdAt.getTime();
      } catch (error) {
        if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return false;
        throw error;
      }
    }
    return matchesPruneFilters(filters, { labels: row.labels, createdAtMs });
  }

  /**
   * This owner's networks with no endpoints (a live group's are kept, `live-group`), then, with
   * `orphans`, other owners' group networks that are orphans (see `judgeGroupResource`).
   */
  async #pruneNetworks(run: PruneRun): Promise<void> {
    const { filters, signal, report } = run;
    const rows = await this.#engine.listNetworks({ labels: [...this.ownLabels, ...engineLabelFilters(filters)] }, { signal });
    for (const row of rows) {
      if (this.#stopped(run)) return;
      if (!matchesPruneFilters(filters, { labels: row.labels, createdAtMs: row.createdAt.getTime() })) continue;
      if (this.#isLiveGroupOf(row.labels)) {
        report.kept.push({ kind: 'networks', id: row.id, reason: 'live-group' });
        continue;
      }
      await this.#removeUnusedNetwork(run, row.id, row.name);
    }
    if (!this.options.orphans) return;
    const groupRows = await this.#engine.listNetworks({ labels: [...groupRoleLabels(ROLES.network), ...engineLabelFilters(filters)] }, { signal });
    const seen = new Set(rows.map((row) => row.id));
    for (const row of groupRows) {
      if (this.#stopped(run)) return;
      if (seen.has(row.id) || row.labels[LABELS.role] !== ROLES.network) continue;
      if (!matchesPruneFilters(filters, { labels: row.labels, createdAtMs: row.createdAt.getTime() })) continue;
      const resource = networkAsGroupResource(row);
      if (!resource || !(await this.#isOrphanedForeignGroupResource(run, resource))) continue;
      await this.#removeUnusedNetwork(run, row.id, row.name);
    }
  }

  /** Removes a network unless it has endpoints (kept, `in-use`): the list does not say which containers are attached. */
  async #removeUnusedNetwork(run: PruneRun, id: string, name: string): Promise<void> {
    let attached: number;
    try {
      attached = (await this.#engine.inspectNetwork(id, { signal: run.signal })).containerIds.length;
    } catch (error) {
      if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return;
      throw error;
    }
    if (attached > 0) run.report.kept.push({ kind: 'networks', id, reason: 'in-use' });
    else await this.#removeListedObject(run, 'networks', id, 0, () => this.#engine.removeNetwork(id), name);
  }

  /**
   * Whether another owner's group network or volume is an orphan (see `judgeGroupResource`); one it
   * spares for a reason a user can act on is reported as kept. Only this owner's objects are judged
   * by their group's liveness: another owner's groups are unknown here.
   */
  async #isOrphanedForeignGroupResource(run: PruneRun, resource: GroupResource): Promise<boolean> {
    if (resource.ownerId === this.ownerId) return false;
    run.occupiedGroups ??= occupiedGroups(await this.#engine.listContainers({ all: true, labels: [...GROUP_CONTAINER_LABELS] }, { signal: run.signal }));
    const judgement = judgeGroupResource(resource, {
      ownerId: this.ownerId,
      liveGroupIds: new Set(),
      orphans: true,
      occupied: run.occupiedGroups,
      judge: (run.judge ??= this.#ownerJudge()),
      nowMs: this.#clock.now(),
      creationGraceMs: this.options.orphanGraceMs,
      orphanGraceMs: this.options.orphanGraceMs,
    });
    const kind = resource.kind === 'network' ? 'networks' : 'volumes';
    if (judgement.kind === 'orphan') return true;
    if (judgement.kind === 'occupied') run.report.kept.push({ kind, id: resource.id, reason: 'in-use' });
    else if (judgement.kind === 'live-owner' || judgement.kind === 'grace') run.report.kept.push({ kind, id: resource.id, reason: judgement.kind });
    return false;
  }

  /**
   * This owner's volumes no container references (a live group's shared volume is kept,
   * `live-group`), then, with `orphans`, other owners' group volumes that are orphans.
   */
  async #pruneVolumes(run: PruneRun): Promise<void> {
    const { filters, signal, report } = run;
    const rows = await this.#engine.listVolumes({ labels: [...this.ownLabels, ...engineLabelFilters(filters)], dangling: true }, { signal });
    for (const row of rows) {
      if (this.#stopped(run)) return;
      if (!matchesPruneFilters(filters, { labels: row.labels, createdAtMs: row.createdAt?.getTime() })) continue;
      if (this.#isLiveGroupOf(row.labels)) {
        report.kept.push({ kind: 'volumes', id: row.name, reason: 'live-group' });
        continue;
      }
      await this.#removeListedObject(run, 'volumes', row.name, row.sizeBytes ?? 0, () => this.#engine.removeVolume(row.name), row.name);
    }
    if (!this.options.orphans) return;
    const groupRows = await this.#engine.listVolumes({ labels: [...groupRoleLabels(ROLES.sharedDir), ...engineLabelFilters(filters)], dangling: true }, { signal });
    const seen = new Set(rows.map((row) => row.name));
    for (const row of groupRows) {
      if (this.#stopped(run)) return;
      if (seen.has(row.name) || row.labels[LABELS.role] !== ROLES.sharedDir) continue;
      if (!matchesPruneFilters(filters, { labels: row.labels, createdAtMs: row.createdAt?.getTime() })) continue;
      const resource = volumeAsGroupResource(row);
      if (!resource || !(await this.#isOrphanedForeignGroupResource(run, resource))) continue;
      await this.#removeListedObject(run, 'volumes', row.name, row.sizeBytes ?? 0, () => this.#engine.removeVolume(row.name), row.name);
    }
  }

  async #pruneImages(run: PruneRun): Promise<void> {
    const { filters, dryRun, signal, report } = run;
    if (!this.#images) return;
    const held = new Set(this.#images.heldImageIds());
    for (const image of mergeBerthImages(this.#images.berthImages())) {
      if (this.#stopped(run)) return;
      if (held.has(image.imageId)) {
        report.kept.push({ kind: 'images', id: image.imageId, reason: 'held' });
        continue;
      }
      const facts = await this.#imageFacts(image, signal);
      if (!facts) continue;
      if (!matchesPruneFilters(filters, { labels: facts.labels, createdAtMs: facts.createdAtMs })) continue;
      if (facts.shared) {
        report.kept.push({ kind: 'images', id: facts.imageId, reason: 'shared' });
        continue;
      }
      if (dryRun) {
        report.images.ids.push(facts.imageId);
        report.images.untagged.push(...facts.refs);
        report.images.reclaimedBytes += facts.sizeBytes;
        continue;
      }
      const removal = await this.#removeImage(facts, report.failed, 'prune');
      if (!removal) continue;
      report.images.untagged.push(...removal.untagged);
      if (removal.kind === 'in-use') report.kept.push({ kind: 'images', id: facts.imageId, reason: 'in-use' });
      if (removal.kind === 'named') report.kept.push({ kind: 'images', id: facts.imageId, reason: 'shared' });
      if (removal.kind === 'deleted') {
        report.images.ids.push(facts.imageId);
        report.images.reclaimedBytes += facts.sizeBytes;
      }
    }
  }

  /** One inspect of a berth image: its size, times, labels and other names. Undefined when it is gone. */
  async #imageFacts(image: { imageId: string; refs: string[] }, signal: AbortSignal | undefined): Promise<BerthImageFacts | undefined> {
    let inspected;
    try {
      inspected = await this.#engine.inspectImage(image.imageId, { signal });
    } catch (error) {
      if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return undefined;
      throw error;
    }
    const reported = this.#images?.lastUsedAt?.(image.imageId);
    const lastUsedAtMs =
      reported instanceof Date ? reported.getTime() : typeof reported === 'number' ? reported : (inspected.lastTagTime ?? inspected.createdAt).getTime();
    return {
      imageId: inspected.id,
      refs: image.refs,
      sizeBytes: inspected.sizeBytes,
      createdAtMs: inspected.createdAt.getTime(),
      lastUsedAtMs,
      labels: inspected.labels,
      repoTags: inspected.repoTags,
      repoDigests: inspected.repoDigests,
      shared: isSharedImage(image.refs, inspected.repoTags),
    };
  }

  /**
   * Removes the image by the one removal rule (`removeBerthImage`: berth's names, then the image if
   * nobody else names it; never forced) and records what became of it: a failure in `failed`, an
   * untag or deletion as an event.
   */
  async #removeImage(
    image: BerthImageFacts,
    failed: Array<{ kind: PruneKind; id: string; error: BerthError }>,
    cause: PruneRemovedEvent['cause'],
  ): Promise<ImageRemoval | undefined> {
    let removal: ImageRemoval;
    try {
      removal = await removeBerthImage(this.#engine, image);
    } catch (error) {
      failed.push({ kind: 'images', id: image.imageId, error: asBerthError(error) });
      return undefined;
    }
    const deleted = removal.kind === 'deleted';
    if (deleted || removal.untagged.length > 0) {
      this.#emit({ kind: 'images', id: image.imageId, reclaimedBytes: deleted ? image.sizeBytes : 0, untagged: removal.untagged, cause });
    }
    return removal;
  }

  #emit(event: PruneRemovedEvent): void {
    this.#events.emit('removed', event);
    if (PRUNE_CHANNEL.hasSubscribers) PRUNE_CHANNEL.publish({ type: 'removed', ...event });
  }
}

interface PruneRun {
  filters: PruneFilters;
  dryRun: boolean;
  signal: AbortSignal | undefined;
  report: PruneReport;
  /** The groups (`groupKey`) that still have a container: listed once, when another owner's group network or volume is first judged. */
  occupiedGroups: ReadonlySet<string> | undefined;
  /** The owner judge of this prune, made when first needed. */
  judge?: OwnerJudge;
}

/** Task containers first, infrastructure containers last. */
function infraLast(rows: readonly ContainerSummary[]): ContainerSummary[] {
  return [...rows.filter((row) => !isInfraContainer(row.labels)), ...rows.filter((row) => isInfraContainer(row.labels))];
}

function parseKinds(kinds: readonly PruneKind[] | undefined): ReadonlySet<PruneKind> {
  if (kinds === undefined) return new Set(PRUNE_KINDS);
  const unknown = kinds.filter((kind) => !(PRUNE_KINDS as readonly string[]).includes(kind));
  if (unknown.length > 0) throw new ValidationError([{ field: 'kinds', rule: `unknown kind ${unknown.map((k) => `"${k}"`).join(', ')}; accepted: ${PRUNE_KINDS.join(', ')}` }]);
  return new Set(kinds);
}

/** An engine failure that stopped a prune, carrying what it had removed before. */
function partialFailure(error: unknown, report: PruneReport): BerthError {
  const cause = asBerthError(error);
  return new BerthError(cause.code, `prune stopped: ${cause.message}`, { cause, retryable: cause.retryable, context: { ...cause.context, partialReport: report } });
}
