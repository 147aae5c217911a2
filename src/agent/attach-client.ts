import type { IncomingMessage } from 'node:http';
import { connect as netConnect } from 'node:net';
import { Readable, Writable } from 'node:stream';
import WebSocket, { type RawData } from 'ws';
import { BerthError, cancelledError, ERROR_CODES, messageOf, type ErrorCode } from '../common/errors.js';
import type { StoredEndState } from '../state/tasks.js';
import type { ErrorBody } from './http/errors.js';
import { decodeData, encodeData, parseAgentControl } from './stream-frames.js';

/**
 * The client side of the agent's WebSocket routes (attach): opening the socket with the client's
 * address, token and TLS, and a session of stdout/stderr Readables, a stdin Writable and the end.
 * The frames are those of stream-frames.ts.
 */

/** Where and how a WebSocket reaches the agent: the AgentClient's address, token and TLS. */
export interface AgentSocketTarget {
  /** The agent's address, for messages. */
  host: string;
  /** A unix socket, or a TCP host and port. */
  socketPath?: string;
  hostname?: string;
  port?: number;
  /** Whether to speak TLS (wss). */
  secure: boolean;
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
  token: string;
  /** Maps a refused upgrade (the agent's error answer) to a BerthError. */
  refusal(status: number, error: Partial<ErrorBody['error']> | undefined, text: string): BerthError;
  /** Maps a transport failure (refused, reset, TLS) to a BerthError. */
  transportError(error: unknown, what: string, signal: AbortSignal | undefined, deadline: AbortSignal | undefined, deadlineMs: number): BerthError;
}

/** How an attach ended: the task's exit (its exit code and end state), or this client detaching. */
export type AttachEnd = { kind: 'exit'; exitCode: number; endState?: StoredEndState } | { kind: 'detached' };

export interface AttachOptions {
  /** First receive what the task printed before the attach (docker attach --logs). Default false. */
  logs?: boolean;
  /** Aborting detaches (the task goes on). */
  signal?: AbortSignal;
  /** Deadline of the upgrade (the attach itself has none). Default the client's call deadline. */
  deadlineMs?: number;
}

/** A live attach to a task. */
export interface AttachSession {
  /** The task's stdout from the moment of attaching (with `logs`, from its start); ends when the attach ends. */
  readonly stdout: Readable;
  readonly stderr: Readable;
  /**
   * Writes to the task's stdin, for a task whose spec has `openStdin`; ending it says this client has
   * no more to write (the task's stdin stays open). For any other task the first write makes the
   * agent refuse, and `end` rejects with BERTH_VALIDATION.
   */
  readonly stdin: Writable;
  /**
   * Resolves when the attach ends: `exit` with the task's exit code and end state when it ended,
   * `detached` after `detach()` (or the signal). Rejects with the agent's error, or with
   * BERTH_AGENT_UNAVAILABLE when the connection closed before the task ended.
   */
  readonly end: Promise<AttachEnd>;
  /** Closes the socket; the task goes on. */
  detach(): void;
}

/**
 * Opens a WebSocket on the agent at `pathAndQuery`; resolves once upgraded, with the socket paused
 * (the caller resumes it once it listens for messages), or rejects with the agent's refusal (401,
 * 404, 409 …).
 */
export function openAgentSocket(target: AgentSocketTarget, pathAndQuery: string, options: { signal?: AbortSignal; deadlineMs: number }): Promise<WebSocket> {
  const what = `GET ${pathAndQuery.split('?')[0]} (WebSocket)`;
  if (options.signal?.aborted) return Promise.reject(cancelledError(what, options.signal.reason));
  const deadline = options.deadlineMs > 0 ? AbortSignal.timeout(options.deadlineMs) : undefined;
  const url = target.socketPath !== undefined
    ? `ws://localhost${pathAndQuery}`
    : `${target.secure ? 'wss' : 'ws'}://${target.hostname!.includes(':') ? `[${target.hostname}]` : target.hostname}:${target.port}${pathAndQuery}`;
  const socketPath = target.socketPath;
  const socket = new WebSocket(url, {
    headers: { authorization: `Bearer ${target.token}` },
    perMessageDeflate: false,
    ...(socketPath !== undefined ? { createConnection: () => netConnect({ path: socketPath }) } : {}),
    ...(target.secure ? { ...target.tls } : {}),
  });
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      options.signal?.removeEventListener('abort', onAbort);
      deadline?.removeEventListener('abort', onAbort);
      outcome();
    };
    const onAbort = (): void => {
      settle(() => reject(options.signal?.aborted ? cancelledError(what, options.signal.reason) : target.transportError(new Error('deadline'), what, undefined, deadline, options.deadlineMs)));
      socket.terminate();
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    deadline?.addEventListener('abort', onAbort, { once: true });
    socket.once('open', () => {
      // Paused until the caller listens: messages that came with the upgrade (an attach's earlier
      // output) would otherwise be emitted before the promise's continuation runs, and lost.
      socket.pause();
      settle(() => resolve(socket));
    });
    socket.once('unexpected-response', (_request, response: IncomingMessage) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      const done = (): void => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: Partial<ErrorBody> | undefined;
        try {
          body = JSON.parse(text) as Partial<ErrorBody>;
        } catch {
          body = undefined;
        }
        settle(() => reject(target.refusal(response.statusCode ?? 0, body?.error, text)));
        socket.terminate();
      };
      response.once('end', done);
      response.once('error', done);
    });
    socket.once('error', (error) => settle(() => reject(target.transportError(error, what, options.signal, deadline, options.deadlineMs))));
  });
}

