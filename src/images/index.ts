/** The image coordinator: pull sharing, pull policy, reference counting, delayed removal, registry auth. */
export {
  ImageCoordinator,
  type AcquireOptions,
  type AcquiredImage,
  type ImageCoordinatorInit,
  type ImageCoordinatorSnapshot,
  type ImageEngine,
  type ImageSnapshot,
  type PullPolicy,
  type PullSnapshot,
} from './coordinator.js';
export {
  IMAGE_EVENTS_CHANNEL,
  type ImageCoordinatorEvents,
  type ImageEventType,
  type ImageKeptEvent,
  type ImageRemovalFailedEvent,
  type ImageRemovedEvent,
  type PullFinishedEvent,
  type PullProgressNotice,
  type PullSharedEvent,
  type PullStartedEvent,
} from './events.js';
export { resolveImageCoordinatorOptions, type ImageCoordinatorOptions, type ResolvedImageCoordinatorOptions } from './options.js';
export { classifyPullFailure, runPull, type PullEngine, type PullPhase, type PullProgress, type RunPullOptions } from './pull.js';
export {
  DEFAULT_TAG,
  DOCKER_HUB,
  normalizeRegistryHost,
  parseImageReference,
  pullArguments,
  type ImageReference,
} from './reference.js';
export {
  DOCKER_HUB_SERVER_ADDRESS,
  dockerConfigDirFromEnv,
  RegistryAuthResolver,
  serverAddressFor,
  type AuthSource,
  type RegistryAuthResolverOptions,
  type RegistryCredentials,
  type ResolvedRegistryAuth,
} from './auth.js';
