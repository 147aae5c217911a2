/**
 * berth: run tasks in Docker containers from Node.js, with clear end states and nothing leaked.
 *
 * ```ts
 * import { Engine, TaskDriver, runToEnd } from 'berth';
 * const driver = new TaskDriver({ engine: new Engine() });
 * const { end } = await runToEnd(driver, { image: 'busybox', command: ['echo', 'hi'] }, { stdout: process.stdout });
 * ```
 */
export { BerthError, ValidationError, ERROR_CODES, isBerthError } from './common/errors.js';
export type { ErrorCode, FieldIssue } from './common/errors.js';
export { LABELS, LABEL_PREFIX, containerNameForTask, parseContainerName, type ContainerNameParts } from './common/labels.js';
export type { Logger } from './common/logger.js';
export { parseBytes, parseDurationMs, DURATION_LIMITS, MAX_SIZE_BYTES } from './common/units.js';
export type { DurationBounds, SizeBounds } from './common/units.js';
export { Engine, DEFAULT_DEADLINES, MINIMUM_API_VERSION } from './engine/engine.js';
export type { EngineOptions, EngineDeadlines, CallOptions, ExecCallOptions, ExecOptions, ExecSession } from './engine/engine.js';
export { engineOptionsFromEnv, engineOptionsOf, parseDockerHost } from './engine/connect.js';
export type { EngineEndpoint, EngineTls } from './engine/connect.js';
export { resolveEngine, listContexts } from './engine/contexts.js';
export type { EngineSelection, EngineSource, ContextEntry } from './engine/contexts.js';
export type { EngineFacts, EngineKind } from './engine/detect.js';
export type { StatsSample, ContainerInspect, ContainerEvent, HealthStatus, HealthProbe, StorageDriverInfo, PublishedPort } from './engine/types.js';
export { resolveTaskSpec, taskSpecSchema, toCreatePlan, HEALTHCHECK_DEFAULTS, SPEC_BOUNDS, ULIMIT_NAMES, isNamespacedSysctl } from './spec/index.js';
export type { TaskSpec, ResolvedTaskSpec, SpecPolicy, MountSpec, ResolvedHealthcheck, HealthcheckTest, SeccompSpec, UlimitSpec, DeviceSpec, PortSpec, NetworkAttachmentSpec } from './spec/index.js';
export { REDACTED } from './spec/index.js';
export type { RegistryAuthSpec, InlineRegistryAuth, RegistryAuthRef } from './spec/index.js';
export { ImageCoordinator, parseImageReference, dockerConfigDirFromEnv, IMAGE_EVENTS_CHANNEL } from './images/index.js';
export type { AcquireOptions, AcquiredImage, ImageCoordinatorOptions, ImageCoordinatorEvents, ImageReference, PullPolicy, RegistryCredentials } from './images/index.js';
export { TaskDriver, TaskHandle, runToEnd, execInTask, findRunningTaskContainer, classifyExit, describeEndState, TASK_STATES, hasEnded, TASK_PHASE_CHANNEL, DEFAULT_RELIST_PERIOD_MS, DEFAULT_ENGINE_SOCKET } from './tasks/index.js';
export type { TaskDriverOptions, StartOptions, ImageProvider, TaskExecEngine, TaskRef, RunToEndOptions, RunResult, EndState, EndKind, TaskState, TaskPhase, PhaseChange, BindSourcePolicy, ResolvedBindSource } from './tasks/index.js';
export { collectArtifacts, copyOut } from './tasks/index.js';
export type { ArtifactsRecord, ArtifactSink, ArchiveEngine } from './tasks/index.js';
export { WarmPools, poolKeyOf, notPoolableReason, execArgv, POOL_NAME, POOL_MAX_SIZE } from './pools/index.js';
export type { PoolDefinition, StartPath, ColdReason, PoolEvent, PoolSnapshot } from './pools/index.js';
export { GroupRunner, GroupHandle, planGroup, groupDemand, GROUP_STATES, BUILTIN_INFRA_IMAGE, GROUP_EVENTS_CHANNEL } from './groups/index.js';
export type { GroupRunnerOptions, GroupRunnerEngine, GroupStartOptions, GroupEvents, GroupStateChange, GroupTaskStarted, GroupTaskEnded, TaskOutputSinks, GroupEnd, GroupState, GroupDemand, MemberStatus } from './groups/index.js';
export { resolveGroupSpec, groupSpecSchema, LIFECYCLES, DEFAULT_SHARED_DIR } from './spec/group.js';
export type { GroupSpec, ResolvedGroupSpec, ResolvedGroupTask, Lifecycle } from './spec/group.js';
