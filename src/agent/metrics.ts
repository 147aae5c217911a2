import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { EventSource } from '../common/events.js';
import { ROLES } from '../common/labels.js';
import type { ImageCoordinatorEvents } from '../images/index.js';
import { TASK_STATES, type TaskRecord, type TaskState } from '../state/tasks.js';
import type { AgentEvent, AgentEvents } from './events.js';
import { EXPIRY_REASONS } from './retention.js';
import type { WarmPoolsPort } from './pool-port.js';
import type { ColdReason } from '../pools/types.js';
import type { ClusterMember } from './cluster-member.js';
import type { TaskForwarder } from './cluster-forward.js';

/** What the metrics read and listen to: a narrow view of the agent runtime. */
export interface MetricsSources {
  /** How many tasks are in each state, read at every scrape (`store.tasks.counts`). */
  taskCounts: () => Record<TaskState, number>;
  /** A task's record, for its timestamps when its state changes (`store.tasks.get`). */
  task: (taskId: string) => TaskRecord | undefined;
  events: Pick<AgentEvents, 'subscribe'>;
  /** The image coordinator's events (an `ImageCoordinator` is such a source). */
  images: EventSource<ImageCoordinatorEvents>;
  /** Subscribes to the codes of the errors the supervisor meets; returns the unsubscribe (`AgentRuntime.onError`). */
  supervisorErrors?: (listener: (code: string) => void) => () => void;
  /** The data directory's last measured condition (`logs.space.condition`), for `berth_data_dir_full`. */
  diskCondition?: () => 'ok' | 'full';
  /** The state database's size in bytes (`store.sizeBytes`), for `berth_state_database_bytes`. */
  stateDatabaseBytes?: () => number;
  /** How many tasks that have not ended are unhealthy (`store.tasks.countUnhealthy`), for `berth_tasks_unhealthy`. */
  unhealthyTasks?: () => number;
  /** Whether to add Node's process metrics (memory, CPU, event loop). Default true. */
  processMetrics?: boolean;
  /** The driver's warm pools (`driver.pools`): their containers by state at each scrape, their hits, misses and refills. */
  pools?: Pick<WarmPoolsPort, 'snapshot' | 'onEvent'>;
  /** Cluster membership (`cluster.postgres`): whether the node is a member, its epoch, its failed heartbeats. */
  cluster?: Pick<ClusterMember, 'isMember' | 'epoch' | 'onHeartbeatFailure'>;
  /** Reads through any node (cluster mode): forwards open now, and each forward's outcome. */
  forwarding?: Pick<TaskForwarder, 'openForwards' | 'onForward'>;
  /** Cluster placement: tasks claimed and fenced since the agent started, reports waiting in the outbox. */
  placement?: { readonly claimedTotal: number; readonly fencedTotal: number; readonly reportsPending: number; readonly placementWaits?: number };
}

/** The states berth_pool_containers counts. */
const POOL_CONTAINER_STATES = ['idle', 'frozen', 'in_use', 'starting'] as const;

/** Why a task started cold (berth_pool_misses_total's reason), every one present from the start. */
const COLD_REASONS: readonly ColdReason[] = ['no-pool', 'no-match', 'pool-empty', 'not-poolable', 'pool-failed'];

/** Bounds of the pool refill histogram, in seconds: a create and start of a container, up to a slow pull. */
const REFILL_BUCKETS_SECONDS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** The roles berth_reconciler_group_removals_total counts: a group's objects (a pool's containers are not a group's). */
const GROUP_ROLES = [ROLES.infra, ROLES.network, ROLES.sharedDir] as const;

const HEALTH_STATUSES = ['starting', 'healthy', 'unhealthy'] as const;

/** Bounds of the phase histogram, in seconds: from a cached image's start to an hour-long task. */
const PHASE_BUCKETS_SECONDS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

/** Bounds of the peak memory histogram, in bytes: 4 MiB to 16 GiB. */
const PEAK_MEMORY_BUCKETS_BYTES = [4, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384].map((mib) => mib * 1024 * 1024);

