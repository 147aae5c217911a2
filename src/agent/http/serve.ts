import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { chmod, lstat, rm } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import { BerthError, ValidationError } from '../../common/errors.js';
import type { AgentRuntime } from '../agent.js';
import type { AgentConfig } from '../config.js';
import { answerClientError } from './errors.js';
import { buildServer, type ServerOptions, type ServerRuntime } from './server.js';

/** The bounds on one listener's clients: the agent configuration's `http` keys. */
export type ServerLimits = AgentConfig['http'];

/**
 * An HTTP server for the API with the configured bounds on its clients, so that slow or idle
 * clients cannot hold the agent's sockets: headers must arrive within `headersTimeoutMs` and the
 * whole request within `requestTimeoutMs` (else 408 and the connection is closed), an idle
 * keep-alive connection is closed after `keepAliveTimeoutMs`, and connections past
 * `maxConnections` are closed as they are accepted. Node checks the two request timeouts on a
 * timer (every 30 s by default, which would let a slow client stay 30 s past its bound): here it
 * runs every tenth of the shorter one, between 50 ms and 1 s.
 */
export function createApiServer(handler: (request: IncomingMessage, response: ServerResponse) => void, limits: ServerLimits): Server {
  const server = createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) / 10))),
    },
    handler,
  );
  server.maxConnections = limits.maxConnections;
  return server;
}

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
export async function serveAgent(runtime: ServerRuntime & Pick<AgentRuntime, 'config'>, options: Omit<ServerOptions, 'serverFactory'> = {}): Promise<ServingAgent> {
  const config = runtime.config.current();
  let handle: ((request: IncomingMessage, response: ServerResponse) => void) | undefined;
  const app = buildServer(runtime, {
    ...options,
    serverFactory: (handler) => {
      handle = handler;
      // fastify adds its clientErrorHandler (answerClientError) to this one itself.
      return createApiServer(handler, config.http);
    },
  });
  await removeStaleSocket(config.socketPath);
  await app.listen({ path: config.socketPath });
  let tcpServer: Server | undefined;
  let tcp: { host: string; port: number } | undefined;
  try {
    await chmod(config.socketPath, 0o600);
    if (config.listen) {
      if (!handle) throw new BerthError('BERTH_INTERNAL', 'fastify did not hand over its request handler');
      tcpServer = createApiServer(handle, config.http);
      tcpServer.on('clientError', answerClientError);
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
