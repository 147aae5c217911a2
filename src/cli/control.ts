import type { Command } from 'commander';
import type { TaskView } from '../agent/client.js';
import type { EndState } from '../tasks/end-state.js';
import { agentCommand, eachTask, exitCodeForClientError, withClient, write, type AgentFlags } from './client.js';
import { EXIT, exitCodeForEnd } from './exit-codes.js';
import { errorLine, writeJson } from './output.js';
import { exitCodeForSignal } from './interrupts.js';
import type { CliIo } from './run.js';

/** The code `berth wait` prints for an ended task: its exit code, else the one `berth run` would exit with. */
export function waitExitCode(task: Pick<TaskView, 'exitCode' | 'endState'>): number {
  if (task.exitCode !== undefined) return task.exitCode;
  return task.endState ? exitCodeForEnd(task.endState as EndState) : EXIT.berthFailure;
}

/** `berth kill`, `pause`, `unpause` and `wait`: a running task of the agent's, controlled as docker's commands do. */
export function addControlCommands(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);

  agentCommand(program, 'kill', 'Send a signal (default SIGKILL) to running tasks\' main process; a task goes on unless the signal ends it')
    .argument('<task-id...>')
    .option('-s, --signal <signal>', 'the signal: a name such as SIGHUP (or HUP) or a number', 'SIGKILL')
    .action((taskIds: string[], flags: AgentFlags & { signal: string }) => run(() => eachTask(io, flags, taskIds, (client, id) => client.kill(id, flags.signal))));

  agentCommand(program, 'pause', 'Pause running tasks (every process frozen); their run time limit stands still until unpause')
    .argument('<task-id...>')
    .action((taskIds: string[], flags: AgentFlags) => run(() => eachTask(io, flags, taskIds, (client, id) => client.pause(id))));

  agentCommand(program, 'unpause', 'Resume paused tasks; their run time limit goes on with what was left of it')
    .argument('<task-id...>')
    .action((taskIds: string[], flags: AgentFlags) => run(() => eachTask(io, flags, taskIds, (client, id) => client.unpause(id))));

  agentCommand(program, 'wait', 'Wait until tasks end, then print each one\'s exit code, as docker wait')
    .argument('<task-id...>')
    .action((taskIds: string[], flags: AgentFlags) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const abort = new AbortController();
          const removeInterrupt = io.interrupts.onInterrupt(() => abort.abort());
          const ended: TaskView[] = [];
          let exitCode = 0;
          try {
            for (const id of taskIds) {
              try {
                const task = await client.wait(id, { signal: abort.signal });
                ended.push(task);
                if (!flags.json) await write(io.stdout, `${waitExitCode(task)}\n`);
              } catch (error) {
                if (abort.signal.aborted) return exitCodeForSignal(io.interrupts.received ?? 'SIGINT');
                io.stderr.write(`${errorLine(error)}\n`);
                if (exitCode === 0) exitCode = exitCodeForClientError(error);
              }
            }
          } finally {
            removeInterrupt();
          }
          if (flags.json) writeJson(io.stdout, ended);
          return exitCode;
        }),
      ),
    );
}
