import type { Command } from 'commander';
import type { TaskView } from '../agent/client.js';
import { agentCommand, exitCodeForClientError, withClient, type AgentFlags } from './client.js';
import { errorLine, writeJson } from './output.js';
import { fieldsOf, FORMAT_HELP, parseFormat, renderFormatted } from './format.js';
import type { CliIo } from './run.js';

/** The fields of a task for `inspect --format` (the agent's task view, as docker inspect's are the engine's). */
const INSPECT_FIELDS = fieldsOf(['id', 'state', 'spec', 'containerId', 'endState', 'exitCode', 'submittedAt', 'admittedAt', 'startedAt', 'finishedAt', 'outputTruncated', 'pausedAt', 'pausedForMs', 'restarts', 'attempts', 'restartAt', 'ports', 'networks']);

/**
 * `berth inspect`: tasks as one JSON array, as docker inspect prints (an array of one for one id).
 * Every id is looked up; one that fails is a line on stderr while the others are printed, and the
 * exit code is then the first failure's.
 */
export function addInspectCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
  agentCommand(program, 'inspect', 'Print tasks as a JSON array: each one\'s spec, state, times, container and how it ended')
    .argument('<task-id...>', 'task ids or unique prefixes of them')
    .option('-f, --format <format>', FORMAT_HELP.replace('table (default), ', 'json (default: pretty), '))
    .action((taskIds: string[], flags: AgentFlags & { format?: string }) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const format = parseFormat(flags.format, INSPECT_FIELDS);
          const tasks: TaskView[] = [];
          let exitCode = 0;
          for (const taskId of taskIds) {
            try {
              tasks.push(await client.get(taskId));
            } catch (error) {
              io.stderr.write(`${errorLine(error)}\n`);
              if (exitCode === 0) exitCode = exitCodeForClientError(error);
            }
          }
          if (format.kind === 'table') writeJson(io.stdout, tasks);
          else io.stdout.write(renderFormatted(format, tasks as unknown as Array<Record<string, unknown>>));
          return exitCode;
        }),
      ),
    );
}
