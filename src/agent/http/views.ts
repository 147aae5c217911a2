import type { PruneReport } from '../../prune/index.js';
import type { BerthError } from '../../common/errors.js';
import { ValidationError } from '../../common/errors.js';
import type { ImageSnapshot } from '../../images/index.js';
import type { NodeListing } from '../cluster-member.js';
import type { ClusterTask } from '../../cluster/index.js';
import { separateRegistrySecrets } from '../../spec/registry-auth.js';
import { END_KINDS, type EndKind } from '../../tasks/end-state.js';
import type { StoredEndState, StoredTaskSpec, TaskAttempt, TaskRecord, TaskState, TaskUsage } from '../../state/tasks.js';
import type { ArtifactsRecord } from '../../tasks/files-out.js';
import type { PublishedPort } from '../../engine/types.js';
import type { GroupRecord, GroupState } from '../../state/groups.js';
import type { GroupEnd } from '../../groups/lifecycle.js';
import { groupObjectNames } from '../../groups/infra-plan.js';
import { taskStartView, type TaskStartView } from '../events.js';
import { DEFAULT_SHARED_DIR, type ResolvedGroupSpec } from '../../spec/group.js';

/**
 * What the API shows and the client returns (the view types), and the functions that turn the
 * agent's records into them. The client imports only the types (`import type`), so it does not
 * load this module, nor the server's code behind it.
 */

/** A task as the API shows it: the store's record with ISO 8601 times. */
export interface TaskView {
  id: string;
  state: TaskState;
  spec: StoredTaskSpec;
  containerId?: string;
  endState?: StoredEndState;
  exitCode?: number;
  submittedAt: string;
  admittedAt?: string;
  startedAt?: string;
  finishedAt?: string;
  /** Why the task's output was cut (the data directory was full); absent while it is whole. */
  outputTruncated?: string;
  /** When the current pause began; absent while the task is not paused. */
  pausedAt?: string;
  /** How long the task has been paused in all, the current pause included (its run time limit does not count it). */
  pausedForMs?: number;
  /** How many times its restart policy restarted it (present when its spec has a restart policy). */
  restarts?: number;
  /** Its attempts, oldest first, the current (or last) one included (present when its spec has a restart policy). */
  attempts?: AttemptView[];
  /** While it waits for its next attempt (state `starting`): when that attempt is due. */
  restartAt?: string;
  /** Its health as the engine last reported it (kept after its end); absent for a task without a health check. */
  health?: TaskHealthView;
  /** What the task used (CPU time, peak memory, throttling), recorded at its end; absent while it runs. */
  usage?: TaskUsage;
  /** Why no usage was recorded for a task that ran. */
  usageMissing?: string;
  /** What was kept of its spec's `collect` paths at its end (GET /v1/tasks/:id/artifacts); absent before, and for a task that collects nothing. */
  artifacts?: ArtifactsRecord;
  /** How its current (or last) attempt started: warm (an exec in a pool's container) or cold, and why; absent before it started. */
  start?: TaskStartView;
  /** The group the task belongs to (GET /v1/groups/{groupId}); absent for a task of its own. */
  group?: { groupId: string; taskName: string; lifecycle: 'prestart' | 'sidecar' | 'main' };
  /**
   * The host ports published for its spec's `ports`, as the agent allocated them at submit (a
   * dynamic port shows the port picked); held until it has ended and its container is gone. Absent
   * for a task that publishes nothing.
   */
  ports?: PortView[];
  /** The named networks it joins, with its aliases there; absent when it joins none. */
  networks?: Array<{ name: string; aliases: string[] }>;
  /**
   * Cluster mode: the node that runs the task (or ran it last); null while it is queued. Absent on an
   * agent without `cluster` (every task is its own).
   */
  node?: string | null;
}

/** A published port, as `docker port` shows it: `hostIp:host->container/protocol`. */
export interface PortView {
  container: number;
  protocol: 'tcp' | 'udp';
  hostIp: string;
  host: number;
}

/** One attempt of a task under a restart policy: one container. */
export interface AttemptView {
  /** 1 for the first container, 2 for the first restart's, … */
  attempt: number;
  containerId?: string;
  startedAt?: string;
  /** Absent while the attempt runs. */
  finishedAt?: string;
  endState?: StoredEndState;
  exitCode?: number;
  /** The end state's reason (a lost attempt, a failed start), when it has one. */
  reason?: string;
}

