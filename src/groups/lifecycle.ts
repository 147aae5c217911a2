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

/** Whether a task's end says berth could not start it (a `failed` end with a reason: exit code 125, 126 or 127). */
export function couldNotStart(end: EndState | undefined): boolean {
  return end?.kind === 'failed' && end.reason !== undefined;
}

/**
 * The next step of a group whose tasks are as `members` say; `stopRequested`: the group was asked to
 * stop. The group ends early (what runs is stopped, nothing more starts) when it is asked to stop,
 * when a prestart task ends other than successfully, or when berth could not start one of its tasks
 * (its image, its command or its create failed: a group missing a task is broken, as Nomad fails
 * the allocation).
 */
export function planGroup(members: readonly MemberStatus[], options: { stopRequested: boolean }): GroupStep {
  const prestarts = members.filter((m) => m.lifecycle === 'prestart');
  const mains = members.filter((m) => m.lifecycle === 'main');
  const sidecars = members.filter((m) => m.lifecycle === 'sidecar');
  // A task the group's own stop cancelled did not fail: only an end of its own (or a refused start) fails the group.
  const failedOnItsOwn = (m: MemberStatus): boolean => m.phase === 'ended' && m.end?.kind !== 'success' && !(options.stopRequested && m.end?.kind === 'cancelled');
  const fatal = prestarts.find(failedOnItsOwn) ?? members.find((m) => m.phase === 'ended' && couldNotStart(m.end));
  const allEnded = members.every((m) => m.phase === 'ended');

  // Ending: asked to stop, a prestart failed or a task could not start. Stop what runs, start nothing more.
  if (options.stopRequested || fatal !== undefined) {
    let end: GroupEnd | undefined;
    if (allEnded) {
      if (fatal === undefined) {
        end = { kind: 'cancelled' };
      } else {
        const code = exitCodeOf(fatal.end);
        const why = couldNotStart(fatal.end) ? `could not start: ${(fatal.end as { reason: string }).reason}` : `ended ${fatal.end?.kind ?? 'without an end'}${code === undefined ? '' : ` with exit code ${code}`}`;
        end = { kind: 'failed', ...(code === undefined ? {} : { exitCode: code }), reason: `${fatal.lifecycle} task ${fatal.name} ${why}`, task: fatal.name };
      }
    }
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