/** The codes `berth_engine_errors_total` counts: failures of the engine and of registries, not callers' mistakes. */
export function isEngineErrorCode(code: string): boolean {
  return code.startsWith('BERTH_ENGINE_') || code.startsWith('BERTH_IMAGE_');
}

/**
 * The agent's Prometheus metrics, in a registry of their own (one per server, so that two agents in
 * one process, as in tests, do not share counters):
 *
 * - `berth_tasks{state}`: tasks by state, read from the store at each scrape.
 * - `berth_task_phase_seconds{phase}`: `submit_to_start` (queued and starting: admission, pull,
 *   create) and `start_to_end` (running), from the records' timestamps as state changes arrive.
 * - `berth_image_pulls_total{outcome}`: pulls that ended (pulled, failed or cancelled), retries
 *   counted once.
 * - `berth_image_pull_shared_total`: acquires that joined a pull or inspect already under way.
 * - `berth_reconciler_removals_total`: dangling containers the reconciler removed (dry runs excluded).
 * - `berth_reconciler_orphan_removals_total`: containers of short-lived owners whose owner process
 *   was gone, that the reconciler removed (dry runs excluded).
 * - `berth_reconciler_group_removals_total{role}`: groups' objects the reconciler removed, by role:
 *   `infra` (infrastructure containers, counted in one of the two above as well), `network`,
 *   `shared-dir` (dry runs excluded).
 * - `berth_agent_failures_total{code}`: failures of the agent's own background work that the
 *   supervisor met and contained (a full data directory, a bug), by code.
 * - `berth_data_dir_full`: 1 while the data directory has less free space than the agent keeps free.
 * - `berth_tasks_expired_total{reason}`: ended tasks retention removed for good, by reason (`age`,
 *   `count`, `disk`).
 * - `berth_task_cpu_seconds_total`, `berth_task_peak_memory_bytes` (histogram),
 *   `berth_tasks_throttled_total`: from the usage recorded when a task ends (see usage.ts);
 *   `berth_task_usage_missing_total`: ended tasks that ran but have none.
 * - `berth_state_database_bytes`: the state database's size (free pages included), read at each scrape.
 * - `berth_task_health_changes_total{status}`: changes of tasks' health status (`task.health`
 *   events), by the new status (`starting`, `healthy`, `unhealthy`).
 * - `berth_tasks_unhealthy`: tasks that have not ended whose health check last said unhealthy.
 * - `berth_pool_containers{pool,state}`: each warm pool's containers by state (`idle`, `frozen`,
 *   `in_use`, `starting`), read from the pools at each scrape.
 * - `berth_pool_hits_total{pool}`: tasks that started warm, in a container of the pool.
 * - `berth_pool_misses_total{reason}`: tasks that started cold, by why (`no-pool`, `no-match`,
 *   `pool-empty`, `not-poolable`, `pool-failed`).
 * - `berth_pool_refill_seconds{pool}` (histogram): how long a pool took to make a container ready
 *   (create, start, holder up) after one was taken.
 * - `berth_engine_errors_total{code}`: engine and registry errors by code, as the API answered with
 *   them (`countError`), as the supervisor met them (a start, its pull included, a recovery, a
 *   container removal, reading output), as image removals failed with them, and as lost tasks
 *   recorded them. A failed pull is counted once per task that waited on it, by the supervisor.
 * - In cluster mode: `berth_cluster_member` (1 while the node's last heartbeat was answered, 0 while
 *   PostgreSQL is away or the node re-registers), `berth_cluster_node_epoch` (the epoch of its lease;
 *   0 before the first), `berth_cluster_heartbeat_failures_total` (registrations and heartbeats that
 *   failed: the database away, the lease lost).
 */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly #engineErrors: Counter<'code'>;
  readonly #agentFailures: Counter<'code'>;
  readonly #unsubscribe: Array<() => void> = [];

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    new Gauge({
      name: 'berth_tasks',
      help: 'Tasks by state.',
      labelNames: ['state'] as const,
      registers,
      collect() {
        const counts = sources.taskCounts();
        for (const state of TASK_STATES) this.set({ state }, counts[state]);
      },
    });
    const phases = new Histogram({
      name: 'berth_task_phase_seconds',
      help: 'Time tasks spent from submit to the start of their container (submit_to_start), and running (start_to_end).',
      labelNames: ['phase'] as const,
      buckets: PHASE_BUCKETS_SECONDS,
      registers,
    });
    const pulls = new Counter({ name: 'berth_image_pulls_total', help: 'Image pulls that ended, by outcome.', labelNames: ['outcome'] as const, registers });
    const shared = new Counter({ name: 'berth_image_pull_shared_total', help: 'Image acquires that shared a pull already under way.', registers });
    const removals = new Counter({ name: 'berth_reconciler_removals_total', help: 'Dangling containers the reconciler removed.', registers });
    const orphanRemovals = new Counter({
      name: 'berth_reconciler_orphan_removals_total',
      help: 'Containers of short-lived owners (berth run, library drivers) whose owner process was gone, that the reconciler removed.',
      registers,
    });
    const groupRemovals = new Counter({
      name: 'berth_reconciler_group_removals_total',
      help: 'Groups\' infrastructure containers (infra), networks (network) and shared volumes (shared-dir) that the reconciler removed, by role.',
      labelNames: ['role'] as const,
      registers,
    });
    // Every role from the start, at 0, so a rate over it is defined before the first removal.
    for (const role of GROUP_ROLES) groupRemovals.inc({ role }, 0);
    const expired = new Counter({ name: 'berth_tasks_expired_total', help: 'Ended tasks that retention removed for good (record and output), by reason: age, count or disk.', labelNames: ['reason'] as const, registers });
    // Every reason from the start, at 0, so a rate over it is defined before the first removal.
    for (const reason of EXPIRY_REASONS) expired.inc({ reason }, 0);
    const restarts = new Counter({ name: 'berth_task_restarts_total', help: 'Restarts of tasks by their restart policy, by the end of the attempt restarted (failed, oom, timed-out, lost).', labelNames: ['end'] as const, registers });
    const healthChanges = new Counter({ name: 'berth_task_health_changes_total', help: 'Changes of tasks\' health status, by the new status: starting, healthy or unhealthy.', labelNames: ['status'] as const, registers });
    for (const status of HEALTH_STATUSES) healthChanges.inc({ status }, 0);
    const unhealthyTasks = sources.unhealthyTasks;
    if (unhealthyTasks) {
      new Gauge({
        name: 'berth_tasks_unhealthy',
        help: 'Tasks that have not ended whose health check last said unhealthy.',
        registers,
        collect() {
          this.set(unhealthyTasks());
        },
      });
    }
    const pools = sources.pools;
    if (pools) {
      new Gauge({
        name: 'berth_pool_containers',
        help: 'Warm pools\' containers by state: idle (started, waiting for a task), frozen (idle and paused), in_use (serving a task), starting (being made).',
        labelNames: ['pool', 'state'] as const,
        registers,
        collect() {
          this.reset();
          for (const pool of pools.snapshot()) {
            const counts = { idle: pool.idle, frozen: pool.frozen, in_use: pool.inUse, starting: pool.starting };
            for (const state of POOL_CONTAINER_STATES) this.set({ pool: pool.name, state }, counts[state]);
          }
        },
      });
      const hits = new Counter({ name: 'berth_pool_hits_total', help: 'Tasks that started warm, as an exec in an idle container of the pool.', labelNames: ['pool'] as const, registers });
      const misses = new Counter({ name: 'berth_pool_misses_total', help: 'Tasks that started cold, by why: no-pool, no-match, pool-empty, not-poolable, pool-failed.', labelNames: ['reason'] as const, registers });
      const refills = new Histogram({ name: 'berth_pool_refill_seconds', help: 'How long a warm pool took to make a container ready after one was taken.', labelNames: ['pool'] as const, buckets: REFILL_BUCKETS_SECONDS, registers });
      // Every pool and reason from the start, at 0, so a rate over them is defined before the first task.
      for (const pool of pools.snapshot()) hits.inc({ pool: pool.name }, 0);
      for (const reason of COLD_REASONS) misses.inc({ reason }, 0);
      this.#unsubscribe.push(
        pools.onEvent((event) => {
          if (event.type === 'pool.hit') hits.inc({ pool: event.pool });
          else if (event.type === 'pool.miss') misses.inc({ reason: event.reason });
          else if (event.type === 'pool.refilled') refills.observe({ pool: event.pool }, event.latencyMs / 1000);
        }),
      );
    }
    this.#engineErrors = new Counter({ name: 'berth_engine_errors_total', help: 'Engine and registry errors, by code.', labelNames: ['code'] as const, registers });
    const cluster = sources.cluster;
    if (cluster) {
      new Gauge({
        name: 'berth_cluster_member',
        help: '1 while this node is a member of the cluster (its last heartbeat was answered), else 0.',
        registers,
        collect() {
          this.set(cluster.isMember ? 1 : 0);
        },
      });
      new Gauge({
        name: 'berth_cluster_node_epoch',
        help: 'The epoch of this node\'s cluster lease (its fencing token); 0 before its first registration.',
        registers,
        collect() {
          this.set(cluster.epoch ?? 0);
        },
      });
      const failures = new Counter({ name: 'berth_cluster_heartbeat_failures_total', help: 'Cluster registrations and heartbeats that failed (the database away, the lease lost).', registers });
      this.#unsubscribe.push(cluster.onHeartbeatFailure(() => failures.inc()));
    }
    const forwarding = sources.forwarding;
    if (forwarding) {
      new Gauge({
        name: 'berth_cluster_forwards_open',
        help: 'Requests this node is forwarding to the node that runs their task right now (followed logs, streamed stats and exec sessions count until they end).',
        registers,
        collect() {
          this.set(forwarding.openForwards);
        },
      });
      const forwarded = new Counter({
        name: 'berth_cluster_forwarded_requests_total',
        help: 'Requests forwarded to the node that runs their task, by kind (http, websocket) and outcome (forwarded, unreachable, refused).',
        labelNames: ['kind', 'outcome'] as const,
        registers,
      });
      this.#unsubscribe.push(forwarding.onForward((kind, outcome) => forwarded.inc({ kind, outcome })));
    }
    const placement = sources.placement;
    if (placement) {
      new Counter({
        name: 'berth_cluster_claimed_total',
        help: 'Tasks this node claimed from the cluster queue.',
        registers,
        collect() {
          this.reset();
          this.inc(placement.claimedTotal);
        },
      });
      new Counter({
        name: 'berth_cluster_fenced_total',
        help: 'Tasks fenced on this node: the cluster no longer gave them to it (their container was killed and removed).',
        registers,
        collect() {
          this.reset();
          this.inc(placement.fencedTotal);
        },
      });
      new Gauge({
        name: 'berth_cluster_reports_pending',
        help: 'Cluster reports waiting in this node\'s outbox (PostgreSQL away, or not sent yet).',
        registers,
        collect() {
          this.set(placement.reportsPending);
        },
      });
      new Gauge({
        name: 'berth_cluster_placement_waits',
        help: 'Requests on this node waiting for their task to be placed (a request for a task queued a moment ago, a submit that publishes ports).',
        registers,
        collect() {
          this.set(placement.placementWaits ?? 0);
        },
      });
    }
    if (sources.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    const cpuSeconds = new Counter({ name: 'berth_task_cpu_seconds_total', help: 'CPU time (user + system) of ended tasks, as recorded in their usage.', registers });
    const peakMemory = new Histogram({ name: 'berth_task_peak_memory_bytes', help: 'Peak memory use of ended tasks, as recorded in their usage.', buckets: PEAK_MEMORY_BUCKETS_BYTES, registers });
    const throttled = new Counter({ name: 'berth_tasks_throttled_total', help: 'Ended tasks that the CPU quota held back at least once, or that ran out of memory.', registers });
    const usageMissing = new Counter({ name: 'berth_task_usage_missing_total', help: 'Ended tasks that ran but have no usage recorded (see usageMissing in their view).', registers });

    const onEvent = (event: AgentEvent): void => {
      if (event.type === 'container.reconciled') {
        if (!event.dryRun) (event.reason === 'orphaned' ? orphanRemovals : removals).inc();
        if (!event.dryRun && event.role === ROLES.infra) groupRemovals.inc({ role: ROLES.infra });
        return;
      }
      if (event.type === 'network.reconciled' || event.type === 'volume.reconciled') {
        if (!event.dryRun) groupRemovals.inc({ role: event.type === 'network.reconciled' ? ROLES.network : ROLES.sharedDir });
        return;
      }
      if (event.type === 'task.restart') {
        restarts.inc({ end: event.previousEnd.kind });
        return;
      }
      if (event.type === 'task.expired') {
        expired.inc({ reason: event.reason });
        return;
      }
      if (event.type === 'task.health') {
        healthChanges.inc({ status: event.status });
        return;
      }
      if (event.type !== 'task.state') return;
      if (event.state !== 'running' && event.state !== 'exited' && event.state !== 'lost') return;
      const record = sources.task(event.taskId);
      if (event.state !== 'running' && record?.usage) {
        cpuSeconds.inc(record.usage.cpuTimeMs / 1000);
        peakMemory.observe(record.usage.peakMemoryBytes);
        if (record.usage.throttled) throttled.inc();
      } else if (event.state !== 'running' && record?.usageMissing !== undefined) {
        usageMissing.inc();
      }
      if (!record?.startedAtMs) return;
      // A restarted task's later attempts are not its start (restarts are berth_task_restarts_total).
      if (event.state === 'running') {
        if (record.attempts === undefined) phases.observe({ phase: 'submit_to_start' }, (record.startedAtMs - record.submittedAtMs) / 1000);
      }
      else if (record.finishedAtMs) phases.observe({ phase: 'start_to_end' }, (record.finishedAtMs - record.startedAtMs) / 1000);
      const lostError = record.endState?.kind === 'lost' ? record.endState.error : undefined;
      if (event.state === 'lost' && lostError) this.countError(lostError.code);
    };
    this.#unsubscribe.push(sources.events.subscribe(onEvent));

    this.#agentFailures = new Counter({ name: 'berth_agent_failures_total', help: 'Failures of the agent\'s own background work, contained to their task, by code.', labelNames: ['code'] as const, registers });
    const diskCondition = sources.diskCondition;
    if (diskCondition) {
      new Gauge({
        name: 'berth_data_dir_full',
        help: '1 while the data directory has less free space than the agent keeps free (output is cut).',
        registers,
        collect() {
          this.set(diskCondition() === 'full' ? 1 : 0);
        },
      });
    }
    const databaseBytes = sources.stateDatabaseBytes;
    if (databaseBytes) {
      new Gauge({
        name: 'berth_state_database_bytes',
        help: 'Size of the agent\'s state database, free pages included (retention gives them back).',
        registers,
        collect() {
          this.set(databaseBytes());
        },
      });
    }
    if (sources.supervisorErrors) {
      this.#unsubscribe.push(
        sources.supervisorErrors((code) => {
          if (isEngineErrorCode(code)) this.countError(code);
          else if (code === 'BERTH_DISK_FULL' || code === 'BERTH_INTERNAL') this.#agentFailures.inc({ code });
        }),
      );
    }

    const onPullFinished = (e: { outcome: string }): void => {
      pulls.inc({ outcome: e.outcome });
    };
    const onPullShared = (): void => shared.inc();
    const onRemovalFailed = (e: { error: { code: string } }): void => this.countError(e.error.code);
    this.#unsubscribe.push(
      sources.images.on('pull-finished', onPullFinished),
      sources.images.on('pull-shared', onPullShared),
      sources.images.on('image-removal-failed', onRemovalFailed),
    );
  }

  /** Counts an error by its code, when it is an engine or registry error (see `isEngineErrorCode`). */
  countError(code: string): void {
    if (isEngineErrorCode(code)) this.#engineErrors.inc({ code });
  }

  /** The Prometheus text exposition of every metric. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Stops listening to the agent's events. */
  close(): void {
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
  }
}
