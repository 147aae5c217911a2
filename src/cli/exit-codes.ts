import { isBerthError } from '../common/errors.js';
import { commandFailureOf, type CommandFailure } from '../engine/classify.js';
import type { GroupEnd } from '../groups/lifecycle.js';
import type { EndState } from '../tasks/end-state.js';

/** Exit codes of `berth run`, following the docker CLI and coreutils' timeout. */
export const EXIT = {
  usage: 2,
  /** berth or the engine failed: the task's own outcome is unknown. */
  berthFailure: 125,
  /** The command could not be run: it is not executable (as a shell and docker say). */
  commandNotExecutable: 126,
  /** The command could not be run: it was not found (as a shell and docker say). */
  commandNotFound: 127,
  timedOut: 124,
  outOfMemory: 137,
  /** Interrupted by the user (128 + SIGINT). */
  interrupted: 130,
} as const;

/** berth's codes for the ends that are not a task's own exit. */
const CODE_BY_END: Readonly<Record<Exclude<EndState['kind'], 'success' | 'failed'>, number>> = {
  oom: EXIT.outOfMemory,
  'timed-out': EXIT.timedOut,
  cancelled: EXIT.interrupted,
  lost: EXIT.berthFailure,
};

export function exitCodeForEnd(end: EndState): number {
  return end.kind === 'success' ? 0 : end.kind === 'failed' ? end.exitCode : CODE_BY_END[end.kind];
}

/** The exit code of a group's end: the deciding task's code, as `berth run` exits with its task's. */
export function exitCodeForGroupEnd(end: GroupEnd): number {
  return end.kind === 'success' ? 0 : end.kind === 'failed' ? (end.exitCode ?? EXIT.berthFailure) : CODE_BY_END[end.kind];
}

/** 2 for a usage error; 127 or 126 for a command the container could not run (as docker); else 125. */
export function exitCodeForError(error: unknown): number {
  if (isBerthError(error, 'BERTH_VALIDATION')) return EXIT.usage;
  return commandFailureOf(error)?.exitCode ?? EXIT.berthFailure;
}

/**
 * The one stderr line for a command the container could not run, naming the exit code berth
 * returns: `berth: command not found in the container: exec: "nosuch": executable file not found
 * in $PATH; exiting 127`.
 */
export function commandFailureLine(failure: CommandFailure): string {
  const what = failure.kind === 'not-found' ? 'command not found in the container' : 'command not executable in the container';
  return `berth: ${what}: ${failure.detail}; exiting ${failure.exitCode}`;
}
