import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CancelResult, ClusterTask } from '../../cluster/index.js';
import { BerthError, isBerthError } from '../../common/errors.js';
import { parseDurationMs } from '../../common/units.js';
import { FORWARDED_BY_HEADER, type TaskForwarder, type TaskLocation } from '../cluster-forward.js';
import { waitForPlacement, type PlacementNews, type PlacementWaitResult } from '../placement-wait.js';
import { toIndexTaskView, type TaskView } from './views.js';

/**
 * The API's side of reads through any node (src/agent/cluster-forward.ts): an `onRequest` hook on
 * every task-scoped route (`/v1/tasks/:id` and below). A task this node has a record of is served
 * here as on a single agent; else the cluster index says where: the request is forwarded to the node
 * that runs it (the reply is hijacked and the node's answer streamed back, a WebSocket upgrade
 * spliced), or answered from the index (inspect and wait; other routes say why they cannot be).
 */

/** The forwarder's calls this hook makes (a `TaskForwarder` is one). */
export type ForwardingPort = Pick<TaskForwarder, 'locate' | 'forwardRequest' | 'forwardUpgrade' | 'selfNodeId'>;

/** The queue's calls for a task no node has taken (a `ClusterPlacement` makes them). */
export interface QueuePort {
  /** Cancels the task while it is queued (ClusterStore.cancel). */
  cancelQueued(taskId: string, reason: string): Promise<CancelResult>;
  /** Removes a task that ended without ever being placed from the index (ClusterStore.removeUnplaced). */
  removeUnplaced(taskId: string): Promise<boolean>;
}

