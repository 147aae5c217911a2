import type { Command } from 'commander';
import os from 'node:os';
import { Option } from 'commander';
import { createAgentLogger, LOG_LEVELS, runDaemon, type DaemonHandle } from '../agent/daemon.js';
import type { AgentConfigInput, HostFacts } from '../agent/config.js';
import type { CliIo } from './run.js';
import { exitCodeForError } from './exit-codes.js';

export type AgentSignal = 'SIGTERM' | 'SIGINT' | 'SIGHUP';

/**
 * What `berth agent` needs of its process: signals, the host's facts and a last-resort exit. The
 * agent's entry point is the only code that touches these; the daemon itself handles no signal.
 */
export interface AgentProcess {
  /** Registers a handler for a signal; returns its removal. */
  onSignal(signal: AgentSignal, handler: () => void): () => void;
  host(): HostFacts;
  /**
   * Ends the process with `code` after `graceMs` if it is still alive then. After a shutdown the
   * engine's waits for still-running containers are the only thing left open: they are abandoned
   * on purpose (the containers keep running and a restarted agent re-attaches them).
   */
  exitAfter(graceMs: number, code: number): void;
}

/** The real process. */
export const nodeAgentProcess: AgentProcess = {
  onSignal(signal, handler) {
    process.on(signal, handler);
    return () => process.off(signal, handler);
  },
  host: () => ({
    uid: process.getuid?.() ?? -1,
    homedir: os.homedir(),
    totalMemoryBytes: os.totalmem(),
    cpuCount: os.cpus().length,
  }),
  exitAfter(graceMs, code) {
    // unref: when nothing else is left the process ends on its own, sooner.
    setTimeout(() => process.exit(code), graceMs).unref();
  },
};

interface AgentFlags {
  config?: string;
  dataDir?: string;
  listen?: string;
  socket?: string;
  logLevel: (typeof LOG_LEVELS)[number];
}

/** How long a shut-down agent waits for stdout to drain before it abandons the engine's waits. */
const EXIT_GRACE_MS = 500;

export function addAgentCommand(program: Command, io: CliIo, setExitCode: (code: number) => void, proc: AgentProcess = nodeAgentProcess): void {
  program
    .command('agent')
    .description('Run the berth agent in the foreground: the API on a unix socket (and optionally TCP), JSON logs on stdout')
    .option('-c, --config <file>', 'YAML configuration file (default: $BERTH_CONFIG, else none)')
    .option('--data-dir <dir>', 'state, logs, socket and token (default ~/.local/share/berth, or /var/lib/berth as root)')
    .option('--listen <host:port>', 'also listen on TCP, e.g. 127.0.0.1:7070')
    .option('--socket <path>', 'the API\'s unix socket (default <data-dir>/agent.sock)')
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
    .action(async (flags: AgentFlags) => {
      setExitCode(await agentCommand(flags, io, proc));
    });
}

async function agentCommand(flags: AgentFlags, io: CliIo, proc: AgentProcess): Promise<number> {
  const logger = createAgentLogger(io.stdout, flags.logLevel);
  const configFlags: AgentConfigInput = {
    ...(flags.dataDir !== undefined ? { dataDir: flags.dataDir } : {}),
    ...(flags.listen !== undefined ? { listen: flags.listen } : {}),
    ...(flags.socket !== undefined ? { socketPath: flags.socket } : {}),
  };

  let daemon: DaemonHandle | undefined;
  let stopRequested: (signal: AgentSignal) => void = () => undefined;
  const stopped = new Promise<AgentSignal>((resolve) => (stopRequested = resolve));
  let stopping = false;
  const onStop = (signal: AgentSignal) => () => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'signal received');
    stopRequested(signal);
  };
  const removers = [
    proc.onSignal('SIGTERM', onStop('SIGTERM')),
    proc.onSignal('SIGINT', onStop('SIGINT')),
    proc.onSignal('SIGHUP', () => {
      logger.info({ signal: 'SIGHUP' }, 'signal received');
      // Before the agent is up there is nothing to reload: the configuration is being read now.
      daemon?.reload();
    }),
  ];
  try {
    const starting = runDaemon({ file: flags.config, env: io.env, flags: configFlags, host: proc.host() }, logger);
    const first = await Promise.race([starting.then((handle) => ({ handle })), stopped.then((signal) => ({ signal }))]);
    if ('signal' in first) {
      // Stopped while starting (waiting for the engine, say): nothing runs yet that needs closing
      // but what starting opened, so the agent finishes starting in the background and exits.
      void starting.then((handle) => handle.shutdown()).catch(() => undefined);
      proc.exitAfter(EXIT_GRACE_MS, 0);
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
    if ('error' in next) {
      proc.exitAfter(EXIT_GRACE_MS, exitCodeForError(next.error));
      throw next.error;
    }
    proc.exitAfter(EXIT_GRACE_MS, 0);
    return 0;
  } finally {
    for (const remove of removers) remove();
  }
}
