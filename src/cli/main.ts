import { Command, CommanderError } from 'commander';
import { BERTH_VERSION } from '../common/version.js';
import { errorLine } from './output.js';
import { EXIT, exitCodeForError } from './exit-codes.js';
import { addAgentCommand } from './agent.js';
import { addExecCommand } from './exec.js';
import { addPruneCommand } from './prune.js';
import { addRunCommand, type CliIo } from './run.js';
import { addStatsCommand } from './stats.js';
import { describeDetachOnRun, runDetached } from './submit.js';
import { addTaskCommands } from './tasks.js';
import { addGroupCommands } from './group-agent.js';
import { addContextCommand } from './engine-choice.js';

/**
 * The berth program: every command and option, with `setExitCode` receiving each action's exit
 * code. Output goes to io; parse errors throw (exitOverride). `run -d` is handled before it (runDetached).
 */
export function buildProgram(io: CliIo, setExitCode: (code: number) => void): Command {
  const program = new Command('berth')
    .description('Run tasks in Docker containers without leaking anything')
    .version(BERTH_VERSION)
    .option('--context <name>', 'the Docker context of the engine (as docker --context); default DOCKER_HOST, DOCKER_CONTEXT, the docker CLI\'s current context, else the local engine')
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
    });
  // The global --context reaches the commands that speak to the engine through io (engine-choice.ts).
  program.hook('preAction', () => {
    const context = program.opts<{ context?: string }>().context;
    if (context !== undefined) io.context = context;
  });
  addRunCommand(program, io, setExitCode);
  describeDetachOnRun(program);
  addExecCommand(program, io, setExitCode);
  addStatsCommand(program, io, setExitCode);
  addAgentCommand(program, io, setExitCode);
  addTaskCommands(program, io, setExitCode);
  addPruneCommand(program, io, setExitCode);
  addGroupCommands(program, io, setExitCode);
  addContextCommand(program, io, setExitCode);
  return program;
}

/** Runs the berth CLI and resolves with its exit code. Writes to io; never calls process.exit. */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  let exitCode = 0;
  const program = buildProgram(io, (code) => {
    exitCode = code;
  });
  try {
    // `run --detach` is submit in run's clothes; anything else is parsed as usual.
    const detached = await runDetached(argv, io);
    if (detached !== undefined) return detached;
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version are successes; every other commander error is a usage error.
      return error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help' ? 0 : EXIT.usage;
    }
    io.stderr.write(`${errorLine(error)}\n`);
    return exitCodeForError(error);
  }
}
