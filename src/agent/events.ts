import { Events, type Unsubscribe } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import type { ImageCoordinator } from '../images/index.js';
import type { DanglingContainer, DanglingReconciler, OrphanedContainer } from '../reconcile/index.js';
import type { StoredEndState, TaskState } from '../state/tasks.js';

/** Why retention removed a task: it ended too long ago, too many ended tasks are kept, or the disk is above its watermark. */
export type ExpiryReason = 'age' | 'count' | 'disk';

/** Everything the agent announces on its event stream (`GET /v1/events`). */
export type AgentEvent =
  | { type: 'task.state'; taskId: string; state: TaskState; endState?: StoredEndState; at: string }
  | { type: 'image.pull'; phase: 'started' | 'shared' | 'finished' | 'failed'; image: string; imageId?: string; error?: string; at: string }
  | { type: 'image.removed'; imageId: string; at: string }
  | {
      type: 'container.reconciled';
      containerId: string;
      taskId?: string;
      /** `dangling`: this agent's, untracked. `orphaned`: a short-lived owner's (`berth run`), whose owner process is gone. */
      reason?: 'dangling' | 'orphaned';
      /** For an orphan: the owner id it carried (`cli` for `berth run`) and its owner's pid. */
      ownerId?: string;
      ownerPid?: number;
      dryRun: boolean;
      at: string;
    }
  | { type: 'prune'; removed: Record<string, number>; reclaimedBytes: number; at: string }
  /** Retention removed an ended task for good (record and output): `reason` says which limit it passed; `endedAt` is when it ended. */
  | { type: 'task.expired'; taskId: string; reason: ExpiryReason; endedAt: string; at: string };

/**
 * Distributes agent events to subscribers (the SSE endpoint, metrics), with the library's one event
 * mechanism: a subscriber that throws is skipped, never thrown into the supervisor that published.
 */
export class AgentEvents {
  readonly #events = new Events<{ event: AgentEvent }>();

  /** Publishes an event; `at` is filled in when omitted. */
  emit(event: DistributiveOmit<AgentEvent, 'at'> & { at?: string }): void {
    this.#events.emit('event', { ...event, at: event.at ?? new Date().toISOString() } as AgentEvent);
  }

  /** Calls `listener` with every later event; returns its unsubscribe. */
  subscribe(listener: (event: AgentEvent) => void): Unsubscribe {
    return this.#events.on('event', listener);
  }
}

type ReconciledEvent = DistributiveOmit<Extract<AgentEvent, { type: 'container.reconciled' }>, 'at'>;

/** The event of a dangling container the reconciler removed (or, in a dry run, would remove). */
function danglingEvent(container: DanglingContainer, dryRun: boolean): ReconciledEvent {
  return { type: 'container.reconciled', containerId: container.id, ...(container.taskId ? { taskId: container.taskId } : {}), reason: 'dangling', dryRun };
}

/** The event of an orphan the reconciler removed (or, in a dry run, would remove). */
function orphanEvent(container: OrphanedContainer, dryRun: boolean): ReconciledEvent {
  return {
    type: 'container.reconciled',
    containerId: container.id,
    ...(container.taskId ? { taskId: container.taskId } : {}),
    reason: 'orphaned',
    ...(container.ownerId ? { ownerId: container.ownerId } : {}),
    ownerPid: container.ownerPid,
    dryRun,
  };
}

/**
 * The agent's event stream is a projection of the library's events onto its wire format: each
 * library component is subscribed here, in one place, with its own `on` (no adapter callbacks).
 */
export const announce = {
  /** Pulls and removals of the image coordinator. */
  images(images: Pick<ImageCoordinator, 'on'>, events: AgentEvents): Unsubscribe[] {
    return [
      images.on('pull-started', (e) => events.emit({ type: 'image.pull', phase: 'started', image: e.ref })),
      images.on('pull-shared', (e) => events.emit({ type: 'image.pull', phase: 'shared', image: e.ref })),
      images.on('pull-finished', (e) =>
        events.emit({ type: 'image.pull', phase: e.error ? 'failed' : 'finished', image: e.ref, ...(e.imageId ? { imageId: e.imageId } : {}), ...(e.error ? { error: e.error.message } : {}) }),
      ),
      images.on('image-removed', (e) => events.emit({ type: 'image.removed', imageId: e.imageId })),
    ];
  },
  /** Containers the reconciler removed; in a dry run, those it would remove (logged too, as nothing else shows them). */
  reconciler(reconciler: Pick<DanglingReconciler, 'on'>, events: AgentEvents, logger: Logger): Unsubscribe[] {
    return [
      reconciler.on('removed', (container) => events.emit(danglingEvent(container, false))),
      reconciler.on('orphan-removed', (container) => events.emit(orphanEvent(container, false))),
      reconciler.on('sweep', (outcome) => {
        if (outcome.kind !== 'swept') return;
        for (const container of outcome.result.wouldRemove) {
          logger.info({ containerId: container.id, taskId: container.taskId }, 'dry run: the reconciler would remove this dangling container');
          events.emit(danglingEvent(container, true));
        }
        for (const container of outcome.result.orphans.wouldRemove) events.emit(orphanEvent(container, true));
      }),
    ];
  },
};

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
