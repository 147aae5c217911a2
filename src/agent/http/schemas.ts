import { TASK_STATES } from '../../state/tasks.js';
import { GROUP_STATES } from '../../state/groups.js';
import { TASK_ID, TASK_ID_MAX_LENGTH } from '../../tasks/driver.js';
import { END_KINDS } from '../../tasks/end-state.js';
import { SPEC_BOUNDS } from '../../spec/schema.js';
import { PLAIN_EXEC_OUTPUT_LIMIT_BYTES } from './exec.js';

/**
 * The JSON schemas of the agent's HTTP API: fastify validates request bodies and query strings with
 * them and serializes responses with them, and the OpenAPI document (`openapi.ts`) is built from the
 * same objects, so the document cannot drift from what the server enforces.
 */

/** A JSON Schema (draft-07 keywords that OpenAPI 3.1 reads the same way). */
export type JsonSchema = Readonly<Record<string, unknown>>;

/** The longest task id the driver accepts. */
export { TASK_ID_MAX_LENGTH };

/** The task ids the driver accepts (TASK_ID in tasks/driver.ts): container names derive from them. */
export const TASK_ID_PATTERN = TASK_ID.source;

/**
 * The longest path parameter the router matches (fastify's `maxParamLength`, 100 by default); a
 * longer one is answered 414. It must cover every id the API accepts, or a task could be
 * submitted and then never reached again: the longest id even when a client percent-encodes every
 * character of it (three characters each), with room to spare.
 */
export const MAX_PARAM_LENGTH = 4 * TASK_ID_MAX_LENGTH;

const isoTime: JsonSchema = { type: 'string', format: 'date-time' };

/** One problem with one field: `{ field, rule }`. */
export const fieldIssueSchema: JsonSchema = {
  type: 'object',
  required: ['field', 'rule'],
  additionalProperties: false,
  properties: {
    field: { type: 'string', description: 'Dotted path of the field, e.g. `spec.resources.memory`.' },
    rule: { type: 'string', description: 'The rule it broke, in words.' },
  },
};

/** Every error response: `{ error: { code, message, issues? } }`. */
export const errorBodySchema: JsonSchema = {
  type: 'object',
  required: ['error'],
  additionalProperties: false,
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      additionalProperties: false,
      properties: {
        code: { type: 'string', description: 'A stable berth error code, e.g. `BERTH_VALIDATION`.' },
        message: { type: 'string' },
        issues: { type: 'array', items: fieldIssueSchema },
      },
    },
  },
};

/** How a task ended, as the store records it; `kind` discriminates. */
export const endStateSchema: JsonSchema = {
  type: 'object',
  required: ['kind'],
  additionalProperties: true,
  properties: {
    kind: { type: 'string', enum: END_KINDS },
    exitCode: { type: 'integer' },
    reason: { type: 'string' },
    hint: { type: 'string' },
    timeoutMs: { type: 'integer' },
  },
};

/** A task's health as the engine last reported it (TaskHealthView). */
export const taskHealthSchema: JsonSchema = {
  type: 'object',
  required: ['status', 'failingStreak', 'log'],
  additionalProperties: false,
  description: 'The health of a task whose container has a health check (its spec\'s or its image\'s), as the engine last reported it; kept after the task ends.',
  properties: {
    status: { type: 'string', enum: ['starting', 'healthy', 'unhealthy'] },
    failingStreak: { type: 'integer', minimum: 0, description: 'Consecutive failed checks.' },
    log: {
      type: 'array',
      maxItems: 5,
      description: 'The last checks, oldest first; each output is cut to its last 1024 characters.',
      items: {
        type: 'object',
        required: ['exitCode', 'output'],
        additionalProperties: false,
        properties: { start: isoTime, end: isoTime, exitCode: { type: 'integer' }, output: { type: 'string' } },
      },
    },
  },
};

/** `GET /v1/tasks/:id/stats`. */
export const statsQuerySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    stream: { type: 'boolean', default: true, description: 'false: one sample, then the response ends (docker\'s --no-stream).' },
  },
};

/** One line of `GET /v1/tasks/:id/stats`: a sample as `berth stats --json` prints it. */
export const statsRecordSchema: JsonSchema = {
  type: 'object',
  required: ['taskId', 'containerId', 'at', 'previousAt', 'cpuPercent', 'onlineCpus', 'memoryBytes', 'memoryLimitBytes', 'memoryPercent', 'pids', 'networkRxBytes', 'networkTxBytes', 'blockReadBytes', 'blockWriteBytes'],
  additionalProperties: false,
  properties: {
    taskId: { type: 'string' },
    containerId: { type: 'string' },
    at: { ...isoTime, description: 'When the engine took the reading.' },
    previousAt: { type: ['string', 'null'], format: 'date-time', description: 'When it took the previous one; null on the first sample, whose CPU % spans the container\'s life.' },
    cpuPercent: { type: 'number', description: 'CPU use since the previous reading in percent of one CPU (200 is two full cores), as docker stats computes it.' },
    onlineCpus: { type: 'integer' },
    memoryBytes: { type: 'integer', description: 'Memory in use (the working set: page cache that can be dropped is not counted), as docker stats shows it.' },
    memoryLimitBytes: { type: 'integer', description: 'The task\'s memory limit, or the host\'s memory without one.' },
    memoryPercent: { type: 'number' },
    pids: { type: 'integer' },
    networkRxBytes: { type: 'integer' },
    networkTxBytes: { type: 'integer' },
    blockReadBytes: { type: 'integer' },
    blockWriteBytes: { type: 'integer' },
  },
};

/** What a task used, recorded at its end. */
export const usageSchema: JsonSchema = {
  type: 'object',
  required: ['cpuTimeMs', 'peakMemoryBytes', 'throttled', 'throttledPeriods', 'throttledTimeMs', 'oomKilled', 'samples', 'sampledAt'],
  additionalProperties: false,
  properties: {
    cpuTimeMs: { type: 'integer', minimum: 0, description: 'CPU time (user + system) up to the last reading of its cgroup.' },
    peakMemoryBytes: { type: 'integer', minimum: 0, description: 'The highest memory use, page cache included (as the kernel counts it against the limit).' },
    throttled: { type: 'boolean', description: 'Whether the CPU quota held it back at least once, or it ran out of memory.' },
    throttledPeriods: { type: 'integer', minimum: 0, description: 'Scheduler periods in which the CPU quota held it back.' },
    throttledTimeMs: { type: 'integer', minimum: 0 },
    oomKilled: { type: 'boolean' },
    samples: { type: 'integer', minimum: 1, description: 'How many readings of its cgroup the figures come from.' },
    sampledAt: { ...isoTime, description: 'When the last reading was taken: what the task did after it, up to its end (at most a second), is not counted.' },
  },
};

/** A task as the API shows it. */
/** How a task started (TaskStartView): the view's `start` and a task.state event's. */
const taskStartSchema: JsonSchema = {
  type: 'object',
  required: ['path'],
  additionalProperties: false,
  properties: {
    path: { type: 'string', enum: ['warm', 'cold'] },
    pool: { type: 'string', description: 'warm: the pool whose container the task took.' },
    reason: { type: 'string', description: 'cold: why (no-pool, no-match, pool-empty, not-poolable, pool-failed).' },
  },
};

