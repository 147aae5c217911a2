import { setMaxListeners } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import { asBerthError, BerthError, codeOf, isBerthError, messageOf, stackOf, ValidationError, type ErrorCode } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { commandFailureOf } from '../engine/classify.js';
import type { Engine } from '../engine/engine.js';
import { resolveTaskSpec, type SpecPolicy, type TaskSpec } from '../spec/schema.js';
import { withSeccompProfile } from '../tasks/seccomp-profiles.js';
import type { Store } from '../state/store.js';
import { endTransition, hasEnded, type StoredTaskSpec, type TaskRecord, type TaskState, type TaskTransition } from '../state/tasks.js';
import type { TaskDriver } from '../tasks/driver.js';
import type { EndState } from '../tasks/end-state.js';
import type { TaskHandle } from '../tasks/handle.js';
import { taskStartView, type AgentEvents } from './events.js';
import { resolveDemand, type AdmissionBudget, type AdmissionChange, type AdmissionController, type AdmissionEntry, type ResourceDemand } from './admission.js';
import { fromLogCursor, resumePosition, type OutputPosition } from './output-cursor.js';
import { pumpOutput } from './output-pump.js';
import { checkAgentSpec } from './spec-defaults.js';
import { pumpStreams } from './stream-pump.js';
import type { StartPath } from '../pools/types.js';
import type { TaskStart } from '../state/tasks.js';
import type { WarmDriverPort } from './pool-port.js';
import type { TaskLogStore } from './task-logs.js';
import { canonicalJson } from '../common/canonical-json.js';
import { isEngineOutage, isTransientStartError, StartOutage } from './start-outage.js';
import { currentAttempt, planRestart, RestartWaits, startAttemptKey } from './restart.js';
import { HealthWatch } from './health-watch.js';
import type { UsageSampler } from './usage.js';
import { restoreRegistrySecrets, separateRegistrySecrets } from '../spec/registry-auth.js';
import { sameSecret, type SecretSealer } from './secret-box.js';
import type { ArtifactStore } from './artifacts.js';
import type { GroupMembership } from '../spec/translate.js';
import { TASK_PORT_OWNER, type PortAllocator } from './ports.js';
import type { PortSpec } from '../spec/schema.js';

/** Where a task's output resumes, and whether it was cut (then it is not read again). */
interface OutputStart {
  position: OutputPosition;
  isCut: boolean;
}

/**
 * Where a supervised task's output comes from: the engine's log from a position (a cold task), the
 * handle's streams (a warm task: an exec's output is in no log), or nowhere (a warm task recovered
 * after a restart: its exec's output could not be followed while the agent was down).
 */
type OutputSource = { kind: 'engine-log'; start: OutputStart } | { kind: 'streams' } | { kind: 'none' };

/** How a task started, as the store keeps it, from the driver's StartPath. */
export function taskStartOf(path: StartPath): TaskStart {
  return path.kind === 'warm' ? { path: 'warm', pool: path.pool, execId: path.execId } : { path: 'cold', reason: path.reason };
}


export interface SupervisorDeps {
  store: Store;
  driver: TaskDriver;
  /** Output is read from the engine's log; health from its inspect data and events (see HealthWatch). */
  engine: Pick<Engine, 'logEntries' | 'inspectContainer' | 'openContainerEvents'>;
  logs: TaskLogStore;
  admission: AdmissionController;
  /** The policy in force now: specs are checked against it at submit. */
  policy: () => SpecPolicy;
  /** What a task that sets no limits draws from the budget (the configured defaults, read at submit). */
  defaultDemand: () => ResourceDemand;
  events: AgentEvents;
  logger: Logger;
  /** Applies agent defaults (resources, engine log cap) to a submitted spec. */
  withDefaults: (spec: StoredTaskSpec) => StoredTaskSpec;
  /** Called when a task's container was created and started by this agent (not recovered): the spec's uploads were used. */
  onStarted?: (record: TaskRecord) => void;
  /** Called when a task's end is recorded, e.g. for metrics. */
  onEnded?: (record: TaskRecord) => void;
  /** Called with the code of every error the supervisor meets and logs, e.g. for metrics. */
  onError?: (code: ErrorCode) => void;
  /** One engine ping, never retried, with a short deadline: whether a task waiting for the engine may start. */
  pingEngine: (signal: AbortSignal) => Promise<void>;
  /** `tasks.startOutageLimit` in force: how long a task may wait for the engine to start; undefined is no bound. */
  startOutageLimitMs: () => number | undefined;
  /** Reads what running tasks use, for the usage recorded at their end (none: no usage is recorded). */
  usage?: Pick<UsageSampler, 'track' | 'forget' | 'end'>;
  /**
   * Seals the secrets of a spec (inline registry credentials) before they are stored: the stored
   * spec holds them redacted. Without one, a spec with inline credentials is refused.
   */
  secrets?: SecretSealer;
  /** Where a task's `collect` paths are kept at its end, and the size limit in force (`artifacts.maxBytes`). None: nothing is collected. */
  artifacts?: { store: ArtifactStore; maxBytes: () => number };
  /**
   * Hands out the host ports of specs' `ports` at submit (the stored spec gets them filled in, so a
   * recovered task keeps them) and takes them back once the task has ended and its container is
   * gone. None: a spec with `ports` is refused.
   */
  ports?: Pick<PortAllocator, 'allocate' | 'release' | 'sweep'>;
  /** The driver's warm pools and the recovery of warm tasks (the driver itself); none: no task of an earlier run is recovered warm. */
  warm?: WarmDriverPort;
  /** Cluster mode (`cluster.postgres`): specs may carry `constraints` (placement). Default false: a spec with constraints is refused. */
  clusterMode?: boolean;
}

/** A spec's `constraints` where it sets any: they need cluster mode (the cluster places tasks by them). */
function refuseConstraints(spec: unknown): void {
  const constraints = (spec as { constraints?: unknown } | null)?.constraints;
  if (constraints === undefined || (typeof constraints === 'object' && constraints !== null && Object.keys(constraints).length === 0)) return;
  throw new ValidationError([{ field: 'constraints', rule: 'needs cluster mode (cluster.postgres): a single agent does not place tasks' }]);
}

/**
 * What the supervisor asks of the agent's task groups (agent/groups.ts): a group's tasks are
 * started by their group, not by admission, and a group enters admission as one unit, under an
 * entry id of its own (never a task id).
 */
export interface SupervisorGroupHooks {
  /** Whether an admission entry is a group's. */
  isGroupEntry(entryId: string): boolean;
  /** How a group's task joins its group; undefined for a task of its own (or a group without infrastructure yet). */
  membershipOf(record: TaskRecord): GroupMembership | undefined;
  /** The groups' shares at recovery: held (the group started) and queued (pending), each in submission order. */
  admissionEntries(): { admitted: AdmissionEntry[]; queued: AdmissionEntry[] };
  /** Admission let the group in: the group starts. */
  admitted(entryId: string): void;
  /** The group can never fit anymore (the budget shrank below it): it ends failed. */
  refused(entryId: string, error: ValidationError): void;
}

/** A task spec checked as a submit checks it, ready to be recorded (a group's task: see agent/groups.ts). */
export interface PreparedSpec {
  spec: StoredTaskSpec;
  sealedSecrets?: string;
  reservation: ResourceDemand;
}

/** The outcome of a submit: the task, and whether this submit created it (false: the same task was submitted before). */
export interface SubmitResult {
  task: TaskRecord;
  created: boolean;
}

/** Pauses between attempts to ask the engine again about a task's container that an outage hid at recovery. */
const RECOVER_RETRY_MS = { first: 500, max: 5000 };

/**
 * How long the removal of an ended task's container is tried again in the background when the engine
 * failed it; after that the container is left to prune and the next agent's start (the task still
 * holds its image, which is how that start knows to remove it).
 */
export const REMOVAL_RETRY_LIMIT_MS = 10 * 60_000;

/** Pauses between attempts to remove an ended task's container. */
const REMOVAL_RETRY_MS = { first: 500, max: 30_000 };


/**
 * Runs the agent's tasks: every submitted task is recorded before the engine is asked to act, waits
 * its turn in a first-in first-out queue until it fits the admission budget, runs, and has its end
 * recorded. Output goes from the engine's log to the task's files, with a cursor so that a restarted
 * agent resumes it without losing or doubling a line.
 */
