import { z } from 'zod';
import { DURATION_LIMITS, type DurationBounds } from '../common/units.js';
import { booleanOption, countOption, durationOption, durationRule, optionsResolver, type OptionsResolver } from '../common/validation.js';

/** The bound of the orphan grace: an age compared with the clock. */
export const PRUNE_ORPHAN_GRACE_BOUNDS: DurationBounds = Object.freeze({ minMs: 0, maxMs: DURATION_LIMITS.longMs });

const schema = z
  .object({
    imageBudgetMaxRemovals: countOption({ min: 1, max: 1000 }).default(10),
    imageBudgetRemovalsPerSecond: z.number().positive('must be more than 0').max(1000, 'must be at most 1000').default(2),
    orphans: booleanOption().default(true),
    orphanGrace: durationOption(PRUNE_ORPHAN_GRACE_BOUNDS, durationRule('5m')).default(300_000),
  })
  .strict();

/** Options of the pruner as users write them. */
export interface PrunerOptions {
  /**
   * At most this many images removed by one `enforceImageBudget()` call; the next call goes on.
   * Bounds the work of one call, as Fn's image cleaner does. Default 10.
   */
  imageBudgetMaxRemovals?: number;
  /**
   * At most this many image removals a second while enforcing the budget: removing an image makes
   * the engine delete layers from disk, which competes with running tasks. Default 2.
   */
  imageBudgetRemovalsPerSecond?: number;
  /**
   * Whether a prune also removes orphans: containers of short-lived owners (`berth run`, library
   * drivers; any owner id) on this host whose owner process is gone, running or not, that match the
   * filters. Default true.
   */
  orphans?: boolean;
  /** An orphan younger than this is kept (reason `grace`). Default `'5m'`, as the reconciler's creation grace; the agent passes its `reconcile.orphanGrace`. At most `'365d'`. */
  orphanGrace?: string | number;
}

/** The validated, defaulted, frozen options. */
export interface ResolvedPrunerOptions {
  readonly imageBudgetMaxRemovals: number;
  /** The pause between two removals while enforcing the budget: 1000 / removals per second. */
  readonly imageBudgetRemovalIntervalMs: number;
  readonly orphans: boolean;
  readonly orphanGraceMs: number;
}

/** Validates the pruner's options once (see `optionsResolver`); a ValidationError names every field at fault, under `fieldPrefix`. */
export const resolvePrunerOptions: OptionsResolver<PrunerOptions, ResolvedPrunerOptions> = optionsResolver(schema, (o) => ({
  imageBudgetMaxRemovals: o.imageBudgetMaxRemovals,
  imageBudgetRemovalIntervalMs: 1000 / o.imageBudgetRemovalsPerSecond,
  orphans: o.orphans,
  orphanGraceMs: o.orphanGrace,
}));
