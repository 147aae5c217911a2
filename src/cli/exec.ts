import type { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { ValidationError, type FieldIssue } from '../common/errors.js';
import { engineOptionsFromEnv } from '../engine/connect.js';
import { Engine, type ExecOptions, type ExecSession } from '../engine/engine.js';
import { execInTask } from '../tasks/exec.js';
import { commandFailureLine, EXIT } from './exit-codes.js';
import { exitCodeForSignal } from './interrupts.js';
import { collect, parseEnvFlags } from './flags.js';
import type { CliIo } from './run.js';
import { startTerminalSession } from './terminal.js';

/**
 * `berth exec [options] <task-id> <command> [args...]`: runs a command inside the running container
 * of a task, as `docker exec` does, straight through the engine (the container is found by its task
 * id label, so it works for tasks of `berth run --name` and of an agent alike; `--owner` picks the
 * owner when several have a task of that id). It exits with the command's exit code (127 when the
 * command is not found, 126 when it is not executable, as docker); 125 when berth
 * refuses (no container, several owners' and no `--owner`, not running) or the engine fails; 2 for a usage error; 130 on Ctrl-C, 143 on SIGTERM.
 */

export interface ExecFlags {
  interactive?: boolean;
  tty?: boolean;
  env: string[];
  workdir?: string;
  user?: string;
  /** The owner whose task it is (`cli` for `berth run`, an agent's id), when several owners use one task id. */
  owner?: string;
}

/**
 * The exec options for `berth exec` flags. `-e KEY` passes berth's own value of KEY, as docker
 * does. Every bad value is reported at once, naming its flag.
 */
export function execOptionsFromFlags(command: readonly string[], flags: ExecFlags, env: Readonly<Record<string, string | undefined>>): ExecOptions {
  const issues: FieldIssue[] = [];
  if (command.length === 0 || command[0] === '') issues.push({ field: 'command', rule: 'is required' });
  for (const value of flags.env) {
    if (value === '' || value.startsWith('=')) issues.push({ field: '--env', rule: `"${value}" needs a variable name: KEY=VALUE or KEY` });
  }
  if (flags.workdir !== undefined && !flags.workdir.startsWith('/')) issues.push({ field: '--workdir', rule: `"${flags.workdir}" must be an absolute path` });
  if (flags.user !== undefined && flags.user.trim() === '') issues.push({ field: '--user', rule: 'must be a user, uid, user:group or uid:gid' });
  if (issues.length > 0) throw new ValidationError(issues);
  const options: ExecOptions = {
    cmd: [...command],
    tty: flags.tty ?? false,
    stdin: flags.interactive ?? false,
    env: Object.entries(parseEnvFlags(flags.env, env)).map(([key, value]) => `${key}=${value}`),
  };
  if (flags.workdir !== undefined) options.workdir = flags.workdir;
  if (flags.user !== undefined) options.user = flags.user;
  return options;
}

export function addExecCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  program
    .command('exec')
    .description('Run a command in the running container of a task, and exit with its exit code')
    .argument('<task-id>', 'the task (found by its io.berth.task-id label)')
    .argument('<command...>', 'command and arguments')
    // Options after the task id belong to the command: `berth exec t ls -l`.
    .passThroughOptions()
    .option('-i, --interactive', 'forward stdin to the command')
    .option('-t, --tty', 'allocate a pseudo-TTY (stdin in raw mode with -i on a terminal)')
    .option('-e, --env <KEY=VALUE>', 'set an environment variable (repeatable; KEY alone passes berth\'s own)', collect, [])
    .option('-w, --workdir <dir>', 'working directory inside the container (absolute)')
    .option('-u, --user <user>', 'user[:group] or uid[:gid]')
    .option('--owner <owner-id>', 'the owner of the task (cli for berth run, an agent\'s id), when several owners have a task of that id')
    .action(async (taskId: string, command: string[], flags: ExecFlags) => {
      setExitCode(await execCommand(taskId, command, flags, io));
    });
}

async function execCommand(taskId: string, command: string[], flags: ExecFlags, io: CliIo): Promise<number> {
  const options = execOptionsFromFlags(command, flags, io.env);
  const engine = new Engine(engineOptionsFromEnv(io.env));
  const abort = new AbortController();
  const interrupted = new Promise<'interrupted'>((resolve) => abort.signal.addEventListener('abort', () => resolve('interrupted'), { once: true }));
  const removeInterrupt = io.interrupts.onInterrupt(() => abort.abort());
  let session: ExecSession | undefined;
  let endTerminalSession = (): void => undefined;
  try {
    await engine.checkCompatible({ signal: abort.signal });
    session = await execInTask(engine, { taskId, ownerId: flags.owner }, options, abort.signal);
    const started = session;
    endTerminalSession = startTerminalSession({
      stdin: io.stdin,
      stdout: io.stdout,
      interactive: (options.stdin ?? false) && started.stdin !== undefined,
      tty: options.tty ?? false,
      resize: (size) => started.resize(size),
      ...(started.stdin ? { forwardTo: started.stdin } : {}),
    });
    const output = Promise.all([pipeline(started.stdout, io.stdout, { end: false }), pipeline(started.stderr, io.stderr, { end: false })]);
    output.catch(() => undefined);
    const exited = started.exitStatus();
    // After Ctrl-C nobody awaits it; its failure then is no news.
    exited.catch(() => undefined);
    const outcome = await Promise.race([exited, interrupted]);
    if (outcome === 'interrupted') return interruptedExitCode(io);
    // The exit code is known once the engine closed the connection; what it sent may still be on its way out.
    await output.catch(() => undefined);
    endTerminalSession();
    // The runtime's own words are on stdout already (as with docker); this line says what berth makes of them.
    if (outcome.commandFailure) io.stderr.write(`${commandFailureLine(outcome.commandFailure)}\n`);
    return outcome.exitCode;
  } catch (error) {
    if (abort.signal.aborted) return interruptedExitCode(io);
    throw error;
  } finally {
    removeInterrupt();
    endTerminalSession();
    session?.close();
  }
}

/** 130 after SIGINT, 143 after SIGTERM: the command itself goes on in the container, as with docker exec. */
function interruptedExitCode(io: CliIo): number {
  return io.interrupts.received ? exitCodeForSignal(io.interrupts.received) : EXIT.interrupted;
}
