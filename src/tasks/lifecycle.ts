import { BerthError } from '../common/errors.js';

/** Where a task handle is in its life. Transitions not listed in ALLOWED are refused. */
export type TaskPhase = 'creating' | 'created' | 'running' | 'stopping' | 'exited' | 'destroyed';

const ALLOWED: Readonly<Record<TaskPhase, readonly TaskPhase[]>> = {
  creating: ['created', 'destroyed'],
  created: ['running', 'exited', 'destroyed'],
  running: ['stopping', 'exited', 'destroyed'],
  stopping: ['exited', 'destroyed'],
  exited: ['destroyed'],
  destroyed: [],
};

export interface PhaseChange {
  taskId: string;
  from: TaskPhase;
  to: TaskPhase;
}

/** Holds a task's phase; every transition goes through `moveTo`, the one place they are checked and reported. */
export class Lifecycle {
  #phase: TaskPhase = 'creating';

  constructor(
    private readonly taskId: string,
    private readonly onChange: (change: PhaseChange) => void,
  ) {}

  get phase(): TaskPhase {
    return this.#phase;
  }

  is(...phases: TaskPhase[]): boolean {
    return phases.includes(this.#phase);
  }

  moveTo(to: TaskPhase): void {
    const from = this.#phase;
    if (from === to) return;
    if (!ALLOWED[from].includes(to)) {
      throw new BerthError('BERTH_TASK_STATE', `task ${this.taskId} cannot go from ${from} to ${to}`, { context: { taskId: this.taskId, from, to } });
    }
    this.#phase = to;
    this.onChange({ taskId: this.taskId, from, to });
  }
}
