import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pendingMigrations, type ClusterMigration } from '../../../src/cluster/migrations.js';
import { classifyPgError, isTransactionConflict } from '../../../src/cluster/pg-errors.js';
import { eventFromRow, formatCursor, nodeFromRow, parseCursor, taskFromRow, type NodeRow, type TaskRow } from '../../../src/cluster/rows.js';
import { BerthError, isBerthError } from '../../../src/common/errors.js';

const at = new Date('2026-01-01T00:00:00Z');

describe('row mapping', () => {
  const nodeRow: NodeRow = {
    node_id: 'n1', address: 'https://n1', labels: { disk: 'ssd' }, cap_mem: '8589934592', cap_cpu: '4000', cap_tasks: '10', epoch: '3',
    state: 'ready', lease_live: true, lease_expires_at: at, registered_at: at, heartbeat_at: at,
    load_mem: '1024', load_cpu: '250', load_tasks: '2', held_mem: null, held_cpu: null, held_tasks: null, down_reason: null,
  };

  test('a node row reads int8 text as numbers and no held tasks as zero', () => {
    const view = nodeFromRow(nodeRow);
    assert.deepEqual(view.capacity, { memoryBytes: 8 * 1024 ** 3, cpuMilli: 4000, tasks: 10 });
    assert.deepEqual(view.held, { memoryBytes: 0, cpuMilli: 0, tasks: 0 });
    assert.deepEqual(view.load, { memoryBytes: 1024, cpuMilli: 250, tasks: 2 });
    assert.equal(view.epoch, 3);
    assert.equal(view.state, 'ready');
    assert.equal(view.downReason, undefined);
  });

  test('a ready node whose lease ran out shows down before any sweep', () => {
    const view = nodeFromRow({ ...nodeRow, lease_live: false });
    assert.equal(view.state, 'down');
    assert.equal(view.downReason, 'lease expired');
    assert.equal(nodeFromRow({ ...nodeRow, state: 'down', down_reason: 'node n1 lost its lease' }).downReason, 'node n1 lost its lease');
  });

  test('a task row gives constraints as users wrote them and absent values as undefined', () => {
    const row: TaskRow = {
      task_id: 't', spec: { a: 1 }, priority: 2, constraint_labels: { disk: 'ssd' }, demand_memory_bytes: '100', demand_cpu_milli: '5',
      restart_on_lost: 1, lost_count: 0, state: 'queued', node_id: null, epoch: null, attempt: 0, container_id: null, exit_code: null,
      end_reason: null, submitted_at: at, queued_at: at, claimed_at: null, started_at: null, ended_at: null,
    };
    const task = taskFromRow(row);
    assert.deepEqual(task.constraints, { 'node.disk': 'ssd' });
    assert.deepEqual(task.demand, { memoryBytes: 100, cpuMilli: 5 });
    assert.equal(task.nodeId, undefined);
    assert.equal(task.epoch, undefined);
    assert.equal(taskFromRow({ ...row, state: 'claimed', node_id: 'n', epoch: '7' }).epoch, 7);
  });

  test('an event row and its cursor round-trip', () => {
    const event = eventFromRow({ seq: '12', at, kind: 'task.claimed', task_id: 't', node_id: 'n', epoch: '2', data: { attempt: 1 } });
    assert.deepEqual([event.seq, event.epoch, event.data], [12, 2, { attempt: 1 }]);
    const cursor = formatCursor({ xid: 12345678901234n, seq: 99n });
    assert.deepEqual(parseCursor(cursor), { xid: 12345678901234n, seq: 99n });
    assert.equal(parseCursor('12;3'), undefined);
    assert.equal(parseCursor('-1:3'), undefined);
  });
});

describe('PostgreSQL failures', () => {
  const dbError = (code: string): Error => Object.assign(new Error(`sqlstate ${code}`), { code, severity: 'ERROR' });

  test('a connection failure, a shutdown or a server out of resources is BERTH_CLUSTER_UNAVAILABLE, retryable', () => {
    for (const error of [Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), new Error('Connection terminated unexpectedly'), dbError('57P01'), dbError('08006'), dbError('53300')]) {
      const classified = classifyPgError(error, 'claim tasks');
      assert.equal(classified.code, 'BERTH_CLUSTER_UNAVAILABLE', error.message);
      assert.equal(classified.retryable, true);
      assert.equal(classified.cause, error);
    }
  });

  test('any other server error is a bug, and berth\'s own errors pass through', () => {
    assert.equal(classifyPgError(dbError('42P01'), 'x').code, 'BERTH_INTERNAL');
    const own = new BerthError('BERTH_CLUSTER_FENCED', 'fenced');
    assert.equal(classifyPgError(own, 'x'), own);
  });

  test('serialization failures and deadlocks are conflicts to run again', () => {
    assert.equal(isTransactionConflict(dbError('40001')), true);
    assert.equal(isTransactionConflict(dbError('40P01')), true);
    assert.equal(isTransactionConflict(dbError('23505')), false);
    assert.equal(isTransactionConflict(new Error('x')), false);
  });
});

describe('cluster migrations', () => {
  const steps: ClusterMigration[] = [
    { version: 1, name: 'one', sql: '' },
    { version: 2, name: 'two', sql: '' },
  ];

  test('the steps a database has not recorded run in order', () => {
    assert.deepEqual(pendingMigrations([], steps).map((m) => m.version), [1, 2]);
    assert.deepEqual(pendingMigrations([1], steps).map((m) => m.version), [2]);
    assert.deepEqual(pendingMigrations([2], steps).map((m) => m.version), [1], 'steps released out of order');
    assert.deepEqual(pendingMigrations([1, 2], steps), []);
  });

  test('a database recording a step this berth does not know is BERTH_CLUSTER_SCHEMA', () => {
    assert.throws(() => pendingMigrations([1, 2, 3], steps), (error: unknown) => isBerthError(error, 'BERTH_CLUSTER_SCHEMA') && error.context.schemaVersion === 3);
  });
});
