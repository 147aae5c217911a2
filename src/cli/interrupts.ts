import { messageOf, ValidationError } from '../common/errors.js';
import { readTypedDuration } from '../common/units.js';

/**
 * How every berth process ends when asked: one mechanism for all commands, so that `run`, `exec`,
 * `stats`, `logs -f`, `events` and `agent` behave alike whatever the engine or the agent does.
 *
 * - While a command has registered a cleanup (`onInterrupt`), the first SIGINT or SIGTERM starts it:
 *   the handlers run (they abort what is under way and stop or remove what the command made, through
 *   calls that each have a deadline) and the command returns its exit code.
 * - A second signal, or a cleanup that outlives its bound (`BERTH_CLEANUP_TIMEOUT`, default
 *   {@link DEFAULT_CLEANUP_BOUND_MS}), exits at once with 128 + the signal's number (130 for SIGINT,
 *   143 for SIGTERM): the signal that arrived second, or the first one when the bound ran out. One
 *   line on stderr says what was left behind (registered with `leaving`) for the agent's reconciler
 *   and `berth prune` to remove.
 * - With no cleanup registered there is nothing to clean: the first signal exits at once.
 *
 * Only the CLI's entry point (src/cli/entry.ts) touches the process: it hands a {@link SignalSource}
 * to {@link installInterrupts}; commands see only the {@link Interrupts} port.
 */

export type StopSignal = 'SIGINT' | 'SIGTERM';

/** 128 + the signal's number, as shells report a process ended by it. */
export const SIGNAL_EXIT_CODES: Readonly<Record<StopSignal, number>> = Object.freeze({ SIGINT: 130, SIGTERM: 143 });

/** The exit code for a process stopped by `signal`: 130 for SIGINT, 143 for SIGTERM. */
export function exitCodeForSignal(signal: StopSignal): number {
  return SIGNAL_EXIT_CODES[signal];
}

/**
 * The exit code of a command that follows something until the user leaves it (stats, logs -f,
 * events): 0 after Ctrl-C, which is how one leaves it, 143 after SIGTERM, 0 when no signal came.
 */
export function endedByUser(io: { readonly interrupts: Interrupts }): number {
  const signal = io.interrupts.received;
  return signal === 'SIGTERM' ? exitCodeForSignal(signal) : 0;
}

/**
 * How long a command's cleanup may run after the first stop signal before the process exits anyway:
 * 15 s, under the 90 s systemd and the 30 s Kubernetes give a process to stop, and longer than a
 * healthy engine needs to stop (SIGKILL) and remove a container. `berth run` adds its task's stop
 * grace period to it.
 */
export const DEFAULT_CLEANUP_BOUND_MS = 15_000;

/** The environment variable that overrides {@link DEFAULT_CLEANUP_BOUND_MS}: a duration such as `30s`. */
export const CLEANUP_BOUND_ENV = 'BERTH_CLEANUP_TIMEOUT';

/** The cleanup bound from the environment; a ValidationError names the variable when it is not a duration. */
export function cleanupBoundFromEnv(env: Readonly<Record<string, string | undefined>>): number {
  const value = env[CLEANUP_BOUND_ENV];
  if (value === undefined || value.trim() === '') return DEFAULT_CLEANUP_BOUND_MS;
  const read = readTypedDuration(value);
  if (!read.ok) throw new ValidationError([{ field: CLEANUP_BOUND_ENV, rule: read.problem }]);
  if (read.value <= 0) throw new ValidationError([{ field: CLEANUP_BOUND_ENV, rule: 'must be a duration above zero, e.g. 15s' }]);
  return read.value;
}

