import { z } from 'zod';
import { DURATION_RULE, parseOptions } from '../common/validation.js';
import { parseDurationMs } from '../common/units.js';

const duration = (minimumMs: number) =>
  z.union([z.string(), z.number()]).transform((value, ctx) => {
    const ms = parseDurationMs(value);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: DURATION_RULE });
      return z.NEVER;
    }
    if (ms < minimumMs) {
      ctx.addIssue({ code: 'custom', message: `must be at least ${minimumMs} ms` });
      return z.NEVER;
    }
    return ms;
  });

/** The smallest period accepted: a sweep lists containers, and listing many times a second only loads the engine. */
export const MINIMUM_RECONCILE_PERIOD_MS = 100;

const schema = z
  .object({
    enabled: z.boolean().default(true),
    period: duration(MINIMUM_RECONCILE_PERIOD_MS).default(300_000),
    creationGrace: duration(0).default(300_000),
    dryRun: z.boolean().default(false),
    orphans: z.boolean().default(true),
    orphanGrace: duration(0).optional(),
    removeConcurrency: z.number().int('must be a whole number').min(1, 'must be at least 1').max(32, 'must be at most 32').default(4),
  })
  .strict();

/** Options of the dangling-container reconciler as users write them; durations take `'5m'` or milliseconds. */
export interface DanglingReconcilerOptions {
  /** Whether `start()` schedules sweeps at all (`sweepOnce()` works either way). Default true. */
  enabled?: boolean;
  /** Time between the end of one sweep and the start of the next. Default `'5m'`; minimum 100 ms. */
  period?: string | number;
  /**
   * A container younger than this is never removed: it may be one the driver is creating right
   * now and has not registered yet. Default `'5m'`.
   */
  creationGrace?: string | number;
  /** Report what would be removed (and log it from the scheduled sweeps), remove nothing. Default false. */
  dryRun?: boolean;
  /**
   * Whether sweeps also remove orphans: containers of short-lived owners (`berth run`, library
   * drivers; any owner id) on this host whose owner process is gone, running or not. Default true.
   */
  orphans?: boolean;
  /**
   * An orphan younger than this is left for a later sweep (a margin for whoever looks at what a
   * crashed run left, and against misjudging a container made a moment ago). Default: `creationGrace`.
   */
  orphanGrace?: string | number;
  /** Removals of one sweep in flight at once. Default 4; 1 to 32. */
  removeConcurrency?: number;
}

/** The validated, defaulted, frozen options. */
export interface ResolvedDanglingReconcilerOptions {
  readonly enabled: boolean;
  readonly periodMs: number;
  readonly creationGraceMs: number;
  readonly dryRun: boolean;
  readonly orphans: boolean;
  readonly orphanGraceMs: number;
  readonly removeConcurrency: number;
}

/**
 * Validates the reconciler's options once: a ValidationError names every field at fault, under
 * `fieldPrefix` (e.g. `reconcile.` in the agent's configuration).
 */
export function resolveDanglingReconcilerOptions(input: DanglingReconcilerOptions = {}, fieldPrefix = ''): ResolvedDanglingReconcilerOptions {
  const o = parseOptions(schema, input, fieldPrefix);
  return Object.freeze({
    enabled: o.enabled,
    periodMs: o.period,
    creationGraceMs: o.creationGrace,
    dryRun: o.dryRun,
    orphans: o.orphans,
    orphanGraceMs: o.orphanGrace ?? o.creationGrace,
    removeConcurrency: o.removeConcurrency,
  });
}
