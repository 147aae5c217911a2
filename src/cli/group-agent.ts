/**
 * `berth group` against the agent: `run -d -f FILE` submits a group file (YAML or JSON) and prints
 * its id; `ps`, `inspect`, `stop`, `rm` and `logs` work on the agent's groups as their task
 * namesakes work on tasks. The foreground `group run -f` (the library's runner) lives in group.ts.
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { ValidationError } from '../common/errors.js';
import type { AgentClient } from '../agent/client.js';
import type { GroupView } from '../agent/http/views.js';
import { agentCommand, exitCodeForClientError, withAgentOptions, withClient, write, type AgentFlags } from './client.js';
import { endedByUser } from './interrupts.js';
import { parseLogTime, parseTail } from './log-times.js';
import { errorLine, writeJson } from './output.js';
import type { CliIo } from './run.js';

/** Reads a group file: YAML (JSON is YAML too), one document holding an object. */
export async function readGroupFile(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ValidationError([{ field: '-f/--file', rule: `${file} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})` }], { cause: error });
  }
  let document: unknown;
  try {
    document = parseYaml(text);
  } catch (error) {
    throw new ValidationError([{ field: '-f/--file', rule: `${file} is not valid YAML or JSON: ${(error as Error).message.split('\n')[0]}` }], { cause: error });
  }
  if (typeof document !== 'object' || document === null || Array.isArray(document)) throw new ValidationError([{ field: '-f/--file', rule: `${file} must hold one group: an object with name and tasks` }]);
  return document as Record<string, unknown>;
}

/** `berth group run -d -f FILE`: submits the group to the agent and prints its id. */
export async function submitGroupDetached(io: CliIo, flags: AgentFlags & { file: string; id?: string }): Promise<number> {
  let spec: Record<string, unknown>;
  try {
    spec = await readGroupFile(flags.file);
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

/** The published ports of a group as `docker ps` shows them: `127.0.0.1:32768->80/tcp`. */
export function portsText(ports: GroupView['ports']): string {
  return ports.map((p) => `${p.hostIp}:${p.host}->${p.container}/${p.protocol}`).join(', ');
}

/** The rows of `berth group ps`: id, name, state (with the end), tasks (running/all) and ports. */
export function groupRows(groups: readonly GroupView[]): string[][] {
  return groups.map((group) => {
    const running = group.tasks.filter((t) => t.state === 'running').length;
    const state = group.endState === undefined ? group.state : `${group.state} (${group.endState.kind}${group.endState.exitCode !== undefined ? ` ${group.endState.exitCode}` : ''}${group.endState.task !== undefined ? `, ${group.endState.task}` : ''})`;
    return [group.id, group.name, state, `${running}/${group.tasks.length}`, portsText(group.ports)];
  });
}

function table(header: readonly string[], rows: readonly string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('   ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
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
    if (group.state === 'ended') return group;
    await new Promise((resolve) => setTimeout(resolve, waitMs));
  }
}

/**
 * Adds the agent's group subcommands to `group` (the `berth group` command). `run` here takes
 * `-d` only: the foreground run is the library's (group.ts), which calls submitGroupDetached for `-d`.
 */
export function addGroupAgentCommands(group: Command, io: CliIo, setExitCode: (code: number) => void, options: { withRun?: boolean } = {}): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
  if (options.withRun ?? true) {
    agentCommand(group, 'run', 'Run a task group from a file (YAML or JSON): with -d, submit it to the agent and print its id')
      .requiredOption('-f, --file <file>', 'the group file: name, tasks (each a task spec with name and lifecycle), network, sharedDir')
      .option('-d, --detach', 'submit the group to the agent and print its id (the agent runs it)')
      .option('--id <id>', 'the group\'s id (default: its name and 8 random hex digits); the same id and file again is the same group')
      .action((flags: AgentFlags & { file: string; detach?: boolean; id?: string }) =>
        run(async () => {
          if (!flags.detach) {
            io.stderr.write('berth: group run: this build runs groups through the agent only: add -d\n');
            return exitCodeForClientError(new ValidationError([{ field: '-d/--detach', rule: 'is needed' }]));
          }
          return submitGroupDetached(io, flags);
        }),
      );
  }

  agentCommand(group, 'ps', 'List the agent\'s task groups: id, name, state (and how it ended), running tasks and published ports')
    .option('-a, --all', 'show ended groups too (default: only those that have not ended)')
    .action((flags: AgentFlags & { all?: boolean }) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const groups = await client.listGroups(flags.all ? {} : { state: ['pending', 'starting', 'running', 'stopping'] });
          if (flags.json) writeJson(io.stdout, groups);
          else io.stdout.write(table(['GROUP ID', 'NAME', 'STATE', 'TASKS', 'PORTS'], groupRows(groups)));
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

  withAgentOptions(group.command('logs').description('Print the output of a group\'s task: its stdout to stdout, its stderr to stderr'))
    .argument('<group-id>', 'a group id')
    .argument('<task>', 'the task\'s name in the group')
    .option('-f, --follow', 'keep printing new output until the task\'s output ends')
    .option('--since <time>', 'only output after this time: RFC 3339, Unix seconds, or a duration before now (10m)')
    .option('--until <time>', 'only output up to this time, in the same forms as --since')
    .option('-n, --tail <n>', 'only the last n lines (or all, the default)')
    .option('-t, --timestamps', 'prefix each line with the engine\'s timestamp')
    .action((groupId: string, taskName: string, flags: AgentFlags & { follow?: boolean; since?: string; until?: string; tail?: string; timestamps?: boolean }) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const nowMs = Date.now();
          const since = flags.since === undefined ? undefined : parseLogTime(flags.since, '--since', nowMs);
          const until = flags.until === undefined ? undefined : parseLogTime(flags.until, '--until', nowMs);
          const tail = flags.tail === undefined ? undefined : parseTail(flags.tail);
          const abort = new AbortController();
          const removeInterrupt = io.interrupts.onInterrupt(() => abort.abort());
          try {
            const options = { follow: flags.follow ?? false, signal: abort.signal, ...(since !== undefined ? { since } : {}), ...(until !== undefined ? { until } : {}), ...(tail !== undefined ? { tail } : {}) };
            for await (const record of client.groupTaskLogs(groupId, taskName, options)) {
              await write(record.stream === 'stderr' ? io.stderr : io.stdout, flags.timestamps ? `${record.timestamp} ${record.text}` : record.text);
            }
          } catch (error) {
            if (!abort.signal.aborted) throw error;
          } finally {
            removeInterrupt();
          }
          return endedByUser(io);
        }),
      ),
    );
}
