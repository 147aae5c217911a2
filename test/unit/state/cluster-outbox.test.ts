import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clusterReportOf } from '../../../src/state/tasks.js';
import { openTestStore } from '../../support/store.js';

const spec = { image: 'busybox' };

describe('the cluster report outbox', () => {
  it('a claimed task\'s running and end are written to the outbox with the change, in order, under its epoch', () => {
    const store = openTestStore();
    store.tasks.insert({ id: 'a', spec, clusterEpoch: 3 });
    store.tasks.insert({ id: 'b', spec, clusterEpoch: 3 });
    store.tasks.update('a', { to: 'starting' });
    store.tasks.update('b', { to: 'starting' });
    store.tasks.update('a', { to: 'running', containerId: 'ca' });
    store.tasks.update('b', { to: 'running', containerId: 'cb' });
    store.tasks.update('b', { to: 'exited', endState: { kind: 'failed', exitCode: 2 } });
    store.tasks.update('a', { to: 'stopping' });
    store.tasks.update('a', { to: 'exited', endState: { kind: 'cancelled' } });
    const entries = store.outbox.list();
    assert.deepEqual(entries.map((e) => [e.taskId, e.epoch, e.transition]), [
      ['a', 3, { kind: 'running', containerId: 'ca' }],
      ['b', 3, { kind: 'running', containerId: 'cb' }],
      ['b', 3, { kind: 'exited', exitCode: 2, end: 'failed' }],
      ['a', 3, { kind: 'exited', exitCode: null, end: 'cancelled' }],
    ]);
    assert.ok(entries.every((e, i) => i === 0 || e.seq > entries[i - 1]!.seq));
    assert.equal(store.outbox.count(), 4);
    store.outbox.delete(entries[0]!.seq);
    assert.equal(store.outbox.list()[0]!.transition.kind, 'running');
    assert.equal(store.outbox.list()[0]!.taskId, 'b');
    store.close();
  });

  it('a local task writes nothing to the outbox', () => {
    const store = openTestStore();
    store.tasks.insert({ id: 'local', spec });
    store.tasks.update('local', { to: 'starting' });
    store.tasks.update('local', { to: 'running', containerId: 'c' });
    store.tasks.update('local', { to: 'exited', endState: { kind: 'success', exitCode: 0 } });
    assert.equal(store.outbox.count(), 0);
    assert.equal(store.tasks.get('local')!.cluster, undefined);
    store.close();
  });

  it('a re-registration moves the task and its unsent reports to the new epoch; a detached task drops them and reports nothing more', () => {
    const store = openTestStore();
    store.tasks.insert({ id: 'kept', spec, clusterEpoch: 1 });
    store.tasks.insert({ id: 'fenced', spec, clusterEpoch: 1 });
    for (const id of ['kept', 'fenced']) {
      store.tasks.update(id, { to: 'starting' });
      store.tasks.update(id, { to: 'running', containerId: `c-${id}` });
    }
    store.tasks.setClusterEpoch('kept', 2);
    assert.deepEqual(store.tasks.get('kept')!.cluster, { epoch: 2 });
    assert.equal(store.tasks.detachFromCluster('fenced', 'fenced: placed elsewhere'), true);
    assert.equal(store.tasks.detachFromCluster('fenced', 'again'), false);
    assert.deepEqual(store.tasks.get('fenced')!.cluster, { epoch: 1, detached: 'fenced: placed elsewhere' });
    assert.deepEqual(store.outbox.list().map((e) => [e.taskId, e.epoch]), [['kept', 2]]);
    store.tasks.update('fenced', { to: 'lost', endState: { kind: 'lost', reason: 'fenced: placed elsewhere' } });
    assert.deepEqual(store.outbox.list().map((e) => e.taskId), ['kept']);
    assert.deepEqual(store.tasks.listClusterUnended().map((r) => r.id), ['kept']);
    store.close();
  });

  it('maps local moves to cluster reports: running, exited with the end kind, lost with its reason; other moves report nothing', () => {
    assert.deepEqual(clusterReportOf({ to: 'running' }, 'c1'), { kind: 'running', containerId: 'c1' });
    assert.deepEqual(clusterReportOf({ to: 'exited', endState: { kind: 'oom', exitCode: 137, hint: 'raise resources.memory' } }, 'c1'), { kind: 'exited', exitCode: 137, end: 'oom' });
    assert.deepEqual(clusterReportOf({ to: 'exited', endState: { kind: 'cancelled' } }, undefined), { kind: 'exited', exitCode: null, end: 'cancelled' });
    assert.deepEqual(clusterReportOf({ to: 'exited', endState: { kind: 'timed-out', exitCode: 143, timeoutMs: 5 } }, undefined), { kind: 'exited', exitCode: 143, end: 'timed-out' });
    assert.deepEqual(clusterReportOf({ to: 'lost', endState: { kind: 'lost', reason: 'gone' } }, 'c1'), { kind: 'lost', reason: 'gone' });
    for (const to of ['starting', 'stopping', 'removed'] as const) assert.equal(clusterReportOf({ to }, 'c1'), undefined);
  });
});
