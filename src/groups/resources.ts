/**
 * A group's engine objects: its shared volume, its private network and its infrastructure
 * container, made idempotently (a create whose answer was lost is adopted by the start that sent
 * it, and only by it) and removed in the reverse order. A failed creation removes what it made, so
 * nothing leaks; what the engine would not remove yet (a network or volume still in use) is named
 * to the caller, and the reconciler knows every object by its labels.
 */
import { BerthError, codeOf, isBerthError, ValidationError, type FieldIssue } from '../common/errors.js';
import { LABELS, ROLES } from '../common/labels.js';
import type { Logger } from '../common/logger.js';
import { retry } from '../common/retry.js';
import type { Engine } from '../engine/engine.js';
import type { ResolvedGroupSpec } from '../spec/group.js';
import { isAmbiguousFailure, removeContainer, startIdempotent, type RetryPolicy } from '../tasks/container-ops.js';
import { groupObjectLabels, groupObjectNames, toInfraCreatePlan, type GroupIdentity, type GroupObjectNames } from './infra-plan.js';

export type GroupEngine = Pick<
  Engine,
  | 'createVolume'
  | 'removeVolume'
  | 'createNetwork'
  | 'connectNetwork'
  | 'removeNetwork'
  | 'createContainer'
  | 'inspectContainer'
  | 'startContainer'
  | 'removeContainer'
> &
  Partial<Pick<Engine, 'inspectNetwork'>>;

export interface GroupResources {
  readonly infraContainerId: string;
  readonly names: GroupObjectNames;
}

export interface GroupResourceOptions {
  policy: RetryPolicy;
  logger: Logger;
  signal?: AbortSignal;
}

/** Whether labels are those of `identity`'s group object in that role (any start of the group when `anyStart`). */
function isOurs(labels: Readonly<Record<string, string>>, identity: GroupIdentity, role: string, anyStart = false): boolean {
  return (
    labels[LABELS.managed] === 'true' &&
    labels[LABELS.groupId] === identity.groupId &&
    labels[LABELS.ownerId] === identity.ownerId &&
    labels[LABELS.role] === role &&
    (anyStart || labels[LABELS.startAttempt] === identity.startAttempt)
  );
}

function heldBy(what: string, name: string, identity: GroupIdentity): BerthError {
  return new BerthError('BERTH_GROUP_INFRA', `the ${what} name ${name} is held by an object that is not group ${identity.groupId} of ${identity.ownerId}; remove it or choose another group id`, {
    context: { name, groupId: identity.groupId, ownerId: identity.ownerId },
  });
}

/**
 * Creates (or adopts) the group's volume, network and infrastructure container, connects the
 * container's further networks and starts it. `image` must exist in the engine (the built-in one
 * from ensureBuiltinInfraImage, or a configured one the caller pulled).
 */
export async function createGroupResources(engine: GroupEngine, spec: ResolvedGroupSpec, identity: GroupIdentity, image: string, options: GroupResourceOptions): Promise<GroupResources> {
  const names = groupObjectNames(spec, identity);
  const { policy, logger, signal } = options;
  const again = <T>(work: () => Promise<T>): Promise<T> => retry(work, { ...policy, signal, shouldRetry: isAmbiguousFailure });
  await checkNetworksExist(engine, spec, signal);
  // Objects found under the group's names that are not the group's: never removed by the clean-up below.
  const foreign = new Set<'volume' | 'network' | 'container'>();
  let infraContainerId: string | undefined;
  try {
    if (names.volume !== undefined) {
      const volume = names.volume;
      const made = await again(() => engine.createVolume(volume, groupObjectLabels(identity, ROLES.sharedDir), { signal }));
      if (!isOurs(made.labels, identity, ROLES.sharedDir, true)) {
        foreign.add('volume');
        throw heldBy('volume', volume, identity);
      }
    }
    if (names.network !== undefined) {
      const network = names.network;
      const made = await again(() => engine.createNetwork(network, { labels: groupObjectLabels(identity, ROLES.network) }, { signal }));
      if (!isOurs(made.labels, identity, ROLES.network, true)) {
        foreign.add('network');
        throw heldBy('network', network, identity);
      }
    }
    const plan = toInfraCreatePlan(spec, identity, image);
    infraContainerId = await again(async () => {
      try {
        return await engine.createContainer(plan.name, plan.body, { signal });
      } catch (error) {
        if (!isBerthError(error, 'BERTH_ENGINE_CONFLICT')) throw error;
        // An earlier attempt's create landed: adopt it if it is this start's, else the name is not ours.
        const existing = await engine.inspectContainer(plan.name, { signal }).catch((inspectError: unknown) => {
          if (isBerthError(inspectError, 'BERTH_ENGINE_NOT_FOUND')) throw new BerthError('BERTH_ENGINE_CONFLICT', `the name ${plan.name} is held by a create the engine has not finished`, { retryable: true, cause: inspectError });
          throw inspectError;
        });
        if (!isOurs(existing.labels, identity, ROLES.infra)) {
          foreign.add('container');
          throw heldBy('container', plan.name, identity);
        }
        return existing.id;
      }
    });
    const id = infraContainerId;
    for (const network of plan.connectNetworks) await again(() => engine.connectNetwork(network.name, id, network.aliases, { signal }));
    await startIdempotent(engine, id, policy, logger, signal);
    return { infraContainerId: id, names };
  } catch (error) {
    logger.warn({ groupId: identity.groupId, code: codeOf(error) }, 'the group\'s infrastructure could not be made; removing what was made');
    await removeOwnLeftovers(engine, names, identity, infraContainerId, foreign, policy, logger);
    throw error;
  }
}