/** What commands see of the process's stop signals. */
export interface Interrupts {
  /**
   * Registers a cleanup that the first SIGINT or SIGTERM starts; returns its removal. Keep it
   * registered until the cleanup has finished: a first signal while none is registered exits at once.
   */
  onInterrupt(handler: (signal: StopSignal) => void): () => void;
  /** The first stop signal received, if any. */
  readonly received: StopSignal | undefined;
  /**
   * Names what an exit before the cleanup finished would leave behind (e.g. `container berth-x`), for
   * the line on stderr; undefined when nothing is. Returns its removal.
   */
  leaving(describe: () => string | undefined): () => void;
  /** Lengthens the cleanup's bound by `extraMs` (e.g. a task's stop grace period). */
  extendBound(extraMs: number): void;
}

/** The process, as the entry point hands it over. */
export interface SignalSource {
  on(signal: StopSignal, listener: () => void): void;
  /** Ends the process at once with `code`. */
  exit(code: number): void;
  /** Where the one line of a forced exit goes. */
  writeError(text: string): void;
  /** The bound's timer, injectable for tests. Default: setTimeout. */
  setTimer?(callback: () => void, ms: number): unknown;
}

/** Interrupts that never fire, for code that runs outside a process of its own (tests, scratch parsing). */
export const NO_INTERRUPTS: Interrupts = Object.freeze({
  onInterrupt: () => () => undefined,
  received: undefined,
  leaving: () => () => undefined,
  extendBound: () => undefined,
});

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${(ms / 1000).toFixed(1)}s`;
}

/**
 * Listens for SIGINT and SIGTERM on `source` for the rest of the process's life and returns the
 * port commands use. After the first signal, the bound's timer keeps the process alive on purpose:
 * it is what ends a cleanup stuck on a call that never answers.
 */
export function installInterrupts(source: SignalSource, options: { boundMs?: number } = {}): Interrupts {
  const handlers = new Set<(signal: StopSignal) => void>();
  const leftovers = new Set<() => string | undefined>();
  const setTimer = source.setTimer ?? ((callback: () => void, ms: number) => setTimeout(callback, ms));
  const boundMs = options.boundMs ?? DEFAULT_CLEANUP_BOUND_MS;
  let extraMs = 0;
  let received: StopSignal | undefined;
  let exited = false;

  const describeLeftovers = (): string[] => {
    const described: string[] = [];
    for (const describe of leftovers) {
      try {
        const text = describe();
        if (text) described.push(text);
      } catch {
        // A description that fails must not keep the process from exiting.
      }
    }
    return described;
  };

  const exitNow = (code: number, why: string): void => {
    if (exited) return;
    exited = true;
    const left = describeLeftovers();
    const tail = left.length > 0 ? `; left behind: ${left.join('; ')}` : '';
    source.writeError(`berth: ${why}: exiting now${tail}\n`);
    source.exit(code);
  };

  const onSignal = (signal: StopSignal): void => {
    if (received !== undefined) {
      exitNow(exitCodeForSignal(signal), `${signal} during the cleanup`);
      return;
    }
    received = signal;
    if (handlers.size === 0) {
      // Nothing to clean up: exit as the signal's default action would, but with berth's code.
      exited = true;
      source.exit(exitCodeForSignal(signal));
      return;
    }
    const bound = boundMs + extraMs;
    setTimer(() => exitNow(exitCodeForSignal(signal), `the cleanup after ${signal} did not finish within ${formatSeconds(bound)}`), bound);
    for (const handler of [...handlers]) {
      try {
        handler(signal);
      } catch (error) {
        // One cleanup that throws must not keep the others from starting; the bound still ends the process.
        source.writeError(`berth: the cleanup after ${signal} failed to start: ${messageOf(error)}\n`);
      }
    }
  };

  source.on('SIGINT', () => onSignal('SIGINT'));
  source.on('SIGTERM', () => onSignal('SIGTERM'));

  return {
    onInterrupt(handler) {
      handlers.add(handler);
      return () => void handlers.delete(handler);
    },
    get received() {
      return received;
    },
    leaving(describe) {
      leftovers.add(describe);
      return () => void leftovers.delete(describe);
    },
    extendBound(ms) {
      extraMs = Math.max(extraMs, ms);
    },
  };
}
