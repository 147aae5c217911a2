import { z } from 'zod';
import { parseOptions } from '../common/validation.js';

const schema = z
  .object({
    imageBudgetMaxRemovals: z.number().int('must be a whole number').min(1, 'must be at least 1').max(1000, 'must be at most 1000').default(10),
    imageBudgetRemovalsPerSecond: z.number().positive('must be more than 0').max(1000, 'must be at most 1000').default(2),
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
}

/** The validated, defaulted, frozen options. */
export interface ResolvedPrunerOptions {
  readonly imageBudgetMaxRemovals: number;
  /** The pause between two removals while enforcing the budget: 1000 / removals per second. */
  readonly imageBudgetRemovalIntervalMs: number;
}

/** Validates the pruner's options once; a ValidationError names every field at fault, under `fieldPrefix`. */
export function resolvePrunerOptions(input: PrunerOptions = {}, fieldPrefix = ''): ResolvedPrunerOptions {
  const data = parseOptions(schema, input, fieldPrefix);
  return Object.freeze({
    imageBudgetMaxRemovals: data.imageBudgetMaxRemovals,
    imageBudgetRemovalIntervalMs: 1000 / data.imageBudgetRemovalsPerSecond,
  });
}