/** The bytes of a message, whatever form ws hands them in. */
function bytesOf(data: RawData): Buffer {
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.isBuffer(data) ? data : Buffer.from(data);
}

/** A session over an open attach socket (see AttachSession). */
export function attachSession(socket: WebSocket, host: string, signal?: AbortSignal): AttachSession {
  let isDetached = false;
  /** Resumes the socket once both readers want more (a full one pauses it: backpressure to the agent). */
  const resumeIfWanted = (): void => {
    if (stdout.readableLength < stdout.readableHighWaterMark && stderr.readableLength < stderr.readableHighWaterMark) socket.resume();
  };
  const stdout = new Readable({ read: resumeIfWanted });
  const stderr = new Readable({ read: resumeIfWanted });
  const stdin = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (socket.readyState !== socket.OPEN) return callback();
      socket.send(encodeData('stdin', chunk), (error) => callback(error ?? null));
    },
    final(callback) {
      if (socket.readyState === socket.OPEN) socket.send(JSON.stringify({ type: 'close-stdin' }));
      callback();
    },
  });
  // Input after the attach ended goes nowhere, as a pipe to a closed reader's does.
  stdin.on('error', () => undefined);

  const end = new Promise<AttachEnd>((resolve, reject) => {
    let outcome: { end: AttachEnd } | { error: BerthError } | undefined;
    socket.on('message', (data: RawData, isBinary: boolean) => {
      const bytes = bytesOf(data);
      if (isBinary) {
        const frame = decodeData(bytes);
        const target = frame?.stream === 'stdout' ? stdout : frame?.stream === 'stderr' ? stderr : undefined;
        if (frame && target && !target.push(frame.data)) socket.pause();
        return;
      }
      const control = parseAgentControl(bytes.toString('utf8'));
      if (control?.type === 'exit') {
        outcome = { end: { kind: 'exit', exitCode: control.exitCode, ...(control.endState !== undefined ? { endState: control.endState as StoredEndState } : {}) } };
      } else if (control?.type === 'error') {
        const code = Object.hasOwn(ERROR_CODES, control.error.code) ? (control.error.code as ErrorCode) : 'BERTH_INTERNAL';
        outcome = { error: new BerthError(code, control.error.message, { context: { agent: host, ...(code === control.error.code ? {} : { agentCode: control.error.code }) } }) };
      }
    });
    socket.once('close', (code: number, reason: Buffer) => {
      signal?.removeEventListener('abort', detach);
      stdout.push(null);
      stderr.push(null);
      stdin.destroy();
      if (outcome && 'error' in outcome) return reject(outcome.error);
      if (outcome) return resolve(outcome.end);
      if (isDetached) return resolve({ kind: 'detached' });
      const why = reason.length > 0 ? `${code}: ${reason.toString('utf8')}` : String(code);
      reject(new BerthError('BERTH_AGENT_UNAVAILABLE', `the attach to the agent at ${host} closed (${why}) before the task ended; the task goes on`, { context: { agent: host, closeCode: code } }));
    });
    socket.on('error', (error) => {
      outcome ??= { error: new BerthError('BERTH_AGENT_UNAVAILABLE', `the attach to the agent at ${host} failed: ${messageOf(error)}`, { cause: error, context: { agent: host } }) };
    });
  });
  // A caller that only awaits the streams must not see an unhandled rejection.
  end.catch(() => undefined);
  function detach(): void {
    isDetached = true;
    if (socket.readyState === socket.OPEN || socket.readyState === socket.CONNECTING) socket.close(1000, 'detached');
  }
  if (signal?.aborted) detach();
  else signal?.addEventListener('abort', detach, { once: true });
  // Listening now: what arrived with the upgrade is delivered.
  socket.resume();
  return { stdout, stderr, stdin, end, detach };
}
