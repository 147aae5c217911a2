import type { Readable, Writable } from 'node:stream';

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
  const send = (): void => {
    const size = terminalSize(stdout);
    if (size) resize(size).catch(onError);
  };
  stdout.on('resize', send);
  send();
  return () => {
    stdout.off('resize', send);
  };
}
