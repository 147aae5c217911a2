import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AdmissionController, resolveDemand, type ResourceDemand } from '../../../src/agent/admission.js';
import { groupEntryId, GroupCoordinator, groupTaskId, isGroupEntry, memberPhase, membersOf, newGroupId, runningStateOf } from '../../../src/agent/groups.js';
import { phasedDemand } from '../../../src/groups/demand.js';
import { toGroupView } from '../../../src/agent/http/views.js';
import type { SupervisorGroupHooks } from '../../../src/agent/supervisor.js';
import { AgentEvents } from '../../../src/agent/events.js';
import { ValidationError } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import { planGroup } from '../../../src/groups/lifecycle.js';
import { resolveTaskSpec } from '../../../src/spec/schema.js';
import { type StoredTaskSpec } from '../../../src/state/index.js';
import { openTestStore } from '../../support/store.js';

const MiB = 1024 * 1024;

describe('group coordinator: pure parts', () => {
  it('keeps groups\' admission entries apart from task ids, and names its tasks by group and name', () => {
    assert.equal(groupEntryId('web-1'), 'group:web-1');
    assert.equal(isGroupEntry('group:web-1'), true);
    assert.equal(isGroupEntry('web-1'), false);
    assert.equal(groupTaskId('web-1', 'proxy'), 'web-1.proxy');
    assert.equal(newGroupId('web', () => '0a1b2c3d'), 'web-0a1b2c3d');
    assert.equal(newGroupId('x'.repeat(64), () => '0a1b2c3d').length, 49, 'a long name is cut, so its tasks\' ids stay valid');
  });

  it('reads task states as the planner\'s phases', () => {
    assert.deepEqual((['pending', 'starting', 'running', 'stopping', 'exited', 'lost', 'removed'] as const).map(memberPhase), ['waiting', 'starting', 'running', 'stopping', 'ended', 'ended', 'ended']);
  });

  it('sums the tasks\' demands into one unit: the larger of the prestarts\' sum and the others\' sum, per resource', () => {
    const task = (lifecycle: 'prestart' | 'main' | 'sidecar', memoryBytes: number, cpuMilli: number) => ({ lifecycle, demand: { memoryBytes, cpuMilli } });
    assert.deepEqual(phasedDemand([task('main', 1, 10), task('sidecar', 2, 20), task('main', 3, 30)]), { memoryBytes: 6, cpuMilli: 60 });
    assert.deepEqual(phasedDemand([task('prestart', 9, 5), task('main', 3, 30)]), { memoryBytes: 9, cpuMilli: 30 });
    assert.deepEqual(phasedDemand([]), { memoryBytes: 0, cpuMilli: 0 });
  });

  it('calls a group stopping once anything of it is being stopped or skipped, or a stop was asked', () => {
    assert.equal(runningStateOf('running', { stop: [], skip: [] }, false), 'running');
    assert.equal(runningStateOf('running', { stop: ['web'], skip: [] }, false), 'stopping');
    assert.equal(runningStateOf('running', { stop: [], skip: ['late'] }, false), 'stopping');
    assert.equal(runningStateOf('running', { stop: [], skip: [] }, true), 'stopping');
    assert.equal(runningStateOf('stopping', { stop: [], skip: [] }, false), 'stopping', 'never back');
  });

  it('drives the planner from task records: a main ended, its sidecar is stopped, then the group ends as its main did', () => {
    const store = openTestStore();
    store.groups.insert({
      id: 'g',
      name: 'g',
      spec: {},
      reservation: { memoryBytes: 0, cpuMilli: 0 },
      startAttempt: 's',
      tasks: [
        { id: 'g.web', spec: { image: 'busybox' }, link: { taskName: 'web', lifecycle: 'sidecar' } },
        { id: 'g.main', spec: { image: 'busybox' }, link: { taskName: 'main', lifecycle: 'main' } },
      ],
    });
    for (const id of ['g.web', 'g.main']) store.tasks.update(id, { to: 'starting' });
    store.tasks.update('g.web', { to: 'running' });
    store.tasks.update('g.main', { to: 'exited', endState: { kind: 'failed', exitCode: 2 } });
    const step = planGroup(membersOf(store.tasks.list({ group: 'g' })), { stopRequested: false });
    assert.deepEqual(step, { start: [], stop: ['web'], skip: [] });
    store.tasks.update('g.web', { to: 'exited', endState: { kind: 'cancelled' } });
    assert.deepEqual(planGroup(membersOf(store.tasks.list({ group: 'g' })), { stopRequested: false }).end, { kind: 'failed', exitCode: 2, task: 'main' });
    store.close();
  });
});

