/**
 * The reconciler's decision, kept pure: given the candidates the engine listed (already filtered by
 * berth's labels, this owner and status running), which are dangling and which are spared. A group's
 * infrastructure container runs no task: it is tracked while its group is live (see groups.ts).
 */
import { LABELS, ROLES } from '../common/labels.js';
import type { ContainerSummary } from '../engine/types.js';

/** A container the reconciler judged dangling: berth's, this owner's, running, untracked, past its grace. */
export interface DanglingContainer {
  id: string;
  /** The container's name, without the leading slash. */
  name: string;
  /** The task id in its labels, if any. */
  taskId: string | undefined;
  /** The group in its labels, for a group's infrastructure container or task container. */
  groupId?: string;
  /** `infra` for a group's infrastructure container (whose group is not live), `pool` for a warm pool's container its pools no longer know; absent for a task container. */
  role?: typeof ROLES.infra | typeof ROLES.pool;
  /** For a pool's container: its pool. */
  pool?: string;
  image: string;
  /** The creation time as judged (see {@link createdAtUpperBoundMs}). */
  createdAt: Date;
  /** How old it was judged at the sweep, in ms. */
  ageMs: number;
}

/** What the reconciler knows of the containers that are tracked (alive in the driver or the agent's records). */
export interface TrackedSnapshot {
  containerIds: ReadonlySet<string>;
  taskIds: ReadonlySet<string>;
  /** This owner's live groups: their infrastructure containers are tracked. Default none. */
  liveGroupIds?: ReadonlySet<string>;
}

export interface DanglingDecision {
  dangling: DanglingContainer[];
  /** Task containers spared because they are tracked. */
  skippedTracked: number;
  /** Infrastructure containers spared because their group is live. */
  skippedLiveGroup: number;
  skippedGrace: number;
}

/**
 * The engine's list reports creation in whole seconds, truncated. Judging by the end of that
 * second means a container is never taken for older than it is, so the grace period always holds
 * in full (a 1 s error is nothing against a 5 min grace, but it matters to a 1 s grace in a test).
 */
export function createdAtUpperBoundMs(container: Pick<ContainerSummary, 'createdAt'>): number {
  const ms = container.createdAt.getTime();
  return ms % 1000 === 0 ? ms + 999 : ms;
}

/**
 * Whether the container is tracked: by its id (full, or the 12-character short form) or by its task
 * id label; a group's infrastructure container, by its group being live (it has no task of its own).
 */
export function isTracked(container: Pick<ContainerSummary, 'id' | 'labels'>, tracked: TrackedSnapshot): boolean {
  if (tracked.containerIds.has(container.id) || tracked.containerIds.has(container.id.slice(0, 12))) return true;
  if (container.labels[LABELS.role] === ROLES.infra) {
    const groupId = container.labels[LABELS.groupId];
    return groupId !== undefined && (tracked.liveGroupIds?.has(groupId) ?? false);
  }
  const taskId = container.labels[LABELS.taskId];
  return taskId !== undefined && tracked.taskIds.has(taskId);
}

/**
 * Splits the candidates into dangling ones and the ones spared because they are tracked or too
 * young. A tracked container counts as tracked even inside its grace period.
 */
export function decideDangling(
  candidates: readonly ContainerSummary[],
  tracked: TrackedSnapshot,
  nowMs: number,
  creationGraceMs: number,
): DanglingDecision {
  const decision: DanglingDecision = { dangling: [], skippedTracked: 0, skippedLiveGroup: 0, skippedGrace: 0 };
  for (const container of candidates) {
    const infra = container.labels[LABELS.role] === ROLES.infra;
    if (isTracked(container, tracked)) {
      if (infra) decision.skippedLiveGroup++;
      else decision.skippedTracked++;
      continue;
    }
    const createdMs = createdAtUpperBoundMs(container);
    const ageMs = nowMs - createdMs;
    if (ageMs < creationGraceMs) {
      decision.skippedGrace++;
      continue;
    }
    decision.dangling.push({
      id: container.id,
      name: container.names[0] ?? container.id,
      taskId: container.labels[LABELS.taskId],
      ...groupFields(container.labels),
      image: container.image,
      createdAt: new Date(createdMs),
      ageMs,
    });
  }
  return decision;
}

/**
 * The group fields of a dangling or orphaned container: its group id, and `role: 'infra'` for an
 * infrastructure container; for a warm pool's container, `role: 'pool'` and its pool.
 */
export function groupFields(labels: Readonly<Record<string, string>>): { groupId?: string; role?: typeof ROLES.infra | typeof ROLES.pool; pool?: string } {
  const groupId = labels[LABELS.groupId];
  const role = labels[LABELS.role];
  const pool = labels[LABELS.pool];
  return {
    ...(groupId === undefined ? {} : { groupId }),
    ...(role === ROLES.infra ? { role: ROLES.infra } : {}),
    ...(role === ROLES.pool ? { role: ROLES.pool, ...(pool === undefined ? {} : { pool }) } : {}),
  };
}
