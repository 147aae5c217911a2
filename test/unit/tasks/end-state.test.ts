import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { classifyExit, describeEndState, type EndState, type ExitFacts } from '../../../src/tasks/end-state.js';

const MiB = 1024 * 1024;

/** Facts of a plain exit; each test overrides what it is about. */
function facts(overrides: Partial<ExitFacts>): ExitFacts {
  return { exitCode: 0, oomKilled: false, cancelled: false, ...overrides };
}

describe('classifyExit', () => {
  test('classifies exit code 0 as success', () => {
    assert.deepEqual(classifyExit(facts({ exitCode: 0 })), { kind: 'success', exitCode: 0 });
  });

  for (const exitCode of [1, 3, 127, 255]) {
    test(`classifies exit code ${exitCode} as failed with that code`, () => {
      assert.deepEqual(classifyExit(facts({ exitCode })), { kind: 'failed', exitCode });
    });
  }

  test('classifies an OOM kill as oom, keeping the exit code', () => {
    const end = classifyExit(facts({ exitCode: 137, oomKilled: true, memoryLimitBytes: 32 * MiB }));
    assert.equal(end.kind, 'oom');
    assert.equal(end.kind === 'oom' && end.exitCode, 137);
  });

  test('gives an OOM hint that names the memory limit in MiB', () => {
    const end = classifyExit(facts({ exitCode: 137, oomKilled: true, memoryLimitBytes: 32 * MiB }));
    assert.ok(end.kind === 'oom');
    assert.match(end.hint, /raise its memory limit/);
    assert.match(end.hint, /\b32 MiB\b/);
  });

  test('rounds the OOM hint’s limit to whole MiB', () => {
    const end = classifyExit(facts({ exitCode: 137, oomKilled: true, memoryLimitBytes: 100 * MiB + 300 * 1024 }));
    assert.ok(end.kind === 'oom');
    assert.match(end.hint, /\b100 MiB\b/);
  });

  test('gives an OOM hint without a limit when none is known', () => {
    const end = classifyExit(facts({ exitCode: 137, oomKilled: true }));
    assert.ok(end.kind === 'oom');
    assert.match(end.hint, /raise its memory limit/);
    assert.doesNotMatch(end.hint, /MiB/);
  });

  test('classifies a task berth stopped for its time limit as timed-out with the limit and exit code', () => {
    assert.deepEqual(classifyExit(facts({ exitCode: 143, timedOutAfterMs: 30_000 })), {
      kind: 'timed-out',
      exitCode: 143,
      timeoutMs: 30_000,
    });
  });

  test('classifies a timed-out task as timed-out even when it exited 0', () => {
    assert.equal(classifyExit(facts({ exitCode: 0, timedOutAfterMs: 1000 })).kind, 'timed-out');
  });

  test('classifies a cancelled task as cancelled, keeping the exit code', () => {
    assert.deepEqual(classifyExit(facts({ exitCode: 143, cancelled: true })), { kind: 'cancelled', exitCode: 143 });
  });

  test('classifies a cancelled task as cancelled even when it exited 0', () => {
    assert.equal(classifyExit(facts({ exitCode: 0, cancelled: true })).kind, 'cancelled');
  });

  describe('precedence: cancelled > oom > timed-out > exit code', () => {
    test('cancelled wins over oom and timed-out', () => {
      const end = classifyExit(facts({ exitCode: 137, cancelled: true, oomKilled: true, timedOutAfterMs: 1000, memoryLimitBytes: 8 * MiB }));
      assert.equal(end.kind, 'cancelled');
    });

    test('cancelled wins over oom', () => {
      assert.equal(classifyExit(facts({ exitCode: 137, cancelled: true, oomKilled: true })).kind, 'cancelled');
    });

    test('cancelled wins over timed-out', () => {
      assert.equal(classifyExit(facts({ exitCode: 143, cancelled: true, timedOutAfterMs: 1000 })).kind, 'cancelled');
    });

    test('oom wins over timed-out', () => {
      assert.equal(classifyExit(facts({ exitCode: 137, oomKilled: true, timedOutAfterMs: 1000 })).kind, 'oom');
    });

    test('oom wins over the exit code, even 0', () => {
      assert.equal(classifyExit(facts({ exitCode: 0, oomKilled: true })).kind, 'oom');
    });

    test('timed-out wins over a failing exit code', () => {
      assert.equal(classifyExit(facts({ exitCode: 1, timedOutAfterMs: 5 })).kind, 'timed-out');
    });

    test('a time limit of 0 ms still counts as timed out', () => {
      assert.equal(classifyExit(facts({ exitCode: 1, timedOutAfterMs: 0 })).kind, 'timed-out');
    });
  });
});

