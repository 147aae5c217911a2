/**
 * Groups' engine objects other than task containers: a group's infrastructure container (it owns
 * the group's network namespace), its shared volume and its own network, known by their labels
 * (`io.berth.role`, `io.berth.group-id`, `io.berth.owner-id`). The decisions here are pure: the
 * reconciler and prune list the candidates and pass what they know (which groups are live, which
 * groups still have containers, a judge of owner processes).
 *
 * An infrastructure container runs no task, so the task rules cannot judge it: while its group is
 * live it is left alone (as Nomad skips its pause containers), and once its group has ended (or is
 * unknown to its owner) it is an orphan. A group's network and volume follow the same rule for this
 * owner's groups. Another owner's group is not this owner's to know; its network or volume is an
 * orphan only once no container of its group is left (the containers go first) and its owner
 * process is judged gone, or, when it names no owner process, once it has had no container for
 * longer than the orphan grace period (a short-lived owner's group whose containers were removed
 * as orphans: nothing else will ever remove it).
 */
import { LABELS, ROLES, type BerthRole } from '../common/labels.js';
import type { OwnerGoneReason, OwnerUnknownReason } from '../common/owner-process.js';
import type { NetworkSummary, VolumeSummary } from '../engine/types.js';
import type { OwnerJudge } from './orphans.js';

/** The engine-side label filter of one kind of group object: berth's, with that role. */
export function groupRoleLabels(role: BerthRole): string[] {
  return [`${LABELS.managed}=true`, `${LABELS.role}=${role}`];
}

/** The engine-side label filter of every container of any group (infrastructure and tasks, any owner). */
export const GROUP_CONTAINER_LABELS: readonly string[] = Object.freeze([`${LABELS.managed}=true`, LABELS.groupId]);

/** Whether a container is a group's infrastructure container (by its role label). */
export function isInfraContainer(labels: Readonly<Record<string, string>>): boolean {
  return labels[LABELS.role] === ROLES.infra;
}

/** The key of a group of an owner: group ids are unique per owner only. */
export function groupKey(ownerId: string, groupId: string): string {
  return `${ownerId}\u0000${groupId}`;
}

/** The groups that still have a container (any state, any role), by `groupKey`. */
export function occupiedGroups(containers: ReadonlyArray<{ labels: Readonly<Record<string, string>> }>): Set<string> {
  const keys = new Set<string>();
  for (const { labels } of containers) {
    const groupId = labels[LABELS.groupId];
    const ownerId = labels[LABELS.ownerId];
    if (groupId !== undefined && ownerId !== undefined) keys.add(groupKey(ownerId, groupId));
  }
  return keys;
}

/** Why a group's network or volume is an orphan. */
export type GroupResourceReason =
  /** This owner's, and its group is not live (ended, or unknown to the owner). */
  | 'group-ended'
  /** Another owner's: no container of its group is left, and its owner process (its labels name one) is gone. */
  | 'owner-gone'
  /** Another owner's: no container of its group is left and it names no owner process; older than the orphan grace. */
  | 'abandoned';

/** A group's network or shared volume, as the reconciler and prune see it. */
export interface GroupResource {
  kind: 'network' | 'volume';
  /** The network id; for a volume, its name. */
  id: string;
  name: string;
  groupId: string;
  ownerId: string;
  labels: Readonly<Record<string, string>>;
  /** Undefined when the engine reports no creation time (a volume driver may not). */
  createdAt: Date | undefined;
}

/** A group network or volume judged an orphan. */
export interface OrphanedGroupResource {
  kind: 'network' | 'volume';
  id: string;
  name: string;
  groupId: string;
  ownerId: string;
  reason: GroupResourceReason;
  /** For `owner-gone`: why its owner process is judged gone. */
  ownerGoneReason?: OwnerGoneReason;
  createdAt: Date | undefined;
  /** How old it was judged; undefined when its creation time is unknown. */
  ageMs: number | undefined;
}

/** A network row as a group resource; undefined when it carries no group id or owner id. */
export function networkAsGroupResource(row: NetworkSummary): GroupResource | undefined {
  const groupId = row.labels[LABELS.groupId];
  const ownerId = row.labels[LABELS.ownerId];
  if (groupId === undefined || ownerId === undefined) return undefined;
  return { kind: 'network', id: row.id, name: row.name, groupId, ownerId, labels: row.labels, createdAt: row.createdAt };
}

/** A volume row as a group resource; undefined when it carries no group id or owner id. */
export function volumeAsGroupResource(row: VolumeSummary): GroupResource | undefined {
  const groupId = row.labels[LABELS.groupId];
  const ownerId = row.labels[LABELS.ownerId];
  if (groupId === undefined || ownerId === undefined) return undefined;
  return { kind: 'volume', id: row.name, name: row.name, groupId, ownerId, labels: row.labels, createdAt: row.createdAt };
}