export const taskViewSchema: JsonSchema = {
  type: 'object',
  required: ['id', 'state', 'spec', 'submittedAt'],
  additionalProperties: false,
  properties: {
    id: { type: 'string' },
    node: { type: ['string', 'null'], description: 'Cluster mode: the node that runs the task (or ran it last); null while it is queued. Absent on an agent without `cluster`.' },
    state: { type: 'string', enum: TASK_STATES },
    spec: { type: 'object', additionalProperties: true, description: 'The spec as submitted, with the agent\'s defaults applied; the secrets of inline registry credentials (registryAuth.password, registryAuth.identityToken) read "<redacted>".' },
    containerId: { type: 'string' },
    endState: endStateSchema,
    exitCode: { type: 'integer' },
    submittedAt: isoTime,
    admittedAt: isoTime,
    startedAt: isoTime,
    finishedAt: isoTime,
    outputTruncated: { type: 'string', description: 'Why the task\'s output was cut (the data directory was full); absent while it is whole.' },
    pausedAt: { ...isoTime, description: 'When the current pause began; absent while the task is not paused.' },
    pausedForMs: { type: 'integer', minimum: 0, description: 'How long the task has been paused in all, the current pause included; its run time limit does not count this time.' },
    restarts: { type: 'integer', minimum: 0, description: 'How many times its restart policy restarted it; present when its spec has a restart policy.' },
    attempts: {
      type: 'array',
      description: 'Its attempts (one container each), oldest first, the current or last one included; present when its spec has a restart policy.',
      items: {
        type: 'object',
        required: ['attempt'],
        additionalProperties: false,
        properties: {
          attempt: { type: 'integer', minimum: 1 },
          containerId: { type: 'string', description: 'The attempt\'s container (removed once the attempt ended).' },
          startedAt: isoTime,
          finishedAt: { ...isoTime, description: 'Absent while the attempt runs.' },
          endState: endStateSchema,
          exitCode: { type: 'integer' },
          reason: { type: 'string', description: 'The end state\'s reason, when it has one.' },
        },
      },
    },
    restartAt: { ...isoTime, description: 'While it waits for its next attempt (state starting): when that attempt is due.' },
    health: taskHealthSchema,
    usage: { ...usageSchema, description: 'What the task used (CPU time, peak memory, throttling), recorded at its end; absent while it runs and for a task that never ran.' },
    artifacts: {
      type: 'object',
      description: 'What was kept of the spec\'s `collect` paths at the task\'s end, within `artifacts.maxBytes` (GET /v1/tasks/:id/artifacts downloads them); absent before its end and for a task that collects nothing.',
      required: ['bytes', 'paths'],
      additionalProperties: false,
      properties: {
        bytes: { type: 'integer', minimum: 0, description: 'Bytes kept (tar entries).' },
        paths: { type: 'array', items: { type: 'string' }, description: 'The paths collected, whole or in part.' },
        missing: { type: 'array', items: { type: 'string' }, description: 'Paths the container did not have.' },
        truncated: {
          type: 'array',
          description: 'Paths cut at the size limit, at a file boundary: `cutAt` is the first entry left out (it and everything after it in that path).',
          items: { type: 'object', required: ['path', 'cutAt'], additionalProperties: false, properties: { path: { type: 'string' }, cutAt: { type: 'string' } } },
        },
        failed: {
          type: 'array',
          description: 'Paths that could not be read (the engine failed), with the error code.',
          items: { type: 'object', required: ['path', 'code'], additionalProperties: false, properties: { path: { type: 'string' }, code: { type: 'string' } } },
        },
      },
    },
    usageMissing: { type: 'string', description: 'Why no usage was recorded for a task that ran (its cgroup was not readable, or it ended before the first reading or while the agent was down).' },
    start: { ...taskStartSchema, description: 'How its current (or last) attempt started: `warm` took an idle container of `pool` (a warm pool, README "Warm pools") and runs as an exec in it; `cold` created its own container, for `reason` (no-pool, no-match, pool-empty, not-poolable, pool-failed). Absent before it started.' },
    group: {
      type: 'object',
      required: ['groupId', 'taskName', 'lifecycle'],
      additionalProperties: false,
      description: 'The group the task belongs to (GET /v1/groups/{groupId}); absent for a task of its own.',
      properties: { groupId: { type: 'string' }, taskName: { type: 'string' }, lifecycle: { type: 'string', enum: ['prestart', 'sidecar', 'main'] } },
    },
    ports: {
      type: 'array',
      description: 'The host ports published for the spec\'s `ports`, as the agent allocated them at submit (a dynamic port shows the host port picked from `ports.range`), as testcontainers\' getMappedPort answers. Held until the task has ended and its container is gone; absent for a task that publishes nothing.',
      items: {
        type: 'object',
        required: ['container', 'protocol', 'hostIp', 'host'],
        additionalProperties: false,
        properties: {
          container: { type: 'integer', minimum: 1, maximum: 65535 },
          protocol: { type: 'string', enum: ['tcp', 'udp'] },
          hostIp: { type: 'string', description: 'The host address the port is bound to (`ports.hostIp` unless the spec names one).' },
          host: { type: 'integer', minimum: 1, maximum: 65535 },
        },
      },
    },
    networks: {
      type: 'array',
      description: 'The named networks the task joins (spec `networks`), with its DNS aliases there; absent when it joins none.',
      items: {
        type: 'object',
        required: ['name', 'aliases'],
        additionalProperties: false,
        properties: { name: { type: 'string' }, aliases: { type: 'array', items: { type: 'string' } } },
      },
    },
  },
};

/** How a group ended (GroupEnd): the deciding task's end kind, exit code and reason, and that task. */
export const groupEndSchema: JsonSchema = {
  type: 'object',
  required: ['kind'],
  additionalProperties: false,
  properties: {
    kind: { type: 'string', enum: END_KINDS },
    exitCode: { type: 'integer' },
    reason: { type: 'string' },
    task: { type: 'string', description: 'The task whose end decided the group\'s; absent for a success and a requested stop.' },
  },
};

const publishedPortSchema: JsonSchema = {
  type: 'object',
  required: ['container', 'protocol', 'hostIp', 'host'],
  additionalProperties: false,
  properties: { container: { type: 'integer' }, protocol: { type: 'string', enum: ['tcp', 'udp'] }, hostIp: { type: 'string' }, host: { type: 'integer' } },
};

/** A group as the API shows it (GroupView). */
export const groupViewSchema: JsonSchema = {
  type: 'object',
  required: ['id', 'name', 'state', 'spec', 'tasks', 'ports', 'network', 'createdAt'],
  additionalProperties: false,
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    state: { type: 'string', enum: GROUP_STATES, description: 'pending (queued for admission as one unit), starting (its infrastructure is being made), running, stopping (a stop was asked, a prestart failed, or its sidecars are being stopped after its main tasks ended), exited (every task ended; endState says how).' },
    spec: { type: 'object', additionalProperties: true, description: 'The group document as submitted, its tasks with the agent\'s defaults applied.' },
    stopRequested: { type: 'boolean' },
    endState: groupEndSchema,
    tasks: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'lifecycle', 'taskId', 'state'],
        additionalProperties: false,
        properties: {
          name: { type: 'string' },
          lifecycle: { type: 'string', enum: ['prestart', 'sidecar', 'main'] },
          taskId: { type: 'string', description: 'The task\'s id: every task route (logs, exec, stats, attach, wait) takes it.' },
          state: { type: 'string', enum: TASK_STATES },
          containerId: { type: 'string' },
          endState: endStateSchema,
          exitCode: { type: 'integer' },
        },
      },
    },
    infraContainerId: { type: 'string', description: 'The container that owns the group\'s network namespace.' },
    ports: { type: 'array', items: publishedPortSchema, description: 'The host ports published for the group.' },
    network: {
      type: 'object',
      required: ['mode'],
      additionalProperties: false,
      properties: { mode: { type: 'string', enum: ['bridge', 'none', 'private'] }, name: { type: 'string', description: 'The group\'s own network (mode private).' } },
    },
    sharedDir: { type: 'object', required: ['path', 'volume'], additionalProperties: false, properties: { path: { type: 'string' }, volume: { type: 'string' } } },
    createdAt: isoTime,
    startedAt: isoTime,
    endedAt: isoTime,
    cleanedAt: { ...isoTime, description: 'When its engine objects were removed and its share of the budget released, after its end.' },
  },
};

