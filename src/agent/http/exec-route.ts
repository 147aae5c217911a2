import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import { BerthError, isBerthError, messageOf, ValidationError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { Engine, ExecOptions, ExecSession } from '../../engine/engine.js';
import type { TaskRecord } from '../../state/tasks.js';
import { endExecProcess } from '../../tasks/exec.js';
import { execGateOf, inspectExecOf } from '../../tasks/exec-gate.js';
import { decodeData, encodeData, parseClientControl, type AgentControl } from '../stream-frames.js';
import { toErrorResponse } from './errors.js';
import { API_ROUTES } from './schemas.js';
import { CappedOutput, parseExecQuery, plainExecOptions, type ExecRequest, type PlainExecBody } from './exec.js';

/**
 * Exec in a running task through the agent: `GET /v1/tasks/:id/exec` upgraded to a WebSocket
 * (stream-frames.ts is its wire format), and `POST /v1/tasks/:id/exec`, which runs a command to its
 * end and answers with its output and exit code. Both find the container from the task's record
 * (its containerId), never by listing the engine's containers, and refuse a task that is not
 * running (409 BERTH_TASK_STATE) before anything runs. The engine cannot end an exec, so when the
 * client goes away (or a plain exec times out) the exec's process is killed by its pid
 * (`endExecProcess`).
 */

/** What exec needs of the engine. */
export type ExecEngine = Pick<Engine, 'exec' | 'inspectExec'>;

export interface ExecRouteDeps {
  /** The task an id (or unique id prefix) names, as every task route finds it. */
  visibleTask(idOrPrefix: string): TaskRecord;
  engine: ExecEngine | undefined;
  logger: Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;
  /** Counts an error code, as the server's error handler does for every route. */
  countError(code: string): void;
}

/** Data sends buffered for one socket before the exec's output is paused, so a slow client slows the command, and nothing piles up. */
const MAX_BUFFERED_BYTES = 1024 * 1024;
/** The first resize of an exec may come before its process runs: tried this many times, 50 ms apart and more. */
const FIRST_RESIZE_ATTEMPTS = 5;

/** The running container of a task, from its record; BERTH_TASK_STATE when it is not running. */
function runningContainerOf(task: TaskRecord): string {
  if (task.state !== 'running' || task.containerId === undefined) {
    throw new BerthError('BERTH_TASK_STATE', `cannot exec in task ${task.id}: it is ${task.state}, not running`, { context: { taskId: task.id, state: task.state } });
  }
  return task.containerId;
}

/** Starts the exec in the task's container; a container that stopped meanwhile is the task's state, not the engine's conflict. */
async function startExec(deps: ExecRouteDeps, task: TaskRecord, options: ExecOptions, signal?: AbortSignal): Promise<{ session: ExecSession; engine: ExecEngine }> {
  const engine = deps.engine;
  if (!engine) throw new BerthError('BERTH_ENGINE_UNAVAILABLE', 'this agent serves no engine for exec');
  const containerId = runningContainerOf(task);
  try {
    // Set up under the container's gate, shared with the task handles' pause (see tasks/exec-gate.ts).
    return { session: await execGateOf(engine).setup(containerId, () => engine.exec(containerId, options, { signal }), inspectExecOf(engine)), engine };
  } catch (error) {
    if (isBerthError(error, 'BERTH_ENGINE_CONFLICT') || isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) {
      throw new BerthError('BERTH_TASK_STATE', `cannot exec in task ${task.id}: its container is not running`, { cause: error, context: { taskId: task.id, containerId } });
    }
    throw error;
  }
}

/** Ends an exec's process, logging (not throwing) a failure: the caller is cleaning up. */
function endProcess(deps: ExecRouteDeps, engine: ExecEngine, session: ExecSession, why: string): Promise<void> {
  return endExecProcess(engine, session.id).then(
    (ended) => {
      if (ended) deps.logger.debug({ execId: session.id, why }, 'ended an exec process');
    },
    (error: unknown) => deps.logger.warn({ execId: session.id, why, error: messageOf(error) }, 'could not end an exec process'),
  );
}

/** Forwards a readable's chunks as binary frames of `stream`, pausing it while the socket's buffer is full. */
function forward(socket: WebSocket, source: NodeJS.ReadableStream, stream: 'stdout' | 'stderr'): Promise<void> {
  return new Promise((resolve) => {
    source.on('data', (chunk: Buffer) => {
      if (socket.readyState !== socket.OPEN) return;
      socket.send(encodeData(stream, chunk), { binary: true }, () => {
        if (source.isPaused() && socket.bufferedAmount < MAX_BUFFERED_BYTES) source.resume();
      });
      if (socket.bufferedAmount >= MAX_BUFFERED_BYTES) source.pause();
    });
    source.once('end', resolve);
    source.once('close', resolve);
    source.once('error', () => resolve());
  });
}

function sendControl(socket: WebSocket, message: AgentControl): void {
  if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(message));
}

