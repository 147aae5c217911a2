import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { containerNameForTask, LABELS } from '../common/labels.js';
import type { AttachedStreams, ContainerEventStream, Engine, ExecSession } from '../engine/engine.js';
import type { ContainerInspect } from '../engine/types.js';
import { cancelledError, isBerthError, ValidationError, type FieldIssue } from '../common/errors.js';
import { countBoundRule, DURATION_LIMITS, durationBoundRule, type CountBounds, type DurationBounds } from '../common/units.js';
import { TASK_PHASE_CHANNEL } from '../common/diagnostics.js';
import { Events, type EventListener, type EventSource, type Unsubscribe } from '../common/events.js';
import { silentLogger, type Logger } from '../common/logger.js';
import { readOwnerProcess, type OwnerProcess } from '../common/owner-process.js';
import { resolveAcceptedTaskSpec, resolveTaskSpec, type ResolvedTaskSpec, type SpecPolicy, type TaskSpec } from '../spec/schema.js';
import { isRegistryAuthRef, registryMismatch, type InlineRegistryAuth } from '../spec/registry-auth.js';
import { toCreatePlan, toNetworkPlacement, type GroupMembership, type TaskIdentity } from '../spec/translate.js';
import { resolveGroupSpec, type ResolvedGroupSpec } from '../spec/group.js';
import { withSeccompProfile } from './seccomp-profiles.js';
import { confirmBindSources, engineSocketGuards, resolveBindSources, withResolvedSources, type BindSourcePolicy, type ResolvedBindSource } from './bind-sources.js';
import { placeFiles, type UploadOpener } from './files-in.js';
import { codeOf, connectNetworks, createIdempotent, DEFAULT_RETRY_POLICY, isAmbiguousFailure, preferredContainer, removeContainer, startIdempotent, withRemovalAttempts, type ContainerEngine, type RetryPolicy } from './container-ops.js';
import { retry } from '../common/retry.js';
import { listingVerdict } from './end-watch.js';
import { TaskHandle, type TaskPause, type WarmTaskInit } from './handle.js';
import type { StartPath } from '../pools/types.js';
import { LateCreateGuard } from './late-create.js';
import { OomWatch, type OomWatchOptions } from './oom-watch.js';
import type { PhaseChange } from './lifecycle.js';
import { WarmPools, type PoolClaim } from '../pools/pools.js';
import { execEnv, launchRequest } from '../pools/key.js';
import { launchThrough } from '../pools/launch.js';
import { execGateOf } from './exec-gate.js';
import type { ColdReason, PoolDefinition } from '../pools/types.js';
import type { EndFacts } from './end-watch.js';

/** Published on every task phase change: `{ taskId, from, to }` (its name is in common/diagnostics.ts). */
export { TASK_PHASE_CHANNEL };

/** Events of a TaskDriver (`driver.on(type, listener)`): every phase change of its handles. */
export interface TaskDriverEvents {
  phase: PhaseChange;
}

/**
 * Streams for a task with no attach connection: stdout and stderr that end at once, nothing to
 * close. For a task whose output is read from the engine's log (`output: 'engine-log'`) and that has
 * no stdin to write, and for a recovered task (the driver never attached to it).
 */
function noStreams(): AttachedStreams {
  return { stdout: Readable.from([]), stderr: Readable.from([]), close: () => undefined };
}

/** What the driver needs from an image coordinator: make the image present, and hold it for a task. */
export interface ImageProvider {
  /** `auth`: the task's own credentials (its spec's registryAuth, a ref resolved), for this pull only. */
  acquire(image: string, holderId: string, options: { policy: ResolvedTaskSpec['pull']; signal?: AbortSignal; auth?: InlineRegistryAuth }): Promise<unknown>;
  release(holderId: string): void;
}

export interface TaskDriverOptions {
  /** The engine; its `socketPath` (an Engine reached through a unix socket has one) is never bind-mounted unless the policy allows it. */
  engine: ContainerEngine & { readonly socketPath?: string } & Partial<Pick<Engine, 'storageDriver' | 'inspectNetwork' | 'inspectImage' | 'inspectExec'>>;
  /**
   * Warm pools (README "Warm pools"): containers kept started and idle for tasks whose spec matches
   * a pool's create-time parts; such a task runs as an exec in one (`handle.startPath`). Filled once
   * `driver.pools.start()` is called. Default: none. Needs an engine with `inspectImage` and `inspectExec`.
   */
  pools?: readonly PoolDefinition[];
  /** Where the pools' holder program is written on the host (src/pools/holder.ts). Default: `berth-holder` under the system's temporary directory. */
  holderDir?: string;
  /** Written on every container as the owner label; the reconciler removes only its own owner's containers. Default "berth". */
  ownerId?: string;
  /**
   * Whether containers carry this process as their owner (host, boot, pid namespace, pid, start
   * time), so that the agent's reconciler and `berth prune` remove them once this process is gone
   * (killed, crashed, or ended without destroying its tasks) and the grace period has passed.
   * `'self'` (default) suits short-lived owners: `berth run`, a library driver in a job. `'none'`
   * suits owners that outlive their process and take their containers back with `recover()` after a
   * restart, as the agent does: their containers must not look orphaned while they are away.
   */
  ownerProcess?: 'self' | 'none';
  /**
   * What specs may ask for. Default: nothing privileged, any capability, any bind source that
   * exists and does not expose the engine's socket. Bind sources are resolved on the host (symlinks
   * followed) before each create, and the engine is given the resolved path.
   */
  policy?: Partial<SpecPolicy>;
  /**
   * Host paths no bind source may be, lie under or contain, whatever the policy: the agent passes
   * its data directory (its token and socket would give a task control of the agent).
   */
  protectedHostPaths?: readonly string[];
  /** Pulls and holds images; without one, images must already be present. */
  images?: ImageProvider;
  /**
   * Resolves a spec's `registryAuth: { ref }` to credentials, with the registry host they are for,
   * when the task's image is acquired (so a rotated password file is read afresh); undefined: no
   * credentials by that name. Credentials are never sent to a registry other than their own: an
   * image on another registry is refused (BERTH_VALIDATION). Default: none, so a spec with a `ref`
   * fails to start.
   */
  registryCredentials?: (ref: string) => Promise<{ host: string; credentials: InlineRegistryAuth } | undefined>;
  /**
   * Opens an upload named by a spec's `files: [{ upload }]` (the agent's uploads); undefined: none.
   * Default: no uploads, so such a spec fails to start (BERTH_VALIDATION).
   */
  openUpload?: UploadOpener;
  /** Retries of ambiguous engine failures (create, start, stop, remove, wait). Default 5 attempts from 100 ms; 1 to 100 attempts, delays up to a day. */
  retry?: Partial<RetryPolicy>;
  logger?: Logger;
  /**
   * How often the driver lists its owner's containers, while any task runs, to notice ends that
   * the wait missed (its connection died or stalls, the engine was restarted or paused). A task
   * whose container stopped is ended within two periods of the engine answering again. Default
   * 5000 ms; 100 ms to 24 days.
   */
  relistPeriodMs?: number;
  /**
   * End a running task as `lost` once the engine has been unreachable (or too slow to answer) this
   * long without a break while berth waits for the task's end. Default: never: an engine outage is
   * waited out, and the task ends with its real exit code once the engine answers again. 1 ms to 365 days.
   */
  lostAfterUnreachableMs?: number;
  /**
   * Where the kernel's out-of-memory evidence is read while tasks run (src/tasks/oom-watch.ts): the
   * memory cgroup hierarchy (`cgroupRoot`, default /sys/fs/cgroup) and the kernel's log
   * (`kernelLogPath`, default /dev/kmsg; false: never read). Where they cannot be read (the engine on
   * another host, no permission), the engine's OOM flag and events decide, as with `false` here.
   * Default: both, read on this host.
   */
  oomEvidence?: Pick<OomWatchOptions, 'cgroupRoot' | 'kernelLogPath'> | false;
}

