import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { freeBudget, queuedSubmission, restartOnLostOf } from '../../../src/agent/cluster-placement.js';
import { resolveAcceptedTaskSpec, resolveTaskSpec } from '../../../src/spec/schema.js';

const GiB = 1024 ** 3;
const fieldsOf = (work: () => unknown): string[] => {
  try {
    work();
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    return error.issues.map((issue) => issue.field);
  }
  return [];
};

describe('cluster placement rules', () => {
  it('a task is placed again after a lost node as often as its restart policy restarts on lost, else never', () => {
    assert.equal(restartOnLostOf(resolveTaskSpec({ image: 'a' }).restart), 0);
    assert.equal(restartOnLostOf(resolveTaskSpec({ image: 'a', restart: { policy: 'on-failure' } }).restart), 2);
    assert.equal(restartOnLostOf(resolveTaskSpec({ image: 'a', restart: { policy: 'on-failure', attempts: 5, on: ['lost'] } }).restart), 5);
    assert.equal(restartOnLostOf(resolveTaskSpec({ image: 'a', restart: { policy: 'on-failure', attempts: 5, on: ['failed', 'oom'] } }).restart), 0);
    assert.equal(restartOnLostOf(resolveTaskSpec({ image: 'a', restart: { policy: 'never' } }).restart), 0);
  });

  it('what a node has free is its capacity less what admission admitted and queued, never below zero', () => {
    const budget = { memoryBytes: 4 * GiB, cpuMilli: 4000 };
    const entry = (memoryBytes: number, cpuMilli: number) => ({ taskId: 't', demand: { memoryBytes, cpuMilli } });
    assert.deepEqual(freeBudget({ budget, used: { memoryBytes: GiB, cpuMilli: 1000, tasks: 2 }, queued: [entry(GiB, 500)] }, { capacity: { tasks: 10 } }), { memoryBytes: 2 * GiB, cpuMilli: 2500, tasks: 7 });
    // cluster.capacity below the budget bounds it; admission.maxConcurrent bounds the slots.
    assert.deepEqual(freeBudget({ budget: { ...budget, maxConcurrent: 3 }, used: { memoryBytes: 0, cpuMilli: 0, tasks: 1 }, queued: [] }, { capacity: { memoryBytes: GiB, tasks: 10 } }), { memoryBytes: GiB, cpuMilli: 4000, tasks: 2 });
    assert.deepEqual(freeBudget({ budget, used: { memoryBytes: 5 * GiB, cpuMilli: 5000, tasks: 12 }, queued: [] }, { capacity: { tasks: 10 } }), { memoryBytes: 0, cpuMilli: 0, tasks: 0 });
  });

  it('a submission is queued with the spec as given, its priority, constraints, demand and restarts on lost', () => {
    const given = { image: 'a', priority: 7, constraints: { 'node.disk': 'ssd' }, restart: { policy: 'on-failure' as const, attempts: 3 } };
    const queued = queuedSubmission({ id: 't1', spec: given }, resolveTaskSpec(given), { memoryBytes: GiB, cpuMilli: 500 });
    assert.deepEqual(queued, { id: 't1', spec: given, priority: 7, constraints: { 'node.disk': 'ssd' }, demand: { memoryBytes: GiB, cpuMilli: 500 }, restartOnLost: 3 });
    const plain = queuedSubmission({ id: 't2', spec: { image: 'a' } }, resolveTaskSpec({ image: 'a' }), { memoryBytes: 1, cpuMilli: 1 });
    assert.deepEqual([plain.priority, plain.constraints, plain.restartOnLost], [0, {}, 0]);
  });

  it('inline registry credentials and upload files cannot be queued in the cluster, naming the field', () => {
    const inline = { image: 'a', registryAuth: { username: 'u', password: 'p' } };
    assert.deepEqual(fieldsOf(() => queuedSubmission({ id: 't', spec: inline }, resolveAcceptedTaskSpec(inline), { memoryBytes: 1, cpuMilli: 1 })), ['registryAuth']);
    const uploaded = { image: 'a', files: [{ upload: 'u1', path: '/x' }] };
    assert.deepEqual(fieldsOf(() => queuedSubmission({ id: 't', spec: uploaded }, resolveAcceptedTaskSpec(uploaded), { memoryBytes: 1, cpuMilli: 1 })), ['files']);
  });

  it('constraints are node.<label> keys with text values, and priority an integer within its bounds', () => {
    assert.deepEqual(resolveTaskSpec({ image: 'a', constraints: { 'node.disk': 'ssd', 'node.zone/x': 'a' } }).constraints, { 'node.disk': 'ssd', 'node.zone/x': 'a' });
    assert.deepEqual(resolveTaskSpec({ image: 'a' }).constraints, {});
    assert.deepEqual(fieldsOf(() => resolveTaskSpec({ image: 'a', constraints: { disk: 'ssd' } })), ['constraints.disk']);
    assert.deepEqual(fieldsOf(() => resolveTaskSpec({ image: 'a', constraints: { 'node.': 'ssd' } })), ['constraints.node.']);
    assert.deepEqual(fieldsOf(() => resolveTaskSpec({ image: 'a', constraints: { 'node.disk': 3 } })), ['constraints.node.disk']);
    assert.deepEqual(fieldsOf(() => resolveTaskSpec({ image: 'a', priority: 1.5 })), ['priority']);
    assert.equal(resolveTaskSpec({ image: 'a' }).priority, 0);
  });
});
