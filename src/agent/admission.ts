import { BerthError, ValidationError, type FieldIssue } from '../common/errors.js';
import { formatBytes } from '../common/units.js';

/** What one task draws from the budget while it starts and runs. */
export interface ResourceDemand {
  readonly memoryBytes: number;
  readonly cpuMilli: number;
}

/** The whole budget running tasks share. */
export interface AdmissionBudget {
  readonly memoryBytes: number;
  readonly cpuMilli: number;
  /** At most this many tasks admitted at once. Default: no cap. */
  readonly maxConcurrent?: number;
}

/** The result of anything that can let queued tasks in (or turn them away). */
export interface AdmissionChange {
  /** Tasks admitted by this change, in queue order: the caller starts them now. */
  readonly admitted: readonly string[];
  /** Queued tasks that can no longer ever fit (the budget shrank below them); they left the queue. */
  readonly refused: ReadonlyArray<{ readonly taskId: string; readonly error: ValidationError }>;
}

export interface AdmissionEntry {
  readonly taskId: string;
  readonly demand: ResourceDemand;
}

/**
 * A warm pool's share of the budget: its idle containers are started and hold their resources, so
 * they draw from the budget as tasks do. `size` is what the pool keeps when the budget allows; its
 * `allowance` (at most `size`) is what admission lets it keep now.
 */
export interface PoolShare {
  readonly name: string;
  readonly size: number;
  /** One container's resources. */
  readonly demand: ResourceDemand;
}

/** A pool's share as admission holds it: its allowance of idle containers now. */
export interface PoolShareSnapshot extends PoolShare {
  readonly allowance: number;
}

export interface AdmissionSnapshot {
  readonly budget: AdmissionBudget;
  /** Warm pools, in the order given: what each may keep idle now (its allowance × its demand draws from the budget). */
  readonly pools: readonly PoolShareSnapshot[];
  /** What admitted tasks draw in all (may exceed the budget after it shrank). */
  readonly used: { readonly memoryBytes: number; readonly cpuMilli: number; readonly tasks: number };
  /** Admitted tasks, in the order they were admitted. */
  readonly admitted: readonly AdmissionEntry[];
  /** Waiting tasks, head first. */
  readonly queued: readonly AdmissionEntry[];
}

/**
 * A task's demand: its own limits, or the configured defaults where it sets none. The agent must
 * give the container the same defaults as limits, or a task could use more than it drew.
 */
export function resolveDemand(
  resources: { readonly memoryBytes?: number; readonly cpuMilli?: number },
  defaults: ResourceDemand,
): ResourceDemand {
  return Object.freeze({
    memoryBytes: resources.memoryBytes ?? defaults.memoryBytes,
    cpuMilli: resources.cpuMilli ?? defaults.cpuMilli,
  });
}

const EMPTY_CHANGE: AdmissionChange = Object.freeze({ admitted: Object.freeze([]), refused: Object.freeze([]) });

/**
 * Admission control: a memory and CPU budget that admitted tasks draw from, plus an optional cap on
 * how many are admitted at once. Pure bookkeeping, synchronous, no clock: every call returns which
 * tasks it let in, and the caller records and starts them (record `starting` in the store first).
 *
 * The queue is strictly first-in first-out: while the task at its head does not fit, nothing behind
 * it is admitted, even a smaller task that would fit. That is the order the agent promises (tasks
 * start in the order they were submitted), and it means a large task cannot be starved by a stream
 * of small ones; the price is that capacity may idle while the head waits for enough to free up.
 * A task that could never fit, even on an empty host, is refused at submit instead of blocking the
 * queue for good.
 */
export class AdmissionController {
  #budget: AdmissionBudget;
  readonly #admitted = new Map<string, ResourceDemand>();
  #queue: AdmissionEntry[] = [];
  #usedMemoryBytes = 0;
  #usedCpuMilli = 0;
  /** Warm pools by name, in the order given, with their allowance now. */
  readonly #pools = new Map<string, { share: PoolShare; allowance: number }>();
  readonly #allowanceListeners = new Set<(pool: string, containers: number) => void>();

  constructor(budget: AdmissionBudget) {
    this.#budget = AdmissionController.#checkBudget(budget);
  }

