import type { Command } from 'commander';
import type { Writable } from 'node:stream';
import { agentCommand, withClient, write, type AgentFlags } from './client.js';
import { endedByUser } from './interrupts.js';
import { parseLogTime, parseTail } from './log-times.js';
import { startFailureReason } from './output.js';
import type { LogRecord, LogsOptions } from '../agent/client.js';
import type { CliIo } from './run.js';

export interface LogsFlags extends AgentFlags {
  follow?: boolean;
  since?: string;
  until?: string;
  tail?: string;
  timestamps?: boolean;
}

/** The options `berth logs` and `berth group logs` share. */
export function withLogOptions(command: Command): Command {
  return command
    .option('-f, --follow', 'keep printing new output until the task\'s output ends (or --until comes)')
    .option('--since <time>', 'only output after this time: RFC 3339 (e.g. a timestamp printed by -t), Unix seconds, or a duration before now (10m, 1h30m)')
    .option('--until <time>', 'only output up to this time, in the same forms as --since')
    .option('-n, --tail <n>', 'only the last n lines (or all, the default)')
    .option('-t, --timestamps', 'prefix each line with the engine\'s timestamp');
}

/**
 * Prints the records `read` yields for the flags (stdout to stdout, stderr to stderr; `--json`: one
 * record a line) until they end or Ctrl-C ends a follow. Resolves with how many were printed, and
 * whether the user ended it. Usage errors (a bad `--since`) are thrown before anything is read.
 */
export async function printLogs(io: CliIo, flags: LogsFlags, read: (options: LogsOptions) => AsyncIterable<LogRecord>): Promise<{ printed: number; interrupted: boolean }> {
  const nowMs = Date.now();
  const since = flags.since === undefined ? undefined : parseLogTime(flags.since, '--since', nowMs);
  const until = flags.until === undefined ? undefined : parseLogTime(flags.until, '--until', nowMs);
  const tail = flags.tail === undefined ? undefined : parseTail(flags.tail);
  const abort = new AbortController();
  const removeInterrupt = io.interrupts.onInterrupt(() => abort.abort());
  let printed = 0;
  try {
    const options = { follow: flags.follow ?? false, signal: abort.signal, ...(since !== undefined ? { since } : {}), ...(until !== undefined ? { until } : {}), ...(tail !== undefined ? { tail } : {}) };
    for await (const record of read(options)) {
      printed++;
      if (flags.json) {
        await write(io.stdout, `${JSON.stringify(record)}\n`);
      } else {
        const out: Writable = record.stream === 'stderr' ? io.stderr : io.stdout;
        await write(out, flags.timestamps ? `${record.timestamp} ${record.text}` : record.text);
      }
    }
  } catch (error) {
    // Ctrl-C ends a follow (exit 0): that is how people stop one; SIGTERM exits 143.
    if (!abort.signal.aborted) throw error;
  } finally {
    removeInterrupt();
  }
  return { printed, interrupted: abort.signal.aborted };
}

/** `berth logs`: a task's output, its stdout to stdout and its stderr to stderr. */
export function addLogsCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
  withLogOptions(agentCommand(program, 'logs', 'Print a task\'s output: its stdout to stdout, its stderr to stderr').argument('<task-id>', 'a task id or a unique prefix of one'))
    .action((taskId: string, flags: LogsFlags) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const { printed, interrupted } = await printLogs(io, flags, (options) => client.logs(taskId, options));
          // A task that could not start has no output: say why, rather than print nothing. Only then
          // is the task asked for, and a failure to ask changes nothing of what was printed.
          if (!interrupted && printed === 0) {
            const task = await client.get(taskId).catch(() => undefined);
            const reason = task && startFailureReason(task);
            if (task && reason !== undefined) io.stderr.write(`berth: task ${task.id} failed to start: ${reason}\n`);
          }
          return endedByUser(io);
        }),
      ),
    );
}
