import type { ContainerInspect } from '../engine/types.js';
import type { HealthProbeRecord, TaskHealth } from '../state/tasks.js';
import { hasActiveHealthcheck } from '../tasks/health.js';

/**
 * How much of a probe's output the agent keeps: the engine keeps up to 4 KiB of each of the last 5
 * probes; the agent keeps the end of each (where a failing check says why), so that a task's record
 * and view stay small.
 */
export const PROBE_OUTPUT_MAX_CHARS = 1024;

/** How many probes the agent keeps: as many as the engine does. */
export const PROBE_LOG_MAX = 5;

/** How much of the last probe's output a `task.health` event carries. */
export const EVENT_OUTPUT_MAX_CHARS = 300;

/** The end of `output`, at most `maxChars` characters, with `…` in front when it was cut. */
export function capProbeOutput(output: string, maxChars: number = PROBE_OUTPUT_MAX_CHARS): string {
  if (output.length <= maxChars) return output;
  return `…${output.slice(output.length - Math.max(0, maxChars - 1))}`;
}

/**
 * A container's health as the agent records it, from its inspect data: undefined when it has no
 * health check (none in its spec or image, or disabled). A container whose check has not run yet
 * is `starting` with an empty log, as the engine reports it.
 */
export function healthOf(inspect: Pick<ContainerInspect, 'healthcheck' | 'health'>): TaskHealth | undefined {
  if (!hasActiveHealthcheck(inspect.healthcheck)) return undefined;
  const health = inspect.health;
  const status = health?.status === 'healthy' || health?.status === 'unhealthy' ? health.status : 'starting';
  const log = (health?.probes ?? []).slice(-PROBE_LOG_MAX).map(
    (probe): HealthProbeRecord => ({
      ...(probe.start ? { startedAtMs: probe.start.getTime() } : {}),
      ...(probe.end ? { endedAtMs: probe.end.getTime() } : {}),
      exitCode: probe.exitCode,
      output: capProbeOutput(probe.output),
    }),
  );
  return { status, failingStreak: health?.failingStreak ?? 0, log };
}

/** Whether two health records say the same (status, streak, and the same probes). */
export function isSameHealth(a: TaskHealth | undefined, b: TaskHealth | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.status !== b.status || a.failingStreak !== b.failingStreak || a.log.length !== b.log.length) return false;
  return a.log.every((probe, i) => {
    const other = b.log[i]!;
    return probe.startedAtMs === other.startedAtMs && probe.endedAtMs === other.endedAtMs && probe.exitCode === other.exitCode && probe.output === other.output;
  });
}

/** The last probe's exit code and output (its end, for an event), if a probe ran. */
export function lastProbeSummary(health: TaskHealth): { exitCode: number; output: string } | undefined {
  const last = health.log.at(-1);
  return last && { exitCode: last.exitCode, output: capProbeOutput(last.output.trim(), EVENT_OUTPUT_MAX_CHARS) };
}
