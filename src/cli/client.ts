import type { Command } from 'commander';
import os from 'node:os';
import type { Writable } from 'node:stream';
import { isBerthError } from '../common/errors.js';
import { AgentClient, resolveAgentAddress, resolveAgentTls, type AgentTlsFlags, type TaskView } from '../agent/client.js';
import { EXIT } from './exit-codes.js';
import { errorLine, writeJson } from './output.js';
import type { CliIo } from './run.js';

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

export interface AgentFlags extends AgentTlsFlags {
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

/** Connects to the agent the command names (or the default one), with its token and TLS material. */
export async function connectClient(io: CliIo, flags: AgentFlags): Promise<AgentClient> {
  const address = await resolveAgentAddress(io.env, { ...(flags.host !== undefined ? { host: flags.host } : {}), ...(flags.token !== undefined ? { token: flags.token } : {}) }, currentUser());
  const tls = resolveAgentTls(address.host, io.env, flags);
  return AgentClient.connect({ host: address.host, token: address.token, ...(tls ? { tls } : {}) });
}

/** The options that find an agent (address, token, TLS), on a command that may also work without one. */
export function withAgentOptions(command: Command): Command {
  return command
    .option('-H, --host <address>', 'the agent: unix:///path/agent.sock, http://host:port, https://host:port or tcp://host:port (default $BERTH_HOST, else <data dir>/agent.sock)')
    .option('--token <token>', 'the agent\'s API token (default $BERTH_TOKEN, else <data dir>/token)')
    .option('--tlscacert <file>', 'trust only agent certificates signed by this CA (PEM; default $BERTH_CERT_PATH/ca.pem, else the system\'s CAs)')
    .option('--tlscert <file>', 'the client certificate for an agent that requires one (PEM; default $BERTH_CERT_PATH/cert.pem)')
    .option('--tlskey <file>', 'the client certificate\'s key (PEM; default $BERTH_CERT_PATH/key.pem)')
    .option('--tlsverify', 'use TLS with a tcp:// address, verifying the agent (default $BERTH_TLS_VERIFY; https:// always does)');
}

/** The options every client command has. */
export function agentCommand(program: Command, name: string, description: string): Command {
  return withAgentOptions(program.command(name).description(description)).option('--json', 'print JSON for scripts instead of text for people');
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

/**
 * Runs an operation on each task id, as docker does: every id is tried, each failure is one line on
 * stderr, and the exit code is the first failure's. Prints each id done, or with --json an array of
 * the results.
 */
export async function eachTask(io: CliIo, flags: AgentFlags, taskIds: readonly string[], operation: (client: AgentClient, taskId: string) => Promise<TaskView | { id: string; removed: true }>): Promise<number> {
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
export function write(stream: Writable, text: string): Promise<void> {
  return stream.write(text) ? Promise.resolve() : new Promise((resolve) => stream.once('drain', resolve));
}