export const groupEnvelopeSchema: JsonSchema = { type: 'object', required: ['group'], additionalProperties: false, properties: { group: groupViewSchema } };
export const groupListSchema: JsonSchema = { type: 'object', required: ['groups'], additionalProperties: false, properties: { groups: { type: 'array', items: groupViewSchema } } };

/** The ids groups take (a client's, or the default `<name>-<8 hex digits>`): at most 60 characters, so their tasks' ids stay valid. */
export const GROUP_ID_PATTERN = '^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,59}$';

export const groupIdParamsSchema: JsonSchema = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: { type: 'string', pattern: GROUP_ID_PATTERN, maxLength: 60, description: 'A group id.' } },
};

export const groupTaskParamsSchema: JsonSchema = {
  type: 'object',
  required: ['id', 'name'],
  additionalProperties: false,
  properties: { id: { type: 'string', pattern: GROUP_ID_PATTERN, maxLength: 60, description: 'A group id.' }, name: { type: 'string', pattern: '^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$', maxLength: 64, description: 'A task\'s name in the group.' } },
};

/** `POST /v1/groups`: the id is optional. */
export const groupSubmitQuerySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { id: { type: 'string', pattern: GROUP_ID_PATTERN, description: 'The group\'s id; default `<name>-<8 random hex digits>`. Submitting the same id with the same document again returns the group (200).' } },
};

/** `GET /v1/groups`. */
export const groupListQuerySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    state: { type: 'array', items: { type: 'string', pattern: `^(${GROUP_STATES.join('|')})(,(${GROUP_STATES.join('|')}))*$` }, description: 'Groups in any of these states; repeat it or separate states with commas.' },
  },
};

/** `DELETE /v1/groups/:id`. */
export const groupRemoveQuerySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { force: { type: 'boolean', default: false, description: 'Stop a group that has not ended first (as `docker rm -f`), then remove it.' } },
};

/** `POST /v1/tasks/:id/kill`. */
export const killBodySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    signal: { type: 'string', pattern: '^(SIG)?[A-Z0-9+-]{1,16}$|^[0-9]{1,2}$', default: 'SIGKILL', description: 'A signal name such as SIGHUP (or HUP) or a number such as 1. Default SIGKILL.' },
  },
};

/** `GET /v1/tasks/:id/wait`. */
export const waitQuerySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    timeout: { type: 'string', pattern: '^[0-9]+(ms|s|m)$', default: '30s', description: 'How long to wait for the end before answering with the task as it is (`ended: false`): 0s to 10m, e.g. `30s`. Default 30s.' },
  },
};

/** The answer of a wait: the task, and whether it has ended. */
export const waitAnswerSchema: JsonSchema = {
  type: 'object',
  required: ['task', 'ended'],
  additionalProperties: false,
  properties: { task: taskViewSchema, ended: { type: 'boolean' } },
};

export const taskEnvelopeSchema: JsonSchema = {
  type: 'object',
  required: ['task'],
  additionalProperties: false,
  properties: { task: taskViewSchema },
};

export const taskListSchema: JsonSchema = {
  type: 'object',
  required: ['tasks'],
  additionalProperties: false,
  properties: { tasks: { type: 'array', items: taskViewSchema } },
};

/** `POST /v1/tasks`. The spec is checked in full by the agent (the TaskSpec schema), which names the field at fault. */
export const submitBodySchema: JsonSchema = {
  type: 'object',
  required: ['spec'],
  additionalProperties: false,
  properties: {
    id: { type: 'string', pattern: TASK_ID_PATTERN, description: 'Default: a random UUID.' },
    spec: { type: 'object', description: 'A task spec (see the TaskSpec schema).' },
  },
};

export const taskIdParamsSchema: JsonSchema = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: {
    id: {
      type: 'string',
      pattern: TASK_ID_PATTERN,
      maxLength: TASK_ID_MAX_LENGTH,
      description:
        'A task id, or any unique prefix of one (as docker takes container ids): the task with exactly this id wins; a prefix that several tasks start with is refused (409 BERTH_TASK_AMBIGUOUS, its message naming some of them and the count).',
    },
  },
};

const stateAlternatives = TASK_STATES.join('|');
const endAlternatives = END_KINDS.join('|');

export const listQuerySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    state: {
      type: 'array',
      items: { type: 'string', pattern: `^(${stateAlternatives})(,(${stateAlternatives}))*$` },
      description: 'Tasks in any of these states; repeat it or separate states with commas.',
    },
    label: {
      type: 'array',
      items: { type: 'string', minLength: 1 },
      description: 'Spec labels that must all match: `key` (present) or `key=value`; repeat it for several.',
    },
    end: {
      type: 'array',
      items: { type: 'string', pattern: `^(${endAlternatives})(,(${endAlternatives}))*$` },
      description: `Only ended tasks that ended so (${END_KINDS.join(', ')}); repeat it or separate kinds with commas.`,
    },
    order: {
      type: 'string',
      enum: ['oldest-first', 'newest-first'],
      description: 'Submission order, oldest first (the default) or newest first; `limit` keeps the first tasks of this order, so `order=newest-first&limit=N` gives the newest N.',
    },
    limit: { type: 'integer', minimum: 0, maximum: 100_000, description: 'At most this many tasks, the first of `order`.' },
  },
};

/** `POST /v1/tasks/{id}/stop`: the grace period of this stop, with the spec's stopGracePeriod bounds. */
export const stopQuerySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    graceMs: {
      type: 'integer',
      minimum: SPEC_BOUNDS.stopGracePeriod.minMs,
      maximum: SPEC_BOUNDS.stopGracePeriod.maxMs,
      description: 'Milliseconds between the stop signal and SIGKILL for this stop (the engine counts whole seconds, rounded up); default the task spec\'s stopGracePeriod. On a task being stopped already, 0 kills it at once (it still ends as cancelled); another value leaves its stop as it is.',
    },
  },
};

/** The query of an attach (`GET /v1/tasks/:id/attach`, upgraded to a WebSocket). */
export const attachQuerySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    logs: { type: 'boolean', default: false, description: 'First send what the task printed before the attach (the engine replays its log of the task, then attaches, as `docker attach --logs`): in order and nothing twice, though a line printed in the instant between the two can be missed; the complete record is the task\'s logs.' },
  },
};

/** RFC 3339 with an offset and up to nine fractional digits. */
export const RFC3339_PATTERN = '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?(Z|z|[+-]\\d{2}:\\d{2})$';

export const logsQuerySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    follow: { type: 'boolean', default: false, description: 'Keep the response open and send new lines until the task\'s output ends.' },
    since: { type: 'string', pattern: RFC3339_PATTERN, description: 'Only lines after this time (exclusive), RFC 3339, e.g. `2024-05-01T10:00:00.123456789Z`.' },
    until: { type: 'string', pattern: RFC3339_PATTERN, description: 'Only lines up to this time (inclusive), RFC 3339. A follow ends when this time comes.' },
    tail: { type: 'integer', minimum: 0, maximum: 1_000_000, description: 'Only the last N lines of the stored output (after since/until/stream); with follow, then the new ones.' },
    stream: { type: 'string', enum: ['stdout', 'stderr'], description: 'Only this stream. Default both.' },
  },
};

