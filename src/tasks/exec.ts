import { readdir, readFile } from 'node:fs/promises';
import { BerthError, isBerthError, ValidationError, type FieldIssue } from '../common/errors.js';
import { LABELS } from '../common/labels.js';
import type { Engine, ExecOptions, ExecSession } from '../engine/engine.js';
import type { ContainerInspect } from '../engine/types.js';
import { preferredContainer } from './container-ops.js';
import { TASK_ID } from './driver.js';
import { taskIdOfPrefix } from './id-prefix.js';
import { execGateOf, inspectExecOf } from './exec-gate.js';

/** What exec into a task needs from the engine. */
export type TaskExecEngine = Pick<Engine, 'listContainers' | 'inspectContainer' | 'exec'>;

/**
 * Which task: its id, and the owner whose task it is when more than one owner (agents, `berth run`
 * (owner `cli`), library drivers) on the engine has a task of that id. A string is the task id alone.
 */
export type TaskRef = string | { taskId: string; ownerId?: string };

/**
 * Finds the container of a task by its labels (`io.berth.managed` and `io.berth.task-id`, plus
 * `io.berth.owner-id` when the owner is given), whatever it is named: so containers of any owner, and
 * those an earlier version of berth named `berth-<task id>`, are found, and a container that is not
 * berth's is never taken for a task's, even under a name that looks like berth's. Then checks that
 * it is running.
 *
 * When containers of several owners carry the task id and no owner is given, nothing is guessed:
 * `BERTH_TASK_AMBIGUOUS` names the owners. Of one owner's several containers of a task (one named by
 * an earlier berth, one by this one), the running one, else the newest.
 *
 * `task`'s id may be a unique prefix of the task's id, as in the agent's API (`taskIdOfPrefix`): a
 * container whose task id is exactly it wins, and a prefix that several tasks' containers start
 * with is refused with `BERTH_TASK_AMBIGUOUS` naming them.
 *
 * Throws `BERTH_VALIDATION` for a malformed task or owner id, `BERTH_TASK_NOT_FOUND` when no container
 * carries the labels, `BERTH_TASK_AMBIGUOUS` as above, and `BERTH_TASK_STATE` when it is not running
 * (created, paused, restarting, exited, dead). `action` names what the caller wanted in that last
 * message ("cannot exec in task …"); default `exec in`.
 */
export async function findRunningTaskContainer(engine: Pick<Engine, 'listContainers' | 'inspectContainer'>, task: TaskRef, signal?: AbortSignal, action = 'exec in'): Promise<ContainerInspect> {
  const { taskId: typedId, ownerId } = typeof task === 'string' ? { taskId: task, ownerId: undefined } : task;
  const issues: FieldIssue[] = [];
  if (!TASK_ID.test(typedId)) issues.push({ field: 'task-id', rule: `must match ${TASK_ID.source}` });
  if (ownerId !== undefined && !TASK_ID.test(ownerId)) issues.push({ field: 'owner', rule: `must match ${TASK_ID.source}` });
  if (issues.length > 0) throw new ValidationError(issues);
  const whose = ownerId === undefined ? '' : ` of owner ${ownerId}`;
  // Every berth container with a task id (of the owner): the engine's label filter matches whole
  // values only, so a prefix is matched here.
  const labels = [`${LABELS.managed}=true`, LABELS.taskId, ...(ownerId === undefined ? [] : [`${LABELS.ownerId}=${ownerId}`])];
  const candidates = (await engine.listContainers({ all: true, labels }, { signal })).filter(
    (row) => row.labels[LABELS.managed] === 'true' && (row.labels[LABELS.taskId] ?? '').startsWith(typedId) && (ownerId === undefined || row.labels[LABELS.ownerId] === ownerId),
  );
  const taskId = taskIdOfPrefix(typedId, candidates.map((row) => row.labels[LABELS.taskId] ?? ''));
  const rows = candidates.filter((row) => row.labels[LABELS.taskId] === taskId);
  const owners = [...new Set(rows.map((row) => row.labels[LABELS.ownerId] ?? '(none)'))].sort();
  if (owners.length > 1) {
    throw new BerthError('BERTH_TASK_AMBIGUOUS', `task ${taskId} has containers of ${owners.length} owners (${owners.join(', ')}); name the owner (--owner)`, {
      context: { taskId, owners },
    });
  }
  const chosen = preferredContainer(rows);
  let container: ContainerInspect | undefined;
  if (chosen !== undefined) {
    try {
      container = await engine.inspectContainer(chosen.id, { signal });
    } catch (error) {
      // Removed between the list and the inspect: as if it had not been listed.
      if (!isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) throw error;
    }
  }
  if (container === undefined) {
    throw new BerthError('BERTH_TASK_NOT_FOUND', `task ${taskId}${whose} has no container (none carries ${LABELS.managed}=true and ${LABELS.taskId}=${taskId})`, {
      context: { taskId, ...(ownerId === undefined ? {} : { ownerId }) },
    });
  }
  if (container.status !== 'running') {
    throw new BerthError('BERTH_TASK_STATE', `cannot ${action} task ${taskId}${whose}: its container is ${container.status}, not running`, {
      context: { taskId, name: container.name, containerId: container.id, status: container.status },
    });
  }
  return container;
}

