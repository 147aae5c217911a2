export { WarmPools, POOL_NAME, POOL_MAX_SIZE } from './pools.js';
export type { PoolEngine, WarmPoolsOptions, PoolClaim, ClaimResult } from './pools.js';
export { poolKeyOf, matchesPool, envFits, notPoolableReason, execArgv, execEnv, poolContainerPlan, HOLDER_TARGET } from './key.js';
export type { ImageRunConfig, PoolContainerIdentity } from './key.js';
export { ensureHolder, defaultHolderDir, HOLDER_PROGRAM, HOLDER_DIGEST } from './holder.js';
export type { PoolDefinition, StartPath, ColdReason, PoolEvent, PoolSnapshot } from './types.js';
