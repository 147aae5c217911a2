import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FRAME_HEADER_BYTES, readFrameHeader } from '../../../src/engine/demux.js';

function header(streamType: number, payloadBytes: number): Buffer {
  const bytes = Buffer.alloc(FRAME_HEADER_BYTES);
  bytes[0] = streamType;
  bytes.writeUInt32BE(payloadBytes, 4);
  return bytes;
}

describe('readFrameHeader', () => {
  it('reads the stream and the big-endian payload length at an offset', () => {
    const bytes = Buffer.concat([Buffer.from('xyz'), header(2, 70_000)]);
    assert.deepEqual(readFrameHeader(bytes, 3), { stream: 'stderr', payloadBytes: 70_000 });
    assert.deepEqual(readFrameHeader(header(1, 5)), { stream: 'stdout', payloadBytes: 5 });
  });

  it('counts an unknown stream as stdout, so its bytes are not lost', () => {
    assert.deepEqual(readFrameHeader(header(7, 1)), { stream: 'stdout', payloadBytes: 1 });
  });

  it('is undefined until all eight header bytes have arrived', () => {
    assert.equal(readFrameHeader(header(1, 5).subarray(0, 7)), undefined);
    assert.equal(readFrameHeader(header(1, 5), 1), undefined);
  });
});
