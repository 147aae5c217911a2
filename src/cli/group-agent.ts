/**
 * `berth group` against the agent: `run -d -f FILE` submits a group file (YAML or JSON) and prints
 * its id; `ps`, `inspect`, `stop`, `rm` and `logs` work on the agent's groups as their task
 * namesakes work on tasks. The foreground `group run -f` (the library's runner) lives in group.ts.
 */
import type { Command } from 'commander';
import { ValidationError } from '../common/errors.js';
import type { AgentClient } from '../agent/client.js';
import type { GroupView } from '../agent/http/views.js';
import { agentCommand, exitCodeForClientError, withAgentOptions, withClient, type AgentFlags } from './client.js';
import { endedByUser } from './interrupts.js';
import { printLogs, withLogOptions, type LogsFlags } from './logs.js';
import { collect } from './flags.js';
import { groupRunForeground, readGroupFile } from './group.js';
import { errorLine, formatPublishedPort, renderTable, writeJson } from './output.js';
import type { CliIo } from './run.js';

/** `berth group run -d -f FILE`: submits the group to the agent and prints its id. */
export async function submitGroupDetached(io: CliIo, flags: AgentFlags & { file: string; id?: string }): Promise<number> {
  let spec: Record<string, unknown>;
  try {
    const document = await readGroupFile(flags.file, io.stdin);
    if (typeof document !== 'object' || document === null || Array.isArray(document)) throw new ValidationError([{ field: '-f/--file', rule: 'must hold one group: an object with name and tasks' }]);
    spec = document as Record<string, unknown>;
  } catch (error) {
    io.stderr.write(`${errorLine(error)}\n`);
    return exitCodeForClientError(error);
  }
  return withClient(io, flags, async (client) => {
    const { group } = await client.submitGroup({ spec, ...(flags.id !== undefined ? { id: flags.id } : {}) });
    if (flags.json) writeJson(io.stdout, group);
    else io.stdout.write(`${group.id}\n`);
    return 0;
  });
}

/** The rows of `berth group ps`: id, name, state (with the end), tasks (running/all) and ports. */
export function groupRows(groups: readonly GroupView[]): string[][] {
  return groups.map((group) => {
    const running = group.tasks.filter((t) => t.state === 'running').length;
    const state = group.endState === undefined ? group.state : `${group.state} (${group.endState.kind}${group.endState.exitCode !== undefined ? ` ${group.endState.exitCode}` : ''}${group.endState.task !== undefined ? `, ${group.endState.task}` : ''})`;
    return [group.id, group.name, state, `${running}/${group.tasks.length}`, group.ports.map(formatPublishedPort).join(', ')];
  });
}

async function eachGroup(io: CliIo, flags: AgentFlags, ids: readonly string[], operation: (client: AgentClient, id: string) => Promise<unknown>): Promise<number> {
  return withClient(io, flags, async (client) => {
    let exitCode = 0;
    const results: unknown[] = [];
    for (const id of ids) {
      try {
        results.push(await operation(client, id));
        if (!flags.json) io.stdout.write(`${id}\n`);
      } catch (error) {
        io.stderr.write(`${errorLine(error)}\n`);
        if (exitCode === 0) exitCode = exitCodeForClientError(error);
      }
    }
    if (flags.json) writeJson(io.stdout, results);
    return exitCode;
  });
}

/** Waits for a group's end (a stop's): the view once it has ended and its engine objects are removed. */
async function waitEnded(client: AgentClient, id: string): Promise<GroupView> {
  for (let waitMs = 100; ; waitMs = Math.min(waitMs * 2, 1000)) {
    const group = await client.getGroup(id);
    if (group.state === 'exited') return group;
    await new Promise((resolve) => setTimeout(resolve, waitMs));
  }
}

/**
 * Adds the `group` command and its subcommands: `run` (in the foreground on the engine, through
 * the library's group runner; with `-d`, submitted to the agent), and the agent's `ps`, `inspect`,
 * `stop`, `rm` and `logs`.
 */
