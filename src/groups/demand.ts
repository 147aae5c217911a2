/**
 * What a group draws from a host's budget, admitted as one unit. Pure: no I/O.
 *
 * The tasks of a group do not all run at once: the prestart tasks run (together) to completion
 * before the main tasks and the sidecars start. So the group's peak is the larger of the two
 * phases, not the sum of every task: max(sum of the prestarts, sum of the mains and sidecars),
 * taken for memory and CPU separately. Reserving that peak for the group's whole life is what
 * Nomad does for an allocation with prestart tasks (its ephemeral prestart tasks' resources are
 * not added to the main tasks'). Taking each resource's maximum on its own may reserve a little
 * more than either phase uses (memory from one phase, CPU from the other), never less. The
 * infrastructure container (a sleeping 129-byte program under a 16 MiB limit) is not counted.
 */
import type { Lifecycle, ResolvedGroupSpec } from '../spec/group.js';

/** Memory and CPU, as the agent's admission counts them. */
export interface GroupDemand {
  readonly memoryBytes: number;
  readonly cpuMilli: number;
}

/** The larger phase's sum per resource, of tasks each with its lifecycle and its own demand. */
export function phasedDemand(tasks: ReadonlyArray<{ readonly lifecycle: Lifecycle; readonly demand: GroupDemand }>): GroupDemand {
  const sum = (prestart: boolean): GroupDemand =>
    tasks
      .filter((task) => (task.lifecycle === 'prestart') === prestart)
      .reduce((total, task) => ({ memoryBytes: total.memoryBytes + task.demand.memoryBytes, cpuMilli: total.cpuMilli + task.demand.cpuMilli }), { memoryBytes: 0, cpuMilli: 0 });
  const prestart = sum(true);
  const running = sum(false);
  return Object.freeze({ memoryBytes: Math.max(prestart.memoryBytes, running.memoryBytes), cpuMilli: Math.max(prestart.cpuMilli, running.cpuMilli) });
}

/**
 * The group's demand: each task's own limits (or `defaults` where it sets none, which the owner
 * must then give the task as limits), summed per phase, the larger phase per resource.
 */
export function groupDemand(spec: Pick<ResolvedGroupSpec, 'tasks'>, defaults: GroupDemand): GroupDemand {
  return phasedDemand(
    spec.tasks.map((task) => ({
      lifecycle: task.lifecycle,
      demand: { memoryBytes: task.spec.resources.memoryBytes ?? defaults.memoryBytes, cpuMilli: task.spec.resources.cpuMilli ?? defaults.cpuMilli },
    })),
  );
}
