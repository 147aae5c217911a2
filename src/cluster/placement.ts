/**
 * The placement rule, once in TypeScript (for tests and docs) and once as the SQL the claim runs;
 * both compute the same score with the same float arithmetic.
 *
 * A node N may claim a queued task T when:
 *  1. N's labels satisfy T's constraints, and T's demand fits N's free budget (and N has a free task slot);
 *  2. and either T has waited at least the placement grace since it was queued, or no other live node
 *     that satisfies T's constraints and fits T (by its capacity less what the cluster holds on it) is
 *     better than N under the strategy.
 * Better: binpack prefers the higher score, spread the lower; equal scores go to the smaller node id.
 * The score of a node for a task is its fullest dimension once the task is placed:
 * max((used + demand) / capacity) over memory, CPU and task slots (a dimension of capacity 0 counts 0).
 * The grace makes the rule safe: a best node that is slow, or busy, never keeps a task from the others
 * for longer than the grace.
 */
import type { Budget, Demand, PlacementStrategy } from './types.js';

/** A node as the rule sees it: its capacity and what it uses. */
export interface PlacementNode {
  readonly nodeId: string;
  readonly capacity: Budget;
  readonly used: Budget;
}

function share(used: number, demand: number, capacity: number): number {
  return capacity > 0 ? (used + demand) / capacity : 0;
}

/** The node's fullest dimension once the task is placed on it (0 to 1 when it fits). */
export function scoreAfter(node: PlacementNode, demand: Demand): number {
  return Math.max(
    share(node.used.memoryBytes, demand.memoryBytes, node.capacity.memoryBytes),
    share(node.used.cpuMilli, demand.cpuMilli, node.capacity.cpuMilli),
    share(node.used.tasks, 1, node.capacity.tasks),
  );
}

/** Whether the task fits what the node has left. */
export function fits(node: PlacementNode, demand: Demand): boolean {
  return (
    node.used.memoryBytes + demand.memoryBytes <= node.capacity.memoryBytes &&
    node.used.cpuMilli + demand.cpuMilli <= node.capacity.cpuMilli &&
    node.used.tasks + 1 <= node.capacity.tasks
  );
}

/** Whether `other` is a better place than `self` for the task under the strategy. */
export function isBetter(other: PlacementNode, self: PlacementNode, demand: Demand, strategy: PlacementStrategy): boolean {
  const a = scoreAfter(other, demand);
  const b = scoreAfter(self, demand);
  if (a !== b) return strategy === 'binpack' ? a > b : a < b;
  return other.nodeId < self.nodeId;
}

export interface ClaimDecision {
  readonly claimer: PlacementNode;
  /** The other live nodes whose labels satisfy the task's constraints. */
  readonly others: readonly PlacementNode[];
  readonly demand: Demand;
  readonly strategy: PlacementStrategy;
  readonly waitedMs: number;
  readonly graceMs: number;
}

/** The rule above (constraints already matched): whether the claimer may take the task. */
export function mayClaim(d: ClaimDecision): boolean {
  if (!fits(d.claimer, d.demand)) return false;
  if (d.waitedMs >= d.graceMs) return true;
  return !d.others.some((other) => fits(other, d.demand) && isBetter(other, d.claimer, d.demand, d.strategy));
}

/** SQL for scoreAfter over columns `<p>cap_*`, `<p>used_*` and the task's demand columns of `t`. */
function scoreSql(p: string): string {
  const dim = (used: string, demand: string, capacity: string): string =>
    `CASE WHEN ${p}${capacity} > 0 THEN (${p}${used} + ${demand})::float8 / ${p}${capacity} ELSE 0 END`;
  return `GREATEST(${dim('used_mem', 't.demand_memory_bytes', 'cap_mem')}, ${dim('used_cpu', 't.demand_cpu_milli', 'cap_cpu')}, ${dim('used_tasks', '1', 'cap_tasks')})`;
}

/**
 * The SQL condition "some other live node is better for t than the claimer", for the claim query:
 * `o` ranges over the CTE `others` (cap_mem, cap_cpu, cap_tasks, used_mem, used_cpu, used_tasks,
 * labels, node_id) and `me` is the one-row CTE of the claimer with the same columns.
 */
export function betterNodeExistsSql(strategy: PlacementStrategy): string {
  const cmp = strategy === 'binpack' ? '>' : '<';
  return `EXISTS (
    SELECT 1 FROM others o
    WHERE o.labels @> t.constraint_labels
      AND o.used_mem + t.demand_memory_bytes <= o.cap_mem
      AND o.used_cpu + t.demand_cpu_milli <= o.cap_cpu
      AND o.used_tasks + 1 <= o.cap_tasks
      AND (${scoreSql('o.')} ${cmp} ${scoreSql('me.')}
           OR (${scoreSql('o.')} = ${scoreSql('me.')} AND o.node_id < me.node_id)))`;
}
