import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { constraintLabels, constraintsOf, labelsSatisfy } from '../../../src/cluster/constraints.js';
import { queueRowOf, resolveClaim, takeWithinBudget } from '../../../src/cluster/input.js';
import { resolveClusterStoreOptions } from '../../../src/cluster/options.js';
import { ValidationError } from '../../../src/common/errors.js';

const fields = (fn: () => unknown): string[] => {
  try {
    fn();
  } catch (error) {
    if (error instanceof ValidationError) return error.issues.map((i) => i.field);
    throw error;
  }
  return [];
};

describe('constraints', () => {
  test('node.<label> constraints become the node labels they ask for, and back', () => {
    assert.deepEqual(constraintLabels({ 'node.disk': 'ssd', 'node.zone': 'eu' }), { disk: 'ssd', zone: 'eu' });
    assert.deepEqual(constraintsOf({ disk: 'ssd' }), { 'node.disk': 'ssd' });
    assert.deepEqual(constraintLabels(undefined), {});
  });

  test('a constraint that names no node label, or has a value that is not text, is refused naming the field', () => {
    assert.deepEqual(fields(() => constraintLabels({ disk: 'ssd', 'node.': 'x', 'node.zone': 5 })), ['constraints.disk', 'constraints.node.', 'constraints.node.zone']);
  });

  test('a node satisfies constraints when it has every label with the same value', () => {
    assert.equal(labelsSatisfy({ disk: 'ssd', zone: 'eu' }, { disk: 'ssd' }), true);
    assert.equal(labelsSatisfy({ disk: 'hdd' }, { disk: 'ssd' }), false);
    assert.equal(labelsSatisfy({}, { disk: 'ssd' }), false);
    assert.equal(labelsSatisfy({}, {}), true);
    assert.equal(labelsSatisfy({}, { toString: 'x' }), false, 'inherited names are not labels');
  });
});

describe('submissions and claims', () => {
  test('a submission is defaulted into its queue row', () => {
    assert.deepEqual(queueRowOf({ id: 't1', spec: { cmd: ['true'] } }), {
      id: 't1',
      specJson: '{"cmd":["true"]}',
      priority: 0,
      constraintLabels: {},
      demandMemoryBytes: 0,
      demandCpuMilli: 0,
      restartOnLost: 0,
    });
  });

  test('every field at fault in a submission is named at once', () => {
    assert.deepEqual(
      fields(() => queueRowOf({ id: '', spec: undefined, priority: 1.5, demand: { memoryBytes: -1 }, restartOnLost: 1000, constraints: { x: 'y' } })),
      ['task.id', 'task.priority', 'task.demand.memoryBytes', 'task.restartOnLost', 'task.spec', 'task.constraints.x'],
    );
  });

  test('a spec holding the NUL character, which PostgreSQL cannot store, is refused at the edge', () => {
    assert.deepEqual(fields(() => queueRowOf({ id: 't', spec: { env: ['A=\u0000'] } })), ['task.spec']);
    assert.equal(queueRowOf({ id: 't', spec: { text: 'a\\u0000 written out' } }).id, 't', 'a backslash-u text is not NUL');
  });

  test('a claim defaults to 16 tasks under binpack and refuses an unknown strategy', () => {
    const free = { memoryBytes: 1, cpuMilli: 1, tasks: 1 };
    assert.deepEqual(resolveClaim({ nodeId: 'n', epoch: 1, free }), { nodeId: 'n', epoch: 1, free, limit: 16, strategy: 'binpack' });
    assert.deepEqual(fields(() => resolveClaim({ nodeId: 'n', epoch: 1, free, strategy: 'random' as 'spread', limit: 0 })), ['limit', 'strategy']);
    assert.deepEqual(fields(() => resolveClaim({ nodeId: 'n', epoch: 0, free })), ['epoch']);
  });

  test('a claimer takes candidates in order while they fit what is left, skipping one too large for it', () => {
    const c = (id: string, mem: number, cpu = 0) => ({ id, demandMemoryBytes: mem, demandCpuMilli: cpu });
    const taken = takeWithinBudget([c('a', 3), c('big', 10), c('b', 3), c('c', 3)], { memoryBytes: 7, cpuMilli: 100, tasks: 10 }, 10);
    assert.deepEqual(taken.map((t) => t.id), ['a', 'b']);
    assert.deepEqual(takeWithinBudget([c('a', 0), c('b', 0), c('c', 0)], { memoryBytes: 0, cpuMilli: 0, tasks: 2 }, 10).map((t) => t.id), ['a', 'b'], 'task slots bound it');
    assert.deepEqual(takeWithinBudget([c('a', 0), c('b', 0)], { memoryBytes: 0, cpuMilli: 0, tasks: 5 }, 1).map((t) => t.id), ['a'], 'the limit bounds it');
  });

  test('the store\'s options are defaulted and their durations read', () => {
    assert.deepEqual(resolveClusterStoreOptions({ connectionString: 'postgres://x/y' }), {
      connectionString: 'postgres://x/y',
      leaseMs: 10_000,
      callDeadlineMs: 5_000,
      placementGraceMs: 2_000,
      poolSize: 10,
    });
    assert.equal(resolveClusterStoreOptions({ connectionString: 'postgres://x/y', lease: '30s' }).leaseMs, 30_000);
    assert.deepEqual(fields(() => resolveClusterStoreOptions({ connectionString: 'postgres://x/y', lease: '10ms' }, 'cluster.')), ['cluster.lease']);
  });
});
