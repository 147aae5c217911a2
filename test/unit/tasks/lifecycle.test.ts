import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { Lifecycle, type PhaseChange, type TaskPhase } from '../../../src/tasks/lifecycle.js';

const PHASES: readonly TaskPhase[] = ['creating', 'created', 'running', 'stopping', 'exited', 'destroyed'];

/** The transitions a task may make; everything else must be refused. */
const LEGAL: Readonly<Record<TaskPhase, readonly TaskPhase[]>> = {
  creating: ['created', 'destroyed'],
  created: ['running', 'exited', 'destroyed'],
  running: ['stopping', 'exited', 'destroyed'],
  stopping: ['exited', 'destroyed'],
  exited: ['destroyed'],
  destroyed: [],
};

/** A legal path from `creating` to each phase. */
const PATH_TO: Readonly<Record<TaskPhase, readonly TaskPhase[]>> = {
  creating: [],
  created: ['created'],
  running: ['created', 'running'],
  stopping: ['created', 'running', 'stopping'],
  exited: ['created', 'running', 'exited'],
  destroyed: ['destroyed'],
};

/** A lifecycle in `phase`, with the changes it reports from then on. */
function lifecycleIn(phase: TaskPhase, taskId = 'task-1'): { lifecycle: Lifecycle; changes: PhaseChange[] } {
  const changes: PhaseChange[] = [];
  const lifecycle = new Lifecycle(taskId, (change) => changes.push(change));
  for (const step of PATH_TO[phase]) lifecycle.moveTo(step);
  assert.equal(lifecycle.phase, phase);
  changes.length = 0;
  return { lifecycle, changes };
}

describe('Lifecycle', () => {
  test('starts in creating without reporting a change', () => {
    const changes: PhaseChange[] = [];
    const lifecycle = new Lifecycle('t', (change) => changes.push(change));
    assert.equal(lifecycle.phase, 'creating');
    assert.deepEqual(changes, []);
  });

  for (const from of PHASES) {
    for (const to of LEGAL[from]) {
      test(`moves from ${from} to ${to} and reports it to onChange`, () => {
        const { lifecycle, changes } = lifecycleIn(from, 'task-7');
        lifecycle.moveTo(to);
        assert.equal(lifecycle.phase, to);
        assert.deepEqual(changes, [{ taskId: 'task-7', from, to }]);
      });
    }
  }

  for (const from of PHASES) {
    for (const to of PHASES.filter((p) => p !== from && !LEGAL[from].includes(p))) {
      test(`refuses to move from ${from} to ${to} with BERTH_TASK_STATE and stays in ${from}`, () => {
        const { lifecycle, changes } = lifecycleIn(from, 'task-9');
        assert.throws(
          () => lifecycle.moveTo(to),
          (error: unknown) => {
            assert.ok(error instanceof BerthError);
            assert.equal(error.code, 'BERTH_TASK_STATE');
            assert.match(error.message, new RegExp(`task-9 cannot go from ${from} to ${to}`));
            assert.deepEqual(error.context, { taskId: 'task-9', from, to });
            return true;
          },
        );
        assert.equal(lifecycle.phase, from);
        assert.deepEqual(changes, []);
      });
    }
  }

  for (const phase of PHASES) {
    test(`treats a move from ${phase} to ${phase} as a no-op that reports nothing`, () => {
      const { lifecycle, changes } = lifecycleIn(phase);
      lifecycle.moveTo(phase);
      assert.equal(lifecycle.phase, phase);
      assert.deepEqual(changes, []);
    });
  }

  test('reports every transition of a full life in order', () => {
    const changes: PhaseChange[] = [];
    const lifecycle = new Lifecycle('life', (change) => changes.push(change));
    for (const to of ['created', 'running', 'stopping', 'exited', 'destroyed'] as const) lifecycle.moveTo(to);
    assert.deepEqual(
      changes.map((c) => `${c.from}->${c.to}`),
      ['creating->created', 'created->running', 'running->stopping', 'stopping->exited', 'exited->destroyed'],
    );
    assert.ok(changes.every((c) => c.taskId === 'life'));
  });

  test('answers is() for the current phase only', () => {
    const { lifecycle } = lifecycleIn('running');
    assert.equal(lifecycle.is('running'), true);
    assert.equal(lifecycle.is('created', 'running'), true);
    assert.equal(lifecycle.is('created', 'exited'), false);
    assert.equal(lifecycle.is(), false);
  });

  test('keeps working after a refused transition', () => {
    const { lifecycle, changes } = lifecycleIn('created');
    assert.throws(() => lifecycle.moveTo('stopping'), BerthError);
    lifecycle.moveTo('running');
    assert.equal(lifecycle.phase, 'running');
    assert.deepEqual(changes, [{ taskId: 'task-1', from: 'created', to: 'running' }]);
  });
});
