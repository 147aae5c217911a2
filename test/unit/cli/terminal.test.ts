import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { enterRawMode, followTerminalSize, terminalSize, type TerminalSize } from '../../../src/cli/terminal.js';

/** A stdin that pretends to be a terminal and records every raw-mode change. */
function fakeTerminalInput(initiallyRaw = false): PassThrough & { isTTY: boolean; isRaw: boolean; modes: boolean[]; setRawMode(mode: boolean): void } {
  const stream = new PassThrough() as PassThrough & { isTTY: boolean; isRaw: boolean; modes: boolean[]; setRawMode(mode: boolean): void };
  stream.isTTY = true;
  stream.isRaw = initiallyRaw;
  stream.modes = [];
  stream.setRawMode = (mode: boolean) => {
    stream.isRaw = mode;
    stream.modes.push(mode);
  };
  return stream;
}

/** A stdout that pretends to be a terminal of a given size; resize() changes it as SIGWINCH would. */
function fakeTerminalOutput(size: TerminalSize): PassThrough & { isTTY: boolean; columns: number; rows: number; resizeTo(next: TerminalSize): void } {
  const stream = new PassThrough() as PassThrough & { isTTY: boolean; columns: number; rows: number; resizeTo(next: TerminalSize): void };
  stream.isTTY = true;
  stream.columns = size.columns;
  stream.rows = size.rows;
  stream.resizeTo = (next) => {
    stream.columns = next.columns;
    stream.rows = next.rows;
    stream.emit('resize');
  };
  return stream;
}

describe('enterRawMode', () => {
  test('puts a terminal in raw mode and restores the mode it found, once', () => {
    const stdin = fakeTerminalInput();
    const restore = enterRawMode(stdin);
    assert.equal(stdin.isRaw, true);
    restore();
    restore();
    assert.equal(stdin.isRaw, false);
    assert.deepEqual(stdin.modes, [true, false]);
  });

  test('leaves a terminal that was raw already raw', () => {
    const stdin = fakeTerminalInput(true);
    enterRawMode(stdin)();
    assert.equal(stdin.isRaw, true);
  });

  test('restores from a finally after an error', () => {
    const stdin = fakeTerminalInput();
    assert.throws(() => {
      const restore = enterRawMode(stdin);
      try {
        throw new Error('the session failed');
      } finally {
        restore();
      }
    }, /the session failed/);
    assert.equal(stdin.isRaw, false);
  });

  test('does nothing to a stdin that is not a terminal', () => {
    const stdin = new PassThrough() as PassThrough & { setRawMode?: (mode: boolean) => void };
    let called = false;
    stdin.setRawMode = () => {
      called = true;
    };
    enterRawMode(stdin)();
    assert.equal(called, false);
  });
});

describe('followTerminalSize', () => {
  test('sends the size at once and on every resize, until stopped', async () => {
    const stdout = fakeTerminalOutput({ rows: 24, columns: 80 });
    const sent: TerminalSize[] = [];
    const stop = followTerminalSize(stdout, async (size) => void sent.push(size));
    stdout.resizeTo({ rows: 50, columns: 132 });
    stop();
    stdout.resizeTo({ rows: 10, columns: 10 });
    assert.deepEqual(sent, [
      { rows: 24, columns: 80 },
      { rows: 50, columns: 132 },
    ]);
  });

  test('a failed resize is reported and following goes on', async () => {
    const stdout = fakeTerminalOutput({ rows: 24, columns: 80 });
    const errors: unknown[] = [];
    let calls = 0;
    const stop = followTerminalSize(
      stdout,
      async () => {
        calls++;
        if (calls === 1) throw new Error('exec not running yet');
      },
      (error) => errors.push(error),
    );
    await new Promise((resolve) => setImmediate(resolve));
    stdout.resizeTo({ rows: 30, columns: 90 });
    stop();
    assert.equal(calls, 2);
    assert.equal(errors.length, 1);
  });

  test('sends nothing for a stdout that is not a terminal', () => {
    const sent: TerminalSize[] = [];
    followTerminalSize(new PassThrough(), async (size) => void sent.push(size))();
    assert.deepEqual(sent, []);
    assert.equal(terminalSize(new PassThrough()), undefined);
  });
});