export function addGroupCommands(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const group = program.command('group').description('Task groups: tasks that share a network namespace, published ports and a shared directory');
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
  agentCommand(group, 'run', 'Run a task group from a file (YAML or JSON): in the foreground, streaming its tasks\' output prefixed by task name and exiting with the group\'s end; with -d, submitted to the agent')
    .requiredOption('-f, --file <file>', 'the group file, YAML or JSON (- reads stdin): name, tasks (each a task spec with name and lifecycle), network, sharedDir')
    .option('-d, --detach', 'submit the group to the agent and print its id (the agent runs it)')
    .option('--id <id>', 'with -d: the group\'s id (default: its name and 8 random hex digits); the same id and file again is the same group')
    .option('-l, --label <key=value>', 'in the foreground: a label on every container, volume and network of the group (repeatable)', collect, [])
    .action((flags: AgentFlags & { file: string; detach?: boolean; id?: string; label: string[] }) =>
      run(() => (flags.detach ? submitGroupDetached(io, flags) : groupRunForeground({ file: flags.file, label: flags.label }, io))),
    );

  agentCommand(group, 'ps', 'List the agent\'s task groups: id, name, state (and how it ended), running tasks and published ports')
    .option('-a, --all', 'show ended groups too (default: only those that have not ended)')
    .action((flags: AgentFlags & { all?: boolean }) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const groups = await client.listGroups(flags.all ? {} : { state: ['pending', 'starting', 'running', 'stopping'] });
          if (flags.json) writeJson(io.stdout, groups);
          else io.stdout.write(renderTable(['GROUP ID', 'NAME', 'STATE', 'TASKS', 'PORTS'], groupRows(groups)));
          return 0;
        }),
      ),
    );

  agentCommand(group, 'inspect', 'Print groups as a JSON array: state, end, tasks (ids, states, ends), infrastructure container, ports, network, shared directory')
    .argument('<group-id...>', 'group ids')
    .action((ids: string[], flags: AgentFlags) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const groups: GroupView[] = [];
          let exitCode = 0;
          for (const id of ids) {
            try {
              groups.push(await client.getGroup(id));
            } catch (error) {
              io.stderr.write(`${errorLine(error)}\n`);
              if (exitCode === 0) exitCode = exitCodeForClientError(error);
            }
          }
          writeJson(io.stdout, groups);
          return exitCode;
        }),
      ),
    );

  agentCommand(group, 'stop', 'Stop groups: a pending one is cancelled; a running one has its tasks stopped, and ends cancelled')
    .argument('<group-id...>', 'group ids')
    .action((ids: string[], flags: AgentFlags) => run(() => eachGroup(io, flags, ids, async (client, id) => waitEnded(client, (await client.stopGroup(id)).id))));

  agentCommand(group, 'rm', 'Remove ended groups with their tasks and output (-f: stop a running one first)')
    .argument('<group-id...>', 'group ids')
    .option('-f, --force', 'stop a group that has not ended, then remove it')
    .action((ids: string[], flags: AgentFlags & { force?: boolean }) =>
      run(() =>
        eachGroup(io, flags, ids, async (client, id) => {
          await client.removeGroup(id, { force: flags.force ?? false });
          return { id, removed: true };
        }),
      ),
    );

  withLogOptions(withAgentOptions(group.command('logs').description('Print the output of a group\'s task: its stdout to stdout, its stderr to stderr')))
    .argument('<group-id>', 'a group id')
    .argument('<task>', 'the task\'s name in the group')
    .action((groupId: string, taskName: string, flags: LogsFlags) =>
      run(() =>
        withClient(io, flags, async (client) => {
          await printLogs(io, flags, (options) => client.groupTaskLogs(groupId, taskName, options));
          return endedByUser(io);
        }),
      ),
    );
}
