import { setTimeout as delay } from 'node:timers/promises';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { RawData, WebSocket } from 'ws';
import { asBerthError, BerthError, codeOf, ValidationError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { AttachedStreams, Engine } from '../../engine/engine.js';
import { hasEnded, type TaskRecord } from '../../state/tasks.js';
import type { TaskSupervisor } from '../supervisor.js';
import { decodeData, encodeData, parseClientControl, type AgentControl, type StreamName } from '../stream-frames.js';
import { typedQuery } from './query.js';
import type { ApiRoute } from './schemas.js';

/**
 * `GET /v1/tasks/:id/attach`: a WebSocket onto a running task's live output and, for a task whose
 * spec has `openStdin`, its stdin, as `docker attach`. Each client gets its own attach connection
 * to the engine, so several clients attach at once, each with or without the earlier output, and
 * one that leaves (closes its socket) takes nothing from the others; the task goes on. The agent's
 * own reading of the task's output (the engine's log, for its log files) is another reader of the
 * engine and is not touched.
 *
 * The engine must never wait on an attach client: it writes a task's output to every attached
 * reader in turn, so a reader that stops reading would in time stop the task's output, its log
 * included. The agent therefore always reads the engine at once and disconnects a client whose
 * unsent output passes `MAX_BUFFERED_BYTES`, as it does with a slow event stream client.
 */

/** What the attach route uses of the agent: a narrow port. */
export interface AttachRuntime {
  readonly engine: Pick<Engine, 'attachContainer'>;
  readonly supervisor: Pick<TaskSupervisor, 'wait'>;
  readonly logger: Logger;
  /** The task a route's id (or id prefix) names; removed tasks are not found. */
  visibleTask(idOrPrefix: string): TaskRecord;
}

/** Output queued for one client beyond this, and the client is disconnected (it reads too slowly). */
export const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;

/** How long one wait for the task's end lasts before it is asked again (a client that goes away ends it earlier). */
const END_WAIT_MS = 60_000;

/** The exit code an exit message carries when the task has none of its own (it was lost): 125, as docker's for its own failures. */
export const NO_EXIT_CODE = 125;

/** WebSocket close codes (RFC 6455). */
const CLOSE = { normal: 1000, goingAway: 1001, policy: 1008, internal: 1011 } as const;

/**
 * Refuses, before the upgrade, a task that has no live process to attach to: BERTH_TASK_STATE
 * (409) saying what to do instead.
 */
export function requireAttachable(record: TaskRecord): void {
  const refuse = (why: string): never => {
    throw new BerthError('BERTH_TASK_STATE', `cannot attach to task ${record.id}: ${why}`, { context: { taskId: record.id, state: record.state, operation: 'attach' } });
  };
  if (hasEnded(record.state)) refuse(`it has ended (${record.state}${record.endState ? `, ${record.endState.kind}` : ''}); read what it printed with \`berth logs ${record.id}\` (GET /v1/tasks/${record.id}/logs)`);
  if (record.state === 'pending' || record.state === 'starting' || record.containerId === undefined) refuse(`it is ${record.state} and has no process to attach to yet; attach once it is running`);
  if (record.pausedAtMs !== undefined) refuse('it is paused; unpause it first');
}

/** Whether the task's spec keeps its stdin open for attach clients. */
function hasOpenStdin(record: TaskRecord): boolean {
  return (record.spec as { openStdin?: unknown }).openStdin === true;
}

/**
 * Registers the attach route. Declared inside a plugin registered after @fastify/websocket (whose
 * route hook makes the upgrade), under the server's token hook and error handler, so that a wrong
 * token is 401 and a task that is not running 409 before any upgrade.
 */
export function attachRoutes(runtime: AttachRuntime, route: ApiRoute): (app: FastifyInstance) => Promise<void> {
  return async (app) => {
    /** Every open attach, so that closing the server ends them (1001) rather than waiting on them. */
    const sessions = new Set<(code: number, reason: string) => void>();
    app.addHook('preClose', async () => {
      for (const end of [...sessions]) end(CLOSE.goingAway, 'the agent is shutting down');
    });
    const querySchema = route.querystring;
    app.route({
      method: 'GET',
      url: route.url,
      schema: { ...(route.params ? { params: route.params } : {}), ...(querySchema ? { querystring: querySchema } : {}) },
      config: { isPublic: false },
      ...(querySchema
        ? {
            preValidation: async (request: FastifyRequest) => {
              request.query = typedQuery(querySchema, request.query);
            },
          }
        : {}),
      // Before the upgrade: a client is told of a missing task or a wrong state in plain HTTP.
      preHandler: async (request: FastifyRequest) => {
        requireAttachable(runtime.visibleTask((request.params as { id: string }).id));
      },
      // A plain GET (no upgrade) on this route.
      handler: async () => {
        throw new ValidationError([{ field: 'upgrade', rule: 'this route speaks WebSocket only: send the request with "Connection: Upgrade" and "Upgrade: websocket"' }]);
      },
      wsHandler: (socket: WebSocket, request: FastifyRequest) => {
        const { id } = request.params as { id: string };
        const { logs } = request.query as { logs?: boolean };
        void runAttach(socket, runtime, id, logs ?? false, sessions);
      },
    });
  };
}

/**
 * The websocket plugin's preClose (its `preClose` option): every WebSocket is closed with 1001 and
 * a reason a client can show, rather than the plugin's default close without a code (1005).
 */
export function closeWebSocketsGoingAway(this: FastifyInstance, done: () => void): void {
  for (const client of this.websocketServer.clients) client.close(CLOSE.goingAway, 'the agent is shutting down');
  this.websocketServer.close();
  done();
}

/** Sends a control message (a text message of one JSON object). */
function sendControl(socket: WebSocket, message: AgentControl): void {
  if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(message));
}

