/**
 * A fault-injecting proxy in front of the engine's unix socket, for tests of berth's failure paths.
 *
 * It listens on its own unix socket in a temp dir (`new Engine({ socketPath: proxy.socketPath })`)
 * and relays bytes to the real engine. Per client connection it parses only the head of the first
 * request (to match rules and log it) and then pipes bytes both ways, so hijacked attach/exec
 * sessions (`Connection: Upgrade`) and long-lived streams (wait, logs, stats, attach) pass through
 * untouched, with backpressure and half-closes propagated.
 *
 * Keep-alive: every non-upgrade request is rewritten to `Connection: close` (and so is its
 * response), so each connection carries exactly one request. That keeps the parsing down to heads
 * and gives "the engine's full response" a precise meaning: everything until the engine closes.
 */
import { EventEmitter, once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { TEST_ENGINE_SOCKET } from './engine.js';

/** What a rule does to a request it matches. */
export type Fault =
  /**
   * Forward, wait for the engine's full response (so the engine has acted), discard it and answer
   * 500. With `at: 'head'`, act as soon as the engine's response head arrives: for a stream that does
   * not end while the task runs (events, a followed log), the head is the sign the engine acted.
   */
  | { kind: 'error500AfterForward'; at?: 'end' | 'head' }
  /** Answer 500 without forwarding: the engine never sees the request. */
  | { kind: 'error500Before' }
  /** Answer 503 without forwarding, as an engine (or a proxy in front of it) that is not ready does. */
  | { kind: 'error503Before' }
  /** Forward, wait for the engine's full response (or its head, `at: 'head'`), then destroy the client's connection without answering. */
  | { kind: 'dropAfterForward'; at?: 'end' | 'head' }
  /** Destroy the client's connection without forwarding. */
  | { kind: 'drop' }
  /**
   * Hold the request for `delayMs` before forwarding, to push a call past its deadline. A request
   * whose client hangs up during the delay is not forwarded unless `forwardIfClientGone` is true
   * (a request that left the client may still reach the engine after the client gave up).
   */
  | { kind: 'delay'; delayMs: number; forwardIfClientGone?: boolean }
  /**
   * Hold the request until the test calls the rule's `release()`, then forward it: a request that
   * reaches the engine exactly when the test says (e.g. a create that lands after berth gave up on
   * it). `forwardIfClientGone` as for `delay`. Requests the rule matches after the release pass at once.
   */
  | { kind: 'hold'; forwardIfClientGone?: boolean }
  /**
   * Forward and relay the response head plus `afterBodyBytes` (default 0) bytes of its body, then
   * relay nothing more and never end the client's connection: a stalled stream (e.g. a pull).
   */
  | { kind: 'stall'; afterBodyBytes?: number }
  /**
   * Forward and relay the response head plus `afterBodyBytes` bytes of its body, then destroy both
   * connections: a stream (logs, events) cut mid-way, as a dropped connection or an engine restart does.
   */
  | { kind: 'dropAfterBodyBytes'; afterBodyBytes: number };

export type FaultKind = Fault['kind'];

export interface FaultRuleInput {
  /** HTTP method to match, case-insensitive. Default: any. */
  method?: string;
  /**
   * Matched against the request path without the optional `/v1.xx` prefix and without the query,
   * e.g. `/containers/abc/json`. A string must match the whole path.
   */
  path: RegExp | string;
  fault: Fault;
  /** The rule fires for this many matching requests, then stays inert. Default: unlimited. */
  times?: number;
  /** Chance (0..1) that a matching request is faulted. Default 1. */
  probability?: number;
}

/** A rule in force; its counters let a test assert how often it applied. */
export interface FaultRule {
  readonly id: number;
  /** Requests the rule matched (by method and path), whether or not it fired. */
  readonly matched: number;
  /** Requests the rule faulted. */
  readonly fired: number;
  /** Whether `times` is used up. */
  readonly exhausted: boolean;
  /** Forwards the requests a `hold` rule holds, and lets later ones through at once. */
  release(): void;
  remove(): void;
}

/** One request the proxy received. Mutable fields are filled in as the exchange proceeds. */
export interface RequestRecord {
  readonly seq: number;
  readonly method: string;
  /** Path without the `/v1.xx` prefix and without the query. */
  readonly path: string;
  /** The request target as sent, e.g. `/v1.41/containers/abc/json?size=false`. */
  readonly target: string;
  /** Whether the client asked to upgrade the connection (hijacked attach/exec). */
  readonly upgrade: boolean;
  /** The fault applied, if any. */
  readonly fault: FaultKind | undefined;
  /** The status the client saw (the engine's, or the injected 500); undefined when nothing was answered. */
  status: number | undefined;
  /** The status the engine answered, when the request was forwarded and the engine's head arrived. */
  engineStatus: number | undefined;
  /** Whether the client's connection is still open (a request a client still waits on, or a stream it follows). */
  clientOpen: boolean;
}

export interface FaultProxyOptions {
  /** The real engine. Default the test engine's socket (TEST_ENGINE_SOCKET: /var/run/docker.sock, or DOCKER_HOST's). */
  upstreamSocketPath?: string;
  /** Source of randomness for `probability`; default Math.random. */
  random?: () => number;
}

const MAX_HEAD_BYTES = 64 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n');
const INJECTED_BODY = JSON.stringify({ message: 'injected fault' });
const INJECTED_500 =
  'HTTP/1.1 500 Internal Server Error\r\n' +
  'Content-Type: application/json\r\n' +
  `Content-Length: ${Buffer.byteLength(INJECTED_BODY)}\r\n` +
  'Connection: close\r\n\r\n' +
  INJECTED_BODY;

const INJECTED_503 =
  'HTTP/1.1 503 Service Unavailable\r\n' +
  'Content-Type: application/json\r\n' +
  `Content-Length: ${Buffer.byteLength(INJECTED_BODY)}\r\n` +
  'Connection: close\r\n\r\n' +
  INJECTED_BODY;

interface ParsedRequestHead {
  method: string;
  target: string;
  path: string;
  upgrade: boolean;
  /** The head to send upstream, terminated by a blank line. */
  forwardHead: Buffer;
}

interface InternalRule {
  id: number;
  method: string | undefined;
  path: RegExp;
  fault: Fault;
  times: number;
  probability: number;
  matched: number;
  fired: number;
  released: boolean;
}

/** Splits a head into its first line and header lines (no blank line at the end). */
function headLines(head: Buffer): string[] {
  return head.toString('latin1').split('\r\n');
}

function hasToken(value: string, token: string): boolean {
  return value.split(',').some((part) => part.trim().toLowerCase() === token);
}

/** Drops Connection and Keep-Alive headers and adds `Connection: close`. */
function forceConnectionClose(headers: string[]): string[] {
  const kept = headers.filter((line) => !/^(connection|keep-alive)\s*:/i.test(line));
  kept.push('Connection: close');
  return kept;
}

export function normalizeEnginePath(target: string): string {
  const withoutQuery = target.split('?', 1)[0] ?? '';
  return withoutQuery.replace(/^\/v\d+\.\d+(?=\/)/, '') || '/';
}

function parseRequestHead(head: Buffer): ParsedRequestHead | undefined {
  const [requestLine, ...headers] = headLines(head);
  const match = /^([A-Z]+) (\S+) HTTP\/\d\.\d$/.exec(requestLine ?? '');
  if (!match) return undefined;
  const method = match[1]!;
  const target = match[2]!;
  const upgrade = headers.some((line) => {
    const colon = line.indexOf(':');
    return colon > 0 && line.slice(0, colon).trim().toLowerCase() === 'connection' && hasToken(line.slice(colon + 1), 'upgrade');
  });
  // An upgraded connection must keep its Connection header: the engine hijacks it.
  const forwardHeaders = upgrade ? headers : forceConnectionClose(headers);
  return {
    method,
    target,
    path: normalizeEnginePath(target),
    upgrade,
    forwardHead: Buffer.from([requestLine, ...forwardHeaders, '', ''].join('\r\n'), 'latin1'),
  };
}

function parseStatus(head: Buffer): number | undefined {
  const match = /^HTTP\/\d\.\d (\d{3})/.exec(head.toString('latin1'));
  return match ? Number(match[1]) : undefined;
}

/**
 * Writes `chunk` to `target`, pausing `source` until `target` drains, so a slow reader on one side
 * holds the other side's socket instead of growing the proxy's buffers.
 */
const awaitingDrain = new WeakSet<net.Socket>();

function relay(source: net.Socket, target: net.Socket, chunk: Buffer): void {
  if (target.destroyed) return;
  if (!target.write(chunk) && !awaitingDrain.has(target)) {
    awaitingDrain.add(target);
    source.pause();
    target.once('drain', () => {
      awaitingDrain.delete(target);
      source.resume();
    });
  }
}

/**
 * A fault-injecting proxy for the engine's unix socket. Start it with `FaultProxy.start()`, point an
 * Engine at `socketPath`, add rules, and `close()` it when done.
 */
export class FaultProxy {
  readonly socketPath: string;
  readonly upstreamSocketPath: string;
  readonly #server: net.Server;
  readonly #dir: string;
  readonly #random: () => number;
  readonly #sockets = new Set<net.Socket>();
  readonly #rules: InternalRule[] = [];
  readonly #log: RequestRecord[] = [];
  readonly #events = new EventEmitter();
  #nextRuleId = 1;
  #nextSeq = 1;
  #refuseAll = false;
  #refused = 0;
  #closed = false;

  private constructor(server: net.Server, dir: string, socketPath: string, options: FaultProxyOptions) {
    this.#server = server;
    this.#dir = dir;
    this.socketPath = socketPath;
    this.upstreamSocketPath = options.upstreamSocketPath ?? TEST_ENGINE_SOCKET;
    this.#random = options.random ?? Math.random;
    // Every delayed request listens for the proxy closing; a mix holds many at once.
    this.#events.setMaxListeners(0);
    server.on('connection', (client) => this.#onConnection(client));
  }

  /** Starts a proxy listening on a fresh unix socket in a temp dir. */
  static async start(options: FaultProxyOptions = {}): Promise<FaultProxy> {
    const dir = await mkdtemp(path.join(tmpdir(), 'berth-fault-proxy-'));
    const socketPath = path.join(dir, 'engine.sock');
    // allowHalfOpen: a client that ends its stdin must not have its output cut off.
    const server = net.createServer({ allowHalfOpen: true });
    const proxy = new FaultProxy(server, dir, socketPath, options);
    server.listen(socketPath);
    await once(server, 'listening');
    return proxy;
  }

  /** Adds a rule; rules are tried in the order added and the first that fires applies. */
  addRule(input: FaultRuleInput): FaultRule {
    const rule: InternalRule = {
      id: this.#nextRuleId++,
      method: input.method?.toUpperCase(),
      path: typeof input.path === 'string' ? new RegExp(`^${input.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) : input.path,
      fault: input.fault,
      times: input.times ?? Infinity,
      probability: input.probability ?? 1,
      matched: 0,
      fired: 0,
      released: false,
    };
    this.#rules.push(rule);
    const rules = this.#rules;
    const events = this.#events;
    return {
      id: rule.id,
      get matched() {
        return rule.matched;
      },
      get fired() {
        return rule.fired;
      },
      get exhausted() {
        return rule.fired >= rule.times;
      },
      release() {
        rule.released = true;
        events.emit('release', rule.id);
      },
      remove() {
        const index = rules.indexOf(rule);
        if (index >= 0) rules.splice(index, 1);
      },
    };
  }

  /** While true, every new connection is closed as soon as it is accepted: an engine that is not there. */
  get refuseAll(): boolean {
    return this.#refuseAll;
  }

  set refuseAll(value: boolean) {
    this.#refuseAll = value;
  }

  /** Connections closed at once because of refuseAll (or a closed proxy), since the start. */
  get refusedConnections(): number {
    return this.#refused;
  }

  /** Destroys every open connection (client and engine side), e.g. to cut long-lived streams. */
  dropOpenConnections(): void {
    for (const socket of this.#sockets) socket.destroy();
  }

  /** Every request received so far, oldest first. */
  get requests(): readonly RequestRecord[] {
    return this.#log;
  }

  /** Counts logged requests by method (undefined: any) and path. */
  count(method: string | undefined, pathPattern: RegExp): number {
    return this.#log.filter((r) => (method === undefined || r.method === method.toUpperCase()) && pathPattern.test(r.path)).length;
  }

  /** Resolves with the first logged request (past or future) that satisfies `predicate`. */
  waitForRequest(predicate: (record: RequestRecord) => boolean, timeoutMs = 10_000): Promise<RequestRecord> {
    const seen = this.#log.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const onRequest = (record: RequestRecord): void => {
        if (!predicate(record)) return;
        clearTimeout(timer);
        this.#events.off('request', onRequest);
        resolve(record);
      };
      const timer = setTimeout(() => {
        this.#events.off('request', onRequest);
        reject(new Error(`fault proxy: no matching request within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#events.on('request', onRequest);
    });
  }

  /** The requests whose client connections are open now, as lines (`#seq METHOD target fault status`), for a test's diagnosis of a hang. */
  openRequests(): string[] {
    return this.#log.filter((r) => r.clientOpen).map((r) => `#${r.seq} ${r.method} ${r.target} fault=${r.fault ?? 'none'} status=${r.status ?? '-'} engine=${r.engineStatus ?? '-'}`);
  }

  clearLog(): void {
    this.#log.length = 0;
  }

  /** Removes every rule and turns refuseAll off. The request log is kept (see clearLog). */
  reset(): void {
    this.#rules.length = 0;
    this.#refuseAll = false;
  }

  /** Destroys every connection, stops listening and removes the socket's temp dir. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#events.emit('closing');
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.dropOpenConnections();
    await closed;
    await rm(this.#dir, { recursive: true, force: true });
  }

  #track(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    // Errors (resets from either side) end the exchange; the other side is torn down on 'close'.
    socket.on('error', () => undefined);
  }

  #onConnection(client: net.Socket): void {
    this.#track(client);
    if (this.#refuseAll || this.#closed) {
      this.#refused++;
      client.destroy();
      return;
    }
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf(HEAD_END);
      if (end === -1) {
        if (buffered.length > MAX_HEAD_BYTES) client.destroy();
        return;
      }
      client.off('data', onData);
      client.pause();
      const head = parseRequestHead(buffered.subarray(0, end));
      if (!head) {
        client.destroy();
        return;
      }
      void this.#handleRequest(client, head, buffered.subarray(end + HEAD_END.length));
    };
    client.on('data', onData);
  }

  #match(head: ParsedRequestHead): InternalRule | undefined {
    for (const rule of this.#rules) {
      if (rule.method !== undefined && rule.method !== head.method) continue;
      if (!rule.path.test(head.path)) continue;
      rule.matched++;
      if (rule.fired >= rule.times) continue;
      if (rule.probability < 1 && this.#random() >= rule.probability) continue;
      rule.fired++;
      return rule;
    }
    return undefined;
  }

  async #handleRequest(client: net.Socket, head: ParsedRequestHead, bodyStart: Buffer): Promise<void> {
    const rule = this.#match(head);
    const fault = rule?.fault;
    const record: RequestRecord = {
      seq: this.#nextSeq++,
      method: head.method,
      path: head.path,
      target: head.target,
      upgrade: head.upgrade,
      fault: fault?.kind,
      status: undefined,
      engineStatus: undefined,
      clientOpen: !client.destroyed,
    };
    client.once('close', () => (record.clientOpen = false));
    this.#log.push(record);
    this.#events.emit('request', record);

    if (fault?.kind === 'drop') {
      client.destroy();
      return;
    }
    if (fault?.kind === 'error500Before') {
      record.status = 500;
      client.end(INJECTED_500);
      return;
    }
    if (fault?.kind === 'error503Before') {
      record.status = 503;
      client.end(INJECTED_503);
      return;
    }

    let pending = bodyStart;
    if ((fault?.kind === 'delay' || (fault?.kind === 'hold' && !rule?.released)) && rule) {
      // Keep reading during the delay so that a client giving up is noticed; a client that gave up
      // (or the proxy closing) ends the delay early, so no timer outlives the test.
      let clientGone = false;
      await new Promise<void>((resolve) => {
        const collect = (chunk: Buffer): void => {
          pending = Buffer.concat([pending, chunk]);
        };
        const gone = (): void => {
          clientGone = true;
          if (!fault.forwardIfClientGone) finish();
        };
        const onRelease = (ruleId: number): void => {
          if (ruleId === rule.id) finish();
        };
        const finish = (): void => {
          clearTimeout(timer);
          this.#events.off('release', onRelease);
          client.off('data', collect);
          client.off('end', gone);
          client.off('close', gone);
          this.#events.off('closing', finish);
          resolve();
        };
        const timer = fault.kind === 'delay' ? setTimeout(finish, fault.delayMs) : undefined;
        if (fault.kind === 'hold') this.#events.on('release', onRelease);
        client.on('data', collect);
        client.once('end', gone);
        client.once('close', gone);
        this.#events.once('closing', finish);
        client.resume();
        if (client.destroyed) gone();
      });
      client.pause();
      if (clientGone && !fault.forwardIfClientGone) {
        client.destroy();
        return;
      }
    }
    if (this.#closed) {
      client.destroy();
      return;
    }
    this.#forward(client, head, pending, fault, record);
  }

  #forward(client: net.Socket, head: ParsedRequestHead, bodyStart: Buffer, fault: Fault | undefined, record: RequestRecord): void {
    const upstream = net.connect({ path: this.upstreamSocketPath, allowHalfOpen: true });
    this.#track(upstream);
    // One write for head and any body bytes already read: the engine discards what it buffered
    // past the head of a hijacked request, so splitting them would turn the body into stdin.
    upstream.write(Buffer.concat([head.forwardHead, bodyStart]));
    // A client that hung up during a delay gets its request delivered anyway (forwardIfClientGone):
    // the engine answers into the void and the connection is dropped once it has. Its side is not
    // half-closed, since the engine cancels a request whose client closes.
    const clientGone = client.destroyed || client.readableEnded;
    if (clientGone) upstream.once('end', () => upstream.destroy());
    else {
      client.pipe(upstream);
      client.on('close', () => upstream.destroy());
    }

    const holdsResponse = fault?.kind === 'error500AfterForward' || fault?.kind === 'dropAfterForward';
    const actsOnHead = holdsResponse && fault.at === 'head';
    const stallAfterBodyBytes = fault?.kind === 'stall' ? (fault.afterBodyBytes ?? 0) : fault?.kind === 'dropAfterBodyBytes' ? fault.afterBodyBytes : undefined;
    const dropsWhenStalled = fault?.kind === 'dropAfterBodyBytes';
    let responseHead: Buffer | undefined = Buffer.alloc(0);
    let bodyBytesRelayed = 0;
    let stalled = false;
    let finished = false;

    const finishHeldResponse = (): void => {
      if (finished) return;
      finished = true;
      upstream.destroy();
      if (fault?.kind === 'error500AfterForward') {
        record.status = 500;
        client.end(INJECTED_500);
      } else {
        client.destroy();
      }
    };

    const relayBody = (chunk: Buffer): void => {
      if (stallAfterBodyBytes === undefined) {
        relay(upstream, client, chunk);
        return;
      }
      const allowed = Math.max(0, stallAfterBodyBytes - bodyBytesRelayed);
      if (allowed > 0) relay(upstream, client, chunk.subarray(0, allowed));
      bodyBytesRelayed += Math.min(allowed, chunk.length);
      if (bodyBytesRelayed >= stallAfterBodyBytes) {
        stalled = true;
        if (dropsWhenStalled) {
          // Let the relayed bytes reach the client, then cut both sides.
          client.end(() => client.destroy());
          upstream.destroy();
        }
      }
    };

    upstream.on('data', (chunk: Buffer) => {
      if (stalled) return;
      if (responseHead !== undefined) {
        responseHead = Buffer.concat([responseHead, chunk]);
        const end = responseHead.indexOf(HEAD_END);
        if (end === -1) {
          if (responseHead.length > MAX_HEAD_BYTES) upstream.destroy();
          return;
        }
        const headBytes = responseHead.subarray(0, end);
        const rest = responseHead.subarray(end + HEAD_END.length);
        responseHead = undefined;
        const status = parseStatus(headBytes);
        record.engineStatus = status;
        if (holdsResponse) {
          // An upgraded connection never ends on its own: its head is the whole answer.
          if (status === 101 || actsOnHead) finishHeldResponse();
          return;
        }
        record.status = status;
        const [statusLine, ...headers] = headLines(headBytes);
        const forwardHeaders = status === 101 ? headers : forceConnectionClose(headers);
        relay(upstream, client, Buffer.from([statusLine, ...forwardHeaders, '', ''].join('\r\n'), 'latin1'));
        if (rest.length > 0) relayBody(rest);
        else if (stallAfterBodyBytes === 0) stalled = true;
        return;
      }
      if (holdsResponse) return;
      relayBody(chunk);
    });

    upstream.on('end', () => {
      if (holdsResponse) finishHeldResponse();
      else if (stallAfterBodyBytes === undefined || !stalled) client.end();
    });
    upstream.on('close', () => {
      // A stalled exchange stays open until the client gives up.
      if (stalled) return;
      if (holdsResponse && !finished) {
        // The engine went away before answering in full: nothing to relay.
        finished = true;
        client.destroy();
        return;
      }
      if (!client.writableEnded) client.destroy();
    });
  }
}
