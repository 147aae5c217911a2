import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { chmod, lstat, rm } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import { ValidationError } from '../common/errors.js';
import type { AgentRuntime } from './agent.js';
import { buildServer, type ServerOptions } from './http.js';

/** An agent's API, listening. */
export interface ServingAgent {
  /** The unix socket the API listens on (mode 0600). */
  readonly socketPath: string;
  /** The TCP address, when the configuration has `listen`; the port is the bound one. */
  readonly tcp?: { readonly host: string; readonly port: number };
  readonly server: FastifyInstance;
  /** Ends open streams (log followers, event streams), stops listening on both addresses and removes the socket. */
  close(): Promise<void>;
}

/** Whether something accepts connections on the unix socket. */
function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ path: socketPath });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Removes the socket file a crashed agent left behind. A socket that still answers belongs to an
 * agent that is running, and anything that is not a socket is not ours to delete: both are refused.
 */
async function removeStaleSocket(socketPath: string): Promise<void> {
  const found = await lstat(socketPath).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (!found) return;
  if (!found.isSocket()) throw new ValidationError([{ field: 'socketPath', rule: `${socketPath} exists and is not a socket` }]);
  if (await socketAnswers(socketPath)) throw new ValidationError([{ field: 'socketPath', rule: `another agent answers on ${socketPath}` }]);
  await rm(socketPath, { force: true });
}

function listenTcp(server: Server, host: string, port: number): Promise<{ host: string; port: number }> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      const address = server.address();
      resolve({ host, port: typeof address === 'object' && address ? address.port : port });
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/**
 * Serves the agent's API on the unix socket of its configuration (a stale socket file is removed
 * first; the socket is made 0600) and, when the configuration has `listen`, on that TCP address
 * too. Both addresses are served by one fastify instance, so they share metrics and open streams.
 */
export async function serveAgent(runtime: AgentRuntime, options: Omit<ServerOptions, 'serverFactory'> = {}): Promise<ServingAgent> {
  const config = runtime.config.current();
  let handle: ((request: IncomingMessage, response: ServerResponse) => void) | undefined;
  const app = buildServer(runtime, {
    ...options,
    serverFactory: (handler) => {
      handle = handler;
      return createServer(handler);
    },
  });
  await removeStaleSocket(config.socketPath);
  await app.listen({ path: config.socketPath });
  let tcpServer: Server | undefined;
  let tcp: { host: string; port: number } | undefined;
  try {
    await chmod(config.socketPath, 0o600);
    if (config.listen) {
      tcpServer = createServer(handle);
      // As fastify sets its own server's: longer than a load balancer's usual idle timeout.
      tcpServer.keepAliveTimeout = app.server.keepAliveTimeout;
      tcp = await listenTcp(tcpServer, config.listen.host, config.listen.port);
    }
  } catch (error) {
    await app.close();
    throw error;
  }
  runtime.logger.info({ socketPath: config.socketPath, ...(tcp ? { tcp: `${tcp.host}:${tcp.port}` } : {}) }, 'the API is listening');

  let closing: Promise<void> | undefined;
  return {
    socketPath: config.socketPath,
    ...(tcp ? { tcp } : {}),
    server: app,
    close() {
      closing ??= (async () => {
        // fastify's close ends the open streams first (preClose), which lets both servers drain.
        await Promise.all([app.close(), tcpServer ? closeServer(tcpServer) : undefined]);
        await rm(config.socketPath, { force: true });
      })();
      return closing;
    },
  };
}
