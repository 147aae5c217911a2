import { BerthError } from '../common/errors.js';
import { Events, type Unsubscribe } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import type { ImageCoordinator } from '../images/index.js';
import type { DanglingContainer, DanglingReconciler, OrphanedContainer, OrphanedGroupResource } from '../reconcile/index.js';
import type { EventLogRepository } from '../state/events.js';
import type { StoredEndState, TaskHealth, TaskState } from '../state/tasks.js';
import type { GroupState } from '../state/groups.js';
import type { GroupEnd } from '../groups/lifecycle.js';

/** Why retention removed a task: it ended too long ago, too many ended tasks are kept, or the disk is above its watermark. */
export type ExpiryReason = 'age' | 'count' | 'disk';

/** Everything the agent announces on its event stream (`GET /v1/events`), each with its id. */
export type AgentEvent = AgentEventBody & {
  /**
   * Increasing, never reused (kept in the event log across restarts): a client that lost its stream
   * resumes after the last id it saw. Absent only when the event could not be logged (a full disk).
   */
  id?: number;
};

/** How a task started, as the API shows it: `warm` (an exec in a container of `pool`) or `cold` (its own container, for `reason`). */
export interface TaskStartView {
  path: 'warm' | 'cold';
  /** The pool whose container it took (warm). */
  pool?: string;
  /** Why it started cold: no-pool, no-match, pool-empty, not-poolable, pool-failed. */
  reason?: string;
}

/** The view of a stored TaskStart (the exec id stays inside the agent). */
export function taskStartView(start: { readonly path: 'warm'; readonly pool: string } | { readonly path: 'cold'; readonly reason: string }): TaskStartView {
  return start.path === 'warm' ? { path: 'warm', pool: start.pool } : { path: 'cold', reason: start.reason };
}

/** An event as a component announces it. */
export type AgentEventBody =
  /** A task's state changed; its move to `running` says how it started (`start`: warm from a pool, or cold and why). */
  | { type: 'task.state'; taskId: string; state: TaskState; endState?: StoredEndState; start?: TaskStartView; at: string }
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
      /** For a group's container: its group; `role: "infra"` for the group's infrastructure container (dangling: its group is not live). */
      groupId?: string;
      /** `infra`: a group's infrastructure container; `pool`: a warm pool's container that the agent's pools do not know (left by an earlier run, or made by hand). */
      role?: 'infra' | 'pool';
      /** For a pool's container: its pool. */
      pool?: string;
      dryRun: boolean;
      at: string;
    }
  /**
   * A group's own network or shared volume the reconciler removed (or, in a dry run, would remove),
   * after the group's containers: `group-ended` (this agent's, and its group is not live),
   * `owner-gone` or `abandoned` (another owner's, with no container of its group left).
   */
  | { type: 'network.reconciled'; networkId: string; network: string; groupId: string; ownerId: string; reason: OrphanedGroupResource['reason']; dryRun: boolean; at: string }
  | { type: 'volume.reconciled'; volume: string; groupId: string; ownerId: string; reason: OrphanedGroupResource['reason']; dryRun: boolean; at: string }
  | { type: 'prune'; removed: Record<string, number>; reclaimedBytes: number; at: string }
  /**
   * The restart policy restarts a task: attempt `attempt - 1` ended with `previousEnd`, and attempt
   * `attempt` starts after `delayMs`, at `restartAt` (a new container; the task stays one task).
   */
  | { type: 'task.restart'; taskId: string; attempt: number; delayMs: number; restartAt: string; previousEnd: StoredEndState; at: string }
  /**
   * A task's health status changed, as its container's health check reports it: `failingStreak`
   * and the last probe's exit code and output (its end, capped) come with it.
   */
  | { type: 'task.health'; taskId: string; status: TaskHealth['status']; failingStreak: number; exitCode?: number; output?: string; at: string }
  /** Retention removed an ended task for good (record and output): `reason` says which limit it passed; `endedAt` is when it ended. */
  | { type: 'task.expired'; taskId: string; reason: ExpiryReason; endedAt: string; at: string }
  /** A group's state changed (agent/groups.ts); `endState` once it ended. */
  | { type: 'group.state'; groupId: string; state: GroupState; endState?: GroupEnd; at: string }
  /** A group and its tasks were removed for good: by a client (`reason` absent) or by retention (`reason`: the limit it passed). */
  | { type: 'group.removed'; groupId: string; reason?: ExpiryReason; at: string };