/** Sends the error as the last message and closes: 1011 for the agent's failures, 1008 for the client's. */
function closeWithError(socket: WebSocket, error: unknown): void {
  const { status, body } = toErrorResponse(error);
  sendControl(socket, { type: 'error', error: { code: body.error.code, message: body.error.message } });
  if (socket.readyState === socket.OPEN) socket.close(status >= 500 ? 1011 : 1008, body.error.code);
}

/** Resizes, tried a few times while the exec's process may still be starting (as the docker CLI does). */
async function firstResize(session: ExecSession, size: { rows: number; columns: number }): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await session.resize(size);
    } catch (error) {
      if (attempt >= FIRST_RESIZE_ATTEMPTS) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
    }
  }
}

/** The WebSocket exec: runs once the upgrade is done; the request was checked before (`preHandler`). */
async function serveSocketExec(deps: ExecRouteDeps, socket: WebSocket, task: TaskRecord, exec: ExecRequest): Promise<void> {
  const gone = new AbortController();
  let session: ExecSession | undefined;
  let engine: ExecEngine | undefined;
  let isFinished = false;
  socket.once('close', () => {
    gone.abort();
    // The client went away (or cancelled) before the exit: the exec's process goes with it.
    if (!isFinished && session && engine) void endProcess(deps, engine, session, 'the client closed the socket');
    session?.close();
  });
  // Messages may arrive while the exec is being started: held until it runs.
  const early: Array<{ data: Buffer; isBinary: boolean }> = [];
  let earlyBytes = 0;
  const onMessage = (data: Buffer, isBinary: boolean): void => {
    if (!session) {
      earlyBytes += data.length;
      // A client that sends more than a socket's buffer before the command runs is not waiting for `started`.
      if (earlyBytes > MAX_BUFFERED_BYTES) {
        closeWithError(socket, new ValidationError([{ field: 'message', rule: `at most ${MAX_BUFFERED_BYTES} bytes may be sent before the "started" message` }]));
        return;
      }
      early.push({ data, isBinary });
      return;
    }
    if (isBinary) {
      const frame = decodeData(data);
      if (frame?.stream === 'stdin' && session.stdin && socket.readyState === socket.OPEN) session.stdin.write(frame.data);
      return;
    }
    try {
      const control = parseClientControl(data.toString('utf8'));
      if (control.type === 'close-stdin') session.stdin?.end();
      else if (exec.options.tty) session.resize({ rows: control.rows, columns: control.cols }).catch((error: unknown) => deps.logger.debug({ execId: session?.id, error: messageOf(error) }, 'an exec resize failed'));
    } catch (error) {
      deps.countError(isBerthError(error) ? error.code : 'BERTH_INTERNAL');
      closeWithError(socket, error);
    }
  };
  socket.on('message', (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => onMessage(Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data), isBinary));
  try {
    ({ session, engine } = await startExec(deps, task, exec.options, gone.signal));
  } catch (error) {
    if (gone.signal.aborted) return;
    deps.countError(isBerthError(error) ? error.code : 'BERTH_INTERNAL');
    if (!isBerthError(error) || toErrorResponse(error).status >= 500) deps.logger.error({ taskId: task.id, error: messageOf(error) }, 'an exec failed to start');
    closeWithError(socket, error);
    return;
  }
  const started = session;
  if (socket.readyState !== socket.OPEN) {
    // Gone while the exec was starting: the close listener above ran before there was a session.
    void endProcess(deps, engine, started, 'the client closed the socket while it started');
    started.close();
    return;
  }
  // The TTY has its size before the client hears that the command runs, and before any of its
  // input is passed on: a command reading its size first (`stty size`) sees the one asked for.
  if (exec.size && exec.options.tty) await firstResize(started, exec.size).catch((error: unknown) => deps.logger.debug({ execId: started.id, error: messageOf(error) }, 'the first exec resize failed'));
  sendControl(socket, { type: 'started', execId: started.id });
  for (const message of early.splice(0)) onMessage(message.data, message.isBinary);
  const output = Promise.all([forward(socket, started.stdout, 'stdout'), forward(socket, started.stderr, 'stderr')]);
  try {
    const status = await started.exitStatus();
    await output;
    isFinished = true;
    sendControl(socket, { type: 'exit', exitCode: status.exitCode, ...(status.commandFailure ? { commandFailure: status.commandFailure } : {}) });
    if (socket.readyState === socket.OPEN) socket.close(1000, 'exited');
  } catch (error) {
    if (gone.signal.aborted) return;
    deps.countError(isBerthError(error) ? error.code : 'BERTH_INTERNAL');
    closeWithError(socket, error);
  } finally {
    started.close();
  }
}

