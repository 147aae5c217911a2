import type { Command } from 'commander';
import { ValidationError } from '../common/errors.js';
import { parseDurationMs } from '../common/units.js';
import { hasEnded } from '../state/tasks.js';
import type { AgentClient } from '../agent/client.js';
import { agentCommand, eachTask, exitCodeForClientError, type AgentFlags } from './client.js';
import { stopTimeoutFlag } from './flags.js';
import { errorLine } from './output.js';
import type { CliIo } from './run.js';

/**
 * `stop -t 5` in whole seconds, as docker's, or a duration with its unit (`-t 1m30s`), in
 * milliseconds: `--stop-timeout`'s rule and bounds (stopTimeoutFlag), so `-t 1.5` is refused as a
 * number without a unit there, never read as 1.5 ms.
 */
export function stopGraceFlagMs(value: string, flag: string): number {
  return parseDurationMs(stopTimeoutFlag(value, flag))!;
}

/**
 * `rm -f`: a task that has not ended is stopped first, killed at once as docker rm -f does (its
 * stop signal, then SIGKILL with no grace), then removed when it has ended.
 */
async function forceRemove(client: AgentClient, idOrPrefix: string): Promise<void> {
  // The whole id from here on: a prefix could come to match a task submitted meanwhile too.
  const task = await client.get(idOrPrefix);
  // The wait is a long poll on the task's state: an end that comes between the stop and the wait is not missed.
  if (!hasEnded((await client.stop(task.id, { graceMs: 0 })).state)) await client.wait(task.id);
  await client.remove(task.id);
}

/** `berth stop` and `berth rm`, each on several tasks, as docker's. */
export function addStopAndRemoveCommands(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
  agentCommand(program, 'stop', 'Stop tasks: a pending one is cancelled, a running one gets its stop signal, then SIGKILL after its grace period')
    .argument('<task-id...>', 'task ids or unique prefixes of them')
    .option('-t, --time <seconds>', 'the grace period between the stop signal and SIGKILL for this stop: whole seconds as docker\'s, or a duration such as 1m30s (default: the task\'s --stop-timeout)')
    .option('--timeout <seconds>', 'the same as -t (docker\'s newer spelling)')
    .action((taskIds: string[], flags: AgentFlags & { time?: string; timeout?: string }) =>
      run(async () => {
        let graceMs: number | undefined;
        try {
          if (flags.time !== undefined && flags.timeout !== undefined) throw new ValidationError([{ field: '-t/--time', rule: 'and --timeout are one flag: give one of them' }]);
          if (flags.time !== undefined) graceMs = stopGraceFlagMs(flags.time, '-t/--time');
          if (flags.timeout !== undefined) graceMs = stopGraceFlagMs(flags.timeout, '--timeout');
        } catch (error) {
          // A bad flag, caught before anything was sent.
          io.stderr.write(`${errorLine(error)}\n`);
          return exitCodeForClientError(error);
        }
        return eachTask(io, flags, taskIds, async (client, id) => client.stop(id, graceMs === undefined ? {} : { graceMs }));
      }),
    );

  agentCommand(program, 'rm', 'Remove ended tasks and their output (-f: stop a running one first)')
    .argument('<task-id...>', 'task ids or unique prefixes of them')
    .option('-f, --force', 'stop a task that has not ended (killed at once, as docker rm -f), then remove it')
    .action((taskIds: string[], flags: AgentFlags & { force?: boolean }) =>
      run(() =>
        eachTask(io, flags, taskIds, async (client, id) => {
          if (flags.force) await forceRemove(client, id);
          else await client.remove(id);
          return { id, removed: true };
        }),
      ),
    );
}
