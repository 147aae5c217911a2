/**
 * A command on a real pseudo-terminal, driven as a person at a terminal would drive it: keys typed,
 * the window resized, the screen read, the terminal's settings looked at, during the session and
 * after the command exited. Runs test/support/pty-driver.py under python3 (Python's `pty` module:
 * no native addon needed).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { pollUntil } from './engine.js';

const DRIVER = fileURLToPath(new URL('./pty-driver.py', import.meta.url));

/** The settings of the terminal that matter to an interactive session. */
export interface TerminalSettings {
  /** Canonical (line-by-line) input: off in raw mode. */
  icanon: boolean;
  /** Local echo of typed keys: off in raw mode. */
  echo: boolean;
  /** Ctrl-C, Ctrl-\ and Ctrl-Z raise signals locally: off in raw mode. */
  isig: boolean;
  icrnl: boolean;
  opost: boolean;
}

export interface PtyExit {
  /** The command's exit code; null when a signal killed it. */
  code: number | null;
  signal: number | null;
  /** The terminal's settings as the command left them. */
  settings: TerminalSettings;
}

type DriverMessage = { out: string } | { termios: TerminalSettings } | { exit: number | null; signal: number | null; termios: TerminalSettings };

export interface PtySession {
  /** Everything the command wrote to the terminal so far, as text. */
  readonly screen: string;
  /** The command's process id is not exposed: signals go through `signal`. */
  write(text: string): void;
  resize(rows: number, columns: number): void;
  signal(name: 'INT' | 'TERM' | 'KILL'): void;
  /** The terminal's settings now. */
  settings(): Promise<TerminalSettings>;
  /**
   * Resolves once `test` matches the screen after `from` (an offset in `screen`, default 0) and
   * returns the offset just past the match; rejects with the screen when `deadlineMs` passes first.
   */
  waitFor(test: RegExp | string, options?: { from?: number; deadlineMs?: number }): Promise<number>;
  /** Resolves when the command ended (and with the same result every time after). */
  exited(deadlineMs?: number): Promise<PtyExit>;
  /** Kills the driver (and with it the command's terminal) if the test ends early. */
  kill(): void;
}