export const eventsQuerySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    since: {
      type: 'string',
      pattern: `^(0|[1-9][0-9]{0,15})$|${RFC3339_PATTERN}`,
      description: 'Resume: the events after this event id, or after this RFC 3339 time, then live ones. A `Last-Event-ID` header wins over it.',
    },
    scope: {
      type: 'string',
      enum: ['node', 'cluster'],
      description: '`node` (default): this agent\'s own events. `cluster` (cluster mode): the cluster\'s event log instead — `node.registered`, `node.down`, `task.queued`, `task.claimed`, `task.running`, `task.exited`, `task.lost`, `task.requeued`, `task.released` — each `data: {seq, at, kind, taskId?, nodeId?, epoch?, data}`, from the time of the request; the last event of each page read carries the cluster cursor as its `id`, which `Last-Event-ID` resumes after (`since` is refused). 400 on an agent without `cluster`.',
    },
  },
};

/** One line of `application/x-ndjson` from the logs endpoint. */
export const logRecordSchema: JsonSchema = {
  type: 'object',
  required: ['stream', 'timestamp', 'text'],
  additionalProperties: false,
  properties: {
    stream: { type: 'string', enum: ['stdout', 'stderr'] },
    timestamp: { type: 'string', description: 'The engine\'s timestamp, RFC 3339 in UTC with nanoseconds.' },
    text: { type: 'string', description: 'The line as the task wrote it, its newline included.' },
  },
};

const nodeBudgetSchema: JsonSchema = {
  type: 'object',
  required: ['memoryBytes', 'cpuMilli', 'tasks'],
  additionalProperties: false,
  properties: { memoryBytes: { type: 'integer', minimum: 0 }, cpuMilli: { type: 'integer', minimum: 0 }, tasks: { type: 'integer', minimum: 0 } },
};

export const nodeListSchema: JsonSchema = {
  type: 'object',
  required: ['mode', 'nodes'],
  additionalProperties: false,
  properties: {
    mode: { type: 'string', enum: ['single', 'cluster'], description: '`cluster` when the agent has `cluster.postgres`; `single`: the agent alone.' },
    nodes: {
      type: 'array',
      items: {
        type: 'object',
        required: ['id', 'address', 'labels', 'state', 'epoch', 'capacity', 'load', 'lastHeartbeat', 'leaseExpiresAt', 'self'],
        additionalProperties: false,
        properties: {
          id: { type: 'string', description: 'The node id (`cluster.nodeId`, default the agent\'s id).' },
          address: { type: 'string', description: 'Where other nodes reach its API (`unix://…` for a single agent without a TCP listener).' },
          labels: { type: 'object', additionalProperties: { type: 'string' }, description: 'Matched by task constraints `node.<label>`.' },
          state: { type: 'string', enum: ['ready', 'down'] },
          downReason: { type: 'string', description: 'Why it is down: `left` (it shut down), or the lease it lost.' },
          epoch: { type: 'integer', minimum: 0, description: 'Its lease epoch (the fencing token); 0 for a single agent.' },
          capacity: { ...nodeBudgetSchema, description: 'What it offers the cluster.' },
          load: { ...nodeBudgetSchema, description: 'What its last heartbeat said it runs.' },
          lastHeartbeat: isoTime,
          leaseExpiresAt: isoTime,
          self: { type: 'boolean', description: 'Whether this node answered.' },
        },
      },
    },
  },
};

export const imagesSchema: JsonSchema = {
  type: 'object',
  required: ['images'],
  additionalProperties: false,
  properties: {
    images: {
      type: 'array',
      items: {
        type: 'object',
        required: ['imageId', 'refs', 'holders'],
        additionalProperties: false,
        properties: {
          imageId: { type: 'string' },
          refs: { type: 'array', items: { type: 'string' } },
          holders: { type: 'array', items: { type: 'string' }, description: 'Ids of the tasks that hold the image.' },
          removalDueAt: { ...isoTime, description: 'When the image will be removed, if nobody holds it.' },
        },
      },
    },
  },
};

export const healthSchema: JsonSchema = {
  type: 'object',
  required: ['agent', 'engine'],
  additionalProperties: false,
  properties: {
    agent: { type: 'string', enum: ['ok', 'starting'] },
    engine: { type: 'string', enum: ['ok', 'unavailable'] },
    engineError: {
      type: 'object',
      required: ['code', 'message'],
      additionalProperties: false,
      description: 'Why the engine is unavailable: BERTH_ENGINE_TIMEOUT when it did not answer one ping within health.engineTimeout (wedged, paused), BERTH_ENGINE_UNAVAILABLE when it refused the connection.',
      properties: { code: { type: 'string' }, message: { type: 'string' } },
    },
    tasksWaitingForEngine: { type: 'integer', minimum: 1, description: 'Tasks whose start waits for the engine to answer again; absent when none.' },
    disk: { type: 'string', enum: ['full'], description: 'Present when the data directory has less free space than the agent keeps free: new output is cut.' },
  },
};

/** The `data` of one server-sent event; its `event` field is the type. */
export const agentEventSchema: JsonSchema = {
  type: 'object',
  required: ['type', 'at'],
  additionalProperties: true,
  properties: {
    id: { type: 'integer', minimum: 1, description: 'Increasing, never reused; absent only for an event the agent could not log (a full disk).' },
    type: { type: 'string', enum: ['task.state', 'task.restart', 'task.health', 'image.pull', 'image.removed', 'container.reconciled', 'network.reconciled', 'volume.reconciled', 'prune', 'task.expired', 'group.state', 'group.removed'] },
    at: isoTime,
    taskId: { type: 'string' },
    state: { type: 'string', enum: [...new Set<string>([...TASK_STATES, ...GROUP_STATES])], description: 'task.state: the task\'s state; group.state: the group\'s.' },
    endState: endStateSchema,
    start: { ...taskStartSchema, description: 'task.state to running: how the task started (warm from a pool, or cold and why).' },
    phase: { type: 'string', enum: ['started', 'shared', 'finished', 'failed'] },
    image: { type: 'string' },
    imageId: { type: 'string' },
    containerId: { type: 'string' },
    dryRun: { type: 'boolean' },
    reason: {
      type: 'string',
      description: 'task.expired: why retention removed the task (age, count, disk); container.reconciled: dangling or orphaned; network.reconciled and volume.reconciled: group-ended, owner-gone or abandoned.',
    },
    ownerId: { type: 'string', description: 'container.reconciled (an orphan), network.reconciled, volume.reconciled: the owner id the object carried.' },
    ownerPid: { type: 'integer', description: 'container.reconciled (an orphan): the pid of its owner process, which is gone.' },
    groupId: { type: 'string', description: 'group.state, group.removed: the group; container.reconciled (a group\'s container), network.reconciled, volume.reconciled: the group the object belonged to.' },
    role: { type: 'string', enum: ['infra', 'pool'], description: 'container.reconciled: `infra` for a group\'s infrastructure container, `pool` for a warm pool\'s container the agent\'s pools did not know.' },
    pool: { type: 'string', description: 'container.reconciled of a pool\'s container: its pool.' },
    networkId: { type: 'string', description: 'network.reconciled: the network\'s id.' },
    network: { type: 'string', description: 'network.reconciled: the network\'s name.' },
    volume: { type: 'string', description: 'volume.reconciled: the volume\'s name.' },
    endedAt: { ...isoTime, description: 'task.expired: when the task ended.' },
    attempt: { type: 'integer', minimum: 2, description: 'task.restart: the number of the attempt to come.' },
    delayMs: { type: 'integer', minimum: 0, description: 'task.restart: how long the task waits for it.' },
    restartAt: { ...isoTime, description: 'task.restart: when it is due.' },
    previousEnd: { ...endStateSchema, description: 'task.restart: how the attempt before it ended.' },
    status: { type: 'string', enum: ['starting', 'healthy', 'unhealthy'], description: 'task.health: the new health status.' },
    failingStreak: { type: 'integer', minimum: 0, description: 'task.health: consecutive failed checks.' },
    exitCode: { type: 'integer', description: 'task.health: the last check\'s exit code.' },
    output: { type: 'string', description: 'task.health: the end of the last check\'s output (at most 300 characters).' },
  },
};

