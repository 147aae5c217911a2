import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ClusterTask } from '../../cluster/index.js';
import { BerthError, isBerthError } from '../../common/errors.js';
import { parseDurationMs } from '../../common/units.js';
import { FORWARDED_BY_HEADER, type TaskForwarder, type TaskLocation } from '../cluster-forward.js';
import { toIndexTaskView } from './views.js';

/**
 * The API's side of reads through any node (src/agent/cluster-forward.ts): an `onRequest` hook on
 * every task-scoped route (`/v1/tasks/:id` and below). A task this node has a record of is served
 * here as on a single agent; else the cluster index says where: the request is forwarded to the node
 * that runs it (the reply is hijacked and the node's answer streamed back, a WebSocket upgrade
 * spliced), or answered from the index (inspect and wait; other routes say why they cannot be).
 */

/** The forwarder's calls this hook makes (a `TaskForwarder` is one). */
export type ForwardingPort = Pick<TaskForwarder, 'locate' | 'forwardRequest' | 'forwardUpgrade'>;

export interface ForwardingDeps {
  readonly forwarder: ForwardingPort;
  /** Throws BERTH_TASK_NOT_FOUND when this node has no (visible) record of the task. */
  visibleTask(idOrPrefix: string): unknown;
  /** Whether this node ran the task and removed it: it is gone (404), whatever the index still says. */
  isRemovedHere(taskId: string): boolean;
  /** Registers how to end a forward when the server closes (a shutdown must not wait on a followed log); returns the unregister. */
  track(end: () => void): () => void;
}

/** Whether a route's URL is task-scoped: `/v1/tasks/:id` and below. */
export function isTaskScopedRoute(url: string | undefined): boolean {
  return url !== undefined && (url === '/v1/tasks/:id' || url.startsWith('/v1/tasks/:id/'));
}

/** The one value of a header that may have been sent more than once (the first). */
function headerValue(value: string | string[] | undefined): string | undefined {
  const first = Array.isArray(value) ? value[0] : value;
  return first === undefined || first.trim() === '' ? undefined : first.trim();
}

/** The bytes that came after the upgrade request's head (@fastify/websocket keeps them on the request). */
function upgradeHead(raw: IncomingMessage): Buffer {
  const key = Object.getOwnPropertySymbols(raw).find((symbol) => symbol.description === 'ws-head');
  const head: unknown = key === undefined ? undefined : Reflect.get(raw, key);
  return Buffer.isBuffer(head) ? head : Buffer.alloc(0);
}

/** How long a request for a task not placed yet waits for its placement, and how often it looks. */
export const PLACEMENT_WAIT_MS = 10_000;
const PLACEMENT_POLL_MS = 50;

/** Whether the request waits for the task's placement: the index has it unplaced, and the route is not inspect (which answers it pending). */
function awaitsPlacement(location: TaskLocation, request: FastifyRequest): boolean {
  if (location.kind !== 'index' || location.why === 'node-down') return false;
  return !(request.method === 'GET' && request.routeOptions.url === '/v1/tasks/:id');
}

function isRecordedHere(deps: Pick<ForwardingDeps, 'visibleTask'>, id: string): boolean {
  try {
    deps.visibleTask(id);
    return true;
  } catch {
    return false;
  }
}

/** Whether a task of the index has ended (the wait's `ended`). */
const hasEndedInIndex = (task: ClusterTask): boolean => task.state === 'exited' || task.state === 'lost';

/** Why a route other than inspect and wait cannot be answered from the index. */
export function indexRefusal(location: Extract<TaskLocation, { kind: 'index' }>): BerthError {
  const { task, why } = location;
  const context = { taskId: task.id, state: task.state, ...(task.nodeId !== undefined ? { nodeId: task.nodeId } : {}) };
  if (why === 'queued') return new BerthError('BERTH_TASK_STATE', `task ${task.id} is queued in the cluster: no node runs it yet`, { context });
  if (why === 'not-recorded-here') return new BerthError('BERTH_TASK_STATE', `task ${task.id} is ${task.state} on this node (${task.nodeId}) but not recorded here yet; try again`, { retryable: true, context });
  return new BerthError('BERTH_NODE_UNREACHABLE', `task ${task.id} is held by node ${task.nodeId}, which is down: only its state in the cluster index is known (GET /v1/tasks/${task.id})`, { context });
}

