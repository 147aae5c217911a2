import assert from 'node:assert/strict';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, test } from 'node:test';
import { describeGroupEnd, readGroupFile } from '../../../src/cli/group.js';
import { exitCodeForGroupEnd } from '../../../src/cli/exit-codes.js';
import { formatPublishedPort } from '../../../src/cli/output.js';
import { linePrefixes, PrefixedLines } from '../../../src/cli/prefixed-output.js';
import { ValidationError } from '../../../src/common/errors.js';

/** A sink that records each write separately, so a test sees which lines went out together. */
function recorder(): { stream: Writable; writes: string[] } {
  const writes: string[] = [];
  return { writes, stream: new Writable({ write: (chunk: Buffer, _e, callback) => (writes.push(chunk.toString()), callback()) }) };
}

describe('the prefixed output of berth group run', () => {
  test('pads every task\'s name to the longest, as compose does', () => {
    assert.deepEqual([...linePrefixes(['web', 'database', 'x'], false)], [
      ['web', 'web      | '],
      ['database', 'database | '],
      ['x', 'x        | '],
    ]);
  });

  test('colours the prefixes only when asked (on a terminal), each task its own colour', () => {
    const prefixes = linePrefixes(['a', 'b'], true);
    assert.equal(prefixes.get('a'), '\u001b[36ma | \u001b[0m');
    assert.equal(prefixes.get('b'), '\u001b[33mb | \u001b[0m');
  });

  test('prefixes every line, holds a line split across chunks until its end, and ends a last line without a newline', async () => {
    const { stream, writes } = recorder();
    await pipeline(Readable.from([Buffer.from('one\ntw'), Buffer.from('o\n'), Buffer.from('\nthree')]), new PrefixedLines(stream, 'web | '));
    assert.deepEqual(writes, ['web | one\n', 'web | two\n', 'web | \n', 'web | three\n']);
  });

  test('writes nothing for no output, and does not end the stream it writes to', async () => {
    const { stream, writes } = recorder();
    await pipeline(Readable.from([]), new PrefixedLines(stream, 'web | '));
    assert.deepEqual(writes, []);
    assert.equal(stream.writableEnded, false);
  });

  test('waits for a full target to drain before taking more', async () => {
    const target = new PassThrough({ highWaterMark: 4 });
    const lines = new PrefixedLines(target, '> ');
    let taken = false;
    lines.write('a long line that fills the target\n');
    lines.write('next\n', () => (taken = true));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(taken, false, 'the second write waits while the target is full');
    let read = '';
    target.on('data', (chunk: Buffer) => (read += chunk.toString()));
    await new Promise((resolve) => lines.end(resolve));
    assert.equal(taken, true);
    assert.equal(read, '> a long line that fills the target\n> next\n');
  });
});

describe('berth group run: the file and the exit code', () => {
  test('reads YAML, and JSON (a part of YAML), from stdin with -', async () => {
    assert.deepEqual(await readGroupFile('-', Readable.from(['name: g\ntasks:\n  - name: a\n    image: busybox\n'])), { name: 'g', tasks: [{ name: 'a', image: 'busybox' }] });
    assert.deepEqual(await readGroupFile('-', Readable.from(['{"name":"g","tasks":[]}'])), { name: 'g', tasks: [] });
  });

  test('a missing or unreadable file is a usage error naming -f', async () => {
    await assert.rejects(readGroupFile('/no/such/group.yaml', Readable.from([])), (error: unknown) => error instanceof ValidationError && error.issues[0]?.field === '-f/--file');
    await assert.rejects(readGroupFile('-', Readable.from(['name: [unclosed'])), (error: unknown) => error instanceof ValidationError && /not YAML or JSON/.test(error.issues[0]?.rule ?? ''));
  });

  test('exits with the deciding task\'s code, 125 when the group failed without one, and docker\'s codes for the other ends', () => {
    assert.equal(exitCodeForGroupEnd({ kind: 'success', exitCode: 0 }), 0);
    assert.equal(exitCodeForGroupEnd({ kind: 'failed', exitCode: 4, task: 'main' }), 4);
    assert.equal(exitCodeForGroupEnd({ kind: 'failed', reason: 'no exit code' }), 125);
    assert.equal(exitCodeForGroupEnd({ kind: 'oom', exitCode: 137 }), 137);
    assert.equal(exitCodeForGroupEnd({ kind: 'timed-out', exitCode: 143 }), 124);
    assert.equal(exitCodeForGroupEnd({ kind: 'cancelled' }), 130);
    assert.equal(exitCodeForGroupEnd({ kind: 'lost', reason: 'gone' }), 125);
  });

  test('describes an end and a published port as a person reads them', () => {
    assert.equal(describeGroupEnd({ kind: 'failed', exitCode: 3, reason: 'prestart task setup ended failed with exit code 3', task: 'setup' }), 'failed: prestart task setup ended failed with exit code 3');
    assert.equal(describeGroupEnd({ kind: 'oom', exitCode: 137, task: 'web' }), 'ended oom with exit code 137 (task web)');
    assert.equal(formatPublishedPort({ container: 8080, protocol: 'tcp', hostIp: '127.0.0.1', host: 32768 }), '127.0.0.1:32768->8080/tcp');
    assert.equal(formatPublishedPort({ container: 53, protocol: 'udp', hostIp: '::1', host: 5353 }), '[::1]:5353->53/udp');
  });
});
