import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Readable } from 'node:stream';
import fastifyWebsocket from '@fastify/websocket';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifySchema, type FastifyServerFactory } from 'fastify';
import { BerthError, isBerthError, ValidationError } from '../../common/errors.js';
import type { ImageCoordinatorSnapshot } from '../../images/index.js';
import { hasEnded, TASK_STATES, type TaskRecord, type TaskRepository, type TaskState } from '../../state/tasks.js';
import { parseDurationMs } from '../../common/units.js';
import type { EndKind } from '../../tasks/end-state.js';
import type { SubmitResult, TaskSupervisor } from '../supervisor.js';
import type { AgentRuntime } from '../agent.js';
import type { DiskSpace } from '../disk-space.js';
import type { AgentEvents } from '../events.js';
import type { AgentGarbage } from '../garbage.js';
import type { TaskLogStore } from '../task-logs.js';
import { answerClientError, requestError, toErrorResponse, type ErrorBody, type ErrorResponse } from './errors.js';
import { typedQuery } from './query.js';
import { API_ROUTES, MAX_PARAM_LENGTH, type ApiRoute } from './schemas.js';
import { agentEventStream, eventResume, ndjsonStream } from './streams.js';
import { toGroupView, toImageView, toNodeListView, toPruneView, toTaskView, toUtcLogTimestamp, type HealthView, type GroupView, type TaskView } from './views.js';
import type { LogRecord } from '../task-logs.js';
import { lastRecords, msUntil, selectRecords } from '../log-window.js';
import { AgentMetrics, type MetricsSources } from '../metrics.js';
import { buildOpenApiDocument } from './openapi.js';
import type { GroupCoordinator } from '../groups.js';
import type { GroupState } from '../../state/groups.js';
import type { Engine } from '../../engine/engine.js';
import { runningContainerOf, taskStatsRecords } from '../task-stats.js';
import { registerExecRoutes, type ExecEngine } from './exec-route.js';
import { registerFilesRoutes } from './files-route.js';
import type { UploadStore } from '../uploads.js';
import { attachRoutes, closeWebSocketsGoingAway } from './attach-route.js';
import { artifactHandlers } from './artifacts-route.js';
import type { ArtifactStore } from '../artifacts.js';
import type { ClusterMember, NodeListing } from '../cluster-member.js';
import type { TaskForwarder } from '../cluster-forward.js';
import type { ClusterPlacement } from '../cluster-placement.js';
import { forwardingHook, placedTaskView, publishesPorts, type ForwardingPort } from './forward-route.js';
import { mergeClusterTasks } from './task-list.js';
import { clusterEventResume, clusterEventStream } from './cluster-events.js';

/**
 * What the HTTP layer uses of the agent runtime: a narrow port (an `AgentRuntime` is one), so that
 * the server can be tested against a scripted runtime.
 */
