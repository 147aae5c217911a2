import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PassThrough, Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import type { Logger } from '../../../src/common/logger.js';
import type { DemuxedStreams } from '../../../src/engine/demux.js';
import type { LogsOptions } from '../../../src/engine/engine.js';
import { AttachedOutput } from '../../../src/tasks/attached-output.js';

const quiet: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

/** Attached streams cut before the task wrote anything. */
function cutAttach(): DemuxedStreams {
  const cut = (): Readable =>
    new Readable({
      read() {
        this.destroy(new Error('connection dropped'));
      },
    });
  return { stdout: cut(), stderr: cut() };
}

/** An engine whose followed log read is `follow`, and whose whole-log reads give `log` (or what `whole` returns for the n-th read). */
function engineWith(follow: (options: LogsOptions) => DemuxedStreams, log: string, whole?: (n: number) => DemuxedStreams | undefined) {
  const calls: LogsOptions[] = [];
  let wholeReads = 0;
  return {
    calls,
    engine: {
      containerLogs: async (_id: string, options: LogsOptions = {}): Promise<DemuxedStreams> => {
        calls.push(options);
        if (options.follow) return follow(options);
        return whole?.(++wholeReads) ?? { stdout: Readable.from([Buffer.from(log)]), stderr: Readable.from([]) };
      },
    },
  };
}

describe('AttachedOutput', () => {
  it('a followed log read the engine stalls after the end is given up for a whole read: the output ends, complete and once', async () => {
    const stalled: PassThrough[] = [];
    const { engine, calls } = engineWith(() => {
      const out = new PassThrough();
      const err = new PassThrough();
      stalled.push(out, err);
      out.write('line-1\n');
      return { stdout: out, stderr: err };
    }, 'line-1\nline-2\nline-3\n');
    const output = new AttachedOutput(cutAttach(), { taskId: 't', containerId: 'c', engine, logReadable: true, tty: false, logger: quiet, followDrainMs: 20 });
    const stdout = text(output.stdout);
    output.attachCut();
    await output.settle(false);
    assert.equal(await stdout, 'line-1\nline-2\nline-3\n');
    assert.deepEqual(calls.map((c) => c.follow), [true, false]);
    assert.equal(calls[0]!.signal?.aborted, true, 'the stalled read was hung up');
    assert.ok(stalled.every((s) => s.destroyed));
  });

  it('a followed read that reaches the log end is the whole output; the log is not read again', async () => {
    const { engine, calls } = engineWith(() => ({ stdout: Readable.from([Buffer.from('a\nb\n')]), stderr: Readable.from([]) }), 'unused');
    const output = new AttachedOutput(cutAttach(), { taskId: 't', containerId: 'c', engine, logReadable: true, tty: false, logger: quiet, followDrainMs: 60_000 });
    const stdout = text(output.stdout);
    output.attachCut();
    await output.settle(false);
    assert.equal(await stdout, 'a\nb\n');
    assert.deepEqual(calls.map((c) => c.follow), [true]);
  });

  it('a read of the whole log that the engine stalls after its head is hung up at its deadline and read again: the output ends, complete and once', async () => {
    const stalled: PassThrough[] = [];
    const { engine, calls } = engineWith(
      () => ({ stdout: Readable.from([]), stderr: Readable.from([]) }),
      'line-1\nline-2\n',
      (n) => {
        if (n > 1) return undefined;
        const out = new PassThrough();
        const err = new PassThrough();
        stalled.push(out, err);
        out.write('line-1\n');
        return { stdout: out, stderr: err };
      },
    );
    const output = new AttachedOutput(cutAttach(), { taskId: 't', containerId: 'c', engine, logReadable: true, tty: false, logger: quiet, wholeReadMs: 20 });
    const stdout = text(output.stdout);
    // The end was learned without the wait (the engine was away): the log decides what is missing.
    await output.settle(true);
    assert.equal(await stdout, 'line-1\nline-2\n');
    assert.deepEqual(calls.map((c) => c.follow ?? false), [false, false]);
    assert.ok(stalled.every((s) => s.destroyed), 'the stalled read was hung up');
  });
});
