import type { Command } from 'commander';
import os from 'node:os';
import { Option } from 'commander';
import { chooseLogFormat, createAgentLogger, LOG_FORMAT_CHOICES, LOG_LEVELS, runDaemon, type DaemonHandle } from '../agent/daemon.js';
import { ValidationError } from '../common/errors.js';
import type { AgentConfigInput, HostFacts } from '../agent/config.js';
import type { CliIo } from './run.js';
import type { StopSignal } from './interrupts.js';

/**
 * What `berth agent` needs of its process beyond the stop signals (SIGTERM and SIGINT come through
 * CliIo's interrupts, as for every command): SIGHUP and the host's facts. The agent's entry point is
 * the only code that touches these; the daemon itself handles no signal.
 */
export interface AgentProcess {
  /** Registers a handler for SIGHUP; returns its removal. */
  onReloadSignal(handler: () => void): () => void;
  host(): HostFacts;
}

/** The real process. */
export const nodeAgentProcess: AgentProcess = {
  onReloadSignal(handler) {
    process.on('SIGHUP', handler);
    return () => process.off('SIGHUP', handler);
  },
  host: () => ({
    uid: process.getuid?.() ?? -1,
    homedir: os.homedir(),
    totalMemoryBytes: os.totalmem(),
    cpuCount: os.cpus().length,
  }),
};

interface AgentFlags {
  config?: string;
  dataDir?: string;
  listen?: string;
  socket?: string;
  logLevel: (typeof LOG_LEVELS)[number];
  logFormat?: string;
}

/** The environment variable that sets the agent's log format when `--log-format` is not given. */
export const LOG_FORMAT_ENV = 'BERTH_LOG_FORMAT';

/** The log format asked for: `--log-format`, else BERTH_LOG_FORMAT (checked here, so its error names it), else `auto`. */
function askedLogFormat(flags: AgentFlags, env: CliIo['env']): string {
  if (flags.logFormat !== undefined) return flags.logFormat;
  const fromEnv = env[LOG_FORMAT_ENV]?.trim();
  if (fromEnv === undefined || fromEnv === '') return 'auto';
  if (!LOG_FORMAT_CHOICES.includes(fromEnv)) throw new ValidationError([{ field: LOG_FORMAT_ENV, rule: `must be ${LOG_FORMAT_CHOICES.join(', ')}, not "${fromEnv}"` }]);
  return fromEnv;
}

export function addAgentCommand(program: Command, io: CliIo, setExitCode: (code: number) => void, proc: AgentProcess = nodeAgentProcess): void {
  program
    .command('agent')
    .description('Run the berth agent in the foreground: the API on a unix socket (and optionally TCP), logs on stdout (lines for people on a terminal, else JSON)')
    .option('-c, --config <file>', 'YAML configuration file (default: $BERTH_CONFIG, else none)')
    .option('--data-dir <dir>', 'state, logs, socket and token (default ~/.local/share/berth, or /var/lib/berth as root)')
    .option('--listen <host:port>', 'also listen on TCP, e.g. 127.0.0.1:7070 (not loopback: needs tls.cert and tls.key, or tls.allowInsecure)')
    .option('--socket <path>', 'the API\'s unix socket (default <data-dir>/agent.sock)')
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
    .addOption(new Option('--log-format <format>', `log lines for people (pretty) or JSON; auto: pretty on a terminal, else JSON (default $${LOG_FORMAT_ENV}, else auto)`).choices(LOG_FORMAT_CHOICES))
    .action(async (flags: AgentFlags) => {
      setExitCode(await agentCommand(flags, io, proc));
    });
}

/**
 * Runs the agent until SIGTERM or SIGINT, then shuts it down and resolves with 0. The shutdown is
 * the command's cleanup (see interrupts.ts): a second signal, or a shutdown that outlives the
 * cleanup bound (a start stuck on an engine call that never answers, say), exits at once with
 * 130/143. Running containers keep running either way; the next agent follows them.
 */
async function agentCommand(flags: AgentFlags, io: CliIo, proc: AgentProcess): Promise<number> {
  const isTerminal = (io.stdout as Partial<NodeJS.WriteStream>).isTTY === true;
  const format = chooseLogFormat(askedLogFormat(flags, io.env), isTerminal);
  // Colours only for a terminal that wants them (https://no-color.org).
  const logger = createAgentLogger(io.stdout, flags.logLevel, { format, colors: isTerminal && !io.env.NO_COLOR });
  const configFlags: AgentConfigInput = {
    ...(flags.dataDir !== undefined ? { dataDir: flags.dataDir } : {}),
    ...(flags.listen !== undefined ? { listen: flags.listen } : {}),
    ...(flags.socket !== undefined ? { socketPath: flags.socket } : {}),
  };

  let daemon: DaemonHandle | undefined;
  let stopRequested: (signal: StopSignal) => void = () => undefined;
  const stopped = new Promise<StopSignal>((resolve) => (stopRequested = resolve));
  const removers = [
    io.interrupts.onInterrupt((signal) => {
      logger.info({ signal }, 'signal received');
      stopRequested(signal);
    }),
    io.interrupts.leaving(() => (daemon ? 'its running tasks, which keep running (the next agent follows them)' : undefined)),
    proc.onReloadSignal(() => {
      logger.info({ signal: 'SIGHUP' }, 'signal received');
      // Before the agent is up there is nothing to reload: the configuration is being read now.
      daemon?.reload();
    }),
  ];
  try {
    const starting = runDaemon({ file: flags.config, env: io.env, flags: configFlags, host: proc.host() }, logger);
    const first = await Promise.race([starting.then((handle) => ({ handle })), stopped.then((signal) => ({ signal }))]);
    if ('signal' in first) {
      // Stopped while starting: what starting opens (the store, the socket) is closed as it comes up.
      const handle = await starting.catch(() => undefined);
      await handle?.shutdown();
      return 0;
    }
    daemon = first.handle;
    // Listening now; the start goes on (waiting for the engine, recovering). A start that fails (an
    // engine too old for berth) ends the agent, as a stop signal does.
    const failedStart = daemon.ready.then(
      () => new Promise<never>(() => undefined),
      (error: unknown) => ({ error }),
    );
    const next = await Promise.race([stopped.then((signal) => ({ signal })), failedStart]);
    await daemon.shutdown();
    if ('error' in next) throw next.error;
    return 0;
  } finally {
    for (const remove of removers) remove();
  }
}
