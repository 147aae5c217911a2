import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { enterRawMode, followTerminalSize, startTerminalSession, terminalSize, type TerminalSize } from '../../../src/cli/terminal.js';

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

  test('the first size is sent again when the engine refuses it (an exec still starting)', async () => {
    const stdout = fakeTerminalOutput({ rows: 24, columns: 80 });
    const errors: unknown[] = [];
    const sent: TerminalSize[] = [];
    let calls = 0;
    let settle: () => void = () => undefined;
    const settled = new Promise<void>((resolve) => (settle = resolve));
    const stop = followTerminalSize(
      stdout,
      async (size) => {
        calls++;
        if (calls <= 2) throw new Error('exec not running yet');
        sent.push(size);
        settle();
      },
      (error) => errors.push(error),
    );
    await settled;
    stop();
    assert.deepEqual(sent, [{ rows: 24, columns: 80 }]);
    assert.deepEqual(errors, []);
  });

  test('a failed resize after the first is reported and following goes on', async () => {
    const stdout = fakeTerminalOutput({ rows: 24, columns: 80 });
    const errors: unknown[] = [];
    const sent: TerminalSize[] = [];
    const stop = followTerminalSize(
      stdout,
      async (size) => {
        if (size.rows === 30) throw new Error('the task has just ended');
        sent.push(size);
      },
      (error) => errors.push(error),
    );
    stdout.resizeTo({ rows: 30, columns: 90 });
    stdout.resizeTo({ rows: 40, columns: 100 });
    await new Promise((resolve) => setImmediate(resolve));
    stop();
    assert.deepEqual(sent, [{ rows: 24, columns: 80 }, { rows: 40, columns: 100 }]);
    assert.equal(errors.length, 1);
  });

  test('sends nothing for a stdout that is not a terminal', () => {
    const sent: TerminalSize[] = [];
    followTerminalSize(new PassThrough(), async (size) => void sent.push(size))();
    assert.deepEqual(sent, []);
    assert.equal(terminalSize(new PassThrough()), undefined);
  });
});

describe('startTerminalSession', () => {
  test('-i and -t on a terminal: raw mode, the size sent, stdin forwarded; the teardown undoes all of it, once', async () => {
    const stdin = fakeTerminalInput();
    const stdout = fakeTerminalOutput({ rows: 24, columns: 80 });
    const target = new PassThrough();
    const sent: TerminalSize[] = [];
    const end = startTerminalSession({ stdin, stdout, interactive: true, tty: true, resize: async (size) => void sent.push(size), forwardTo: target });
    assert.equal(stdin.isRaw, true);
    stdin.write('ls\r');
    assert.equal(String(await new Promise((resolve) => target.once('data', resolve))), 'ls\r');
    end();
    end();
    assert.deepEqual(stdin.modes, [true, false]);
    stdout.resizeTo({ rows: 30, columns: 100 });
    assert.deepEqual(sent, [{ rows: 24, columns: 80 }]);
    stdin.write('after');
    assert.equal(target.read(), null, 'nothing is forwarded after the teardown');
  });

  test('-t without -i: the size is followed, the terminal is not made raw (Ctrl-C stays a signal for berth)', () => {
    const stdin = fakeTerminalInput();
    const stdout = fakeTerminalOutput({ rows: 24, columns: 80 });
    const sent: TerminalSize[] = [];
    const end = startTerminalSession({ stdin, stdout, interactive: false, tty: true, resize: async (size) => void sent.push(size) });
    assert.deepEqual(stdin.modes, []);
    end();
    assert.deepEqual(sent, [{ rows: 24, columns: 80 }]);
  });

  test('-i without -t: stdin is forwarded, the terminal is not made raw and no size is sent', () => {
    const stdin = fakeTerminalInput();
    const stdout = fakeTerminalOutput({ rows: 24, columns: 80 });
    const sent: TerminalSize[] = [];
    const end = startTerminalSession({ stdin, stdout, interactive: true, tty: false, resize: async (size) => void sent.push(size), forwardTo: new PassThrough() });
    end();
    assert.deepEqual(stdin.modes, []);
    assert.deepEqual(sent, []);
  });

  test('with stdin forwarded by someone else (a task handle), the teardown stops that forwarding too', () => {
    const stdin = fakeTerminalInput();
    const elsewhere = new PassThrough();
    stdin.pipe(elsewhere);
    const end = startTerminalSession({ stdin, stdout: fakeTerminalOutput({ rows: 1, columns: 1 }), interactive: true, tty: true });
    end();
    stdin.write('late');
    assert.equal(elsewhere.read(), null);
    assert.deepEqual(stdin.modes, [true, false]);
  });
});
