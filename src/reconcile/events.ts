import { RECONCILE_CHANNEL } from '../common/diagnostics.js';
import type { BerthError } from '../common/errors.js';
import type { DanglingContainer } from './decide.js';
import type { GroupResourceSkipCounts, OrphanedGroupResource } from './groups.js';
import type { OrphanedContainer, OrphanSkipCounts } from './orphans.js';

/** One dangling container the reconciler removed (never sent for a dry run). */
export interface DanglingContainerRemovedEvent extends DanglingContainer {
  /** The owner id the container carried: this reconciler's. */
  ownerId: string;
  removedAt: Date;
}

/** One orphan the reconciler removed: a container whose owner process is gone (never sent for a dry run). */
export interface OrphanedContainerRemovedEvent extends OrphanedContainer {
  removedAt: Date;
}

/** One group network or shared volume the reconciler removed (never sent for a dry run). */
export interface GroupResourceRemovedEvent extends OrphanedGroupResource {
  removedAt: Date;
}

/**
 * What a sweep's removals of one kind came to. The reconciler tallies each removal into one of
 * these: dangling containers into the `SweepResult`, orphans into its `orphans`.
 */
export interface RemovalTally<Container> {
  /** Containers removed by this sweep. */
  removed: Container[];
  /** In a dry run, the containers a real sweep would remove; otherwise empty. */
  wouldRemove: Container[];
  /** Containers whose removal failed; the next sweep tries again. */
  failed: Array<{ container: Container; error: BerthError }>;
  /** Containers that were gone by the time of their removal (someone else removed them). */
  alreadyGone: number;
}

/** What one sweep did with orphans: containers of short-lived owners on this host (any owner id). */
export interface OrphanSweepResult extends RemovalTally<OrphanedContainer>, OrphanSkipCounts {
  /** Candidates the engine listed (berth's, with owner-process labels); 0 when orphans are off. */
  listed: number;
}

/**
 * What one sweep did with groups' networks and shared volumes (after its container removals, so
 * that a network or volume goes only once the containers that used it are gone).
 */
export interface GroupResourceSweepResult extends RemovalTally<OrphanedGroupResource>, GroupResourceSkipCounts {
  /**
   * Orphans the engine would not remove because they are in use: a network with endpoints (a
   * container not of berth's joined it, say), a volume a container mounts. Left for the next sweep.
   */
  inUse: OrphanedGroupResource[];
  /** Networks and volumes the engine listed (berth's, with a group role). */
  listed: number;
}

/** What one sweep did: its dangling containers (the tally), its orphans, and groups' networks and volumes. */
export interface SweepResult extends RemovalTally<DanglingContainer> {
  dryRun: boolean;
  /** Task containers spared because the driver or the agent tracks them. */
  skippedTracked: number;
  /** Infrastructure containers spared because their group is live. */
  skippedLiveGroup: number;
  /** Candidates spared because they are younger than the creation grace period. */
  skippedGrace: number;
  /** Candidates the engine listed (berth's, this owner's, running). */
  listed: number;
  /** Orphans: what the sweep did with containers whose owner process is gone. */
  orphans: OrphanSweepResult;
  /** Groups' networks and shared volumes whose group has ended or whose owner is gone. */
  groupResources: GroupResourceSweepResult;
  /** Whether the sweep was cut short (stop(), or the caller's signal) before every removal was tried. */
  cancelled: boolean;
  startedAt: Date;
  durationMs: number;
}

/** What a scheduled sweep came to: the agent turns it into metrics. */
export type ScheduledSweepOutcome =
  | { kind: 'swept'; result: SweepResult }
  /** The engine did not answer its health check: no sweep ran. */
  | { kind: 'skipped'; reason: 'engine-unhealthy' }
  /** The sweep itself failed (its list call). */
  | { kind: 'failed'; error: BerthError };

/**
 * Events of a DanglingReconciler (`reconciler.on(type, listener)`): each dangling container (a
 * group's infrastructure container included), each orphan and each group network or volume removed
 * (never in a dry run), and the outcome of each scheduled sweep (a dry run's `wouldRemove` lists
 * are in it).
 */
export interface ReconcilerEvents {
  removed: DanglingContainerRemovedEvent;
  'orphan-removed': OrphanedContainerRemovedEvent;
  'group-resource-removed': GroupResourceRemovedEvent;
  sweep: ScheduledSweepOutcome;
}

/**
 * `node:diagnostics_channel` on which the reconciler publishes `{ type: 'removed', ...event }`,
 * `{ type: 'orphan-removed', ...event }`, `{ type: 'group-resource-removed', ...event }` and
 * `{ type: 'sweep', outcome }`, for observers that hold no reference to it.
 */
export const RECONCILE_EVENTS_CHANNEL = RECONCILE_CHANNEL;
