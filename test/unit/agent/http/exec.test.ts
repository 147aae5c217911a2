import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ValidationError } from '../../../../src/common/errors.js';
import { CappedOutput, parseExecQuery, plainExecOptions, PLAIN_EXEC_DEFAULT_TIMEOUT_MS } from '../../../../src/agent/http/exec.js';
import { execQuery } from '../../../../src/agent/exec-client.js';

/** The fields a ValidationError names, in order. */
function fieldsOf(run: () => unknown): string[] {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    return error.issues.map((issue) => issue.field);
  }
  assert.fail('expected a ValidationError');
}

describe('the WebSocket exec query', () => {
  test('takes cmd repeated or as one JSON array, flags, env, workdir, user and the first TTY size', () => {
    assert.deepEqual(parseExecQuery({ cmd: ['ls', '-l'] }), { options: { cmd: ['ls', '-l'], tty: false, stdin: false, env: [] } });
    assert.deepEqual(parseExecQuery({ cmd: '["sh","-c","echo [x]"]', tty: 'true', stdin: '1', env: ['A=1', 'B='], workdir: '/tmp', user: '1000:1000', rows: '24', cols: '80' }), {
      options: { cmd: ['sh', '-c', 'echo [x]'], tty: true, stdin: true, env: ['A=1', 'B='], workdir: '/tmp', user: '1000:1000' },
      size: { rows: 24, columns: 80 },
    });
    // One word that is not a JSON array is the command itself.
    assert.deepEqual(parseExecQuery({ cmd: 'true' }).options.cmd, ['true']);
  });

  test('names every field at fault at once', () => {
    assert.deepEqual(fieldsOf(() => parseExecQuery({ tty: 'maybe', env: 'NOEQUALS', workdir: 'relative', user: ' ', rows: '0', cols: '70000', extra: 'x' })), [
      'extra',
      'cmd',
      'tty',
      'env',
      'workdir',
      'user',
      'rows',
      'cols',
      'rows',
    ]);
    assert.deepEqual(fieldsOf(() => parseExecQuery({ cmd: '["ls", 5]' })), ['cmd']);
    assert.deepEqual(fieldsOf(() => parseExecQuery({ cmd: [''] })), ['cmd']);
    assert.deepEqual(fieldsOf(() => parseExecQuery({ cmd: 'sh', tty: 'true', rows: '24' })), ['cols']);
    assert.deepEqual(fieldsOf(() => parseExecQuery({ cmd: 'sh', tty: ['true', 'false'] })), ['tty']);
  });

  test('the client\'s query reads back as the options it was made from', () => {
    const options = { cmd: ['sh', '-c', 'echo "a&b" $HOME'], tty: true, stdin: true, env: ['X=1=2'], workdir: '/w', user: 'nobody', size: { rows: 30, columns: 100 } };
    const query = Object.fromEntries([...new URLSearchParams(execQuery(options)).keys()].map((key) => {
      const all = new URLSearchParams(execQuery(options)).getAll(key);
      return [key, all.length > 1 || key === 'cmd' || key === 'env' ? all : all[0]];
    }));
    assert.deepEqual(parseExecQuery(query), {
      options: { cmd: options.cmd, tty: true, stdin: true, env: ['X=1=2'], workdir: '/w', user: 'nobody' },
      size: { rows: 30, columns: 100 },
    });
    // A command of one word that starts with [ goes as a JSON array, and reads back as itself.
    assert.deepEqual(parseExecQuery({ cmd: new URLSearchParams(execQuery({ cmd: ['[x'] })).get('cmd')! }).options.cmd, ['[x']);
  });
});

describe('the plain exec body', () => {
  test('defaults the timeout, opens stdin only when given, and names what is wrong', () => {
    assert.deepEqual(plainExecOptions({ cmd: ['true'] }), { options: { cmd: ['true'], tty: false, stdin: false, env: [] }, timeoutMs: PLAIN_EXEC_DEFAULT_TIMEOUT_MS });
    assert.deepEqual(plainExecOptions({ cmd: ['cat'], stdin: '', timeout: '1m30s', workdir: '/' }), { options: { cmd: ['cat'], tty: false, stdin: true, env: [], workdir: '/' }, timeoutMs: 90_000, stdin: '' });
    assert.deepEqual(fieldsOf(() => plainExecOptions({ cmd: [], env: ['X'], workdir: 'x', timeout: '0s' })), ['cmd', 'env', 'workdir', 'timeout']);
    assert.deepEqual(fieldsOf(() => plainExecOptions({ cmd: ['true'], timeout: '25h' })), ['timeout']);
  });
});

describe('capped output', () => {
  test('keeps the first bytes up to the limit and says when it cut', () => {
    const output = new CappedOutput(5);
    output.add(Buffer.from('abc'));
    assert.equal(output.isTruncated, false);
    output.add(Buffer.from('def'));
    output.add(Buffer.from('ghi'));
    assert.deepEqual([output.text(), output.isTruncated], ['abcde', true]);
    const exact = new CappedOutput(3);
    exact.add(Buffer.from('abc'));
    assert.deepEqual([exact.text(), exact.isTruncated], ['abc', false]);
  });
});