/** A task's health: the engine's status, the consecutive failed checks, and the last checks (oldest first, at most 5). */
export interface TaskHealthView {
  status: 'starting' | 'healthy' | 'unhealthy';
  failingStreak: number;
  log: Array<{ start?: string; end?: string; exitCode: number; output: string }>;
}

/** An image the agent holds for its tasks. */
export interface ImageView {
  imageId: string;
  refs: string[];
  /** Ids of the tasks that hold it. */
  holders: string[];
  /** When it will be removed (ISO 8601), if nobody holds it. */
  removalDueAt?: string;
}

export interface HealthView {
  /** `starting` until the engine answered once and the tasks of an earlier run are recovered. */
  agent: 'ok' | 'starting';
  /** `unavailable`: the engine did not answer one ping within `health.engineTimeout`, or answered with an error. */
  engine: 'ok' | 'unavailable';
  /** Why the engine is unavailable: BERTH_ENGINE_TIMEOUT (it does not answer: wedged, paused), BERTH_ENGINE_UNAVAILABLE (refused) … */
  engineError?: { code: string; message: string };
  /** Tasks whose start waits for the engine to answer again (absent when none). */
  tasksWaitingForEngine?: number;
  /** Present when the data directory is (nearly) full: output is being cut and state writes wait. */
  disk?: 'full';
}

/** The task states of the cluster index as the API shows them: queued and claimed read `pending`. */
const INDEX_STATES: Readonly<Record<ClusterTask['state'], TaskState>> = Object.freeze({ queued: 'pending', claimed: 'pending', running: 'running', exited: 'exited', lost: 'lost' });

/**
 * A task of the cluster index as the API shows it (a task no local record here describes): its spec
 * as submitted (registry secrets redacted), its cluster state, its node, its end as the node reported
 * it. The node that runs it shows it in full (GET /v1/tasks/:id is forwarded there while it is up).
 */
export function toIndexTaskView(task: ClusterTask): TaskView {
  const spec = (typeof task.spec === 'object' && task.spec !== null ? separateRegistrySecrets(task.spec).redacted : {}) as StoredTaskSpec;
  const view: TaskView = { id: task.id, state: INDEX_STATES[task.state], spec, submittedAt: task.submittedAt.toISOString(), node: task.nodeId ?? null };
  if (task.containerId !== undefined) view.containerId = task.containerId;
  if (task.startedAt !== undefined) view.startedAt = task.startedAt.toISOString();
  if (task.endedAt !== undefined) view.finishedAt = task.endedAt.toISOString();
  if (task.state === 'exited') {
    const exitCode = task.exitCode ?? undefined;
    const reported = (END_KINDS as readonly string[]).includes(task.endReason ?? '') ? (task.endReason as EndKind) : exitCode === 0 ? 'success' : 'failed';
    view.endState = { kind: reported, ...(exitCode !== undefined ? { exitCode } : {}) } as StoredEndState;
    if (exitCode !== undefined) view.exitCode = exitCode;
  } else if (task.state === 'lost') {
    view.endState = { kind: 'lost', reason: task.endReason ?? 'its node was lost' };
  }
  return view;
}

const iso = (ms: number | undefined): string | undefined => (ms === undefined ? undefined : new Date(ms).toISOString());

export function toTaskView(record: TaskRecord, nowMs: number = Date.now()): TaskView {
  const view: TaskView = { id: record.id, state: record.state, spec: record.spec, submittedAt: iso(record.submittedAtMs)! };
  if (record.containerId !== undefined) view.containerId = record.containerId;
  if (record.endState !== undefined) view.endState = record.endState;
  if (record.exitCode !== undefined) view.exitCode = record.exitCode;
  if (record.admittedAtMs !== undefined) view.admittedAt = iso(record.admittedAtMs);
  if (record.startedAtMs !== undefined) view.startedAt = iso(record.startedAtMs);
  if (record.finishedAtMs !== undefined) view.finishedAt = iso(record.finishedAtMs);
  if (record.outputTruncated !== undefined) view.outputTruncated = record.outputTruncated;
  if (record.pausedAtMs !== undefined) view.pausedAt = iso(record.pausedAtMs);
  const pausedForMs = record.pausedForMs + (record.pausedAtMs === undefined ? 0 : Math.max(0, nowMs - record.pausedAtMs));
  if (pausedForMs > 0) view.pausedForMs = pausedForMs;
  if (record.spec.restart !== undefined) {
    view.restarts = record.attempts?.length ?? 0;
    view.attempts = attemptViews(record);
  }
  if (record.restartAtMs !== undefined && record.state === 'starting') view.restartAt = iso(record.restartAtMs);
  if (record.health !== undefined) {
    view.health = {
      status: record.health.status,
      failingStreak: record.health.failingStreak,
      log: record.health.log.map((probe) => ({
        ...(probe.startedAtMs !== undefined ? { start: iso(probe.startedAtMs)! } : {}),
        ...(probe.endedAtMs !== undefined ? { end: iso(probe.endedAtMs)! } : {}),
        exitCode: probe.exitCode,
        output: probe.output,
      })),
    };
  }
  if (record.usage !== undefined) view.usage = { ...record.usage };
  if (record.usageMissing !== undefined) view.usageMissing = record.usageMissing;
  if (record.artifacts !== undefined) view.artifacts = structuredClone(record.artifacts) as ArtifactsRecord;
  if (record.group !== undefined) view.group = { ...record.group };
  if (record.start !== undefined) view.start = taskStartView(record.start);
  const ports = portViews(record.spec);
  if (ports.length > 0) view.ports = ports;
  const networks = (record.spec as { networks?: unknown }).networks;
  if (Array.isArray(networks) && networks.length > 0) {
    view.networks = networks.map((n: { name?: unknown; aliases?: unknown }) => ({ name: String(n.name), aliases: Array.isArray(n.aliases) ? n.aliases.map(String) : [] }));
  }
  return view;
}