  /**
   * Declares the warm pools. Their idle containers hold resources, so each pool's allowance ×
   * its demand draws from the budget, as a task's demand does (a warm task's container is then the
   * task's, counted in its demand: the pool refills its idle ones). A pool gets as much of its size
   * as fits beside what is admitted. When a task would not fit, the pools shrink first (the last
   * declared first) as far as it takes for it to fit; they grow back towards their size once no
   * task waits and the budget has room. Every change is told to the `onAllowance` listeners.
   */
  setPools(pools: readonly PoolShare[]): AdmissionChange {
    for (const [name] of this.#pools) this.#setAllowance(name, 0);
    this.#pools.clear();
    for (const share of pools) this.#pools.set(share.name, { share: Object.freeze({ ...share, demand: Object.freeze({ ...share.demand }) }), allowance: 0 });
    return this.#pump([]);
  }

  /** Calls `listener` whenever a pool's allowance changes (the agent: driver.pools.setAllowance); returns the unsubscribe. */
  onAllowance(listener: (pool: string, containers: number) => void): () => void {
    this.#allowanceListeners.add(listener);
    return () => this.#allowanceListeners.delete(listener);
  }

  /** What the pools hold now: each allowance × its demand. */
  #poolsHeld(): { memoryBytes: number; cpuMilli: number } {
    let memoryBytes = 0;
    let cpuMilli = 0;
    for (const { share, allowance } of this.#pools.values()) {
      memoryBytes += allowance * share.demand.memoryBytes;
      cpuMilli += allowance * share.demand.cpuMilli;
    }
    return { memoryBytes, cpuMilli };
  }

  #setAllowance(name: string, containers: number): void {
    const pool = this.#pools.get(name);
    if (!pool || pool.allowance === containers) return;
    pool.allowance = containers;
    for (const listener of this.#allowanceListeners) listener(name, containers);
  }