export class TaskSupervisor {
  readonly #deps: SupervisorDeps;
  readonly #handles = new Map<string, TaskHandle>();
  /** The grace period a stop asked for while its task had no handle yet (still starting): #start's stop uses it. */
  readonly #pendingStopGraceMs = new Map<string, number>();
  readonly #running = new Set<Promise<void>>();
  /** Removals of ended tasks' containers that failed and are tried again in the background (not waited for by idle). */
  readonly #removals = new Set<Promise<void>>();
  /** Aborted at shutdown: output pumps and waits stop following, and record nothing more. */
  readonly #closing = new AbortController();
  /**
   * The supervisor's own state, not a task's: recovering until recovery is done (nothing may run
   * before recovered tasks hold their share), then open, then closed. Only forward.
   */
  #phase: 'recovering' | 'open' | 'closed' = 'recovering';
  /** Tasks whose start failed because the engine did not answer: they wait for it, holding their share. */
  readonly #outage: StartOutage;
  /** Tasks their restart policy restarted, waiting for their next attempt, holding their share (see restart.ts). */
  readonly #restarts: RestartWaits;
  /** Follows the health of tasks with a health check; gates `waitHealthy` tasks' move to running. */
  readonly #health: HealthWatch;
  /**
   * Ends decided before the container's: a `waitHealthy` task that never became healthy is stopped
   * and ends failed, whatever its container's end says (the stop would make it cancelled).
   */
  readonly #decidedEnds = new Map<string, (containerEnd: EndState) => EndState>();
  /** The agent's task groups, once attached (attachGroups). */
  #groups: SupervisorGroupHooks | undefined;

