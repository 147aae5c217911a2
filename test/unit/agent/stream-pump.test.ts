import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { LineSplitter, MAX_RECORD_BYTES, pumpStreams, timestampOfNs } from '../../../src/agent/stream-pump.js';
import { TaskLogStore, type LogRecord } from '../../../src/agent/task-logs.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { Store } from '../../../src/state/store.js';

const noStore = { tasks: {} } as unknown as Pick<Store, 'tasks'>;

async function records(store: TaskLogStore, taskId: string, since?: string): Promise<LogRecord[]> {
  const out: LogRecord[] = [];
  for await (const r of store.read(taskId, since === undefined ? {} : { since })) out.push(r);
  return out;
}

describe('LineSplitter', () => {
  test('splits at newlines, keeps each newline, and holds a partial line until the next chunk or the end', () => {
    const splitter = new LineSplitter();
    assert.deepEqual(splitter.push(Buffer.from('a\nb')).map(String), ['a\n']);
    assert.deepEqual(splitter.push(Buffer.from('c\n\nd')).map(String), ['bc\n', '\n']);
    assert.equal(String(splitter.end()), 'd');
    assert.equal(splitter.end(), undefined);
  });

  test('cuts a line longer than the engine\'s record size into records of that size', () => {
    const splitter = new LineSplitter();
    const parts = splitter.push(Buffer.alloc(MAX_RECORD_BYTES * 2 + 5, 'x'));
    assert.deepEqual(parts.map((p) => p.length), [MAX_RECORD_BYTES, MAX_RECORD_BYTES]);
    assert.equal(splitter.end()?.length, 5);
  });
});

describe('timestampOfNs', () => {
  test('writes RFC 3339 in UTC with nine fractional digits, as the engine does', () => {
    assert.equal(timestampOfNs(1_764_000_000_123_456_789n), '2025-11-24T16:00:00.123456789Z');
    assert.equal(timestampOfNs(1_764_000_000_000_000_001n), '2025-11-24T16:00:00.000000001Z');
  });
});

describe('pumpStreams', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'berth-stream-pump-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('writes both streams line by line, tagged and with strictly increasing timestamps, so since resumes exactly', async () => {
    const logs = new TaskLogStore(dir, { maxFileBytes: 1 << 20, maxFiles: 2 });
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    // A frozen clock: every record still gets a timestamp of its own.
    const pumped = pumpStreams({ logs, store: noStore, logger: silentLogger, nowNs: () => 1_764_000_000_000_000_000n }, { taskId: 't1', stdout, stderr, ended: new Promise(() => undefined), signal: new AbortController().signal });
    stdout.write('one\ntw');
    stderr.write('err\n');
    stdout.end('o\nlast');
    stderr.end();
    assert.equal(await pumped, 'complete');
    const got = await records(logs, 't1');
    assert.deepEqual(got.map((r) => [r.stream, r.text]).sort(), [['stderr', 'err\n'], ['stdout', 'last'], ['stdout', 'one\n'], ['stdout', 'two\n']]);
    const stamps = got.map((r) => r.timestamp);
    assert.deepEqual([...stamps].sort(), stamps, 'written in timestamp order');
    assert.equal(new Set(stamps).size, stamps.length, 'no two records share a timestamp');
    assert.deepEqual((await records(logs, 't1', stamps[1])).map((r) => r.text), got.slice(2).map((r) => r.text));
  });

  test('gives up streams that stay open after the task ended, and stops at shutdown', async () => {
    const logs = new TaskLogStore(dir, { maxFileBytes: 1 << 20, maxFiles: 2 });
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    stdout.write('before end\n');
    const outcome = await pumpStreams({ logs, store: noStore, logger: silentLogger }, { taskId: 't2', stdout, stderr, ended: Promise.resolve(), signal: new AbortController().signal, quietAfterEndMs: 50 });
    assert.equal(outcome, 'complete');
    assert.ok(stdout.destroyed, 'a stream given up is destroyed');
    assert.deepEqual((await records(logs, 't2')).map((r) => r.text), ['before end\n']);

    const shutdown = new AbortController();
    const open = pumpStreams({ logs, store: noStore, logger: silentLogger }, { taskId: 't3', stdout: new PassThrough(), stderr: new PassThrough(), ended: new Promise(() => undefined), signal: shutdown.signal });
    shutdown.abort();
    assert.equal(await open, 'stopped');
  });
});