describe('describeEndState', () => {
  test('describes success', () => {
    assert.equal(describeEndState({ kind: 'success', exitCode: 0 }), 'succeeded');
  });

  test('describes failed with its exit code', () => {
    assert.equal(describeEndState({ kind: 'failed', exitCode: 3 }), 'failed with exit code 3');
  });

  test('describes oom with its exit code and hint', () => {
    const end = classifyExit(facts({ exitCode: 137, oomKilled: true, memoryLimitBytes: 64 * MiB }));
    const text = describeEndState(end);
    assert.match(text, /^out of memory/);
    assert.match(text, /exit code 137/);
    assert.ok(end.kind === 'oom' && text.includes(end.hint));
    assert.match(text, /64 MiB/);
  });

  test('describes timed-out with its limit in human units and how the task was stopped', () => {
    assert.equal(describeEndState({ kind: 'timed-out', exitCode: 143, timeoutMs: 30_000 }), 'timed out after 30s and was stopped by its stop signal (the task exited with 143)');
    assert.equal(describeEndState({ kind: 'timed-out', exitCode: 0, timeoutMs: 1500 }), 'timed out after 1500ms and was stopped by its stop signal (the task exited with 0)');
  });

  test('a timed-out task that was killed (137) is described as killed after the grace period, not by an exit code', () => {
    const killed: EndState = { kind: 'timed-out', exitCode: 137, timeoutMs: 2000 };
    assert.equal(describeEndState(killed, { stopGraceMs: 10_000 }), 'timed out after 2s and was killed after the 10s stop grace period, for it did not stop on its stop signal');
    assert.equal(describeEndState(killed), 'timed out after 2s and was killed after its stop grace period, for it did not stop on its stop signal');
    assert.doesNotMatch(describeEndState(killed), /exit code/);
    assert.equal(describeEndState(killed, { stopGraceMs: 10_000, stopSignal: 'SIGTERM' }), describeEndState(killed, { stopGraceMs: 10_000 }));
  });

  test('a timed-out task whose stop signal is SIGKILL is described as killed by it, with no grace period', () => {
    for (const stopSignal of ['SIGKILL', 'KILL', '9']) {
      assert.equal(describeEndState({ kind: 'timed-out', exitCode: 137, timeoutMs: 2000 }, { stopGraceMs: 10_000, stopSignal }), `timed out after 2s and was killed by its stop signal (${stopSignal})`);
    }
  });

  test('describes cancelled', () => {
    assert.equal(describeEndState({ kind: 'cancelled', exitCode: 143 }), 'cancelled');
    assert.equal(describeEndState({ kind: 'cancelled' }), 'cancelled');
  });

  test('describes lost with its reason', () => {
    const end: EndState = {
      kind: 'lost',
      reason: 'the container vanished',
      error: new BerthError('BERTH_ENGINE_NOT_FOUND', 'no such container'),
    };
    assert.equal(describeEndState(end), 'lost: the container vanished');
  });

  test('gives a different description to every kind', () => {
    const ends: EndState[] = [
      { kind: 'success', exitCode: 0 },
      { kind: 'failed', exitCode: 1 },
      { kind: 'oom', exitCode: 137, hint: 'h' },
      { kind: 'timed-out', exitCode: 143, timeoutMs: 1 },
      { kind: 'cancelled' },
      { kind: 'lost', reason: 'r' },
    ];
    const descriptions = ends.map((end) => describeEndState(end));
    assert.equal(new Set(descriptions).size, ends.length);
  });
});
