import type { Writable } from 'node:stream';
import { pino, type Level, type Logger as PinoLogger } from 'pino';
import pinoPretty from 'pino-pretty';
import { codeOf, isBerthError, messageOf, stackOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { REDACTED } from '../spec/registry-auth.js';
import { buildAgent, type AgentRuntime } from './agent.js';
import type { ConfigSources, ReloadResult } from './config.js';
import { serveAgent } from './http/serve.js';

/** pino's levels that the agent accepts for `--log-level`. */
export const LOG_LEVELS: readonly Level[] = Object.freeze(['trace', 'debug', 'info', 'warn', 'error', 'fatal']);

/** How the agent writes its log: one JSON object per line (for a collector), or a line for people (pino-pretty). */
export type LogFormat = 'json' | 'pretty';

/** The formats `--log-format` and BERTH_LOG_FORMAT take: `auto` is pretty on a terminal, JSON otherwise. */
export const LOG_FORMAT_CHOICES: readonly string[] = Object.freeze(['auto', 'json', 'pretty']);

/**
 * The format the agent logs in: the one asked for (`json` or `pretty`), else pretty when its log
 * goes to a terminal (someone is reading it) and JSON otherwise (a file, a pipe, journald).
 */
export function chooseLogFormat(asked: string | undefined, isTerminal: boolean): LogFormat {
  if (asked === 'json' || asked === 'pretty') return asked;
  return isTerminal ? 'pretty' : 'json';
}

/**
 * Fields the agent's log never shows, at any of the first four levels of a log line's fields: the
 * secrets of registry credentials, and the cluster's PostgreSQL URL (it may hold a password). Nothing
 * the agent logs carries them (a spec is never logged, errors name the registry and the credentials'
 * source only, the cluster's database is logged masked); this is the guard should one slip in.
 */
export const LOG_REDACT_PATHS: readonly string[] = Object.freeze(
  ['password', 'identityToken', 'identitytoken', 'postgresUrl', 'token'].flatMap((key) => [key, `*.${key}`, `*.*.${key}`, `*.*.*.${key}`]),
);

/**
 * The agent's structured log (pino) on `destination`, adapted to the library's Logger interface:
 * one JSON object per line, or with `format: 'pretty'` one line for people (time, level, message,
 * then the fields; colours with `colors`). Writes are synchronous, so nothing logged before an exit
 * is lost. Default level "info", format "json".
 */
export function createAgentLogger(
  destination: Writable,
  level: Level = 'info',
  options: { format?: LogFormat; colors?: boolean } = {},
): Logger & { readonly pino: PinoLogger } {
  const stream =
    options.format === 'pretty'
      ? pinoPretty({ destination, sync: true, colorize: options.colors ?? false, translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true })
      : destination;
  const log = pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime, redact: { paths: [...LOG_REDACT_PATHS], censor: REDACTED } }, stream);
  return {
    pino: log,
    debug: (meta, message) => log.debug(meta, message),
    info: (meta, message) => log.info(meta, message),
    warn: (meta, message) => log.warn(meta, message),
    error: (meta, message) => log.error(meta, message),
  };
}

/** A running agent: its parts, where it listens, and its two lifecycle operations. */
export interface DaemonHandle {
  readonly runtime: AgentRuntime;
  /** The unix socket the API listens on. */
  readonly socketPath: string;
  /** The TCP address, when the configuration asks for one. */
  readonly tcp?: { host: string; port: number } | undefined;
  /**
   * Resolves once the engine answered and the tasks of an earlier run are recovered; until then the
   * API answers health and reads, and refuses work. Rejects if the agent cannot start (an engine too
   * old for berth).
   */
  readonly ready: Promise<void>;
  /**
   * Re-reads the configuration file and swaps it atomically. Logs the keys that changed (and those
   * that need a restart), or the error naming the bad keys, in which case the old configuration
   * stays. Then re-reads the token file (a new token is logged once, as "API token rotated": new
   * requests need it, open connections and streams stay open) and the TLS files of the TCP
   * listener (new connections use them). Each part that fails keeps its old value and is logged
   * with the error. Never throws for an invalid file.
   */
  reload(): ReloadResult;
  /**
   * Stops taking work, closes the API (its sockets), then the runtime (store). Running containers
   * keep running: a restarted agent re-attaches them. Safe to call more than once.
   */
  shutdown(): Promise<void>;
}

