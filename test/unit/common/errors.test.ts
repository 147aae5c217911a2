import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import {
  BerthError,
  cancelledError,
  ERROR_CODES,
  isBerthError,
  throwIfAborted,
  ValidationError,
  type ErrorCode,
} from '../../../src/common/errors.js';

const codes = Object.keys(ERROR_CODES) as ErrorCode[];

describe('BerthError', () => {
  it('carries its code, message, cause and frozen context', () => {
    const cause = new Error('root');
    const error = new BerthError('BERTH_ENGINE_NOT_FOUND', 'no such container', { cause, context: { id: 'abc' } });
    assert.ok(error instanceof Error);
    assert.equal(error.name, 'BerthError');
    assert.equal(error.code, 'BERTH_ENGINE_NOT_FOUND');
    assert.equal(error.message, 'no such container');
    assert.equal(error.cause, cause);
    assert.deepEqual(error.context, { id: 'abc' });
    assert.ok(Object.isFrozen(error.context));
  });

  it('is retryable by default only for codes of failures that may pass', () => {
    const retryable = codes.filter((code) => new BerthError(code, 'x').retryable);
    assert.deepEqual(retryable.sort(), [
      'BERTH_AGENT_TIMEOUT',
      'BERTH_AGENT_UNAVAILABLE',
      'BERTH_CLUSTER_UNAVAILABLE',
      'BERTH_DISK_FULL',
      'BERTH_ENGINE_SERVER_ERROR',
      'BERTH_ENGINE_TIMEOUT',
      'BERTH_ENGINE_UNAVAILABLE',
      'BERTH_IMAGE_PULL_FAILED',
      'BERTH_IMAGE_PULL_STALLED',
      'BERTH_NODE_UNREACHABLE',
      'BERTH_STORE_UNAVAILABLE',
    ]);
  });

  it('lets the thrower override retryability', () => {
    assert.equal(new BerthError('BERTH_ENGINE_UNAVAILABLE', 'x', { retryable: false }).retryable, false);
    assert.equal(new BerthError('BERTH_ENGINE_CONFLICT', 'x', { retryable: true }).retryable, true);
  });

  it('has no cause property when none was given', () => {
    assert.equal(Object.hasOwn(new BerthError('BERTH_INTERNAL', 'x'), 'cause'), false);
  });

  it('serializes to JSON with code, message, retryable and context but not the cause', () => {
    const error = new BerthError('BERTH_ENGINE_CONFLICT', 'name in use', { cause: new Error('secret detail'), context: { name: 'n' } });
    assert.deepEqual(JSON.parse(JSON.stringify(error)), { code: 'BERTH_ENGINE_CONFLICT', message: 'name in use', retryable: false, context: { name: 'n' } });
  });
});

describe('ValidationError', () => {
  it('names every field and rule in its message and keeps the issues', () => {
    const issues = [
      { field: 'resources.memory', rule: 'must be at least 6m' },
      { field: 'image', rule: 'is required' },
    ];
    const error = new ValidationError(issues);
    assert.ok(error instanceof BerthError);
    assert.equal(error.name, 'ValidationError');
    assert.equal(error.code, 'BERTH_VALIDATION');
    assert.equal(error.retryable, false);
    assert.equal(error.message, 'resources.memory: must be at least 6m; image: is required');
    assert.deepEqual(error.issues, issues);
    assert.ok(Object.isFrozen(error.issues));
    assert.deepEqual(error.context.issues, issues);
  });

  it('keeps context given beside the issues', () => {
    const error = new ValidationError([{ field: 'a', rule: 'b' }], { context: { taskId: 't1' } });
    assert.equal(error.context.taskId, 't1');
  });
});

describe('isBerthError', () => {
  it('recognizes BerthErrors, optionally of one code', () => {
    const error = new ValidationError([{ field: 'a', rule: 'b' }]);
    assert.equal(isBerthError(error), true);
    assert.equal(isBerthError(error, 'BERTH_VALIDATION'), true);
    assert.equal(isBerthError(error, 'BERTH_INTERNAL'), false);
    assert.equal(isBerthError(new Error('x')), false);
    assert.equal(isBerthError({ code: 'BERTH_VALIDATION' }), false);
  });
});

describe('cancellation helpers', () => {
  it('cancelledError is BERTH_CANCELLED, names the operation and keeps the reason', () => {
    const reason = new Error('shutting down');
    const error = cancelledError('wait container', reason);
    assert.equal(error.code, 'BERTH_CANCELLED');
    assert.match(error.message, /wait container/);
    assert.equal(error.cause, reason);
  });

  it('throwIfAborted throws BERTH_CANCELLED only for an aborted signal', () => {
    throwIfAborted(undefined, 'x');
    throwIfAborted(new AbortController().signal, 'x');
    const controller = new AbortController();
    controller.abort();
    assert.throws(() => throwIfAborted(controller.signal, 'start task'), (error: unknown) => isBerthError(error, 'BERTH_CANCELLED'));
  });
});

describe('the error code registry', () => {
  it('gives every code a non-empty description', () => {
    assert.ok(codes.length > 0);
    for (const code of codes) {
      assert.match(code, /^BERTH_[A-Z_]+$/);
      assert.ok(ERROR_CODES[code].trim().length > 0, `${code} has no description`);
    }
  });

  it('has every code documented in the "Error codes" section of README.md', async () => {
    const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8');
    const start = readme.search(/^## Error codes$/m);
    assert.ok(start >= 0, 'README.md has an "## Error codes" section');
    const rest = readme.slice(start + 1);
    const next = rest.search(/^## /m);
    const section = next === -1 ? rest : rest.slice(0, next);
    const missing = codes.filter((code) => !new RegExp(`\\b${code}\\b`).test(section));
    assert.deepEqual(missing, [], `codes missing from README.md's "Error codes" section: ${missing.join(', ')}`);
  });
});
