import { createServer, ServerResponse, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { connect, type Server as NetServer, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { chmod, lstat, rm } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import { BerthError, ValidationError } from '../../common/errors.js';
import type { AgentRuntime } from '../agent.js';
import type { AgentConfig } from '../config.js';
import type { Logger } from '../../common/logger.js';
import { readServerTls, type TlsMaterial } from '../tls.js';
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
  const server = createServer(clientBounds(limits), handler);
  server.maxConnections = limits.maxConnections;
  return server;
}

/** The HTTP server options that bound slow and idle clients, for the plain and the TLS listener alike. */
function clientBounds(limits: ServerLimits): { headersTimeout: number; requestTimeout: number; keepAliveTimeout: number; connectionsCheckingInterval: number } {
  return {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) / 10))),
  };
}

/** The first byte of every TLS connection: a handshake record. */
const TLS_HANDSHAKE_RECORD = 0x16;

/** What a client speaking plain HTTP to the HTTPS listener is told, in berth's error shape. */
const PLAIN_HTTP_REFUSED = JSON.stringify({
  error: { code: 'BERTH_VALIDATION', message: 'this address serves HTTPS: connect with https://host:port (and the CA of the agent\'s certificate, --tlscacert)' },
});

/**
 * Answers a request that came over TLS without a client certificate signed by `tls.clientCa`, and
 * closes the connection: the request never reaches the API.
 */
function refuseClientCertificate(request: IncomingMessage, response: ServerResponse, logger: Logger): void {
  const socket = request.socket as TLSSocket;
  const given = Object.keys(socket.getPeerCertificate()).length > 0;
  const reason = given ? `the client certificate was refused (${String(socket.authorizationError)})` : 'no client certificate was given';
  logger.info({ remote: socket.remoteAddress, reason: given ? String(socket.authorizationError) : 'none' }, `a client was refused: ${reason}`);
  const body = JSON.stringify({ error: { code: 'BERTH_AGENT_TLS', message: `${reason}: the agent requires one signed by its tls.clientCa (--tlscert and --tlskey)` } });
  response.writeHead(403, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
  response.end(body);
}

/**
 * The HTTPS server of the TCP listener: createApiServer's bounds, plus the TLS handshake bounded by
 * `headersTimeoutMs`, and client certificates required when `material.ca` is set (mutual TLS).
 *
 * A client without a certificate signed by that CA is refused with `403 BERTH_AGENT_TLS` saying
 * so, over TLS, and its request never reaches the API: Node would otherwise close such a
 * connection without a TLS alert right after the handshake (a bad certificate) and the client would
 * see only a reset. A client that speaks plain HTTP to the listener (its first byte does not start a
 * TLS handshake) is answered `400` with a message that says to use https, as Go's servers do,
 * rather than with Node's bare reset; a client that sends nothing at all is dropped after
 * `headersTimeoutMs`. Other failed handshakes are logged at info and the connection closed.
 */
export function createTlsApiServer(handler: (request: IncomingMessage, response: ServerResponse) => void, limits: ServerLimits, material: TlsMaterial, logger: Logger): HttpsServer {
  const requireClientCert = material.ca !== undefined;
  const guarded = requireClientCert
    ? (request: IncomingMessage, response: ServerResponse): void => {
        // `authorized` is Node's verdict on the client's certificate against `ca`: strictly true.
        if ((request.socket as TLSSocket).authorized === true) handler(request, response);
        else refuseClientCertificate(request, response, logger);
      }
    : handler;
  const server = createHttpsServer(
    {
      ...material,
      requestCert: requireClientCert,
      // Checked per request (guarded), so that the refusal can say why.
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
      handshakeTimeout: limits.headersTimeoutMs,
      // The first byte is read before TLS takes the connection (see below).
      pauseOnConnect: true,
      ...clientBounds(limits),
    },
    guarded,
  );
  server.maxConnections = limits.maxConnections;
  // https forwards a failed handshake to `clientError`, whose listener answers in HTTP: over a
  // connection that never became TLS that answer would be noise. It is logged and closed instead.
  server.removeAllListeners('tlsClientError');
  server.on('tlsClientError', (error: NodeJS.ErrnoException, socket) => {
    logger.info({ code: error.code ?? 'TLS', remote: socket.remoteAddress, error: error.message }, 'a TLS handshake failed; the connection is closed');
    socket.destroy();
  });
  // tls.Server's own listener wraps each accepted socket; it gets the sockets that start a handshake.
  const wrapInTls = server.listeners('connection')[0] as ((socket: Socket) => void) | undefined;
  if (!wrapInTls) throw new BerthError('BERTH_INTERNAL', 'the TLS server has no connection listener to hand sockets to');
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    // Until TLS owns it, the socket's errors (a reset while sniffing) are this listener's.
    socket.on('error', () => socket.destroy());
    socket.setTimeout(limits.headersTimeoutMs, () => socket.destroy());
    socket.once('readable', () => {
      const head = socket.read(1) as Buffer | null;
      if (head === null) {
        socket.destroy();
        return;
      }
      socket.unshift(head);
      socket.setTimeout(0);
      if (head[0] === TLS_HANDSHAKE_RECORD) {
        wrapInTls.call(server, socket);
        return;
      }
      socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(PLAIN_HTTP_REFUSED)}\r\nconnection: close\r\n\r\n${PLAIN_HTTP_REFUSED}`);
      // What the client still sends is read and dropped, so that closing does not reset the
      // connection under the answer before the client has read it; a client that never closes is dropped.
      socket.resume();
      socket.setTimeout(limits.headersTimeoutMs, () => socket.destroy());
    });
  });
  return server;
}

/**
 * Hands the TCP listener's WebSocket upgrades (attach) to fastify's own server, whose websocket
 * plugin routes them through the API's hooks (the token) like any request. With mutual TLS an
 * upgrade passes the same client-certificate check as a request, which Node's request handler
 * (`guarded`) never sees for an upgrade.
 */
function forwardUpgrades(server: Server | HttpsServer, app: FastifyInstance, requireClientCert: boolean, logger: Logger): void {
  server.on('upgrade', (request: IncomingMessage, socket: Socket, head: Buffer) => {
    if (requireClientCert && (socket as TLSSocket).authorized !== true) {
      logger.info({ remote: socket.remoteAddress }, 'a WebSocket client without a valid client certificate was refused');
      const body = JSON.stringify({ error: { code: 'BERTH_AGENT_TLS', message: 'the agent requires a client certificate signed by its tls.clientCa (--tlscert and --tlskey)' } });
      socket.end(`HTTP/1.1 403 Forbidden\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      return;
    }
    app.server.emit('upgrade', request, socket, head);
  });
}

