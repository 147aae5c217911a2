import { isBerthError } from '../common/errors.js';
import type { AgentClient, TaskView } from '../agent/client.js';
import { connectClient, type AgentFlags } from './client.js';
import type { CliIo } from './run.js';

/**
 * Where a command about one task (exec, attach, stats) goes: through the agent when the task is the
 * agent's, so that it works from another host and behind the agent's token; straight to the engine
 * otherwise (tasks of `berth run --name`, of the library), as before there was an agent.
 */
export type TaskRoute = { via: 'agent'; client: AgentClient; task: TaskView } | { via: 'engine' };

/** Whether the command names an agent itself (a flag, or BERTH_HOST): then only that agent answers. */
export function namesAgent(io: Pick<CliIo, 'env'>, flags: AgentFlags): boolean {
  const given = [flags.host, flags.token, flags.tlscacert, flags.tlscert, flags.tlskey].some((value) => value !== undefined) || flags.tlsverify === true;
  return given || (io.env.BERTH_HOST?.trim() ?? '') !== '';
}

/**
 * Routes a task command. An agent named by the command (`namesAgent`) is asked, and its answer is
 * final: a task it does not know is an error. Otherwise the default agent (the socket and token in
 * the data directory) is asked, and the engine is used when no agent answers there or the agent
 * does not know the task. `--owner` addresses the engine's containers of one owner: engine only.
 * The caller closes the client of an agent route.
 */
export async function routeTask(io: CliIo, flags: AgentFlags & { owner?: string }, taskId: string): Promise<TaskRoute> {
  if (flags.owner !== undefined && !namesAgent(io, flags)) return { via: 'engine' };
  if (namesAgent(io, flags)) {
    const client = await connectClient(io, flags);
    try {
      return { via: 'agent', client, task: await client.get(taskId) };
    } catch (error) {
      client.close();
      throw error;
    }
  }
  let client: AgentClient;
  try {
    client = await connectClient(io, flags);
  } catch (error) {
    // No token file where the default agent keeps it: there is no agent here.
    if (isBerthError(error, 'BERTH_VALIDATION')) return { via: 'engine' };
    throw error;
  }
  try {
    return { via: 'agent', client, task: await client.get(taskId) };
  } catch (error) {
    client.close();
    if (isNoAgent(error) || isBerthError(error, 'BERTH_TASK_NOT_FOUND')) return { via: 'engine' };
    throw error;
  }
}

/** The default agent did not answer at all (no socket, refused, past the deadline). */
function isNoAgent(error: unknown): boolean {
  return (isBerthError(error, 'BERTH_AGENT_UNAVAILABLE') || isBerthError(error, 'BERTH_AGENT_TIMEOUT')) && error.context.status === undefined;
}

/**
 * Where a command about every running task (`berth stats` with no ids) goes: the agent named by the
 * command, whose answer is final; else the default agent when one answers there; else the engine.
 * `--owner` addresses the engine's containers of one owner: engine only. The caller closes the client.
 */
export async function routeAllTasks(io: CliIo, flags: AgentFlags & { owner?: string }): Promise<{ via: 'agent'; client: AgentClient; running: TaskView[] } | { via: 'engine' }> {
  if (flags.owner !== undefined && !namesAgent(io, flags)) return { via: 'engine' };
  const isNamed = namesAgent(io, flags);
  let client: AgentClient;
  try {
    client = await connectClient(io, flags);
  } catch (error) {
    if (!isNamed && isBerthError(error, 'BERTH_VALIDATION')) return { via: 'engine' };
    throw error;
  }
  try {
    return { via: 'agent', client, running: await client.list({ state: 'running' }) };
  } catch (error) {
    client.close();
    if (!isNamed && isNoAgent(error)) return { via: 'engine' };
    throw error;
  }
}