export interface ServerRuntime extends Pick<AgentRuntime, 'token' | 'logger' | 'started' | 'onError' | 'engineHealth'> {
  /** The engine: the stats of a task's container (`GET /v1/tasks/:id/stats`), exec in it, and attach to it. */
  readonly engine: Pick<Engine, 'streamStats' | 'attachContainer' | 'getArchive'> & ExecEngine & Partial<Pick<Engine, 'putArchive'>>;
  /** Uploaded archives for specs' `files: [{ upload }]` (`POST /v1/uploads`); without it, uploads are refused. */
  readonly uploads?: Pick<UploadStore, 'receive'>;
  /** Tasks' kept artifacts (`GET /v1/tasks/:id/artifacts`). */
  readonly artifacts: Pick<ArtifactStore, 'open'>;
  readonly store: { readonly tasks: Pick<TaskRepository, 'get' | 'list' | 'counts' | 'resolve'> & Partial<Pick<TaskRepository, 'countUnhealthy'>>; sizeBytes?(): number };
  readonly supervisor: Pick<TaskSupervisor, 'submit' | 'stop' | 'remove' | 'isEnded' | 'tasksWaitingForEngine' | 'pause' | 'unpause' | 'kill' | 'wait'>;
  readonly logs: Pick<TaskLogStore, 'read' | 'follow'> & { readonly space: Pick<DiskSpace, 'condition' | 'check'> };
  readonly garbage: Pick<AgentGarbage, 'prune'>;
  readonly events: MetricsSources['events'] & Pick<AgentEvents, 'replayStart' | 'replayPage'>;
  readonly images: MetricsSources['images'];
  imageSnapshot(): Pick<ImageCoordinatorSnapshot, 'images'>;
  /** Task groups (`/v1/groups`); without them, the group routes answer 503. */
  readonly groups?: Pick<GroupCoordinator, 'submit' | 'list' | 'get' | 'stop' | 'remove'>;
  /** The agent's id: the owner part of its groups' network and volume names (the group view). */
  readonly agentId?: string;
  /** The driver's warm pools, for their metrics; without them, no pool metric is shown. */
  readonly driver?: { readonly pools: NonNullable<MetricsSources['pools']> };
  /** Cluster membership, for its metrics, and the cluster's task index (`GET /v1/tasks` lists it in cluster mode). */
  readonly cluster?: MetricsSources['cluster'] & Partial<Pick<ClusterMember, 'listTasks' | 'readEvents'>>;
  /** Cluster mode: forwards requests for tasks other nodes run; its token is accepted as the agent's own. */
  readonly forwarder?: ForwardingPort & Pick<TaskForwarder, 'selfNodeId' | 'token' | 'openForwards' | 'onForward' | 'readTaskView'>;
  /** Cluster mode: `POST /v1/tasks` queues the task in the cluster (agent/cluster-placement.ts). */
  readonly placement?: { submit(input: { id: string; spec: unknown }): Promise<SubmitResult> } & Pick<ClusterPlacement, 'onPlaced' | 'cancelQueued' | 'removeUnplaced' | 'claimRefusal' | 'withdrawRefused'> & NonNullable<MetricsSources['placement']>;
  /** `GET /v1/nodes`; without it, the route answers 503. */
  listNodes?(): Promise<NodeListing>;
}

/** The longest a wait (`GET /v1/tasks/:id/wait`) holds its request before answering `ended: false`. */
const WAIT_TIMEOUT_MAX_MS = 10 * 60_000;

export interface ServerOptions {
  /** How often the event stream sends a keep-alive comment. Default 15 s. */
  heartbeatMs?: number;
  /** Largest request body accepted. Default 1 MiB. */
  bodyLimitBytes?: number;
  /** Whether `/metrics` includes Node's process metrics (memory, CPU, event loop). Default true. */
  processMetrics?: boolean;
  /** The version the OpenAPI document states. Default berth's own (package.json). */
  version?: string;
  /** Creates the HTTP server fastify listens with; `serveAgent` uses it to serve one API on a second address. */
  serverFactory?: FastifyServerFactory;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Served without the bearer token (health). */
    isPublic?: boolean;
  }
}

/** The states a list shows when none is asked for: every state but `removed` (a removed task is gone, as far as the API is concerned). */
const LISTED_BY_DEFAULT: readonly TaskState[] = Object.freeze(TASK_STATES.filter((state) => state !== 'removed'));

/** Compares in constant time; hashing first makes the lengths equal, so the length leaks nothing either. */
function tokenMatches(header: string | undefined, token: string): boolean {
  if (header === undefined || !header.startsWith('Bearer ')) return false;
  const digest = (text: string): Buffer => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(header.slice('Bearer '.length).trim()), digest(token));
}

const UNAUTHORIZED: ErrorBody = {
  error: { code: 'BERTH_UNAUTHORIZED', message: 'the request needs "Authorization: Bearer <token>" with the agent\'s token (in <dataDir>/token)' },
};

/** A submitted spec's issues name fields inside the spec; in the request body they are under `spec`. */
function scopeToSpec(error: unknown): unknown {
  if (!(error instanceof ValidationError)) return error;
  return new ValidationError(
    error.issues.map((issue) => ({ field: issue.field === 'spec' ? 'spec' : `spec.${issue.field}`, rule: issue.rule })),
    { cause: error },
  );
}

