import type { BerthError } from '../common/errors.js';
import { formatDurationMs } from '../common/units.js';

/** How a task ended. Every task reaches exactly one of these. */
export type EndState =
  | { kind: 'success'; exitCode: 0 }
  /** `reason` is set when berth could not start the task at all (exit code 125, as docker run uses). */
  | { kind: 'failed'; exitCode: number; reason?: string }
  /** The kernel killed the task for exceeding its memory limit (the engine's OOMKilled flag). */
  | { kind: 'oom'; exitCode: number; hint: string }
  /** The run time limit passed; berth stopped the task. */
  | { kind: 'timed-out'; exitCode: number; timeoutMs: number }
  /** The caller aborted; berth stopped the task. */
  | { kind: 'cancelled'; exitCode?: number }
  /** The engine failed in a way that leaves the outcome unknown, or the container vanished. */
  | { kind: 'lost'; reason: string; error?: BerthError };

export type EndKind = EndState['kind'];

/** Every end kind, for schemas and filters; the type below fails to compile if the list and EndState part. */
export const END_KINDS = ['success', 'failed', 'oom', 'timed-out', 'cancelled', 'lost'] as const satisfies readonly EndKind[];
type MissingEndKind = Exclude<EndKind, (typeof END_KINDS)[number]>;
const everyEndKindListed: MissingEndKind extends never ? true : never = true;
void everyEndKindListed;

export interface ExitFacts {
  exitCode: number;
  oomKilled: boolean;
  /** Set when berth stopped the task because its run time limit passed. */
  timedOutAfterMs?: number;
  cancelled: boolean;
  memoryLimitBytes?: number;
}

/**
 * Classifies how a container ended. The caller's intent wins (cancelled), then the kernel's verdict
 * (out of memory), then berth's own limit (timed out), then the exit code.
 */
export function classifyExit(facts: ExitFacts): EndState {
  if (facts.cancelled) return { kind: 'cancelled', exitCode: facts.exitCode };
  if (facts.oomKilled) {
    const limit = facts.memoryLimitBytes ? ` of ${Math.round(facts.memoryLimitBytes / 1024 / 1024)} MiB` : '';
    return { kind: 'oom', exitCode: facts.exitCode, hint: `the task ran out of memory: raise its memory limit${limit}` };
  }
  if (facts.timedOutAfterMs !== undefined) return { kind: 'timed-out', exitCode: facts.exitCode, timeoutMs: facts.timedOutAfterMs };
  if (facts.exitCode === 0) return { kind: 'success', exitCode: 0 };
  return { kind: 'failed', exitCode: facts.exitCode };
}

/** What describing an end state may know besides the end state. */
export interface DescribeEndOptions {
  /** The task's stop grace period, named when a timed-out task had to be killed after it. */
  stopGraceMs?: number;
  /** The task's stop signal (default SIGTERM): when it is SIGKILL, a kill is what stopping it means. */
  stopSignal?: string;
}

/** 128 + SIGKILL: how a container that was killed (not stopped by its stop signal) exits. */
const KILLED_EXIT_CODE = 137;

/**
 * A one-line description of an end state, for people. It names the task's own exit code where that
 * is the news (failed, out of memory); a timed-out task is described by what berth did to it (stopped
 * by its stop signal, or killed after the grace period), since the caller's exit code for a timeout
 * (124 for the CLI) is not the container's.
 */
export function describeEndState(end: EndState, options: DescribeEndOptions = {}): string {
  switch (end.kind) {
    case 'success':
      return 'succeeded';
    case 'failed':
      return end.reason ? `failed to start: ${end.reason}` : `failed with exit code ${end.exitCode}`;
    case 'oom':
      return `out of memory (exit code ${end.exitCode}): ${end.hint}`;
    case 'timed-out': {
      const after = `timed out after ${formatDurationMs(end.timeoutMs)}`;
      if (end.exitCode === KILLED_EXIT_CODE && options.stopSignal !== undefined && /^(SIG)?KILL$|^9$/.test(options.stopSignal)) {
        return `${after} and was killed by its stop signal (${options.stopSignal})`;
      }
      if (end.exitCode === KILLED_EXIT_CODE) {
        const grace = options.stopGraceMs === undefined ? 'its stop grace period' : `the ${formatDurationMs(options.stopGraceMs)} stop grace period`;
        return `${after} and was killed after ${grace}, for it did not stop on its stop signal`;
      }
      return `${after} and was stopped by its stop signal (the task exited with ${end.exitCode})`;
    }
    case 'cancelled':
      return 'cancelled';
    case 'lost':
      return `lost: ${end.reason}`;
  }
}
