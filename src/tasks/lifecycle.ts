import { BerthError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';

/**
 * The task's states: one machine for the library's task handle and the agent's task records (see
 * docs/states.md). The states are public: the agent's API reports them as they are.
 *
 * ```
 * pending ─▶ starting ─▶ running ─▶ stopping ─▶ exited | lost ─▶ removed
 *    │          │   ╰──────────────────────────▶ exited | lost
 *    ╰──────────┴──▶ exited (cancelled in the queue, refused, never started)
 * ```
 *
 * - `pending`: submitted, waiting in the agent's admission queue (FIFO). A handle is never pending.
 * - `starting`: admitted; the image is pulled and the container created and started. A handle is
 *   born here: it exists once its container does. A task the agent restarts (its restart policy)
 *   comes back here from `running` and waits out the restart's delay, holding its share.
 * - `running`: the container has started.
 * - `stopping`: berth asked it to stop (a stop, the run time limit, a cancelled start).
 * - `exited`: it ended with a known end state (success, failed, oom, timed-out, cancelled).
 * - `lost`: it ended as lost: the engine could not say how, or its container vanished.
 * - `removed`: its container is removed (or being removed). The agent keeps the record for history.
 */
export const TASK_STATES = ['pending', 'starting', 'running', 'stopping', 'exited', 'lost', 'removed'] as const;
export type TaskState = (typeof TASK_STATES)[number];

/** States of a task that has not ended: what the agent's recovery reloads on start. */
export const UNENDED_STATES: readonly TaskState[] = Object.freeze(['pending', 'starting', 'running', 'stopping']);

/** Whether a task in this state has ended: `exited`, `lost`, or `removed` (a removed task ended before it was removed, or as it was). */
export function hasEnded(state: TaskState): boolean {
  return !UNENDED_STATES.includes(state);
}

/**
 * The moves of the machine. A pending task may end without running (cancelled in the queue, or
 * refused when it came to start). A task that has not ended goes to `removed` only through a
 * handle's destroy, which kills it as it removes its container; the agent records a removal only
 * after the end (see `Mover`).
 */
const TRANSITIONS: Readonly<Record<TaskState, readonly TaskState[]>> = Object.freeze({
  pending: ['starting', 'exited'],
  starting: ['running', 'stopping', 'exited', 'lost', 'removed'],
  running: ['starting', 'stopping', 'exited', 'lost', 'removed'],
  stopping: ['exited', 'lost', 'removed'],
  exited: ['removed'],
  lost: ['removed'],
  removed: [],
});

/**
 * Who moves the task. The agent's records are a projection of the machine: they add `pending` in
 * front (a handle is born `starting`) and refuse `removed` before the task has ended, since the
 * record keeps the end state and a removal must not overwrite an end still to come.
 */
export type Mover = 'handle' | 'record';

/** Whether the machine allows the move, for that mover. */
export function isLegalTransition(from: TaskState, to: TaskState, mover: Mover = 'record'): boolean {
  if (!TRANSITIONS[from].includes(to)) return false;
  if (mover === 'record' && to === 'removed') return hasEnded(from);
  // A restart (the agent's restart policy): the attempt's container ended and the task waits for its
  // next one. A handle is one container, so it never goes back.
  if (from === 'running' && to === 'starting') return mover === 'record';
  return true;
}

/** One move of a task's state. */
export interface TaskStateChange {
  taskId: string;
  from: TaskState;
  to: TaskState;
}

/**
 * The one place a task's transition is checked: an illegal one is refused with BERTH_TASK_STATE
 * (context: taskId, state, requested), which the caller throws (a race such as a stop after the
 * end, or a second end, cannot overwrite what is recorded). Staying in the same state is no move.
 */
export function refusedTransition(change: TaskStateChange, mover: Mover): BerthError | undefined {
  if (isLegalTransition(change.from, change.to, mover)) return undefined;
  return new BerthError('BERTH_TASK_STATE', `task ${change.taskId} cannot move from ${change.from} to ${change.to}`, {
    context: { taskId: change.taskId, state: change.from, requested: change.to },
  });
}

/** The one place a task's transition is logged, once it has happened (debug: one line per move; `from` undefined is a handle's birth). */
export function logTransition(logger: Logger, change: { taskId: string; from: TaskState | undefined; to: TaskState; mover: Mover; end?: string }): void {
  logger.debug({ ...change }, 'task state changed');
}

/** The states a task handle can be in: the machine without `pending`. */
export type TaskPhase = Exclude<TaskState, 'pending'>;

/**
 * A move of a task handle's state, as the driver publishes it. `from` is undefined once: at the
 * handle's birth (its container exists, the start request is next), which is reported as a move
 * to `starting`.
 */
export interface PhaseChange {
  taskId: string;
  from: TaskPhase | undefined;
  to: TaskPhase;
}

/** Holds a task handle's state; every move goes through `moveTo`, which checks and logs it, then reports it. */
export class Lifecycle {
  #phase: TaskPhase = 'starting';

  constructor(
    private readonly taskId: string,
    private readonly logger: Logger,
    private readonly onChange: (change: PhaseChange) => void,
  ) {
    const birth: PhaseChange = { taskId, from: undefined, to: this.#phase };
    logTransition(logger, { ...birth, mover: 'handle' });
    onChange(birth);
  }

  get phase(): TaskPhase {
    return this.#phase;
  }

  is(...phases: TaskPhase[]): boolean {
    return phases.includes(this.#phase);
  }

  moveTo(to: TaskPhase): void {
    const from = this.#phase;
    if (from === to) return;
    const change = { taskId: this.taskId, from, to };
    const refusal = refusedTransition(change, 'handle');
    if (refusal) throw refusal;
    this.#phase = to;
    logTransition(this.logger, { ...change, mover: 'handle' });
    this.onChange(change);
  }
}