describe('group view', () => {
  it('shows the group\'s tasks, ports, network and shared directory', () => {
    const store = openTestStore();
    store.groups.insert({
      id: 'web-1',
      name: 'web',
      spec: { name: 'web', network: { mode: 'private' }, tasks: [] },
      reservation: { memoryBytes: 0, cpuMilli: 0 },
      startAttempt: 's',
      tasks: [{ id: 'web-1.main', spec: { image: 'busybox' }, link: { taskName: 'main', lifecycle: 'main' } }],
    });
    const group = store.groups.update('web-1', { state: 'running', infraContainerId: 'infra1', ports: [{ container: 80, protocol: 'tcp', hostIp: '127.0.0.1', host: 32768 }] });
    const view = toGroupView(group, store.tasks.list({ group: 'web-1' }), 'agent-1');
    assert.equal(view.state, 'running');
    assert.equal(view.infraContainerId, 'infra1');
    assert.deepEqual(view.ports, [{ container: 80, protocol: 'tcp', hostIp: '127.0.0.1', host: 32768 }]);
    assert.deepEqual(view.network, { mode: 'private', name: 'berth-web-1.agent-1.net' });
    assert.deepEqual(view.sharedDir, { path: '/alloc', volume: 'berth-web-1.agent-1.shared' });
    assert.deepEqual(view.tasks, [{ name: 'main', lifecycle: 'main', taskId: 'web-1.main', state: 'pending' }]);
    assert.equal(view.stopRequested, undefined);
    const noShared = toGroupView({ ...group, spec: { name: 'web', sharedDir: false } }, [], 'agent-1');
    assert.equal(noShared.sharedDir, undefined);
    assert.deepEqual(noShared.network, { mode: 'bridge' });
    store.close();
  });
});

/** A coordinator over a real store and admission, with a supervisor that checks specs as the agent does and starts nothing. */
function coordinatorWith(budget: ResourceDemand) {
  const store = openTestStore();
  const admission = new AdmissionController(budget);
  const defaults = { memoryBytes: 64 * MiB, cpuMilli: 100 };
  let hooks: SupervisorGroupHooks | undefined;
  const admitted: string[] = [];
  const supervisor = {
    prepare: (input: unknown) => {
      const resolved = resolveTaskSpec(input);
      return { spec: input as StoredTaskSpec, reservation: resolveDemand(resolved.resources, defaults) };
    },
    enterAdmission: (entryId: string, demand: ResourceDemand) => {
      const outcome = admission.submit(entryId, demand);
      if (outcome === 'admitted') admitted.push(entryId);
      return outcome;
    },
    leaveAdmission: (entryId: string) => void admission.release(entryId),
    startMember: () => undefined,
    stop: () => Promise.reject(new Error('not in this test')),
    attachGroups: (h: SupervisorGroupHooks) => void (hooks = h),
    forget: () => Promise.resolve([]),
  };
  const coordinator = new GroupCoordinator({
    store,
    supervisor: supervisor as unknown as ConstructorParameters<typeof GroupCoordinator>[0]['supervisor'],
    admission,
    engine: {} as ConstructorParameters<typeof GroupCoordinator>[0]['engine'],
    events: new AgentEvents(),
    logger: silentLogger,
    ownerId: 'agent-1',
    policy: () => ({}) as never,
    infraImage: () => undefined,
  });
  return { store, admission, coordinator, admitted, hooks: () => hooks };
}

