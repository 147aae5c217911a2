import type { Command } from 'commander';
import { agentCommand, withClient, type AgentFlags } from './client.js';
import { writeJson } from './output.js';
import { fieldsOf, FORMAT_HELP, parseFormat, renderFormatted } from './format.js';

import type { CliIo } from './run.js';

/** The fields of a task for `inspect --format` (the agent's task view, as docker inspect's are the engine's). */
const INSPECT_FIELDS = fieldsOf(['id', 'state', 'spec', 'containerId', 'endState', 'exitCode', 'submittedAt', 'admittedAt', 'startedAt', 'finishedAt', 'outputTruncated']);

/** `berth inspect`: a task as JSON. */
export function addInspectCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
agentCommand(program, 'inspect', 'Print a task as JSON: its spec, state, times, container and how it ended')
  .argument('<task-id>')
  .option('-f, --format <format>', FORMAT_HELP.replace('table (default), ', 'json (default: pretty), '))
  .action((taskId: string, flags: AgentFlags & { format?: string }) =>
    run(() =>
      withClient(io, flags, async (client) => {
        const format = parseFormat(flags.format, INSPECT_FIELDS);
        const task = await client.get(taskId);
        if (format.kind === 'table') writeJson(io.stdout, task);
        else io.stdout.write(renderFormatted(format, [task as unknown as Record<string, unknown>]));
        return 0;
      }),
    ),
  );
}
