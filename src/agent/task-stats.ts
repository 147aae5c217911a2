import { BerthError } from '../common/errors.js';
import type { Engine } from '../engine/engine.js';
import type { StatsSample } from '../engine/types.js';
import type { TaskRecord } from '../state/tasks.js';
import { statsRecord, type StatsRecord } from '../tasks/stats-figures.js';

/**
 * A running task's stats, as the API streams them (`GET /v1/tasks/:id/stats`): the engine's samples
 * of its container, as the records `berth stats --json` prints. The engine ends the stream when the
 * container stops; `signal` ends it early (the client went away, the server closes).
 */

/** The task's container, or BERTH_TASK_STATE when it is not running (pending, ended …). */
export function runningContainerOf(task: TaskRecord): string {
  if (task.state !== 'running' || task.containerId === undefined) {
    throw new BerthError('BERTH_TASK_STATE', `cannot read the stats of task ${task.id}: it is ${task.state}`, { context: { taskId: task.id, state: task.state } });
  }
  return task.containerId;
}

/**
 * The samples as records. `stream` false: one sample, as docker's --no-stream takes it: the first
 * that measures CPU over an interval (the engine's first reading has no previous one, so its CPU %
 * would span the container's life), or the first when the container stops before a second comes.
 */
export async function* taskStatsRecords(
  engine: Pick<Engine, 'streamStats'>,
  task: { taskId: string; containerId: string },
  options: { stream: boolean; signal: AbortSignal },
): AsyncGenerator<StatsRecord> {
  let first: StatsSample | undefined;
  try {
    // Leaving the loop early (one sample, or the consumer returned) closes the engine's stream.
    for await (const sample of engine.streamStats(task.containerId, { signal: options.signal })) {
      if (options.stream) {
        yield statsRecord(task.taskId, task.containerId, sample);
        continue;
      }
      if (sample.previousAt !== undefined) {
        yield statsRecord(task.taskId, task.containerId, sample);
        return;
      }
      first ??= sample;
    }
  } catch (error) {
    // Ended on purpose (the server closes): the client gets a stream that ends, not one cut off.
    if (options.signal.aborted) return;
    throw error;
  }
  if (!options.stream && first !== undefined) yield statsRecord(task.taskId, task.containerId, first);
}