/** Sends an error as the last message, then closes with `code`. */
function closeWithError(socket: WebSocket, code: number, error: unknown): void {
  const failure = asBerthError(error, 'attach');
  sendControl(socket, { type: 'error', error: { code: failure.code, message: failure.message } });
  if (socket.readyState === socket.OPEN) socket.close(code, failure.code);
}

/** One client's attach, from the upgrade to the exit message (or the client leaving). */
async function runAttach(socket: WebSocket, runtime: AttachRuntime, idOrPrefix: string, logs: boolean, sessions: Set<(code: number, reason: string) => void>): Promise<void> {
  const abort = new AbortController();
  let attached: AttachedStreams | undefined;
  const end = (code: number, reason: string): void => {
    if (abort.signal.aborted) return;
    abort.abort();
    attached?.close();
    sessions.delete(end);
    if (socket.readyState === socket.OPEN || socket.readyState === socket.CONNECTING) socket.close(code, reason);
  };
  sessions.add(end);
  // Detaching (the client closes, or its connection breaks) ends this attach only; the task goes on.
  socket.once('close', () => end(CLOSE.normal, 'detached'));
  socket.on('error', () => end(CLOSE.internal, 'socket error'));

  // Input is listened to from the first moment: a client may write as soon as it is upgraded, before
  // the engine's attach is made; what it writes meanwhile waits in `pending`.
  let taskId = idOrPrefix;
  let isStdinClosed = false;
  let pending: Buffer[] | undefined = [];
  const refuseStdin = (): void => {
    closeWithError(
      socket,
      CLOSE.policy,
      new ValidationError([{ field: 'stdin', rule: `task ${taskId} does not keep its stdin open (its spec has no "openStdin": true), so nothing can be written to it; attach without stdin (berth attach --no-stdin)` }]),
    );
    end(CLOSE.policy, 'stdin is not open');
  };
  const writeStdin = (data: Buffer): void => {
    const stdin = attached?.stdin;
    if (!stdin) return refuseStdin();
    // A task that reads slowly slows this client's input, not the agent's memory.
    if (!stdin.write(data)) {
      socket.pause();
      stdin.once('drain', () => socket.resume());
    }
  };
  socket.on('message', (data: RawData, isBinary: boolean) => {
    if (abort.signal.aborted) return;
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    if (!isBinary) {
      try {
        const control = parseClientControl(bytes.toString('utf8'));
        // A client's end of input is its own: the task's stdin stays open for the others (and for later attaches).
        if (control.type === 'close-stdin') isStdinClosed = true;
        // resize: the agent's tasks have no TTY, so there is nothing to resize.
      } catch (error) {
        closeWithError(socket, CLOSE.policy, error);
        end(CLOSE.policy, 'bad control message');
      }
      return;
    }
    const frame = decodeData(bytes);
    if (frame?.stream !== 'stdin' || isStdinClosed) return;
    if (pending) pending.push(frame.data);
    else writeStdin(frame.data);
  });

  let record: TaskRecord;
  try {
    // Read again after the upgrade: the task may have moved on while the client was being upgraded.
    record = runtime.visibleTask(idOrPrefix);
    taskId = record.id;
    requireAttachable(record);
    attached = await runtime.engine.attachContainer(record.containerId!, { stdin: hasOpenStdin(record), logs, signal: abort.signal });
  } catch (error) {
    if (!abort.signal.aborted) {
      runtime.logger.info({ task: idOrPrefix, code: codeOf(error) }, 'an attach could not be made');
      closeWithError(socket, CLOSE.internal, error);
      end(CLOSE.internal, 'attach failed');
    }
    return;
  }
  if (abort.signal.aborted) {
    attached.close();
    return;
  }
  const streams = attached;

  // Output: read from the engine at once, whatever the client's pace (see the module's comment).
  const forward = (name: StreamName) => (chunk: Buffer): void => {
    if (abort.signal.aborted || socket.readyState !== socket.OPEN) return;
    if (socket.bufferedAmount > MAX_BUFFERED_BYTES) {
      runtime.logger.warn({ taskId, bufferedBytes: socket.bufferedAmount }, 'an attach client reads too slowly; disconnecting it');
      end(CLOSE.policy, 'the client reads too slowly');
      return;
    }
    socket.send(encodeData(name, chunk));
  };
  const outputEnded = Promise.all(
    (['stdout', 'stderr'] as const).map(
      (name) =>
        new Promise<void>((resolve) => {
          const stream = streams[name];
          stream.on('data', forward(name));
          stream.once('end', resolve);
          stream.once('close', resolve);
          stream.once('error', () => resolve());
        }),
    ),
  );
  // What the client wrote before the engine's attach was made, in order, then the rest as it comes.
  const early = pending;
  pending = undefined;
  for (const data of early) {
    if (abort.signal.aborted) break;
    writeStdin(data);
  }

  // The end: the engine closes the attach when the task's process ends; the exit message waits for
  // the end the agent records (exit code and end state), which follows it.
  await outputEnded;
  while (!abort.signal.aborted) {
    const now = await runtime.supervisor.wait(taskId, END_WAIT_MS, abort.signal).catch((error: unknown) => {
      closeWithError(socket, CLOSE.internal, error);
      end(CLOSE.internal, 'wait failed');
      return undefined;
    });
    if (now === undefined || abort.signal.aborted) return;
    if (hasEnded(now.state)) {
      sendControl(socket, { type: 'exit', exitCode: now.exitCode ?? NO_EXIT_CODE, ...(now.endState ? { endState: now.endState } : {}) });
      end(CLOSE.normal, 'the task ended');
      return;
    }
    // Not ended yet (the wait's time passed): wait again, after a pause that keeps a wait that
    // answers at once (the agent shutting down) from spinning.
    await delay(1000, undefined, { signal: abort.signal }).catch(() => undefined);
  }
}
