export { resolveTaskSpec, resolveAcceptedTaskSpec, taskSpecSchema, DEFAULT_SPEC_POLICY, PROPAGATION, HEALTHCHECK_DEFAULTS, HEALTHCHECK_MINIMUM_MS, HEALTHCHECK_MAXIMUM_MS, SPEC_BOUNDS, ULIMIT_NAMES, isNamespacedSysctl, sysctlAllowed } from './schema.js';
export type { CountBounds } from './schema.js';
export { parseImageReference, MAX_TAG_LENGTH, MAX_NAME_LENGTH } from './reference.js';
export type { ImageReference } from './reference.js';
export type { TaskSpec, ResolvedTaskSpec, MountSpec, Propagation, SpecPolicy, ResolvedHealthcheck, HealthcheckTest, SeccompSpec, UlimitSpec, UlimitName, DeviceSpec, PortSpec, NetworkAttachmentSpec } from './schema.js';
export { toCreatePlan, toHealthcheck, CPU_PERIOD_US } from './translate.js';
export type { CreatePlan, TaskIdentity } from './translate.js';
export { REDACTED, registryMismatch, separateRegistrySecrets, restoreRegistrySecrets, isRegistryAuthRef } from './registry-auth.js';
export type { RegistryAuthSpec, InlineRegistryAuth, RegistryAuthRef, RegistryAuthPolicy } from './registry-auth.js';
