import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isBerthError } from '../../../src/common/errors.js';
import { cleanupBoundFromEnv, DEFAULT_CLEANUP_BOUND_MS, endedByUser, exitCodeForSignal, installInterrupts, type StopSignal } from '../../../src/cli/interrupts.js';

/** A scripted process: signals are sent by the test, exits and the bound's timer are recorded. */
function fakeProcess() {
  const listeners = new Map<StopSignal, () => void>();
  const exits: number[] = [];
  const lines: string[] = [];
  const timers: Array<{ ms: number; fire: () => void }> = [];
  return {
    exits,
    lines,
    timers,
    send: (signal: StopSignal) => listeners.get(signal)!(),
    source: {
      on: (signal: StopSignal, listener: () => void) => void listeners.set(signal, listener),
      exit: (code: number) => void exits.push(code),
      writeError: (text: string) => void lines.push(text),
      setTimer: (fire: () => void, ms: number) => timers.push({ ms, fire }),
    },
  };
}

describe('stop signals (interrupts)', () => {
  test('exit codes are 128 + the signal: 130 for SIGINT, 143 for SIGTERM', () => {
    assert.equal(exitCodeForSignal('SIGINT'), 130);
    assert.equal(exitCodeForSignal('SIGTERM'), 143);
  });

  test('with no cleanup registered, the first signal exits at once with its code and no line', () => {
    const proc = fakeProcess();
    installInterrupts(proc.source);
    proc.send('SIGTERM');
    assert.deepEqual(proc.exits, [143]);
    assert.deepEqual(proc.lines, []);
  });

  test('the first signal starts the registered cleanups and arms the bound; the process is not ended', () => {
    const proc = fakeProcess();
    const interrupts = installInterrupts(proc.source, { boundMs: 5000 });
    const seen: StopSignal[] = [];
    interrupts.onInterrupt((signal) => seen.push(signal));
    interrupts.extendBound(2000);
    proc.send('SIGINT');
    assert.deepEqual(seen, ['SIGINT']);
    assert.equal(interrupts.received, 'SIGINT');
    assert.deepEqual(proc.exits, []);
    assert.deepEqual(proc.timers.map((t) => t.ms), [7000]);
  });

  test('a second signal during the cleanup exits at once with its own code, naming what is left behind', () => {
    const proc = fakeProcess();
    const interrupts = installInterrupts(proc.source);
    interrupts.onInterrupt(() => undefined);
    interrupts.leaving(() => 'container berth-t1');
    interrupts.leaving(() => undefined);
    proc.send('SIGTERM');
    proc.send('SIGINT');
    assert.deepEqual(proc.exits, [130]);
    assert.equal(proc.lines.length, 1);
    assert.match(proc.lines[0]!, /^berth: SIGINT during the cleanup: exiting now; left behind: container berth-t1\n$/);
  });

  test('a cleanup that outlives its bound exits with the first signal\'s code, once', () => {
    const proc = fakeProcess();
    const interrupts = installInterrupts(proc.source, { boundMs: 12_000 });
    interrupts.onInterrupt(() => undefined);
    proc.send('SIGTERM');
    proc.timers[0]!.fire();
    proc.send('SIGTERM');
    assert.deepEqual(proc.exits, [143]);
    assert.match(proc.lines[0]!, /^berth: the cleanup after SIGTERM did not finish within 12s: exiting now\n$/);
  });

  test('a removed cleanup no longer runs, and a signal after it exits at once', () => {
    const proc = fakeProcess();
    const interrupts = installInterrupts(proc.source);
    let ran = false;
    const remove = interrupts.onInterrupt(() => (ran = true));
    remove();
    proc.send('SIGINT');
    assert.equal(ran, false);
    assert.deepEqual(proc.exits, [130]);
  });

  test('a cleanup that throws does not keep the others from starting', () => {
    const proc = fakeProcess();
    const interrupts = installInterrupts(proc.source);
    let second = false;
    interrupts.onInterrupt(() => {
      throw new Error('boom');
    });
    interrupts.onInterrupt(() => (second = true));
    proc.send('SIGTERM');
    assert.equal(second, true);
    assert.deepEqual(proc.exits, []);
    assert.equal(proc.timers.length, 1);
  });

  test('following commands exit 0 after Ctrl-C, 143 after SIGTERM', () => {
    const proc = fakeProcess();
    const interrupts = installInterrupts(proc.source);
    interrupts.onInterrupt(() => undefined);
    assert.equal(endedByUser({ interrupts }), 0);
    proc.send('SIGTERM');
    assert.equal(endedByUser({ interrupts }), 143);
  });

  test('BERTH_CLEANUP_TIMEOUT sets the bound; a bad value names the variable', () => {
    assert.equal(cleanupBoundFromEnv({}), DEFAULT_CLEANUP_BOUND_MS);
    assert.equal(cleanupBoundFromEnv({ BERTH_CLEANUP_TIMEOUT: '30s' }), 30_000);
    for (const bad of ['soon', '0s', '-1']) {
      assert.throws(
        () => cleanupBoundFromEnv({ BERTH_CLEANUP_TIMEOUT: bad }),
        (error: unknown) => isBerthError(error, 'BERTH_VALIDATION') && error.message.includes('BERTH_CLEANUP_TIMEOUT'),
      );
    }
  });
});
