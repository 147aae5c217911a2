import { z } from 'zod';
import { booleanOption, countOption, durationOption, durationRule, optionsResolver, type OptionsResolver } from '../common/validation.js';
import { DURATION_LIMITS, type DurationBounds } from '../common/units.js';

/** The smallest period accepted: a sweep lists containers, and listing many times a second only loads the engine. */
export const MINIMUM_RECONCILE_PERIOD_MS = 100;

/** The bounds of the reconciler's durations: the period is held by one Node timer; the graces are ages compared with the clock. */
export const RECONCILE_OPTION_BOUNDS = Object.freeze({
  period: { minMs: MINIMUM_RECONCILE_PERIOD_MS, maxMs: DURATION_LIMITS.timerMs },
  creationGrace: { minMs: 0, maxMs: DURATION_LIMITS.longMs },
  orphanGrace: { minMs: 0, maxMs: DURATION_LIMITS.longMs },
} satisfies Record<string, DurationBounds>);

/**
 * The rule of each option, defaulted: the reconciler resolves its options with them, and the
 * agent's configuration composes the ones it exposes (`reconcile.*`), so both hold the same rule.
 */
export const RECONCILE_OPTION_FIELDS = Object.freeze({
  enabled: booleanOption().default(true),
  period: durationOption(RECONCILE_OPTION_BOUNDS.period, durationRule('5m')).default(300_000),
  creationGrace: durationOption(RECONCILE_OPTION_BOUNDS.creationGrace, durationRule('5m')).default(300_000),
  dryRun: booleanOption().default(false),
  orphans: booleanOption().default(true),
  orphanGrace: durationOption(RECONCILE_OPTION_BOUNDS.orphanGrace, durationRule('5m')).optional(),
  groups: booleanOption().default(true),
  removeConcurrency: countOption({ min: 1, max: 32 }).default(4),
});

const schema = z.object(RECONCILE_OPTION_FIELDS).strict();

/** Options of the dangling-container reconciler as users write them; durations take `'5m'` or milliseconds. */
export interface DanglingReconcilerOptions {
  /** Whether `start()` schedules sweeps at all (`sweepOnce()` works either way). Default true. */
  enabled?: boolean;
  /** Time between the end of one sweep and the start of the next. Default `'5m'`; 100 ms to `'24d'`. */
  period?: string | number;
  /**
   * A container younger than this is never removed: it may be one the driver is creating right
   * now and has not registered yet. Default `'5m'`; at most `'365d'`.
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
   * crashed run left, and against misjudging a container made a moment ago). Default: `creationGrace`;
   * at most `'365d'`.
   */
  orphanGrace?: string | number;
  /**
   * Whether sweeps also remove groups' networks and shared volumes that are orphans: this owner's
   * whose group is not live (past `creationGrace`), and, with `orphans`, other owners' whose group
   * has no container left and whose owner process is gone (past `orphanGrace`). Two more list calls
   * a sweep. Default true. (Infrastructure containers are judged either way: see `liveGroupIds`.)
   */
  groups?: boolean;
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
  readonly groups: boolean;
  readonly removeConcurrency: number;
}

/** Validates the reconciler's options once (see `optionsResolver`); `fieldPrefix` is e.g. `reconcile.` in the agent's configuration. */
export const resolveDanglingReconcilerOptions: OptionsResolver<DanglingReconcilerOptions, ResolvedDanglingReconcilerOptions> = optionsResolver(schema, (o) => ({
  enabled: o.enabled,
  periodMs: o.period,
  creationGraceMs: o.creationGrace,
  dryRun: o.dryRun,
  orphans: o.orphans,
  orphanGraceMs: o.orphanGrace ?? o.creationGrace,
  groups: o.groups,
  removeConcurrency: o.removeConcurrency,
}));
