import type { Command } from 'commander';
import { agentCommand, withClient, type AgentFlags } from './client.js';
import { writeJson } from './output.js';
import type { CliIo } from './run.js';

/** `berth inspect`: a task as JSON. */
export function addInspectCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
agentCommand(program, 'inspect', 'Print a task as JSON: its spec, state, times, container and how it ended')
  .argument('<task-id>')
  .action((taskId: string, flags: AgentFlags) =>
    run(() =>
      withClient(io, flags, async (client) => {
        writeJson(io.stdout, await client.get(taskId));
        return 0;
      }),
    ),
  );
}
