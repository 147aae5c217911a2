import { Command, Option } from 'commander';
import os from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { isBerthError, ValidationError } from '../common/errors.js';
import { AgentClient, resolveAgentAddress, type AgentEvent, type TaskView } from '../agent/client.js';
import { TASK_STATES, UNENDED_STATES, type StoredTaskSpec, type TaskState } from '../state/tasks.js';
import { EXIT } from './exit-codes.js';
import { endedByUser } from './interrupts.js';
import { errorLine, formatEventLine, renderImageTable, renderTaskTable, writeJson } from './output.js';
import { addRunCommand, specFromRunFlags, type CliIo } from './run.js';

/**
 * The commands that talk to a running agent: submit (and `run --detach`), ps, inspect, logs, stop,
 * rm, images, events. Each finds the agent's address and token the same way (`resolveAgentAddress`:
 * --host/--token, BERTH_HOST/BERTH_TOKEN, else the socket and token under BERTH_DATA_DIR), prints a
 * table or text for people and `--json` for scripts, and exits 0 when it worked, 1 when the agent
 * refused (not found, wrong state, wrong token), 2 for a usage or validation error, and 125 when the
 * agent does not answer.
 */

/** Exit code when the agent answered with an error (not found, wrong state, wrong token). */
export const EXIT_API_ERROR = 1;

export interface AgentFlags {
  host?: string;
  token?: string;
  json?: boolean;
}

const MALFORMED_REQUEST_STATUSES: ReadonlySet<number> = new Set([400, 413, 414, 415, 431]);

/** The exit code for an error of a client command. */
export function exitCodeForClientError(error: unknown): number {
  if (!isBerthError(error)) return EXIT.berthFailure;
  const status = error.context.status;
  // No HTTP status: the agent never answered (refused, reset, past the deadline).
  if ((error.code === 'BERTH_AGENT_UNAVAILABLE' || error.code === 'BERTH_AGENT_TIMEOUT') && status === undefined) return EXIT.berthFailure;
  // A bad request or a bad flag, caught before anything was sent: the caller's to fix. The agent
  // refuses a malformed request with 400, and one too large with 413, 414 (a path segment) or 431 (headers).
  if (error.code === 'BERTH_VALIDATION' && (status === undefined || MALFORMED_REQUEST_STATUSES.has(status as number))) return EXIT.usage;
  return EXIT_API_ERROR;
}

/** The user's identity, for the default data directory (as the agent computes it). */
const currentUser = (): { uid: number; homedir: string } => ({ uid: process.getuid?.() ?? -1, homedir: os.homedir() });

async function connectClient(io: CliIo, flags: AgentFlags): Promise<AgentClient> {
  const address = await resolveAgentAddress(io.env, { ...(flags.host !== undefined ? { host: flags.host } : {}), ...(flags.token !== undefined ? { token: flags.token } : {}) }, currentUser());
  return AgentClient.connect({ host: address.host, token: address.token });
}

/** The options every client command has. */
export function agentCommand(program: Command, name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .option('-H, --host <address>', 'the agent: unix:///path/agent.sock or http://host:port (default $BERTH_HOST, else <data dir>/agent.sock)')
    .option('--token <token>', 'the agent\'s API token (default $BERTH_TOKEN, else <data dir>/token)')
    .option('--json', 'print JSON for scripts instead of text for people');
}

/**
 * Runs one client command: connects, runs `body`, maps an error to one line on stderr and an exit
 * code. The client's idle connections are closed afterwards, so the process can exit.
 */
export async function withClient(io: CliIo, flags: AgentFlags, body: (client: AgentClient) => Promise<number>): Promise<number> {
  let client: AgentClient | undefined;
  try {
    client = await connectClient(io, flags);
    return await body(client);
  } catch (error) {
    io.stderr.write(`${errorLine(error)}\n`);
    if (isBerthError(error, 'BERTH_UNAUTHORIZED')) io.stderr.write('berth: pass the agent\'s token with --token or BERTH_TOKEN, or point BERTH_DATA_DIR at its data directory\n');
    return exitCodeForClientError(error);
  } finally {
    client?.close();
  }
}

