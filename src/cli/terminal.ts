import type { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * The terminal side of an interactive session: raw mode on the user's stdin, and the size of the
 * user's terminal sent to a remote TTY. Both work on the streams the CLI was given (never on process
 * globals) and do nothing when those streams are not terminals.
 */

/** What raw mode needs of a stdin: Node's tty.ReadStream has all three. */
interface RawModeInput {
  isTTY?: boolean;
  isRaw?: boolean;
  setRawMode?: (mode: boolean) => unknown;
}

/** What following the size needs of a stdout: Node's tty.WriteStream has these and emits 'resize'. */
interface SizedOutput {
  isTTY?: boolean;
  columns?: number;
  rows?: number;
}

export interface TerminalSize {
  rows: number;
  columns: number;
}

/**
 * Puts a terminal stdin in raw mode, so that every key (Ctrl-C and Ctrl-D included) reaches the
 * remote TTY as bytes and is not acted on locally, and returns the function that restores the mode
 * it found. The restore is idempotent, so it can sit in every `finally`. A stdin that is not a
 * terminal is left alone and the restore does nothing.
 */
export function enterRawMode(stdin: Readable): () => void {
  const input = stdin as Readable & RawModeInput;
  if (!input.isTTY || typeof input.setRawMode !== 'function') return () => undefined;
  const wasRaw = input.isRaw ?? false;
  input.setRawMode(true);
  let restored = false;
  return () => {
    if (restored) return;
    restored = true;
    input.setRawMode?.(wasRaw);
  };
}

/** The size of a terminal stdout, or undefined when it is not a terminal or reports no size. */
export function terminalSize(stdout: Writable): TerminalSize | undefined {
  const output = stdout as Writable & SizedOutput;
  if (!output.isTTY || !output.columns || !output.rows) return undefined;
  return { rows: output.rows, columns: output.columns };
}

/**
 * Sends the terminal's size to `resize` now and again whenever it changes (Node turns SIGWINCH into
 * a 'resize' event on a terminal stdout), and returns the function that stops following. A failed
 * resize is passed to `onError` and following goes on: the next change may well succeed, and a
 * wrong size is no reason to end the session. A stdout that is not a terminal sends nothing.
 */
export function followTerminalSize(stdout: Writable, resize: (size: TerminalSize) => Promise<void>, onError: (error: unknown) => void = () => undefined): () => void {
  if (terminalSize(stdout) === undefined) return () => undefined;
  let following = true;
  const send = (): void => {
    const size = terminalSize(stdout);
    if (size) resize(size).catch(onError);
  };
  // The first size may come too early for the engine (an exec whose process is still starting):
  // tried a few times, as the docker CLI does, unless a resize of the terminal has sent one since.
  let resized = false;
  const sendFirst = async (): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      const size = terminalSize(stdout);
      if (!size || resized || !following) return;
      try {
        await resize(size);
        return;
      } catch (error) {
        if (attempt >= INITIAL_RESIZE_ATTEMPTS) return onError(error);
        await sleep(INITIAL_RESIZE_BACKOFF_MS * attempt);
      }
    }
  };
  const onResize = (): void => {
    resized = true;
    send();
  };
  stdout.on('resize', onResize);
  void sendFirst();
  return () => {
    following = false;
    stdout.off('resize', onResize);
  };
}

/** Attempts at the first resize of a session, and the backoff step between them (50, 100, … ms). */
const INITIAL_RESIZE_ATTEMPTS = 5;
const INITIAL_RESIZE_BACKOFF_MS = 50;

/** What an interactive session is made of: see {@link startTerminalSession}. */
export interface TerminalSessionOptions {
  /** The user's stdin and stdout (a terminal or not). */
  stdin: Readable;
  stdout: Writable;
  /** `-i`: the user's stdin goes to the remote process. */
  interactive: boolean;
  /** `-t`: the remote process has a TTY. */
  tty: boolean;
  /** Sets the remote TTY's size; called at the start and on every resize of the user's terminal (with `tty`). */
  resize?: (size: TerminalSize) => Promise<void>;
  /**
   * Where stdin goes (with `interactive`), ended when stdin ends. Omitted when the caller has
   * already set up the forwarding (a task handle pipes its spec's stdin itself): the teardown then
   * still stops it.
   */
  forwardTo?: NodeJS.WritableStream;
  /** Told about a failed resize; the session goes on. Default: ignored. */
  onResizeError?: (error: unknown) => void;
}

/**
 * Starts the terminal side of an interactive session, as `docker run -it` and `docker exec -it` do:
 * the remote TTY is sized like the user's terminal and follows its resizes (with -t and a terminal
 * stdout), stdin is forwarded (with -i), and the user's terminal is put in raw mode when -i and -t
 * are both given and stdin is a terminal, so that every key (Ctrl-C, Ctrl-D, arrows and the
 * terminal's own answers to cursor queries) reaches the remote TTY as bytes, echoed once, by it.
 * Without -i the terminal is left alone: raw mode would swallow Ctrl-C, which then must stop berth.
 *
 * Returns the teardown: it stops following the size, stops reading stdin (so that a terminal
 * nobody needs does not keep the process alive) and restores the terminal's mode. It is idempotent,
 * so it belongs in every `finally`, and a forced exit (process.exit) restores the mode too, since
 * Node resets its stdio terminal on exit.
 */
export function startTerminalSession(options: TerminalSessionOptions): () => void {
  const { stdin, stdout, interactive, tty, resize, forwardTo } = options;
  const stopFollowingSize = tty && resize ? followTerminalSize(stdout, resize, options.onResizeError) : () => undefined;
  const restoreMode = interactive && tty ? enterRawMode(stdin) : () => undefined;
  const endTarget = (): void => void forwardTo?.end();
  if (interactive && forwardTo) {
    stdin.once('error', endTarget);
    stdin.pipe(forwardTo);
  }
  let tornDown = false;
  return () => {
    if (tornDown) return;
    tornDown = true;
    stopFollowingSize();
    if (interactive) {
      stdin.off('error', endTarget);
      if (forwardTo) stdin.unpipe(forwardTo);
      else stdin.unpipe();
      stdin.pause();
    }
    restoreMode();
  };
}
