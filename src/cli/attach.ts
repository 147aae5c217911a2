import type { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { isBerthError, ValidationError } from '../common/errors.js';
import type { AgentClient, AttachEnd } from '../agent/client.js';
import { withAgentOptions, withClient, type AgentFlags } from './client.js';
import { EXIT } from './exit-codes.js';
import { exitCodeForSignal, type StopSignal } from './interrupts.js';
import { errorLine } from './output.js';
import type { CliIo } from './run.js';

/**
 * `berth attach [--no-stdin] [--sig-proxy=true|false] <task>`: a running task's live output on this
 * terminal, as `docker attach`, through the agent (attach is the agent's alone: its WebSocket route).
 * stdout and stderr go to this process's stdout and stderr; stdin is forwarded when the task keeps
 * its stdin open (`berth submit --open-stdin`, spec `openStdin`) and `--no-stdin` is not given; the
 * end of this stdin is this client's only, the task's stdin stays open. When the task ends, berth
 * exits with its exit code. With sig-proxy (the default) Ctrl-C and SIGTERM are sent to the task
 * (the agent's kill route) and berth stays attached until the task ends; a second one (or the task
 * not ending within the cleanup bound, BERTH_CLEANUP_TIMEOUT, 15 s) detaches. Without it, Ctrl-C
 * detaches at once (exit 130; SIGTERM 143) and the task goes on, as detaching always leaves it.
 * A task that is not running is refused (exit 1, BERTH_TASK_STATE).
 */

export interface AttachFlags extends AgentFlags {
  /** False with --no-stdin. */
  stdin: boolean;
  sigProxy: boolean;
}

/** `--sig-proxy`, `--sig-proxy=true` or `--sig-proxy=false`, as docker spells a boolean flag. */
export function sigProxyFlag(value: string | undefined): boolean {
  if (value === undefined || value === 'true') return true;
  if (value === 'false') return false;
  throw new ValidationError([{ field: '--sig-proxy', rule: `must be true or false, as --sig-proxy=false (a task id right after --sig-proxy is taken for its value), not ${JSON.stringify(value)}` }]);
}

export function addAttachCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  withAgentOptions(program.command('attach').description('Attach to a running task\'s output (and its stdin, when it keeps it open), as docker attach; exits with the task\'s exit code'))
    .argument('<task>', 'the task: its id or a unique prefix of it')
    .option('--no-stdin', 'do not forward stdin to the task')
    .option('--sig-proxy [bool]', 'send Ctrl-C (SIGINT) and SIGTERM to the task (true, the default); false: Ctrl-C detaches and the task goes on', (value: string) => value, 'true')
    .action((taskId: string, raw: AgentFlags & { stdin: boolean; sigProxy: string | boolean }) => {
      let sigProxy: boolean;
      try {
        sigProxy = sigProxyFlag(raw.sigProxy === true ? undefined : String(raw.sigProxy));
      } catch (error) {
        // A bad flag, caught before anything was sent.
        io.stderr.write(`${errorLine(error)}\n`);
        setExitCode(EXIT.usage);
        return;
      }
      return withClient(io, raw, async (client) => attach(io, client, taskId, { ...raw, sigProxy })).then(setExitCode);
    });
}

/** Attaches to one task until it ends (its exit code) or this client detaches (128 + the signal). */
async function attach(io: CliIo, client: AgentClient, taskId: string, flags: AttachFlags): Promise<number> {
  const task = await client.get(taskId);
  const session = await client.attach(task.id);
  const forwardStdin = flags.stdin && task.spec.openStdin === true;
  let detachedBy: StopSignal | undefined;
  const removeInterrupt = io.interrupts.onInterrupt((signal) => {
    if (!flags.sigProxy) {
      detachedBy = signal;
      session.detach();
      return;
    }
    // Sent to the task; the attach goes on until the task ends (or a second signal ends berth).
    client.kill(task.id, signal).catch((error: unknown) => {
      // The task ended meanwhile: its exit message is on its way.
      if (!isBerthError(error, 'BERTH_TASK_STATE')) io.stderr.write(`${errorLine(error)}\n`);
    });
  });
  const output = Promise.all([
    pipeline(session.stdout, io.stdout, { end: false }).catch(() => undefined),
    pipeline(session.stderr, io.stderr, { end: false }).catch(() => undefined),
  ]);
  if (forwardStdin) io.stdin.pipe(session.stdin);
  let end: AttachEnd;
  try {
    end = await session.end;
    await output;
  } finally {
    removeInterrupt();
    if (forwardStdin) {
      io.stdin.unpipe(session.stdin);
      // What this process has not read of its stdin is not the task's any more; nothing must hold the process open.
      io.stdin.pause();
      io.stdin.destroy();
    }
  }
  if (end.kind === 'exit') return end.exitCode;
  return exitCodeForSignal(detachedBy ?? 'SIGINT');
}
