import { request as httpRequest, Agent as HttpAgent, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import type { ClusterTask, NodeView } from '../cluster/index.js';
import { BerthError, codeOf, messageOf, ValidationError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ClusterConfig } from './cluster-config.js';
import { isLoopbackHost } from './config.js';
import { readCertificateFile, readKeyPair } from './tls.js';

/**
 * Reads through any node (issue 18, "Any node answers"): a request for a task this node has no record
 * of is looked up in the cluster index and forwarded to the node that runs it (or ran it), over that
 * node's API with the cluster's credential (`cluster.token`, and `cluster.tls` towards https://
 * addresses), streaming both ways: NDJSON and chunked answers as they come, WebSocket upgrades
 * (exec -it, attach) spliced socket to socket. A forwarded request carries `berth-forwarded-by` and is
 * never forwarded again. The decision (`locateTask`) and the header handling (`forwardedHeaders`) are
 * pure; `TaskForwarder` does the I/O.
 */

/** The header a forwarded request carries: the id of the node that forwarded it. */
export const FORWARDED_BY_HEADER = 'berth-forwarded-by';

/** How long connecting to another node (TCP and TLS handshake) may take before the request answers 503 BERTH_NODE_UNREACHABLE. */
export const FORWARD_CONNECT_TIMEOUT_MS = 5_000;

/** The cluster's credential, read from the files `cluster.*` names. */
export interface ClusterCredentials {
  /** `cluster.token` (or the first line of `cluster.tokenFile`); absent: forwarded requests carry the caller's own token. */
  readonly token?: string;
  readonly tls: { readonly ca?: Buffer; readonly cert?: Buffer; readonly key?: Buffer };
}

/**
 * Reads `cluster.tokenFile` and `cluster.tls`'s files. Throws a ValidationError naming the key and the
 * file when one is wrong, so that the agent stops at its start rather than at its first forward.
 */
export function readClusterCredentials(config: Pick<ClusterConfig, 'token' | 'tokenFile' | 'tls'>): ClusterCredentials {
  let token = config.token;
  if (config.tokenFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(config.tokenFile, 'utf8');
    } catch (error) {
      throw new ValidationError([{ field: 'cluster.tokenFile', rule: `${config.tokenFile}: cannot be read (${(error as NodeJS.ErrnoException).code ?? messageOf(error)})` }], { cause: error });
    }
    token = text.split('\n')[0]!.trim();
    if (token.length < 16 || /\s/.test(token)) {
      throw new ValidationError([{ field: 'cluster.tokenFile', rule: `${config.tokenFile}: its first line must be a shared secret of at least 16 characters without spaces` }]);
    }
  }
  const tls = config.tls ?? {};
  const pair = tls.certFile !== undefined && tls.keyFile !== undefined ? readKeyPair('cluster.tls.cert', tls.certFile, 'cluster.tls.key', tls.keyFile) : undefined;
  return {
    ...(token !== undefined ? { token } : {}),
    tls: { ...(tls.caFile !== undefined ? { ca: readCertificateFile('cluster.tls.ca', tls.caFile).pem } : {}), ...(pair ?? {}) },
  };
}

/** Where a request for a task is answered. */
export type TaskLocation =
  /** This node has the task's record: the route answers as on a single agent. */
  | { readonly kind: 'local' }
  /** Another node that is ready holds it (or held it last): the request goes there. */
  | { readonly kind: 'forward'; readonly nodeId: string; readonly address: string; readonly task: ClusterTask }
  /**
   * Queued, ended before any node took it (cancelled while queued: `never-placed`), held by a node
   * that is down (or unknown), or by this node without a record yet: the index answers.
   */
  | { readonly kind: 'index'; readonly task: ClusterTask; readonly why: 'queued' | 'never-placed' | 'node-down' | 'not-recorded-here' }
  /** Forwarded by another node, and not here: never forwarded twice. */
  | { readonly kind: 'loop'; readonly forwardedBy: string }
  /** Nowhere: 404 as on a single agent. */
  | { readonly kind: 'unknown' };

/**
 * Decides where a request for a task is answered (pure): here when this node has its record; else,
 * from the cluster index entry, at the node that holds it or held it last when that node is ready,
 * else from the index. A request another node forwarded is answered here or refused (`loop`).
 */
