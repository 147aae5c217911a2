import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { execOptionsFromFlags, type ExecFlags } from '../../../src/cli/exec.js';

const flags = (overrides: Partial<ExecFlags> = {}): ExecFlags => ({ env: [], ...overrides });

function assertIssues(fn: () => unknown, fields: string[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${String(error)}`);
    assert.deepEqual(error.issues.map((i) => i.field), fields);
    for (const field of fields) assert.ok(error.message.includes(field));
    return true;
  });
}

describe('execOptionsFromFlags', () => {
  test('defaults to no TTY, no stdin, no environment', () => {
    assert.deepEqual(execOptionsFromFlags(['ls', '-l'], flags(), {}), { cmd: ['ls', '-l'], tty: false, stdin: false, env: [] });
  });

  test('carries -i, -t, -w and -u through', () => {
    assert.deepEqual(execOptionsFromFlags(['sh'], flags({ interactive: true, tty: true, workdir: '/tmp', user: '65534:65534' }), {}), {
      cmd: ['sh'],
      tty: true,
      stdin: true,
      env: [],
      workdir: '/tmp',
      user: '65534:65534',
    });
  });

  test('-e KEY=VALUE sets a variable; a value may contain "=" and be empty', () => {
    const options = execOptionsFromFlags(['env'], flags({ env: ['A=1', 'B=x=y', 'C='] }), {});
    assert.deepEqual(options.env, ['A=1', 'B=x=y', 'C=']);
  });

  test('-e KEY passes berth\'s own value, and nothing when berth has none', () => {
    const options = execOptionsFromFlags(['env'], flags({ env: ['HOME', 'UNSET'] }), { HOME: '/root' });
    assert.deepEqual(options.env, ['HOME=/root']);
  });

  test('a repeated -e KEY keeps the last value', () => {
    assert.deepEqual(execOptionsFromFlags(['env'], flags({ env: ['A=1', 'A=2'] }), {}).env, ['A=2']);
  });

  test('refuses -e without a variable name, naming the flag', () => {
    assertIssues(() => execOptionsFromFlags(['env'], flags({ env: ['=x'] }), {}), ['--env']);
    assertIssues(() => execOptionsFromFlags(['env'], flags({ env: [''] }), {}), ['--env']);
  });

  test('refuses a relative --workdir', () => {
    assertIssues(() => execOptionsFromFlags(['pwd'], flags({ workdir: 'tmp' }), {}), ['--workdir']);
  });

  test('refuses an empty --user', () => {
    assertIssues(() => execOptionsFromFlags(['id'], flags({ user: ' ' }), {}), ['--user']);
  });

  test('reports every bad flag at once', () => {
    assertIssues(() => execOptionsFromFlags([''], flags({ env: ['=1'], workdir: 'x', user: '' }), {}), ['command', '--env', '--workdir', '--user']);
  });
});