/**
 * The published ports of a stored spec: the agent fills each port's host port and address in at
 * submit, so the spec is where they are kept. A port without them (a record older than the
 * allocator) is left out: nothing is known of it.
 */
export function portViews(spec: StoredTaskSpec): PortView[] {
  const ports = (spec as { ports?: unknown }).ports;
  if (!Array.isArray(ports)) return [];
  return ports.flatMap((raw: { container?: unknown; protocol?: unknown; hostIp?: unknown; host?: unknown }) =>
    typeof raw.container === 'number' && typeof raw.host === 'number' && typeof raw.hostIp === 'string'
      ? [{ container: raw.container, protocol: raw.protocol === 'udp' ? ('udp' as const) : ('tcp' as const), hostIp: raw.hostIp, host: raw.host }]
      : [],
  );
}


function attemptView(attempt: Omit<TaskAttempt, 'finishedAtMs' | 'endState'> & { finishedAtMs?: number; endState?: StoredEndState }): AttemptView {
  const view: AttemptView = { attempt: attempt.attempt };
  if (attempt.containerId !== undefined) view.containerId = attempt.containerId;
  if (attempt.startedAtMs !== undefined) view.startedAt = iso(attempt.startedAtMs);
  if (attempt.finishedAtMs !== undefined) view.finishedAt = iso(attempt.finishedAtMs);
  if (attempt.endState !== undefined) view.endState = attempt.endState;
  if (attempt.exitCode !== undefined) view.exitCode = attempt.exitCode;
  const reason = attempt.endState && 'reason' in attempt.endState ? attempt.endState.reason : undefined;
  if (reason !== undefined) view.reason = reason;
  return view;
}

/**
 * The attempts the store lists (those restarted), then the current one: the record's own container,
 * start and end. A task waiting for its next attempt has no current one yet (nor one that a stop
 * during the wait cancelled, nor one cancelled in the queue: no container was made for them).
 */
function attemptViews(record: TaskRecord): AttemptView[] {
  const views = (record.attempts ?? []).map(attemptView);
  const current = (record.attempts?.length ?? 0) + 1;
  // A container was made for it, or it ended otherwise than cancelled before one was (a start that failed).
  const hasCurrent = record.containerId !== undefined || (record.endState !== undefined && record.endState.kind !== 'cancelled');
  if (hasCurrent) {
    views.push(
      attemptView({
        attempt: current,
        ...(record.containerId !== undefined ? { containerId: record.containerId } : {}),
        ...(record.startedAtMs !== undefined && record.containerId !== undefined ? { startedAtMs: record.startedAtMs } : {}),
        ...(record.endState !== undefined && record.finishedAtMs !== undefined ? { finishedAtMs: record.finishedAtMs } : {}),
        ...(record.endState !== undefined ? { endState: record.endState } : {}),
        ...(record.exitCode !== undefined ? { exitCode: record.exitCode } : {}),
      }),
    );
  }
  return views;
}

/** A node's memory, CPU and task slots. */
export interface NodeBudgetView {
  memoryBytes: number;
  cpuMilli: number;
  tasks: number;
}