/** Where events are kept for replay: the state's event log (see src/state/events.ts). */
export type EventLog = Pick<EventLogRepository, 'append' | 'after' | 'idBefore' | 'bounds' | 'trim'>;

/** How long and how many events are kept for clients that resume (`events.window`, `events.maxCount`). */
export interface EventWindow {
  readonly maxAgeMs: number;
  readonly maxCount: number;
}

/** Where a resumed stream starts: after an event id, or after a time. */
export type EventResume = { readonly afterId: number } | { readonly afterMs: number };

/** A page of a replay. */
const REPLAY_PAGE = 500;

/**
 * Distributes agent events to subscribers (the SSE endpoint, metrics), with the library's one event
 * mechanism: a subscriber that throws is skipped, never thrown into the supervisor that published.
 * With a log, each event gets its id there first, so a client can resume after it.
 */
export class AgentEvents {
  readonly #events = new Events<{ event: AgentEvent }>();
  readonly #log: EventLog | undefined;
  readonly #logger: Logger | undefined;
  #nextId = 1;
  #logFailing = false;

  constructor(init: { log?: EventLog; logger?: Logger } = {}) {
    this.#log = init.log;
    this.#logger = init.logger;
  }

  /** Publishes an event; `at` is filled in when omitted. */
  emit(event: DistributiveOmit<AgentEventBody, 'at'> & { at?: string }): void {
    const at = event.at ?? new Date().toISOString();
    const body = { ...event, at } as AgentEventBody;
    this.#events.emit('event', { id: this.#record(body), ...body });
  }

  /** Calls `listener` with every later event; returns its unsubscribe. */
  subscribe(listener: (event: AgentEvent) => void): Unsubscribe {
    return this.#events.on('event', listener);
  }