  constructor(deps: SupervisorDeps) {
    this.#deps = deps;
    this.#restarts = new RestartWaits(deps.logger);
    // Every running task listens on the one closing signal.
    setMaxListeners(0, this.#closing.signal);
    this.#outage = new StartOutage({
      ping: deps.pingEngine,
      settled: () => deps.driver.settled(),
      limitMs: deps.startOutageLimitMs,
      // Called from the outage's watch loop: a failure here (a full disk) must not end that loop, or the agent.
      retry: (taskIds) => this.#contained(undefined, 'could not start the tasks that waited for the engine', () => this.#retryStarts(taskIds)),
      expire: (taskId, reason) => this.#contained(taskId, 'could not record the end of a task that waited too long for the engine', () => this.#endUnstarted(taskId, { kind: 'failed', exitCode: 125, reason })),
      signal: this.#closing.signal,
      logger: deps.logger,
    });
    this.#health = new HealthWatch({
      engine: deps.engine,
      tasks: deps.store.tasks,
      events: deps.events,
      logger: deps.logger,
      ...(deps.onError ? { onError: deps.onError } : {}),
      signal: this.#closing.signal,
    });
  }

  /** Connects the agent's task groups (agent/groups.ts); call before recover. */
  attachGroups(hooks: SupervisorGroupHooks): void {
    this.#groups = hooks;
  }

  /**
   * Checks a task spec as submit does (the agent's defaults, its limits, the policy, bind sources,
   * seccomp profile, secrets sealed) and returns what to record, without recording anything: a
   * group records its tasks itself, all at once. A ValidationError names the spec's fields.
   */
  prepare(input: unknown): PreparedSpec {
    this.#requireOpen();
    if (this.#deps.clusterMode !== true) refuseConstraints(input);
    const spec = this.#deps.withDefaults(checkAgentSpec(input));
    const { redacted, secrets } = separateRegistrySecrets(spec);
    const policy = this.#deps.policy();
    const resolved = resolveTaskSpec(spec, policy);
    this.#deps.driver.resolveBindSources(resolved, policy);
    withSeccompProfile(resolved, policy);
    const reservation = resolveDemand(resolved.resources, this.#deps.defaultDemand());
    const sealedSecrets = secrets === undefined ? undefined : this.#sealer().seal(canonicalJson(secrets));
    return { spec: redacted, reservation, ...(sealedSecrets !== undefined ? { sealedSecrets } : {}) };
  }

  /** Enters a group into admission as one unit; the group's `admitted` hook is called once it is let in (maybe at once). */
  enterAdmission(entryId: string, demand: ResourceDemand): 'admitted' | 'queued' {
    this.#requireOpen();
    const outcome = this.#deps.admission.submit(entryId, demand);
    if (outcome === 'admitted') this.#groups?.admitted(entryId);
    return outcome;
  }

  /** A group's share returns to the budget (its end is cleaned up, or it left the queue); queued work that now fits starts. */
  leaveAdmission(entryId: string): void {
    if (this.#phase !== 'closed') this.#applyChange(this.#deps.admission.release(entryId));
  }

  /** Starts a pending task of a group (its group holds the share), in its group (SupervisorGroupHooks.membershipOf). */
  startMember(taskId: string): void {
    this.#requireOpen();
    this.#startAdmitted([taskId]);
  }

  /** Tasks that could not start yet because the engine does not answer (for health). */
  get tasksWaitingForEngine(): number {
    return this.#outage.waitingCount;
  }

  /**
   * Validates and records a task; it starts now if it fits the budget, or waits as pending.
   * Idempotent: a task with this id and the same spec (compared after the agent's defaults are
   * applied, key order aside) is returned as it is, with `created` false; one with another spec is
   * refused (BERTH_TASK_EXISTS).
   */
  submit(input: { id: string; spec: unknown; clusterEpoch?: number }): SubmitResult {
    this.#requireOpen();
    // A claimed task was placed by its constraints; a local submit has nobody to place it.
    if (input.clusterEpoch === undefined) refuseConstraints(input.spec);
    const spec = this.#deps.withDefaults(checkAgentSpec(input.spec));
    // Inline registry credentials are stored redacted, their secrets sealed apart (never in the clear).
    const { redacted, secrets } = separateRegistrySecrets(spec);
    const secretText = secrets === undefined ? undefined : canonicalJson(secrets);
    // A client retrying a submit whose answer it lost (or that the agent died answering) gets the task it made.
    const existing = this.#deps.store.tasks.get(input.id);
    if (existing) return { task: this.#sameSubmission(existing, withPortsAsStored(redacted, existing.spec), secretText), created: false };
    const policy = this.#deps.policy();
    const resolved = resolveTaskSpec(spec, policy);
    // Bind sources are resolved on the host now (and again before the create), so a bad one is refused here and nothing is created.
    this.#deps.driver.resolveBindSources(resolved, policy);
    // A named seccomp profile's file is read now too (and again at the create), so a missing or broken one is refused here.
    withSeccompProfile(resolved, policy);
    const reservation = resolveDemand(resolved.resources, this.#deps.defaultDemand());
    this.#deps.admission.check(reservation);
    const sealedSecrets = secretText === undefined ? undefined : this.#sealer().seal(secretText);
    // The ports are allocated and the task recorded in one transaction: a refused allocation records
    // nothing, and a crash cannot leave a task without its ports (nor ports without a task: see recover).
    const { inserted, task } = this.#deps.store.transaction(() => {
      const stored = resolved.ports.length === 0 ? redacted : { ...redacted, ports: this.#allocatePorts(input.id, resolved.ports) };
      return this.#deps.store.tasks.insert({
        id: input.id,
        spec: stored,
        reservation,
        ...(sealedSecrets !== undefined ? { sealedSecrets } : {}),
        ...(input.clusterEpoch !== undefined ? { clusterEpoch: input.clusterEpoch } : {}),
      });
    });
    if (!inserted) {
      // A task of this id recorded meanwhile: an ended one had freed its ports, so those just taken are this submit's.
      if (hasEnded(task.state)) this.#releasePorts(task.id);
      return { task: this.#sameSubmission(task, withPortsAsStored(redacted, task.spec), secretText), created: false };
    }
    this.#announce(task);
    if (this.#deps.admission.submit(task.id, reservation) === 'admitted') this.#startAdmitted([task.id]);
    return { task: this.#deps.store.tasks.get(task.id) ?? task, created: true };
  }

  /**
   * Records and starts a task this node claimed from the cluster under `epoch` (cluster mode,
   * agent/cluster-claimer.ts): recorded in SQLite first with the epoch, then started through
   * admission as a local submit. A local record of an earlier attempt that ended (the task was
   * lost here, requeued and placed here again) gives way to the new one. Resolves with the record,
   * or throws what the local submit threw (the claimer reports the task failed).
   */
  async submitClaimed(input: { id: string; spec: unknown; epoch: number }): Promise<TaskRecord> {
    this.#requireOpen();
    const existing = this.#deps.store.tasks.get(input.id);
    if (existing !== undefined) {
      if (existing.cluster?.epoch === input.epoch && existing.cluster.detached === undefined) return existing;
      if (!hasEnded(existing.state)) {
        throw new BerthError('BERTH_TASK_EXISTS', `task ${input.id} still runs here from an earlier claim`, { context: { taskId: input.id } });
      }
      const forgotten = await this.forget([input.id]);
      if (!forgotten.includes(input.id)) throw new BerthError('BERTH_TASK_EXISTS', `the record of an earlier attempt of task ${input.id} could not be removed`, { context: { taskId: input.id } });
    }
    return this.submit({ id: input.id, spec: input.spec, clusterEpoch: input.epoch }).task;
  }

  /**
   * The cluster no longer gives this node the task (BERTH_CLUSTER_FENCED: declared lost, placed
   * elsewhere, or released): it is detached (nothing more is reported, its unsent reports are
   * dropped) and, when it has not ended, ends `lost` with `reason` at once: a pending one without
   * running, a running one killed without grace (its container is removed as any ended task's is).
   * Resolves whether it was attached until now.
   */
  async fence(taskId: string, reason: string): Promise<boolean> {
    const record = this.#deps.store.tasks.get(taskId);
    if (record === undefined) return false;
    const wasAttached = this.#deps.store.tasks.detachFromCluster(taskId, reason);
    if (hasEnded(record.state) || this.#phase !== 'open') return wasAttached;
    const end: EndState = { kind: 'lost', reason };
    if (record.state === 'pending') {
      this.#finish(taskId, end);
      return wasAttached;
    }
    if (record.state !== 'stopping') this.#record(taskId, { to: 'stopping' });
    if (this.#outage.cancel(taskId) || this.#restarts.cancel(taskId)) {
      this.#endUnstarted(taskId, end);
      return wasAttached;
    }
    this.#decidedEnds.set(taskId, () => end);
    const handle = this.#handles.get(taskId);
    if (handle === undefined) this.#pendingStopGraceMs.set(taskId, 0);
    else await handle.kill('SIGKILL').catch(() => handle.stop({ graceMs: 0 }));
    return wasAttached;
  }

  /**
   * The recorded task when `spec` (with the agent's defaults applied, its secrets redacted) is the
   * spec it was submitted with, key order aside, and its secrets are the same; BERTH_TASK_EXISTS
   * when either differs.
   */
  #sameSubmission(existing: TaskRecord, spec: StoredTaskSpec, secretText: string | undefined): TaskRecord {
    const task = sameSubmission(existing, spec);
    const stored = existing.sealedSecrets === undefined ? undefined : this.#sealer().open(existing.sealedSecrets);
    if (stored === secretText || (stored !== undefined && secretText !== undefined && sameSecret(stored, secretText))) return task;
    throw new BerthError('BERTH_TASK_EXISTS', `a task with id ${existing.id} exists already, with other registry credentials`, { context: { taskId: existing.id } });
  }

  #allocatePorts(taskId: string, ports: readonly PortSpec[]): PortSpec[] {
    if (!this.#deps.ports) throw new ValidationError([{ field: 'ports', rule: 'cannot be published by this agent (it has no port allocator)' }]);
    return this.#deps.ports.allocate(taskId, ports, 'ports', { ownerKind: TASK_PORT_OWNER });
  }

  /** Frees the task's host ports; a store that cannot take it is logged (recovery frees them later). */
  #releasePorts(taskId: string): void {
    try {
      const released = this.#deps.ports?.release(taskId) ?? 0;
      if (released > 0) this.#deps.logger.debug({ taskId, released }, 'released the task\'s host ports');
    } catch (error) {
      const { code } = asBerthError(error);
      this.#deps.logger.warn({ taskId, code }, 'could not release the task\'s host ports; the next agent start releases them');
      this.#deps.onError?.(code);
    }
  }

  #sealer(): SecretSealer {
    if (!this.#deps.secrets) throw new ValidationError([{ field: 'registryAuth', rule: 'inline registry credentials cannot be kept by this agent (it has no secret key)' }]);
    return this.#deps.secrets;
  }

  /** The spec a task starts with: its stored spec, with the secrets it holds redacted opened again. */
  #specToStart(record: TaskRecord): TaskSpec {
    if (record.sealedSecrets === undefined) return record.spec as TaskSpec;
    const secrets = JSON.parse(this.#sealer().open(record.sealedSecrets)) as Record<string, string>;
    return restoreRegistrySecrets(record.spec, secrets) as TaskSpec;
  }

  /**
   * Stops a task: a pending one ends as cancelled without running; a running one is stopped, given
   * `graceMs` (default its spec's stopGracePeriod) between its stop signal and SIGKILL. A task being
   * stopped already is killed at once by a stop with `graceMs` 0, and otherwise left to its stop.
   */
  async stop(taskId: string, options: { graceMs?: number } = {}): Promise<TaskRecord> {
    this.#requireOpen();
    const record = this.#require(taskId);
    if (record.state === 'pending') {
      this.#finish(taskId, { kind: 'cancelled' });
      return this.#require(taskId);
    }
    if (record.state === 'running' || record.state === 'starting') {
      this.#record(taskId, { to: 'stopping' });
      // Waiting for the engine to start it, or for its next attempt: that never runs, and it ends now.
      if (this.#outage.cancel(taskId) || this.#restarts.cancel(taskId)) {
        this.#endUnstarted(taskId, { kind: 'cancelled' });
        return this.#require(taskId);
      }
      // A task still starting has no handle yet: #start stops it as soon as it has one, with this grace.
      const handle = this.#handles.get(taskId);
      if (!handle && options.graceMs !== undefined) this.#pendingStopGraceMs.set(taskId, options.graceMs);
      await handle?.stop(options.graceMs === undefined ? {} : { graceMs: options.graceMs });
    } else if (record.state === 'stopping' && options.graceMs === 0) {
      // Being stopped already, with its grace running: a stop with no grace (rm -f) kills it now.
      // The stop's intent stands, so it still ends as cancelled.
      await this.#handles.get(taskId)?.kill('SIGKILL');
    }
    return this.#require(taskId);
  }

  /**
   * Pauses a running task (the engine's freezer); its run time limit stands still until it is
   * resumed, and a restarted agent finds it paused with the pause recorded.
   */
  async pause(taskId: string): Promise<TaskRecord> {
    const handle = this.#handleIn(taskId, 'pause');
    await handle.pause();
    return this.#deps.store.tasks.setPaused(taskId, true);
  }

  /** Resumes a paused task; its run time limit goes on with what was left of it. */
  async unpause(taskId: string): Promise<TaskRecord> {
    const handle = this.#handleIn(taskId, 'unpause');
    await handle.unpause();
    return this.#deps.store.tasks.setPaused(taskId, false);
  }

  /** Sends a signal to a running (or stopping) task's main process, as `docker kill -s`. */
  async kill(taskId: string, signal: string): Promise<TaskRecord> {
    const handle = this.#handleIn(taskId, 'kill', ['running', 'stopping']);
    await handle.kill(signal);
    return this.#require(taskId);
  }

  /**
   * Resolves with the task's record once it has ended, or as it is when `timeoutMs` passes first
   * (a long poll: the caller asks again). `signal` ends the wait early (the client went away).
   */
  async wait(taskId: string, timeoutMs: number, signal?: AbortSignal): Promise<TaskRecord> {
    this.#require(taskId);
    const stops = [signal, this.#closing.signal].filter((s): s is AbortSignal => s !== undefined);
    if (this.isEnded(taskId) || stops.some((s) => s.aborted)) return this.#require(taskId);
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        off();
        for (const stop of stops) stop.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      const off = this.#deps.events.subscribe((event) => {
        if (event.type === 'task.state' && event.taskId === taskId && hasEnded(event.state)) done();
      });
      // The client went away, or the agent is shutting down: answer with the task as it is.
      for (const stop of stops) stop.addEventListener('abort', done, { once: true });
      // Ended between the check above and the subscription.
      if (this.isEnded(taskId)) done();
    });
    return this.#require(taskId);
  }

  /** The handle of a task in one of `states`, else BERTH_TASK_STATE naming the operation. */
  #handleIn(taskId: string, operation: string, states: readonly TaskState[] = ['running']): TaskHandle {
    this.#requireOpen();
    const record = this.#require(taskId);
    const handle = this.#handles.get(taskId);
    if (!states.includes(record.state) || !handle) {
      throw new BerthError('BERTH_TASK_STATE', `cannot ${operation} task ${taskId}: it is ${record.state}`, { context: { taskId, state: record.state, operation } });
    }
    return handle;
  }

  /** How the driver recovers a task: its policy, a recorded stop, and its recorded pauses. */
  #recoverOptions(record: TaskRecord): { bindPolicy: ReturnType<SupervisorDeps['policy']>; stopRequested: boolean; pause: { pausedForMs: number; pausedSinceMs?: number }; startAttempt?: string } {
    const attempt = currentAttempt(record);
    return {
      // A restarted task's container is its current attempt's; an earlier attempt's is removed.
      ...(attempt > 1 ? { startAttempt: startAttemptKey(record.id, attempt) } : {}),
      bindPolicy: this.#deps.policy(),
      stopRequested: record.state === 'stopping',
      pause: { pausedForMs: record.pausedForMs, ...(record.pausedAtMs !== undefined ? { pausedSinceMs: record.pausedAtMs } : {}) },
    };
  }

  /** Removes an ended task's record and output. A task that has not ended is refused (stop it first). */
  async remove(taskId: string): Promise<void> {
    this.#requireOpen();
    const record = this.#require(taskId);
    if (!hasEnded(record.state)) {
      throw new BerthError('BERTH_TASK_STATE', `task ${taskId} is ${record.state}; stop it before removing it`, { context: { taskId, state: record.state } });
    }
    if (record.state !== 'removed') this.#record(taskId, { to: 'removed' });
    this.#releasePorts(taskId);
    await this.#removeOutput(taskId);
  }

  /**
   * Removes ended tasks for good (retention): the output as `remove` removes it, then the records,
   * in one transaction. Output goes first, so that a crash in between leaves a record for the next
   * pass, never files nobody knows of. A task that has not ended is left (and so is the record of
   * one that still holds an image, which retention does not choose: see TaskRepository.oldestEnded).
   * Resolves with the ids removed.
   */
  async forget(taskIds: readonly string[]): Promise<string[]> {
    const ended = taskIds.filter((taskId) => {
      const state = this.#deps.store.tasks.get(taskId)?.state;
      return state !== undefined && hasEnded(state);
    });
    // One task whose output cannot be removed keeps its record (the next pass tries again) and
    // does not hold up the others: retention picks the oldest first, so it would come first every time.
    const removable: string[] = [];
    for (const taskId of ended) {
      try {
        await this.#removeOutput(taskId);
        removable.push(taskId);
      } catch (error) {
        this.#deps.logger.warn({ taskId, code: codeOf(error) }, 'could not remove the output of an ended task; its record is kept for the next try');
      }
    }
    const deleted = this.#deps.store.tasks.deleteEnded(removable);
    for (const taskId of deleted) this.#releasePorts(taskId);
    return deleted;
  }

  /** What removing an ended task removes besides its record: its output files (and ends their followers). */
  async #removeOutput(taskId: string): Promise<void> {
    await this.#deps.logs.remove(taskId);
    await this.#deps.artifacts?.store.remove(taskId);
  }

  /**
   * Reloads every task that had not ended: a container still running is followed again, one that
   * ended while the agent was down gets its real end state, one that is gone is recorded as lost,
   * and pending tasks wait their turn again, in order. A task that was starting and has no
   * container (the agent died before its create reached the engine) is started now, holding the
   * share it held; one that was being stopped before it had a container ends as cancelled. A task
   * whose container the engine could not be asked about (it did not answer, or answered 5xx) is not
   * lost: it keeps its share and is followed again as soon as the engine answers (`waiting`); only
   * a container the engine says is gone makes a task lost.
   */
  async recover(): Promise<{ resumed: number; ended: number; lost: number; pending: number; restarted: number; waiting: number }> {
    const counts = { resumed: 0, ended: 0, lost: 0, pending: 0, restarted: 0, waiting: 0 };
    /** Running or stopping tasks the engine could not be asked about: followed again when it answers. */
    const toRecoverLater: Array<{ record: TaskRecord; error: BerthError }> = [];
    /** Started once the supervisor is open, in submission order, before pending tasks that now fit. */
    const toStart: TaskRecord[] = [];
    /** Starting tasks the engine could not be asked about: they wait for it like a start that failed. */
    const toWait: Array<{ record: TaskRecord; error: unknown }> = [];
    const unended = this.#deps.store.tasks.listUnended();
    // Ports of tasks that no longer need them: a task whose end was recorded (or whose record went)
    // before its ports were freed, or a submit the agent died in before its task was recorded.
    const needsPorts = new Set(unended.map((r) => r.id));
    const freed = this.#deps.ports?.sweep(TASK_PORT_OWNER, (taskId) => needsPorts.has(taskId)) ?? [];
    if (freed.length > 0) this.#deps.logger.info({ tasks: freed.length }, 'released the host ports of tasks that no longer need them');
    const entry = (record: TaskRecord): AdmissionEntry => ({ taskId: record.id, demand: record.reservation ?? this.#deps.defaultDemand() });
    // A group's tasks draw from the budget through their group's one entry, and wait for their group, not for admission.
    const own = unended.filter((r) => r.group === undefined);
    const pending = own.filter((r) => r.state === 'pending');
    counts.pending = pending.length;
    const groups = this.#groups?.admissionEntries() ?? { admitted: [], queued: [] };
    // Tasks that were starting or running hold their share again; pending ones queue in submission order.
    const change = this.#deps.admission.restore({ admitted: [...own.filter((r) => r.state !== 'pending').map(entry), ...groups.admitted], queued: [...pending.map(entry), ...groups.queued] });
    for (const record of unended) {
      if (record.state === 'pending') continue;
      let recoverError: unknown;
      const handle = await this.#recoverHandle(record).catch((error: unknown) => {
        recoverError = error;
        return undefined;
      });
      const neverCreated = record.state === 'starting' || (record.state === 'stopping' && record.containerId === undefined);
      if (recoverError !== undefined && neverCreated && isTransientStartError(asBerthError(recoverError))) {
        counts.restarted++;
        toWait.push({ record, error: recoverError });
        continue;
      }
      if (isBerthError(recoverError, 'BERTH_VALIDATION')) {
        // A never-started container whose bind sources no longer pass (a swapped path, a narrower
        // policy) was removed, not started: the task fails as a refused start does.
        toWait.push({ record, error: recoverError });
        continue;
      }
      if (recoverError !== undefined && !neverCreated && isEngineOutage(asBerthError(recoverError))) {
        // An outage is not a failure: the container may well be running. The task keeps its share.
        counts.waiting++;
        toRecoverLater.push({ record, error: asBerthError(recoverError) });
        continue;
      }
      if (recoverError !== undefined) {
        this.#deps.logger.error({ taskId: record.id, code: asBerthError(recoverError).code }, 'could not recover the task');
        this.#deps.onError?.(asBerthError(recoverError).code);
      }
      if (!handle && recoverError === undefined && neverCreated) {
        // Its spec is stored and its container never existed: it never ran. A create that was in
        // flight when the agent died may still land; the driver adopts it (same task, same owner).
        if (record.state === 'starting') {
          counts.restarted++;
          toStart.push(record);
        } else {
          this.#endUnstarted(record.id, { kind: 'cancelled' });
        }
        continue;
      }
      if (!handle) {
        const reason = recoverError === undefined ? 'its container was gone when the agent restarted' : `its container could not be recovered when the agent restarted: ${asBerthError(recoverError).code}: ${asBerthError(recoverError).message}`;
        // A lost attempt is a failure its restart policy may answer with another (started once recovery is done).
        if (recoverError === undefined && this.#restartIfDue(record.id, { kind: 'lost', reason }, undefined)) {
          counts.restarted++;
          toStart.push(this.#require(record.id));
          continue;
        }
        counts.lost++;
        this.#endLost(record.id, reason);
        continue;
      }
      if (handle.phase === 'running') counts.resumed++;
      else counts.ended++;
      await this.#follow(record.id, handle);
    }
    if (this.#phase === 'recovering') this.#phase = 'open';
    for (const record of toStart) void this.#track(this.#start(record));
    for (const { record, error } of toWait) void this.#track(this.#startFailed(record, error));
    for (const { record, error } of toRecoverLater) void this.#track(this.#recoverLater(record, error));
    this.#applyChange(change);
    return counts;
  }

  /**
   * Follows a recovered task again: a task recorded starting is running now; a stop asked for
   * before (the crash, or while the engine did not answer) may not have reached the engine, so it
   * is asked again, and the task ends as cancelled.
   */
  async #follow(taskId: string, handle: TaskHandle): Promise<void> {
    const record = this.#require(taskId);
    if (record.state === 'starting') this.#markStarted(taskId, handle);
    if (record.state === 'stopping') this.#containStop(taskId, handle);
    // The engine says whether it is paused now; the record follows (a pause it missed, or one ended meanwhile).
    if (handle.paused !== (record.pausedAtMs !== undefined)) this.#deps.store.tasks.setPaused(taskId, handle.paused);
    // A warm task's exec wrote its output to streams the agent that died held: nothing more can be read of it.
    const output: OutputSource = record.start?.path === 'warm' ? { kind: 'none' } : { kind: 'engine-log', start: await this.#cursorFor(record) };
    void this.#supervise(taskId, handle, output);
  }

  /**
   * The driver's handle of a task of an earlier run: a warm task's exec in its pool container
   * (driver.recoverWarm: ended with its exit code, or killed and lost when it still ran, since its
   * output can no longer be followed), or a cold task's own container.
   */
  async #recoverHandle(record: TaskRecord): Promise<TaskHandle | undefined> {
    const start = record.start;
    if (start?.path === 'warm' && record.containerId !== undefined) {
      // Without pools (none configured, or a driver without them) a warm task of an earlier run is not followed: it is lost.
      if (!this.#deps.warm) return undefined;
      return this.#deps.warm.recoverWarm(record.id, { spec: record.spec as TaskSpec, containerId: record.containerId, execId: start.execId, stopRequested: record.state === 'stopping' });
    }
    return this.#deps.driver.recover(record.id, record.spec as TaskSpec, this.#recoverOptions(record));
  }

  /** The container ids of the warm tasks a recovery takes back: the pools' start keeps them (driver.pools.start({ keep })). */
  warmContainersToRecover(): Set<string> {
    const ids = new Set<string>();
    for (const record of this.#deps.store.tasks.listUnended()) {
      if (record.start?.path === 'warm' && record.containerId !== undefined) ids.add(record.containerId);
    }
    return ids;
  }

  /**
   * A running (or stopping) task whose container the engine could not be asked about at recovery:
   * asks again, with a growing pause, until the engine answers. Its container is then followed to
   * its real end; a container the engine says is gone makes it lost. At shutdown it stays as it is
   * recorded, for the next agent.
   */
  async #recoverLater(record: TaskRecord, error: BerthError): Promise<void> {
    this.#deps.logger.warn({ taskId: record.id, code: error.code }, 'could not ask the engine about the task\'s container; following it again when the engine answers');
    this.#deps.onError?.(error.code);
    for (let waitMs = RECOVER_RETRY_MS.first; ; waitMs = Math.min(waitMs * 2, RECOVER_RETRY_MS.max)) {
      await delay(waitMs, undefined, { signal: this.#closing.signal }).catch(() => undefined);
      if (this.#closing.signal.aborted) return;
      let handle: TaskHandle | undefined;
      try {
        handle = await this.#recoverHandle(record);
      } catch (retryError) {
        const berthError = asBerthError(retryError);
        if (isEngineOutage(berthError)) continue;
        this.#deps.logger.error({ taskId: record.id, code: berthError.code }, 'could not recover the task');
        this.#deps.onError?.(berthError.code);
        this.#endLost(record.id, `its container could not be recovered after the agent restarted: ${berthError.code}: ${berthError.message}`);
        return;
      }
      if (this.#closing.signal.aborted) return;
      if (!handle) {
        this.#endLost(record.id, 'its container was gone when the agent restarted');
        return;
      }
      this.#deps.logger.info({ taskId: record.id }, 'the engine answers; following the task again');
      await this.#follow(record.id, handle);
      return;
    }
  }

  /** Records a task whose container is gone as lost; it has no handle whose removal would release its images. */
  #endLost(taskId: string, reason: string): void {
    this.#finish(taskId, { kind: 'lost', reason });
    this.#deps.driver.releaseImages(taskId);
  }

  /**
   * Asks the engine to stop a task, in the background. The handle logs a stop the engine failed (the
   * task's wait still decides its end); anything else it throws is logged and counted here, never
   * left to end the process.
   */
  #containStop(taskId: string, handle: TaskHandle): void {
    const graceMs = this.#pendingStopGraceMs.get(taskId);
    this.#pendingStopGraceMs.delete(taskId);
    handle.stop(graceMs === undefined ? {} : { graceMs }).catch((error: unknown) => {
      const berthError = asBerthError(error);
      this.#deps.logger.error({ taskId, code: berthError.code, error: berthError.message }, 'could not stop the task');
      this.#deps.onError?.(berthError.code);
    });
  }

  /** Runs `work`; a failure is logged once and counted, never thrown: for callbacks of background loops. */
  #contained(taskId: string | undefined, message: string, work: () => void): void {
    try {
      work();
    } catch (error) {
      const berthError = asBerthError(error);
      this.#deps.logger.error({ ...(taskId ? { taskId } : {}), code: berthError.code, error: berthError.message }, message);
      this.#deps.onError?.(berthError.code);
    }
  }

  /** Whether the supervisor takes work: recovery is done and shutdown has not begun. */
  get isOpen(): boolean {
    return this.#phase === 'open';
  }

  #requireOpen(): void {
    if (this.#phase === 'recovering') {
      throw new BerthError('BERTH_AGENT_UNAVAILABLE', 'the agent is starting (waiting for the engine, then recovering its tasks) and takes no work yet; try again shortly');
    }
    if (this.#phase === 'closed') throw new BerthError('BERTH_AGENT_UNAVAILABLE', 'the agent is shutting down and takes no new work');
  }

  /** Applies a new admission budget (a configuration reload); queued tasks that now fit start. */
  setBudget(budget: AdmissionBudget): void {
    this.#applyChange(this.#deps.admission.setBudget(budget));
  }

  /**
   * Stops taking work; running containers keep running, and a restarted agent picks them up. Output
   * pumps stop following and save their cursors, and no end is recorded after this, so the caller
   * may close the store once this resolves. A start still under way (a pull) is waited for at most
   * `graceMs`; whatever it would record is recovered by the next agent.
   */
  async shutdown(graceMs = 5000): Promise<void> {
    this.#phase = 'closed';
    this.#closing.abort();
    let timer: NodeJS.Timeout | undefined;
    // Background removals end at the abort too; waited for so that none touches the store after it closes.
    await Promise.race([Promise.all([this.idle(), this.removalsSettled()]), new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
  }

  /** Resolves when every supervised task has ended and its end is recorded (tests, benchmarks). */
  async idle(): Promise<void> {
    // Tasks waiting for the engine to start them have not ended either (until shutdown, which ends the wait).
    while (this.#running.size > 0 || this.#outage.waitingCount > 0) {
      if (this.#closing.signal.aborted && this.#running.size === 0) return;
      await Promise.all([...this.#running, this.#outage.idle()]);
    }
  }

  isEnded(taskId: string): boolean {
    const state = this.#deps.store.tasks.get(taskId)?.state;
    return state === undefined || hasEnded(state);
  }

  /** Starts what admission let in; records the end of queued tasks that can no longer ever fit. */
  #applyChange(change: AdmissionChange): void {
    const groups = this.#groups;
    for (const { taskId, error } of change.refused) {
      if (groups?.isGroupEntry(taskId)) groups.refused(taskId, error);
      else this.#finish(taskId, { kind: 'failed', exitCode: 125, reason: `${error.code}: ${error.message}` });
    }
    this.#startAdmitted(change.admitted.filter((id) => !groups?.isGroupEntry(id)));
    for (const id of change.admitted) if (groups?.isGroupEntry(id)) groups.admitted(id);
  }

  #startAdmitted(taskIds: readonly string[]): void {
    for (const taskId of taskIds) {
      const record = this.#record(taskId, { to: 'starting' });
      void this.#track(this.#start(record));
    }
  }

  /**
   * Starts a task. `mayHaveContainer`: an earlier attempt may have left a container (its create or
   * start reached the engine after it had given up): follow that one rather than create another,
   * and never start a container that ran already.
   */
  async #start(record: TaskRecord, options: { mayHaveContainer?: boolean } = {}): Promise<void> {
    if (record.restartAtMs !== undefined) {
      // A restart: it waits out its delay (a stop cancels it; at shutdown the next agent resumes it).
      if (this.#require(record.id).state !== 'starting' || (await this.#restarts.until(record.id, record.restartAtMs, this.#closing.signal)) !== 'due') return;
      if (this.#require(record.id).state !== 'starting') return;
    }
    let handle: TaskHandle | undefined;
    let recovered = false;
    try {
      if (options.mayHaveContainer) handle = await this.#recoverHandle(this.#require(record.id));
      recovered = handle !== undefined;
      // One start attempt per attempt of the task: a create a dead agent (or an earlier try) sent may land, and is adopted.
      // The engine's log is the output's one path (#pumpOutput reads it); the handle carries none (handle.output is 'engine-log').
      const startAttempt = startAttemptKey(record.id, currentAttempt(record));
      // waitHealthy false: the supervisor waits for health itself (#markStarted), with the task's container known.
      if (handle === undefined) {
        const group = this.#groups?.membershipOf(record);
        handle = await this.#deps.driver.startAccepted(this.#specToStart(record), { taskId: record.id, startAttempt, output: 'engine-log', bindPolicy: this.#deps.policy(), waitHealthy: false, ...(group ? { group } : {}) });
        this.#deps.onStarted?.(record);
      }
    } catch (error) {
      await this.#startFailed(record, error);
      return;
    }
    this.#outage.forget(record.id);
    // How it started, with its container, before anything else: a restarted agent recovers a warm task by its exec.
    // A container an earlier try left is followed as it started (a recovered cold handle cannot tell why it went cold).
    if (!recovered || handle.startPath.kind === 'warm' || this.#require(record.id).start === undefined) {
      this.#deps.store.tasks.setStart(record.id, taskStartOf(handle.startPath), handle.containerId);
    }
    if (this.#require(record.id).state === 'stopping') {
      this.#deps.store.tasks.setContainerId(record.id, handle.containerId);
      this.#containStop(record.id, handle);
    } else {
      this.#markStarted(record.id, handle);
    }
    const isCut = this.#require(record.id).outputTruncated !== undefined;
    // A warm task's output is its exec's streams (the engine's log holds none of it); a new
    // container's log is read from its start. Output cut for good (a restarted task's) stays cut.
    const output: OutputSource = handle.output === 'attached' ? (isCut ? { kind: 'none' } : { kind: 'streams' }) : { kind: 'engine-log', start: { position: {}, isCut } };
    await this.#supervise(record.id, handle, output);
  }

  /**
   * A start failed: an error that is not transient (or a task past tasks.startOutageLimit) ends the
   * task as failed, exit 125; a transient one (the engine did not answer, or answered 5xx) leaves
   * it starting, holding its share, and it is started again when the engine answers.
   */
  async #startFailed(record: TaskRecord, error: unknown): Promise<void> {
    const berthError = asBerthError(error);
    this.#deps.onError?.(berthError.code);
    const transient = isTransientStartError(berthError);
    // Shutting down: the task stays starting, and the next agent starts it.
    if (transient && this.#closing.signal.aborted) return;
    const verdict = await this.#outage.onStartFailed(record, berthError);
    const state = this.#deps.store.tasks.get(record.id)?.state;
    if (state === 'stopping') {
      // Stopped while its start was under way; it never ran.
      this.#endUnstarted(record.id, transient ? { kind: 'cancelled' } : { kind: 'failed', exitCode: 125, reason: `${berthError.code}: ${berthError.message}` });
      return;
    }
    if (state !== 'starting') {
      this.#outage.forget(record.id);
      return;
    }
    if (verdict.action === 'wait') {
      this.#deps.logger.info({ taskId: record.id, code: berthError.code }, 'task could not start yet; it waits for the engine');
      return;
    }
    this.#deps.logger.warn({ taskId: record.id, code: berthError.code }, 'task could not start');
    // A command that is missing (127) or not executable (126) fails as a shell, and `berth run`, say.
    this.#endUnstarted(record.id, { kind: 'failed', exitCode: commandFailureOf(berthError)?.exitCode ?? 125, reason: verdict.reason });
  }

  /**
   * Records the end of a task that never started. The images a previous agent recorded it as
   * holding (restored at recovery) are released too: it has no container whose removal would.
   */
  #endUnstarted(taskId: string, end: EndState): void {
    this.#outage.forget(taskId);
    this.#finish(taskId, end);
    this.#deps.driver.releaseImages(taskId);
  }

  /** Starts again, in the order given, tasks that waited for the engine. */
  #retryStarts(taskIds: readonly string[]): void {
    for (const taskId of taskIds) {
      const record = this.#deps.store.tasks.get(taskId);
      if (record?.state === 'stopping') {
        this.#endUnstarted(taskId, { kind: 'cancelled' });
      } else if (record?.state === 'starting') {
        void this.#track(this.#start(record, { mayHaveContainer: true }));
      } else {
        this.#outage.forget(taskId);
      }
    }
  }

  /**
   * The container of a starting task runs: the task is running, or, when its spec asks to wait for
   * health (`waitHealthy`), stays starting (holding its share) until the engine says it is healthy.
   * A recovered task still waiting waits again. One that never becomes healthy is stopped and ends
   * failed with BERTH_TASK_UNHEALTHY (its container removed as any ended task's is).
   */
  #markStarted(taskId: string, handle: TaskHandle): void {
    if (this.#require(taskId).spec.waitHealthy !== true) {
      this.#record(taskId, { to: 'running', containerId: handle.containerId });
      return;
    }
    this.#deps.store.tasks.setContainerId(taskId, handle.containerId);
    // A container that ended already never became healthy; its supervision records its real end.
    if (handle.phase !== 'running') return;
    const isWaiting = (): boolean => this.#deps.store.tasks.get(taskId)?.state === 'starting';
    void this.#track(
      this.#health.gate(handle, {
        isWaiting,
        healthy: () => this.#record(taskId, { to: 'running', containerId: handle.containerId }),
        unhealthy: async (error) => {
          this.#deps.logger.warn({ taskId, code: error.code, error: error.message }, 'the task never became healthy; stopping it');
          await this.#health.refresh(taskId, handle.containerId);
          if (!isWaiting()) return;
          const reason = `${error.code}: ${error.message}`;
          this.#decidedEnds.set(taskId, (end) => ({ kind: 'failed', exitCode: 'exitCode' in end && end.exitCode !== undefined ? end.exitCode : 125, reason }));
          this.#record(taskId, { to: 'stopping' });
          this.#containStop(taskId, handle);
        },
      }),
    );
  }

  /** Follows a running (or just ended) task: pumps its output, waits for its end, records it. */
  #supervise(taskId: string, handle: TaskHandle, output: OutputSource): Promise<void> {
    this.#handles.set(taskId, handle);
    const work = (async () => {
      // Started as the agent shuts down (a start that was under way): the next agent follows it.
      // Never hand the engine an aborted signal: a request created with one fails outside any listener.
      if (this.#closing.signal.aborted) return;
      this.#deps.usage?.track(taskId, handle.containerId);
      const ending = untilAborted(handle.wait(), this.#closing.signal);
      const pumped = this.#pumpOutput(taskId, handle, output, ending);
      void this.#track(this.#health.follow(taskId, handle.containerId, ending));
      const end = await ending.catch(async (error: unknown) => {
        // The pump is contained; the wait's failure is this task's alone. Wait for the pump, then report.
        await pumped;
        throw error;
      });
      // The pump reads the log to its end once the end is known; wait for the last lines before recording the end.
      await pumped;
      // Shutting down: the container keeps running and the next agent records its end.
      if (end === undefined) return;
      const decided = this.#decidedEnds.get(taskId);
      this.#decidedEnds.delete(taskId);
      // A waitHealthy task that never became healthy ends failed (its stop would say cancelled), and its policy may restart it.
      const taskEnd = decided ? decided(end) : end;
      if (this.#restartIfDue(taskId, taskEnd, handle.finishedAt?.getTime())) {
        // The attempt's container goes before the next one is made under the same name.
        this.#handles.delete(taskId);
        await handle.destroy().catch((error: unknown) => this.#removeLater(taskId, handle, asBerthError(error)));
        // mayHaveContainer: an attempt's container whose removal failed is removed then (driver.recover), not met as a name conflict.
        void this.#track(this.#start(this.#require(taskId), { mayHaveContainer: true }));
        return;
      }
      // Before the end, so that whoever sees the end (the view, metrics) sees the usage too. Under a restart
      // policy it is the last attempt's (each attempt is a container of its own, with its own cgroup).
      await this.#recordUsage(taskId, taskEnd);
      // Whatever the end (a failed run's reports most of all), before the container goes.
      await this.#collectArtifacts(taskId, handle);
      // The engine's finish time: a task that ended while the agent was down did not end at recovery.
      if (!(await this.#recordEnd(taskId, taskEnd, handle.finishedAt?.getTime()))) return;
      await handle.destroy().catch((error: unknown) => this.#removeLater(taskId, handle, asBerthError(error)));
      // Freed once the container is gone (or, when its removal failed, stopped: a stopped container binds no host port).
      this.#releasePorts(taskId);
    })()
      .catch((error: unknown) => {
        if (!isBerthError(error, 'BERTH_STORE_UNAVAILABLE') || this.#closing.signal.aborted) throw error;
        return this.#followWhenStoreAnswers(taskId, error);
      })
      .finally(() => this.#deps.usage?.forget(taskId));
    return this.#track(work);
  }

  /**
   * A task whose supervision met a store that did not answer (a PostgreSQL store away): nothing it
   * did was lost, since each step is one transaction, but it was left halfway. Once the store
   * answers, the task is followed again from its record, as a restarted agent follows it: its
   * container (running, or ended meanwhile) is recovered, the output resumes at its files' position,
   * and its end is recorded. At shutdown it stays as it is recorded, for the next agent.
   */
  async #followWhenStoreAnswers(taskId: string, error: BerthError): Promise<void> {
    this.#deps.logger.warn({ taskId, code: error.code, error: error.message }, 'the store did not answer while following the task; following it again when it answers');
    this.#deps.onError?.(error.code);
    for (let waitMs = RECOVER_RETRY_MS.first; ; waitMs = Math.min(waitMs * 2, RECOVER_RETRY_MS.max)) {
      await delay(waitMs, undefined, { signal: this.#closing.signal }).catch(() => undefined);
      if (this.#closing.signal.aborted) return;
      try {
        const record = this.#deps.store.tasks.get(taskId);
        if (record === undefined) return;
        if (hasEnded(record.state)) {
          // Its end was recorded; what may be left is the container's removal and its ports.
          const ended = this.#handles.get(taskId);
          this.#handles.delete(taskId);
          await ended?.destroy().catch((destroyError: unknown) => this.#removeLater(taskId, ended, asBerthError(destroyError)));
          this.#releasePorts(taskId);
          return;
        }
        const handle = await this.#recoverHandle(record);
        if (this.#closing.signal.aborted) return;
        if (!handle) {
          this.#endLost(taskId, 'its container was gone when the agent followed it again after a state database outage');
          return;
        }
        this.#deps.logger.info({ taskId }, 'the store answers; following the task again');
        await this.#follow(taskId, handle);
        return;
      } catch (retryError) {
        const berthError = asBerthError(retryError);
        if (berthError.code === 'BERTH_STORE_UNAVAILABLE' || isEngineOutage(berthError)) continue;
        throw retryError;
      }
    }
  }

  /** Collects an ended task's `collect` paths (src/agent/artifacts.ts); a failure is logged, and the end goes on. */
  async #collectArtifacts(taskId: string, handle: TaskHandle): Promise<void> {
    const artifacts = this.#deps.artifacts;
    if (!artifacts || handle.spec.collect.length === 0 || this.#closing.signal.aborted) return;
    try {
      const record = await artifacts.store.collect(taskId, handle, artifacts.maxBytes(), this.#closing.signal);
      this.#deps.store.tasks.setArtifacts(taskId, record);
    } catch (error) {
      const { code } = asBerthError(error);
      this.#deps.logger.warn({ taskId, code }, 'could not collect the artifacts of an ended task');
      this.#deps.onError?.(code);
    }
  }

  /** Records what an ended task used, from the sampler's readings; a store that cannot take it is logged, and the end goes on. */
  async #recordUsage(taskId: string, end: EndState): Promise<void> {
    const outcome = await this.#deps.usage?.end(taskId, { oomKilled: end.kind === 'oom' });
    if (!outcome) return;
    try {
      this.#deps.store.tasks.setUsage(taskId, outcome);
    } catch (error) {
      const { code } = asBerthError(error);
      this.#deps.logger.warn({ taskId, code }, 'could not record the usage of an ended task');
      this.#deps.onError?.(code);
    }
  }

  /**
   * Asks the task's restart policy about the attempt that ended: a restart is recorded (the task is
   * `starting` again, the attempt listed, its share kept) and announced; resolves whether there is
   * one. A restart the store cannot take (a full disk) is not made: the task ends instead.
   */
  #restartIfDue(taskId: string, end: EndState, finishedAtMs: number | undefined): boolean {
    const nowMs = Date.now();
    let plan: ReturnType<typeof planRestart>;
    let record: TaskRecord;
    try {
      plan = planRestart(this.#require(taskId), end, finishedAtMs ?? nowMs, nowMs);
      if (!plan) return false;
      record = this.#deps.store.tasks.recordRestart(taskId, plan.ended, plan.restartAtMs);
    } catch (error) {
      this.#deps.logger.warn({ taskId, code: codeOf(error) }, 'could not record the restart of a task; it ends instead');
      this.#deps.onError?.(asBerthError(error).code);
      return false;
    }
    this.#restarts.arm(taskId);
    this.#deps.logger.info({ taskId, attempt: plan.attempt, delayMs: plan.delayMs, end: end.kind }, 'restarting the task');
    this.#announce(record);
    this.#deps.events.emit({ type: 'task.restart', taskId, attempt: plan.attempt, delayMs: plan.delayMs, restartAt: new Date(plan.restartAtMs).toISOString(), previousEnd: plan.ended.endState });
    return true;
  }

  /**
   * The removal of an ended task's container failed (the engine did not answer, or failed it): it is
   * tried again in the background, with a growing pause, for REMOVAL_RETRY_LIMIT_MS, so that the
   * container goes once the engine answers. The task keeps its image until then (the handle releases
   * it when the container is removed). Logged once and counted; given up at shutdown or after the
   * limit, when prune and the next agent's start remove it.
   */
  #removeLater(taskId: string, handle: TaskHandle, error: BerthError): void {
    this.#deps.logger.warn({ taskId, code: error.code, error: error.message }, 'could not remove the container of an ended task; trying again in the background');
    this.#deps.onError?.(error.code);
    const signal = this.#closing.signal;
    const giveUpAt = Date.now() + REMOVAL_RETRY_LIMIT_MS;
    const removal = (async () => {
      let lastError = error;
      for (let waitMs = REMOVAL_RETRY_MS.first; Date.now() < giveUpAt; waitMs = Math.min(waitMs * 2, REMOVAL_RETRY_MS.max)) {
        await delay(Math.min(waitMs, Math.max(0, giveUpAt - Date.now())), undefined, { signal }).catch(() => undefined);
        // Never hand the engine an aborted signal; the next agent finishes the removal.
        if (signal.aborted) return;
        try {
          await handle.destroy({ signal });
          this.#deps.logger.info({ taskId }, 'removed the container of an ended task');
          return;
        } catch (retryError) {
          lastError = asBerthError(retryError);
          if (signal.aborted) return;
        }
      }
      this.#deps.logger.error({ taskId, code: lastError.code, error: lastError.message }, 'gave up removing the container of an ended task; prune or the next agent start removes it');
      this.#deps.onError?.(lastError.code);
    })().catch((unexpected: unknown) => {
      // The last guard: a removal in the background never ends the agent.
      this.#deps.logger.error({ taskId, code: asBerthError(unexpected).code, error: stackOf(unexpected) }, 'the background removal of a container failed');
      this.#deps.onError?.(asBerthError(unexpected).code);
    });
    this.#removals.add(removal);
    void removal.finally(() => this.#removals.delete(removal));
  }

  /** Resolves when no removal of an ended task's container is being tried again in the background (tests). */
  async removalsSettled(): Promise<void> {
    while (this.#removals.size > 0) await Promise.all([...this.#removals]);
  }

  /** Copies the task's output into its files until its end is known and its log read (see pumpOutput). Never rejects. */
  async #pumpOutput(taskId: string, handle: TaskHandle, output: OutputSource, ending: Promise<EndState | undefined>): Promise<void> {
    try {
      const onError = this.#deps.onError ? { onError: this.#deps.onError } : {};
      if (output.kind === 'streams') {
        await pumpStreams({ logs: this.#deps.logs, store: this.#deps.store, logger: this.#deps.logger, ...onError }, { taskId, stdout: handle.stdout, stderr: handle.stderr, ended: ending, signal: this.#closing.signal });
        return;
      }
      if (output.kind === 'none' || output.start.isCut) return;
      await pumpOutput(
        { engine: this.#deps.engine, logs: this.#deps.logs, store: this.#deps.store, logger: this.#deps.logger, ...onError },
        { taskId, containerId: handle.containerId, position: output.start.position, ended: ending, signal: this.#closing.signal },
      );
    } catch (error) {
      // pumpOutput contains its failures; this is the last guard, so that output never ends the agent.
      const { code } = asBerthError(error);
      this.#deps.logger.error({ taskId, code, error: messageOf(error) }, 'the task output pump failed');
      this.#deps.onError?.(code);
    } finally {
      // An attempt its restart policy may follow with another keeps the task's output open, so that
      // followers (logs -f) go on with the next attempt; #finish ends it once the task ends.
      if (!(await this.#mayRestart(taskId, ending))) await this.#deps.logs.end(taskId).catch(() => undefined);
    }
  }

  /** Whether the attempt's end may be followed by another (an on-failure policy and an end that is not a success or a stop). */
  async #mayRestart(taskId: string, ending: Promise<EndState | undefined>): Promise<boolean> {
    const end = await ending.catch(() => undefined);
    if (end === undefined || end.kind === 'success' || end.kind === 'cancelled') return false;
    return this.#deps.store.tasks.get(taskId)?.spec.restart?.policy === 'on-failure';
  }

  /**
   * Where the task's output resumes: the exact position its files hold (they are written before the
   * store's cursor is saved), or the store's cursor where the files know less (they were removed).
   */
  async #cursorFor(record: TaskRecord): Promise<OutputStart> {
    const files = await this.#deps.logs.position(record.id).catch((error: unknown) => {
      this.#deps.logger.warn({ taskId: record.id, error: messageOf(error) }, 'could not read the task output files; resuming from the stored cursor');
      return { position: {}, isCut: false };
    });
    return { position: resumePosition(files.position, fromLogCursor(record.logCursor)), isCut: files.isCut || record.outputTruncated !== undefined };
  }

  /**
   * Records a task's end; a store that cannot take it (a full disk) is asked again with a backoff
   * until it does or the agent shuts down (the next agent then finds the end from the engine).
   * Resolves whether the end is recorded (or was recorded before).
   */
  async #recordEnd(taskId: string, end: EndState, finishedAtMs?: number): Promise<boolean> {
    for (let waitMs = 250; ; waitMs = Math.min(waitMs * 2, 10_000)) {
      try {
        this.#finish(taskId, end, finishedAtMs, { portsFreedByCaller: true });
        return true;
      } catch (error) {
        // A full disk, or a PostgreSQL store that does not answer: the end is recorded once the database takes it.
        if (!(isBerthError(error, 'BERTH_DISK_FULL') || isBerthError(error, 'BERTH_STORE_UNAVAILABLE')) || this.#closing.signal.aborted) throw error;
        this.#deps.logger.warn({ taskId, code: error.code }, 'could not record the task end; trying again');
        this.#deps.onError?.(error.code);
        await delay(waitMs, undefined, { signal: this.#closing.signal }).catch(() => undefined);
        if (this.#closing.signal.aborted) return false;
      }
    }
  }

  /**
   * Records a task's end. Its host ports are freed here, unless `portsFreedByCaller`: the caller
   * (#supervise) frees them once it has removed the task's container.
   */
  #finish(taskId: string, end: EndState, finishedAtMs?: number, options: { portsFreedByCaller?: boolean } = {}): void {
    let recorded = false;
    try {
      const record = this.#record(taskId, endTransition(end, finishedAtMs));
      recorded = true;
      this.#deps.onEnded?.(record);
    } catch (error) {
      // Stopped while pending, or removed meanwhile: the first recorded end stands.
      if (!isBerthError(error, 'BERTH_TASK_STATE')) throw error;
      recorded = true;
    } finally {
      // A store that could not take the end (a full disk) keeps the task's share until it does.
      if (recorded) {
        // A task under a restart policy may have its output kept open for an attempt that never came (see #pumpOutput).
        if (this.#deps.store.tasks.get(taskId)?.spec.restart !== undefined) void this.#deps.logs.end(taskId).catch(() => undefined);
        this.#handles.delete(taskId);
        this.#pendingStopGraceMs.delete(taskId);
        if (!options.portsFreedByCaller) this.#releasePorts(taskId);
        if (this.#phase !== 'closed') this.#applyChange(this.#deps.admission.release(taskId));
      }
    }
  }

  #record(taskId: string, transition: TaskTransition): TaskRecord {
    const record = this.#deps.store.tasks.update(taskId, transition);
    this.#announce(record);
    return record;
  }

  #announce(record: TaskRecord): void {
    const start = record.state === 'running' && record.start ? { start: taskStartView(record.start) } : {};
    this.#deps.events.emit({ type: 'task.state', taskId: record.id, state: record.state, ...(record.endState ? { endState: record.endState } : {}), ...start });
  }

  #require(taskId: string): TaskRecord {
    const record = this.#deps.store.tasks.get(taskId);
    if (!record) throw new BerthError('BERTH_TASK_NOT_FOUND', `no task ${taskId}`, { context: { taskId } });
    return record;
  }

  #track(work: Promise<void>): Promise<void> {
    const tracked = work.catch((error: unknown) => {
      // The last guard: supervision of one task never ends the agent.
      const code = asBerthError(error).code;
      this.#deps.logger.error({ code, error: stackOf(error) }, 'task supervision failed');
      this.#deps.onError?.(code);
    });
    this.#running.add(tracked);
    void tracked.finally(() => this.#running.delete(tracked));
    return tracked;
  }
}

/** The work's result, or undefined as soon as the signal aborts. */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = (): void => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    void work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}


/**
 * The recorded task when `spec` (with the agent's defaults applied) is the spec it was submitted
 * with, key order aside; BERTH_TASK_EXISTS when it is another.
 */
function sameSubmission(existing: TaskRecord, spec: StoredTaskSpec): TaskRecord {
  if (canonicalJson(existing.spec) === canonicalJson(spec)) return existing;
  throw new BerthError('BERTH_TASK_EXISTS', `a task with id ${existing.id} exists already, with another spec`, { context: { taskId: existing.id } });
}

/**
 * `spec` with its `ports` as the stored spec has them where they agree (the same container port and
 * protocol, and no other host port or address asked for): a retried submit of a spec with dynamic
 * ports is the same submission as the one whose ports the agent filled in.
 */
export function withPortsAsStored(spec: StoredTaskSpec, stored: StoredTaskSpec): StoredTaskSpec {
  const asked = (spec as { ports?: unknown }).ports;
  const filled = (stored as { ports?: unknown }).ports;
  if (!Array.isArray(asked) || !Array.isArray(filled) || asked.length !== filled.length) return spec;
  const ports = asked.map((raw: unknown, i) => {
    const port = raw as Partial<PortSpec> | null;
    const have = filled[i] as PortSpec;
    const agrees =
      port !== null &&
      typeof port === 'object' &&
      port.container === have.container &&
      (port.protocol ?? 'tcp') === have.protocol &&
      (port.host === undefined || port.host === have.host) &&
      (port.hostIp === undefined || port.hostIp === have.hostIp);
    return agrees ? have : raw;
  });
  return { ...spec, ports } as StoredTaskSpec;
}
