import assert from 'node:assert/strict';
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { demultiplex, STDERR_STREAM, STDOUT_STREAM } from '../../../src/engine/demux.js';
import { until } from '../../support/time.js';

/** One frame of the engine's multiplexed stream: 8-byte header (stream type, 3 zero bytes, big-endian length), then the payload. */
function frame(streamType: number, payload: string | Buffer): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const header = Buffer.alloc(8);
  header[0] = streamType;
  header.writeUInt32BE(body.length, 4);
  return Buffer.concat([header, body]);
}

async function text(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

describe('demultiplex', () => {
  it('keeps stdout and stderr apart when many frames arrive in one chunk', async () => {
    const source = new PassThrough();
    const { stdout, stderr } = demultiplex(source);
    source.end(Buffer.concat([frame(STDOUT_STREAM, 'out1 '), frame(STDERR_STREAM, 'err1 '), frame(STDOUT_STREAM, 'out2'), frame(STDERR_STREAM, 'err2')]));
    assert.deepEqual(await Promise.all([text(stdout), text(stderr)]), ['out1 out2', 'err1 err2']);
  });

  it('reassembles frames whose headers and payloads are split across chunks', async () => {
    const source = new PassThrough();
    const { stdout, stderr } = demultiplex(source);
    const bytes = Buffer.concat([frame(STDOUT_STREAM, 'hello '), frame(STDERR_STREAM, 'oops'), frame(STDOUT_STREAM, 'world')]);
    const outputs = Promise.all([text(stdout), text(stderr)]);
    // One byte at a time splits every header and every payload.
    for (const byte of bytes) source.write(Buffer.from([byte]));
    source.end();
    assert.deepEqual(await outputs, ['hello world', 'oops']);
  });

  it('reassembles a header split between the end of one chunk and the start of the next', async () => {
    const source = new PassThrough();
    const { stdout, stderr } = demultiplex(source);
    const bytes = Buffer.concat([frame(STDOUT_STREAM, 'first'), frame(STDERR_STREAM, 'second')]);
    const outputs = Promise.all([text(stdout), text(stderr)]);
    const cut = frame(STDOUT_STREAM, 'first').length + 3;
    source.write(bytes.subarray(0, cut));
    source.end(bytes.subarray(cut));
    assert.deepEqual(await outputs, ['first', 'second']);
  });

  it('passes binary payloads and empty frames through unchanged', async () => {
    const source = new PassThrough();
    const { stdout, stderr } = demultiplex(source);
    const binary = Buffer.from([0, 1, 2, 255, 254, 10, 13]);
    const outputs = Promise.all([
      (async () => Buffer.concat(await stdout.toArray()))(),
      text(stderr),
    ]);
    source.end(Buffer.concat([frame(STDOUT_STREAM, Buffer.alloc(0)), frame(STDOUT_STREAM, binary), frame(STDERR_STREAM, '')]));
    const [out, err] = await outputs;
    assert.deepEqual(out, binary);
    assert.equal(err, '');
  });

  it('ends both outputs when the source ends, the one that carried no frame too', async () => {
    const source = new PassThrough();
    const { stdout, stderr } = demultiplex(source);
    const outputs = Promise.all([text(stdout), text(stderr)]);
    source.end(frame(STDOUT_STREAM, 'only stdout'));
    // A deadline, not a threshold: an output left open fails here instead of hanging the run.
    await until(() => stdout.readableEnded && stderr.readableEnded, 'both outputs to end');
    assert.deepEqual(await outputs, ['only stdout', '']);
  });

  it('pauses the source while a consumer does not read, and resumes it when the consumer reads', async () => {
    const source = new PassThrough();
    const { stdout, stderr } = demultiplex(source, 16);
    stderr.resume();
    const payload = 'x'.repeat(64);
    source.write(frame(STDOUT_STREAM, payload));
    // The frame is delivered on the next tick of the source's flow.
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.equal(source.isPaused(), true, 'the source is paused once stdout is over its high-water mark');
    // Frames written now stay in the source: nothing is read from it while paused.
    source.write(frame(STDOUT_STREAM, payload));
    source.write(frame(STDERR_STREAM, 'late'));
    assert.ok(source.readableLength > 0, 'unread frames stay buffered in the source');

    const output = text(stdout);
    const errors = new Promise<string>((resolve) => {
      let seen = '';
      stderr.on('data', (chunk: Buffer) => {
        seen += chunk.toString();
        if (seen === 'late') resolve(seen);
      });
    });
    assert.equal(await errors, 'late', 'reading stdout drains it and lets later frames through');
    source.end();
    assert.equal(await output, payload + payload);
  });

  it('destroys both outputs with the error when the source fails', async () => {
    const source = new PassThrough();
    const { stdout, stderr } = demultiplex(source);
    const failure = new Error('socket reset');
    const errors = Promise.all([once(stdout, 'error'), once(stderr, 'error')]);
    source.destroy(failure);
    const [[outError], [errError]] = await errors;
    assert.equal(outError, failure);
    assert.equal(errError, failure);
  });

  it('destroys the source when both consumers give up', async () => {
    const source = new PassThrough();
    const { stdout, stderr } = demultiplex(source);
    stdout.destroy();
    stderr.destroy();
    await once(source, 'close');
    assert.equal(source.destroyed, true);
  });
});
