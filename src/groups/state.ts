/**
 * A group's own state, derived from its tasks' phases (docs/states.md has the tasks'). Pure.
 *
 * ```
 * starting ─▶ running ─▶ stopping ─▶ exited ─▶ removed
 *    │           ╰───────────────────▶ exited
 *    ╰──▶ stopping | exited
 * ```
 *
 * - `starting`: the group's objects are made, its prestart tasks run, its main tasks start.
 * - `running`: every main task has started (some may have ended already).
 * - `stopping`: the group is ending: asked to stop, a prestart failed, a task could not start, or
 *   every main task has ended and the sidecars are being stopped.
 * - `exited`: every task has ended; the group's end is known (`GroupEnd`).
 * - `removed`: its task containers and its objects (infrastructure container, volume, network) are removed.
 */
import { BerthError } from '../common/errors.js';
import { couldNotStart, type MemberStatus } from './lifecycle.js';

export const GROUP_STATES = ['starting', 'running', 'stopping', 'exited', 'removed'] as const;
export type GroupState = (typeof GROUP_STATES)[number];

const TRANSITIONS: Readonly<Record<GroupState, readonly GroupState[]>> = Object.freeze({
  starting: ['running', 'stopping', 'exited'],
  running: ['stopping', 'exited'],
  stopping: ['exited'],
  exited: ['removed'],
  removed: [],
});

/** Whether a group may move from `from` to `to` (staying put is no move, and allowed). */
export function isLegalGroupTransition(from: GroupState, to: GroupState): boolean {
  return from === to || TRANSITIONS[from].includes(to);
}

/** The refusal of an illegal move, for the caller to throw. */
export function refusedGroupTransition(groupId: string, from: GroupState, to: GroupState): BerthError | undefined {
  if (isLegalGroupTransition(from, to)) return undefined;
  return new BerthError('BERTH_INTERNAL', `group ${groupId} cannot move from ${from} to ${to}`, { context: { groupId, state: from, requested: to } });
}

/**
 * The state a group with these members is in, before its end is known (`exited` and `removed`
 * are its owner's to record, once the end is decided and once its objects are gone).
 */
export function liveGroupState(members: readonly MemberStatus[], stopRequested: boolean): Exclude<GroupState, 'exited' | 'removed'> {
  const failing = members.some((m) => m.phase === 'ended' && ((m.lifecycle === 'prestart' && m.end?.kind !== 'success') || couldNotStart(m.end)));
  if (stopRequested || failing) return 'stopping';
  const mains = members.filter((m) => m.lifecycle === 'main');
  if (mains.every((m) => m.phase === 'ended')) return 'stopping';
  if (mains.every((m) => m.phase === 'running' || m.phase === 'stopping' || m.phase === 'ended')) return 'running';
  return 'starting';
}
