/** Prune with Moby's filters, scoped to what berth created, and the image cache budget. */
export {
  Pruner,
  type PruneEngine,
  type PruneOptions,
  type PrunerInit,
} from './pruner.js';
export {
  ACCEPTED_PRUNE_FILTERS,
  engineLabelFilters,
  formatPruneFilters,
  matchesPruneFilters,
  NO_PRUNE_FILTERS,
  parsePruneFilters,
  parseUntil,
  type FilterSubject,
  type LabelCondition,
  type PruneFilterInput,
  type PruneFilterName,
  type PruneFilters,
} from './filters.js';
export {
  canonicalImageName,
  isExemptImage,
  isSharedImage,
  mergeBerthImages,
  parseExemptImages,
  type BerthImage,
  type BerthImageFacts,
  type ExemptImages,
  type PruneImageSource,
} from './images.js';
export { resolvePrunerOptions, type PrunerOptions, type ResolvedPrunerOptions } from './options.js';
export {
  PRUNE_EVENTS_CHANNEL,
  PRUNE_KINDS,
  type BudgetRemoval,
  type ImageBudgetReport,
  type KeptObject,
  type PrunedImages,
  type PrunerEvents,
  type PrunedKind,
  type PrunedNamedKind,
  type PruneKind,
  type PruneRemovedEvent,
  type PruneReport,
} from './report.js';
export { selectBudgetVictims, type BudgetCandidate, type BudgetSelection, type ImageBudgetOptions } from './image-budget.js';
