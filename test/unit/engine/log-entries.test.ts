import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { isBerthError } from '../../../src/common/errors.js';
import { compareLogTimestamps, parseLogFrames, sinceParameter, type LogEntry } from '../../../src/engine/log-entries.js';

function frame(stream: 1 | 2, text: string): Buffer {
  const payload = Buffer.from(text);
  const header = Buffer.alloc(8);
  header[0] = stream;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

async function collect(chunks: Buffer[]): Promise<LogEntry[]> {
  const entries: LogEntry[] = [];
  for await (const entry of parseLogFrames(Readable.from(chunks))) entries.push(entry);
  return entries;
}

describe('log entries from the engine', () => {
  test('splits timestamped frames into entries, whatever the chunk boundaries', async () => {
    const bytes = Buffer.concat([frame(1, '2026-11-23T09:00:00.000000001Z out one\n'), frame(2, '2026-11-23T09:00:00.5Z err\n')]);
    for (const cut of [1, 5, 9, 30, bytes.length - 1]) {
      const entries = await collect([bytes.subarray(0, cut), bytes.subarray(cut)]);
      assert.deepEqual(
        entries.map((e) => [e.stream, e.timestamp, e.data.toString()]),
        [
          ['stdout', '2026-11-23T09:00:00.000000001Z', 'out one\n'],
          ['stderr', '2026-11-23T09:00:00.5Z', 'err\n'],
        ],
        `cut at ${cut}`,
      );
    }
  });

  test('an error the engine writes into the log stream (no timestamp) fails the read instead of becoming a line', async () => {
    const bytes = Buffer.concat([
      frame(1, '2026-11-23T09:00:00.000000001Z out one\n'),
      frame(1, 'Error grabbing logs: error unmarshalling log entry (size=16478): proto: LogEntry: illegal tag 0 (wire type 0)\n'),
    ]);
    const seen: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const entry of parseLogFrames(Readable.from([bytes]))) seen.push(entry.data.toString());
      })(),
      (error: unknown) => isBerthError(error, 'BERTH_ENGINE_SERVER_ERROR') && error.retryable && /Error grabbing logs/.test(error.message),
    );
    assert.deepEqual(seen, ['out one\n']);
  });

  test('orders timestamps to the nanosecond, across fraction lengths', () => {
    assert.equal(compareLogTimestamps('2026-11-23T09:00:00.000000001Z', '2026-11-23T09:00:00.000000002Z'), -1);
    assert.equal(compareLogTimestamps('2026-11-23T09:00:00.5Z', '2026-11-23T09:00:00.500000000Z'), 0);
    assert.equal(compareLogTimestamps('2026-11-23T09:00:01Z', '2026-11-23T09:00:00.999999999Z'), 1);
  });

  test('turns a timestamp into the engine since parameter without losing nanoseconds', () => {
    assert.equal(sinceParameter('2026-11-23T09:00:00.000000123Z'), `${Date.UTC(2026, 10, 23, 9) / 1000}.000000123`);
  });
});
