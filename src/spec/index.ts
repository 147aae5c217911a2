export { resolveTaskSpec, taskSpecSchema, DEFAULT_SPEC_POLICY, PROPAGATION } from './schema.js';
export type { TaskSpec, ResolvedTaskSpec, MountSpec, Propagation, SpecPolicy } from './schema.js';
export { toCreatePlan, CPU_PERIOD_US } from './translate.js';
export type { CreatePlan, TaskIdentity } from './translate.js';
