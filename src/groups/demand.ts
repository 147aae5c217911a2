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
import type { ResolvedGroupSpec } from '../spec/group.js';

/** Memory and CPU, as the agent's admission counts them. */
export interface GroupDemand {
  readonly memoryBytes: number;
  readonly cpuMilli: number;
}

/**
 * The group's demand: each task's own limits (or `defaults` where it sets none, which the owner
 * must then give the task as limits), summed per phase, the larger phase per resource.
 */
export function groupDemand(spec: Pick<ResolvedGroupSpec, 'tasks'>, defaults: GroupDemand): GroupDemand {
  const sum = (phase: 'prestart' | 'running'): GroupDemand => {
    let memoryBytes = 0;
    let cpuMilli = 0;
    for (const task of spec.tasks) {
      if ((task.lifecycle === 'prestart') !== (phase === 'prestart')) continue;
      memoryBytes += task.spec.resources.memoryBytes ?? defaults.memoryBytes;
      cpuMilli += task.spec.resources.cpuMilli ?? defaults.cpuMilli;
    }
    return { memoryBytes, cpuMilli };
  };
  const prestart = sum('prestart');
  const running = sum('running');
  return Object.freeze({ memoryBytes: Math.max(prestart.memoryBytes, running.memoryBytes), cpuMilli: Math.max(prestart.cpuMilli, running.cpuMilli) });
}
