import type { Readable } from 'node:stream';
import { BerthError } from '../common/errors.js';
import { FRAME_HEADER_BYTES, readFrameHeader } from './demux.js';

/** One message of a container's log, with the engine's own timestamp. */
export interface LogEntry {
  stream: 'stdout' | 'stderr';
  /** RFC 3339 with nanoseconds, as the engine writes it: compare with `compareLogTimestamps`. */
  timestamp: string;
  data: Buffer;
}

/** The engine's timestamp prefix (RFC 3339 in UTC, up to nine fractional digits). */
const LOG_TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;

/** Whether a string is an engine log timestamp: RFC 3339 in UTC with up to nine fractional digits. */
export function isLogTimestamp(value: string): boolean {
  return LOG_TIMESTAMP.test(value);
}

/**
 * Parses the engine's multiplexed log stream with `timestamps=1`: every frame is one log message
 * prefixed by its timestamp and a space. Pulls frames as the consumer asks, so backpressure holds.
 *
 * The engine reports a failure of its own log reader inside the stream, as a frame without a
 * timestamp ("Error grabbing logs: error unmarshalling log entry …", seen when the `local` driver
 * rotates under a slow follower). That is not output: it fails the read with a retryable
 * BERTH_ENGINE_SERVER_ERROR, so that a caller resumes from the last entry it took.
 */
export async function* parseLogFrames(source: Readable): AsyncGenerator<LogEntry> {
  let buffered: Buffer = Buffer.alloc(0);
  for await (const chunk of source) {
    buffered = buffered.length === 0 ? (chunk as Buffer) : Buffer.concat([buffered, chunk as Buffer]);
    let offset = 0;
    for (let header = readFrameHeader(buffered, offset); header; header = readFrameHeader(buffered, offset)) {
      if (buffered.length - offset - FRAME_HEADER_BYTES < header.payloadBytes) break;
      const payload = buffered.subarray(offset + FRAME_HEADER_BYTES, offset + FRAME_HEADER_BYTES + header.payloadBytes);
      offset += FRAME_HEADER_BYTES + header.payloadBytes;
      const space = payload.indexOf(0x20);
      const timestamp = space <= 0 ? '' : payload.subarray(0, space).toString('latin1');
      if (!isLogTimestamp(timestamp)) {
        const said = payload.toString('utf8').trim().slice(0, 500);
        throw new BerthError('BERTH_ENGINE_SERVER_ERROR', `the engine failed to read the container's log: ${said}`, { context: { operation: 'container logs' } });
      }
      yield {
        stream: header.stream,
        timestamp,
        data: Buffer.from(payload.subarray(space + 1)),
      };
    }
    buffered = offset === buffered.length ? Buffer.alloc(0) : buffered.subarray(offset);
  }
}

/** Orders two engine timestamps (RFC 3339, UTC, up to nanoseconds) without losing precision. */
export function compareLogTimestamps(a: string, b: string): number {
  const [aSeconds = '', aFraction = ''] = a.replace(/Z$/, '').split('.');
  const [bSeconds = '', bFraction = ''] = b.replace(/Z$/, '').split('.');
  if (aSeconds !== bSeconds) return aSeconds < bSeconds ? -1 : 1;
  const aNanos = aFraction.padEnd(9, '0');
  const bNanos = bFraction.padEnd(9, '0');
  return aNanos === bNanos ? 0 : aNanos < bNanos ? -1 : 1;
}

/** The engine's `since` parameter for a timestamp: Unix seconds with a nanosecond fraction. */
export function sinceParameter(timestamp: string): string {
  const [seconds = '', fraction = ''] = timestamp.replace(/Z$/, '').split('.');
  const unixSeconds = Math.floor(Date.parse(`${seconds}Z`) / 1000);
  return `${unixSeconds}.${fraction.padEnd(9, '0')}`;
}

/**
 * The timestamp one nanosecond before `timestamp`, in the same form (nine fractional digits). The
 * engine's `since` is inclusive and `logEntries` skips what is not after it: asking from one
 * nanosecond earlier returns the entries at `timestamp` too, for a reader that must tell apart
 * several entries with one timestamp (a long line split into parts shares its timestamp).
 */
export function oneNanosecondBefore(timestamp: string): string {
  const [seconds = '', fraction = ''] = timestamp.replace(/Z$/, '').split('.');
  let unixSeconds = Math.floor(Date.parse(`${seconds}Z`) / 1000);
  let nanos = Number(fraction.padEnd(9, '0')) - 1;
  if (nanos < 0) {
    nanos += 1_000_000_000;
    unixSeconds -= 1;
  }
  const whole = new Date(unixSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, '');
  return `${whole}.${String(nanos).padStart(9, '0')}Z`;
}