/** One node of `GET /v1/nodes`. */
export interface NodeView {
  id: string;
  /** Where other nodes reach its API (`unix://…` for a single agent without a TCP listener). */
  address: string;
  /** Matched by task constraints `node.<label>`. */
  labels: Record<string, string>;
  /** `ready` while its lease is live; `down` once it ran out or the node left. */
  state: 'ready' | 'down';
  /** Why it is down: `left` (a graceful shutdown), or its lost lease. */
  downReason?: string;
  /** The lease epoch (the fencing token); 0 for a single agent. */
  epoch: number;
  capacity: NodeBudgetView;
  /** What its last heartbeat said it runs. */
  load: NodeBudgetView;
  /** Its last heartbeat (ISO 8601). */
  lastHeartbeat: string;
  /** When its lease runs out (ISO 8601). */
  leaseExpiresAt: string;
  /** Whether this is the node that answered. */
  self: boolean;
}

/** `GET /v1/nodes`. */
export interface NodeListView {
  /** `cluster` with `cluster.postgres`; `single`: the agent alone. */
  mode: 'single' | 'cluster';
  nodes: NodeView[];
}

/** The nodes as the API shows them, the answering one marked `self`. */
export function toNodeListView(listing: NodeListing): NodeListView {
  return {
    mode: listing.mode,
    nodes: listing.nodes.map((node) => ({
      id: node.nodeId,
      address: node.address,
      labels: { ...node.labels },
      state: node.state,
      ...(node.downReason !== undefined && node.state === 'down' ? { downReason: node.downReason } : {}),
      epoch: node.epoch,
      capacity: { ...node.capacity },
      load: { ...node.load },
      lastHeartbeat: node.heartbeatAt.toISOString(),
      leaseExpiresAt: node.leaseExpiresAt.toISOString(),
      self: node.nodeId === listing.self,
    })),
  };
}

export function toImageView(image: ImageSnapshot): ImageView {
  return {
    imageId: image.imageId,
    refs: [...image.refs],
    holders: [...image.holders],
    ...(image.removalDueAt ? { removalDueAt: image.removalDueAt.toISOString() } : {}),
  };
}

const RFC3339 = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$/;

/**
 * Whether the date and time of an RFC 3339 text name a real moment: Date.parse rolls 2024-02-30
 * over to March 1st rather than refusing it. A leap second (:60) is not one the engine writes.
 */
function isCalendarTime(dateTime: string, offset: string): boolean {
  const [year, month, day, hour, minute, second] = dateTime.split(/[-T:]/).map(Number) as [number, number, number, number, number, number];
  // setUTCFullYear, not Date.UTC, which reads years 0 to 99 as 1900 to 1999.
  const daysInMonth = new Date(new Date(0).setUTCFullYear(year, month, 0)).getUTCDate();
  const offsetOk = /^[Zz]$/.test(offset) || (Number(offset.slice(1, 3)) <= 23 && Number(offset.slice(4, 6)) <= 59);
  return month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth && hour <= 23 && minute <= 59 && second <= 59 && offsetOk;
}

/**
 * An RFC 3339 time with any offset, as the engine writes its log timestamps: in UTC, with the
 * fraction kept to the nanosecond (Date would round it to milliseconds), so that it compares
 * correctly with `compareLogTimestamps`.
 */
export function toUtcLogTimestamp(text: string, field = 'since'): string {
  const match = RFC3339.exec(text);
  const ms = match && isCalendarTime(match[1]!, match[3]!) ? Date.parse(`${match[1]}${match[3]!.toUpperCase()}`) : Number.NaN;
  if (!match || Number.isNaN(ms)) {
    throw new ValidationError([{ field, rule: 'must be an RFC 3339 time such as 2024-05-01T10:00:00.123456789Z' }]);
  }
  const seconds = new Date(ms).toISOString().slice(0, 19);
  return match[2] === undefined ? `${seconds}Z` : `${seconds}.${match[2]}Z`;
}

/** A prune report as the API sends it: failures as their error JSON, times as ISO strings. */
export function toPruneView(report: PruneReport): PruneView {
  const kinds = [report.containers, report.networks, report.volumes, report.images];
  return {
    containers: { ids: report.containers.ids, reclaimedBytes: report.containers.reclaimedBytes },
    networks: { ids: report.networks.ids, names: report.networks.names, reclaimedBytes: report.networks.reclaimedBytes },
    volumes: { ids: report.volumes.ids, names: report.volumes.names, reclaimedBytes: report.volumes.reclaimedBytes },
    images: { ids: report.images.ids, reclaimedBytes: report.images.reclaimedBytes, untagged: report.images.untagged },
    kept: report.kept.map((kept) => ({ ...kept })),
    failed: report.failed.map((failure) => ({ kind: failure.kind, id: failure.id, error: failure.error.toJSON() })),
    dryRun: report.dryRun,
    cancelled: report.cancelled,
    filters: report.filters,
    reclaimedBytes: kinds.reduce((sum, kind) => sum + kind.reclaimedBytes, 0),
  };
}

