/**
 * Orphans: containers of short-lived owners (`berth run`, a library driver) whose owner process is
 * gone. The decision is pure: the caller lists the candidates (berth's, with owner-process labels)
 * and passes a judge of owners (`ownerJudge()` reads /proc; tests pass a fake).
 */
import { LABELS, type ROLES } from '../common/labels.js';
import type { OwnerGoneReason, OwnerUnknownReason, OwnerVerdict } from '../common/owner-process.js';
import type { ContainerSummary } from '../engine/types.js';
import { createdAtUpperBoundMs, groupFields } from './decide.js';

/** Judges a container's owner from its labels: `ownerJudge()` for the real /proc. */
export type OwnerJudge = (labels: Readonly<Record<string, string>>) => OwnerVerdict;

/**
 * The engine-side filter that lists orphan candidates: berth's containers that carry an owner pid.
 * Every other owner-process label is checked on the listed rows.
 */
export const ORPHAN_CANDIDATE_LABELS: readonly string[] = Object.freeze([`${LABELS.managed}=true`, LABELS.ownerPid]);

/** A container whose owner process is gone, past the grace period. */
export interface OrphanedContainer {
  id: string;
  /** The container's name, without the leading slash. */
  name: string;
  taskId: string | undefined;
  /** The group in its labels, for a group's infrastructure or task container. */
  groupId?: string;
  /** `infra` for a group's infrastructure container; absent for a task container. */
  role?: typeof ROLES.infra | typeof ROLES.pool;
  /** For a warm pool's container: its pool. */
  pool?: string;
  /** The owner id it carries (`cli` for `berth run`). */
  ownerId: string | undefined;
  /** The owner process's pid, as its labels say. */
  ownerPid: number;
  /** Why its owner is judged gone. */
  reason: OwnerGoneReason;
  image: string;
  /** The engine's state when listed (`running`, `exited`, `created` …). */
  state: string;
  /** The creation time as judged (see `createdAtUpperBoundMs`). */
  createdAt: Date;
  ageMs: number;
}

/** What becomes of one candidate. */
export type OrphanJudgement =
  | { kind: 'orphan'; container: OrphanedContainer }
  /** Its owner process runs: never removed. */
  | { kind: 'live-owner' }
  /** Its owner cannot be judged from here (another host, another pid namespace …): never removed. */
  | { kind: 'unknown-owner'; reason: OwnerUnknownReason }
  /** Its owner is gone, but it is younger than the grace period: removed by a later sweep. */
  | { kind: 'grace'; reason: OwnerGoneReason };

/** Judges one candidate: whether its owner is gone and it is at least `graceMs` old. */
export function judgeOrphan(container: ContainerSummary, judge: OwnerJudge, nowMs: number, graceMs: number): OrphanJudgement {
  const verdict = judge(container.labels);
  if (verdict.kind === 'alive') return { kind: 'live-owner' };
  if (verdict.kind === 'unknown') return { kind: 'unknown-owner', reason: verdict.reason };
  const createdMs = createdAtUpperBoundMs(container);
  const ageMs = nowMs - createdMs;
  if (ageMs < graceMs) return { kind: 'grace', reason: verdict.reason };
  return {
    kind: 'orphan',
    container: {
      id: container.id,
      name: container.names[0] ?? container.id,
      taskId: container.labels[LABELS.taskId],
      ...groupFields(container.labels),
      ownerId: container.labels[LABELS.ownerId],
      ownerPid: Number(container.labels[LABELS.ownerPid]),
      reason: verdict.reason,
      image: container.image,
      state: container.state,
      createdAt: new Date(createdMs),
      ageMs,
    },
  };
}

/** The orphan candidates a decision spares, by reason: a decision's and a sweep's (`OrphanSweepResult`) counts. */
export interface OrphanSkipCounts {
  /** Candidates spared because their owner process runs. */
  skippedLiveOwner: number;
  /** Candidates spared because their owner cannot be judged from here (another host or pid namespace, /proc hidden). */
  skippedUnknownOwner: number;
  /** Candidates whose owner is gone, spared because they are younger than the orphan grace period. */
  skippedGrace: number;
}

export interface OrphanDecision extends OrphanSkipCounts {
  orphans: OrphanedContainer[];
}

/** Splits the candidates into orphans to remove and the ones spared, and why. */
export function decideOrphans(candidates: readonly ContainerSummary[], judge: OwnerJudge, nowMs: number, graceMs: number): OrphanDecision {
  const decision: OrphanDecision = { orphans: [], skippedLiveOwner: 0, skippedUnknownOwner: 0, skippedGrace: 0 };
  for (const container of candidates) {
    const judgement = judgeOrphan(container, judge, nowMs, graceMs);
    if (judgement.kind === 'orphan') decision.orphans.push(judgement.container);
    else if (judgement.kind === 'live-owner') decision.skippedLiveOwner++;
    else if (judgement.kind === 'unknown-owner') decision.skippedUnknownOwner++;
    else decision.skippedGrace++;
  }
  return decision;
}
