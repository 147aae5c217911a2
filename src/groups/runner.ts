/**
 * The library's task groups: `new GroupRunner({ driver, engine }).start(groupSpec)` validates the
 * group, makes its images present, creates its objects (shared volume, private network,
 * infrastructure container), then starts its tasks in the group's namespace as the lifecycle
 * planner (lifecycle.ts) says, after every change, until the group ends; then it removes every
 * task container and the group's objects. Every failure path (a refused start, a failed pull, the
 * engine failing mid-way, the caller's signal) removes what was made.
 */
import { randomBytes } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { BerthError, cancelledError, codeOf, isBerthError, messageOf, ValidationError } from '../common/errors.js';
import { GROUPS_CHANNEL } from '../common/diagnostics.js';
import { Events, type EventListener, type EventSource, type Unsubscribe } from '../common/events.js';
import { LABEL_PREFIX } from '../common/labels.js';
import { silentLogger, type Logger } from '../common/logger.js';
import { commandFailureOf } from '../engine/classify.js';
import type { Engine } from '../engine/engine.js';
import type { PublishedPort } from '../engine/types.js';
import type { ResolvedGroupSpec, ResolvedGroupTask } from '../spec/group.js';
import type { TaskSpec } from '../spec/schema.js';
import { TASK_ID, TASK_ID_MAX_LENGTH, type TaskDriver } from '../tasks/driver.js';
import type { EndState } from '../tasks/end-state.js';
import type { TaskHandle } from '../tasks/handle.js';
import { ensureBuiltinInfraImage } from './infra-image.js';
import { membershipOf, type GroupIdentity, type GroupObjectNames } from './infra-plan.js';
import { planGroup, type GroupEnd, type MemberPhase, type MemberStatus } from './lifecycle.js';
import { createGroupResources, removeGroupResources, type GroupEngine } from './resources.js';
import { liveGroupState, refusedGroupTransition, type GroupState } from './state.js';

/** What the group runner needs of the engine: the group's objects, the infrastructure image, the published ports. */
export type GroupRunnerEngine = GroupEngine & Pick<Engine, 'inspectImage' | 'importImage' | 'version'>;

export interface GroupRunnerOptions {
  /** Starts the group's tasks: its owner id, policy, image provider and retry policy apply to the group. */
  driver: TaskDriver;
  /** The same engine as the driver's. */
  engine: GroupRunnerEngine;
  /**
   * The infrastructure container's image: any image whose default command sleeps until killed
   * (e.g. `registry.k8s.io/pause:3.9`), pulled through the driver's image provider. Default:
   * berth's built-in 129-byte image, imported offline on first use (amd64 engines only).
   */
  infraImage?: string;
  /** Labels put on every container, volume and network of every group this runner starts (beside berth's own). Default none. */
  labels?: Readonly<Record<string, string>>;
  /** Default: the driver's silence. */
  logger?: Logger;
}

/** Where a task's output goes: each sink given is ended when the task's output ends (give each task its own). */
export interface TaskOutputSinks {
  stdout?: Writable;
  stderr?: Writable;
}

export interface GroupStartOptions {
  /**
   * The group's id: unique among this owner's groups, part of its objects' and its tasks' names
   * (a task's id is `<group id>.<task name>`). Default: the group's name (up to 40 characters) and 8
   * random hex digits, e.g. `web-3f9a1c2e`.
   */
  groupId?: string;
  /** Aborting it stops the group (end `cancelled`) and removes everything, or undoes a start under way. */
  signal?: AbortSignal;
  /**
   * Where each task's output goes, asked once per task as it starts. Default: nowhere, and no task
   * is attached (their output stays in the engine's log until the containers are removed).
   */
  output?: (task: string) => TaskOutputSinks;
  /** Labels for this group's objects and containers, over the runner's. */
  labels?: Readonly<Record<string, string>>;
}

/** A move of a group's state. */
export interface GroupStateChange {
  groupId: string;
  from: GroupState;
  to: GroupState;
}

