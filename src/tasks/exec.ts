import { BerthError, isBerthError, ValidationError } from '../common/errors.js';
import { containerNameForTask, LABELS } from '../common/labels.js';
import type { Engine, ExecOptions, ExecSession } from '../engine/engine.js';
import type { ContainerInspect } from '../engine/types.js';
import { TASK_ID } from './driver.js';

/** What exec into a task needs from the engine. */
export type TaskExecEngine = Pick<Engine, 'inspectContainer' | 'exec'>;

/**
 * Finds the container of a task by its deterministic name (`berth-<task id>`) and checks that berth
 * may exec in it: it carries berth's marker label and the task's id (berth never touches what it
 * did not create, even under a name that looks like its own), and it is running. Works for any
 * owner: a task of `berth run --name`, of an agent, or of a library driver.
 *
 * Throws `BERTH_VALIDATION` for a malformed task id, `BERTH_TASK_NOT_FOUND` when no container has
 * the name, `BERTH_NAME_CONFLICT` when the container is not this task's berth container, and
 * `BERTH_TASK_STATE` when it is not running (created, paused, restarting, exited, dead). `action`
 * names what the caller wanted in that last message ("cannot exec in task …"); default `exec in`.
 */
export async function findRunningTaskContainer(engine: Pick<Engine, 'inspectContainer'>, taskId: string, signal?: AbortSignal, action = 'exec in'): Promise<ContainerInspect> {
  if (!TASK_ID.test(taskId)) throw new ValidationError([{ field: 'task-id', rule: `must match ${TASK_ID.source}` }]);
  const name = containerNameForTask(taskId);
  let container: ContainerInspect;
  try {
    container = await engine.inspectContainer(name, { signal });
  } catch (error) {
    if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) {
      throw new BerthError('BERTH_TASK_NOT_FOUND', `task ${taskId} has no container (no container is named ${name})`, { cause: error, context: { taskId, name } });
    }
    throw error;
  }
  if (container.labels[LABELS.managed] !== 'true' || container.labels[LABELS.taskId] !== taskId) {
    const whose = container.labels[LABELS.managed] === 'true' ? `berth's task ${container.labels[LABELS.taskId] ?? '(none)'}` : 'not berth\'s (no io.berth.managed label)';
    throw new BerthError('BERTH_NAME_CONFLICT', `the container named ${name} is ${whose}; berth does not touch it`, {
      context: { taskId, name, containerId: container.id },
    });
  }
  if (container.status !== 'running') {
    throw new BerthError('BERTH_TASK_STATE', `cannot ${action} task ${taskId}: its container is ${container.status}, not running`, {
      context: { taskId, name, containerId: container.id, status: container.status },
    });
  }
  return container;
}

/**
 * Runs a command inside the running container of a task (see `findRunningTaskContainer` for what is
 * refused). The caller owns the session: read its streams, await `exitCode()`, `close()` it.
 */
export async function execInTask(engine: TaskExecEngine, taskId: string, options: ExecOptions, signal?: AbortSignal): Promise<ExecSession> {
  const container = await findRunningTaskContainer(engine, taskId, signal);
  try {
    return await engine.exec(container.id, options, { signal });
  } catch (error) {
    // The container may have stopped or gone between the check and the exec: say so in the task's
    // terms rather than as the engine's conflict or not-found.
    if (isBerthError(error, 'BERTH_ENGINE_CONFLICT') || isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) {
      await findRunningTaskContainer(engine, taskId, signal);
    }
    throw error;
  }
}
