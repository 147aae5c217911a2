import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isBerthError } from '../../../src/common/errors.js';
import { isLegalGroupMove, type NewGroup } from '../../../src/state/index.js';
import { openTestStore } from '../../support/store.js';

const group = (id: string, taskIds: readonly string[] = ['a', 'b']): NewGroup => ({
  id,
  name: 'g',
  spec: { name: 'g', tasks: taskIds.map((name) => ({ name, image: 'busybox' })) },
  reservation: { memoryBytes: 2, cpuMilli: 2 },
  startAttempt: 'attempt-1',
  tasks: taskIds.map((name, i) => ({ id: `${id}.${name}`, spec: { image: 'busybox' }, reservation: { memoryBytes: 1, cpuMilli: 1 }, link: { taskName: name, lifecycle: i === 0 ? 'sidecar' : 'main' } })),
});

describe('GroupRepository', () => {
  it('records a group and its tasks together, pending, the tasks naming their group', () => {
    const store = openTestStore();
    const { inserted, group: record } = store.groups.insert(group('g1'));
    assert.equal(inserted, true);
    assert.equal(record.state, 'pending');
    assert.equal(record.stopRequested, false);
    assert.deepEqual(record.reservation, { memoryBytes: 2, cpuMilli: 2 });
    const tasks = store.tasks.list({ group: 'g1' });
    assert.deepEqual(tasks.map((t) => [t.id, t.state, t.group]), [
      ['g1.a', 'pending', { groupId: 'g1', taskName: 'a', lifecycle: 'sidecar' }],
      ['g1.b', 'pending', { groupId: 'g1', taskName: 'b', lifecycle: 'main' }],
    ]);
    assert.deepEqual(store.tasks.list({ group: false }), []);
    assert.equal(store.groups.insert(group('g1')).inserted, false, 'the same id again is the existing group');
    store.close();
  });

  it('records nothing of a group one of whose task ids is taken', () => {
    const store = openTestStore();
    store.tasks.insert({ id: 'g2.b', spec: { image: 'busybox' } });
    assert.throws(() => store.groups.insert(group('g2')), (e: unknown) => isBerthError(e, 'BERTH_TASK_EXISTS'));
    assert.equal(store.groups.get('g2'), undefined);
    assert.equal(store.tasks.get('g2.a'), undefined);
    store.close();
  });

  it('moves a group forward only, stamps its start and end, and keeps it unfinished until it is cleaned', () => {
    const store = openTestStore();
    store.groups.insert(group('g3'));
    assert.deepEqual(store.groups.listLive().map((g) => g.id), ['g3']);
    const running = store.groups.update('g3', { state: 'running', infraContainerId: 'infra', ports: [{ container: 80, protocol: 'tcp', hostIp: '127.0.0.1', host: 32768 }] });
    assert.ok(running.startedAtMs !== undefined);
    assert.equal(running.infraContainerId, 'infra');
    assert.throws(() => store.groups.update('g3', { state: 'starting' }), (e: unknown) => isBerthError(e, 'BERTH_TASK_STATE'));
    const ended = store.groups.update('g3', { state: 'exited', endState: { kind: 'success', exitCode: 0 } });
    assert.ok(ended.endedAtMs !== undefined);
    assert.deepEqual(store.groups.listLive(), []);
    assert.deepEqual(store.groups.listUnfinished().map((g) => g.id), ['g3'], 'ended, its objects still to be removed');
    assert.deepEqual(store.groups.oldestEnded(10), [], 'retention waits for its cleanup');
    store.groups.update('g3', { cleaned: true });
    assert.deepEqual(store.groups.listUnfinished(), []);
    assert.deepEqual(store.groups.oldestEnded(10).map((g) => g.id), ['g3']);
    assert.equal(store.groups.countEnded(), 1);
    store.close();
  });

  it('deletes a group with its tasks only once every task has ended', () => {
    const store = openTestStore();
    store.groups.insert(group('g4'));
    store.tasks.update('g4.a', { to: 'exited', endState: { kind: 'cancelled' } });
    assert.equal(store.groups.delete('g4'), false, 'g4.b has not ended');
    store.tasks.update('g4.b', { to: 'exited', endState: { kind: 'success', exitCode: 0 } });
    assert.equal(store.groups.delete('g4'), true);
    assert.equal(store.groups.get('g4'), undefined);
    assert.deepEqual(store.tasks.list({ group: 'g4' }), []);
    store.close();
  });

  it('leaves group tasks out of task retention (they go with their group)', () => {
    const store = openTestStore();
    store.groups.insert(group('g5', ['only']));
    store.tasks.update('g5.only', { to: 'exited', endState: { kind: 'success', exitCode: 0 } });
    store.tasks.insert({ id: 'solo', spec: { image: 'busybox' } });
    store.tasks.update('solo', { to: 'exited', endState: { kind: 'success', exitCode: 0 } });
    assert.deepEqual(store.tasks.oldestEnded(10).map((t) => t.id), ['solo']);
    assert.equal(store.tasks.countEnded(), 1, 'nor counted against retention.maxCount of tasks');
    store.close();
  });

  it('allows only forward moves, ended being final', () => {
    assert.equal(isLegalGroupMove('pending', 'exited'), true);
    assert.equal(isLegalGroupMove('running', 'stopping'), true);
    assert.equal(isLegalGroupMove('stopping', 'running'), false);
    assert.equal(isLegalGroupMove('exited', 'exited'), false);
    assert.equal(isLegalGroupMove('running', 'running'), true);
  });
});
