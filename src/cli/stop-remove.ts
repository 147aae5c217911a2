import type { Command } from 'commander';
import { agentCommand, eachTask, type AgentFlags } from './client.js';
import type { CliIo } from './run.js';

/** `berth stop` and `berth rm`, each on several tasks, as docker's. */
export function addStopAndRemoveCommands(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
agentCommand(program, 'stop', 'Stop tasks: a pending one is cancelled, a running one gets its stop signal, then SIGKILL after its grace period')
  .argument('<task-id...>')
  .action((taskIds: string[], flags: AgentFlags) => run(() => eachTask(io, flags, taskIds, async (client, id) => client.stop(id))));

agentCommand(program, 'rm', 'Remove ended tasks and their output')
  .argument('<task-id...>')
  .action((taskIds: string[], flags: AgentFlags) =>
    run(() =>
      eachTask(io, flags, taskIds, async (client, id) => {
        await client.remove(id);
        return { id, removed: true };
      }),
    ),
  );
}
