import { PassThrough, Writable, type Readable } from 'node:stream';
import WebSocket from 'ws';
import { BerthError, cancelledError, messageOf } from '../common/errors.js';
import type { CommandFailure } from '../engine/classify.js';
import { openAgentSocket, type AgentSocketTarget } from './attach-client.js';
import { decodeData, encodeData, parseAgentControl, type ClientControl } from './stream-frames.js';

/**
 * The client side of exec over the agent's WebSocket (`GET /v1/tasks/:id/exec`): the query from
 * the options, the socket (over the agent's unix socket, ws:// or wss:// with the client's TLS
 * material), and a session of Node streams on top of stream-frames.ts.
 */

/** What to run: as `berth exec`'s flags. */
export interface AgentExecOptions {
  cmd: readonly string[];
  /** Give the command a TTY. Default false. */
  tty?: boolean;
  /** Open the command's stdin (`session.stdin`). Default false. */
  stdin?: boolean;
  /** `KEY=VALUE` each. */
  env?: readonly string[];
  workdir?: string;
  user?: string;
  /** The TTY's size at the start (with `tty`). */
  size?: { rows: number; columns: number };
  /** Aborting closes the session, which ends the command. */
  signal?: AbortSignal;
}

/** How the exec ended. */
export interface AgentExecExit {
  exitCode: number;
  /** Set when the command could not be started (not found 127, not executable 126): the runtime's words. */
  commandFailure?: CommandFailure;
}

/** A running exec: its streams, its TTY's size, and its end. */
export interface AgentExecSession {
  readonly execId: string;
  readonly stdout: Readable;
  /** Empty with a TTY (the TTY's output is all on stdout). */
  readonly stderr: Readable;
  /** Present with `stdin: true`; ending it closes the command's stdin. */
  readonly stdin?: Writable;
  /** Sets the TTY's size. */
  resize(size: { rows: number; columns: number }): Promise<void>;
  /** Resolves once the command has exited and all its output is in stdout and stderr. */
  readonly exit: Promise<AgentExecExit>;
  /** The exit code of `exit`. */
  readonly exitCode: Promise<number>;
  /** Closes the session: a command still running is killed by the agent. */
  close(): void;
}

/** The query of an exec: `cmd` repeated, flags as true, `env` repeated. */
export function execQuery(options: AgentExecOptions): string {
  const query = new URLSearchParams();
  // One word starting with `[` would read as a JSON array: such a command is sent as one.
  if (options.cmd.length === 1 && options.cmd[0]!.startsWith('[')) query.set('cmd', JSON.stringify(options.cmd));
  else for (const word of options.cmd) query.append('cmd', word);
  if (options.tty) query.set('tty', 'true');
  if (options.stdin) query.set('stdin', 'true');
  for (const entry of options.env ?? []) query.append('env', entry);
  if (options.workdir !== undefined) query.set('workdir', options.workdir);
  if (options.user !== undefined) query.set('user', options.user);
  if (options.tty && options.size) {
    query.set('rows', String(options.size.rows));
    query.set('cols', String(options.size.columns));
  }
  return query.toString();
}

/**
 * Opens the exec's socket (openAgentSocket: the client's address, token, TLS and refusals) and
 * resolves once the agent said the command started.
 */