/** What the judge of group resources knows at one sweep or prune. */
export interface GroupResourceContext {
  /** The owner judging: its groups are judged by `liveGroupIds`. */
  ownerId: string;
  /** This owner's groups that are live (not ended). */
  liveGroupIds: ReadonlySet<string>;
  /** Whether other owners' objects are judged at all (the reconciler's and prune's `orphans` option). */
  orphans: boolean;
  /** The groups (`groupKey`) that still have a container, after this pass removed its containers. Needed for other owners' objects only. */
  occupied: ReadonlySet<string>;
  judge: OwnerJudge;
  nowMs: number;
  /** This owner's objects younger than this are left (a group being created right now). */
  creationGraceMs: number;
  /** Other owners' objects younger than this are left. */
  orphanGraceMs: number;
}

/** What becomes of one group network or volume. */
export type GroupResourceJudgement =
  | { kind: 'orphan'; resource: OrphanedGroupResource }
  /** This owner's, and its group is live. */
  | { kind: 'live-group' }
  /** An orphan but for its age: a later pass removes it. */
  | { kind: 'grace' }
  /** Another owner's, and a container of its group is still there: it goes first. */
  | { kind: 'occupied' }
  /** Another owner's, whose owner process runs. */
  | { kind: 'live-owner' }
  /** Another owner's, whose owner cannot be judged from here (another host …), or orphans are off: not this owner's to touch. */
  | { kind: 'foreign'; reason?: OwnerUnknownReason };

/**
 * Judges one group network or volume (see the module's comment). The age is the engine's creation
 * time; a resource without one is judged by the rest alone.
 */
export function judgeGroupResource(resource: GroupResource, context: GroupResourceContext): GroupResourceJudgement {
  const createdMs = resource.createdAt?.getTime();
  const ageMs = createdMs === undefined ? undefined : context.nowMs - createdMs;
  const orphan = (reason: GroupResourceReason, ownerGoneReason?: OwnerGoneReason): GroupResourceJudgement => ({
    kind: 'orphan',
    resource: {
      kind: resource.kind,
      id: resource.id,
      name: resource.name,
      groupId: resource.groupId,
      ownerId: resource.ownerId,
      reason,
      ...(ownerGoneReason === undefined ? {} : { ownerGoneReason }),
      createdAt: resource.createdAt,
      ageMs,
    },
  });
  if (resource.ownerId === context.ownerId) {
    if (context.liveGroupIds.has(resource.groupId)) return { kind: 'live-group' };
    if (ageMs !== undefined && ageMs < context.creationGraceMs) return { kind: 'grace' };
    return orphan('group-ended');
  }
  if (!context.orphans) return { kind: 'foreign' };
  if (context.occupied.has(groupKey(resource.ownerId, resource.groupId))) return { kind: 'occupied' };
  const verdict = context.judge(resource.labels);
  if (verdict.kind === 'alive') return { kind: 'live-owner' };
  if (verdict.kind === 'unknown' && verdict.reason !== 'unlabelled') return { kind: 'foreign', reason: verdict.reason };
  if (ageMs !== undefined && ageMs < context.orphanGraceMs) return { kind: 'grace' };
  return verdict.kind === 'gone' ? orphan('owner-gone', verdict.reason) : orphan('abandoned');
}

/** The counts of a decision over group resources: what was spared, and why. */
export interface GroupResourceSkipCounts {
  /** This owner's, of a live group. */
  skippedLiveGroup: number;
  /** Orphans but for their age. */
  skippedGrace: number;
  /** Another owner's, with containers of its group still there. */
  skippedOccupied: number;
  /** Another owner's, whose owner process runs. */
  skippedLiveOwner: number;
  /** Another owner's that cannot be judged from here (or orphans are off). */
  skippedForeign: number;
}

export interface GroupResourceDecision extends GroupResourceSkipCounts {
  orphans: OrphanedGroupResource[];
}

/** Splits group networks and volumes into orphans and the ones spared, and why. */
export function decideGroupResources(resources: readonly GroupResource[], context: GroupResourceContext): GroupResourceDecision {
  const decision: GroupResourceDecision = { orphans: [], skippedLiveGroup: 0, skippedGrace: 0, skippedOccupied: 0, skippedLiveOwner: 0, skippedForeign: 0 };
  for (const resource of resources) {
    const judgement = judgeGroupResource(resource, context);
    if (judgement.kind === 'orphan') decision.orphans.push(judgement.resource);
    else if (judgement.kind === 'live-group') decision.skippedLiveGroup++;
    else if (judgement.kind === 'grace') decision.skippedGrace++;
    else if (judgement.kind === 'occupied') decision.skippedOccupied++;
    else if (judgement.kind === 'live-owner') decision.skippedLiveOwner++;
    else decision.skippedForeign++;
  }
  return decision;
}

/** Whether any resource is another owner's: only then does the judge need to know which groups still have containers. */
export function needsOccupancy(resources: readonly GroupResource[], ownerId: string, orphans: boolean): boolean {
  return orphans && resources.some((resource) => resource.ownerId !== ownerId);
}