export function locateTask(input: {
  readonly isLocal: boolean;
  readonly forwardedBy: string | undefined;
  readonly selfNodeId: string;
  readonly task: ClusterTask | undefined;
  readonly nodes: readonly Pick<NodeView, 'nodeId' | 'address' | 'state'>[];
}): TaskLocation {
  if (input.isLocal) return { kind: 'local' };
  if (input.forwardedBy !== undefined) return { kind: 'loop', forwardedBy: input.forwardedBy };
  const task = input.task;
  if (task === undefined) return { kind: 'unknown' };
  if (task.nodeId === undefined) return { kind: 'index', task, why: task.state === 'queued' ? 'queued' : 'never-placed' };
  if (task.nodeId === input.selfNodeId) return { kind: 'index', task, why: 'not-recorded-here' };
  const node = input.nodes.find((n) => n.nodeId === task.nodeId);
  if (node === undefined || node.state !== 'ready') return { kind: 'index', task, why: 'node-down' };
  return { kind: 'forward', nodeId: node.nodeId, address: node.address, task };
}

/** Headers that belong to one connection (RFC 9110 7.6.1), never passed on by a proxy. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host']);

/**
 * The headers of the request as it goes to the owning node (pure): the caller's, without the
 * connection's own (hop-by-hop, and those the `connection` header names), with the cluster token in
 * place of the caller's (when the cluster has one), and `berth-forwarded-by` naming this node. A
 * WebSocket upgrade keeps `connection: upgrade` and `upgrade`.
 */
export function forwardedHeaders(incoming: IncomingHttpHeaders, options: { selfNodeId: string; token: string | undefined; isUpgrade: boolean }): OutgoingHttpHeaders {
  const named = new Set(
    String(incoming.connection ?? '')
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter((h) => h !== ''),
  );
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name) || name === FORWARDED_BY_HEADER) continue;
    if (name === 'authorization' && options.token !== undefined) continue;
    out[name] = value;
  }
  if (options.token !== undefined) out.authorization = `Bearer ${options.token}`;
  out[FORWARDED_BY_HEADER] = options.selfNodeId;
  if (options.isUpgrade) {
    out.connection = 'Upgrade';
    out.upgrade = incoming.upgrade ?? 'websocket';
  }
  return out;
}

/** The headers of the owning node's answer as this node passes it on (pure): without the connection's own. */
export function answeredHeaders(incoming: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || HOP_BY_HOP.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/**
 * Why this node may not forward to `address`, or undefined when it may: https://, or plain http://
 * to a loopback address only (the cluster token would otherwise cross the network in clear).
 */
export function forwardAddressRule(address: string): string | undefined {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    return `its address ${address} is not a URL`;
  }
  if (url.protocol === 'https:') return undefined;
  if (url.protocol === 'http:' && isLoopbackHost(url.hostname.replace(/^\[(.*)\]$/, '$1'))) return undefined;
  return `its address ${address} is not https:// (plain http is forwarded to loopback addresses only: the cluster token would cross the network in clear)`;
}

/** The cluster index reads the forwarder makes (a `ClusterMember` is one). */
export interface ClusterIndex {
  getTask(taskId: string): Promise<ClusterTask | undefined>;
  listNodes(): Promise<NodeView[]>;
}

export interface TaskForwarderOptions {
  readonly selfNodeId: string;
  readonly credentials: ClusterCredentials;
  readonly index: ClusterIndex;
  readonly logger: Logger;
  /** Default FORWARD_CONNECT_TIMEOUT_MS. */
  readonly connectTimeoutMs?: number;
}

/** A node a request goes to. */
export interface ForwardTarget {
  readonly nodeId: string;
  readonly address: string;
}

/** The error body berth answers with, for a failure of the forward itself. */
function errorBody(error: BerthError): string {
  return JSON.stringify({ error: { code: error.code, message: error.message, retryable: error.retryable } });
}

/** How a forward went: `forwarded` (the node answered, whatever its status), `unreachable` (it did not), `refused` (it refused this node's credential). */
export type ForwardOutcome = 'forwarded' | 'unreachable' | 'refused';

export class TaskForwarder {
  readonly selfNodeId: string;
  readonly #options: TaskForwarderOptions;
  readonly #listeners = new Set<(kind: 'http' | 'websocket', outcome: ForwardOutcome) => void>();
  #openCount = 0;
  readonly #httpAgent: HttpAgent;
  readonly #httpsAgent: HttpsAgent;

  constructor(options: TaskForwarderOptions) {
    this.#options = options;
    this.selfNodeId = options.selfNodeId;
    this.#httpAgent = new HttpAgent({ keepAlive: true });
    const tls = options.credentials.tls;
    this.#httpsAgent = new HttpsAgent({ keepAlive: true, minVersion: 'TLSv1.2', ...(tls.ca ? { ca: tls.ca } : {}), ...(tls.cert ? { cert: tls.cert } : {}), ...(tls.key ? { key: tls.key } : {}) });
  }

