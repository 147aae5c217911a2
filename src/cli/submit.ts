import { packLocalPath } from '../tasks/files-in.js';
import { parseCopyFlag } from './cp-in.js';
import { Command } from 'commander';
import type { Readable } from 'node:stream';
import { ValidationError } from '../common/errors.js';
import type { StoredTaskSpec } from '../state/tasks.js';
import { agentCommand, exitCodeForClientError, withAgentOptions, withClient, type AgentFlags } from './client.js';
import { errorLine, writeJson } from './output.js';
import { restartFlag, withFlagNames } from './flags.js';
import { addRunCommand, specFromRunFlags, type CliIo } from './run.js';

/** Reads stdin to its end as text, for `submit -i`: the agent keeps a task's stdin as text. */
async function readText(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

type RunFlags = Parameters<typeof specFromRunFlags>[2] & { interactive?: boolean; name?: string; keep?: boolean; detach?: boolean; restart?: string; restartDelay?: string; openStdin?: boolean };

async function submitTask(io: CliIo, image: string, command: string[], flags: RunFlags & AgentFlags): Promise<number> {
  if (flags.tty) throw new ValidationError([{ field: '--tty', rule: 'is not supported by the agent (it reads output from the engine log); use berth run -t' }]);
  const { interactive, restart, restartDelay, copy, ...rest } = flags;
  const copies = (copy ?? []).map((value, index) => parseCopyFlag(value, index));
  const spec = specFromRunFlags(image, command, { ...rest, interactive: false }, io, 'agent') as StoredTaskSpec;
  if (restart !== undefined) spec.restart = restartFlag(restart, restartDelay);
  else if (restartDelay !== undefined) throw new ValidationError([{ field: '--restart-delay', rule: 'needs --restart on-failure' }]);
  if (interactive) spec.stdin = await readText(io.stdin);
  if (flags.openStdin) spec.openStdin = true;
  return withClient(io, flags, async (client) => {
    // Each --copy is uploaded first (streamed from disk), then named by the spec: the agent extracts it before the task starts.
    if (copies.length > 0) {
      const uploads: NonNullable<StoredTaskSpec['files']> = [];
      for (const entry of copies) uploads.push({ upload: (await client.upload(packLocalPath(entry.local, entry.path))).id, path: '/' });
      spec.files = uploads;
    }
    const { task, created } = await client.submitTask({ ...(flags.name !== undefined ? { id: flags.name } : {}), spec }).catch((error: unknown) => {
      // The agent names spec fields (`spec.resources.memory`); the user typed flags.
      throw withFlagNames(error, { id: '--name' });
    });
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
export function parseDetachedRun(argv: readonly string[], io: CliIo): Promise<{ image: string; command: string[]; flags: RunFlags & AgentFlags } | undefined> {
  const { context, rest } = withoutGlobalOptions(argv);
  if (rest[0] !== 'run') return Promise.resolve(undefined);
  const { program: scratch, run } = scratchRunCommand(io);
  let captured: { image: string; command: string[]; flags: RunFlags & AgentFlags } | undefined;
  addDetachOptions(run).action((image: string, command: string[], flags: RunFlags & AgentFlags) => {
    captured = { image, command, flags };
  });
  // A usage error is the real parse's to report.
  return scratch.parseAsync([...rest], { from: 'user' }).then(
    () => {
      if (!captured?.flags.detach) return undefined;
      // The agent runs a detached task on the engine of its own configuration (engine.host): a
      // context given here would be ignored, so it is refused, as agent flags are without -d.
      if (context !== undefined) {
        throw new ValidationError([{ field: '--context', rule: 'selects the engine berth run uses itself; with --detach (-d) the agent runs the task on the engine its configuration names (engine.host, engine.context)' }]);
      }
      return captured;
    },
    (error: unknown) => {
      if (error instanceof ValidationError) throw error;
      return undefined;
    },
  );
}

/** argv without the program's global options (`--context <name>`, `--context=<name>`) before the command, and the context they name. */
function withoutGlobalOptions(argv: readonly string[]): { context: string | undefined; rest: readonly string[] } {
  let context: string | undefined;
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--context' && i + 1 < argv.length) context = argv[++i];
    else if (arg.startsWith('--context=')) context = arg.slice('--context='.length);
    else break;
  }
  return { context, rest: argv.slice(i) };
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

/** `-d` and what a detached run needs to find its agent (address, token, TLS, `--json`) and restart its task, as submit has them. */
function addDetachOptions(run: Command): Command {
  return addOpenStdinOption(
    addRestartOptions(withAgentOptions(run.option('-d, --detach', 'submit the task to the agent and print its id, as berth submit does')).option(
      '--json',
      'with --detach: print the submitted task as JSON',
    )),
  );
}

/** `--open-stdin`: the task's stdin stays open for `berth attach`; only a task the agent runs has attach clients. */
function addOpenStdinOption(command: Command): Command {
  return command.option('--open-stdin', 'keep the task\'s stdin open for berth attach to write to, as docker run -di (with -i: after the input read)');
}

/** The restart policy's flags, as docker run spells them; only the agent restarts tasks. */
function addRestartOptions(command: Command): Command {
  return command
    .option('--restart <policy>', 'restart policy: no (default) or on-failure[:max-restarts], as docker run --restart; each restart is a new container of the one task (see berth inspect)')
    .option('--restart-delay <duration>', 'pause before each restart with a unit, e.g. 500ms or 10s (default 15s); with --restart on-failure');
}

/** The options only a detached run uses (the agent's, its restart policy, and stdin kept open for attach). */
const AGENT_ONLY_FLAGS = ['host', 'token', 'tlscacert', 'tlscert', 'tlskey', 'tlsverify', 'json', 'restart', 'restartDelay', 'openStdin'] as const;

/**
 * Adds `-d, --detach` and the agent's options to the run command's help; the work is `runDetached`'s.
 * A run that reaches the command itself is not detached: an agent option there would be ignored
 * while the task runs here, so it is refused, naming the flag.
 */
export function describeDetachOnRun(program: Command): void {
  const run = program.commands.find((c) => c.name() === 'run');
  if (!run) return;
  addDetachOptions(run).hook('preAction', (command) => {
    const flags = command.opts<Record<string, unknown>>();
    const given = AGENT_ONLY_FLAGS.filter((flag) => flags[flag] !== undefined && flags[flag] !== false);
    if (given.length > 0) {
      throw new ValidationError(given.map((flag) => ({ field: `--${flag}`, rule: 'needs --detach: berth run without it runs the task here, through the engine, not on an agent' })));
    }
  });
}

/** Options of berth run that make no sense for a task the agent runs. */
const RUN_ONLY_OPTIONS = new Set(['--keep', '--tty', '--detach']);

/**
 * Help of run's options that says something else of a task the agent runs: berth submit returns
 * at once (it never exits 124), and the agent gives a task without a limit its configured default.
 */
export const SUBMIT_OPTION_HELP: Readonly<Record<string, string>> = Object.freeze({
  '--memory': 'memory limit with a unit, e.g. 512m or 1g (swap disabled); default the agent\'s defaults.resources.memory',
  '--cpus': 'CPUs, e.g. 0.5; default the agent\'s defaults.resources.cpuMilli',
  '--pids-limit': 'maximum number of processes; default the agent\'s defaults.resources.pidsLimit',
  '--timeout': 'run time limit with a unit, e.g. 30s or 5m; 0 for none (default); the agent stops the task, which ends as timed-out (see berth inspect)',
  '--interactive': 'read stdin to its end and give it to the task as its input',
  '--name': 'task id; submitting the same id with the same spec again is that task, not a second one',
  '--registry-auth': 'pull with the registry credentials configured in the agent under registries.<name>',
});

/**
 * Gives a command the same flags as berth run, taken from the run command itself, so that a
 * command line moves between run and submit unchanged and a flag added to run reaches submit.
 * Where the help says something of `berth run` only, submit's own wording replaces it.
 */
function addRunStyleOptions(command: Command, io: CliIo): Command {
  for (const option of scratchRunCommand(io).run.options) {
    const long = option.long ?? '';
    if (RUN_ONLY_OPTIONS.has(long)) continue;
    // The scratch command's options are this command's alone: their help can be reworded in place.
    const help = SUBMIT_OPTION_HELP[long];
    if (help !== undefined) option.description = help;
    command.addOption(option);
  }
  return command;
}

/** `berth submit`: the task goes to the agent, which starts it when it fits its budget. */
export function addSubmitCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
  addOpenStdinOption(addRestartOptions(addRunStyleOptions(agentCommand(program, 'submit', 'Submit a task to the agent and print its id; it starts when it fits the agent\'s budget'), io)))
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
}