/** Default TaskDriverOptions.relistPeriodMs. */
export const DEFAULT_RELIST_PERIOD_MS = 5000;

/**
 * The bounds of the driver's options. The relist period and retry delays are held by one Node timer
 * each; the unreachable limit is compared with the clock.
 */
export const DRIVER_OPTION_BOUNDS = Object.freeze({
  relistPeriodMs: { minMs: 100, maxMs: DURATION_LIMITS.timerMs },
  lostAfterUnreachableMs: { minMs: 1, maxMs: DURATION_LIMITS.longMs },
  retryAttempts: { min: 1, max: 100 },
  retryDelayMs: { minMs: 0, maxMs: DURATION_LIMITS.operationMs },
});

/** A millisecond option's issue: not a finite number, or outside its bounds. */
function msOptionIssues(field: string, value: number, bounds: DurationBounds): FieldIssue[] {
  const rule = typeof value === 'number' && Number.isFinite(value) ? durationBoundRule(value, bounds) : 'must be a number of milliseconds';
  return rule === undefined ? [] : [{ field, rule }];
}

function wholeOptionIssues(field: string, value: number, bounds: CountBounds): FieldIssue[] {
  const rule = Number.isInteger(value) ? countBoundRule(value, bounds) : 'must be a whole number';
  return rule === undefined ? [] : [{ field, rule }];
}

/** The task id to start under (a random UUID when none is given), checked against TASK_ID. */
function checkedTaskId(taskId: string = randomUUID()): string {
  if (!TASK_ID.test(taskId)) throw new ValidationError([{ field: 'taskId', rule: `must match ${TASK_ID.source}` }]);
  return taskId;
}

/** The engine events that may mean a tracked container ended. */
const END_EVENTS = ['die', 'oom', 'destroy'] as const;
/** How much earlier than a live task's start the driver's event stream is replayed from (the engine's clock is read in whole seconds). */
const EVENTS_REPLAY_MARGIN_MS = 2000;

export interface StartOptions {
  /**
   * How the task's output is read. `attach` (default): `handle.stdout`/`stderr`, attached before
   * start. `engine-log`: nothing is attached (but stdin, when the spec has one); the output is read
   * from the engine's own log with timestamps (`engine.logEntries`), which lets a restarted reader
   * resume exactly where it stopped. The handle then says so (`handle.output === 'engine-log'`)
   * and its `stdout`/`stderr` end at once: the engine's log is the output's only path.
   */
  output?: 'attach' | 'engine-log';
  /** Unique per task of this owner; with the owner id, names the container (see `containerNameForTask`). Default: a random UUID. */
  taskId?: string;
  /**
   * Names this start of the task (a container label). A container under the task's name is adopted
   * only when an earlier create of the same start made it (its answer was lost); anything else is a
   * BERTH_NAME_CONFLICT, as the engine refuses a name in use. An owner that starts a task again after
   * a crash (the agent) passes the same value each time, so the dead start's late create is adopted.
   * Default: a random UUID, so two starts with one task id never share a container.
   */
  startAttempt?: string;
  /** Aborting it stops the task (end state `cancelled`), or undoes a start still under way. */
  signal?: AbortSignal;
  /**
   * Resolve only once the engine reports the task healthy (`handle.healthy()`), as a function call
   * is served only by a healthy container. A task that is unhealthy, ends first or gives no verdict
   * in time is destroyed and start rejects with BERTH_TASK_UNHEALTHY; one without a health check
   * (neither its spec nor its image) is destroyed too, with BERTH_TASK_STATE. Default: the spec's
   * `waitHealthy` (false).
   */
  waitHealthy?: boolean;
  /**
   * The bind policy in force for this start, instead of the driver's: an owner whose policy can
   * change (the agent reloads its configuration) passes the one in force now. Default: the driver's.
   */
  bindPolicy?: BindSourcePolicy;
  /**
   * The task's place in a group (src/groups): it joins the group's infrastructure container's
   * network namespace and mounts the group's shared volume, and its container carries the group's
   * labels. The spec must leave the network to the group (src/spec/group.ts checks that).
   */
  group?: GroupMembership;
  /**
   * Whether the task may take an idle container of a matching warm pool (`driver.pools`). Default
   * true; false starts it cold (`handle.startPath` then says `no-pool`).
   */
  pool?: boolean;
}

/** The longest task id (and owner id) accepted. */
export const TASK_ID_MAX_LENGTH = 128;

/**
 * What a task id (and an owner id) may be: both are part of a container name (see
 * `containerNameForTask`). The one definition: the agent's HTTP schemas use its `source`.
 */
