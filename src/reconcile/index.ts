/**
 * The dangling-container reconciler: removes running containers of this owner that nothing tracks
 * (a group's infrastructure container once its group is not live), orphans whose owner process is
 * gone, and groups' networks and shared volumes that are orphans.
 */
export {
  DanglingReconciler,
  type DanglingReconcilerInit,
  type ReconcileEngine,
  type ReconcilerState,
  type SweepOptions,
} from './reconciler.js';
export { createdAtUpperBoundMs, decideDangling, isTracked, type DanglingContainer, type DanglingDecision, type TrackedSnapshot } from './decide.js';
export {
  decideGroupResources,
  GROUP_CONTAINER_LABELS,
  groupRoleLabels,
  isInfraContainer,
  judgeGroupResource,
  type GroupResource,
  type GroupResourceContext,
  type GroupResourceDecision,
  type GroupResourceJudgement,
  type GroupResourceReason,
  type GroupResourceSkipCounts,
  type OrphanedGroupResource,
} from './groups.js';
export {
  RECONCILE_EVENTS_CHANNEL,
  type DanglingContainerRemovedEvent,
  type GroupResourceRemovedEvent,
  type GroupResourceSweepResult,
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