export interface PruneView {
  containers: { ids: string[]; reclaimedBytes: number };
  /** `names`: the networks' names, in the order of `ids`. */
  networks: { ids: string[]; names: string[]; reclaimedBytes: number };
  /** `names`: the volumes' names (their ids too). */
  volumes: { ids: string[]; names: string[]; reclaimedBytes: number };
  images: { ids: string[]; reclaimedBytes: number; untagged: string[] };
  kept: Array<Record<string, unknown>>;
  failed: Array<{ kind: string; id: string; error: ReturnType<BerthError['toJSON']> }>;
  dryRun: boolean;
  cancelled: boolean;
  filters: string[];
  reclaimedBytes: number;
}

/** A group's task as the group view lists it (the task itself: GET /v1/tasks/{taskId}). */
export interface GroupTaskView {
  name: string;
  lifecycle: 'prestart' | 'sidecar' | 'main';
  taskId: string;
  state: TaskState;
  containerId?: string;
  endState?: StoredEndState;
  exitCode?: number;
}

/** A group as the API shows it. */
export interface GroupView {
  id: string;
  name: string;
  state: GroupState;
  /** The group document as submitted (its tasks with the agent's defaults). */
  spec: Readonly<Record<string, unknown>>;
  /** Present (true) once a stop was asked. */
  stopRequested?: boolean;
  /** How it ended, and the task that decided it; once `ended`. */
  endState?: GroupEnd;
  tasks: GroupTaskView[];
  /** The container that owns the group's network namespace, once made. */
  infraContainerId?: string;
  /** The host ports published for the group (on its infrastructure container), as testcontainers' getMappedPort gives them. */
  ports: PublishedPort[];
  network: { mode: 'bridge' | 'none' | 'private'; name?: string };
  /** The group-shared directory: where it is mounted in every task, and its volume. */
  sharedDir?: { path: string; volume: string };
  createdAt: string;
  startedAt?: string;
  endedAt?: string;
  /** When its engine objects were removed and its share released, after its end. */
  cleanedAt?: string;
}

export function toGroupView(group: GroupRecord, tasks: readonly TaskRecord[], ownerId: string): GroupView {
  const spec = group.spec as { network?: { mode?: 'bridge' | 'none' | 'private' }; sharedDir?: string | false };
  const mode = spec.network?.mode ?? 'bridge';
  const sharedPath = spec.sharedDir === false ? undefined : (spec.sharedDir ?? DEFAULT_SHARED_DIR);
  const names = groupObjectNames({ network: { mode }, ...(sharedPath === undefined ? {} : { sharedDir: sharedPath }) } as Pick<ResolvedGroupSpec, 'network' | 'sharedDir'>, { groupId: group.id, ownerId });
  const view: GroupView = {
    id: group.id,
    name: group.name,
    state: group.state,
    spec: group.spec,
    tasks: tasks.map((task) => ({
      name: task.group?.taskName ?? task.id,
      lifecycle: task.group?.lifecycle ?? 'main',
      taskId: task.id,
      state: task.state,
      ...(task.containerId !== undefined ? { containerId: task.containerId } : {}),
      ...(task.endState !== undefined ? { endState: task.endState } : {}),
      ...(task.exitCode !== undefined ? { exitCode: task.exitCode } : {}),
    })),
    ports: [...(group.ports ?? [])],
    network: { mode, ...(names.network !== undefined ? { name: names.network } : {}) },
    createdAt: iso(group.createdAtMs)!,
  };
  if (group.stopRequested) view.stopRequested = true;
  if (group.endState !== undefined) view.endState = group.endState;
  if (group.infraContainerId !== undefined) view.infraContainerId = group.infraContainerId;
  if (sharedPath !== undefined && names.volume !== undefined) view.sharedDir = { path: sharedPath, volume: names.volume };
  if (group.startedAtMs !== undefined) view.startedAt = iso(group.startedAtMs);
  if (group.endedAtMs !== undefined) view.endedAt = iso(group.endedAtMs);
  if (group.cleanedAtMs !== undefined) view.cleanedAt = iso(group.cleanedAtMs);
  return view;
}