/**
 * Runs a command inside the running container of a task (see `findRunningTaskContainer` for how it
 * is found and what is refused). The caller owns the session: read its streams, await `exitCode()`,
 * `close()` it.
 */
export async function execInTask(engine: TaskExecEngine, task: TaskRef, options: ExecOptions, signal?: AbortSignal): Promise<ExecSession> {
  const container = await findRunningTaskContainer(engine, task, signal);
  try {
    // Set up under the container's gate: a pause waits for it (see exec-gate.ts).
    return await execGateOf(engine).setup(container.id, () => engine.exec(container.id, options, { signal }), inspectExecOf(engine));
  } catch (error) {
    // The container may have stopped or gone between the check and the exec: say so in the task's
    // terms rather than as the engine's conflict or not-found.
    if (isBerthError(error, 'BERTH_ENGINE_CONFLICT') || isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) {
      await findRunningTaskContainer(engine, task, signal);
    }
    throw error;
  }
}

/**
 * Ends an exec's process, and the processes it started, with SIGKILL: the engine has no call that
 * ends an exec (closing its connection leaves the process running), so its host pid is taken from
 * the engine's inspect and signalled here. This works where berth runs on the engine's host with the
 * right to signal the engine's processes (root, as the engine's socket needs). Resolves with
 * whether a process was signalled; one that has ended already (or never started) is no failure.
 */
export async function endExecProcess(engine: Pick<Engine, 'inspectExec'>, execId: string, signal?: AbortSignal): Promise<boolean> {
  let info;
  try {
    info = await engine.inspectExec(execId, { signal });
  } catch (error) {
    // The exec went with its container: nothing left to end.
    if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return false;
    throw error;
  }
  if (!info.running || info.pid <= 0) return false;
  // Children first would let the parent start more; all at once, the parent included.
  const pids = [info.pid, ...(await descendantsOf(info.pid))];
  let signalled = false;
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
      signalled = true;
    } catch (error) {
      // Gone between the listing and the signal.
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw new BerthError('BERTH_INTERNAL', `cannot end the process ${pid} of exec ${execId}: ${(error as Error).message}`, { cause: error, context: { execId, pid } });
    }
  }
  return signalled;
}

/** The processes descended from `rootPid`, from /proc (Linux); none where /proc cannot be read. */
async function descendantsOf(rootPid: number): Promise<number[]> {
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return [];
  }
  const children = new Map<number, number[]>();
  await Promise.all(
    entries
      .filter((name) => /^[0-9]+$/.test(name))
      .map(async (name) => {
        const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
        // The fields after the command (which may hold spaces and parentheses): state, then ppid.
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        if (!Number.isInteger(ppid)) return;
        const list = children.get(ppid) ?? [];
        list.push(Number(name));
        children.set(ppid, list);
      }),
  );
  const found: number[] = [];
  const queue = [rootPid];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}
