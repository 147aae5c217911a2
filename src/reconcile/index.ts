/** The dangling-container reconciler: removes running containers of this owner that nothing tracks, and orphans whose owner process is gone. */
export {
  DanglingReconciler,
  type DanglingReconcilerInit,
  type ReconcileEngine,
  type ReconcilerState,
  type SweepOptions,
} from './reconciler.js';
export { createdAtUpperBoundMs, decideDangling, isTracked, type DanglingContainer, type DanglingDecision, type TrackedSnapshot } from './decide.js';
export {
  RECONCILE_EVENTS_CHANNEL,
  type DanglingContainerRemovedEvent,
  type OrphanedContainerRemovedEvent,
  type OrphanSweepResult,
  type ReconcilerEvents,
  type RemovalTally,
  type ScheduledSweepOutcome,
  type SweepResult,
} from './events.js';
export {
  decideOrphans,
  judgeOrphan,
  ORPHAN_CANDIDATE_LABELS,
  type OrphanDecision,
  type OrphanSkipCounts,
  type OrphanedContainer,
  type OwnerJudge,
  type OrphanJudgement,
} from './orphans.js';
export {
  MINIMUM_RECONCILE_PERIOD_MS,
  resolveDanglingReconcilerOptions,
  type DanglingReconcilerOptions,
  type ResolvedDanglingReconcilerOptions,
} from './options.js';