describe('group coordinator: submit', () => {
  const task = (name: string, memory: string): Record<string, unknown> => ({ name, image: 'busybox', resources: { memory, cpuMilli: 100 } });

  it('enters a group into admission as one unit, the sum of its tasks, and connects itself to the supervisor', () => {
    const { store, admission, coordinator, hooks } = coordinatorWith({ memoryBytes: 300 * MiB, cpuMilli: 1000 });
    admission.submit('other', { memoryBytes: 200 * MiB, cpuMilli: 100 });
    const { group, created } = coordinator.submit({ id: 'trio', spec: { name: 'trio', tasks: [task('a', '40m'), task('b', '40m'), task('c', '40m')] } });
    assert.equal(created, true);
    assert.deepEqual(group.reservation, { memoryBytes: 120 * MiB, cpuMilli: 300 });
    assert.deepEqual(admission.snapshot().queued.map((e) => e.taskId), ['group:trio'], 'queued whole: two of its tasks would fit, the three do not');
    assert.deepEqual(store.tasks.list({ group: 'trio' }).map((t) => t.state), ['pending', 'pending', 'pending']);
    assert.ok(hooks()?.isGroupEntry('group:trio'));
    store.close();
  });

  it('refuses a group that could never fit, and names bad fields by their place; nothing is recorded', () => {
    const { store, coordinator } = coordinatorWith({ memoryBytes: 300 * MiB, cpuMilli: 1000 });
    assert.throws(
      () => coordinator.submit({ id: 'big', spec: { name: 'big', tasks: [task('a', '120m'), task('b', '120m'), task('c', '120m')] } }),
      (e: unknown) => e instanceof ValidationError && e.issues.length === 1 && e.issues[0]!.field === 'tasks' && /could never start/.test(e.issues[0]!.rule),
    );
    assert.throws(
      () => coordinator.submit({ id: 'huge', spec: { name: 'huge', tasks: [task('a', '1g')] } }),
      (e: unknown) => e instanceof ValidationError && e.issues[0]!.field === 'tasks[0].resources.memory',
    );
    assert.throws(
      () => coordinator.submit({ id: 'bad', spec: { name: 'bad', tasks: [task('a', '1m'), { name: 'b', image: 'busybox', resources: { memory: 'lots' } }] } }),
      (e: unknown) => e instanceof ValidationError && e.issues.some((issue) => issue.field === 'tasks[1].resources.memory'),
    );
    assert.throws(() => coordinator.submit({ id: 'no id!', spec: { name: 'x', tasks: [task('a', '1m')] } }), (e: unknown) => e instanceof ValidationError && e.issues[0]!.field === 'id');
    assert.deepEqual(store.groups.list(), []);
    assert.deepEqual(store.tasks.list(), []);
    store.close();
  });

  it('is idempotent by id: the same document is the same group, another one is refused', () => {
    const { store, coordinator } = coordinatorWith({ memoryBytes: 300 * MiB, cpuMilli: 1000 });
    const spec = { name: 'pair', tasks: [task('a', '10m')] };
    assert.equal(coordinator.submit({ id: 'p', spec }).created, true);
    assert.equal(coordinator.submit({ id: 'p', spec: structuredClone(spec) }).created, false);
    assert.throws(() => coordinator.submit({ id: 'p', spec: { ...spec, tasks: [task('a', '20m')] } }), (e: unknown) => e instanceof Error && 'code' in e && e.code === 'BERTH_GROUP_EXISTS');
    store.close();
  });

  it('stops a queued group: it leaves the queue', () => {
    const { store, admission, coordinator } = coordinatorWith({ memoryBytes: 100 * MiB, cpuMilli: 1000 });
    admission.submit('other', { memoryBytes: 90 * MiB, cpuMilli: 100 });
    coordinator.submit({ id: 'q', spec: { name: 'q', tasks: [task('a', '50m')] } });
    assert.equal(admission.positionOf('group:q')?.state, 'queued');
    assert.equal(coordinator.stop('q').stopRequested, true);
    assert.equal(admission.positionOf('group:q'), undefined);
    void coordinator.shutdown(0);
    store.close();
  });
});