  /**
   * Makes room for `demand` by shrinking the pools (the last declared first, one container at a
   * time) when that is enough for it to fit; shrinks nothing when it is not. Whether it fits now.
   */
  #makeRoom(demand: ResourceDemand): boolean {
    if (this.#fits(demand)) return true;
    if (!this.#fitsTasks(demand)) return false;
    for (const [name, pool] of [...this.#pools].reverse()) {
      let allowance = pool.allowance;
      while (allowance > 0 && !this.#fitsWith(demand, name, allowance)) allowance--;
      this.#setAllowance(name, allowance);
      if (this.#fits(demand)) return true;
    }
    return this.#fits(demand);
  }

  /** Whether `demand` fits with pool `name` at `allowance` (the others as they are). */
  #fitsWith(demand: ResourceDemand, name: string, allowance: number): boolean {
    const pool = this.#pools.get(name)!;
    const held = this.#poolsHeld();
    const memory = held.memoryBytes - (pool.allowance - allowance) * pool.share.demand.memoryBytes;
    const cpu = held.cpuMilli - (pool.allowance - allowance) * pool.share.demand.cpuMilli;
    return this.#usedMemoryBytes + memory + demand.memoryBytes <= this.#budget.memoryBytes && this.#usedCpuMilli + cpu + demand.cpuMilli <= this.#budget.cpuMilli && this.#underCap();
  }

  /**
   * The pools' allowances after a change: shrunk while tasks and pools together are over the
   * budget (it shrank), grown back towards their sizes (the first declared first) while no task
   * waits and a container more fits.
   */
  #balancePools(): void {
    for (const [name, pool] of [...this.#pools].reverse()) {
      let allowance = pool.allowance;
      while (allowance > 0 && !this.#fitsWith({ memoryBytes: 0, cpuMilli: 0 }, name, allowance)) allowance--;
      this.#setAllowance(name, allowance);
    }
    if (this.#queue.length > 0) return;
    for (const [name, pool] of this.#pools) {
      let allowance = pool.allowance;
      while (allowance < pool.share.size && this.#fits(pool.share.demand, { ignoreCap: true })) {
        allowance++;
        this.#setAllowance(name, allowance);
      }
    }
  }

  static #checkBudget(budget: AdmissionBudget): AdmissionBudget {
    const issues: FieldIssue[] = [];
    if (!Number.isSafeInteger(budget.memoryBytes) || budget.memoryBytes < 0) issues.push({ field: 'admission.memory', rule: 'must be a number of bytes, 0 or more' });
    if (!Number.isSafeInteger(budget.cpuMilli) || budget.cpuMilli < 0) issues.push({ field: 'admission.cpuMilli', rule: 'must be a whole number of milli-CPUs, 0 or more' });
    if (budget.maxConcurrent !== undefined && (!Number.isSafeInteger(budget.maxConcurrent) || budget.maxConcurrent < 1)) {
      issues.push({ field: 'admission.maxConcurrent', rule: 'must be a whole number, 1 or more' });
    }
    if (issues.length > 0) throw new ValidationError(issues);
    return Object.freeze({ ...budget });
  }

  /**
   * Throws a ValidationError (BERTH_VALIDATION) naming resources.memory and/or resources.cpuMilli
   * when the demand is larger than the whole budget, so the task could never start.
   */
  check(demand: ResourceDemand): void {
    const issues: FieldIssue[] = [];
    if (!Number.isSafeInteger(demand.memoryBytes) || demand.memoryBytes < 0) {
      issues.push({ field: 'resources.memory', rule: 'must be a number of bytes, 0 or more' });
    } else if (demand.memoryBytes > this.#budget.memoryBytes) {
      issues.push({
        field: 'resources.memory',
        rule: `${formatBytes(demand.memoryBytes)} is more than the agent's whole memory budget of ${formatBytes(this.#budget.memoryBytes)}: the task could never start`,
      });
    }
    if (!Number.isSafeInteger(demand.cpuMilli) || demand.cpuMilli < 0) {
      issues.push({ field: 'resources.cpuMilli', rule: 'must be a whole number of milli-CPUs, 0 or more' });
    } else if (demand.cpuMilli > this.#budget.cpuMilli) {
      issues.push({
        field: 'resources.cpuMilli',
        rule: `${demand.cpuMilli} milli-CPUs is more than the agent's whole CPU budget of ${this.#budget.cpuMilli}: the task could never start`,
      });
    }
    if (issues.length > 0) throw new ValidationError(issues, { context: { demand, budget: this.#budget } });
  }

  /**
   * Admits the task now if the queue is empty and it fits; otherwise queues it at the back.
   * Throws (see `check`) when it could never fit. A task id already known is a caller bug.
   */
  submit(taskId: string, demand: ResourceDemand): 'admitted' | 'queued' {
    this.#assertUnknown(taskId);
    this.check(demand);
    const entry: AdmissionEntry = Object.freeze({ taskId, demand: Object.freeze({ ...demand }) });
    // Idle pool containers give way to a task: the pools shrink when that lets it in.
    if (this.#queue.length === 0 && this.#makeRoom(entry.demand)) {
      this.#admit(entry);
      return 'admitted';
    }
    this.#queue.push(entry);
    return 'queued';
  }

  /**
   * The task ended, or left the queue (cancelled while pending): its share returns to the budget
   * and the queue moves on. Releasing a task that is not known does nothing, so that a release on
   * every end path is safe.
   */
  release(taskId: string): AdmissionChange {
    const demand = this.#admitted.get(taskId);
    if (demand) {
      this.#admitted.delete(taskId);
      this.#usedMemoryBytes -= demand.memoryBytes;
      this.#usedCpuMilli -= demand.cpuMilli;
    } else {
      const index = this.#queue.findIndex((e) => e.taskId === taskId);
      if (index < 0) return EMPTY_CHANGE;
      this.#queue.splice(index, 1);
      // Only the head's leaving can let anyone in; elsewhere the splice changes nothing else.
      if (index !== 0) return EMPTY_CHANGE;
    }
    return this.#pump([]);
  }

  /**
   * Replaces the budget (a configuration reload). Tasks already admitted stay admitted even if the
   * budget is now smaller; queued tasks that can no longer ever fit are refused and leave the queue.
   */
  setBudget(budget: AdmissionBudget): AdmissionChange {
    this.#budget = AdmissionController.#checkBudget(budget);
    return this.#pump(this.#refuseOversize());
  }

  /**
   * Rebuilds the books after a restart, from the store: tasks that were starting or running are
   * admitted as they are (even beyond the budget: they run already), then pending tasks queue in
   * the order given (submission order) and those that fit are admitted. Call once, on a fresh
   * controller.
   */
  restore(state: { admitted: readonly AdmissionEntry[]; queued: readonly AdmissionEntry[] }): AdmissionChange {
    if (this.#admitted.size > 0 || this.#queue.length > 0) {
      throw new BerthError('BERTH_INTERNAL', 'admission can only be restored into an empty controller');
    }
    const ids = new Set<string>();
    for (const { taskId } of [...state.admitted, ...state.queued]) {
      if (ids.has(taskId)) throw new BerthError('BERTH_INTERNAL', `task ${taskId} is restored twice`, { context: { taskId } });
      ids.add(taskId);
    }
    for (const entry of state.admitted) this.#admit(Object.freeze({ taskId: entry.taskId, demand: Object.freeze({ ...entry.demand }) }));
    this.#queue = state.queued.map((e) => Object.freeze({ taskId: e.taskId, demand: Object.freeze({ ...e.demand }) }));
    return this.#pump(this.#refuseOversize());
  }

  /** Where a task is: admitted, queued (with its place, 0 = head), or unknown. */
  positionOf(taskId: string): { state: 'admitted' } | { state: 'queued'; index: number } | undefined {
    if (this.#admitted.has(taskId)) return { state: 'admitted' };
    const index = this.#queue.findIndex((e) => e.taskId === taskId);
    return index < 0 ? undefined : { state: 'queued', index };
  }

  snapshot(): AdmissionSnapshot {
    return Object.freeze({
      budget: this.#budget,
      pools: Object.freeze([...this.#pools.values()].map(({ share, allowance }) => Object.freeze({ ...share, allowance }))),
      used: Object.freeze({ memoryBytes: this.#usedMemoryBytes, cpuMilli: this.#usedCpuMilli, tasks: this.#admitted.size }),
      admitted: Object.freeze([...this.#admitted].map(([taskId, demand]) => Object.freeze({ taskId, demand }))),
      queued: Object.freeze([...this.#queue]),
    });
  }

  /** Whether `demand` fits beside the admitted tasks and the pools' allowances (`ignoreCap`: a pool container is not a task, so maxConcurrent does not bound it). */
  #fits(demand: ResourceDemand, options: { ignoreCap?: boolean } = {}): boolean {
    const budget = this.#budget;
    const held = this.#poolsHeld();
    return (
      this.#usedMemoryBytes + held.memoryBytes + demand.memoryBytes <= budget.memoryBytes &&
      this.#usedCpuMilli + held.cpuMilli + demand.cpuMilli <= budget.cpuMilli &&
      (options.ignoreCap === true || this.#underCap())
    );
  }

  /** Whether `demand` would fit were the pools to keep nothing. */
  #fitsTasks(demand: ResourceDemand): boolean {
    return this.#usedMemoryBytes + demand.memoryBytes <= this.#budget.memoryBytes && this.#usedCpuMilli + demand.cpuMilli <= this.#budget.cpuMilli && this.#underCap();
  }

  #underCap(): boolean {
    return this.#budget.maxConcurrent === undefined || this.#admitted.size < this.#budget.maxConcurrent;
  }

  #admit(entry: AdmissionEntry): void {
    this.#admitted.set(entry.taskId, entry.demand);
    this.#usedMemoryBytes += entry.demand.memoryBytes;
    this.#usedCpuMilli += entry.demand.cpuMilli;
  }

  /** Admits from the head while the head fits (the pools giving way): strict FIFO. Then the pools take what is left. */
  #pump(refused: AdmissionChange['refused']): AdmissionChange {
    const admitted: string[] = [];
    while (this.#queue.length > 0 && this.#makeRoom(this.#queue[0]!.demand)) {
      const head = this.#queue.shift()!;
      this.#admit(head);
      admitted.push(head.taskId);
    }
    this.#balancePools();
    if (admitted.length === 0 && refused.length === 0) return EMPTY_CHANGE;
    return Object.freeze({ admitted: Object.freeze(admitted), refused: Object.freeze([...refused]) });
  }

  #refuseOversize(): AdmissionChange['refused'] {
    const refused: Array<{ taskId: string; error: ValidationError }> = [];
    this.#queue = this.#queue.filter((entry) => {
      try {
        this.check(entry.demand);
        return true;
      } catch (error) {
        if (!(error instanceof ValidationError)) throw error;
        refused.push(Object.freeze({ taskId: entry.taskId, error }));
        return false;
      }
    });
    return refused;
  }

  #assertUnknown(taskId: string): void {
    if (this.positionOf(taskId) !== undefined) {
      throw new BerthError('BERTH_INTERNAL', `task ${taskId} is already known to admission`, { context: { taskId } });
    }
  }
}