type Handler = (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>;

/**
 * The agent's HTTP API on fastify: the routes of `API_ROUTES`, each with the JSON schemas fastify
 * validates and serializes with, a bearer token on every route but health, and errors mapped to
 * statuses in one error handler (`toErrorResponse`). The caller listens (see `serveAgent`).
 */
export function buildServer(runtime: ServerRuntime, options: ServerOptions = {}): FastifyInstance {
  const bodyLimitBytes = options.bodyLimitBytes ?? 1024 * 1024;
  const app = Fastify({
    logger: false,
    bodyLimit: bodyLimitBytes,
    // An unknown field is refused and named, not silently dropped; a value of the wrong type is
    // refused and named, never converted (`"id": 5` is not the id "5"). Query strings, which are
    // text, are typed before validation by `typedQuery`, from text that is exactly a number or boolean.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false } },
    // Every id the API accepts must reach its routes (fastify's default, 100, is shorter than an id may be).
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // What the router refuses before any route runs is answered in berth's shape too.
    frameworkErrors: (error, request, reply) => {
      const response = frameworkErrorResponse(error);
      metrics.countError(response.body.error.code);
      void (reply as FastifyReply).code(response.status).send(response.body);
    },
    // Node's parser errors (431, 408, malformed requests) as well; serveAgent sets it on its TCP server too.
    clientErrorHandler: answerClientError,
    ...(options.serverFactory ? { serverFactory: options.serverFactory } : {}),
  });
  // The API takes JSON only: a text body is refused (415), not validated as a string.
  app.removeContentTypeParser('text/plain');
  const metrics = new AgentMetrics({
    taskCounts: () => runtime.store.tasks.counts(),
    task: (taskId) => runtime.store.tasks.get(taskId),
    events: runtime.events,
    images: runtime.images,
    supervisorErrors: (listener) => runtime.onError(listener),
    diskCondition: () => runtime.logs.space.condition,
    ...(runtime.store.sizeBytes ? { stateDatabaseBytes: () => runtime.store.sizeBytes!() } : {}),
    ...(runtime.store.tasks.countUnhealthy ? { unhealthyTasks: () => runtime.store.tasks.countUnhealthy!() } : {}),
    processMetrics: options.processMetrics ?? true,
    ...(runtime.driver ? { pools: runtime.driver.pools } : {}),
    ...(runtime.cluster ? { cluster: runtime.cluster } : {}),
    ...(runtime.forwarder ? { forwarding: runtime.forwarder } : {}),
    ...(runtime.placement ? { placement: runtime.placement } : {}),
  });
  const openApiDocument = buildOpenApiDocument({ version: options.version });
  /** Ends every open stream, so that closing the server does not wait on followers. */
  const openStreams = new Set<() => void>();

  app.addHook('onRequest', async (request, reply) => {
    if (request.routeOptions.config.isPublic) return;
    // The cluster's token (cluster.token) is accepted as the agent's own: other nodes forward with it.
    const clusterToken = runtime.forwarder?.token;
    if (!tokenMatches(request.headers.authorization, runtime.token) && (clusterToken === undefined || !tokenMatches(request.headers.authorization, clusterToken))) {
      await reply.code(401).header('www-authenticate', 'Bearer').send(UNAUTHORIZED);
      return reply;
    }
  });
  // Cluster mode: a task this node has no record of is served by the node that runs it (after the token check).
  if (runtime.forwarder) {
    const hook = forwardingHook({
      forwarder: runtime.forwarder,
      visibleTask: (id) => visibleTask(id),
      isRemovedHere: (id) => runtime.store.tasks.get(id)?.state === 'removed',
      // Closing the server ends the forwards under way, as it ends this node's own streams.
      track: (end) => {
        openStreams.add(end);
        return () => openStreams.delete(end);
      },
      queue: {
        cancelQueued: async (taskId, reason) => requirePlacement().cancelQueued(taskId, reason),
        removeUnplaced: async (taskId) => requirePlacement().removeUnplaced(taskId),
      },
      news: (listener) => runtime.placement?.onPlaced(listener) ?? (() => undefined),
    });
    app.addHook('onRequest', hook);
  }
  /** Cluster mode's placement (the queue); present whenever the forwarder is. */
  function requirePlacement(): NonNullable<ServerRuntime['placement']> {
    if (!runtime.placement) throw new BerthError('BERTH_AGENT_UNAVAILABLE', 'this agent does not place tasks in a cluster');
    return runtime.placement;
  }
  app.addHook('onResponse', async (request, reply) => {
    runtime.logger.debug({ method: request.method, url: request.url, status: reply.statusCode, durationMs: Math.round(reply.elapsedTime) }, 'request');
  });
  app.addHook('preClose', async () => {
    for (const end of [...openStreams]) end();
  });
  app.addHook('onClose', async () => metrics.close());

  app.setErrorHandler(async (error, request, reply) => {
    const { status, body } = toErrorResponse(error);
    metrics.countError(body.error.code);
    if (status >= 500) {
      runtime.logger.error({ code: body.error.code, method: request.method, url: request.url, error: body.error.message }, 'request failed');
    }
    return reply.code(status).send(body);
  });
  app.setNotFoundHandler(async (request, reply) => {
    const urlPath = request.url.split('?')[0] ?? '';
    const allowed = allowedMethods(urlPath);
    if (allowed.length > 0) {
      const { status, body } = requestError(405, { field: 'method', rule: `${request.method} is not allowed on ${urlPath}; it takes ${allowed.join(', ')}` });
      return reply.code(status).header('allow', allowed.join(', ')).send(body);
    }
    const { status, body } = requestError(404, { field: 'url', rule: `${request.method} ${urlPath} names no route of the API` });
    return reply.code(status).send(body);
  });

  /**
   * The task a route's id names: the task of exactly that id, else the one whose id starts with it
   * (409 BERTH_TASK_AMBIGUOUS when several do). A removed one is gone, as far as the API is concerned.
   */
  const visibleTask = (idOrPrefix: string): TaskRecord => runtime.store.tasks.resolve(idOrPrefix, { exceptStates: ['removed'] });
  /** A task record as the API shows it; in cluster mode with this node's id as its `node`. */
  const taskView = (record: TaskRecord): TaskView => (runtime.forwarder ? { ...toTaskView(record), node: runtime.forwarder.selfNodeId } : toTaskView(record));

  /** Streams a body until it ends, the client goes away, or the server closes. */
  const sendStream = (reply: FastifyReply, stream: Readable, end: () => void): FastifyReply => {
    openStreams.add(end);
    reply.raw.once('close', () => {
      openStreams.delete(end);
      end();
    });
    return reply.send(stream);
  };

  /** A task's output as `GET /v1/tasks/:id/logs` serves it (the group task route too). */
  const serveTaskLogs = async (id: string, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
      const query = request.query as { follow: boolean; since?: string; until?: string; tail?: number; stream?: LogRecord['stream'] };
      let since = query.since === undefined ? undefined : toUtcLogTimestamp(query.since);
      const until = query.until === undefined ? undefined : toUtcLogTimestamp(query.until, 'until');
      const window = { until, stream: query.stream };
      // Aborts a follow waiting on new output when the client goes away or the server closes.
      const abort = new AbortController();
      // A follow ends at `until` (docker's): one whose `until` has passed is a plain read.
      const untilMs = until === undefined ? undefined : msUntil(until, Date.now());
      const follow = query.follow && (untilMs === undefined || untilMs > 0);
      // `tail`: the last N of the stored output, then (with follow) what comes after the latest stored line.
      let head: LogRecord[] = [];
      if (query.tail !== undefined) {
        const last = await lastRecords(runtime.logs.read(id, { since }), query.tail, window);
        head = last.records;
        if (last.latest !== undefined) since = last.latest;
      }
      const rest =
        query.tail !== undefined && !follow
          ? undefined
          : follow
            ? runtime.logs.follow(id, { since, signal: abort.signal, isEnded: () => runtime.supervisor.isEnded(id) })
            : runtime.logs.read(id, { since });
      const records = (async function* (): AsyncGenerator<LogRecord> {
        yield* head;
        if (rest) yield* selectRecords(rest, window);
      })();
      const timer = follow && untilMs !== undefined ? setTimeout(() => abort.abort(), untilMs) : undefined;
      timer?.unref();
      reply.type('application/x-ndjson').header('cache-control', 'no-store');
      return sendStream(reply, ndjsonStream(records), () => {
        if (timer) clearTimeout(timer);
        abort.abort();
      });
      };

  const requireGroups = (): NonNullable<ServerRuntime['groups']> => {
    if (!runtime.groups) throw new BerthError('BERTH_AGENT_UNAVAILABLE', 'this agent does not run task groups');
    return runtime.groups;
  };
  const groupView = (groupId: string): GroupView => {
    const { group, tasks } = requireGroups().get(groupId);
    return toGroupView(group, tasks, runtime.agentId ?? '');
  };

  const handlers: Record<string, Handler> = {
    async submitTask(request, reply) {
      const body = request.body as { id?: string; spec: Record<string, unknown> };
      let result: SubmitResult;
      try {
        const input = { id: body.id ?? randomUUID(), spec: body.spec };
        // Cluster mode: checked as a local submit is, then queued for whichever node claims it.
        result = runtime.placement ? await runtime.placement.submit(input) : runtime.supervisor.submit(input);
      } catch (error) {
        throw scopeToSpec(error);
      }
      // Cluster mode: a task that publishes ports gets them from the node that claims it; the answer waits for them, as a local submit's has them.
      if (runtime.placement && runtime.forwarder && publishesPorts(result.task.spec)) {
        const placement = runtime.placement;
        const gone = new AbortController();
        reply.raw.once('close', () => gone.abort());
        const placed = await placedTaskView(
          {
            forwarder: runtime.forwarder,
            localView: (taskId) => {
              const record = runtime.store.tasks.get(taskId);
              return record === undefined || record.state === 'removed' ? undefined : taskView(record);
            },
            claimRefusal: (taskId) => placement.claimRefusal(taskId),
            withdrawRefused: (taskId) => placement.withdrawRefused(taskId),
            news: (listener) => placement.onPlaced(listener),
            track: (end) => {
              openStreams.add(end);
              return () => openStreams.delete(end);
            },
          },
          result.task.id,
          request.headers.authorization,
          gone.signal,
        ).catch((error: unknown) => {
          throw scopeToSpec(error);
        });
        if (placed !== undefined) return reply.code(result.created ? 201 : 200).send({ task: placed });
      }
      // 200: the same task was submitted before (a retry); it is returned as it is now.
      return reply.code(result.created ? 201 : 200).send({ task: taskView(result.task) });
    },

    async listTasks(request, reply) {
      const query = request.query as { state?: string[]; label?: string[]; end?: string[]; limit?: number; order?: 'oldest-first' | 'newest-first' };
      const states = query.state?.flatMap((s) => s.split(',')) as TaskState[] | undefined;
      const endKinds = query.end?.flatMap((s) => s.split(',')) as EndKind[] | undefined;
      const records = runtime.store.tasks.list({
        state: states ?? LISTED_BY_DEFAULT,
        ...(query.label ? { label: query.label } : {}),
        ...(endKinds ? { endKind: endKinds } : {}),
        ...(query.limit !== undefined ? { limit: query.limit } : {}),
        ...(query.order !== undefined ? { order: query.order } : {}),
      });
      const views = records.map((record) => taskView(record));
      if (!runtime.forwarder || !runtime.cluster?.listTasks) return { tasks: views };
      // Cluster mode: the cluster index too, merged with this node's records (which win: they have the detail).
      let indexed: Awaited<ReturnType<NonNullable<typeof runtime.cluster.listTasks>>>;
      try {
        indexed = await runtime.cluster.listTasks({ limit: query.limit ?? 1000, ...(query.order !== undefined ? { order: query.order } : {}) });
      } catch (error) {
        // PostgreSQL away: the node keeps serving its own tasks, and says the list is its own only.
        if (!isBerthError(error, 'BERTH_CLUSTER_UNAVAILABLE')) throw error;
        void reply.header('berth-cluster-index', 'unavailable');
        return { tasks: views };
      }
      return { tasks: mergeClusterTasks(views, indexed, { isRecordedHere: (id) => runtime.store.tasks.get(id) !== undefined, states: states ?? LISTED_BY_DEFAULT, labels: query.label ?? [], endKinds: endKinds ?? [], order: query.order ?? 'oldest-first', ...(query.limit !== undefined ? { limit: query.limit } : {}) }) };
    },

    async getTask(request) {
      return { task: taskView(visibleTask((request.params as { id: string }).id)) };
    },

    async stopTask(request) {
      const { id } = visibleTask((request.params as { id: string }).id);
      const { graceMs } = request.query as { graceMs?: number };
      return { task: taskView(await runtime.supervisor.stop(id, graceMs === undefined ? {} : { graceMs })) };
    },

    async pauseTask(request) {
      const { id } = visibleTask((request.params as { id: string }).id);
      return { task: taskView(await runtime.supervisor.pause(id)) };
    },

    async unpauseTask(request) {
      const { id } = visibleTask((request.params as { id: string }).id);
      return { task: taskView(await runtime.supervisor.unpause(id)) };
    },

    async killTask(request) {
      const { id } = visibleTask((request.params as { id: string }).id);
      const { signal } = (request.body ?? {}) as { signal?: string };
      return { task: taskView(await runtime.supervisor.kill(id, signal ?? 'SIGKILL')) };
    },

    async waitTask(request, reply) {
      const { id } = visibleTask((request.params as { id: string }).id);
      const { timeout } = request.query as { timeout: string };
      const timeoutMs = parseDurationMs(timeout);
      if (timeoutMs === undefined || timeoutMs > WAIT_TIMEOUT_MAX_MS) throw new ValidationError([{ field: 'timeout', rule: 'must be a duration from 0s to 10m, e.g. 30s' }]);
      // A client that goes away ends the wait at once, and so does the server closing (a long poll
      // must not hold a shutdown for its whole timeout): it then answers with the task as it is.
      const gone = new AbortController();
      const end = (): void => gone.abort();
      openStreams.add(end);
      reply.raw.once('close', () => {
        if (!reply.raw.writableEnded) gone.abort();
      });
      try {
        const record = await runtime.supervisor.wait(id, timeoutMs, gone.signal);
        return { task: taskView(record), ended: hasEnded(record.state) };
      } finally {
        openStreams.delete(end);
      }
    },

    async removeTask(request, reply) {
      const { id, group } = visibleTask((request.params as { id: string }).id);
      // A group's task goes with its group: removed alone, the group would lose a member's record.
      if (group !== undefined) {
        throw new BerthError('BERTH_TASK_STATE', `task ${id} belongs to group ${group.groupId}; remove the group instead (DELETE /v1/groups/${group.groupId}, berth group rm ${group.groupId})`, {
          context: { taskId: id, groupId: group.groupId },
        });
      }
      await runtime.supervisor.remove(id);
      return reply.code(204).send();
    },

    async taskLogs(request, reply) {
      const { id } = visibleTask((request.params as { id: string }).id);
      return serveTaskLogs(id, request, reply);
    },

    async submitGroup(request, reply) {
      const { id } = request.query as { id?: string };
      const result = requireGroups().submit({ ...(id !== undefined ? { id } : {}), spec: request.body });
      return reply.code(result.created ? 201 : 200).send({ group: groupView(result.group.id) });
    },

    async listGroups(request) {
      const query = request.query as { state?: string[] };
      const states = query.state?.flatMap((s) => s.split(',')) as GroupState[] | undefined;
      return { groups: requireGroups().list(states ? { state: states } : {}).map(({ group, tasks }) => toGroupView(group, tasks, runtime.agentId ?? '')) };
    },

    async getGroup(request) {
      return { group: groupView((request.params as { id: string }).id) };
    },

    async stopGroup(request) {
      const { id } = request.params as { id: string };
      requireGroups().stop(id);
      return { group: groupView(id) };
    },

    async removeGroup(request, reply) {
      const { id } = request.params as { id: string };
      const { force } = request.query as { force?: boolean };
      await requireGroups().remove(id, { force: force ?? false });
      return reply.code(204).send();
    },

    async groupTaskLogs(request, reply) {
      const { id, name } = request.params as { id: string; name: string };
      const task = requireGroups().get(id).tasks.find((t) => t.group?.taskName === name);
      if (!task) throw new BerthError('BERTH_TASK_NOT_FOUND', `group ${id} has no task ${name}`, { context: { groupId: id, taskName: name } });
      return serveTaskLogs(task.id, request, reply);
    },

    async taskStats(request, reply) {
      const task = visibleTask((request.params as { id: string }).id);
      const containerId = runningContainerOf(task);
      const { stream } = request.query as { stream: boolean };
      // Ends the engine's stream when the client goes away or the server closes.
      const abort = new AbortController();
      const records = taskStatsRecords(runtime.engine, { taskId: task.id, containerId }, { stream, signal: abort.signal });
      let first: IteratorResult<unknown>;
      try {
        // The first sample before the answer starts, so that an engine failure is a status, not a cut stream.
        first = await records.next();
      } catch (error) {
        abort.abort();
        throw error;
      }
      if (first.done) {
        // The container stopped between the record and the engine's answer: no sample to give.
        throw new BerthError('BERTH_TASK_STATE', `cannot read the stats of task ${task.id}: its container stopped`, { context: { taskId: task.id, state: 'running' } });
      }
      const all = (async function* (): AsyncGenerator<unknown> {
        yield first.value;
        yield* records;
      })();
      reply.type('application/x-ndjson').header('cache-control', 'no-store');
      return sendStream(reply, ndjsonStream(all), () => abort.abort());
    },

    ...artifactHandlers({ visibleTask, engine: runtime.engine, artifacts: runtime.artifacts, sendStream }),

    async listNodes() {
      if (!runtime.listNodes) throw new BerthError('BERTH_AGENT_UNAVAILABLE', 'this agent does not list nodes');
      return toNodeListView(await runtime.listNodes());
    },

    async listImages() {
      return { images: runtime.imageSnapshot().images.map(toImageView) };
    },

    async events(request, reply) {
      const { scope, since } = request.query as { since?: string; scope?: 'node' | 'cluster' };
      if (scope === 'cluster') {
        const cluster = runtime.cluster;
        if (!runtime.forwarder || !cluster?.readEvents) throw new ValidationError([{ field: 'scope', rule: 'cluster needs an agent in cluster mode (cluster.postgres)' }]);
        if (since !== undefined) throw new ValidationError([{ field: 'since', rule: 'is not taken with scope=cluster: resume with Last-Event-ID (a cluster cursor)' }]);
        const after = clusterEventResume(request.headers['last-event-id']);
        const stream = clusterEventStream({ readEvents: (page) => cluster.readEvents!(page), ...(after !== undefined ? { after } : {}), ...(options.heartbeatMs !== undefined ? { heartbeatMs: options.heartbeatMs } : {}), logger: runtime.logger });
        reply.type('text/event-stream').header('cache-control', 'no-store').header('x-accel-buffering', 'no');
        // Destroyed, not ended: a read of the database may still be under way.
        return sendStream(reply, stream, () => stream.destroy());
      }
      // Checked before the response starts, so that a client whose events are gone gets a 410, not a stream.
      const resume = eventResume(request.headers['last-event-id'], (request.query as { since?: string }).since);
      const replayAfterId = resume === undefined ? undefined : runtime.events.replayStart(resume);
      const stream = agentEventStream({ events: runtime.events, heartbeatMs: options.heartbeatMs, logger: runtime.logger, ...(replayAfterId !== undefined ? { replayAfterId } : {}) });
      reply.type('text/event-stream').header('cache-control', 'no-store').header('x-accel-buffering', 'no');
      // Ending the stream (rather than destroying it) lets the client read the events already sent.
      return sendStream(reply, stream, () => stream.push(null));
    },

    async prune(request, reply) {
      const body = (request.body ?? {}) as { filters?: string[]; dryRun?: boolean };
      // A client that goes away (the response closes before it was sent) cancels the prune at the next object.
      const abort = new AbortController();
      reply.raw.once('close', () => {
        if (!reply.raw.writableEnded) abort.abort();
      });
      const report = await runtime.garbage.prune({ filters: body.filters ?? [], dryRun: body.dryRun ?? false, signal: abort.signal });
      return toPruneView(report);
    },

    async health(_request, reply) {
      const [engine, disk] = await Promise.all([runtime.engineHealth(), runtime.logs.space.check()]);
      const started = runtime.started;
      const waiting = runtime.supervisor.tasksWaitingForEngine;
      // A full disk does not make the agent unhealthy (it keeps supervising and serving): it is reported.
      const body: HealthView = {
        agent: started ? 'ok' : 'starting',
        engine: engine.ok ? 'ok' : 'unavailable',
        ...(engine.ok ? {} : { engineError: { code: engine.code, message: engine.message } }),
        ...(waiting > 0 ? { tasksWaitingForEngine: waiting } : {}),
        ...(disk === 'full' ? { disk } : {}),
      };
      return reply.code(engine.ok && started ? 200 : 503).send(body);
    },

    async metrics(_request, reply) {
      const text = await metrics.render();
      return reply.type(metrics.contentType).send(text);
    },

    async openapi() {
      return openApiDocument;
    },
  };

  for (const route of API_ROUTES) {
    // Routes their own plugins register, below: exec (plain and WebSocket) and the other WebSocket routes.
    if (route.declaredBy === 'exec' || route.declaredBy === 'files' || route.websocket) continue;
    const handler = handlers[route.operationId];
    if (!handler) throw new BerthError('BERTH_INTERNAL', `no handler for the route ${route.operationId}`);
    const querySchema = route.querystring;
    app.route({
      method: route.method,
      url: route.url,
      schema: fastifySchema(route),
      config: { isPublic: route.isPublic ?? false },
      ...(querySchema
        ? {
            preValidation: async (request: FastifyRequest) => {
              request.query = typedQuery(querySchema, request.query);
            },
          }
        : {}),
      handler,
    });
  }
  // WebSocket routes go in plugins registered after the websocket plugin (its route hook makes the
  // upgrade), which is registered once for all of them; closing the server closes their sockets (1001).
  void app.register(fastifyWebsocket, { options: { maxPayload: 1024 * 1024 }, preClose: closeWebSocketsGoingAway });
  registerFilesRoutes(app, { visibleTask, engine: runtime.engine, uploads: runtime.uploads });
  registerExecRoutes(app, { visibleTask, engine: runtime.engine, logger: runtime.logger, countError: (code) => metrics.countError(code) });
  void app.register(attachRoutes({ engine: runtime.engine, supervisor: runtime.supervisor, logger: runtime.logger, visibleTask }, websocketRoute('attachTask')));
  return app;
}

/** The route table's entry of a WebSocket route. */
function websocketRoute(operationId: string): ApiRoute {
  const route = API_ROUTES.find((r) => r.operationId === operationId && r.websocket);
  if (!route) throw new BerthError('BERTH_INTERNAL', `no WebSocket route ${operationId} in API_ROUTES`);
  return route;
}

/** The router's refusals (fastify's frameworkErrors) in berth's shape: a bad URL 400, a path parameter too long 414. */
function frameworkErrorResponse(error: unknown): ErrorResponse {
  if ((error as { code?: unknown } | null)?.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    return requestError(414, { field: 'url', rule: `has a path segment longer than ${MAX_PARAM_LENGTH} characters; task ids are at most 128` });
  }
  return toErrorResponse(error);
}

/** Each route's path as a pattern, to tell a path with another method (405) from no path at all (404). */
const ROUTE_PATTERNS = API_ROUTES.map((route) => ({
  method: route.method,
  pattern: new RegExp(`^${route.url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:[A-Za-z0-9_]+/g, '[^/]+')}$`),
}));

/** The methods the API serves on a path (HEAD with GET, as fastify exposes it); none for a path it does not know. */
function allowedMethods(urlPath: string): string[] {
  const methods = new Set<string>();
  for (const { method, pattern } of ROUTE_PATTERNS) {
    if (!pattern.test(urlPath)) continue;
    methods.add(method);
    if (method === 'GET') methods.add('HEAD');
  }
  return [...methods];
}

function fastifySchema(route: ApiRoute): FastifySchema {
  const response: Record<number, unknown> = {};
  for (const [status, { schema }] of Object.entries(route.responses)) if (schema) response[Number(status)] = schema;
  return {
    ...(route.body ? { body: route.body } : {}),
    ...(route.querystring ? { querystring: route.querystring } : {}),
    ...(route.params ? { params: route.params } : {}),
    response,
  };
}
