import { RECONCILE_CHANNEL } from '../common/diagnostics.js';
import type { BerthError } from '../common/errors.js';
import type { DanglingContainer } from './decide.js';
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

/** What one sweep did: its dangling containers (the tally), and its orphans. */
export interface SweepResult extends RemovalTally<DanglingContainer> {
  dryRun: boolean;
  /** Candidates spared because the driver or the agent tracks them. */
  skippedTracked: number;
  /** Candidates spared because they are younger than the creation grace period. */
  skippedGrace: number;
  /** Candidates the engine listed (berth's, this owner's, running). */
  listed: number;
  /** Orphans: what the sweep did with containers whose owner process is gone. */
  orphans: OrphanSweepResult;
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
 * Events of a DanglingReconciler (`reconciler.on(type, listener)`): each dangling container and
 * each orphan removed (never in a dry run), and the outcome of each scheduled sweep (a dry run's
 * `wouldRemove` lists are in it).
 */
export interface ReconcilerEvents {
  removed: DanglingContainerRemovedEvent;
  'orphan-removed': OrphanedContainerRemovedEvent;
  sweep: ScheduledSweepOutcome;
}

/**
 * `node:diagnostics_channel` on which the reconciler publishes `{ type: 'removed', ...event }`,
 * `{ type: 'orphan-removed', ...event }` and `{ type: 'sweep', outcome }`, for observers that hold
 * no reference to it.
 */
export const RECONCILE_EVENTS_CHANNEL = RECONCILE_CHANNEL;
