import type { Readable } from 'node:stream';

/** One message of a container's log, with the engine's own timestamp. */
export interface LogEntry {
  stream: 'stdout' | 'stderr';
  /** RFC 3339 with nanoseconds, as the engine writes it: compare with `compareLogTimestamps`. */
  timestamp: string;
  data: Buffer;
}

const HEADER_BYTES = 8;

/**
 * Parses the engine's multiplexed log stream with `timestamps=1`: every frame is one log message
 * prefixed by its timestamp and a space. Pulls frames as the consumer asks, so backpressure holds.
 */
export async function* parseLogFrames(source: Readable): AsyncGenerator<LogEntry> {
  let buffered: Buffer = Buffer.alloc(0);
  for await (const chunk of source) {
    buffered = buffered.length === 0 ? (chunk as Buffer) : Buffer.concat([buffered, chunk as Buffer]);
    let offset = 0;
    while (buffered.length - offset >= HEADER_BYTES) {
      const length = buffered.readUInt32BE(offset + 4);
      if (buffered.length - offset - HEADER_BYTES < length) break;
      const streamType = buffered[offset];
      const payload = buffered.subarray(offset + HEADER_BYTES, offset + HEADER_BYTES + length);
      offset += HEADER_BYTES + length;
      const space = payload.indexOf(0x20);
      if (space <= 0) continue;
      yield {
        stream: streamType === 2 ? 'stderr' : 'stdout',
        timestamp: payload.subarray(0, space).toString('latin1'),
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
