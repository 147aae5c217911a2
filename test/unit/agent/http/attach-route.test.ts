import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isBerthError } from '../../../../src/common/errors.js';
import { requireAttachable } from '../../../../src/agent/http/attach-route.js';
import type { TaskRecord } from '../../../../src/state/tasks.js';

function record(overrides: Partial<TaskRecord>): TaskRecord {
  return { id: 't1', seq: 1, spec: { image: 'busybox' }, state: 'running', containerId: 'c1', logCursor: {}, pausedForMs: 0, submittedAtMs: 0, updatedAtMs: 0, ...overrides };
}

/** The BERTH_TASK_STATE message requireAttachable refuses `overrides` with. */
function refusal(overrides: Partial<TaskRecord>): string {
  try {
    requireAttachable(record(overrides));
  } catch (error) {
    assert.ok(isBerthError(error, 'BERTH_TASK_STATE'), String(error));
    return error.message;
  }
  return assert.fail('not refused');
}

describe('attach refusals before the upgrade', () => {
  test('a running task (also one being stopped, whose process still prints) can be attached to', () => {
    assert.doesNotThrow(() => requireAttachable(record({})));
    assert.doesNotThrow(() => requireAttachable(record({ state: 'stopping' })));
  });

  test('an ended task is refused with a pointer to its logs', () => {
    assert.match(refusal({ state: 'exited', endState: { kind: 'failed', exitCode: 3 } }), /has ended \(exited, failed\); read what it printed with `berth logs t1`/);
    assert.match(refusal({ state: 'lost' }), /has ended/);
  });

  test('a task with no process yet, and a paused one, are refused saying why', () => {
    assert.match(refusal({ state: 'pending', containerId: undefined }), /is pending and has no process to attach to yet/);
    assert.match(refusal({ state: 'starting', containerId: undefined }), /is starting/);
    assert.match(refusal({ pausedAtMs: 5 }), /is paused; unpause it first/);
  });
});