  /**
   * Where a replay from `resume` starts (the id it comes after), or BERTH_EVENTS_EXPIRED when events
   * after it were trimmed away: the client has missed events it can no longer get.
   */
  replayStart(resume: EventResume): number {
    if (!this.#log) throw new BerthError('BERTH_EVENTS_EXPIRED', 'this agent keeps no event log: events cannot be replayed');
    const bounds = this.#log.bounds();
    if ('afterId' in resume) {
      if (resume.afterId + 1 < bounds.firstKeptId) {
        throw new BerthError('BERTH_EVENTS_EXPIRED', `events after ${resume.afterId} are no longer kept: the oldest kept is ${bounds.firstKeptId}; read the current state (GET /v1/tasks) and subscribe again without Last-Event-ID`, {
          context: { afterId: resume.afterId, firstKeptId: bounds.firstKeptId },
        });
      }
      return Math.min(resume.afterId, bounds.lastId);
    }
    if (bounds.trimmedThroughMs !== undefined && resume.afterMs < bounds.trimmedThroughMs) {
      throw new BerthError('BERTH_EVENTS_EXPIRED', `events since ${new Date(resume.afterMs).toISOString()} are no longer all kept: the oldest kept are from after ${new Date(bounds.trimmedThroughMs).toISOString()}`, {
        context: { afterMs: resume.afterMs, trimmedThroughMs: bounds.trimmedThroughMs },
      });
    }
    return this.#log.idBefore(resume.afterMs);
  }

  /**
   * Up to a page of the logged events after `id`, oldest first. BERTH_EVENTS_EXPIRED when events
   * right after `id` were trimmed while a slow replay was under way: the rest would skip them.
   */
  replayPage(afterId: number): AgentEvent[] {
    const firstKeptId = this.#log?.bounds().firstKeptId;
    if (firstKeptId !== undefined && afterId + 1 < firstKeptId) {
      throw new BerthError('BERTH_EVENTS_EXPIRED', `events after ${afterId} were trimmed during the replay: the oldest kept is ${firstKeptId}; read the current state (GET /v1/tasks) and subscribe again without Last-Event-ID`, {
        context: { afterId, firstKeptId },
      });
    }
    return (this.#log?.after(afterId, REPLAY_PAGE) ?? []).map((stored) => ({ ...(JSON.parse(stored.body) as AgentEventBody), id: stored.id }));
  }

  /** Drops the logged events outside the window; returns how many. A failure is logged, not thrown. */
  trim(window: EventWindow, nowMs: number = Date.now()): number {
    if (!this.#log) return 0;
    try {
      return this.#log.trim(nowMs - window.maxAgeMs, window.maxCount);
    } catch (error) {
      this.#logger?.warn({ err: error }, 'could not trim the event log; it is tried again at the next trim');
      return 0;
    }
  }

  #record(body: AgentEventBody): number | undefined {
    if (!this.#log) return this.#nextId++;
    try {
      const id = this.#log.append(Date.parse(body.at), JSON.stringify(body));
      if (this.#logFailing) this.#logger?.info({}, 'the event log takes events again');
      this.#logFailing = false;
      return id;
    } catch (error) {
      // The live stream goes on without an id: such an event cannot be resumed after, nothing else is lost.
      if (!this.#logFailing) this.#logger?.warn({ err: error }, 'could not log an event (it is sent live without an id); a client that resumes will miss it');
      this.#logFailing = true;
      return undefined;
    }
  }
}

type ReconciledEvent = DistributiveOmit<Extract<AgentEventBody, { type: 'container.reconciled' }>, 'at'>;

/** The event of a dangling container the reconciler removed (or, in a dry run, would remove). */
function danglingEvent(container: DanglingContainer, dryRun: boolean): ReconciledEvent {
  return { type: 'container.reconciled', containerId: container.id, ...(container.taskId ? { taskId: container.taskId } : {}), reason: 'dangling', ...groupOf(container), dryRun };
}

/** The group fields of a container's event, when it is a group's. */
function groupOf(container: { groupId?: string; role?: 'infra' | 'pool'; pool?: string }): { groupId?: string; role?: 'infra' | 'pool'; pool?: string } {
  return { ...(container.groupId ? { groupId: container.groupId } : {}), ...(container.role ? { role: container.role } : {}), ...(container.pool ? { pool: container.pool } : {}) };
}

/** The event of a group network or volume the reconciler removed (or, in a dry run, would remove). */
function groupResourceEvent(resource: OrphanedGroupResource, dryRun: boolean): DistributiveOmit<Extract<AgentEventBody, { type: 'network.reconciled' | 'volume.reconciled' }>, 'at'> {
  const common = { groupId: resource.groupId, ownerId: resource.ownerId, reason: resource.reason, dryRun };
  return resource.kind === 'network'
    ? { type: 'network.reconciled', networkId: resource.id, network: resource.name, ...common }
    : { type: 'volume.reconciled', volume: resource.name, ...common };
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
    ...groupOf(container),
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
  /** Containers, group networks and group volumes the reconciler removed; in a dry run, those it would remove (logged too, as nothing else shows them). */
  reconciler(reconciler: Pick<DanglingReconciler, 'on'>, events: AgentEvents, logger: Logger): Unsubscribe[] {
    return [
      reconciler.on('removed', (container) => events.emit(danglingEvent(container, false))),
      reconciler.on('orphan-removed', (container) => events.emit(orphanEvent(container, false))),
      reconciler.on('group-resource-removed', (resource) => events.emit(groupResourceEvent(resource, false))),
      reconciler.on('sweep', (outcome) => {
        if (outcome.kind !== 'swept') return;
        for (const container of outcome.result.wouldRemove) {
          logger.info({ containerId: container.id, taskId: container.taskId }, 'dry run: the reconciler would remove this dangling container');
          events.emit(danglingEvent(container, true));
        }
        for (const container of outcome.result.orphans.wouldRemove) events.emit(orphanEvent(container, true));
        for (const resource of outcome.result.groupResources.wouldRemove) events.emit(groupResourceEvent(resource, true));
      }),
    ];
  },
};

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
