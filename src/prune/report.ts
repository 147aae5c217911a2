import { PRUNE_CHANNEL } from '../common/diagnostics.js';
import type { BerthError } from '../common/errors.js';

/** The kinds of object a prune removes, in the order it removes them. */
export const PRUNE_KINDS = Object.freeze(['containers', 'networks', 'volumes', 'images'] as const);
export type PruneKind = (typeof PRUNE_KINDS)[number];

/** What a prune removed of one kind (in a dry run: would remove). */
export interface PrunedKind {
  /** Container ids, network ids, volume names, image ids. */
  ids: string[];
  /**
   * Space freed, in bytes: containers' writable layers, deleted images' sizes (layers shared with
   * images that remain are counted in full, as an estimate), volumes' sizes when the engine reports
   * them. Networks free none.
   */
  reclaimedBytes: number;
}

/** Networks and volumes: their names too (a network's id says little; a volume's id is its name). */
export interface PrunedNamedKind extends PrunedKind {
  /** The names, in the order of `ids`. */
  names: string[];
}

export interface PrunedImages extends PrunedKind {
  /** Names berth untagged; an image goes (and is listed in `ids`) with its last name. */
  untagged: string[];
}

/** An object the prune left because something still uses it. */
export interface KeptObject {
  kind: PruneKind;
  id: string;
  reason:
    /** A container whose task is live. */
    | 'live-task'
    /** A warm pool's container that the owner's pools know (being made, idle, or serving a task). */
    | 'live-pool'
    /** A group's infrastructure container (stopped), network or shared volume, whose group is live. */
    | 'live-group'
    /** A container whose owner process (a `berth run`, a library driver) still runs. */
    | 'live-owner'
    /**
     * A container whose owner process is gone, a running infrastructure container of a group that is
     * not live, or another owner's group network or volume whose group has no container left, younger
     * than the orphan grace period: a later prune removes it.
     */
    | 'grace'
    /** The engine refused: a container uses the image, volume or network (or, for another owner's group network or volume, a container of its group is still there). */
    | 'in-use'
    /** A held image. */
    | 'held'
    /** An image someone else names too. */
    | 'shared'
    /** An image on the exempt list. */
    | 'exempt';
}

export interface PruneReport {
  containers: PrunedKind;
  networks: PrunedNamedKind;
  volumes: PrunedNamedKind;
  images: PrunedImages;
  /** Objects that matched but were kept, and why. */
  kept: KeptObject[];
  /** Removals that failed; the objects are still there. */
  failed: Array<{ kind: PruneKind; id: string; error: BerthError }>;
  dryRun: boolean;
  /** Whether the caller's signal stopped the prune before it was through; what it removed until then is reported. */
  cancelled: boolean;
  /** The filters in force, in CLI form. */
  filters: string[];
  startedAt: Date;
  durationMs: number;
}

/** One image the budget removed (in a dry run: would remove). */
export interface BudgetRemoval {
  imageId: string;
  refs: string[];
  sizeBytes: number;
  lastUsedAt: Date;
}

export interface ImageBudgetReport {
  budgetBytes: number;
  /** The size of the images berth pulled and nobody holds, before and after. */
  unheldBytesBefore: number;
  unheldBytesAfter: number;
  /** Least recently used first. */
  removed: BudgetRemoval[];
  /** Names untagged along the way. */
  untagged: string[];
  reclaimedBytes: number;
  /** Whether the unheld images now fit the budget. False when exemptions, images in use or the limits below stopped it. */
  withinBudget: boolean;
  /** Whether it stopped at the per-call removal limit with images still over budget. */
  limitReached: boolean;
  kept: KeptObject[];
  failed: Array<{ kind: PruneKind; id: string; error: BerthError }>;
  dryRun: boolean;
  cancelled: boolean;
}

/** One object removed, for the agent's event stream and metrics. Not sent in a dry run. */
export interface PruneRemovedEvent {
  kind: PruneKind;
  id: string;
  reclaimedBytes: number;
  /** For images: the names untagged. */
  untagged?: string[];
  /** What removed it: a prune, or the image budget. */
  cause: 'prune' | 'image-budget';
}

/** Events of a Pruner (`pruner.on(type, listener)`): each object removed by a prune or the image budget (never in a dry run). */
export interface PrunerEvents {
  removed: PruneRemovedEvent;
}

/** `node:diagnostics_channel` on which the pruner publishes `{ type: 'removed', ...event }`. */
export const PRUNE_EVENTS_CHANNEL = PRUNE_CHANNEL;

export function emptyPruneReport(dryRun: boolean, filters: string[], startedAt: Date): PruneReport {
  const kind = (): PrunedKind => ({ ids: [], reclaimedBytes: 0 });
  return {
    containers: kind(),
    networks: { ...kind(), names: [] },
    volumes: { ...kind(), names: [] },
    images: { ...kind(), untagged: [] },
    kept: [],
    failed: [],
    dryRun,
    cancelled: false,
    filters,
    startedAt,
    durationMs: 0,
  };
}