export const TASK_ID = new RegExp(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,${TASK_ID_MAX_LENGTH - 1}}$`);

/** How many claimed pool containers a task tries (each that cannot serve it is removed) before it starts cold (`pool-failed`). */
const WARM_START_ATTEMPTS = 3;

/**
 * Runs task specs as containers: validate, acquire the image, create (idempotently), attach, start.
 * Every failure path removes what may have been created.
 */
export class TaskDriver implements EventSource<TaskDriverEvents> {
  readonly ownerId: string;
  readonly #engine: ContainerEngine & { readonly socketPath?: string } & Partial<Pick<Engine, 'storageDriver' | 'inspectNetwork' | 'inspectImage' | 'inspectExec'>>;
  /** The driver's warm pools (none unless `pools` were given): call `pools.start()` to fill them, `pools.close()` to remove their idle containers. */
  readonly pools: WarmPools;
  readonly #policy: SpecPolicy;
  readonly #protectedHostPaths: readonly string[];
  readonly #images: ImageProvider | undefined;
  readonly #registryCredentials: TaskDriverOptions['registryCredentials'];
  readonly #openUpload: UploadOpener | undefined;
  readonly #retry: RetryPolicy;
  readonly #logger: Logger;
  readonly #published: Events<TaskDriverEvents>;
  readonly #lateCreates: LateCreateGuard;
  readonly #ownerProcess: OwnerProcess | undefined;
  readonly #relistPeriodMs: number;
  readonly #lostAfterUnreachableMs: number | undefined;
  /** Started tasks whose end is not known yet: the relist and the events watch these. */
  readonly #live = new Map<string, TaskHandle>();
  /** The OOM kill counters of the live tasks' cgroups, and the kernel's log (see oom-watch.ts). */
  readonly #oomWatch: OomWatch | undefined;
  #relistTimer: NodeJS.Timeout | undefined;
  #events: ContainerEventStream | undefined;
  #eventsOpening = false;

  constructor(options: TaskDriverOptions) {
    this.#engine = options.engine;
    this.ownerId = options.ownerId ?? 'berth';
    if (!TASK_ID.test(this.ownerId)) throw new ValidationError([{ field: 'ownerId', rule: `must match ${TASK_ID.source}` }]);
    if (options.ownerProcess !== undefined && options.ownerProcess !== 'self' && options.ownerProcess !== 'none') {
      throw new ValidationError([{ field: 'ownerProcess', rule: 'must be "self" or "none"' }]);
    }
    this.#policy = { allowPrivileged: false, ...options.policy };
    this.#protectedHostPaths = [...(options.protectedHostPaths ?? [])];
    this.#images = options.images;
    this.#registryCredentials = options.registryCredentials;
    this.#openUpload = options.openUpload;
    this.#retry = withRemovalAttempts({ ...DEFAULT_RETRY_POLICY, ...options.retry }, options.retry);
    this.#logger = options.logger ?? silentLogger;
    this.#published = new Events(this.#logger);
    this.#lateCreates = new LateCreateGuard(this.#engine, this.#logger);
    // Read once: this process's identity does not change. Undefined off Linux: then nothing is labelled.
    this.#ownerProcess = options.ownerProcess === 'none' ? undefined : readOwnerProcess();
    this.#relistPeriodMs = options.relistPeriodMs ?? DEFAULT_RELIST_PERIOD_MS;
    this.#lostAfterUnreachableMs = options.lostAfterUnreachableMs;
    this.#oomWatch = options.oomEvidence === false ? undefined : new OomWatch({ ...options.oomEvidence, logger: this.#logger });
    const issues = [
      ...msOptionIssues('relistPeriodMs', this.#relistPeriodMs, DRIVER_OPTION_BOUNDS.relistPeriodMs),
      ...(this.#lostAfterUnreachableMs === undefined ? [] : msOptionIssues('lostAfterUnreachableMs', this.#lostAfterUnreachableMs, DRIVER_OPTION_BOUNDS.lostAfterUnreachableMs)),
      ...wholeOptionIssues('retry.attempts', this.#retry.attempts, DRIVER_OPTION_BOUNDS.retryAttempts),
      ...msOptionIssues('retry.initialDelayMs', this.#retry.initialDelayMs, DRIVER_OPTION_BOUNDS.retryDelayMs),
      ...msOptionIssues('retry.maxDelayMs', this.#retry.maxDelayMs, DRIVER_OPTION_BOUNDS.retryDelayMs),
    ];
    if (issues.length > 0) throw new ValidationError(issues);
    const engine = this.#engine;
    const definitions = options.pools ?? [];
    if (definitions.length > 0 && (engine.inspectImage === undefined || engine.inspectExec === undefined)) {
      throw new ValidationError([{ field: 'pools', rule: 'need an engine that inspects images and execs' }]);
    }
    this.pools = new WarmPools(definitions, (spec) => withSeccompProfile(this.resolve(spec), this.#policy), {
      engine,
      ownerId: this.ownerId,
      ...(this.#ownerProcess ? { ownerProcess: this.#ownerProcess } : {}),
      retry: this.#retry,
      logger: this.#logger,
      ...(options.holderDir === undefined ? {} : { holderDir: options.holderDir }),
      prepareSpec: (spec) => withResolvedSources(spec, this.resolveBindSources(spec)),
      acquireImage: (spec, holderId) => this.acquireImage(spec, holderId),
      releaseImage: (holderId) => this.releaseImages(holderId),
    });
  }


  /** The task's own registry credentials: inline as given, or a `ref` resolved (and checked against the image's registry). */
  async #taskRegistryAuth(resolved: ResolvedTaskSpec): Promise<InlineRegistryAuth | undefined> {
    const auth = resolved.registryAuth;
    if (auth === undefined) return undefined;
    if (!isRegistryAuthRef(auth)) return auth;
    const found = this.#registryCredentials ? await this.#registryCredentials(auth.ref) : undefined;
    if (found === undefined) {
      throw new ValidationError([{ field: 'registryAuth.ref', rule: `no registry credentials named ${JSON.stringify(auth.ref)} are configured` }]);
    }
    const mismatch = registryMismatch(resolved.image, found.host);
    if (mismatch !== undefined) throw new ValidationError([{ field: 'registryAuth.ref', rule: mismatch }]);
    return found.credentials;
  }

  /**
   * Resolves when background clean-up has finished: after a create timed out, the task's name is
   * watched for a while (twice the engine's write deadline) in case the engine acts late.
   */
  settled(): Promise<void> {
    return this.#lateCreates.settled();
  }

  /**
   * Validates a group (src/spec/group.ts) against this driver's policy, as `resolve` does a task:
   * a ValidationError names every field at fault (`tasks[1].resources.memory`).
   */
  resolveGroup(spec: unknown): ResolvedGroupSpec {
    return resolveGroupSpec(spec, this.#policy);
  }

  /** This driver's process as the owner its containers name (undefined with `ownerProcess: 'none'`): a group's objects carry it too. */
  get ownerProcess(): OwnerProcess | undefined {
    return this.#ownerProcess;
  }

  /** The driver's retry policy, for an owner that makes objects next to the tasks (a group's). */
  get retryPolicy(): RetryPolicy {
    return this.#retry;
  }

  /**
   * Makes a task's image present and held by `holderId`, as `start` does before the create (with
   * the task's own registry credentials): a group pulls every task's image before it makes
   * anything. `start` acquires again (holders are a set: one hold; with pull policy `always` it asks
   * the registry again). Without an image provider, nothing is done. Release with `releaseImages`.
   */
  async acquireImage(spec: ResolvedTaskSpec, holderId: string, signal?: AbortSignal): Promise<void> {
    if (!this.#images) return;
    const auth = await this.#taskRegistryAuth(spec);
    await this.#images.acquire(spec.image, holderId, { policy: spec.pull, signal, ...(auth ? { auth } : {}) });
  }

  /** Whether the driver pulls images (an image provider was given): otherwise they must be present. */
  get pullsImages(): boolean {
    return this.#images !== undefined;
  }

  /**
   * Validates a spec against this driver's policy without touching the engine or the host's file
   * system; bind sources are resolved on the host by `resolveBindSources` (which `start` calls).
   */
  resolve(spec: TaskSpec): ResolvedTaskSpec {
    return resolveTaskSpec(spec, this.#policy);
  }

  /**
   * Resolves a spec's bind sources on the host and checks them against a bind policy (default:
   * this driver's): each must exist, resolve (symlinks followed) under an allowed root, and not
   * expose the engine's socket unless the policy names it. Throws a ValidationError naming each
   * `mounts[i].source` at fault. Owners that accept tasks before starting them (the agent's submit)
   * call it then; `start` calls it again just before the create.
   */
  resolveBindSources(spec: ResolvedTaskSpec, policy: BindSourcePolicy = this.#policy): readonly ResolvedBindSource[] {
    // Without a bind there is nothing to resolve: the guards' file system calls are skipped.
    if (!spec.mounts.some((mount) => mount.type === 'bind')) return [];
    // The guards are read each time: a restarted engine makes its socket anew.
    return resolveBindSources(spec.mounts, policy, engineSocketGuards(this.#engine.socketPath, this.#protectedHostPaths));
  }

  /** Starts a task and returns its handle once the container runs (and, with `waitHealthy`, is healthy). */
  async start(spec: TaskSpec, options: StartOptions = {}): Promise<TaskHandle> {
    const taskId = checkedTaskId(options.taskId);
    return this.#start(taskId, this.resolve(spec), options);
  }

  /**
   * Starts a task whose spec its owner accepted earlier under the owner's own policy (the agent
   * checks each spec against the policy in force at submit, stores it, and starts it later):
   * the spec is re-read with `resolveAcceptedTaskSpec`, so this driver's policy is not applied
   * to it again. Its bind sources are still checked, against `options.bindPolicy`.
   */
  async startAccepted(spec: TaskSpec, options: StartOptions = {}): Promise<TaskHandle> {
    const taskId = checkedTaskId(options.taskId);
    return this.#start(taskId, resolveAcceptedTaskSpec(spec), options);
  }

  /**
   * Refuses `storageSize` where the engine's storage driver has no size quota, naming the driver,
   * rather than leaving the engine to refuse the create: the caller learns what bounds writes there.
   */
  async #checkStorageQuota(signal: AbortSignal | undefined): Promise<void> {
    const info = await this.#engine.storageDriver?.({ signal });
    if (info?.supportsSizeQuota) return;
    const driver = info === undefined ? 'an engine that does not report its storage driver' : `the engine's storage driver ${info.driver}${info.backingFilesystem === undefined ? '' : ` on ${info.backingFilesystem}`}`;
    throw new ValidationError([
      {
        field: 'storageSize',
        rule: `is not supported by ${driver}: a size quota needs overlay2 on xfs mounted with pquota, btrfs, zfs or devicemapper; bound the task's writes with readOnlyRootfs and a sized tmpfs instead`,
      },
    ]);
  }

  async #checkNetworksExist(resolved: ResolvedTaskSpec, signal: AbortSignal | undefined): Promise<void> {
    const inspect = this.#engine.inspectNetwork?.bind(this.#engine);
    if (inspect === undefined) return;
    const issues: FieldIssue[] = [];
    for (const [i, network] of resolved.networks.entries()) {
      try {
        await inspect(network.name, { signal });
      } catch (error) {
        if (!isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) throw error;
        issues.push({ field: `networks[${i}].name`, rule: `network ${network.name} does not exist in the engine; create it first (docker network create ${network.name})` });
      }
    }
    if (issues.length > 0) throw new ValidationError(issues);
  }

  async #start(taskId: string, resolved: ResolvedTaskSpec, options: StartOptions): Promise<TaskHandle> {
    // The spec's own waitHealthy, unless the caller decides (the agent waits for health itself).
    options = { ...options, waitHealthy: options.waitHealthy ?? resolved.waitHealthy };
    if (options.waitHealthy && resolved.healthcheck?.disabled) {
      throw new ValidationError([{ field: 'waitHealthy', rule: 'needs a health check, and the spec disables it (healthcheck.disabled)' }]);
    }
    const { signal } = options;
    if (signal?.aborted) throw cancelledError(`start of task ${taskId}`, signal.reason);
    const bindPolicy = options.bindPolicy ?? this.#policy;
    // Checked before the image is fetched, so that a refused source costs no pull; checked again before the create.
    this.resolveBindSources(resolved, bindPolicy);
    // A named seccomp profile's file is read now: a missing one costs no pull.
    resolved = withSeccompProfile(resolved, bindPolicy);
    // A warm start first: an idle container of a matching pool, the task run as an exec in it.
    let coldReason: ColdReason = 'no-pool';
    if (options.pool !== false && this.pools.declared) {
      let missedPool: string | undefined;
      // A claimed container that could not serve the task was removed: the next idle one is tried,
      // a few times at most, then the task goes cold saying so.
      for (let failed = 0; ; ) {
        const claimed = this.pools.claim(resolved, { waitHealthy: options.waitHealthy ?? false, inGroup: options.group !== undefined });
        if (claimed.kind === 'claimed') {
          const warm = await this.#startWarm(taskId, resolved, claimed.claim, options);
          if (warm !== undefined) return warm;
          coldReason = 'pool-failed';
          missedPool = claimed.claim.pool;
          if (++failed < WARM_START_ATTEMPTS) continue;
        } else if (failed === 0) {
          coldReason = claimed.reason;
          missedPool = claimed.pool;
          if (claimed.detail !== undefined) this.#logger.debug({ taskId, reason: claimed.reason, detail: claimed.detail }, 'the task starts cold');
        }
        break;
      }
      this.pools.noteMiss(taskId, coldReason, missedPool);
    }
    if (resolved.storageSizeBytes !== undefined) await this.#checkStorageQuota(signal);
    // A named network that does not exist is the spec's fault: said now, naming the field, with nothing created or pulled.
    await this.#checkNetworksExist(resolved, signal);
    const identity: TaskIdentity = {
      taskId,
      ownerId: this.ownerId,
      startAttempt: options.startAttempt ?? randomUUID(),
      ...(this.#ownerProcess ? { ownerProcess: this.#ownerProcess } : {}),
      ...(options.group === undefined ? {} : { group: options.group }),
    };
    // The create plan's name does not depend on the mounts; its body is made from the sources resolved just before the create.
    let plan = toCreatePlan(resolved, identity);
    const log = this.#logger;

    if (this.#images) {
      const auth = await this.#taskRegistryAuth(resolved);
      await this.#images.acquire(resolved.image, taskId, { policy: resolved.pull, signal, ...(auth ? { auth } : {}) });
    }
    let containerId: string | undefined;
    let started: TaskHandle;
    let createMayArriveLate = false;
    const guardLateCreate = (): void => {
      if (createMayArriveLate) this.#lateCreates.watch(plan.name, identity, this.#engine.deadlines.writeMs * 2);
    };
    try {
      // Resolved again as late as possible, and the resolved paths given to the engine, so that it follows no symlink berth did not check.
      const binds = this.resolveBindSources(resolved, bindPolicy);
      plan = toCreatePlan(withResolvedSources(resolved, binds), identity);
      const created = await createIdempotent(this.#engine, plan, identity, this.#retry, log, signal, () => {
        createMayArriveLate = true;
      });
      containerId = created.containerId;
      if (created.adopted) log.info({ taskId, containerId }, 'adopted the container an earlier create made');
      // The engine takes one named network at create; the others are joined before the start.
      await connectNetworks(this.#engine, containerId, plan, this.#retry, signal);
      // Written after create, before start: the task finds its files in place from its first instruction.
      if (resolved.files.length > 0) await placeFiles(this.#engine, containerId, resolved.files, this.#openUpload, signal);
      // Attach before start, so that not a byte of output is lost.
      const streams =
        options.output === 'engine-log'
          ? await this.#attachStdinOnly(containerId, resolved, signal)
          : await this.#attach(containerId, { stdin: resolved.stdin !== undefined, tty: resolved.tty }, signal);
      const handle = this.#newHandle(taskId, containerId, resolved, streams, guardLateCreate, options.output !== 'engine-log', { kind: 'cold', reason: coldReason });
      try {
        // The engine mounts at start: a source changed since the check is refused, not followed.
        confirmBindSources(binds);
        await startIdempotent(this.#engine, containerId, this.#retry, log, signal);
      } catch (error) {
        streams.close();
        throw error;
      }
      handle.markStarted();
      this.#watchEnd(handle, streams);
      if (signal) {
        const onAbort = (): void => void handle.stop();
        signal.addEventListener('abort', onAbort, { once: true });
        void handle.wait().finally(() => signal.removeEventListener('abort', onAbort));
      }
      started = handle;
    } catch (error) {
      // Without a container id, createIdempotent has already removed what it may have made; removing
      // by name here could delete a container that belongs to someone else.
      await this.#undoStart(taskId, containerId);
      guardLateCreate();
      if (signal?.aborted && !isBerthError(error, 'BERTH_CANCELLED')) throw cancelledError(`start of task ${taskId}`, error);
      throw error;
    }
    if (options.waitHealthy) await this.#awaitHealthyOrDestroy(started, signal);
    return started;
  }

  /** Waits for a started task to be healthy; one that never is gets destroyed, for nobody else holds its handle. */
  async #awaitHealthyOrDestroy(handle: TaskHandle, signal: AbortSignal | undefined): Promise<void> {
    try {
      await handle.healthy(signal);
    } catch (error) {
      try {
        await handle.destroy();
      } catch (destroyError) {
        this.#logger.error({ taskId: handle.taskId, containerId: handle.containerId, code: codeOf(destroyError) }, 'could not remove the container of a task that never became healthy');
      }
      if (signal?.aborted && !isBerthError(error, 'BERTH_CANCELLED')) throw cancelledError(`start of task ${handle.taskId}`, error);
      throw error;
    }
  }

  /**
   * Finds the container of a task started earlier (by this process or one before it) and returns a
   * handle to it: running, or already ended (its wait resolves at once with the engine's verdict).
   * The container is the one under the task's name, or else the one labelled with the task id and
   * this owner's id, so a container an earlier berth named `berth-<task id>` is recovered after an
   * upgrade. Resolves undefined when there is no container of this owner's task. Output is not attached:
   * read it from the engine's log (`engine.logEntries`) from where the previous reader stopped.
   * `stopRequested`: the caller had asked the task to stop before it lost track of it; the task then
   * ends `cancelled` even if that earlier stop already ended it. `pause`: the task's pauses as the
   * caller recorded them, so that its run time limit does not count them; the engine decides whether
   * it is paused now (a pause nobody recorded began now; a recorded one the engine no longer shows
   * counts until now). `startAttempt`: only a container of that start is the task's; one of another
   * start (an earlier attempt of a restarted task) is removed, and undefined resolved.
   */
  async recover(taskId: string, spec: TaskSpec, options: { bindPolicy?: BindSourcePolicy; stopRequested?: boolean; pause?: TaskPause; startAttempt?: string } = {}): Promise<TaskHandle | undefined> {
    // The spec passed its owner's policy when it was accepted: re-read without it (resolveAcceptedTaskSpec
    // says why), so a policy reloaded since cannot orphan the task's container.
    const resolved = resolveAcceptedTaskSpec(spec);
    const found = await this.#findOwnContainer(taskId);
    if (found === undefined) return undefined;
    if (options.startAttempt !== undefined && found.labels[LABELS.startAttempt] !== options.startAttempt) {
      // An earlier start of the task (an attempt its owner restarted, whose removal a crash cut
      // short): not the start asked about. It ended; removed, so the start asked for can be made.
      this.#logger.info({ taskId, containerId: found.id }, 'removed the container of an earlier start of the task');
      await removeContainer(this.#engine, found.id, this.#retry);
      return undefined;
    }
    if (found.status === 'created') {
      // The engine mounts at start: bind sources are checked again before a container that never
      // started is started, as `start` does, and one that now escapes is removed, not started.
      try {
        this.resolveBindSources(resolved, options.bindPolicy ?? this.#policy);
      } catch (error) {
        await removeContainer(this.#engine, found.id, this.#retry);
        throw error;
      }
    }
    // The image is held again by the caller (which knows the holders it recorded); nothing to acquire.
    const handle = this.#newHandle(taskId, found.id, resolved, noStreams(), () => undefined);
    // A stop the caller's earlier self asked for may have ended the task already: the intent stands.
    if (options.stopRequested) handle.markStopRequested();
    if (found.status === 'created') {
      // A create whose connects a crash cut short: the further networks are joined (again) before the start.
      await connectNetworks(this.#engine, found.id, toNetworkPlacement(resolved.networks), this.#retry);
      await startIdempotent(this.#engine, found.id, this.#retry, this.#logger);
      handle.markStarted();
    } else {
      // A container that stopped while nobody watched ended when the engine says, not now.
      handle.markStarted(found.startedAt ?? new Date(), found.running || found.paused ? undefined : found.finishedAt, recoveredPause(options.pause, found.paused, Date.now()));
    }
    this.#watchEnd(handle);
    return handle;
  }

  /**
   * Runs a task as an exec in a claimed pool container (thawed first): its command resolved against
   * the image's entrypoint and command, its working dir, its env (the pool's and its own) and stdin.
   * Undefined when the container could not serve it: the container is then removed, and the task
   * starts cold. Never fails a task because of the pool, except that a `signal` that aborted ends the start.
   */
  async #startWarm(taskId: string, resolved: ResolvedTaskSpec, claim: PoolClaim, options: StartOptions): Promise<TaskHandle | undefined> {
    const { signal } = options;
    const inspectExec = this.#engine.inspectExec?.bind(this.#engine);
    let session: ExecSession;
    const giveUp = async (why: Record<string, unknown>): Promise<undefined> => {
      claim.launcher.close();
      // Removing the container ends whatever it holds: a task that may have started there never runs on.
      await this.pools.discard(claim.containerId);
      if (signal?.aborted) throw cancelledError(`start of task ${taskId}`, signal.reason);
      this.#logger.warn({ taskId, pool: claim.pool, containerId: claim.containerId, ...why }, 'a pool container could not serve the task; removed it, the task starts elsewhere');
      return undefined;
    };
    if (inspectExec === undefined) return giveUp({ why: 'the engine does not inspect execs' });
    try {
      await this.pools.ready(claim, signal);
    } catch (error) {
      return giveUp({ code: codeOf(error) });
    }
    const request = launchRequest(claim.argv, execEnv(resolved), resolved.workdir);
    if (request === undefined) {
      // A request the launcher cannot take (a NUL in a string, past its buffer): the engine's own exec judges it.
      claim.launcher.close();
      try {
        session = await execGateOf(this.#engine).setup(
          claim.containerId,
          () =>
            this.#engine.exec(
              claim.containerId,
              { cmd: [...claim.argv], env: execEnv(resolved), ...(resolved.workdir === undefined ? {} : { workdir: resolved.workdir }), stdin: resolved.stdin !== undefined, tty: false },
              { ...(signal ? { signal } : {}), retry: this.#retry },
            ),
          inspectExec,
        );
      } catch (error) {
        return giveUp({ code: codeOf(error) });
      }
    } else {
      const outcome = await launchThrough(claim.launcher, request, { endStdin: resolved.stdin === undefined, ...(signal ? { signal } : {}) });
      if (outcome.kind === 'not-started') return giveUp({ why: outcome.why });
      session = outcome.session;
    }
    const containerId = claim.containerId;
    const handle = this.#newHandle(taskId, containerId, resolved, session, () => undefined, true, undefined, {
      pool: claim.pool,
      execId: session.id,
      engine: { inspectExec, waitContainer: this.#engine.waitContainer.bind(this.#engine), inspectContainer: this.#engine.inspectContainer.bind(this.#engine) },
      session,
      release: (end) => this.pools.release(containerId, end),
      removed: () => this.pools.removed(containerId),
    });
    handle.markStarted();
    this.#watchEnd(handle, session);
    if (signal) {
      const onAbort = (): void => void handle.stop();
      signal.addEventListener('abort', onAbort, { once: true });
      void handle.wait().finally(() => signal.removeEventListener('abort', onAbort));
    }
    this.pools.noteHit(claim, taskId);
    return handle;
  }

  /**
   * Takes back a warm task (one that ran as an exec in a pool container, see `handle.startPath`)
   * after its owner restarted. The exec ended: the handle is ended already, with the exec's exit
   * code (OOM from the container's memory cgroup, as for a cold task). The exec still runs: its
   * output can no longer be followed (an exec's streams are not in the engine's log, and cannot be
   * attached to again), so its container is killed and the task ends `lost`, saying so. Resolves
   * undefined when the container is gone. `stopRequested`: as for `recover`, the task then ends
   * `cancelled`. Destroying the handle removes the container.
   */
  async recoverWarm(taskId: string, options: { spec: TaskSpec; containerId: string; execId: string; stopRequested?: boolean }): Promise<TaskHandle | undefined> {
    const resolved = resolveAcceptedTaskSpec(options.spec);
    const inspectExec = this.#engine.inspectExec?.bind(this.#engine);
    if (inspectExec === undefined) throw new ValidationError([{ field: 'pools', rule: 'need an engine that inspects execs' }]);
    let container: ContainerInspect;
    try {
      container = await retry(() => this.#engine.inspectContainer(options.containerId), { ...this.#retry, shouldRetry: isAmbiguousFailure });
    } catch (error) {
      if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return undefined;
      throw error;
    }
    const exec = await retry(() => inspectExec(options.execId), { ...this.#retry, shouldRetry: isAmbiguousFailure }).catch((error: unknown) => {
      if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return undefined;
      throw error;
    });
    const containerStopped = !container.running && !container.paused;
    let facts: EndFacts;
    if (exec !== undefined && !exec.running && exec.exitCode !== null) {
      facts = { kind: 'stopped', exitCode: exec.exitCode, ...(containerStopped ? { oomKilled: container.oomKilled } : {}), seenBy: 'inspect' };
    } else if (containerStopped) {
      facts = { kind: 'lost', reason: 'the pool container of the warm task stopped while its owner was away, and the engine kept no exit code of its exec' };
    } else {
      // Running on with nobody to read its output: ended now, so that it does not run unobserved.
      await retry(() => this.#engine.killContainer(options.containerId, 'SIGKILL'), { ...this.#retry, shouldRetry: isAmbiguousFailure }).catch((error: unknown) => {
        if (!isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) throw error;
      });
      facts = {
        kind: 'lost',
        reason:
          exec === undefined
            ? 'the warm task\'s exec was unknown to the engine after its owner restarted; its container was killed'
            : 'the warm task was still running as an exec when its owner restarted: an exec\'s output cannot be followed again, so its container was killed',
      };
    }
    const poolName = container.labels[LABELS.pool] ?? '';
    const containerId = container.id;
    this.pools.adoptInUse(poolName, containerId);
    const handle = this.#newHandle(taskId, containerId, resolved, noStreams(), () => undefined, false, undefined, {
      pool: poolName,
      execId: options.execId,
      engine: { inspectExec, waitContainer: this.#engine.waitContainer.bind(this.#engine), inspectContainer: this.#engine.inspectContainer.bind(this.#engine) },
      knownEnd: facts,
      // A recovered task's container is never reused: what it left behind is not known.
      release: () => Promise.resolve('remove'),
      removed: () => this.pools.removed(containerId),
    });
    if (options.stopRequested) handle.markStopRequested();
    handle.markStarted(container.startedAt ?? new Date(), containerStopped ? container.finishedAt : undefined);
    this.#watchEnd(handle);
    return handle;
  }

  /**
   * This owner's container of a task: the one under the task's name, or else one found by its labels
   * (managed, task id, owner id), which is how a container named by an earlier version of berth
   * (`berth-<task id>`) is found after an upgrade. Of several found by labels, the running one, else
   * the newest. Undefined when there is none.
   */
  async #findOwnContainer(taskId: string): Promise<ContainerInspect | undefined> {
    const isOurs = (labels: Readonly<Record<string, string>>): boolean =>
      labels[LABELS.managed] === 'true' && labels[LABELS.taskId] === taskId && labels[LABELS.ownerId] === this.ownerId;
    try {
      const named = await this.#engine.inspectContainer(containerNameForTask({ taskId, ownerId: this.ownerId }));
      if (isOurs(named.labels)) return named;
    } catch (error) {
      if (!isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) throw error;
    }
    const rows = await this.#engine.listContainers({ all: true, labels: [`${LABELS.managed}=true`, `${LABELS.taskId}=${taskId}`, `${LABELS.ownerId}=${this.ownerId}`] });
    const candidates = rows.filter((row) => isOurs(row.labels));
    if (candidates.length === 0) return undefined;
    const chosen = preferredContainer(candidates);
    if (candidates.length > 1) {
      this.#logger.warn({ taskId, containerIds: candidates.map((row) => row.id), chosen: chosen!.id }, 'several containers of one task of this owner; recovering the running (else the newest) one');
    }
    try {
      return await this.#engine.inspectContainer(chosen!.id);
    } catch (error) {
      if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return undefined;
      throw error;
    }
  }

  #newHandle(taskId: string, containerId: string, spec: ResolvedTaskSpec, streams: AttachedStreams, afterDestroy: () => void, attached = false, startPath?: StartPath, warm?: WarmTaskInit): TaskHandle {
    return new TaskHandle(
      { taskId, containerId, spec, streams, attached, ...(startPath ? { startPath } : {}), ...(warm ? { warm } : {}) },
      {
        engine: this.#engine,
        retryPolicy: this.#retry,
        logger: this.#logger,
        lostAfterUnreachableMs: this.#lostAfterUnreachableMs,
        ...(this.#oomWatch ? { oomEvidence: this.#oomWatch } : {}),
        onPhase: (change) => this.#onPhase(change),
        onDestroyed: (id) => {
          this.releaseImages(id);
          afterDestroy();
        },
      },
    );
  }

  /**
   * Cross-checks a started task's end: its attach connection's end, the owner's engine events and
   * the periodic relist each make the handle ask the engine, so no single connection can hide an end.
   */
  #watchEnd(handle: TaskHandle, streams?: AttachedStreams): void {
    this.#live.set(handle.containerId, handle);
    this.#oomWatch?.track(handle.containerId);
    void streams?.closed?.then(() => handle.hintEnd('attach-closed'));
    void handle.wait().finally(() => {
      // A pool container with hot reuse may serve the next task already: only this task's entry goes.
      if (this.#live.get(handle.containerId) === handle) {
        this.#live.delete(handle.containerId);
        this.#oomWatch?.forget(handle.containerId);
      }
      if (this.#live.size === 0) this.#stopWatching();
    });
    this.#scheduleRelist(this.#relistPeriodMs);
    this.#openEvents();
  }

  #scheduleRelist(delayMs: number): void {
    if (this.#relistTimer !== undefined || this.#live.size === 0) return;
    this.#relistTimer = setTimeout(() => void this.#relist(), delayMs);
    // The relist serves the tasks' waits; it alone must not keep a process alive.
    this.#relistTimer.unref();
  }

  /** Lists the owner's containers (as kubelet's PLEG relists) and tells each tracked task what the list shows. */
  async #relist(): Promise<void> {
    const startedAt = Date.now();
    const period = this.#relistPeriodMs;
    try {
      // Bounded, so an engine that holds the call cannot stop the relists; a short period does not
      // shorten the engine's own read deadline (a slow engine is not taken for an unreachable one).
      // A paused engine answers a held call as soon as it resumes, which is the soonest possible.
      const boundMs = Math.max(period, this.#engine.deadlines.readMs);
      const rows = await this.#engine.listContainers(
        { all: true, labels: [`${LABELS.managed}=true`, `${LABELS.ownerId}=${this.ownerId}`] },
        { signal: AbortSignal.timeout(boundMs), deadlineMs: boundMs },
      );
      for (const handle of this.#live.values()) {
        const verdict = listingVerdict(handle.containerId, rows);
        handle.hintEnd(verdict === 'running' ? 'engine-answered' : verdict === 'stopped' ? 'relist-stopped' : 'relist-gone');
      }
      this.#openEvents();
    } catch (error) {
      this.#logger.debug({ code: codeOf(error) }, 'the relist of running tasks failed; trying again next period');
      for (const handle of this.#live.values()) handle.hintEnd('engine-unreachable');
    } finally {
      this.#relistTimer = undefined;
      this.#scheduleRelist(Math.max(0, period - (Date.now() - startedAt)));
    }
  }

  /** Follows the owner's containers' end events; a stream that breaks is opened again after a relist that succeeds. */
  #openEvents(): void {
    if (this.#events || this.#eventsOpening || this.#live.size === 0) return;
    this.#eventsOpening = true;
    const labels = [`${LABELS.managed}=true`, `${LABELS.ownerId}=${this.ownerId}`];
    // Replayed from the earliest start of a live task (a second early, for the engine's clock): an
    // event of a task that ended, or was OOM-killed, before this connection was made is not missed.
    // The engine's `oom` can come after its `die` (see oom-watch.ts), while the end is classified.
    const sinceMs = Math.min(...[...this.#live.values()].map((handle) => handle.startedAt?.getTime() ?? Date.now())) - EVENTS_REPLAY_MARGIN_MS;
    void this.#engine
      .openLabelledContainerEvents(labels, END_EVENTS, { sinceMs })
      .then(async (events) => {
        this.#eventsOpening = false;
        if (this.#live.size === 0) return events.close();
        this.#events = events;
        try {
          for await (const event of events) {
            const handle = this.#live.get(event.containerId);
            // The kernel's OOM kill, as the engine announced it: its state's flag can miss it (see TaskHandle.noteOomEvent).
            if (event.action === 'oom') handle?.noteOomEvent();
            // The container's cgroup may still be there: its OOM counter is read before the engine removes it.
            if (handle && (event.action === 'oom' || event.action === 'die')) this.#oomWatch?.readNow(handle.containerId);
            handle?.hintEnd('event');
          }
        } catch (error) {
          this.#logger.debug({ code: codeOf(error) }, 'the engine events stream broke; the relist covers until it is open again');
        } finally {
          if (this.#events === events) this.#events = undefined;
        }
      })
      .catch((error: unknown) => {
        this.#eventsOpening = false;
        this.#logger.debug({ code: codeOf(error) }, 'could not follow the engine events; the relist covers');
      });
  }

  #stopWatching(): void {
    clearTimeout(this.#relistTimer);
    this.#relistTimer = undefined;
    this.#events?.close();
    this.#events = undefined;
  }

  /**
   * Attaches to a created container that has not started yet. Safe to repeat: before start no output
   * has flowed, and a second attach is harmless to the engine. So a retryable failure (a 5xx, a
   * dropped connection, a deadline) is retried with the driver's retry policy; the connection of a
   * failed attempt, if the engine made one, is closed (see Engine.attachContainer), so output
   * reaches the task's streams exactly once, through the one attach that answered.
   */
  #attach(containerId: string, options: { stdin: boolean; tty: boolean }, signal: AbortSignal | undefined): Promise<AttachedStreams> {
    return retry(() => this.#engine.attachContainer(containerId, { ...options, signal }), {
      ...this.#retry,
      signal,
      shouldRetry: isAmbiguousFailure,
      onRetry: (error, attempt) => this.#logger.warn({ containerId, attempt, code: codeOf(error) }, 'attach failed; retrying'),
    });
  }

  async #attachStdinOnly(containerId: string, spec: ResolvedTaskSpec, signal: AbortSignal | undefined): Promise<AttachedStreams> {
    if (spec.stdin === undefined) return noStreams();
    const attached = await this.#attach(containerId, { stdin: true, tty: spec.tty }, signal);
    // Output is read from the engine's log; the attach connection only carries stdin.
    attached.stdout.resume();
    attached.stderr.resume();
    return { ...attached, stdout: Readable.from([]), stderr: Readable.from([]) };
  }

  /** Calls `listener` with every later event of `type` (see TaskDriverEvents); returns its unsubscribe. */
  on<K extends keyof TaskDriverEvents>(type: K, listener: EventListener<TaskDriverEvents[K]>): Unsubscribe {
    return this.#published.on(type, listener);
  }

  /**
   * Releases the images a task holds: the one place holds end. The driver calls it when a task's
   * container is removed (`destroy()`) or its start is undone; call it yourself only for a task that
   * has no container whose removal would (recorded as holding an image by an earlier process, and
   * found ended or gone). Releasing a task that holds nothing does nothing.
   */
  releaseImages(taskId: string): void {
    this.#images?.release(taskId);
  }

  async #undoStart(taskId: string, containerId: string | undefined): Promise<void> {
    this.releaseImages(taskId);
    if (containerId === undefined) return;
    try {
      await removeContainer(this.#engine, containerId, this.#retry);
    } catch (error) {
      this.#logger.error({ taskId, containerId, code: codeOf(error) }, 'could not remove the container of a failed start');
    }
  }

  #onPhase(change: PhaseChange): void {
    this.#published.emit('phase', change);
    if (TASK_PHASE_CHANNEL.hasSubscribers) TASK_PHASE_CHANNEL.publish(change);
  }
}

/** A recovered task's pauses: what the owner recorded, reconciled with whether the engine shows it paused now. */
export function recoveredPause(recorded: TaskPause | undefined, pausedNow: boolean, nowMs: number): TaskPause {
  const pausedForMs = recorded?.pausedForMs ?? 0;
  const since = recorded?.pausedSinceMs;
  if (pausedNow) return { pausedForMs, pausedSinceMs: since ?? nowMs };
  // Unpaused while nobody watched: when is unknown, so the pause counts until now (the task loses no time it was owed).
  return { pausedForMs: since === undefined ? pausedForMs : pausedForMs + Math.max(0, nowMs - since) };
}