export interface PtyOptions {
  rows?: number;
  columns?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** A cursor position query, which a terminal emulator answers with a report such as {@link CURSOR_REPORT}. */
export const CURSOR_QUERY = '\x1b[6n';
/**
 * A terminal's answer to {@link CURSOR_QUERY} (row 1, column 5). Typed into a terminal that is not
 * in raw mode, it is echoed back as `^[[1;5R`.
 */
export const CURSOR_REPORT = '\x1b[1;5R';

/** busybox sh's prompt, as root in / */
export const BUSYBOX_PROMPT = '/ # ';
/**
 * A line end from the remote TTY ("\r\n"), which Node's raw mode (output processing left on, unlike
 * docker's) may turn into "\r\r\n" on the way out: a regular expression's source.
 */
export const TTY_EOL = '\r+\n';

/**
 * Waits for busybox sh's first prompt, answers its cursor position query as a terminal emulator does,
 * and resolves once the shell runs what is typed. busybox drops the keys that arrive in one read with
 * the answer (a person types after it), so input is typed until a command of it has run; the
 * later prompts' queries stay unanswered, which busybox takes in its stride.
 */
export async function shellReady(session: PtySession): Promise<void> {
  await session.waitFor(`${BUSYBOX_PROMPT}${CURSOR_QUERY}`);
  session.write(CURSOR_REPORT);
  let attempt = 0;
  await pollUntil('the shell to run a command', async () => {
    const from = session.screen.length;
    const marker = `ready-${++attempt}`;
    session.write(`echo ${marker}\r`);
    // Every line typed ends in a prompt, whatever became of its first keys.
    const prompted = await session.waitFor(BUSYBOX_PROMPT, { from });
    return new RegExp(`^${marker}${TTY_EOL}`, 'm').test(session.screen.slice(from, prompted)) ? true : undefined;
  }, { timeoutMs: 30_000 });
}

/** Starts `command` with `args` on a new pseudo-terminal of `rows` x `columns` (default 24 x 80). */
export function startOnPty(command: string, args: readonly string[], options: PtyOptions = {}): PtySession {
  const child: ChildProcessWithoutNullStreams = spawn('python3', [DRIVER, String(options.rows ?? 24), String(options.columns ?? 80), '--', command, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: options.env ?? process.env,
    cwd: options.cwd,
  });
  let screen = '';
  let driverErrors = '';
  const watchers = new Set<() => void>();
  const settingsWaiters: ((settings: TerminalSettings) => void)[] = [];
  let exit: PtyExit | undefined;
  let partial = '';
  const decoder = new TextDecoder();
  const send = (message: object): void => {
    if (child.stdin.writable) child.stdin.write(`${JSON.stringify(message)}\n`);
  };
  // The driver ends after the command: a write after that is no error.
  child.stdin.on('error', () => undefined);
  const notify = (): void => {
    for (const watcher of [...watchers]) watcher();
  };
  child.stderr.setEncoding('utf8').on('data', (d: string) => (driverErrors += d));
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    partial += chunk;
    let newline: number;
    while ((newline = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, newline);
      partial = partial.slice(newline + 1);
      const message = JSON.parse(line) as DriverMessage;
      if ('out' in message) screen += decoder.decode(Buffer.from(message.out, 'base64'), { stream: true });
      else if ('exit' in message) exit = { code: message.exit, signal: message.signal, settings: message.termios };
      else settingsWaiters.shift()?.(message.termios);
    }
    notify();
  });
  child.on('close', notify);
  // python3 missing or not runnable: every wait fails, naming it, instead of an uncaught error.
  let spawnFailed = false;
  child.on('error', (error) => {
    spawnFailed = true;
    driverErrors += `cannot run the pty driver (python3): ${error.message}`;
    notify();
  });
  const until = <T>(what: string, check: () => T | undefined, deadlineMs: number): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const finish = (): void => {
        clearTimeout(timer);
        watchers.delete(watcher);
      };
      const watcher = (): void => {
        const value = check();
        if (value !== undefined) {
          finish();
          resolve(value);
        } else if ((child.exitCode !== null || spawnFailed) && exit === undefined) {
          finish();
          reject(new Error(`the pty driver ended before ${what}: ${driverErrors}\nscreen: ${JSON.stringify(screen)}`));
        }
      };
      const timer = setTimeout(() => {
        watchers.delete(watcher);
        reject(new Error(`no ${what} within ${deadlineMs} ms; screen so far: ${JSON.stringify(screen)}`));
      }, deadlineMs);
      watchers.add(watcher);
      watcher();
    });
  return {
    get screen() {
      return screen;
    },
    write: (text) => send({ write: Buffer.from(text, 'utf8').toString('base64') }),
    resize: (rows, columns) => send({ resize: [rows, columns] }),
    signal: (name) => send({ signal: name }),
    settings: () => {
      let got: TerminalSettings | undefined;
      settingsWaiters.push((settings) => (got = settings));
      send({ termios: true });
      return until('the terminal settings', () => got, 10_000);
    },
    waitFor: (test, { from = 0, deadlineMs = 30_000 } = {}) =>
      until(`${String(test)} on the screen`, () => {
        const rest = screen.slice(from);
        if (typeof test === 'string') {
          const at = rest.indexOf(test);
          return at < 0 ? undefined : from + at + test.length;
        }
        const match = test.exec(rest);
        return match ? from + match.index + match[0].length : undefined;
      }, deadlineMs),
    exited: (deadlineMs = 60_000) => until('exit of the command', () => exit, deadlineMs),
    kill: () => {
      if (child.exitCode !== null) return;
      send({ signal: 'KILL' });
      child.stdin.end();
      child.kill('SIGTERM');
    },
  };
}