/** Reads stdin to its end as text, for `submit -i`: the agent keeps a task's stdin as text. */
async function readText(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

type RunFlags = Parameters<typeof specFromRunFlags>[2] & { interactive?: boolean; name?: string; keep?: boolean; detach?: boolean };

async function submitTask(io: CliIo, image: string, command: string[], flags: RunFlags & AgentFlags): Promise<number> {
  if (flags.tty) throw new ValidationError([{ field: '--tty', rule: 'is not supported by the agent (it reads output from the engine log); use berth run -t' }]);
  const { interactive, ...rest } = flags;
  const spec = specFromRunFlags(image, command, { ...rest, interactive: false }, io) as StoredTaskSpec;
  if (interactive) spec.stdin = await readText(io.stdin);
  return withClient(io, flags, async (client) => {
    const { task, created } = await client.submitTask({ ...(flags.name !== undefined ? { id: flags.name } : {}), spec });
    // Submitting is idempotent: the same name and spec again is that task, not a second one.
    if (!created) io.stderr.write(`task ${task.id} was submitted before with the same spec (it is ${task.state}); not submitted again\n`);
    if (flags.json) writeJson(io.stdout, task);
    else io.stdout.write(`${task.id}\n`);
    return 0;
  });
}

/** A run command on a silent program of its own: its options and parsing, without its action. */
function scratchRunCommand(io: CliIo): { program: Command; run: Command } {
  const program = new Command('berth')
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({ writeOut: () => undefined, writeErr: () => undefined });
  addRunCommand(program, io, () => undefined);
  const run = program.commands.find((c) => c.name() === 'run');
  if (!run) throw new Error('addRunCommand added no run command');
  return { program, run };
}

/**
 * Parses argv as `berth run` would and says whether it is a detached run, with its arguments. The
 * run command's own options are reused (addRunCommand on a scratch program whose action only
 * captures), so `run --detach` accepts exactly what `run` accepts.
 */
function parseDetachedRun(argv: readonly string[], io: CliIo): Promise<{ image: string; command: string[]; flags: RunFlags } | undefined> {
  if (argv[0] !== 'run') return Promise.resolve(undefined);
  const { program: scratch, run } = scratchRunCommand(io);
  let captured: { image: string; command: string[]; flags: RunFlags } | undefined;
  run.option('-d, --detach', 'submit the task to the agent and print its id, as berth submit does').action((image: string, command: string[], flags: RunFlags) => {
    captured = { image, command, flags };
  });
  // A usage error is the real parse's to report.
  return scratch.parseAsync([...argv], { from: 'user' }).then(
    () => (captured?.flags.detach ? captured : undefined),
    () => undefined,
  );
}

/**
 * Handles `berth run --detach …` (or `-d`) as `berth submit …`; resolves undefined for anything
 * else, which the program then parses as usual.
 */
export async function runDetached(argv: readonly string[], io: CliIo): Promise<number | undefined> {
  const detached = await parseDetachedRun(argv, io);
  if (!detached) return undefined;
  if (detached.flags.keep) io.stderr.write('berth: --keep has no effect with --detach: the agent removes a task\'s container when it ends\n');
  return submitTask(io, detached.image, detached.command, detached.flags);
}

/** Adds `-d, --detach` to the run command's help; the work is `runDetached`'s. */
export function describeDetachOnRun(program: Command): void {
  program.commands.find((c) => c.name() === 'run')?.option('-d, --detach', 'submit the task to the agent and print its id, as berth submit does');
}

/** `--filter state=running`, `--filter label=k=v`, as docker ps spells them. */
function parseFilters(values: readonly string[]): { state: TaskState[]; label: string[] } {
  const state: TaskState[] = [];
  const label: string[] = [];
  values.forEach((value, index) => {
    const eq = value.indexOf('=');
    const key = eq < 0 ? value : value.slice(0, eq);
    const rest = eq < 0 ? '' : value.slice(eq + 1);
    if (key === 'state' || key === 'status') {
      if (!(TASK_STATES as readonly string[]).includes(rest)) {
        throw new ValidationError([{ field: `--filter[${index}]`, rule: `state must be one of ${TASK_STATES.join(', ')}` }]);
      }
      state.push(rest as TaskState);
    } else if (key === 'label') {
      if (rest === '') throw new ValidationError([{ field: `--filter[${index}]`, rule: 'label needs a key: label=key or label=key=value' }]);
      label.push(rest);
    } else {
      throw new ValidationError([{ field: `--filter[${index}]`, rule: 'must be state=<state> or label=<key>[=<value>]' }]);
    }
  });
  return { state, label };
}

/** Options of berth run that make no sense for a task the agent runs. */
const RUN_ONLY_OPTIONS = new Set(['--keep', '--tty', '--detach']);

/**
 * Gives a command the same flags as berth run, taken from the run command itself, so that a
 * command line moves between run and submit unchanged and a flag added to run reaches submit.
 */
function addRunStyleOptions(command: Command, io: CliIo): Command {
  for (const option of scratchRunCommand(io).run.options) {
    if (!RUN_ONLY_OPTIONS.has(option.long ?? '')) command.addOption(option);
  }
  return command;
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** Registers the client commands on the program. */
export function addTaskCommands(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);

  addRunStyleOptions(agentCommand(program, 'submit', 'Submit a task to the agent and print its id; it starts when it fits the agent\'s budget'), io)
    .argument('<image>', 'image to run')
    .argument('[command...]', 'command and arguments (default: the image\'s)')
    .passThroughOptions()
    .action((image: string, command: string[], flags: RunFlags & AgentFlags) =>
      run(async () => {
        try {
          return await submitTask(io, image, command, flags);
        } catch (error) {
          // A bad flag, caught before anything was sent.
          io.stderr.write(`${errorLine(error)}\n`);
          return exitCodeForClientError(error);
        }
      }),
    );

  agentCommand(program, 'ps', 'List tasks that have not ended (-a: all)')
    .option('-a, --all', 'also tasks that ended')
    .option('-f, --filter <key=value>', 'state=<state> or label=<key>[=<value>] (repeatable; labels must all match)', collect, [])
    .option('-q, --quiet', 'print task ids only')
    .option('-n, --last <n>', 'at most this many tasks')
    .action((flags: AgentFlags & { all?: boolean; filter: string[]; quiet?: boolean; last?: string }) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const filters = parseFilters(flags.filter);
          const limit = flags.last === undefined ? undefined : Number(flags.last);
          if (limit !== undefined && (!Number.isInteger(limit) || limit < 0)) throw new ValidationError([{ field: '--last', rule: 'must be a whole number, 0 or more' }]);
          const state = filters.state.length > 0 ? filters.state : flags.all ? undefined : UNENDED_STATES;
          const tasks = await client.list({ ...(state ? { state } : {}), label: filters.label, ...(limit !== undefined ? { limit } : {}) });
          if (flags.json) writeJson(io.stdout, tasks);
          else if (flags.quiet) io.stdout.write(tasks.map((t) => `${t.id}\n`).join(''));
          else io.stdout.write(renderTaskTable(tasks, Date.now()));
          return 0;
        }),
      ),
    );

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

  agentCommand(program, 'logs', 'Print a task\'s output: its stdout to stdout, its stderr to stderr')
    .argument('<task-id>')
    .option('-f, --follow', 'keep printing new output until the task\'s output ends')
    .option('--since <time>', 'only output after this time (RFC 3339, e.g. a timestamp printed by -t)')
    .option('-t, --timestamps', 'prefix each line with the engine\'s timestamp')
    .action((taskId: string, flags: AgentFlags & { follow?: boolean; since?: string; timestamps?: boolean }) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const abort = new AbortController();
          const removeInterrupt = io.interrupts.onInterrupt(() => abort.abort());
          try {
            for await (const record of client.logs(taskId, { follow: flags.follow ?? false, ...(flags.since !== undefined ? { since: flags.since } : {}), signal: abort.signal })) {
              if (flags.json) {
                io.stdout.write(`${JSON.stringify(record)}\n`);
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
          return endedByUser(io);
        }),
      ),
    );

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

  agentCommand(program, 'images', 'List the images the agent holds for its tasks, with their holders')
    .action((flags: AgentFlags) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const images = await client.images();
          if (flags.json) writeJson(io.stdout, images);
          else io.stdout.write(renderImageTable(images, Date.now()));
          return 0;
        }),
      ),
    );

  agentCommand(program, 'events', 'Print the agent\'s events as they happen (task states, pulls, removals) until Ctrl-C')
    .addOption(new Option('--filter <type>', 'only events of this type (repeatable)').argParser(collect).default([]))
    .action((flags: AgentFlags & { filter: string[] }) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const abort = new AbortController();
          const removeInterrupt = io.interrupts.onInterrupt(() => abort.abort());
          try {
            const subscription = await client.events({ signal: abort.signal });
            // Says when the subscription is in place: every event after this line is printed.
            io.stderr.write('berth: listening for events (Ctrl-C to stop)\n');
            for await (const event of subscription) {
              if (flags.filter.length > 0 && !flags.filter.includes(event.type)) continue;
              await write(io.stdout, flags.json ? `${JSON.stringify(event)}\n` : `${formatEventLine(event as AgentEvent & Record<string, unknown>)}\n`);
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

/**
 * Runs an operation on each task id, as docker does: every id is tried, each failure is one line on
 * stderr, and the exit code is the first failure's. Prints each id done, or with --json an array of
 * the results.
 */
async function eachTask(io: CliIo, flags: AgentFlags, taskIds: readonly string[], operation: (client: AgentClient, taskId: string) => Promise<TaskView | { id: string; removed: true }>): Promise<number> {
  return withClient(io, flags, async (client) => {
    const results: unknown[] = [];
    let exitCode = 0;
    for (const taskId of taskIds) {
      try {
        results.push(await operation(client, taskId));
        if (!flags.json) io.stdout.write(`${taskId}\n`);
      } catch (error) {
        io.stderr.write(`${errorLine(error)}\n`);
        if (exitCode === 0) exitCode = exitCodeForClientError(error);
      }
    }
    if (flags.json) writeJson(io.stdout, results);
    return exitCode;
  });
}

/** Writes with backpressure: a slow terminal or pipe slows the reading, nothing piles up. */
function write(stream: Writable, text: string): Promise<void> {
  return stream.write(text) ? Promise.resolve() : new Promise((resolve) => stream.once('drain', resolve));
}
