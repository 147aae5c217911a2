/**
 * A warm start through a pool container's launcher (the holder's launch mode, see
 * holder-program/holder.c): the task's request is written to the launcher's stdin, and the task
 * counts as started only once the launcher acknowledges it on stderr. Until then nothing of the
 * task has run, so a launcher that died, hung up or never answers is told apart from a task that
 * ran: the task can start elsewhere without being lost or run twice.
 */
import { PassThrough, type Readable, type Writable } from 'node:stream';
import type { ExecSession } from '../engine/engine.js';
import { LAUNCH_ACK } from './key.js';

/** How long a launcher may take to acknowledge a request before its container is given up (default 30 s, the engine's write deadline). */
export const LAUNCH_ACK_TIMEOUT_MS = 30_000;

/** `started`: the task runs in the launcher's exec (its stderr without the acknowledgement); `not-started`: nothing of it ran, `why` says what failed. */
export type LaunchOutcome = { kind: 'started'; session: ExecSession } | { kind: 'not-started'; why: string };

export interface LaunchOptions {
  /** Ends the launcher's stdin after the request: the task then reads end-of-file, as a cold task without stdin does. */
  endStdin: boolean;
  /** Default LAUNCH_ACK_TIMEOUT_MS. */
  timeoutMs?: number;
  /** An abort before the acknowledgement: `not-started` (the caller removes the container, which ends whatever it holds). */
  signal?: AbortSignal;
}

/**
 * Writes `request` to `launcher` and waits for its acknowledgement. Never throws: a write that
 * fails, a connection that ends or errs, an answer that is not the acknowledgement, a timeout or
 * an abort before it are `not-started`. The caller owns the launcher either way (on `not-started`
 * it closes it and removes the container).
 */
export function launchThrough(launcher: ExecSession, request: Buffer, options: LaunchOptions): Promise<LaunchOutcome> {
  const stdin = launcher.stdin as Writable | undefined;
  const stderr = launcher.stderr as Readable;
  if (stdin === undefined || stdin.destroyed || stdin.writableEnded) return Promise.resolve({ kind: 'not-started', why: 'the launcher\'s connection was closed' });
  if (stderr.readableEnded || stderr.destroyed) return Promise.resolve({ kind: 'not-started', why: 'the launcher had ended' });
  const { signal } = options;
  if (signal?.aborted) return Promise.resolve({ kind: 'not-started', why: 'the start was aborted' });
  return new Promise<LaunchOutcome>((resolve) => {
    let seen = Buffer.alloc(0);
    let settled = false;
    const settle = (outcome: LaunchOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stderr.off('data', onData);
      stderr.off('end', onEnd);
      stderr.off('close', onEnd);
      stderr.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
      resolve(outcome);
    };
    const notStarted = (why: string): void => settle({ kind: 'not-started', why });
    const onData = (chunk: Buffer): void => {
      seen = Buffer.concat([seen, chunk]);
      const compared = Math.min(seen.length, LAUNCH_ACK.length);
      if (!seen.subarray(0, compared).equals(LAUNCH_ACK.subarray(0, compared))) return notStarted(`the launcher answered ${JSON.stringify(seen.subarray(0, 200).toString('utf8'))}`);
      if (seen.length < LAUNCH_ACK.length) return;
      stderr.off('data', onData);
      stderr.pause();
      const taskStderr = new PassThrough({ highWaterMark: stderr.readableHighWaterMark });
      const tail = seen.subarray(LAUNCH_ACK.length);
      if (tail.length > 0) taskStderr.write(tail);
      stderr.once('error', (error) => taskStderr.destroy(error));
      // A consumer that gives up on the task's stderr gives up on the launcher's (the demultiplexer then hangs up when stdout is gone too).
      taskStderr.once('close', () => {
        if (!stderr.readableEnded) stderr.destroy();
      });
      stderr.pipe(taskStderr);
      settle({ kind: 'started', session: { ...launcher, stderr: taskStderr } });
    };
    const onEnd = (): void => notStarted('the launcher ended before it acknowledged the request');
    const onError = (error: Error): void => notStarted(`the launcher's connection failed: ${error.message}`);
    const onAbort = (): void => notStarted('the start was aborted');
    const timeoutMs = options.timeoutMs ?? LAUNCH_ACK_TIMEOUT_MS;
    const timer = setTimeout(() => notStarted(`the launcher did not acknowledge the request within ${timeoutMs} ms`), timeoutMs);
    stderr.on('data', onData);
    stderr.once('end', onEnd);
    stderr.once('close', onEnd);
    stderr.once('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      stdin.write(request, (error) => {
        if (error) notStarted(`the request could not be written: ${error.message}`);
      });
      if (options.endStdin) stdin.end();
    } catch (error) {
      notStarted(`the request could not be written: ${error instanceof Error ? error.message : String(error)}`);
    }
  });
}
