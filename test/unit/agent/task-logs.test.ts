import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DiskSpace } from '../../../src/agent/disk-space.js';
import { OUTPUT_CUT_TEXT, TaskLogStore, type LogRecord } from '../../../src/agent/task-logs.js';
import { isBerthError } from '../../../src/common/errors.js';

const ts = (n: number): string => `2026-11-23T09:00:00.${String(n).padStart(9, '0')}Z`;
const entry = (n: number, stream: 'stdout' | 'stderr' = 'stdout') => ({ stream, timestamp: ts(n), data: Buffer.from(`line ${n}\n`) });

async function all(iterable: AsyncIterable<LogRecord>): Promise<string[]> {
  const texts: string[] = [];
  for await (const record of iterable) texts.push(record.text.trim());
  return texts;
}

describe('task log files', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'berth-logs-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('keeps both streams with their timestamps and reads them back after since', async () => {
    const store = new TaskLogStore(dir, { maxFileBytes: 1 << 20, maxFiles: 2 });
    await store.append('t1', entry(1));
    await store.append('t1', entry(2, 'stderr'));
    await store.append('t1', entry(3));
    await store.end('t1');
    const records: LogRecord[] = [];
    for await (const r of store.read('t1')) records.push(r);
    assert.deepEqual(records.map((r) => [r.stream, r.timestamp]), [['stdout', ts(1)], ['stderr', ts(2)], ['stdout', ts(3)]]);
    assert.deepEqual(await all(store.read('t1', { since: ts(1) })), ['line 2', 'line 3']);
  });

  test('rotates files and keeps at most maxFiles per task, dropping the oldest lines', async () => {
    const store = new TaskLogStore(dir, { maxFileBytes: 200, maxFiles: 2 });
    for (let n = 1; n <= 20; n++) await store.append('t2', entry(n));
    await store.end('t2');
    const files = await readdir(path.join(dir, 't2'));
    assert.deepEqual(files.sort(), ['output.log', 'output.log.1']);
    const lines = await all(store.read('t2'));
    assert.equal(lines.at(-1), 'line 20');
    assert.ok(lines.length < 20 && lines.length >= 2, `kept ${lines.length} lines`);
    assert.deepEqual(lines, lines.slice().sort((a, b) => Number(a.split(' ')[1]) - Number(b.split(' ')[1])));
  });

  test('follow yields stored lines, then live ones, and stops when the output ends', async () => {
    const store = new TaskLogStore(dir, { maxFileBytes: 1 << 20, maxFiles: 2 });
    await store.append('t3', entry(1));
    let ended = false;
    const followed = all(store.follow('t3', { isEnded: () => ended }));
    await store.append('t3', entry(2));
    await store.append('t3', entry(3));
    ended = true;
    await store.end('t3');
    assert.deepEqual(await followed, ['line 1', 'line 2', 'line 3']);
  });

  test('follow yields every live part of a long line (parts share a timestamp) and a stream stamped earlier than the other', async () => {
    const store = new TaskLogStore(dir, { maxFileBytes: 1 << 20, maxFiles: 2 });
    const part = (data: string, n: number, stream: 'stdout' | 'stderr' = 'stdout') => ({ stream, timestamp: ts(n), data: Buffer.from(data) });
    await store.append('t5', part('a1', 10));
    let ended = false;
    const followed = all(store.follow('t5', { isEnded: () => ended }));
    await store.append('t5', part('a2', 10));
    await store.append('t5', part('a3', 10));
    await store.append('t5', part('err', 9, 'stderr'));
    await store.append('t5', part('b', 11));
    ended = true;
    await store.end('t5');
    assert.deepEqual(await followed, ['a1', 'a2', 'a3', 'err', 'b']);
  });

  test('follow of an ended task returns what is stored', async () => {
    const store = new TaskLogStore(dir, { maxFileBytes: 1 << 20, maxFiles: 2 });
    await store.append('t4', entry(5));
    await store.end('t4');
    assert.deepEqual(await all(store.follow('t4', { isEnded: () => true })), ['line 5']);
  });

  test('remove deletes the task output', async () => {
    const store = new TaskLogStore(dir, { maxFileBytes: 1 << 20, maxFiles: 2 });
    await store.append('t5', entry(1));
    await store.remove('t5');
    assert.deepEqual(await all(store.read('t5')), []);
  });
});

describe('task log files on a full disk', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'berth-logs-full-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('refuses output with BERTH_DISK_FULL once less than the kept space is free, and the cut record ends the output', async () => {
    let freeBytes = 10 * 1024 * 1024;
    const space = new DiskSpace(dir, { minFreeBytes: 1024 * 1024, checkEveryBytes: 1, freeBytes: async () => freeBytes });
    const store = new TaskLogStore(dir, { maxFileBytes: 1 << 20, maxFiles: 2 }, space);
    await store.append('full', entry(1));
    freeBytes = 1000;
    await assert.rejects(store.append('full', entry(2)), (error: unknown) => isBerthError(error, 'BERTH_DISK_FULL') && error.retryable);
    assert.equal(space.condition, 'full');
    assert.equal(await store.markCut('full'), true);
    await store.end('full');
    assert.deepEqual(await all(store.read('full')), ['line 1', OUTPUT_CUT_TEXT.trim()]);
    const { position, isCut } = await store.position('full');
    assert.equal(isCut, true);
    assert.deepEqual(position, { stdout: { timestamp: ts(1), taken: 1 } });
    freeBytes = 10 * 1024 * 1024;
    assert.equal(await space.check(), 'ok');
  });

  test('a line torn by a full disk or a crash is skipped on read and the next record starts on its own line', async () => {
    const store = new TaskLogStore(dir, { maxFileBytes: 1 << 20, maxFiles: 2 });
    await store.append('torn', entry(1));
    await store.end('torn');
    await appendFile(path.join(dir, 'torn', 'output.log'), '{"stream":"stdout","timestamp":"2026-11-2');
    const reopened = new TaskLogStore(dir, { maxFileBytes: 1 << 20, maxFiles: 2 });
    await reopened.append('torn', entry(2));
    await reopened.end('torn');
    assert.deepEqual(await all(reopened.read('torn')), ['line 1', 'line 2']);
  });

  test('counts the records that share the last timestamp, so a resumed reader takes the next part of a long line', async () => {
    const store = new TaskLogStore(dir, { maxFileBytes: 1 << 20, maxFiles: 2 });
    for (const data of ['part a', 'part b']) await store.append('parts', { stream: 'stdout', timestamp: ts(5), data: Buffer.from(data) });
    await store.flush('parts');
    assert.deepEqual((await store.position('parts')).position, { stdout: { timestamp: ts(5), taken: 2 } });
    await store.end('parts');
  });
});
