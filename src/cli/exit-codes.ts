import { isBerthError } from '../common/errors.js';
import type { EndState } from '../tasks/end-state.js';

/** Exit codes of `berth run`, following the docker CLI and coreutils' timeout. */
export const EXIT = {
  usage: 2,
  /** berth or the engine failed: the task's own outcome is unknown. */
  berthFailure: 125,
  timedOut: 124,
  outOfMemory: 137,
  /** Interrupted by the user (128 + SIGINT). */
  interrupted: 130,
} as const;

export function exitCodeForEnd(end: EndState): number {
  switch (end.kind) {
    case 'success':
      return 0;
    case 'failed':
      return end.exitCode;
    case 'oom':
      return EXIT.outOfMemory;
    case 'timed-out':
      return EXIT.timedOut;
    case 'cancelled':
      return EXIT.interrupted;
    case 'lost':
      return EXIT.berthFailure;
  }
}

export function exitCodeForError(error: unknown): number {
  return isBerthError(error, 'BERTH_VALIDATION') ? EXIT.usage : EXIT.berthFailure;
}
