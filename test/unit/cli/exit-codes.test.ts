import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError, ValidationError } from '../../../src/common/errors.js';
import { commandFailureLine, EXIT, exitCodeForEnd, exitCodeForError } from '../../../src/cli/exit-codes.js';

describe('exitCodeForEnd', () => {
  test('exits 0 for success', () => {
    assert.equal(exitCodeForEnd({ kind: 'success', exitCode: 0 }), 0);
  });

  for (const exitCode of [1, 3, 42, 255]) {
    test(`exits with the task’s own code ${exitCode} when it failed`, () => {
      assert.equal(exitCodeForEnd({ kind: 'failed', exitCode }), exitCode);
    });
  }

  test('exits 137 for oom, whatever the task’s exit code', () => {
    assert.equal(exitCodeForEnd({ kind: 'oom', exitCode: 1, hint: 'h' }), 137);
    assert.equal(EXIT.outOfMemory, 137);
  });

  test('exits 124 for timed-out, whatever the task’s exit code', () => {
    assert.equal(exitCodeForEnd({ kind: 'timed-out', exitCode: 143, timeoutMs: 1000 }), 124);
    assert.equal(EXIT.timedOut, 124);
  });

  test('exits 130 for cancelled, with or without an exit code', () => {
    assert.equal(exitCodeForEnd({ kind: 'cancelled', exitCode: 143 }), 130);
    assert.equal(exitCodeForEnd({ kind: 'cancelled' }), 130);
    assert.equal(EXIT.interrupted, 130);
  });

  test('exits 125 for lost', () => {
    assert.equal(exitCodeForEnd({ kind: 'lost', reason: 'engine gone' }), 125);
    assert.equal(EXIT.berthFailure, 125);
  });
});

describe('exitCodeForError', () => {
  test('exits 2 for a validation error', () => {
    assert.equal(exitCodeForError(new ValidationError([{ field: '--cpus', rule: 'must be positive' }])), 2);
    assert.equal(EXIT.usage, 2);
  });

  test('exits 2 for a BerthError with the validation code', () => {
    assert.equal(exitCodeForError(new BerthError('BERTH_VALIDATION', 'bad')), 2);
  });

  for (const code of ['BERTH_ENGINE_UNAVAILABLE', 'BERTH_NAME_CONFLICT', 'BERTH_IMAGE_NOT_FOUND', 'BERTH_INTERNAL'] as const) {
    test(`exits 125 for a ${code} error`, () => {
      assert.equal(exitCodeForError(new BerthError(code, 'x')), 125);
    });
  }

  test('exits 127 or 126 for a start the engine refused because the command is not found or not executable, and its line names that code', () => {
    const notFound = { kind: 'not-found', command: 'nosuch', detail: 'exec: "nosuch": executable file not found in $PATH', exitCode: 127 } as const;
    const notExecutable = { kind: 'not-executable', command: '/etc/passwd', detail: 'exec: "/etc/passwd": permission denied', exitCode: 126 } as const;
    assert.equal(exitCodeForError(new BerthError('BERTH_ENGINE_BAD_REQUEST', 'start container: …', { context: { commandFailure: notFound } })), 127);
    assert.equal(exitCodeForError(new BerthError('BERTH_ENGINE_BAD_REQUEST', 'start container: …', { context: { commandFailure: notExecutable } })), 126);
    assert.equal(commandFailureLine(notFound), 'berth: command not found in the container: exec: "nosuch": executable file not found in $PATH; exiting 127');
    assert.equal(commandFailureLine(notExecutable), 'berth: command not executable in the container: exec: "/etc/passwd": permission denied; exiting 126');
  });

  test('exits 125 for an error that is not berth’s', () => {
    assert.equal(exitCodeForError(new Error('boom')), 125);
    assert.equal(exitCodeForError(new TypeError('x')), 125);
  });

  test('exits 125 for a thrown non-error', () => {
    assert.equal(exitCodeForError('a string'), 125);
    assert.equal(exitCodeForError(undefined), 125);
    assert.equal(exitCodeForError({ code: 'BERTH_VALIDATION' }), 125);
  });
});
