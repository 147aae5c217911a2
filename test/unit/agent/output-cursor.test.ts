import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fromLogCursor, OutputCursor, resumePosition } from '../../../src/agent/output-cursor.js';
import { oneNanosecondBefore } from '../../../src/engine/log-entries.js';

type Entry = { stream: 'stdout' | 'stderr'; timestamp: string; n: number };

const T = (nanos: number): string => `2026-11-29T10:00:00.${String(nanos).padStart(9, '0')}Z`;

/** A log as the engine gives it; several entries may share a timestamp (a long line's parts). */
const LOG: Entry[] = [
  { stream: 'stdout', timestamp: T(1), n: 1 },
  { stream: 'stderr', timestamp: T(1), n: 2 },
  { stream: 'stdout', timestamp: T(2), n: 3 },
  { stream: 'stdout', timestamp: T(2), n: 4 },
  { stream: 'stdout', timestamp: T(2), n: 5 },
  { stream: 'stderr', timestamp: T(3), n: 6 },
  { stream: 'stdout', timestamp: T(4), n: 7 },
];

/** What the engine returns for a read after `since` (exclusive), as Engine.logEntries filters it. */
function readAfter(since: string | undefined): Entry[] {
  return since === undefined ? LOG : LOG.filter((e) => e.timestamp > since);
}

describe('output cursor: what of a re-read log is new', () => {
  test('a read broken after every possible entry and resumed records each entry exactly once', () => {
    for (let breakAfter = 0; breakAfter <= LOG.length; breakAfter++) {
      const cursor = new OutputCursor();
      const recorded: number[] = [];
      cursor.beginRead();
      for (const entry of readAfter(cursor.resumeAfter()).slice(0, breakAfter)) if (cursor.take(entry)) recorded.push(entry.n);
      for (let again = 0; again < 2; again++) {
        cursor.beginRead();
        for (const entry of readAfter(cursor.resumeAfter())) if (cursor.take(entry)) recorded.push(entry.n);
      }
      assert.deepEqual(recorded, [1, 2, 3, 4, 5, 6, 7], `broken after ${breakAfter} entries`);
    }
  });

  test('resumes one nanosecond before the earlier stream, so entries sharing the position timestamp are counted, not skipped', () => {
    const cursor = new OutputCursor({ stdout: { timestamp: T(2), taken: 2 }, stderr: { timestamp: T(1), taken: 1 } });
    assert.equal(cursor.resumeAfter(), oneNanosecondBefore(T(1)));
    cursor.beginRead();
    const taken = readAfter(cursor.resumeAfter()).filter((e) => cursor.take(e)).map((e) => e.n);
    assert.deepEqual(taken, [5, 6, 7]);
  });

  test('a stream without a position is read from the start', () => {
    assert.equal(new OutputCursor({ stdout: { timestamp: T(4), taken: 1 } }).resumeAfter(), undefined);
    assert.equal(new OutputCursor().resumeAfter(), undefined);
  });

  test('a cursor from the store counts every entry at its timestamp as taken', () => {
    const cursor = new OutputCursor(fromLogCursor({ stdout: T(2), stderr: T(1) }));
    cursor.beginRead();
    assert.deepEqual(readAfter(cursor.resumeAfter()).filter((e) => cursor.take(e)).map((e) => e.n), [6, 7]);
  });

  test('resumes from the files where they know as much as the store, and from the store where they know less', () => {
    const files = { stdout: { timestamp: T(2), taken: 2 } };
    const stored = fromLogCursor({ stdout: T(2), stderr: T(3) });
    assert.deepEqual(resumePosition(files, stored), { stdout: { timestamp: T(2), taken: 2 }, stderr: { timestamp: T(3), taken: Infinity } });
    assert.deepEqual(resumePosition({ stdout: { timestamp: T(4), taken: 1 } }, fromLogCursor({ stdout: T(2) })), { stdout: { timestamp: T(4), taken: 1 } });
  });
});

describe('one nanosecond before an engine timestamp', () => {
  test('borrows from the seconds and keeps nine digits', () => {
    assert.equal(oneNanosecondBefore('2026-11-29T10:00:00.5Z'), '2026-11-29T10:00:00.499999999Z');
    assert.equal(oneNanosecondBefore('2026-11-29T10:00:00Z'), '2026-11-29T09:59:59.999999999Z');
    assert.equal(oneNanosecondBefore('2026-01-01T00:00:00.000000000Z'), '2025-12-31T23:59:59.999999999Z');
  });
});