export async function openExecSession(target: AgentSocketTarget, taskId: string, options: AgentExecOptions & { deadlineMs: number }): Promise<AgentExecSession> {
  const what = `exec in task ${taskId}`;
  const socket = await openAgentSocket(target, `/v1/tasks/${encodeURIComponent(taskId)}/exec?${execQuery(options)}`, {
    ...(options.signal ? { signal: options.signal } : {}),
    deadlineMs: options.deadlineMs,
  });
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let settle: { resolve: (exit: AgentExecExit) => void; reject: (error: unknown) => void } | undefined;
  const exit = new Promise<AgentExecExit>((resolve, reject) => (settle = { resolve, reject }));
  const exitCode = exit.then((outcome) => outcome.exitCode);
  // Nobody may await them (a caller that only reads stdout); a failure is then no news.
  exit.catch(() => undefined);
  exitCode.catch(() => undefined);
  let isClosedByClient = false;
  let ended: AgentExecExit | BerthError | undefined;
  const finish = (outcome: AgentExecExit | BerthError): void => {
    if (ended !== undefined) return;
    ended = outcome;
    stdout.end();
    stderr.end();
    if (outcome instanceof BerthError) settle!.reject(outcome);
    else settle!.resolve(outcome);
  };
  const send = (control: ClientControl): Promise<void> =>
    new Promise((resolve, reject) => {
      if (socket.readyState !== WebSocket.OPEN) return reject(new BerthError('BERTH_AGENT_UNAVAILABLE', `${what}: the session is closed`, { context: { agent: target.host } }));
      socket.send(JSON.stringify(control), (error) => (error ? reject(error) : resolve()));
    });
  const stdin = options.stdin
    ? new Writable({
        write(chunk: Buffer, _encoding, callback) {
          if (socket.readyState !== WebSocket.OPEN) return callback();
          socket.send(encodeData('stdin', chunk), { binary: true }, () => callback());
        },
        final(callback) {
          send({ type: 'close-stdin' }).then(() => callback(), () => callback());
        },
      })
    : undefined;
  // A slow reader of stdout or stderr pauses the socket, and so the agent, and so the command.
  const pauseWhenFull = (wrote: boolean, stream: PassThrough): void => {
    if (!wrote) {
      socket.pause();
      stream.once('drain', () => socket.resume());
    }
  };
  const onAbort = (): void => socket.close(1000, 'cancelled');
  options.signal?.addEventListener('abort', onAbort, { once: true });

  return new Promise<AgentExecSession>((resolve, reject) => {
    let isOpen = false;
    const session = (execId: string): AgentExecSession => ({
      execId,
      stdout,
      stderr,
      ...(stdin ? { stdin } : {}),
      resize: ({ rows, columns }) => send({ type: 'resize', rows, cols: columns }),
      exit,
      exitCode,
      close: () => {
        isClosedByClient = true;
        if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) socket.close(1000, 'closed');
      },
    });
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        const frame = decodeData(data);
        if (frame?.stream === 'stdout') pauseWhenFull(stdout.write(frame.data), stdout);
        else if (frame?.stream === 'stderr') pauseWhenFull(stderr.write(frame.data), stderr);
        return;
      }
      const control = parseAgentControl(data.toString('utf8'));
      if (control?.type === 'started') {
        isOpen = true;
        resolve(session(String(control.execId ?? '')));
      } else if (control?.type === 'exit') {
        const { exitCode, commandFailure } = control as { exitCode: number; commandFailure?: AgentExecExit['commandFailure'] };
        finish({ exitCode, ...(commandFailure ? { commandFailure } : {}) });
      } else if (control?.type === 'error') {
        const error = target.refusal(0, control.error, '');
        finish(error);
        if (!isOpen) reject(error);
      }
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      const failure = options.signal?.aborted
        ? cancelledError(what, options.signal.reason)
        : error instanceof BerthError
          ? error
          : new BerthError('BERTH_AGENT_UNAVAILABLE', `the agent at ${target.host} does not answer ${what} (${error.code ?? messageOf(error)}); is \`berth agent\` running?`, { cause: error, context: { agent: target.host } });
      finish(failure);
      if (!isOpen) reject(failure);
    });
    socket.once('close', (code: number, reason: Buffer) => {
      options.signal?.removeEventListener('abort', onAbort);
      const failure = options.signal?.aborted || isClosedByClient
        ? cancelledError(what, options.signal?.reason)
        : new BerthError('BERTH_AGENT_UNAVAILABLE', `the agent at ${target.host} closed ${what} before the command's exit (${code}${reason.length > 0 ? ` ${reason.toString('utf8')}` : ''})`, { context: { agent: target.host } });
      finish(failure);
      if (!isOpen) reject(failure);
    });
    // openAgentSocket hands the socket over paused, so that nothing the agent sent with the upgrade is lost.
    socket.resume();
  });
}
