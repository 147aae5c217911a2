/**
 * Task groups in the agent: a group's tasks are ordinary task records (ids `<group id>.<task
 * name>`, so every task route works on them) that the group coordinator starts, not admission.
 * The group enters admission as one unit (the sum of its tasks' demands), then its infrastructure
 * (shared volume, private network, infrastructure container: src/groups/resources.ts) is made,
 * then the lifecycle planner (src/groups/lifecycle.ts) decides after every task change what to
 * start, stop and skip, and when the group has ended. Once every task has ended and its container
 * is removed, the infrastructure goes, the ports are released and the share returns to the budget.
 * Everything is recorded before it is acted on, so a restarted agent resumes each group from its
 * record: a group that was starting makes its infrastructure again (adopting what the dead agent
 * made, by the stored start attempt), a running one is driven from its tasks' recovered states, an
 * ended one finishes its cleanup.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { asBerthError, BerthError, codeOf, isBerthError, messageOf, stackOf, ValidationError, type FieldIssue } from '../common/errors.js';
import { LABELS, ROLES } from '../common/labels.js';
import type { Logger } from '../common/logger.js';
import type { Engine } from '../engine/engine.js';
import type { PublishedPort } from '../engine/types.js';
import { phasedDemand } from '../groups/demand.js';
import { BUILTIN_INFRA_IMAGE, ensureBuiltinInfraImage } from '../groups/infra-image.js';
import { groupObjectNames, membershipOf, type GroupIdentity } from '../groups/infra-plan.js';
import { planGroup, type GroupEnd, type MemberPhase, type MemberStatus } from '../groups/lifecycle.js';
import { createGroupResources, removeGroupResources, type GroupEngine } from '../groups/resources.js';
import { resolveAcceptedGroupSpec, resolveGroupSpec, type ResolvedGroupSpec } from '../spec/group.js';
import type { PortSpec, SpecPolicy } from '../spec/schema.js';
import type { GroupMembership } from '../spec/translate.js';
import type { GroupRecord, GroupState } from '../state/groups.js';
import type { Store } from '../state/store.js';
import type { TaskRecord, TaskState } from '../state/tasks.js';
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from '../tasks/container-ops.js';
import { TASK_ID } from '../tasks/driver.js';
import type { AdmissionController, AdmissionEntry, ResourceDemand } from './admission.js';
import { canonicalJson } from '../common/canonical-json.js';
import type { AgentEvents, ExpiryReason } from './events.js';
import type { PreparedSpec, TaskSupervisor } from './supervisor.js';

/** Admission entries of groups are `group:<id>`: a colon is never in a task id, so the two never meet. */
const ENTRY_PREFIX = 'group:';

export function groupEntryId(groupId: string): string {
  return `${ENTRY_PREFIX}${groupId}`;
}

export function isGroupEntry(entryId: string): boolean {
  return entryId.startsWith(ENTRY_PREFIX);
}

/** The id of a group's task: a valid task id, so every task route reaches it. */
export function groupTaskId(groupId: string, taskName: string): string {
  return `${groupId}.${taskName}`;
}

