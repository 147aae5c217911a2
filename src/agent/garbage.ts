import { BerthError, codeOf, isBerthError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { setLongInterval, type LongTimer } from '../common/timers.js';
import type { Engine } from '../engine/engine.js';
import type { ImageCoordinator } from '../images/index.js';
import { Pruner, type ImageBudgetReport, type PruneOptions, type PruneReport } from '../prune/index.js';
import { DanglingReconciler } from '../reconcile/index.js';
import type { Store } from '../state/store.js';
import { hasEnded, UNENDED_STATES } from '../state/tasks.js';
import type { AgentConfig } from './config.js';
import { announce, type AgentEvents } from './events.js';

export interface GarbageInit {
  engine: Engine;
  store: Store;
  images: ImageCoordinator;
  events: AgentEvents;
  logger: Logger;
  agentId: string;
  /** The configuration at start: the reconciler's period and the prune schedule are fixed until a restart. */
  config: AgentConfig;
  /** The configuration in force now, for the image budget and exemptions. */
  current: () => AgentConfig;
  /**
   * Ids of the agent's groups that have not ended, asked at every reconciler sweep (and again before
   * each removal) and by every prune: a live group's infrastructure container, network and shared
   * volume are never removed. Omitted, the agent has no live group, and every infrastructure
   * container, group network and group volume of this agent is removed as an orphan (the reconciler
   * after `reconcile.creationGrace`, prune at once, a running infrastructure container after
   * `reconcile.orphanGrace`).
   */
  liveGroupIds?: () => Iterable<string>;
  /**
   * The warm pools' containers this agent knows (driver.pools.containerIds(): being made, idle,
   * frozen, serving a task), asked at every sweep and prune: they are left alone. Any other pool
   * container of this agent is dangling (the reconciler removes it, in any state, past
   * `reconcile.creationGrace`; prune removes it once stopped). Omitted: the agent has no pools.
   */
  livePoolContainerIds?: () => ReadonlySet<string>;
}

/**
 * The agent's garbage collection: the dangling-container reconciler, prune on request or on a
 * schedule, and the image cache budget. Between them, nothing berth created outlives its use.
 */
export class AgentGarbage {
  readonly reconciler: DanglingReconciler;
  readonly pruner: Pruner;
  readonly #init: GarbageInit;
  #scheduleTimer: LongTimer | undefined;
  #scheduled: Promise<void> | undefined;
  #budgetTimer: NodeJS.Timeout | undefined;
  #started = false;
  #budgetCheck: Promise<void> | undefined;
  #unsubscribe: Array<() => void> = [];

  constructor(init: GarbageInit) {
    this.#init = init;
    const { engine, store, images, events, logger, agentId, config, liveGroupIds, livePoolContainerIds } = init;
    const liveTaskIds = (): string[] => store.tasks.list({ state: UNENDED_STATES }).map((task) => task.id);
    // A warm task's container is a pool's, labelled with no task id: it is tracked by its id, as the pools' own are.
    const warmTaskContainerIds = (): string[] =>
      store.tasks.list({ state: UNENDED_STATES }).flatMap((task) => (task.start?.path === 'warm' && task.containerId !== undefined ? [task.containerId] : []));
    this.reconciler = new DanglingReconciler({
      engine,
      ownerId: agentId,
      trackedTaskIds: liveTaskIds,
      trackedContainerIds: warmTaskContainerIds,
      ...(livePoolContainerIds === undefined ? {} : { livePoolContainerIds }),
      ...(liveGroupIds === undefined ? {} : { liveGroupIds }),
      options: {
        enabled: config.reconcile.enabled,
        period: config.reconcile.periodMs,
        creationGrace: config.reconcile.creationGraceMs,
        dryRun: config.reconcile.dryRun,
        // Its own grace: agents with a short creation grace (tests on a shared engine) must not reap the orphans others are still looking at.
        orphanGrace: config.reconcile.orphanGraceMs,
      },
      logger,
    });
    announce.reconciler(this.reconciler, events, logger);
    this.pruner = new Pruner({
      engine,
      ownerId: agentId,
      isTaskLive: (taskId) => {
        const state = store.tasks.get(taskId)?.state;
        return state !== undefined && !hasEnded(state);
      },
      ...(liveGroupIds === undefined ? {} : { isGroupLive: (groupId: string) => [...liveGroupIds()].includes(groupId) }),
      isPoolContainerLive: (containerId) => (livePoolContainerIds?.().has(containerId) ?? false) || warmTaskContainerIds().includes(containerId),
      images: {
        // Only images berth pulled: one that was on the host before is someone else's.
        berthImages: () => images.snapshot().images.filter((image) => image.pulledByBerth).map((image) => ({ imageId: image.imageId, refs: image.refs })),
        heldImageIds: () => images.snapshot().images.filter((image) => image.holders.length > 0).map((image) => image.imageId),
      },
      options: { orphanGrace: config.reconcile.orphanGraceMs },
      logger,
    });
  }

  /** Starts the reconciler (its first sweep waits for recovery) and the prune schedule, if any. */
  start(): void {
    this.#started = true;
    this.reconciler.start();
    // New images grow the cache: check the budget shortly after each pull (coalesced).
    this.#unsubscribe.push(this.#init.images.on('pull-finished', () => this.#scheduleBudgetCheck()));
    this.#scheduleBudgetCheck();
    const scheduleMs = this.#init.config.prune.scheduleMs;
    if (scheduleMs !== undefined) {
      // A long interval: a schedule past Node's 24.8-day timer range (a monthly prune) must not fire every millisecond.
      this.#scheduleTimer = setLongInterval(() => {
        this.#scheduled ??= this.#scheduledPrune().finally(() => (this.#scheduled = undefined));
      }, scheduleMs).unref();
    }
  }

  /** A prune on request; a second one while one runs is refused (BERTH_PRUNE_RUNNING). */
  async prune(options: PruneOptions): Promise<PruneReport> {
    // Before recovery the image holders are not restored yet: a prune could take a held image.
    if (!this.#started) throw new BerthError('BERTH_AGENT_UNAVAILABLE', 'the agent is starting (recovering its tasks) and cannot prune yet; try again shortly');
    const report = await this.pruner.prune(options);
    if (!report.dryRun) this.#announce(report);
    return report;
  }

  /** Removes least-recently-used unheld images while they exceed the configured budget. */
  async enforceImageBudget(): Promise<ImageBudgetReport | undefined> {
    const config = this.#init.current();
    if (config.prune.imageBudgetBytes === undefined) return undefined;
    return this.pruner.enforceImageBudget({ budgetBytes: config.prune.imageBudgetBytes, exempt: [...config.prune.exemptImages] });
  }

  async close(): Promise<void> {
    this.#scheduleTimer?.clear();
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
    clearTimeout(this.#budgetTimer);
    await this.reconciler.stop();
    await Promise.all([this.#scheduled, this.#budgetCheck]);
  }

  #scheduleBudgetCheck(): void {
    if (this.#init.current().prune.imageBudgetBytes === undefined || this.#budgetTimer) return;
    this.#budgetTimer = setTimeout(() => {
      this.#budgetTimer = undefined;
      this.#budgetCheck ??= this.enforceImageBudget()
        .then((report) => {
          if (report && report.removed.length > 0) this.#init.logger.info({ removed: report.removed.length, reclaimedBytes: report.reclaimedBytes }, 'image budget enforced');
        })
        .catch((error: unknown) => {
          if (!isBerthError(error, 'BERTH_PRUNE_RUNNING')) this.#init.logger.warn({ code: codeOf(error) }, 'image budget check failed');
        })
        .finally(() => (this.#budgetCheck = undefined));
    }, 1000);
    this.#budgetTimer.unref();
  }

  async #scheduledPrune(): Promise<void> {
    try {
      const report = await this.prune({});
      const budget = await this.enforceImageBudget();
      this.#init.logger.info(
        { containers: report.containers.ids.length, images: report.images.ids.length, networks: report.networks.ids.length, volumes: report.volumes.ids.length, budgetRemoved: budget?.removed.length ?? 0 },
        'scheduled prune',
      );
    } catch (error) {
      // A prune already running (on request) is not a failure of the schedule.
      if (!isBerthError(error, 'BERTH_PRUNE_RUNNING')) this.#init.logger.warn({ code: codeOf(error) }, 'scheduled prune failed');
    }
  }

  #announce(report: PruneReport): void {
    this.#init.events.emit({
      type: 'prune',
      removed: { containers: report.containers.ids.length, images: report.images.ids.length, networks: report.networks.ids.length, volumes: report.volumes.ids.length },
      reclaimedBytes: report.containers.reclaimedBytes + report.images.reclaimedBytes + report.networks.reclaimedBytes + report.volumes.reclaimedBytes,
    });
  }
}