export interface ForwardingDeps {
  readonly forwarder: ForwardingPort;
  /** Throws BERTH_TASK_NOT_FOUND when this node has no (visible) record of the task. */
  visibleTask(idOrPrefix: string): unknown;
  /** Whether this node ran the task and removed it: it is gone (404), whatever the index still says. */
  isRemovedHere(taskId: string): boolean;
  /** Registers how to end a forward when the server closes (a shutdown must not wait on a followed log); returns the unregister. */
  track(end: () => void): () => void;
  /** Stop and remove of a task still queued. */
  readonly queue: QueuePort;
  /** News of tasks' placement (ClusterPlacement `onPlaced`): a wait for a task's placement sleeps on it. */
  readonly news: PlacementNews;
  /** Default PLACEMENT_WAIT_MS (placement-wait.ts). */
  readonly placementWaitMs?: number;
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

/** Whether the request waits for the task's placement: the index has it unplaced, and the route is not inspect (which answers it pending), stop (which cancels it) or remove (refused while it is queued, as a pending task's is). */
function awaitsPlacement(location: TaskLocation, request: FastifyRequest): boolean {
  if (location.kind !== 'index' || (location.why !== 'queued' && location.why !== 'not-recorded-here')) return false;
  if (location.why === 'queued' && (isStop(request) || isRemove(request))) return false;
  return !(request.method === 'GET' && request.routeOptions.url === '/v1/tasks/:id');
}

const isStop = (request: FastifyRequest): boolean => request.method === 'POST' && request.routeOptions.url === '/v1/tasks/:id/stop';
const isRemove = (request: FastifyRequest): boolean => request.method === 'DELETE' && request.routeOptions.url === '/v1/tasks/:id';

/**
 * Waits (bounded) for a task's placement while the request is open: on placement news, with a slow
 * poll as the fallback (placement-wait.ts). The agent shutting down ends the wait at once with
 * BERTH_AGENT_UNAVAILABLE; PostgreSQL away fails it with the look's BERTH_CLUSTER_UNAVAILABLE.
 */
async function locateWhenPlaced(deps: ForwardingDeps, request: FastifyRequest, reply: FastifyReply, id: string, forwardedBy: string | undefined): Promise<TaskLocation> {
  const stop = new AbortController();
  let closing = false;
  const untrack = deps.track(() => {
    closing = true;
    stop.abort();
  });
  const gone = (): void => stop.abort();
  reply.raw.once('close', gone);
  try {
    const waited = await waitForPlacement<TaskLocation>({
      taskId: id,
      look: async () => (isRecordedHere(deps, id) ? { kind: 'local' } : deps.forwarder.locate(id, false, forwardedBy)),
      isSettled: (location) => !awaitsPlacement(location, request),
      news: deps.news,
      signal: stop.signal,
      ...(deps.placementWaitMs !== undefined ? { timeoutMs: deps.placementWaitMs } : {}),
    });
    if (waited.outcome === 'aborted') {
      throw closing
        ? new BerthError('BERTH_AGENT_UNAVAILABLE', `the agent is shutting down: it stopped waiting for task ${id} to be placed`, { retryable: true, context: { taskId: id } })
        : new BerthError('BERTH_CANCELLED', `the client went away while task ${id} waited to be placed`, { context: { taskId: id } });
    }
    return waited.found;
  } finally {
    untrack();
    reply.raw.off('close', gone);
  }
}

/** A remove of a task still queued is refused as a pending task's is: stop it first. */
function queuedRemoveRefusal(task: ClusterTask): BerthError {
  return new BerthError('BERTH_TASK_STATE', `task ${task.id} is pending; stop it before removing it`, { context: { taskId: task.id, state: 'pending' } });
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
  if (why === 'never-placed') return new BerthError('BERTH_TASK_STATE', `task ${task.id} was cancelled before any node ran it`, { context: { ...context, state: 'exited' } });
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
    if (location.kind === 'index' && location.why === 'queued' && isStop(request)) {
      // Stop of a task no node has taken: cancelled in the queue, answered as a pending task's stop is.
      const result = await deps.queue.cancelQueued(location.task.id, `stopped through node ${deps.forwarder.selfNodeId}`);
      if (result.cancelled && result.task !== undefined) return reply.send({ task: toIndexTaskView(result.task) });
      // Claimed meanwhile: the stop goes to its node once it is placed there, as any request does.
      location = await deps.forwarder.locate(id, false, forwardedBy);
    }
    if (location.kind === 'index' && location.why === 'queued' && isRemove(request)) throw queuedRemoveRefusal(location.task);
    // A task not placed yet (queued, or claimed here and not recorded yet): a route other than inspect
    // waits, bounded, for it to be placed, as a client right after its submit expects (logs -f, wait,
    // exec), then goes where it runs. Claims take milliseconds; a task no node can take yet is refused.
    if (awaitsPlacement(location, request)) location = await locateWhenPlaced(deps, request, reply, id, forwardedBy);
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
        return answerFromIndex(request, reply, location, deps.queue);
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

async function answerFromIndex(request: FastifyRequest, reply: FastifyReply, location: Extract<TaskLocation, { kind: 'index' }>, queue: QueuePort): Promise<FastifyReply | undefined> {
  const route = request.routeOptions.url;
  if (request.method === 'GET' && route === '/v1/tasks/:id') return reply.send({ task: toIndexTaskView(location.task) });
  if (location.why === 'never-placed') {
    // Cancelled while queued: the index is its only record, answered as a local task stopped before it started.
    if (isStop(request)) return reply.send({ task: toIndexTaskView(location.task) });
    if (isRemove(request)) {
      // Removed by someone else meanwhile: the route's own 404.
      if (!(await queue.removeUnplaced(location.task.id))) return undefined;
      return reply.code(204).send();
    }
    if (request.method === 'GET' && route === '/v1/tasks/:id/logs') return reply.type('application/x-ndjson').header('cache-control', 'no-store').send('');
  }
  if (location.why === 'queued' && isRemove(request)) throw queuedRemoveRefusal(location.task);
  if (request.method === 'GET' && route === '/v1/tasks/:id/wait') {
    // A task the index alone knows does not change here: the wait holds a little (so that a client
    // waiting in a loop does not spin), then answers the task as the index has it.
    const timeoutMs = parseDurationMs(String((request.query as { timeout?: unknown }).timeout ?? '0s')) ?? 0;
    if (!hasEndedInIndex(location.task) && timeoutMs > 0) await delay(Math.min(timeoutMs, 1_000));
    return reply.send({ task: toIndexTaskView(location.task), ended: hasEndedInIndex(location.task) });
  }
  throw indexRefusal(location);
}

/** Whether a task spec publishes ports (their host ports are handed out by the node that runs it). */
export function publishesPorts(spec: unknown): boolean {
  const ports = typeof spec === 'object' && spec !== null ? (spec as { ports?: unknown }).ports : undefined;
  return Array.isArray(ports) && ports.length > 0;
}

/** What the submit of a task that publishes ports needs to answer with its host ports. */
export interface PlacedViewDeps {
  readonly forwarder: Pick<TaskForwarder, 'locate' | 'readTaskView'>;
  /** This node's view of the task when it has its record (it claimed it). */
  localView(taskId: string): TaskView | undefined;
  /** Why this node could not take the task it claimed, if so (ClusterPlacement `claimRefusal`). */
  claimRefusal(taskId: string): BerthError | undefined;
  /** Withdraws the task whose claim this node refused, once the submit answers the refusal (ClusterPlacement `withdrawRefused`). */
  withdrawRefused(taskId: string): Promise<boolean>;
  readonly news: PlacementNews;
  /** Registers how to end the wait when the server closes; returns the unregister. */
  track(end: () => void): () => void;
  /** Default PLACEMENT_WAIT_MS. */
  readonly placementWaitMs?: number;
}

type PlacedLook = { readonly kind: 'view'; readonly view: TaskView } | { readonly kind: 'refused'; readonly error: BerthError } | { readonly kind: 'pending' } | { readonly kind: 'unreadable' };

/**
 * The view a cluster submit answers with for a task that publishes ports: the node that claims it
 * hands out its host ports, so the submit waits (bounded, on placement news) until that node has
 * recorded it and answers with that node's view, ports included, as a local submit answers. A claim
 * this node could not take on (a host port held here) answers its error, as a local submit does; the
 * deadline passing (no node can take the task yet), the client going away or the agent shutting down
 * answers `undefined`: the submit then answers the task pending, as without ports.
 */
export async function placedTaskView(deps: PlacedViewDeps, taskId: string, authorization: string | undefined, signal: AbortSignal): Promise<TaskView | undefined> {
  const stop = new AbortController();
  const untrack = deps.track(() => stop.abort());
  const onAbort = (): void => stop.abort();
  signal.addEventListener('abort', onAbort, { once: true });
  let waited: PlacementWaitResult<PlacedLook>;
  try {
    waited = await waitForPlacement<PlacedLook>({
      taskId,
      look: async () => {
        const local = deps.localView(taskId);
        if (local !== undefined) return { kind: 'view', view: local };
        const refusal = deps.claimRefusal(taskId);
        if (refusal !== undefined) return { kind: 'refused', error: refusal };
        const location = await deps.forwarder.locate(taskId, false, undefined);
        if (location.kind === 'index' && (location.why === 'never-placed' || location.why === 'node-down')) return { kind: 'view', view: toIndexTaskView(location.task) };
        if (location.kind !== 'forward') return { kind: 'pending' };
        // Its node answers once it has recorded it (before that, 409 BERTH_FORWARD_LOOP: its news has not
        // come, a look by the poll met the gap). A node that cannot be read (unreachable, refusing this
        // node's credential) is not waited for: the submit answers pending.
        const answer = await deps.forwarder.readTaskView(location, taskId, authorization === undefined ? {} : { authorization }).catch(() => undefined);
        const view = (answer?.body as { task?: TaskView } | undefined)?.task;
        if (answer?.status === 200 && view !== undefined) return { kind: 'view', view };
        // Ended without a record there (its node could not take it on): the index's view is all there is.
        if (location.task.state === 'exited' || location.task.state === 'lost') return { kind: 'view', view: toIndexTaskView(location.task) };
        return answer?.status === 409 || answer?.status === 404 ? { kind: 'pending' } : { kind: 'unreadable' };
      },
      isSettled: (look) => look.kind !== 'pending',
      news: deps.news,
      signal: stop.signal,
      ...(deps.placementWaitMs !== undefined ? { timeoutMs: deps.placementWaitMs } : {}),
    });
  } catch {
    // PostgreSQL away: the task is queued all the same, and the submit answers it pending.
    return undefined;
  } finally {
    untrack();
    signal.removeEventListener('abort', onAbort);
  }
  if (waited.found.kind === 'refused') {
    // Refused as a local submit refuses it: nothing of it is left in the cluster either (best effort: else it reads failed there).
    await deps.withdrawRefused(taskId).catch(() => false);
    throw waited.found.error;
  }
  return waited.found.kind === 'view' ? waited.found.view : undefined;
}