/** The longest group id: its tasks' ids (`<group id>.<task name>`, names up to 64) stay within the task id limit (128). */
export const GROUP_ID_MAX_LENGTH = 60;
const GROUP_ID = new RegExp(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,${GROUP_ID_MAX_LENGTH - 1}}$`);

/** A new group's id: its name (cut to 40 characters) and 8 random hex digits, e.g. `web-3f9a2c1b`. */
export function newGroupId(name: string, random: () => string = () => randomBytes(4).toString('hex')): string {
  return `${name.slice(0, 40)}-${random()}`;
}

/** Where a group's task is, as the lifecycle planner sees it. */
export function memberPhase(state: TaskState): MemberPhase {
  switch (state) {
    case 'pending':
      return 'waiting';
    case 'starting':
    case 'running':
    case 'stopping':
      return state;
    default:
      return 'ended';
  }
}

/** The members of a group as the planner reads them, from its tasks' records. */
export function membersOf(tasks: readonly TaskRecord[]): MemberStatus[] {
  return tasks.map((task) => ({
    name: task.group?.taskName ?? task.id,
    lifecycle: task.group?.lifecycle ?? 'main',
    phase: memberPhase(task.state),
    ...(task.endState === undefined ? {} : { end: task.endState as MemberStatus['end'] & object }),
  }));
}


/** The group's state while it runs, from the planner's step: stopping once anything is being stopped or skipped, or a stop was asked. */
export function runningStateOf(current: GroupState, step: { stop: readonly string[]; skip: readonly string[] }, stopRequested: boolean): GroupState {
  if (current === 'stopping') return 'stopping';
  return stopRequested || step.stop.length > 0 || step.skip.length > 0 ? 'stopping' : 'running';
}

/** A narrow port of the agent's durable port allocator (src/agent/ports.ts): a group's ports are held under its id. */
export interface GroupPortAllocator {
  /** All or none, idempotent per owner; fills in dynamic host ports. Throws BERTH_PORT_UNAVAILABLE. */
  allocate(owner: string, ports: readonly PortSpec[], fieldPrefix: string): PortSpec[];
  release(owner: string): number;
  /** Frees the ports of owners of `ownerKind` that `isNeeded` says no longer need them (recovery). */
  sweep?(ownerKind: string, isNeeded: (owner: string) => boolean): string[];
}

export interface GroupCoordinatorDeps {
  store: Pick<Store, 'groups' | 'tasks'>;
  supervisor: Pick<TaskSupervisor, 'prepare' | 'enterAdmission' | 'leaveAdmission' | 'startMember' | 'stop' | 'attachGroups' | 'forget'>;
  admission: Pick<AdmissionController, 'check'>;
  engine: GroupEngine & Pick<Engine, 'inspectImage' | 'importImage' | 'version' | 'listContainers'>;
  events: Pick<AgentEvents, 'emit' | 'subscribe'>;
  logger: Logger;
  /** The agent's id: the owner of the groups' engine objects. */
  ownerId: string;
  policy: () => SpecPolicy;
  /** `groups.infraImage`: an image to run as the infrastructure container; undefined: berth's built-in one. */
  infraImage: () => string | undefined;
  /** Makes a configured infrastructure image available (pulled when missing), held under `holderId` until released. */
  acquireImage?: (image: string, holderId: string) => Promise<void>;
  releaseImage?: (holderId: string) => void;
  /** The durable port allocator; without it the engine picks dynamic ports (read back from the infrastructure container). */
  ports?: GroupPortAllocator;
  /** Retention's limits in force (`retention.*`): ended groups are removed with their tasks as ended tasks are. */
  retention?: () => { maxAgeMs?: number; maxCount?: number; intervalMs: number };
  retryPolicy?: RetryPolicy;
  /** How long the end of a group waits for its tasks' containers to be removed before removing its infrastructure. Default 60 s. */
  containersGoneTimeoutMs?: number;
}

export interface GroupSubmitResult {
  group: GroupRecord;
  created: boolean;
}

/** Reads a group and its tasks, as the API shows them. */
export interface GroupWithTasks {
  group: GroupRecord;
  tasks: TaskRecord[];
}

/**
 * Runs the agent's task groups. Every decision is taken in one place per group (#step), serialized:
 * a task's change, a stop or an admission schedules another step of its group, and a step reads the
 * records as they are then.
 */
export class GroupCoordinator {
  readonly #deps: GroupCoordinatorDeps;
  /** Groups with a step under way; `again`: something changed meanwhile, step once more. */
  readonly #steps = new Map<string, { again: boolean }>();
  readonly #running = new Set<Promise<void>>();
  readonly #closing = new AbortController();
  #unsubscribe: (() => void) | undefined;
  #retentionTimer: NodeJS.Timeout | undefined;

  constructor(deps: GroupCoordinatorDeps) {
    this.#deps = deps;
    deps.supervisor.attachGroups({
      isGroupEntry,
      membershipOf: (record) => this.#membershipOf(record),
      admissionEntries: () => this.#admissionEntries(),
      admitted: (entryId) => this.#admitted(entryId.slice(ENTRY_PREFIX.length)),
      refused: (entryId, error) => this.#refused(entryId.slice(ENTRY_PREFIX.length), error),
    });
  }

  /** Follows task changes and resumes every group whose work is not over; call after the supervisor recovered. */
  recover(): { groups: number } {
    this.#unsubscribe ??= this.#deps.events.subscribe((event) => {
      if (event.type !== 'task.state') return;
      const groupId = this.#deps.store.tasks.get(event.taskId)?.group?.groupId;
      if (groupId !== undefined) this.#kick(groupId);
    });
    const unfinished = this.#deps.store.groups.listUnfinished();
    // Ports held for groups that are gone or cleaned up (the agent died between the cleanup and the release).
    const holding = new Set(unfinished.map((g) => g.id));
    const freed = this.#deps.ports?.sweep?.('group', (owner) => holding.has(owner)) ?? [];
    if (freed.length > 0) this.#deps.logger.info({ groups: freed }, 'released the ports of groups that ended while the agent was down');
    for (const group of unfinished) this.#kick(group.id);
    this.#scheduleRetention(0);
    return { groups: unfinished.length };
  }

  /**
   * Validates and records a group and its tasks (pending), then enters it into admission as one
   * unit. Idempotent by id: the same document again returns the group (`created` false); another
   * one under that id is BERTH_GROUP_EXISTS. A ValidationError names fields by their place in the
   * group (`tasks[1].resources.memory`); nothing is recorded then.
   */
  submit(input: { id?: string; spec: unknown }): GroupSubmitResult {
    if (input.id !== undefined && !GROUP_ID.test(input.id)) throw new ValidationError([{ field: 'id', rule: `must match ${GROUP_ID.source}` }]);
    const resolved = resolveGroupSpec(input.spec, this.#deps.policy());
    const raw = input.spec as { tasks: Array<Record<string, unknown>> };
    const issues: FieldIssue[] = [];
    const prepared: PreparedSpec[] = [];
    resolved.tasks.forEach((task, i) => {
      try {
        prepared.push(this.#deps.supervisor.prepare(task.input));
      } catch (error) {
        if (!(error instanceof ValidationError)) throw error;
        for (const issue of error.issues) issues.push({ field: `tasks[${i}].${issue.field}`, rule: issue.rule });
      }
    });
    if (issues.length > 0) throw new ValidationError(issues);
    prepared.forEach((p, i) => {
      try {
        this.#deps.admission.check(p.reservation);
      } catch (error) {
        if (!(error instanceof ValidationError)) throw error;
        for (const issue of error.issues) issues.push({ field: `tasks[${i}].${issue.field}`, rule: issue.rule });
      }
    });
    // The prestarts run to completion before the rest start: the group's peak is the larger phase (src/groups/demand.ts).
    const demand = phasedDemand(resolved.tasks.map((task, i) => ({ lifecycle: task.lifecycle, demand: prepared[i]!.reservation })));
    if (issues.length === 0) {
      try {
        this.#deps.admission.check(demand);
      } catch (error) {
        if (!(error instanceof ValidationError)) throw error;
        for (const issue of error.issues) issues.push({ field: 'tasks', rule: `the group's tasks together: ${issue.rule.replace('the task could never start', 'the group could never start')}` });
      }
    }
    if (issues.length > 0) throw new ValidationError(issues);
    // The group's stored document: its tasks as they are recorded (the agent's defaults, secrets redacted).
    const spec = {
      ...(input.spec as Record<string, unknown>),
      tasks: resolved.tasks.map((task, i) => ({ ...memberSpec(prepared[i]!.spec, raw.tasks[i]), name: task.name, lifecycle: task.lifecycle })),
    };
    const groupId = input.id ?? newGroupId(resolved.name);
    const existing = this.#deps.store.groups.get(groupId);
    if (existing) return { group: this.#sameGroup(existing, spec), created: false };
    // Ports are held from the submit (a port that is taken refuses the group now, naming it), released at its cleanup.
    const allocated = this.#deps.ports && resolved.network.ports.length > 0 ? this.#deps.ports.allocate(groupId, resolved.network.ports, 'network.ports') : [];
    let recorded: ReturnType<Store['groups']['insert']>;
    try {
      recorded = this.#insert(groupId, resolved, spec, demand, prepared, raw);
    } catch (error) {
      this.#deps.ports?.release(groupId);
      throw error;
    }
    const { inserted, group } = recorded;
    if (!inserted) {
      return { group: this.#sameGroup(group, spec), created: false };
    }
    // Shown from the submit, as the allocator holds them (the engine's own view replaces them once the group runs).
    if (allocated.length > 0) this.#deps.store.groups.update(groupId, { ports: allocated.map((p) => ({ container: p.container, protocol: p.protocol, hostIp: p.hostIp ?? '127.0.0.1', host: p.host ?? 0 })) });
    this.#announce(group);
    try {
      this.#deps.supervisor.enterAdmission(groupEntryId(groupId), demand);
    } catch (error) {
      // The agent closed between the record and admission: the next agent queues it at recovery.
      this.#deps.logger.warn({ groupId, code: codeOf(error) }, 'could not enter the group into admission');
    }
    return { group: this.#deps.store.groups.get(groupId) ?? group, created: true };
  }

  #insert(groupId: string, resolved: ResolvedGroupSpec, spec: Record<string, unknown>, demand: ResourceDemand, prepared: readonly PreparedSpec[], raw: { tasks: Array<Record<string, unknown>> }): ReturnType<Store['groups']['insert']> {
    return this.#deps.store.groups.insert({
      id: groupId,
      name: resolved.name,
      spec,
      reservation: demand,
      startAttempt: randomBytes(6).toString('hex'),
      tasks: resolved.tasks.map((task, i) => {
        const id = groupTaskId(groupId, task.name);
        if (!TASK_ID.test(id)) throw new ValidationError([{ field: `tasks[${i}].name`, rule: `makes the task id ${id}, which is not a valid task id` }]);
        const p = prepared[i]!;
        return { id, spec: memberSpec(p.spec, raw.tasks[i]), reservation: p.reservation, ...(p.sealedSecrets !== undefined ? { sealedSecrets: p.sealedSecrets } : {}), link: { taskName: task.name, lifecycle: task.lifecycle } };
      }),
    });
  }

  #sameGroup(existing: GroupRecord, spec: Record<string, unknown>): GroupRecord {
    if (canonicalJson(existing.spec) === canonicalJson(spec)) return existing;
    throw new BerthError('BERTH_GROUP_EXISTS', `a group with id ${existing.id} exists already, with another spec`, { context: { groupId: existing.id } });
  }

  get(groupId: string): GroupWithTasks {
    const group = this.#require(groupId);
    return { group, tasks: this.#tasksOf(groupId) };
  }

  list(filter: { state?: readonly GroupState[] } = {}): GroupWithTasks[] {
    return this.#deps.store.groups.list(filter).map((group) => ({ group, tasks: this.#tasksOf(group.id) }));
  }

  /** Stops a group: a pending one ends as cancelled without running; a running one has its tasks stopped and ends cancelled (unless it ended otherwise first). */
  stop(groupId: string): GroupRecord {
    const group = this.#require(groupId);
    if (group.state === 'exited' || group.stopRequested) return group;
    const record = this.#deps.store.groups.update(groupId, { stopRequested: true });
    // A queued group leaves the queue now; its step records its end.
    if (record.state === 'pending') this.#deps.supervisor.leaveAdmission(groupEntryId(groupId));
    this.#kick(groupId);
    return record;
  }

  /**
   * Removes an ended group with its tasks' records and output. A group that has not ended is
   * refused (BERTH_TASK_STATE), or with `force` stopped first; either way this waits for its
   * cleanup (its engine objects removed) before the records go.
   */
  async remove(groupId: string, options: { force?: boolean; reason?: ExpiryReason } = {}): Promise<void> {
    const group = this.#require(groupId);
    if (group.state !== 'exited') {
      if (!options.force) throw new BerthError('BERTH_TASK_STATE', `group ${groupId} is ${group.state}; stop it before removing it (or force the removal)`, { context: { groupId, state: group.state } });
      this.stop(groupId);
    }
    await this.#waitCleaned(groupId);
    const taskIds = this.#tasksOf(groupId).map((t) => t.id);
    await this.#deps.supervisor.forget(taskIds);
    if (!this.#deps.store.groups.delete(groupId)) {
      throw new BerthError('BERTH_TASK_STATE', `group ${groupId} still has a task whose container is being removed; try again shortly`, { retryable: true, context: { groupId, state: 'exited' } });
    }
    this.#deps.events.emit({ type: 'group.removed', groupId, ...(options.reason ? { reason: options.reason } : {}) });
  }

  /** Waits until the group has ended and its engine objects are removed (a removal waits for it). */
  async #waitCleaned(groupId: string): Promise<void> {
    for (let waitMs = 50; ; waitMs = Math.min(waitMs * 2, 1000)) {
      const group = this.#require(groupId);
      if (group.state === 'exited' && group.cleanedAtMs !== undefined) return;
      if (this.#closing.signal.aborted) throw new BerthError('BERTH_AGENT_UNAVAILABLE', 'the agent is shutting down');
      this.#kick(groupId);
      await delay(waitMs, undefined, { signal: this.#closing.signal }).catch(() => undefined);
    }
  }

  /** Stops following groups; their engine objects stay, and the next agent resumes them. */
  async shutdown(graceMs = 5000): Promise<void> {
    this.#closing.abort();
    this.#unsubscribe?.();
    clearTimeout(this.#retentionTimer);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all([...this.#running]), new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
  }

  /** Resolves when no group step is under way (tests). */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.all([...this.#running]);
  }

  #require(groupId: string): GroupRecord {
    const group = this.#deps.store.groups.get(groupId);
    if (!group) throw new BerthError('BERTH_GROUP_NOT_FOUND', `no group ${groupId}`, { context: { groupId } });
    return group;
  }

  #tasksOf(groupId: string): TaskRecord[] {
    return this.#deps.store.tasks.list({ group: groupId });
  }

  #identity(group: GroupRecord): GroupIdentity {
    return { groupId: group.id, ownerId: this.#deps.ownerId, startAttempt: group.startAttempt };
  }

  #membershipOf(record: TaskRecord): GroupMembership | undefined {
    if (record.group === undefined) return undefined;
    const group = this.#deps.store.groups.get(record.group.groupId);
    if (group?.infraContainerId === undefined) return undefined;
    return membershipOf(resolveAcceptedGroupSpec(group.spec), this.#identity(group), record.group.taskName, group.infraContainerId);
  }

  #admissionEntries(): { admitted: AdmissionEntry[]; queued: AdmissionEntry[] } {
    const admitted: AdmissionEntry[] = [];
    const queued: AdmissionEntry[] = [];
    for (const group of this.#deps.store.groups.listUnfinished()) {
      const entry = { taskId: groupEntryId(group.id), demand: group.reservation ?? { memoryBytes: 0, cpuMilli: 0 } };
      if (group.state !== 'pending') admitted.push(entry);
      // A pending group asked to stop never runs: its step ends it.
      else if (!group.stopRequested) queued.push(entry);
    }
    return { admitted, queued };
  }

  #admitted(groupId: string): void {
    const group = this.#deps.store.groups.get(groupId);
    if (group?.state !== 'pending') return;
    this.#move(groupId, { state: 'starting' });
    this.#kick(groupId);
  }

  #refused(groupId: string, error: ValidationError): void {
    const group = this.#deps.store.groups.get(groupId);
    if (group === undefined || group.state === 'exited') return;
    void this.#track(this.#endUnstarted(group, { kind: 'failed', exitCode: 125, reason: `${error.code}: ${error.message}` }));
  }

  #announce(group: GroupRecord): void {
    this.#deps.events.emit({ type: 'group.state', groupId: group.id, state: group.state, ...(group.endState ? { endState: group.endState } : {}) });
  }

  #move(groupId: string, change: Parameters<Store['groups']['update']>[1]): GroupRecord {
    const before = this.#deps.store.groups.get(groupId);
    const record = this.#deps.store.groups.update(groupId, change);
    if (before?.state !== record.state) {
      this.#deps.logger.info({ groupId, from: before?.state, to: record.state, ...(record.endState ? { end: record.endState.kind } : {}) }, 'group state changed');
      this.#announce(record);
    }
    return record;
  }

  /** Schedules a step of the group; steps of one group never overlap. */
  #kick(groupId: string): void {
    if (this.#closing.signal.aborted) return;
    const running = this.#steps.get(groupId);
    if (running) {
      running.again = true;
      return;
    }
    const marker = { again: false };
    this.#steps.set(groupId, marker);
    const work = (async () => {
      try {
        // A tick later: the change that kicked (a task's record) is complete before the step reads it.
        await Promise.resolve();
        do {
          marker.again = false;
          await this.#step(groupId);
        } while (marker.again && !this.#closing.signal.aborted);
      } finally {
        this.#steps.delete(groupId);
      }
    })();
    void this.#track(work);
  }

  #track(work: Promise<void>): Promise<void> {
    const tracked = work.catch((error: unknown) => {
      // The last guard: one group's failure never ends the agent.
      this.#deps.logger.error({ code: codeOf(error), error: stackOf(error) }, 'group supervision failed');
    });
    this.#running.add(tracked);
    void tracked.finally(() => this.#running.delete(tracked));
    return tracked;
  }

  async #step(groupId: string): Promise<void> {
    const group = this.#deps.store.groups.get(groupId);
    if (!group) return;
    switch (group.state) {
      case 'pending':
        if (group.stopRequested) await this.#endUnstarted(group, { kind: 'cancelled' });
        return;
      case 'starting':
        await this.#startInfrastructure(group);
        return;
      case 'running':
      case 'stopping':
        await this.#drive(group);
        return;
      case 'exited':
        if (group.cleanedAtMs === undefined) await this.#cleanup(group);
        return;
    }
  }

  /** Ends a group none of whose tasks ran: its waiting tasks are recorded cancelled, then what it made (if anything) goes. */
  async #endUnstarted(group: GroupRecord, end: GroupEnd): Promise<void> {
    for (const task of this.#tasksOf(group.id)) {
      if (task.state === 'pending') await this.#deps.supervisor.stop(task.id).catch(() => undefined);
    }
    const ended = group.state === 'exited' ? group : this.#move(group.id, { state: 'exited', endState: end });
    await this.#cleanup(ended);
  }

  async #infraImage(groupId: string): Promise<string> {
    const configured = this.#deps.infraImage();
    if (configured === undefined || configured === BUILTIN_INFRA_IMAGE) return ensureBuiltinInfraImage(this.#deps.engine, { signal: this.#closing.signal });
    await this.#deps.acquireImage?.(configured, groupEntryId(groupId));
    return configured;
  }

  async #startInfrastructure(group: GroupRecord): Promise<void> {
    if (group.stopRequested) {
      await this.#endUnstarted(group, { kind: 'cancelled' });
      return;
    }
    let spec = resolveAcceptedGroupSpec(group.spec);
    try {
      if (this.#deps.ports && spec.network.ports.length > 0) {
        const ports = this.#deps.ports.allocate(group.id, spec.network.ports, 'network.ports');
        spec = { ...spec, network: { ...spec.network, ports } };
      }
      const image = await this.#infraImage(group.id);
      const made = await createGroupResources(this.#deps.engine, spec, this.#identity(group), image, { policy: this.#retryPolicy(), logger: this.#deps.logger, signal: this.#closing.signal });
      const ports = await this.#publishedPorts(made.infraContainerId);
      if (this.#closing.signal.aborted) return;
      this.#move(group.id, { state: 'running', infraContainerId: made.infraContainerId, ports });
      await this.#drive(this.#require(group.id));
    } catch (error) {
      // Shutting down: the group stays starting, and the next agent makes its infrastructure (adopting what was made).
      if (this.#closing.signal.aborted) return;
      const berthError = asBerthError(error);
      this.#deps.logger.warn({ groupId: group.id, code: berthError.code, error: berthError.message }, 'the group could not start');
      await this.#endUnstarted(this.#require(group.id), { kind: 'failed', exitCode: 125, reason: `${berthError.code}: ${berthError.message}` });
    }
  }

  async #publishedPorts(infraContainerId: string): Promise<PublishedPort[]> {
    try {
      return [...(await this.#deps.engine.inspectContainer(infraContainerId, { signal: this.#closing.signal })).publishedPorts];
    } catch (error) {
      this.#deps.logger.warn({ infraContainerId, code: codeOf(error) }, 'could not read the ports the group published');
      return [];
    }
  }

  /** One decision of the lifecycle planner, carried out: start, stop, skip; the group's end once every task ended. */
  async #drive(group: GroupRecord): Promise<void> {
    const tasks = this.#tasksOf(group.id);
    const byName = new Map(tasks.map((t) => [t.group?.taskName ?? t.id, t]));
    const step = planGroup(membersOf(tasks), { stopRequested: group.stopRequested });
    const next = runningStateOf(group.state, step, group.stopRequested);
    if (step.end === undefined && next !== group.state) this.#move(group.id, { state: next });
    for (const name of step.start) {
      const task = byName.get(name);
      if (task?.state !== 'pending') continue;
      try {
        this.#deps.supervisor.startMember(task.id);
      } catch (error) {
        this.#deps.logger.warn({ groupId: group.id, taskId: task.id, code: codeOf(error) }, 'could not start a task of the group');
      }
    }
    for (const name of [...step.stop, ...step.skip]) {
      const task = byName.get(name);
      if (task === undefined) continue;
      // In the background: a stop waits for its task's grace period, and the task's end kicks the next step.
      this.#deps.supervisor.stop(task.id).catch((error: unknown) => {
        if (!isBerthError(error, 'BERTH_TASK_STATE')) this.#deps.logger.warn({ groupId: group.id, taskId: task.id, code: codeOf(error) }, 'could not stop a task of the group');
      });
    }
    if (step.end !== undefined) {
      const ended = this.#move(group.id, { state: 'exited', endState: step.end });
      await this.#cleanup(ended);
    }
  }

  /**
   * After the end: waits until no task container of the group is left (the supervisor removes
   * each after its end), then removes the infrastructure, releases the ports and the share. What
   * the engine would not remove yet is left to the reconciler, found by its labels.
   */
  async #cleanup(group: GroupRecord): Promise<void> {
    const signal = this.#closing.signal;
    const spec: ResolvedGroupSpec = resolveAcceptedGroupSpec(group.spec);
    const deadline = Date.now() + (this.#deps.containersGoneTimeoutMs ?? 60_000);
    for (let waitMs = 100; ; waitMs = Math.min(waitMs * 2, 2000)) {
      if (signal.aborted) return;
      const left = await this.#deps.engine
        .listContainers({ labels: [`${LABELS.groupId}=${group.id}`, `${LABELS.ownerId}=${this.#deps.ownerId}`] }, { signal })
        .then((containers) => containers.filter((c) => c.labels[LABELS.role] !== ROLES.infra).length)
        .catch((error: unknown) => {
          this.#deps.logger.warn({ groupId: group.id, code: codeOf(error) }, 'could not list the group\'s containers');
          return 1;
        });
      if (left === 0 || Date.now() >= deadline) break;
      await delay(waitMs, undefined, { signal }).catch(() => undefined);
    }
    if (signal.aborted) return;
    try {
      const leftover = await removeGroupResources(this.#deps.engine, groupObjectNames(spec, this.#identity(group)), { policy: this.#retryPolicy(), logger: this.#deps.logger });
      if (leftover.network !== undefined || leftover.volume !== undefined) this.#deps.logger.warn({ groupId: group.id, ...leftover }, 'left group objects for the reconciler');
    } catch (error) {
      if (signal.aborted) return;
      // The infrastructure container could not be removed: the next step (a kick, the next agent) tries again.
      this.#deps.logger.warn({ groupId: group.id, code: codeOf(error), error: messageOf(error) }, 'could not remove the group\'s infrastructure container; trying again');
      await delay(2000, undefined, { signal }).catch(() => undefined);
      this.#kick(group.id);
      return;
    }
    this.#deps.ports?.release(group.id);
    this.#deps.releaseImage?.(groupEntryId(group.id));
    this.#deps.store.groups.update(group.id, { cleaned: true });
    this.#deps.supervisor.leaveAdmission(groupEntryId(group.id));
    this.#deps.logger.info({ groupId: group.id, end: group.endState?.kind }, 'group cleaned up');
  }

  #retryPolicy(): RetryPolicy {
    return this.#deps.retryPolicy ?? DEFAULT_RETRY_POLICY;
  }

  #scheduleRetention(delayMs: number): void {
    const settings = this.#deps.retention;
    if (!settings || this.#closing.signal.aborted) return;
    this.#retentionTimer = setTimeout(() => {
      void this.#track(
        this.#retentionPass().finally(() => this.#scheduleRetention(settings().intervalMs)),
      );
    }, delayMs).unref();
  }

  /** Removes ended groups (with their tasks) past `retention.maxAge`, and the oldest beyond `retention.maxCount`. */
  async #retentionPass(): Promise<void> {
    const limits = this.#deps.retention?.();
    if (!limits || (limits.maxAgeMs === undefined && limits.maxCount === undefined)) return;
    const now = Date.now();
    let extra = limits.maxCount === undefined ? 0 : Math.max(0, this.#deps.store.groups.countEnded() - limits.maxCount);
    for (const candidate of this.#deps.store.groups.oldestEnded(500)) {
      if (this.#closing.signal.aborted) return;
      const reason: ExpiryReason | undefined = extra > 0 ? 'count' : limits.maxAgeMs !== undefined && now - candidate.endedAtMs > limits.maxAgeMs ? 'age' : undefined;
      if (reason === undefined) break;
      try {
        await this.remove(candidate.id, { reason });
        extra--;
      } catch (error) {
        this.#deps.logger.warn({ groupId: candidate.id, code: codeOf(error) }, 'retention could not remove an ended group; the next pass tries again');
      }
    }
  }
}

/** A group's task spec as recorded: the agent's defaults, but no network of its own (the group's namespace is its network; a sandbox preset's `network` does not apply). */
function memberSpec<T extends Record<string, unknown>>(prepared: T, raw: Record<string, unknown> | undefined): T {
  if (raw?.network !== undefined) return prepared;
  const { network: _network, ...rest } = prepared;
  return rest as T;
}