/**
 * Starts the agent: builds it (buildAgent), serves its API (serveAgent), and returns a handle while
 * it waits for the engine and recovers (`ready`), so that health and reads answer even while a
 * wedged engine holds up the start. Handles no process signal itself: the caller (the CLI's entry
 * point) maps SIGHUP to `reload()` and SIGTERM/SIGINT to `shutdown()`. A configuration error throws
 * a ValidationError naming the key, before anything listens.
 */
export async function runDaemon(sources: ConfigSources, logger: Logger): Promise<DaemonHandle> {
  const runtime = await buildAgent(sources, logger);
  let server: Awaited<ReturnType<typeof serveAgent>>;
  try {
    server = await serveAgent(runtime);
  } catch (error) {
    // The runtime is up (its store is open): close it, or a failed listen leaves the store locked.
    await runtime.close();
    throw error;
  }
  const config = runtime.config.current();
  logger.info(
    { agentId: runtime.agentId, socketPath: server.socketPath, ...(server.tcp ? { tcp: `${server.tcp.host}:${server.tcp.port}` } : {}), dataDir: config.dataDir, ...(config.file ? { configFile: config.file } : {}) },
    'agent listening',
  );
  // Membership begins once the API listens: other nodes reach this one at its TCP address.
  runtime.joinCluster(server.tcp);
  const uncontain = containStrayRejections(logger);
  const ready = runtime.start().then(() => logger.info({ agentId: runtime.agentId }, 'agent started'));
  // The caller awaits `ready`; this keeps an early failure from counting as unhandled meanwhile.
  ready.catch(() => undefined);

  let shuttingDown: Promise<void> | undefined;
  return {
    runtime,
    socketPath: server.socketPath,
    tcp: server.tcp,
    ready,
    reload() {
      const result = runtime.reload();
      if (result.ok) {
        logger.info({ changed: result.changed, ...(result.needsRestart.length > 0 ? { needsRestart: result.needsRestart } : {}) }, result.changed.length > 0 ? 'configuration reloaded' : 'configuration reloaded; nothing changed');
      } else {
        logger.error(
          { code: result.error.code, keys: result.error.issues.map((issue) => issue.field), error: result.error.message },
          `configuration not reloaded, the old one stays: ${result.error.message}`,
        );
      }
      const token = runtime.reloadToken();
      if (!token.ok) logger.error({ code: token.error.code, error: token.error.message }, `API token not rotated, the old one stays: ${token.error.message}`);
      else if (token.rotated) logger.info({}, 'API token rotated: new requests need the new token; open connections and streams stay open');
      try {
        if (server.reloadTls()) logger.info({}, 'TLS certificate and key reloaded: new connections use them');
      } catch (error) {
        logger.error({ code: codeOf(error), error: messageOf(error) }, `TLS files not reloaded, the old ones stay: ${messageOf(error)}`);
      }
      return result;
    },
    shutdown() {
      shuttingDown ??= (async () => {
        logger.info({}, 'shutting down: taking no new work; running containers keep running');
        try {
          await server.close();
        } catch (error) {
          logger.warn({ code: codeOf(error), error: messageOf(error) }, 'closing the API failed');
        }
        await runtime.close();
        uncontain();
        logger.info({}, 'agent stopped');
      })();
      return shuttingDown;
    },
  };
}

/**
 * The last guard of a daemon that supervises many tasks: a promise rejected with nobody to hear it
 * (a bug: every background loop contains its own failures) is logged, once per kind, instead of
 * ending the process and the supervision of every task with it. Returns the uninstall.
 */
export function containStrayRejections(logger: Logger): () => void {
  const seen = new Set<string>();
  const onRejection = (reason: unknown): void => {
    const code = isBerthError(reason) ? reason.code : reason instanceof Error ? reason.name : typeof reason;
    const key = `${code}:${messageOf(reason)}`;
    if (seen.has(key)) return;
    if (seen.size >= 100) seen.clear();
    seen.add(key);
    logger.error({ code, error: stackOf(reason) }, 'a background failure was contained (a bug: please report it)');
  };
  process.on('unhandledRejection', onRejection);
  return () => void process.off('unhandledRejection', onRejection);
}
