import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fits, isBetter, mayClaim, scoreAfter, type PlacementNode } from '../../../src/cluster/placement.js';

const GIB = 1024 ** 3;
const nodeOf = (nodeId: string, usedTasks: number, usedMemGib = 0): PlacementNode => ({
  nodeId,
  capacity: { memoryBytes: 8 * GIB, cpuMilli: 4000, tasks: 10 },
  used: { memoryBytes: usedMemGib * GIB, cpuMilli: 0, tasks: usedTasks },
});
const none = { memoryBytes: 0, cpuMilli: 0 };

describe('placement rule', () => {
  test('the score is the fullest dimension once the task is placed', () => {
    assert.equal(scoreAfter(nodeOf('a', 0), none), 0.1);
    assert.equal(scoreAfter(nodeOf('a', 0, 2), { memoryBytes: 2 * GIB, cpuMilli: 0 }), 0.5);
    assert.equal(scoreAfter(nodeOf('a', 4), { memoryBytes: 0, cpuMilli: 1000 }), 0.5);
  });

  test('a dimension of capacity 0 counts nothing and fits only a demand of 0', () => {
    const noCpu: PlacementNode = { nodeId: 'x', capacity: { memoryBytes: GIB, cpuMilli: 0, tasks: 1 }, used: { memoryBytes: 0, cpuMilli: 0, tasks: 0 } };
    assert.equal(scoreAfter(noCpu, none), 1);
    assert.equal(fits(noCpu, none), true);
    assert.equal(fits(noCpu, { memoryBytes: 0, cpuMilli: 1 }), false);
  });

  test('a task fits while every dimension stays within capacity, a task slot included', () => {
    assert.equal(fits(nodeOf('a', 9), none), true);
    assert.equal(fits(nodeOf('a', 10), none), false);
    assert.equal(fits(nodeOf('a', 0, 6), { memoryBytes: 2 * GIB, cpuMilli: 0 }), true);
    assert.equal(fits(nodeOf('a', 0, 6), { memoryBytes: 2 * GIB + 1, cpuMilli: 0 }), false);
  });

  test('binpack prefers the busier node, spread the idler one, and equal scores go to the smaller id', () => {
    assert.equal(isBetter(nodeOf('b', 5), nodeOf('a', 1), none, 'binpack'), true);
    assert.equal(isBetter(nodeOf('b', 5), nodeOf('a', 1), none, 'spread'), false);
    assert.equal(isBetter(nodeOf('a', 1), nodeOf('b', 5), none, 'spread'), true);
    assert.equal(isBetter(nodeOf('a', 3), nodeOf('b', 3), none, 'binpack'), true);
    assert.equal(isBetter(nodeOf('b', 3), nodeOf('a', 3), none, 'spread'), false);
  });

  test('a node claims a task only when no other fitting node is better, until the task has waited the grace', () => {
    const decision = { demand: none, strategy: 'binpack' as const, graceMs: 2000 };
    assert.equal(mayClaim({ ...decision, claimer: nodeOf('a', 1), others: [nodeOf('b', 5)], waitedMs: 0 }), false);
    assert.equal(mayClaim({ ...decision, claimer: nodeOf('a', 1), others: [nodeOf('b', 5)], waitedMs: 2000 }), true);
    assert.equal(mayClaim({ ...decision, claimer: nodeOf('b', 5), others: [nodeOf('a', 1)], waitedMs: 0 }), true);
    // A better node that cannot fit the task does not count.
    assert.equal(mayClaim({ ...decision, claimer: nodeOf('a', 1), others: [nodeOf('b', 10)], waitedMs: 0 }), true);
    // The claimer itself must fit, whatever the wait.
    assert.equal(mayClaim({ ...decision, claimer: nodeOf('a', 10), others: [], waitedMs: 60_000 }), false);
  });
});