export const pruneBodySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    filters: { type: 'array', items: { type: 'string' }, description: 'Moby\'s prune filters: label=k, label=k=v, label!=k, label!=k=v, until=<24h | RFC 3339 | Unix time>.' },
    dryRun: { type: 'boolean', description: 'Report what would be removed; remove nothing.' },
  },
};

const prunedKindSchema: JsonSchema = {
  type: 'object',
  required: ['ids', 'reclaimedBytes'],
  additionalProperties: false,
  properties: {
    ids: { type: 'array', items: { type: 'string' } },
    names: { type: 'array', items: { type: 'string' }, description: 'Networks and volumes: their names, in the order of `ids`.' },
    reclaimedBytes: { type: 'integer' },
    untagged: { type: 'array', items: { type: 'string' } },
  },
};

export const pruneReportSchema: JsonSchema = {
  type: 'object',
  required: ['containers', 'networks', 'volumes', 'images', 'kept', 'failed', 'dryRun', 'cancelled', 'filters'],
  additionalProperties: false,
  properties: {
    containers: prunedKindSchema,
    networks: prunedKindSchema,
    volumes: prunedKindSchema,
    images: prunedKindSchema,
    kept: {
      type: 'array',
      description: 'Objects that matched but were kept: `{ kind, id, reason }`, reason one of live-task, live-group (a live group\'s infrastructure container, network or volume), live-owner, grace, in-use, held, shared, exempt.',
      items: { type: 'object', additionalProperties: true },
    },
    failed: { type: 'array', items: { type: 'object', additionalProperties: true } },
    dryRun: { type: 'boolean' },
    cancelled: { type: 'boolean', description: 'The client went away before the prune was through: what it removed until then.' },
    filters: { type: 'array', items: { type: 'string' } },
    reclaimedBytes: { type: 'integer', description: 'Space freed in all kinds.' },
  },
};

/** The query of the WebSocket exec (`GET /v1/tasks/:id/exec`); checked by `parseExecQuery`, which names every field at fault. */
export const execSocketQuerySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['cmd'],
  properties: {
    cmd: { type: 'array', items: { type: 'string' }, description: 'The command and its arguments: the parameter repeated (`cmd=ls&cmd=-l`), or once as a JSON array (`cmd=["ls","-l"]`).' },
    tty: { type: 'boolean', default: false, description: 'Give the command a TTY (stdout and stderr then come as one stream, stdout).' },
    stdin: { type: 'boolean', default: false, description: 'Forward stdin frames to the command.' },
    env: { type: 'array', items: { type: 'string' }, description: '`KEY=VALUE`, repeated.' },
    workdir: { type: 'string', description: 'Working directory inside the container (absolute).' },
    user: { type: 'string', description: '`user[:group]` or `uid[:gid]`.' },
    rows: { type: 'integer', minimum: 1, maximum: 65535, description: 'The TTY\'s first height (with `tty` and `cols`).' },
    cols: { type: 'integer', minimum: 1, maximum: 65535, description: 'The TTY\'s first width (with `tty` and `rows`).' },
  },
};

/** The body of a plain exec (`POST /v1/tasks/:id/exec`). */
export const execBodySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    cmd: { type: 'array', items: { type: 'string' }, maxItems: 4096, description: 'The command and its arguments (required).' },
    env: { type: 'array', items: { type: 'string' }, description: '`KEY=VALUE` each.' },
    workdir: { type: 'string', description: 'Working directory inside the container (absolute).' },
    user: { type: 'string', description: '`user[:group]` or `uid[:gid]`.' },
    stdin: { type: 'string', description: 'Text given to the command\'s stdin, which is then closed. Default: no stdin.' },
    timeout: { type: 'string', pattern: '^([0-9]+(ms|s|m|h))+$', description: 'How long the command may run before it is killed: above 0, at most 24h, e.g. `30s`. Default 10m.' },
  },
};

/** What a plain exec answers. */
export const execResultSchema: JsonSchema = {
  type: 'object',
  required: ['exitCode', 'stdout', 'stderr'],
  additionalProperties: false,
  properties: {
    exitCode: { type: 'integer', description: 'The command\'s exit code; 127 when it was not found, 126 when it is not executable.' },
    stdout: { type: 'string', description: `The command's stdout as UTF-8, at most ${PLAIN_EXEC_OUTPUT_LIMIT_BYTES} bytes.` },
    stderr: { type: 'string', description: `The command's stderr as UTF-8, at most ${PLAIN_EXEC_OUTPUT_LIMIT_BYTES} bytes.` },
    stdoutTruncated: { type: 'boolean', description: 'Present (true) when stdout was longer and was cut.' },
    stderrTruncated: { type: 'boolean', description: 'Present (true) when stderr was longer and was cut.' },
  },
};

/** A response that is not one JSON document: documented in OpenAPI, written by the handler. */
export interface StreamResponse {
  contentType: string;
  description: string;
  /** The schema of each item (a line of NDJSON, an event's data), when there is one. */
  itemSchema?: JsonSchema;
}

/** One route of the API: what fastify is given, and what the OpenAPI document says. */
export interface ApiRoute {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** fastify style: `/v1/tasks/:id`. */
  url: string;
  operationId: string;
  summary: string;
  /** Whether the route needs the bearer token. Every route but health does. */
  isPublic?: boolean;
  body?: JsonSchema;
  /** A body that is not JSON (a tar archive): streamed to its handler as it arrives, never parsed. */
  rawBody?: { contentType: string; description: string };
  querystring?: JsonSchema;
  params?: JsonSchema;
  /** JSON responses by status; fastify serializes with these. */
  responses: Readonly<Record<number, { description: string; schema?: JsonSchema }>>;
  /** The success response when it is a stream or text rather than JSON. */
  stream?: StreamResponse & { status: number };
  /** The module that declares the route itself (a WebSocket route, and its plain sibling): the server's route loop skips it. */
  declaredBy?: 'exec' | 'files';
  /**
   * Served as a WebSocket: a GET with `Upgrade: websocket`, answered 101 and then spoken in the
   * frames of stream-frames.ts. Its handler is registered by its own plugin (after
   * @fastify/websocket), not by the route loop; the token and the refusals before the upgrade are
   * the same as any route's.
   */
  websocket?: boolean;
}

const errors = {
  badRequest: { description: 'The request broke a rule; `issues` names the fields.', schema: errorBodySchema },
  unauthorized: { description: 'No bearer token, or the wrong one.', schema: errorBodySchema },
  notFound: { description: 'No task with that id or id prefix.', schema: errorBodySchema },
  ambiguous: { description: 'Several tasks start with this id prefix (BERTH_TASK_AMBIGUOUS); the message names some of them and the count.', schema: errorBodySchema },
  conflict: { description: 'The task\'s state does not allow it, or the id is taken.', schema: errorBodySchema },
  unavailable: { description: 'The engine does not answer, or the agent is shutting down.', schema: errorBodySchema },
} as const;

export const uploadReceiptSchema: JsonSchema = {
  type: 'object',
  required: ['id', 'sizeBytes'],
  additionalProperties: false,
  properties: {
    id: { type: 'string', description: 'Named by a spec\'s `files: [{ "upload": id, "path": "/dir" }]`.' },
    sizeBytes: { type: 'integer', minimum: 0 },
  },
};

const archiveQuerySchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { path: { type: 'string', description: 'An existing directory in the task\'s container the archive is extracted into.' } },
};

/** Every route, in the order the OpenAPI document lists them. */
export const API_ROUTES: readonly ApiRoute[] = [
  {
    method: 'POST',
    url: '/v1/uploads',
    operationId: 'createUpload',
    summary:
      'Upload a tar archive for a task spec to extract before its task starts (`files: [{ "upload": id, "path": "/dir" }]`). Streamed to the agent\'s data directory, at most files.uploadMaxSize; an upload no task used within files.uploadTtl is removed, and one a task without restarts used is removed after its start.',
    rawBody: { contentType: 'application/x-tar', description: 'A tar archive.' },
    declaredBy: 'files',
    responses: {
      201: { description: 'Kept; its id.', schema: uploadReceiptSchema },
      400: errors.badRequest,
      401: errors.unauthorized,
      413: { description: 'The archive is larger than files.uploadMaxSize (BERTH_UPLOAD_TOO_LARGE); nothing is kept.', schema: errorBodySchema },
    },
  },
  {
    method: 'PUT',
    url: '/v1/tasks/:id/archive',
    operationId: 'copyIntoTask',
    summary: 'Extract a tar archive into a running task\'s container at `path`, an existing directory (docker cp into a container): streamed to the engine as it arrives.',
    params: taskIdParamsSchema,
    querystring: archiveQuerySchema,
    rawBody: { contentType: 'application/x-tar', description: 'A tar archive.' },
    declaredBy: 'files',
    responses: {
      204: { description: 'Extracted.' },
      400: errors.badRequest,
      401: errors.unauthorized,
      404: { description: 'No task with that id or id prefix (BERTH_TASK_NOT_FOUND), or no directory `path` in its container (BERTH_ENGINE_NOT_FOUND).', schema: errorBodySchema },
      409: { description: 'The task is not running (BERTH_TASK_STATE); or several tasks start with this id prefix (BERTH_TASK_AMBIGUOUS).', schema: errorBodySchema },
    },
  },
  {
    method: 'POST',
    url: '/v1/tasks',
    operationId: 'submitTask',
    summary:
      'Submit a task: it starts when it fits the admission budget, and waits as pending until then. Idempotent by id: submitting the same id with the same spec again returns the task (200).',
    body: submitBodySchema,
    responses: {
      200: { description: 'A task with this id and the same spec (after the agent\'s defaults, key order aside) exists: it is returned as it is now, and nothing is started again.', schema: taskEnvelopeSchema },
      201: { description: 'The task as recorded.', schema: taskEnvelopeSchema },
      400: errors.badRequest,
      401: errors.unauthorized,
      409: { description: 'A task with this id and another spec exists (BERTH_TASK_EXISTS).', schema: errorBodySchema },
      503: errors.unavailable,
    },
  },
  {
    method: 'GET',
    url: '/v1/tasks',
    operationId: 'listTasks',
    summary: 'List tasks in submission order (oldest first unless `order=newest-first`), filtered by state, end kind and spec labels.',
    querystring: listQuerySchema,
    responses: { 200: { description: 'The matching tasks.', schema: taskListSchema }, 400: errors.badRequest, 401: errors.unauthorized },
  },
  {
    method: 'GET',
    url: '/v1/tasks/:id',
    operationId: 'getTask',
    summary: 'One task.',
    params: taskIdParamsSchema,
    responses: { 200: { description: 'The task.', schema: taskEnvelopeSchema }, 400: errors.badRequest, 401: errors.unauthorized, 404: errors.notFound, 409: errors.ambiguous },
  },
  {
    method: 'POST',
    url: '/v1/tasks/:id/stop',
    operationId: 'stopTask',
    summary: 'Stop a task: a pending one ends as cancelled without running; a running one is sent its stop signal, then SIGKILL after its grace period (`graceMs`, default its spec\'s stopGracePeriod).',
    params: taskIdParamsSchema,
    querystring: stopQuerySchema,
    responses: {
      200: { description: 'The task after the stop.', schema: taskEnvelopeSchema },
      400: errors.badRequest,
      401: errors.unauthorized,
      404: errors.notFound,
      409: errors.ambiguous,
      503: errors.unavailable,
    },
  },
  {
    method: 'POST',
    url: '/v1/tasks/:id/pause',
    operationId: 'pauseTask',
    summary: 'Pause a running task (the engine\'s freezer). Its run time limit stands still while it is paused, also across an agent restart.',
    params: taskIdParamsSchema,
    responses: { 200: { description: 'The task, paused.', schema: taskEnvelopeSchema }, 400: errors.badRequest, 401: errors.unauthorized, 404: errors.notFound, 409: { description: 'The task is not running, or is paused already (BERTH_TASK_STATE); or several tasks start with this id prefix (BERTH_TASK_AMBIGUOUS).', schema: errorBodySchema } },
  },
  {
    method: 'POST',
    url: '/v1/tasks/:id/unpause',
    operationId: 'unpauseTask',
    summary: 'Resume a paused task; its run time limit goes on with what was left of it.',
    params: taskIdParamsSchema,
    responses: { 200: { description: 'The task, running again.', schema: taskEnvelopeSchema }, 400: errors.badRequest, 401: errors.unauthorized, 404: errors.notFound, 409: { description: 'The task is not running, or is not paused (BERTH_TASK_STATE); or several tasks start with this id prefix (BERTH_TASK_AMBIGUOUS).', schema: errorBodySchema } },
  },
  {
    method: 'POST',
    url: '/v1/tasks/:id/kill',
    operationId: 'killTask',
    summary: 'Send a signal to a running task\'s main process, as `docker kill -s`: no grace period; the task goes on unless the signal ends it.',
    params: taskIdParamsSchema,
    body: killBodySchema,
    responses: { 200: { description: 'The task after the signal was delivered.', schema: taskEnvelopeSchema }, 400: errors.badRequest, 401: errors.unauthorized, 404: errors.notFound, 409: { description: 'The task is not running (BERTH_TASK_STATE); or several tasks start with this id prefix (BERTH_TASK_AMBIGUOUS).', schema: errorBodySchema } },
  },
  {
    method: 'GET',
    url: '/v1/tasks/:id/wait',
    operationId: 'waitTask',
    summary: 'Wait for a task to end (a long poll): answers as soon as it has ended, or with `ended: false` once `timeout` passes; ask again to go on waiting.',
    params: taskIdParamsSchema,
    querystring: waitQuerySchema,
    responses: { 200: { description: 'The task, and whether it has ended.', schema: waitAnswerSchema }, 400: errors.badRequest, 401: errors.unauthorized, 404: errors.notFound, 409: errors.ambiguous },
  },
  {
    method: 'GET',
    url: '/v1/tasks/:id/exec',
    operationId: 'execTaskSocket',
    declaredBy: 'exec',
    summary:
      'Exec in a running task over a WebSocket (send `Connection: Upgrade`, `Upgrade: websocket`). Binary messages carry data: one byte naming the stream (0 stdin, 1 stdout, 2 stderr), then the bytes; stdout and stderr stay apart without a TTY. Text messages are JSON control: in, `{"type":"resize","rows":R,"cols":C}` and `{"type":"close-stdin"}`; out, `{"type":"started","execId"}`, then `{"type":"exit","exitCode":N}` (127 command not found, 126 not executable) or `{"type":"error","error":{code,message}}` as the last message, after which the agent closes the socket (1000 after the exit). Closing the socket before the exit kills the exec\'s process. The query is checked, and the task must be running, before the upgrade.',
    params: taskIdParamsSchema,
    querystring: execSocketQuerySchema,
    responses: {
      101: { description: 'Switching Protocols: the exec runs; the messages are as above.' },
      400: errors.badRequest,
      401: errors.unauthorized,
      404: errors.notFound,
      409: { description: 'The task is not running (BERTH_TASK_STATE); or several tasks start with this id prefix (BERTH_TASK_AMBIGUOUS).', schema: errorBodySchema },
    },
  },
  {
    method: 'POST',
    url: '/v1/tasks/:id/exec',
    operationId: 'execTask',
    declaredBy: 'exec',
    summary: `Run a command in a running task to its end, without a TTY, and answer with its exit code and output (each stream at most ${PLAIN_EXEC_OUTPUT_LIMIT_BYTES} bytes; \`stdoutTruncated\`/\`stderrTruncated\` when cut). \`stdin\` is given to the command, then closed. Past \`timeout\` the command is killed and the answer is 504 BERTH_EXEC_TIMEOUT; a client that goes away kills it too.`,
    params: taskIdParamsSchema,
    body: execBodySchema,
    responses: {
      200: { description: 'The command ended.', schema: execResultSchema },
      400: errors.badRequest,
      401: errors.unauthorized,
      404: errors.notFound,
      409: { description: 'The task is not running (BERTH_TASK_STATE); or several tasks start with this id prefix (BERTH_TASK_AMBIGUOUS).', schema: errorBodySchema },
      504: { description: 'The command did not end within `timeout` and was killed (BERTH_EXEC_TIMEOUT).', schema: errorBodySchema },
    },
  },
  {
    method: 'GET',
    url: '/v1/tasks/:id/attach',
    operationId: 'attachTask',
    summary:
      'Attach to a running task\'s live output (and its stdin, when its spec has `openStdin`), as `docker attach`: a WebSocket (GET with `Upgrade: websocket`). The agent sends binary messages, one byte naming the stream (1 stdout, 2 stderr) then the bytes, from the moment of attaching (with `logs=true`, what the task printed before first); the client sends binary messages with stream byte 0 for stdin, and `{"type":"close-stdin"}` when it has no more to write (the task\'s stdin stays open for other clients). When the task ends the agent sends `{"type":"exit","exitCode":N,"endState":{...}}` and closes with 1000. Several clients may attach at once; closing the socket detaches and never stops the task. Stdin for a task without open stdin is answered `{"type":"error","error":{"code":"BERTH_VALIDATION",...}}` and the socket closed (1008).',
    params: taskIdParamsSchema,
    querystring: attachQuerySchema,
    websocket: true,
    responses: {
      101: { description: 'Switching Protocols: the WebSocket is open; the frames are described above.' },
      400: { description: 'A bad query, or a request without `Upgrade: websocket` (this route speaks WebSocket only).', schema: errorBodySchema },
      401: errors.unauthorized,
      404: errors.notFound,
      409: { description: 'The task is not running (BERTH_TASK_STATE): pending or starting (nothing to attach to yet), paused (unpause it first), or ended (read its output with `GET /v1/tasks/{id}/logs`); or several tasks start with this id prefix (BERTH_TASK_AMBIGUOUS).', schema: errorBodySchema },
      503: errors.unavailable,
    },
  },
  {
    method: 'DELETE',
    url: '/v1/tasks/:id',
    operationId: 'removeTask',
    summary: 'Remove an ended task and its stored output.',
    params: taskIdParamsSchema,
    responses: {
      204: { description: 'Removed.' },
      400: errors.badRequest,
      401: errors.unauthorized,
      404: errors.notFound,
      409: { description: 'The task has not ended: stop it first (BERTH_TASK_STATE); or several tasks start with this id prefix (BERTH_TASK_AMBIGUOUS).', schema: errorBodySchema },
    },
  },
  {
    method: 'GET',
    url: '/v1/tasks/:id/logs',
    operationId: 'taskLogs',
    summary: 'A task\'s output, one JSON object per line; with `follow`, streamed until its output ends.',
    params: taskIdParamsSchema,
    querystring: logsQuerySchema,
    responses: { 400: errors.badRequest, 401: errors.unauthorized, 404: errors.notFound, 409: errors.ambiguous },
    stream: { status: 200, contentType: 'application/x-ndjson', description: 'One LogRecord per line, oldest first.', itemSchema: logRecordSchema },
  },
  {
    method: 'GET',
    url: '/v1/tasks/:id/stats',
    operationId: 'taskStats',
    summary:
      'A running task\'s resource use, one sample per line as `berth stats --json` prints it (CPU %, memory use and limit, PIDs, network and block I/O), about once a second until the task ends; `stream=false`: one sample (docker\'s --no-stream).',
    params: taskIdParamsSchema,
    querystring: statsQuerySchema,
    responses: {
      400: errors.badRequest,
      401: errors.unauthorized,
      404: errors.notFound,
      409: { description: 'The task is not running (BERTH_TASK_STATE); or several tasks start with this id prefix (BERTH_TASK_AMBIGUOUS).', schema: errorBodySchema },
      503: errors.unavailable,
    },
    stream: { status: 200, contentType: 'application/x-ndjson', description: 'One StatsRecord per line, as the engine samples the task\'s container.', itemSchema: statsRecordSchema },
  },
  {
    method: 'GET',
    url: '/v1/tasks/:id/artifacts',
    operationId: 'taskArtifacts',
    summary:
      'An ended task\'s artifacts (its spec\'s `collect` paths, collected at its end within `artifacts.maxBytes`) as one tar stream, each path\'s entries named as `docker cp` names them (from the path\'s base name); `path`: one collected path only. The task view\'s `artifacts` lists what was kept, missing and cut.',
    params: taskIdParamsSchema,
    querystring: {
      type: 'object',
      additionalProperties: false,
      properties: { path: { type: 'string', pattern: '^/', maxLength: 4096, description: 'Only this collected path (as the spec names it).' } },
    },
    responses: {
      400: errors.badRequest,
      401: errors.unauthorized,
      404: { description: 'No such task (BERTH_TASK_NOT_FOUND), or the task has no such collected path (BERTH_ENGINE_NOT_FOUND).', schema: errorBodySchema },
      409: { description: 'The task has not ended (BERTH_TASK_STATE); or several tasks start with this id prefix (BERTH_TASK_AMBIGUOUS).', schema: errorBodySchema },
    },
    stream: { status: 200, contentType: 'application/x-tar', description: 'A tar archive (empty when nothing was kept).' },
  },
  {
    method: 'GET',
    url: '/v1/tasks/:id/archive',
    operationId: 'taskArchive',
    summary: 'A tar stream of `path` in a running task\'s container, as `docker cp TASK:PATH -` reads it (the entries are named from the path\'s base name). An ended task\'s files are its artifacts.',
    params: taskIdParamsSchema,
    querystring: {
      type: 'object',
      additionalProperties: false,
      properties: { path: { type: 'string', pattern: '^/', maxLength: 4096, description: 'An absolute path in the container (required).' } },
    },
    responses: {
      400: errors.badRequest,
      401: errors.unauthorized,
      404: { description: 'No such task (BERTH_TASK_NOT_FOUND), or no such path in its container (BERTH_ENGINE_NOT_FOUND).', schema: errorBodySchema },
      409: { description: 'The task is not running (BERTH_TASK_STATE); or several tasks start with this id prefix (BERTH_TASK_AMBIGUOUS).', schema: errorBodySchema },
      503: errors.unavailable,
    },
    stream: { status: 200, contentType: 'application/x-tar', description: 'A tar archive.' },
  },
  {
    method: 'POST',
    url: '/v1/groups',
    operationId: 'submitGroup',
    summary:
      'Submit a task group: the body is the group document (as `berth group run -f` reads it: `name`, `tasks` each a task spec with `name` and `lifecycle`, `network`, `sharedDir`), validated as tasks are (issues name fields such as `tasks[1].resources.memory`; nothing is recorded on bad input). The group is admitted as one unit (its tasks\' summed resources), then its infrastructure container, shared volume and network are made and its tasks started by their lifecycle (prestart, then main and sidecar). Its tasks are tasks with ids `<group id>.<task name>`.',
    querystring: groupSubmitQuerySchema,
    body: { type: 'object', description: 'A group document.' },
    responses: {
      200: { description: 'A group with this id and the same document exists: it is returned as it is now.', schema: groupEnvelopeSchema },
      201: { description: 'The group as recorded.', schema: groupEnvelopeSchema },
      400: errors.badRequest,
      401: errors.unauthorized,
      409: { description: 'A group with this id and another document exists (BERTH_GROUP_EXISTS), or a task id of the group is taken (BERTH_TASK_EXISTS).', schema: errorBodySchema },
      503: errors.unavailable,
    },
  },
  {
    method: 'GET',
    url: '/v1/groups',
    operationId: 'listGroups',
    summary: 'List groups in submission order, with their states, tasks and published ports.',
    querystring: groupListQuerySchema,
    responses: { 200: { description: 'The groups.', schema: groupListSchema }, 400: errors.badRequest, 401: errors.unauthorized },
  },
  {
    method: 'GET',
    url: '/v1/groups/:id',
    operationId: 'getGroup',
    summary: 'One group: its state and end, its tasks (ids, states, ends), its infrastructure container, published ports, network and shared directory.',
    params: groupIdParamsSchema,
    responses: { 200: { description: 'The group.', schema: groupEnvelopeSchema }, 400: errors.badRequest, 401: errors.unauthorized, 404: { description: 'No group with that id (BERTH_GROUP_NOT_FOUND).', schema: errorBodySchema } },
  },
  {
    method: 'POST',
    url: '/v1/groups/:id/stop',
    operationId: 'stopGroup',
    summary: 'Stop a group: a pending one ends as cancelled without running; a running one has its tasks stopped (each with its grace period) and ends cancelled, unless it ended otherwise first. The answer does not wait for the end (GET the group, or follow `group.state` events).',
    params: groupIdParamsSchema,
    responses: {
      200: { description: 'The group after the stop was asked.', schema: groupEnvelopeSchema },
      400: errors.badRequest,
      401: errors.unauthorized,
      404: { description: 'No group with that id (BERTH_GROUP_NOT_FOUND).', schema: errorBodySchema },
      503: errors.unavailable,
    },
  },
  {
    method: 'DELETE',
    url: '/v1/groups/:id',
    operationId: 'removeGroup',
    summary: 'Remove an ended group, with its tasks\' records and output (`force=true`: stop it first and wait for its end). Answers once its engine objects are removed too.',
    params: groupIdParamsSchema,
    querystring: groupRemoveQuerySchema,
    responses: {
      204: { description: 'Removed.' },
      400: errors.badRequest,
      401: errors.unauthorized,
      404: { description: 'No group with that id (BERTH_GROUP_NOT_FOUND).', schema: errorBodySchema },
      409: { description: 'The group has not ended: stop it first, or force (BERTH_TASK_STATE).', schema: errorBodySchema },
      503: errors.unavailable,
    },
  },
  {
    method: 'GET',
    url: '/v1/groups/:id/tasks/:name/logs',
    operationId: 'groupTaskLogs',
    summary: 'The output of a group\'s task, by its name in the group: the same as `GET /v1/tasks/{id}/logs` with the task\'s id (`<group id>.<name>`), with the same options.',
    params: groupTaskParamsSchema,
    querystring: logsQuerySchema,
    responses: { 400: errors.badRequest, 401: errors.unauthorized, 404: { description: 'No group with that id (BERTH_GROUP_NOT_FOUND), or no task of that name in it (BERTH_TASK_NOT_FOUND).', schema: errorBodySchema } },
    stream: { status: 200, contentType: 'application/x-ndjson', description: 'One LogRecord per line, oldest first.', itemSchema: logRecordSchema },
  },
  {
    method: 'GET',
    url: '/v1/nodes',
    operationId: 'listNodes',
    summary:
      'The cluster\'s nodes by id (as `docker node ls`): address, labels, state (`down` with its reason), lease epoch, capacity, load, last heartbeat, and which one answered (`self`). An agent without `cluster` lists itself alone (mode `single`).',
    responses: {
      200: { description: 'The nodes.', schema: nodeListSchema },
      401: errors.unauthorized,
      503: { description: 'The cluster\'s PostgreSQL does not answer (BERTH_CLUSTER_UNAVAILABLE).', schema: errorBodySchema },
    },
  },
  {
    method: 'GET',
    url: '/v1/images',
    operationId: 'listImages',
    summary: 'The images the agent holds for its tasks, with their holders.',
    responses: { 200: { description: 'The images.', schema: imagesSchema }, 401: errors.unauthorized },
  },
  {
    method: 'GET',
    url: '/v1/events',
    operationId: 'events',
    summary: 'Server-sent events: task state and health changes, task restarts, pulls, image removals, reconciler removals, prunes, tasks removed by retention. A client that lost its stream resumes with `Last-Event-ID` (or `since`) and gets what it missed, within the event window.',
    querystring: eventsQuerySchema,
    responses: {
      400: errors.badRequest,
      401: errors.unauthorized,
      410: { description: 'BERTH_EVENTS_EXPIRED: events after the one asked for are no longer kept (the window `events.window` / `events.maxCount` was exceeded); read the current state and subscribe again without it.', schema: errorBodySchema },
    },
    stream: {
      status: 200,
      contentType: 'text/event-stream',
      description: 'Each event is `id: <id>`, `event: <type>` and `data: <AgentEvent as JSON>`; ids increase and are never reused. A resumed stream first replays the logged events after the asked one, then goes on live, each event once. A comment line every 15 s keeps the connection alive. The `Last-Event-ID` request header (an event id) wins over `since`.',
      itemSchema: agentEventSchema,
    },
  },
  {
    method: 'POST',
    url: '/v1/prune',
    operationId: 'prune',
    summary: 'Remove what berth created and nobody uses: stopped task containers whose task ended, unheld images berth pulled, empty berth networks, their volumes. One prune at a time.',
    body: pruneBodySchema,
    responses: {
      200: { description: 'What was removed (or would be, in a dry run), per kind, with the space reclaimed.', schema: pruneReportSchema },
      400: errors.badRequest,
      401: errors.unauthorized,
      409: { description: 'A prune is running already.', schema: errorBodySchema },
    },
  },
  {
    method: 'GET',
    url: '/healthz',
    operationId: 'health',
    summary: 'Whether the agent and its engine answer. Needs no token.',
    isPublic: true,
    responses: {
      200: { description: 'Both answer.', schema: healthSchema },
      503: {
        description: 'The engine does not answer one ping (never retried) within health.engineTimeout, or answers with an error (engineError says which), or the agent is still starting (recovering its tasks).',
        schema: healthSchema,
      },
    },
  },
  {
    method: 'GET',
    url: '/metrics',
    operationId: 'metrics',
    summary: 'Prometheus metrics.',
    responses: { 401: errors.unauthorized },
    stream: { status: 200, contentType: 'text/plain; version=0.0.4', description: 'The Prometheus text exposition format.' },
  },
  {
    method: 'GET',
    url: '/v1/openapi.json',
    operationId: 'openapi',
    summary: 'This document.',
    responses: { 200: { description: 'An OpenAPI 3.1 document.', schema: { type: 'object', additionalProperties: true } }, 401: errors.unauthorized },
  },
];