  /** Whether `header` (an Authorization header) carries the cluster token. */
  get token(): string | undefined {
    return this.#options.credentials.token;
  }

  /** Where a request for the task `taskId` (not recorded here when `isLocal` is false) is answered. */
  async locate(taskId: string, isLocal: boolean, forwardedBy: string | undefined): Promise<TaskLocation> {
    if (isLocal) return { kind: 'local' };
    if (forwardedBy !== undefined) return locateTask({ isLocal, forwardedBy, selfNodeId: this.selfNodeId, task: undefined, nodes: [] });
    const task = await this.#options.index.getTask(taskId);
    const nodes = task?.nodeId !== undefined && task.nodeId !== this.selfNodeId ? await this.#options.index.listNodes() : [];
    return locateTask({ isLocal, forwardedBy, selfNodeId: this.selfNodeId, task, nodes });
  }

  /** Forwards under way now (a followed log or an exec session through this node counts until it ends). */
  get openForwards(): number {
    return this.#openCount;
  }

  /** Calls the listener as each forward gets its outcome (a metric); returns the unsubscribe. */
  onForward(listener: (kind: 'http' | 'websocket', outcome: ForwardOutcome) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #count(kind: 'http' | 'websocket', outcome: ForwardOutcome): void {
    for (const listener of this.#listeners) listener(kind, outcome);
  }

  /** Counts a forward open until `done` is called (once). */
  #opened(): () => void {
    this.#openCount += 1;
    let closed = false;
    return () => {
      if (closed) return;
      closed = true;
      this.#openCount -= 1;
    };
  }

  /** Closes idle connections to other nodes. */
  close(): void {
    this.#httpAgent.destroy();
    this.#httpsAgent.destroy();
  }

  #open(request: IncomingMessage, target: ForwardTarget, isUpgrade: boolean): ReturnType<typeof httpRequest> {
    const rule = forwardAddressRule(target.address);
    if (rule !== undefined) throw new BerthError('BERTH_NODE_UNREACHABLE', `cannot forward to node ${target.nodeId}: ${rule}`, { retryable: false, context: { nodeId: target.nodeId } });
    const url = new URL(request.url ?? '/', target.address);
    const isTls = url.protocol === 'https:';
    const options = {
      method: request.method,
      host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: url.port,
      path: `${url.pathname}${url.search}`,
      headers: forwardedHeaders(request.headers, { selfNodeId: this.selfNodeId, token: this.token, isUpgrade }),
      agent: isUpgrade ? false : isTls ? this.#httpsAgent : this.#httpAgent,
      ...(isUpgrade && isTls ? this.#tlsOptions() : {}),
    };
    const upstream = isTls ? httpsRequest(options) : httpRequest(options);
    // A node that does not answer the connection in time is unreachable; once connected, a stream may last.
    const timeoutMs = this.#options.connectTimeoutMs ?? FORWARD_CONNECT_TIMEOUT_MS;
    upstream.once('socket', (socket) => {
      const connected = isTls ? 'secureConnect' : 'connect';
      if (!socket.connecting) return;
      const timer = setTimeout(() => upstream.destroy(new BerthError('BERTH_NODE_UNREACHABLE', `node ${target.nodeId} at ${target.address} did not answer within ${timeoutMs} ms`, { context: { nodeId: target.nodeId } })), timeoutMs);
      timer.unref();
      socket.once(connected, () => clearTimeout(timer));
      socket.once('close', () => clearTimeout(timer));
    });
    return upstream;
  }