/** The plain exec: runs the command to its end (or its timeout) and answers with its output. */
async function servePlainExec(deps: ExecRouteDeps, request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const task = deps.visibleTask((request.params as { id: string }).id);
  const { options, timeoutMs, stdin } = plainExecOptions(request.body as PlainExecBody);
  const gone = new AbortController();
  const onClientGone = (): void => {
    if (!reply.raw.writableEnded) gone.abort();
  };
  reply.raw.once('close', onClientGone);
  const { session, engine } = await startExec(deps, task, options, gone.signal);
  const stdout = new CappedOutput();
  const stderr = new CappedOutput();
  session.stdout.on('data', (chunk: Buffer) => stdout.add(chunk));
  session.stderr.on('data', (chunk: Buffer) => stderr.add(chunk));
  const ended = Promise.all(
    [session.stdout, session.stderr].map((stream) => new Promise<void>((resolve) => {
      stream.once('end', resolve);
      stream.once('close', resolve);
      stream.once('error', () => resolve());
    })),
  );
  if (stdin !== undefined) session.stdin?.end(stdin);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timed-out'>((resolve) => {
    timer = setTimeout(() => resolve('timed-out'), timeoutMs);
  });
  const clientGone = new Promise<'gone'>((resolve) => gone.signal.addEventListener('abort', () => resolve('gone'), { once: true }));
  try {
    const outcome = await Promise.race([session.exitStatus(), timedOut, clientGone]);
    if (outcome === 'timed-out' || outcome === 'gone') {
      await endProcess(deps, engine, session, outcome === 'gone' ? 'the client went away' : 'the exec timed out');
      if (outcome === 'gone') return reply;
      throw new BerthError('BERTH_EXEC_TIMEOUT', `the command did not end within its timeout (${timeoutMs} ms) and was killed`, { context: { taskId: task.id, execId: session.id, timeoutMs } });
    }
    await ended;
    return {
      exitCode: outcome.exitCode,
      stdout: stdout.text(),
      stderr: stderr.text(),
      ...(stdout.isTruncated ? { stdoutTruncated: true } : {}),
      ...(stderr.isTruncated ? { stderrTruncated: true } : {}),
    };
  } finally {
    clearTimeout(timer);
    reply.raw.off('close', onClientGone);
    session.close();
  }
}

/**
 * Declares both exec routes on `app`, which must be a plugin scope registered after
 * @fastify/websocket (its onRoute hook makes the GET a WebSocket route). The bearer-token hook of
 * the server covers the upgrade: a wrong token is answered 401 and never upgraded; so is a bad
 * query (400) or a task that is not running (409), by the preHandler, in berth's error shape.
 */
export function declareExecRoutes(app: FastifyInstance, deps: ExecRouteDeps, schemas: { params: unknown; body: unknown; responses: Record<number, unknown> }): void {
  const checked = new WeakMap<FastifyRequest, { task: TaskRecord; exec: ExecRequest }>();
  app.route({
    method: 'GET',
    url: '/v1/tasks/:id/exec',
    schema: { params: schemas.params },
    preHandler: async (request) => {
      const task = deps.visibleTask((request.params as { id: string }).id);
      const exec = parseExecQuery(request.query as Record<string, string | string[] | undefined>);
      runningContainerOf(task);
      if (!request.ws) {
        throw new ValidationError([{ field: 'upgrade', rule: 'exec over GET is a WebSocket: send Connection: Upgrade and Upgrade: websocket (or POST for a plain exec)' }]);
      }
      checked.set(request, { task, exec });
    },
    handler: async () => {
      throw new ValidationError([{ field: 'upgrade', rule: 'exec over GET is a WebSocket' }]);
    },
    wsHandler: (socket: WebSocket, request: FastifyRequest) => {
      const found = checked.get(request);
      if (!found) {
        socket.close(1011, 'BERTH_INTERNAL');
        return;
      }
      void serveSocketExec(deps, socket, found.task, found.exec).catch((error: unknown) => {
        deps.logger.error({ error: messageOf(error) }, 'an exec over a WebSocket failed');
        closeWithError(socket, error);
      });
    },
  });
  app.route({
    method: 'POST',
    url: '/v1/tasks/:id/exec',
    schema: { params: schemas.params, body: schemas.body, response: schemas.responses },
    handler: (request, reply) => servePlainExec(deps, request, reply),
  });
}

/**
 * Registers @fastify/websocket and, in a plugin scope after it, the exec routes, with the schemas
 * of their API_ROUTES entries.
 */
export function registerExecRoutes(app: FastifyInstance, deps: ExecRouteDeps): void {
  const plain = API_ROUTES.find((route) => route.operationId === 'execTask');
  if (!plain?.body || !plain.params) throw new BerthError('BERTH_INTERNAL', 'the route table has no plain exec route');
  const responses: Record<number, unknown> = {};
  for (const [status, { schema }] of Object.entries(plain.responses)) if (schema) responses[Number(status)] = schema;
  void app.register(async (scope) => declareExecRoutes(scope, deps, { params: plain.params, body: plain.body, responses }));
}