/** The `onRequest` hook. */
export function forwardingHook(deps: ForwardingDeps): (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply | undefined> {
  return async (request, reply) => {
    if (!isTaskScopedRoute(request.routeOptions.url)) return undefined;
    const id = (request.params as { id?: string }).id;
    if (id === undefined) return undefined;
    try {
      deps.visibleTask(id);
      return undefined;
    } catch (error) {
      // Ambiguous prefixes and the like are the route's to answer.
      if (!isBerthError(error, 'BERTH_TASK_NOT_FOUND')) return undefined;
    }
    // Removed here (by its owner's rm): the route answers 404, as on a single agent.
    if (deps.isRemovedHere(id)) return undefined;
    const forwardedBy = headerValue(request.headers[FORWARDED_BY_HEADER]);
    let location = await deps.forwarder.locate(id, false, forwardedBy);
    // A task not placed yet (queued, or claimed here and not recorded yet): a route other than inspect
    // waits, bounded, for it to be placed, as a client right after its submit expects (logs -f, wait,
    // exec), then goes where it runs. Claims take milliseconds; a task no node can take yet is refused.
    for (const deadline = Date.now() + PLACEMENT_WAIT_MS; awaitsPlacement(location, request) && Date.now() < deadline && !request.raw.destroyed; ) {
      await delay(PLACEMENT_POLL_MS);
      if (isRecordedHere(deps, id)) return undefined;
      location = await deps.forwarder.locate(id, false, forwardedBy);
    }
    switch (location.kind) {
      case 'local':
      case 'unknown':
        return undefined;
      case 'loop':
        throw new BerthError('BERTH_FORWARD_LOOP', `node ${location.forwardedBy} forwarded a request for task ${id} here, but this node does not hold it (the cluster index moved on); a forwarded request is never forwarded again`, {
          context: { taskId: id, forwardedBy: location.forwardedBy },
        });
      case 'forward': {
        void reply.hijack();
        const raw = request.raw;
        if (String(raw.headers.upgrade ?? '').toLowerCase() === 'websocket') {
          const untrack = deps.track(() => raw.socket.destroy());
          raw.socket.once('close', untrack);
          deps.forwarder.forwardUpgrade(raw, raw.socket, upgradeHead(raw), location);
        } else {
          const untrack = deps.track(() => reply.raw.destroy());
          reply.raw.once('close', untrack);
          deps.forwarder.forwardRequest(raw, reply.raw, location, indexFallback(request, location.task));
        }
        return reply;
      }
      case 'index':
        return answerFromIndex(request, reply, location);
    }
  };
}

/**
 * For inspect: the cluster index's answer when the node that holds the task does not answer (it died
 * and its lease has not run out yet), written to the hijacked response. (A wait answers 503, which
 * is retryable, rather than spin a waiting client on an answer that cannot change.)
 */
function indexFallback(request: FastifyRequest, task: ClusterTask): ((response: ServerResponse) => boolean) | undefined {
  if (request.method !== 'GET' || request.routeOptions.url !== '/v1/tasks/:id') return undefined;
  return (response) => {
    const body = JSON.stringify({ task: toIndexTaskView(task) });
    response.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
    response.end(body);
    return true;
  };
}

async function answerFromIndex(request: FastifyRequest, reply: FastifyReply, location: Extract<TaskLocation, { kind: 'index' }>): Promise<FastifyReply> {
  const route = request.routeOptions.url;
  if (request.method === 'GET' && route === '/v1/tasks/:id') return reply.send({ task: toIndexTaskView(location.task) });
  if (request.method === 'GET' && route === '/v1/tasks/:id/wait') {
    // A task the index alone knows does not change here: the wait holds a little (so that a client
    // waiting in a loop does not spin), then answers the task as the index has it.
    const timeoutMs = parseDurationMs(String((request.query as { timeout?: unknown }).timeout ?? '0s')) ?? 0;
    if (!hasEndedInIndex(location.task) && timeoutMs > 0) await delay(Math.min(timeoutMs, 1_000));
    return reply.send({ task: toIndexTaskView(location.task), ended: hasEndedInIndex(location.task) });
  }
  throw indexRefusal(location);
}