  #tlsOptions(): { ca?: Buffer; cert?: Buffer; key?: Buffer; minVersion: 'TLSv1.2' } {
    const tls = this.#options.credentials.tls;
    return { minVersion: 'TLSv1.2', ...(tls.ca ? { ca: tls.ca } : {}), ...(tls.cert ? { cert: tls.cert } : {}), ...(tls.key ? { key: tls.key } : {}) };
  }

  /** The error a failed connection to the node is answered with. */
  #unreachable(target: ForwardTarget, error: unknown): BerthError {
    if (error instanceof BerthError && error.code === 'BERTH_NODE_UNREACHABLE') return error;
    const code = (error as NodeJS.ErrnoException | null)?.code ?? codeOf(error);
    return new BerthError('BERTH_NODE_UNREACHABLE', `node ${target.nodeId} at ${target.address} could not be reached to forward the request (${code}: ${messageOf(error)})`, {
      cause: error,
      context: { nodeId: target.nodeId },
    });
  }

  /**
   * What the owning node answered that is about this node, not the caller: its refusal of the
   * cluster's token (401) or of this node's client certificate (403 BERTH_AGENT_TLS). The caller's
   * own credentials were right (this node took them), so these are the cluster's misconfiguration.
   */
  #refusal(target: ForwardTarget, status: number | undefined): BerthError | undefined {
    if (status === 401) return new BerthError('BERTH_NODE_UNREACHABLE', `node ${target.nodeId} refused this node's cluster credential (cluster.token differs between them)`, { retryable: false, context: { nodeId: target.nodeId } });
    if (status === 403) return new BerthError('BERTH_NODE_UNREACHABLE', `node ${target.nodeId} refused this node's client certificate (cluster.tls.cert is not signed by its tls.clientCa)`, { retryable: false, context: { nodeId: target.nodeId } });
    return undefined;
  }

  #answerError(response: ServerResponse, error: BerthError): void {
    if (response.headersSent) {
      response.destroy(error);
      return;
    }
    const body = errorBody(error);
    response.writeHead(error.code === 'BERTH_NODE_UNREACHABLE' ? 503 : 500, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
    response.end(body);
  }

  /**
   * Reads a task's view from the node that holds it (`GET /v1/tasks/:id` with the cluster's
   * credential, marked forwarded so that node never sends it on): the submit of a task that publishes
   * ports answers with the host ports its node handed out. Resolves with the node's status and JSON
   * body; a node that cannot be reached (or answers no JSON within `timeoutMs`) is BERTH_NODE_UNREACHABLE.
   */
  async readTaskView(target: ForwardTarget, taskId: string, options: { authorization?: string; timeoutMs?: number } = {}): Promise<{ status: number; body: unknown }> {
    const rule = forwardAddressRule(target.address);
    if (rule !== undefined) throw new BerthError('BERTH_NODE_UNREACHABLE', `cannot read from node ${target.nodeId}: ${rule}`, { retryable: false, context: { nodeId: target.nodeId } });
    const url = new URL(`/v1/tasks/${encodeURIComponent(taskId)}`, target.address);
    const isTls = url.protocol === 'https:';
    const headers = forwardedHeaders(options.authorization === undefined ? {} : { authorization: options.authorization }, { selfNodeId: this.selfNodeId, token: this.token, isUpgrade: false });
    const timeoutMs = options.timeoutMs ?? this.#options.connectTimeoutMs ?? FORWARD_CONNECT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const request = (isTls ? httpsRequest : httpRequest)(
        { method: 'GET', host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: url.port, path: url.pathname, headers, agent: isTls ? this.#httpsAgent : this.#httpAgent },
        (answer) => {
          const chunks: Buffer[] = [];
          answer.on('data', (chunk: Buffer) => chunks.push(chunk));
          answer.once('error', (error) => reject(this.#unreachable(target, error)));
          answer.once('end', () => {
            clearTimeout(timer);
            let body: unknown;
            try {
              body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch (error) {
              reject(this.#unreachable(target, error));
              return;
            }
            resolve({ status: answer.statusCode ?? 0, body });
          });
        },
      );
      const timer = setTimeout(() => request.destroy(new BerthError('BERTH_NODE_UNREACHABLE', `node ${target.nodeId} at ${target.address} did not answer within ${timeoutMs} ms`, { context: { nodeId: target.nodeId } })), timeoutMs);
      timer.unref();
      request.once('error', (error) => {
        clearTimeout(timer);
        reject(this.#unreachable(target, error));
      });
      request.end();
    });
  }

  /**
   * Forwards a plain request to `target` and streams its answer back as it comes (backpressure both
   * ways by piping). The caller going away ends the upstream request; the node failing before it
   * answered is 503 BERTH_NODE_UNREACHABLE, unless `answerInstead` answers (it returns true: the
   * cluster index's answer for a node that is gone but not yet declared down).
   */
  forwardRequest(request: IncomingMessage, response: ServerResponse, target: ForwardTarget, answerInstead?: (response: ServerResponse) => boolean): void {
    let upstream: ReturnType<typeof httpRequest>;
    try {
      upstream = this.#open(request, target, false);
    } catch (error) {
      this.#count('http', 'unreachable');
      this.#answerError(response, this.#unreachable(target, error));
      return;
    }
    const logger = this.#options.logger;
    const done = this.#opened();
    response.once('close', () => {
      done();
      if (!response.writableFinished) upstream.destroy();
    });
    upstream.on('error', (error) => {
      if (response.writableFinished || response.destroyed) return;
      const failure = this.#unreachable(target, error);
      logger.warn({ nodeId: target.nodeId, address: target.address, code: codeOf(error), error: messageOf(error) }, 'could not forward a request to the node that runs the task');
      if (!response.headersSent) this.#count('http', 'unreachable');
      if (!response.headersSent && answerInstead?.(response) === true) return;
      this.#answerError(response, failure);
    });
    upstream.on('response', (answer) => {
      const refusal = this.#refusal(target, answer.statusCode);
      if (refusal !== undefined) {
        answer.resume();
        this.#count('http', 'refused');
        logger.warn({ nodeId: target.nodeId, status: answer.statusCode }, refusal.message);
        this.#answerError(response, refusal);
        return;
      }
      this.#count('http', 'forwarded');
      response.writeHead(answer.statusCode ?? 502, answeredHeaders(answer.headers));
      // Each chunk goes out as it comes (a follow's lines): no buffering past the socket's own.
      response.flushHeaders();
      answer.pipe(response);
      answer.once('error', () => response.destroy());
      answer.once('aborted', () => response.destroy());
    });
    request.pipe(upstream);
  }

  /**
   * Forwards a WebSocket upgrade (exec -it, attach) to `target`: once the node switches protocols,
   * its answer is written to the caller's socket and the two sockets are spliced, each closing the
   * other. An answer that is not a switch (an error) is passed on as it is, and the socket closed.
   */
  forwardUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer, target: ForwardTarget): void {
    const writeError = (error: BerthError): void => {
      const body = errorBody(error);
      socket.end(`HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    };
    let upstream: ReturnType<typeof httpRequest>;
    try {
      upstream = this.#open(request, target, true);
    } catch (error) {
      this.#count('websocket', 'unreachable');
      writeError(this.#unreachable(target, error));
      return;
    }
    const done = this.#opened();
    socket.once('close', done);
    let spliced = false;
    const ended = (): void => {
      if (!spliced) upstream.destroy();
    };
    socket.once('close', ended);
    socket.on('error', () => socket.destroy());
    upstream.on('error', (error) => {
      if (spliced || socket.destroyed) return;
      this.#count('websocket', 'unreachable');
      this.#options.logger.warn({ nodeId: target.nodeId, code: codeOf(error), error: messageOf(error) }, 'could not forward a WebSocket to the node that runs the task');
      writeError(this.#unreachable(target, error));
    });
    upstream.on('response', (answer) => {
      const refusal = this.#refusal(target, answer.statusCode);
      if (refusal !== undefined) {
        answer.resume();
        this.#count('websocket', 'refused');
        writeError(refusal);
        return;
      }
      this.#count('websocket', 'forwarded');
      // Not a switch: the node's answer (an error in berth's shape) is passed on whole.
      const chunks: Buffer[] = [];
      answer.on('data', (chunk: Buffer) => chunks.push(chunk));
      answer.once('end', () => {
        const body = Buffer.concat(chunks);
        const headers = answeredHeaders(answer.headers);
        delete headers['content-length'];
        const lines = Object.entries(headers).map(([name, value]) => `${name}: ${Array.isArray(value) ? value.join(', ') : String(value)}`);
        socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 ${answer.statusCode ?? 502} ${answer.statusMessage ?? ''}\r\n${lines.join('\r\n')}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`), body]));
      });
    });
    upstream.on('upgrade', (answer, upstreamSocket, upstreamHead) => {
      spliced = true;
      this.#count('websocket', 'forwarded');
      socket.off('close', ended);
      const lines: string[] = [];
      for (let i = 0; i < answer.rawHeaders.length; i += 2) lines.push(`${answer.rawHeaders[i]}: ${answer.rawHeaders[i + 1]}`);
      socket.write(`HTTP/1.1 101 ${answer.statusMessage ?? 'Switching Protocols'}\r\n${lines.join('\r\n')}\r\n\r\n`);
      if (upstreamHead.length > 0) socket.write(upstreamHead);
      if (head.length > 0) upstreamSocket.write(head);
      const closeBoth = (): void => {
        socket.destroy();
        upstreamSocket.destroy();
      };
      upstreamSocket.on('error', closeBoth);
      socket.on('error', closeBoth);
      upstreamSocket.once('close', closeBoth);
      socket.once('close', closeBoth);
      // pipe: each side pauses the other when its buffer is full (backpressure both ways).
      upstreamSocket.pipe(socket);
      socket.pipe(upstreamSocket);
    });
    upstream.end();
  }
}