/**
 * After a failed creation: removes what this start may have made, and nothing that is not the
 * group's. The infrastructure container goes by its id when the create answered; by its name only
 * when the object under that name carries this start's labels (a create whose answer was lost).
 */
async function removeOwnLeftovers(
  engine: GroupEngine,
  names: GroupObjectNames,
  identity: GroupIdentity,
  infraContainerId: string | undefined,
  foreign: ReadonlySet<'volume' | 'network' | 'container'>,
  policy: RetryPolicy,
  logger: Logger,
): Promise<void> {
  try {
    let container: string | undefined = infraContainerId;
    if (container === undefined && !foreign.has('container')) {
      const found = await retry(() => engine.inspectContainer(names.infraContainer), { ...policy, shouldRetry: isAmbiguousFailure }).catch((error: unknown) => {
        if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return undefined;
        throw error;
      });
      if (found !== undefined && isOurs(found.labels, identity, ROLES.infra)) container = found.id;
    }
    if (container !== undefined) await removeContainer(engine, container, policy);
    const { volume, network } = names;
    await removeGroupResources(
      engine,
      { infraContainer: names.infraContainer, ...(volume === undefined || foreign.has('volume') ? {} : { volume }), ...(network === undefined || foreign.has('network') ? {} : { network }) },
      { policy, logger, skipContainer: true },
    );
  } catch (error) {
    logger.error({ groupId: identity.groupId, code: codeOf(error) }, 'could not remove what a failed group creation made; the reconciler removes it by its labels');
  }
}

/**
 * A named network the group joins that the engine does not have is the group file's fault: said
 * before anything is made, naming the field, as a task's start says it (src/tasks/driver.ts).
 */
async function checkNetworksExist(engine: GroupEngine, spec: ResolvedGroupSpec, signal: AbortSignal | undefined): Promise<void> {
  const inspect = engine.inspectNetwork?.bind(engine);
  if (inspect === undefined || spec.network.mode === 'none') return;
  const issues: FieldIssue[] = [];
  for (const [i, network] of spec.network.networks.entries()) {
    try {
      await inspect(network.name, { signal });
    } catch (error) {
      if (!isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) throw error;
      issues.push({ field: `network.networks[${i}].name`, rule: `network ${network.name} does not exist in the engine; create it first (docker network create ${network.name})` });
    }
  }
  if (issues.length > 0) throw new ValidationError(issues);
}

/** What removeGroupResources could not remove yet (still in use, or the engine failed): for a later pass. */
export interface LeftoverGroupObjects {
  readonly network?: string;
  readonly volume?: string;
}

/**
 * Removes the group's infrastructure container, then its network and volume. Call it after every
 * task container of the group is removed: a task still holding the volume keeps it. Absent objects
 * count as removed. A network or volume the engine reports in use (or fails to remove) is returned,
 * not thrown: the reconciler finds it by its labels later. The container's removal failing throws.
 */
export async function removeGroupResources(
  engine: GroupEngine,
  names: GroupObjectNames,
  options: Omit<GroupResourceOptions, 'signal'> & { signal?: AbortSignal; /** @internal the caller removed the container itself. */ skipContainer?: boolean },
): Promise<LeftoverGroupObjects> {
  const { policy, logger, signal } = options;
  if (!options.skipContainer) await removeContainer(engine, names.infraContainer, policy, signal);
  const left: { network?: string; volume?: string } = {};
  const removeOr = async (kind: 'network' | 'volume', name: string, remove: () => Promise<'removed' | 'absent' | 'in-use'>): Promise<void> => {
    try {
      // An endpoint or a reference can outlive its container by a moment: a few tries.
      const outcome = await retry(
        async () => {
          const result = await remove();
          if (result === 'in-use') throw new BerthError('BERTH_ENGINE_CONFLICT', `${kind} ${name} is in use`, { retryable: true });
          return result;
        },
        { ...policy, signal, shouldRetry: isAmbiguousFailure },
      );
      logger.debug({ [kind]: name, outcome }, `group ${kind} removed`);
    } catch (error) {
      logger.warn({ [kind]: name, code: codeOf(error) }, `the group's ${kind} could not be removed yet; the reconciler removes it later`);
      left[kind] = name;
    }
  };
  if (names.network !== undefined) {
    const network = names.network;
    await removeOr('network', network, () => engine.removeNetwork(network, { signal }));
  }
  if (names.volume !== undefined) {
    const volume = names.volume;
    await removeOr('volume', volume, () => engine.removeVolume(volume, { signal }));
  }
  return left;
}
