import type { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { ValidationError, type FieldIssue } from '../common/errors.js';
import { cliEngine } from './engine-choice.js';
import type { ExecExitStatus, ExecOptions, ExecSession } from '../engine/engine.js';
import type { AgentClient, AgentExecExit, AgentExecSession } from '../agent/client.js';
import { execInTask } from '../tasks/exec.js';
import { commandFailureLine, EXIT } from './exit-codes.js';
import { exitCodeForSignal } from './interrupts.js';
import { collect, parseEnvFlags } from './flags.js';
import type { CliIo } from './run.js';
import { startTerminalSession, terminalSize } from './terminal.js';
import { withAgentOptions, type AgentFlags } from './client.js';
import { routeTask } from './task-route.js';

/**
 * `berth exec [options] <task-id> <command> [args...]`: runs a command inside the running container
 * of a task, as `docker exec` does. A task of an agent goes through that agent's WebSocket exec
 * (`routeTask`: the agent named by -H/BERTH_HOST, else the default one when it knows the task), so it
 * works from another host and behind the agent's token; otherwise straight through the engine (the
 * container is found by its task id label, so it works for tasks of `berth run --name`; `--owner`
 * picks the owner when several have a task of that id). It exits with the command's exit code (127
 * when the command is not found, 126 when it is not executable, as docker); 125 when berth refuses
 * (no container, several owners' and no `--owner`, not running) or the engine or agent fails; 2 for
 * a usage error; 130 on Ctrl-C, 143 on SIGTERM.
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
  withAgentOptions(program
    .command('exec'))
    .description('Run a command in the running container of a task, and exit with its exit code')
    .argument('<task-id>', 'the task: an agent\'s (through the agent), else found on the engine by its io.berth.task-id label')
    .argument('<command...>', 'command and arguments')
    // Options after the task id belong to the command: `berth exec t ls -l`.
    .passThroughOptions()
    .option('-i, --interactive', 'forward stdin to the command')
    .option('-t, --tty', 'allocate a pseudo-TTY (stdin in raw mode with -i on a terminal)')
    .option('-e, --env <KEY=VALUE>', 'set an environment variable (repeatable; KEY alone passes berth\'s own)', collect, [])
    .option('-w, --workdir <dir>', 'working directory inside the container (absolute)')
    .option('-u, --user <user>', 'user[:group] or uid[:gid]')
    .option('--owner <owner-id>', 'the owner of the task (cli for berth run, an agent\'s id), when several owners have a task of that id')
    .action(async (taskId: string, command: string[], flags: ExecFlags & AgentFlags) => {
      setExitCode(await execCommand(taskId, command, flags, io));
    });
}

async function execCommand(taskId: string, command: string[], flags: ExecFlags & AgentFlags, io: CliIo): Promise<number> {
  const options = execOptionsFromFlags(command, flags, io.env);
  const route = await routeTask(io, flags, taskId);
  if (route.via === 'agent') {
    try {
      return await execThroughAgent(route.client, route.task.id, options, io);
    } finally {
      route.client.close();
    }
  }
  return execThroughEngine(taskId, options, flags.owner, io);
}

/** The parts of an exec the terminal and the output need, whichever way it runs. */
interface RunningExec {
  stdout: NodeJS.ReadableStream;
  stderr: NodeJS.ReadableStream;
  stdin?: NodeJS.WritableStream;
  resize(size: { rows: number; columns: number }): Promise<void>;
  exitStatus: Promise<ExecExitStatus | AgentExecExit>;
}

/** `berth exec` through the agent's WebSocket: the task is the agent's. */
async function execThroughAgent(client: AgentClient, taskId: string, options: ExecOptions, io: CliIo): Promise<number> {
  const abort = new AbortController();
  const removeInterrupt = io.interrupts.onInterrupt(() => abort.abort());
  const size = options.tty ? terminalSize(io.stdout) : undefined;
  let session: AgentExecSession | undefined;
  try {
    session = await client.exec(taskId, { ...options, ...(size ? { size } : {}), signal: abort.signal });
    const started = session;
    return await followExec({ stdout: started.stdout, stderr: started.stderr, ...(started.stdin ? { stdin: started.stdin } : {}), resize: (next) => started.resize(next), exitStatus: started.exit }, options, io, abort.signal);
  } catch (error) {
    if (abort.signal.aborted) return interruptedExitCode(io);
    throw error;
  } finally {
    removeInterrupt();
    // After Ctrl-C the agent ends the command with the session (docker leaves it running; a
    // remote exec has nobody left to end it).
    session?.close();
  }
}

/** `berth exec` straight to the engine: no agent here, or the task is not the agent's. */
async function execThroughEngine(taskId: string, options: ExecOptions, owner: string | undefined, io: CliIo): Promise<number> {
  const engine = await cliEngine(io);
  const abort = new AbortController();
  const removeInterrupt = io.interrupts.onInterrupt(() => abort.abort());
  let session: ExecSession | undefined;
  try {
    await engine.checkCompatible({ signal: abort.signal });
    session = await execInTask(engine, { taskId, ownerId: owner }, options, abort.signal);
    const started = session;
    return await followExec({ stdout: started.stdout, stderr: started.stderr, ...(started.stdin ? { stdin: started.stdin } : {}), resize: (size) => started.resize(size), exitStatus: started.exitStatus() }, options, io, abort.signal);
  } catch (error) {
    if (abort.signal.aborted) return interruptedExitCode(io);
    throw error;
  } finally {
    removeInterrupt();
    session?.close();
  }
}

/** Connects the terminal to a started exec, copies its output, and resolves with its exit code. */
async function followExec(started: RunningExec, options: ExecOptions, io: CliIo, signal: AbortSignal): Promise<number> {
  const interrupted = new Promise<'interrupted'>((resolve) => {
    if (signal.aborted) resolve('interrupted');
    signal.addEventListener('abort', () => resolve('interrupted'), { once: true });
  });
  const endTerminalSession = startTerminalSession({
    stdin: io.stdin,
    stdout: io.stdout,
    interactive: (options.stdin ?? false) && started.stdin !== undefined,
    tty: options.tty ?? false,
    resize: (size) => started.resize(size),
    ...(started.stdin ? { forwardTo: started.stdin } : {}),
  });
  try {
    const output = Promise.all([pipeline(started.stdout, io.stdout, { end: false }), pipeline(started.stderr, io.stderr, { end: false })]);
    output.catch(() => undefined);
    const exited = started.exitStatus;
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
  } finally {
    endTerminalSession();
  }
}

/** 130 after SIGINT, 143 after SIGTERM: the command itself goes on in the container, as with docker exec. */
function interruptedExitCode(io: CliIo): number {
  return io.interrupts.received ? exitCodeForSignal(io.interrupts.received) : EXIT.interrupted;
}