/** An agent's API, listening. */
export interface ServingAgent {
  /** The unix socket the API listens on (mode 0600). */
  readonly socketPath: string;
  /** The TCP address, when the configuration has `listen`; the port is the bound one; `tls` when it serves HTTPS. */
  readonly tcp?: { readonly host: string; readonly port: number; readonly tls: boolean };
  readonly server: FastifyInstance;
  /**
   * Re-reads the TLS files (`tls.cert`, `tls.key`, `tls.clientCa`) and serves new connections with
   * them; open connections keep theirs. Returns false when the TCP listener has no TLS. Throws the
   * ValidationError naming the key and file when one is wrong, and the old files stay in use.
   */
  reloadTls(): boolean;
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

function listenTcp(server: NetServer, host: string, port: number): Promise<{ host: string; port: number }> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      const address = server.address();
      resolve({ host, port: typeof address === 'object' && address ? address.port : port });
    });
  });
}

function closeServer(server: NetServer): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/**
 * Serves the agent's API on the unix socket of its configuration (a stale socket file is removed
 * first; the socket is made 0600) and, when the configuration has `listen`, on that TCP address
 * too. Both addresses are served by one fastify instance, so they share metrics and open streams.
 */
export async function serveAgent(runtime: ServerRuntime & Pick<AgentRuntime, 'config'>, options: Omit<ServerOptions, 'serverFactory'> = {}): Promise<ServingAgent> {
  const config = runtime.config.current();
  // Read before anything listens: a wrong file stops the agent at its start, naming the key.
  const tlsFiles = config.listen ? config.tls : undefined;
  const tlsMaterial = tlsFiles ? readServerTls(tlsFiles) : undefined;
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
  let tcpServer: Server | HttpsServer | undefined;
  let tlsServer: HttpsServer | undefined;
  let tcp: { host: string; port: number; tls: boolean } | undefined;
  try {
    await chmod(config.socketPath, 0o600);
    if (config.listen) {
      if (!handle) throw new BerthError('BERTH_INTERNAL', 'fastify did not hand over its request handler');
      if (tlsMaterial) tcpServer = tlsServer = createTlsApiServer(handle, config.http, tlsMaterial, runtime.logger);
      else tcpServer = createApiServer(handle, config.http);
      tcpServer.on('clientError', answerClientError);
      forwardUpgrades(tcpServer, app, tlsMaterial?.ca !== undefined, runtime.logger);
      tcp = { ...(await listenTcp(tcpServer, config.listen.host, config.listen.port)), tls: tlsServer !== undefined };
    }
  } catch (error) {
    await app.close();
    throw error;
  }
  runtime.logger.info(
    { socketPath: config.socketPath, ...(tcp ? { tcp: `${tcp.host}:${tcp.port}`, tls: tcp.tls ? (tlsMaterial?.ca ? 'mutual' : 'server') : 'off' } : {}) },
    'the API is listening',
  );

  let closing: Promise<void> | undefined;
  return {
    socketPath: config.socketPath,
    ...(tcp ? { tcp } : {}),
    server: app,
    reloadTls() {
      if (!tlsServer || !tlsFiles) return false;
      const material = readServerTls(tlsFiles);
      tlsServer.setSecureContext({ ...material, minVersion: 'TLSv1.2' });
      return true;
    },
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
