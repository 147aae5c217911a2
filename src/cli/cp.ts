import type { Command } from 'commander';
import { ValidationError } from '../common/errors.js';
import { agentCommand, withClient, type AgentFlags } from './client.js';
import { copyIntoTask, taskPathOf } from './cp-in.js';
import type { CliIo } from './run.js';

/**
 * `berth cp`, as `docker cp`, for a task of the agent's. This file holds the LOCAL -> TASK:PATH
 * direction (cp-in.ts); TASK:PATH -> LOCAL is not available yet.
 */
export function addCpCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  agentCommand(program, 'cp', 'Copy a local file or directory into a running task (LOCAL TASK:PATH), as docker cp')
    .argument('<source>', 'LOCAL, a file or directory')
    .argument('<destination>', 'TASK:PATH, a task id (or unique prefix) and an absolute path in its container')
    .action(async (source: string, destination: string, flags: AgentFlags) => {
      const into = taskPathOf(destination);
      if (!into) {
        if (taskPathOf(source)) {
          throw new ValidationError([{ field: 'SOURCE', rule: 'copying out of a task (TASK:PATH LOCAL) is not available in this build yet' }]);
        }
        throw new ValidationError([{ field: 'DESTINATION', rule: `must be TASK:PATH (got ${JSON.stringify(destination)})` }]);
      }
      setExitCode(
        await withClient(io, flags, async (client) => {
          await copyIntoTask(client, source, into.taskId, into.path);
          return 0;
        }),
      );
    });
}