export interface GroupTaskStarted {
  groupId: string;
  task: string;
  taskId: string;
  containerId: string;
}

export interface GroupTaskEnded {
  groupId: string;
  task: string;
  taskId: string;
  end: EndState;
}

/** Events of a GroupHandle (`group.on(type, listener)`); also published on `berth:groups` (GROUP_EVENTS_CHANNEL) as `{ type, ...event }`. */
export interface GroupEvents {
  state: GroupStateChange;
  'task-started': GroupTaskStarted;
  'task-ended': GroupTaskEnded;
}

/** The exit code of a task berth could not start (docker run's 125), unless its command could not run (126, 127). */
const COULD_NOT_START_EXIT_CODE = 125;
/** How long a group id's generated default keeps of the group's name. */
const GENERATED_ID_NAME_LENGTH = 40;

/**
 * Starts task groups. One runner serves many groups; each `start` returns a GroupHandle.
 */
export class GroupRunner {
  readonly #driver: TaskDriver;
  readonly #engine: GroupRunnerEngine;
  readonly #infraImage: string | undefined;
  readonly #labels: Readonly<Record<string, string>>;
  readonly #logger: Logger;
  /** The built-in infrastructure image, once made present. */
  #builtinImage: Promise<string> | undefined;

  constructor(options: GroupRunnerOptions) {
    this.#driver = options.driver;
    this.#engine = options.engine;
    this.#infraImage = options.infraImage;
    this.#labels = { ...options.labels };
    this.#logger = options.logger ?? silentLogger;
    checkLabels(this.#labels, 'labels');
  }

  /**
   * Validates `spec` (a group as src/spec/group.ts describes it, e.g. parsed from YAML) under the
   * driver's policy, then starts it: nothing is made when it is refused (ValidationError). Resolves
   * once the group's first tasks run (its prestart tasks, or else its main tasks and sidecars).
   * Rejects, after removing everything it made, when the group could not start: an image, the
   * group's objects or a first task failed (the task's error), or `signal` aborted (BERTH_CANCELLED).
   */
  async start(spec: unknown, options: GroupStartOptions = {}): Promise<GroupHandle> {
    const resolved = this.#driver.resolveGroup(spec);
    const labels = { ...this.#labels, ...options.labels };
    checkLabels(labels, 'labels');
    const groupId = options.groupId ?? `${resolved.name.slice(0, GENERATED_ID_NAME_LENGTH)}-${randomBytes(4).toString('hex')}`;
    checkGroupId(groupId, resolved);
    const { signal } = options;
    if (signal?.aborted) throw cancelledError(`start of group ${groupId}`, signal.reason);
    const driver = this.#driver;
    const identity: GroupIdentity = {
      groupId,
      ownerId: driver.ownerId,
      startAttempt: randomBytes(8).toString('hex'),
      ...(driver.ownerProcess === undefined ? {} : { ownerProcess: driver.ownerProcess }),
      labels,
    };
    const log = this.#logger;
    const infraHolder = `${groupId}/infra`;
    const taskIdOf = (task: ResolvedGroupTask): string => `${groupId}.${task.name}`;
    const releaseHolds = (): void => {
      for (const task of resolved.tasks) driver.releaseImages(taskIdOf(task));
      driver.releaseImages(infraHolder);
    };
    let image: string;
    let infraContainerId: string;
    let names: GroupObjectNames;
    try {
      // Every image first, together: a task whose image cannot be had fails the group before anything is made.
      [image] = await Promise.all([this.#ensureInfraImage(infraHolder, signal), ...resolved.tasks.map((task) => driver.acquireImage(task.spec, taskIdOf(task), signal))]);
      const create = (infraImage: string) => createGroupResources(this.#engine, resolved, identity, infraImage, { policy: driver.retryPolicy, logger: log, signal });
      try {
        ({ infraContainerId, names } = await create(image));
      } catch (error) {
        // The built-in image is checked once per runner; one removed since (a prune) is imported again.
        if (this.#infraImage !== undefined || !isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) throw error;
        this.#builtinImage = undefined;
        ({ infraContainerId, names } = await create(await this.#ensureInfraImage(infraHolder, signal)));
      }
    } catch (error) {
      releaseHolds();
      if (signal?.aborted && !isBerthError(error, 'BERTH_CANCELLED')) throw cancelledError(`start of group ${groupId}`, error);
      throw error;
    }
    log.info({ groupId, infraContainerId }, 'group objects made');
    const handle = new GroupHandle(
      { groupId, spec: resolved, infraContainerId, names, labels, output: options.output },
      { driver, engine: this.#engine, logger: log, releaseHolds },
    );
    await handle.begin(signal);
    return handle;
  }

  /** The built-in image (imported when missing), or the configured one, made present and held by `holderId`. */
  async #ensureInfraImage(holderId: string, signal: AbortSignal | undefined): Promise<string> {
    const configured = this.#infraImage;
    if (configured === undefined) {
      // Checked (and imported when missing) once: a start needs no engine call for it after the first.
      // Shared by concurrent starts, so no one start's signal cuts it (the engine's deadlines bound it).
      const ready = (this.#builtinImage ??= ensureBuiltinInfraImage(this.#engine));
      return ready.catch((error: unknown) => {
        if (this.#builtinImage === ready) this.#builtinImage = undefined;
        throw error;
      });
    }
    if (this.#driver.pullsImages) {
      await this.#driver.acquireImage(this.#driver.resolve({ image: configured }), holderId, signal);
      return configured;
    }
    try {
      await this.#engine.inspectImage(configured, { signal });
    } catch (error) {
      if (!isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) throw error;
      throw new BerthError('BERTH_GROUP_INFRA', `the infrastructure image ${configured} is not in the engine, and the driver pulls no images (it has no image provider)`, { cause: error, context: { image: configured } });
    }
    return configured;
  }
}

function checkLabels(labels: Readonly<Record<string, string>>, field: string): void {
  const issues = Object.keys(labels)
    .filter((key) => key.startsWith(LABEL_PREFIX))
    .map((key) => ({ field: `${field}.${key}`, rule: `must not use berth's own prefix ${LABEL_PREFIX}` }));
  if (issues.length > 0) throw new ValidationError(issues);
}

function checkGroupId(groupId: string, spec: ResolvedGroupSpec): void {
  if (!TASK_ID.test(groupId)) throw new ValidationError([{ field: 'groupId', rule: `must match ${TASK_ID.source}` }]);
  const longest = Math.max(...spec.tasks.map((t) => t.name.length));
  // A task's id is `<group id>.<task name>`, and a task id has a bound.
  if (groupId.length + 1 + longest > TASK_ID_MAX_LENGTH) {
    throw new ValidationError([{ field: 'groupId', rule: `must leave room for the task names: at most ${TASK_ID_MAX_LENGTH - 1 - longest} characters with a task named ${longest} characters long` }]);
  }
}

interface Member {
  readonly task: ResolvedGroupTask;
  readonly taskId: string;
  phase: MemberPhase;
  end?: EndState;
  handle?: TaskHandle;
  /** Aborts the task's start, or (once started) stops it through the driver. */
  readonly abort: AbortController;
  /** The start under way. */
  starting?: Promise<void>;
  /** The task's output copied to its sinks; awaited before its container goes. */
  output?: Promise<unknown>;
}

interface GroupInit {
  groupId: string;
  spec: ResolvedGroupSpec;
  infraContainerId: string;
  names: GroupObjectNames;
  labels: Readonly<Record<string, string>>;
  output: GroupStartOptions['output'];
}

interface GroupDeps {
  driver: TaskDriver;
  engine: GroupRunnerEngine;
  logger: Logger;
  /** Releases the image holds of the group's tasks and its infrastructure image. */
  releaseHolds: () => void;
}

/**
 * A started group. Its tasks' handles appear in `tasks` as they start; `wait()` resolves with the
 * group's end once every task has ended and everything is removed; `stop()` stops it. Disposable:
 * `await using group = await runner.start(spec)` stops and removes it on scope exit.
 */
export class GroupHandle implements AsyncDisposable, EventSource<GroupEvents> {
  readonly id: string;
  readonly spec: ResolvedGroupSpec;
  /** The container that owns the group's network namespace. */
  readonly infraContainerId: string;
  /** The names of the group's engine objects (infrastructure container, shared volume, network). */
  readonly names: GroupObjectNames;

  readonly #members: Member[];
  readonly #tasks = new Map<string, TaskHandle>();
  readonly #deps: GroupDeps;
  readonly #labels: Readonly<Record<string, string>>;
  readonly #output: GroupStartOptions['output'];
  readonly #events: Events<GroupEvents>;
  #state: GroupState = 'starting';
  #stopRequested = false;
  #end: GroupEnd | undefined;
  #firstStartError: unknown;
  readonly #done: Promise<GroupEnd>;
  #resolveDone: (end: GroupEnd) => void = () => undefined;
  /** Whether the clean-up at the end left something (a container or object the engine would not remove yet). */
  #cleanupIncomplete = false;
  #cleaning: Promise<void> | undefined;

  /** @internal Made by GroupRunner.start. */
  constructor(init: GroupInit, deps: GroupDeps) {
    this.id = init.groupId;
    this.spec = init.spec;
    this.infraContainerId = init.infraContainerId;
    this.names = init.names;
    this.#labels = init.labels;
    this.#output = init.output;
    this.#deps = deps;
    this.#events = new Events(deps.logger);
    this.#members = init.spec.tasks.map((task) => ({ task, taskId: `${init.groupId}.${task.name}`, phase: 'waiting', abort: new AbortController() }));
    this.#done = new Promise((resolve) => (this.#resolveDone = resolve));
  }

  /** The group's state (see state.ts). */
  get state(): GroupState {
    return this.#state;
  }

  /** The tasks' handles by name, as they start (a task that never started has none). */
  get tasks(): ReadonlyMap<string, TaskHandle> {
    return this.#tasks;
  }

  /** The group's end, once decided (see `wait`). */
  get end(): GroupEnd | undefined {
    return this.#end;
  }

  /** Each task's phase and end, as the lifecycle planner sees them. */
  members(): MemberStatus[] {
    return this.#members.map((m) => ({ name: m.task.name, lifecycle: m.task.lifecycle, phase: m.phase, ...(m.end === undefined ? {} : { end: m.end }) }));
  }

  /** Calls `listener` with every later event of `type` (see GroupEvents); returns its unsubscribe. */
  on<K extends keyof GroupEvents>(type: K, listener: EventListener<GroupEvents[K]>): Unsubscribe {
    return this.#events.on(type, listener);
  }

  /**
   * Resolves with the group's end once every task has ended and its containers and the group's
   * objects are removed (what the engine would not remove is logged, and `destroy` tries again).
   * Never rejects.
   */
  wait(): Promise<GroupEnd> {
    return this.#done;
  }

  /** The host ports the group publishes, as the engine bound them on the infrastructure container. */
  async ports(signal?: AbortSignal): Promise<PublishedPort[]> {
    return (await this.#deps.engine.inspectContainer(this.infraContainerId, { signal })).publishedPorts;
  }

  /** Stops the group: its running tasks get their stop signal, tasks not started never start. Resolves with its end (`cancelled`, unless it had ended otherwise). */
  stop(): Promise<GroupEnd> {
    if (this.#end === undefined && !this.#stopRequested) {
      this.#stopRequested = true;
      this.#deps.logger.info({ groupId: this.id }, 'group stop requested');
      this.#advance();
    }
    return this.#done;
  }

  /** Stops the group if it runs, and removes its containers and objects; idempotent, and tries again what an earlier pass could not remove. */
  async destroy(): Promise<void> {
    await this.stop();
    await this.#cleaning;
    if (this.#cleanupIncomplete) await this.#cleanUp(true);
    if (this.#cleanupIncomplete) throw new BerthError('BERTH_GROUP_INFRA', `group ${this.id}: some of its containers or objects could not be removed (the reconciler removes them by their labels)`, { retryable: true, context: { groupId: this.id } });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.destroy();
  }

  /**
   * @internal Starts the first tasks and resolves once they run. A first task that could not start,
   * or `signal` aborting meanwhile, ends the group (everything removed) and rejects.
   */
  async begin(signal: AbortSignal | undefined): Promise<void> {
    const onAbort = (): void => void this.stop();
    signal?.addEventListener('abort', onAbort, { once: true });
    void this.#done.finally(() => signal?.removeEventListener('abort', onAbort));
    this.#advance();
    await Promise.all(this.#members.map((m) => m.starting));
    if (this.#firstStartError !== undefined || signal?.aborted) {
      await this.stop();
      if (signal?.aborted) throw cancelledError(`start of group ${this.id}`, this.#firstStartError ?? signal.reason);
      throw this.#firstStartError;
    }
  }

  #statuses(): MemberStatus[] {
    return this.members();
  }

  /** Carries out the planner's next step; called after every change of a task. */
  #advance(): void {
    for (;;) {
      if (this.#end !== undefined) return;
      const step = planGroup(this.#statuses(), { stopRequested: this.#stopRequested });
      // Each move checks the phase the step was planned from: a listener called below may have moved the group on (a stop).
      for (const name of step.skip) {
        const member = this.#member(name);
        if (member.phase !== 'waiting') continue;
        member.phase = 'ended';
        member.end = { kind: 'cancelled' };
        this.#emit('task-ended', { groupId: this.id, task: name, taskId: member.taskId, end: member.end });
      }
      for (const name of step.stop) {
        const member = this.#member(name);
        if (member.phase !== 'starting' && member.phase !== 'running') continue;
        member.phase = 'stopping';
        if (member.handle) void member.handle.stop().catch((error: unknown) => this.#deps.logger.warn({ groupId: this.id, task: name, code: codeOf(error) }, 'could not stop a task of the group'));
        else member.abort.abort(new Error(`group ${this.id} is ending`));
      }
      for (const name of step.start) {
        const member = this.#member(name);
        if (member.phase !== 'waiting') continue;
        member.phase = 'starting';
        member.starting = this.#startMember(member);
      }
      if (step.end !== undefined) {
        this.#finish(step.end);
        return;
      }
      // A listener may have ended the group meanwhile (a stop from a task-ended listener).
      if (this.#end !== undefined) return;
      this.#moveTo(liveGroupState(this.#statuses(), this.#stopRequested));
      // Skipped tasks ended: the plan may have moved on (to the group's end).
      if (step.skip.length === 0) return;
    }
  }

  #member(name: string): Member {
    const member = this.#members.find((m) => m.task.name === name);
    if (member === undefined) throw new BerthError('BERTH_INTERNAL', `group ${this.id} has no task ${name}`);
    return member;
  }

  async #startMember(member: Member): Promise<void> {
    const { driver, logger } = this.#deps;
    const name = member.task.name;
    const spec = { ...member.task.input, labels: { ...this.#labels, ...(member.task.input.labels as Record<string, string> | undefined) } } as TaskSpec;
    let sinks: TaskOutputSinks | undefined;
    let handle: TaskHandle;
    try {
      sinks = this.#output?.(name);
      handle = await driver.startAccepted(spec, {
        taskId: member.taskId,
        group: membershipOf(this.spec, { groupId: this.id, ownerId: driver.ownerId }, name, this.infraContainerId),
        signal: member.abort.signal,
        output: sinks === undefined ? 'engine-log' : 'attach',
      });
    } catch (error) {
      member.phase = 'ended';
      if (member.abort.signal.aborted) {
        member.end = { kind: 'cancelled' };
      } else {
        const failure = commandFailureOf(error);
        member.end = { kind: 'failed', exitCode: failure?.exitCode ?? COULD_NOT_START_EXIT_CODE, reason: messageOf(error) };
        this.#firstStartError ??= error;
        logger.warn({ groupId: this.id, task: name, code: codeOf(error) }, 'a task of the group could not start');
      }
      sinks?.stdout?.end();
      sinks?.stderr?.end();
      this.#emit('task-ended', { groupId: this.id, task: name, taskId: member.taskId, end: member.end });
      this.#advance();
      return;
    }
    member.handle = handle;
    this.#tasks.set(name, handle);
    const drain = (source: Readable, sink: Writable | undefined): Promise<unknown> => (sink ? pipeline(source, sink) : finished(source.resume()));
    if (sinks !== undefined) member.output = Promise.all([drain(handle.stdout, sinks.stdout), drain(handle.stderr, sinks.stderr)]).catch(() => undefined);
    if (member.phase === 'stopping') void handle.stop().catch(() => undefined);
    else member.phase = 'running';
    this.#emit('task-started', { groupId: this.id, task: name, taskId: member.taskId, containerId: handle.containerId });
    void handle.wait().then((end) => {
      member.phase = 'ended';
      member.end = end;
      this.#emit('task-ended', { groupId: this.id, task: name, taskId: member.taskId, end });
      this.#advance();
    });
    this.#advance();
  }

  /** Tells the handle's listeners, and tracers on the `berth:groups` channel. */
  #emit<K extends keyof GroupEvents>(type: K, event: GroupEvents[K]): void {
    this.#events.emit(type, event);
    if (GROUPS_CHANNEL.hasSubscribers) GROUPS_CHANNEL.publish({ type, ...event });
  }

  #moveTo(to: GroupState): void {
    const from = this.#state;
    if (from === to) return;
    const refusal = refusedGroupTransition(this.id, from, to);
    if (refusal !== undefined) {
      this.#deps.logger.error({ groupId: this.id, from, to }, refusal.message);
      return;
    }
    this.#state = to;
    this.#deps.logger.debug({ groupId: this.id, from, to }, 'group state changed');
    this.#emit('state', { groupId: this.id, from, to });
  }

  #finish(end: GroupEnd): void {
    if (this.#end !== undefined) return;
    this.#end = end;
    this.#moveTo('exited');
    this.#deps.logger.info({ groupId: this.id, end: end.kind, task: end.task }, 'group ended');
    this.#cleaning = this.#cleanUp(false).finally(() => this.#resolveDone(end));
  }

  /** Removes the task containers (after their output reached its sinks), then the group's objects. */
  async #cleanUp(again: boolean): Promise<void> {
    const { driver, engine, logger } = this.#deps;
    let complete = true;
    await Promise.all(
      this.#members.map(async (m) => {
        if (m.handle === undefined) return;
        // Output may still be in flight after the end; it ends with the attach stream (a lost task's may never).
        if (!again && m.end?.kind !== 'lost') await m.output;
        try {
          await m.handle.destroy();
        } catch (error) {
          complete = false;
          logger.error({ groupId: this.id, task: m.task.name, containerId: m.handle.containerId, code: codeOf(error) }, 'could not remove a task container of the group');
        }
      }),
    );
    this.#deps.releaseHolds();
    try {
      const left = await removeGroupResources(engine, this.names, { policy: driver.retryPolicy, logger });
      if (left.network !== undefined || left.volume !== undefined) complete = false;
    } catch (error) {
      complete = false;
      logger.error({ groupId: this.id, code: codeOf(error) }, 'could not remove the group\'s infrastructure container');
    }
    this.#cleanupIncomplete = !complete;
    if (complete) this.#moveTo('removed');
  }
}
