/**
 * A group's lifecycle, decided from its tasks' phases: Nomad's lifecycle hooks. Prestart tasks run
 * (together) to completion first, and one that does not succeed fails the group; then the main
 * tasks and the sidecars start; once every main task has ended the sidecars are stopped; the main
 * tasks decide the group's end. Pure and synchronous: the library's group runner and the agent's
 * coordinator call it after every change and carry out what it returns, so both follow one rule.
 */
import type { Lifecycle } from '../spec/group.js';
import type { EndKind, EndState } from '../tasks/end-state.js';

/** Where a task of a group is: not started yet, on its way, running, being stopped, or ended. */
export type MemberPhase = 'waiting' | 'starting' | 'running' | 'stopping' | 'ended';

export interface MemberStatus {
  readonly name: string;
  readonly lifecycle: Lifecycle;
  readonly phase: MemberPhase;
  /** Set once the phase is `ended`. */
  readonly end?: EndState;
}

/** How a group ended, and the task that decided it (when one did). */
export interface GroupEnd {
  readonly kind: EndKind;
  /** The deciding task's exit code, when it has one. */
  readonly exitCode?: number;
  readonly reason?: string;
  /** The task whose end decided the group's; undefined for success and a requested stop. */
  readonly task?: string;
}

export interface GroupStep {
  /** Waiting tasks to start now. */
  readonly start: readonly string[];
  /** Starting or running tasks to stop now. */
  readonly stop: readonly string[];
  /** Waiting tasks that will never start (the group is ending): the caller records them ended (cancelled). */
  readonly skip: readonly string[];
  /** The group's end, once every task has ended. */
  readonly end?: GroupEnd;
}

const isLive = (m: MemberStatus): boolean => m.phase === 'starting' || m.phase === 'running';
const names = (members: readonly MemberStatus[]): string[] => members.map((m) => m.name);

function exitCodeOf(end: EndState | undefined): number | undefined {
  return end !== undefined && 'exitCode' in end ? end.exitCode : undefined;
}

/** The next step of a group whose tasks are as `members` say; `stopRequested`: the group was asked to stop. */
export function planGroup(members: readonly MemberStatus[], options: { stopRequested: boolean }): GroupStep {
  const prestarts = members.filter((m) => m.lifecycle === 'prestart');
  const mains = members.filter((m) => m.lifecycle === 'main');
  const sidecars = members.filter((m) => m.lifecycle === 'sidecar');
  const failedPrestart = prestarts.find((m) => m.phase === 'ended' && m.end?.kind !== 'success');
  const allEnded = members.every((m) => m.phase === 'ended');

  // Ending: asked to stop, or a prestart failed. Stop what runs, start nothing more.
  if (options.stopRequested || failedPrestart !== undefined) {
    const end: GroupEnd | undefined = !allEnded
      ? undefined
      : options.stopRequested && failedPrestart === undefined
        ? { kind: 'cancelled' }
        : { kind: 'failed', ...(exitCodeOf(failedPrestart?.end) === undefined ? {} : { exitCode: exitCodeOf(failedPrestart?.end) }), reason: `prestart task ${failedPrestart!.name} ended ${failedPrestart!.end?.kind ?? 'without an end'}`, task: failedPrestart!.name };
    return { start: [], stop: names(members.filter(isLive)), skip: names(members.filter((m) => m.phase === 'waiting')), ...(end === undefined ? {} : { end }) };
  }

  if (!prestarts.every((m) => m.phase === 'ended')) {
    return { start: names(prestarts.filter((m) => m.phase === 'waiting')), stop: [], skip: [] };
  }

  if (!mains.every((m) => m.phase === 'ended')) {
    return { start: names([...mains, ...sidecars].filter((m) => m.phase === 'waiting')), stop: [], skip: [] };
  }

  // Every main task has ended: the sidecars have served their purpose.
  const step = { start: [], stop: names(sidecars.filter(isLive)), skip: names(sidecars.filter((m) => m.phase === 'waiting')) };
  if (!allEnded) return step;
  const decider = mains.find((m) => m.end?.kind !== 'success');
  if (decider === undefined) return { ...step, end: { kind: 'success', exitCode: 0 } };
  const code = exitCodeOf(decider.end);
  const reason = decider.end?.kind === 'lost' || (decider.end?.kind === 'failed' && decider.end.reason !== undefined) ? decider.end.reason : undefined;
  return { ...step, end: { kind: decider.end?.kind ?? 'lost', ...(code === undefined ? {} : { exitCode: code }), ...(reason === undefined ? {} : { reason }), task: decider.name } };
}
