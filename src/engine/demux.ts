import { PassThrough, type Readable } from 'node:stream';

/** Bytes of the header before every frame of the engine's multiplexed attach and log streams. */
export const FRAME_HEADER_BYTES = 8;
const STDOUT = 1;
const STDERR = 2;

/** What a frame header says: whose payload follows, and how many bytes of it. */
export interface FrameHeader {
  stream: 'stdout' | 'stderr';
  payloadBytes: number;
}

/**
 * Reads the frame header at `offset`: byte 0 is the stream (1 stdout, 2 stderr), bytes 4 to 7 the
 * payload length, big-endian. Undefined while fewer than 8 bytes have arrived. stdin frames (0) never
 * come back; anything unknown counts as stdout rather than being lost. The one reader of the header,
 * for the demultiplexer and the log entry parser alike.
 */
export function readFrameHeader(buffer: Buffer, offset = 0): FrameHeader | undefined {
  if (buffer.length - offset < FRAME_HEADER_BYTES) return undefined;
  return { stream: buffer[offset] === STDERR ? 'stderr' : 'stdout', payloadBytes: buffer.readUInt32BE(offset + 4) };
}

export interface DemuxedStreams {
  stdout: Readable;
  stderr: Readable;
}

/**
 * Splits the engine's multiplexed attach/logs stream (8-byte frame headers) into stdout and stderr.
 * Unlike docker-modem's demuxStream it honours backpressure: when a consumer stops reading, the
 * engine's socket is paused, so a task writing gigabytes holds a bounded amount of memory.
 */
export function demultiplex(source: Readable, highWaterMark = 256 * 1024): DemuxedStreams {
  const stdout = new PassThrough({ highWaterMark });
  const stderr = new PassThrough({ highWaterMark });
  let pending: Buffer | undefined;
  let frameStream: FrameHeader['stream'] = 'stdout';
  let frameRemaining = 0;
  let waitingForDrain = 0;

  const resumeWhenDrained = (): void => {
    waitingForDrain--;
    if (waitingForDrain === 0) source.resume();
  };

  const deliver = (stream: FrameHeader['stream'], payload: Buffer): void => {
    const target = stream === 'stderr' ? stderr : stdout;
    if (!target.write(payload)) {
      waitingForDrain++;
      source.pause();
      target.once('drain', resumeWhenDrained);
    }
  };

  source.on('data', (chunk: Buffer) => {
    let buffer = pending ? Buffer.concat([pending, chunk]) : chunk;
    pending = undefined;
    let offset = 0;
    while (offset < buffer.length) {
      if (frameRemaining > 0) {
        const take = Math.min(frameRemaining, buffer.length - offset);
        deliver(frameStream, buffer.subarray(offset, offset + take));
        frameRemaining -= take;
        offset += take;
        continue;
      }
      const header = readFrameHeader(buffer, offset);
      if (!header) {
        pending = Buffer.from(buffer.subarray(offset));
        break;
      }
      frameStream = header.stream;
      frameRemaining = header.payloadBytes;
      offset += FRAME_HEADER_BYTES;
    }
    buffer = Buffer.alloc(0);
  });
  const finish = (): void => {
    stdout.end();
    stderr.end();
  };
  source.once('end', finish);
  source.once('close', finish);
  source.once('error', (error) => {
    stdout.destroy(error);
    stderr.destroy(error);
  });
  // A consumer that gives up destroys its stream; the engine socket must not stay open for it.
  const destroySource = (): void => {
    if (stdout.destroyed && stderr.destroyed) source.destroy();
  };
  stdout.once('close', destroySource);
  stderr.once('close', destroySource);
  return { stdout, stderr };
}

export { STDOUT as STDOUT_STREAM, STDERR as STDERR_STREAM };
