import { setTimeout as delay } from 'node:timers/promises';
import { BerthError, cancelledError, codeOf, isBerthError } from '../common/errors.js';
import { LABELS } from '../common/labels.js';
import type { Logger } from '../common/logger.js';
import { retry } from '../common/retry.js';
import { engineCertainlyDidNotAct } from '../engine/classify.js';
import type { Engine } from '../engine/engine.js';
import type { ContainerSummary } from '../engine/types.js';
import type { CreatePlan, TaskIdentity } from '../spec/translate.js';

export type ContainerEngine = Pick<
  Engine,
  | 'createContainer'
  | 'startContainer'
  | 'inspectContainer'
  | 'waitContainer'
  | 'stopContainer'
  | 'killContainer'
  | 'removeContainer'
  | 'attachContainer'
  | 'containerLogs'
  | 'streamStats'
  | 'getArchive'
  | 'exec'
  | 'pauseContainer'
  | 'unpauseContainer'
  | 'resizeContainer'
  | 'openContainerEvents'
  | 'openLabelledContainerEvents'
  | 'listContainers'
  | 'putArchive'
  | 'connectNetwork'
  | 'deadlines'
>;

/**
 * Who a create is for: a task's start (its TaskIdentity), or a warm pool's container (`poolName`
 * set): a pool container carries no task id (a task takes it after its create), so its start
 * attempt, owner and pool name say it is this create's. `taskId` then names the slot in logs only.
 */
export type CreateIdentity = Pick<TaskIdentity, 'taskId' | 'ownerId' | 'startAttempt'> & { poolName?: string };

/** How hard berth tries when the engine fails in ways that may have left work done. */
export interface RetryPolicy {
  attempts: number;
  initialDelayMs: number;
  maxDelayMs: number;
  /** A removal's attempts, when they differ from `attempts` (see REMOVAL_DEFAULT_ATTEMPTS). */
  removalAttempts?: number;
}

export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = Object.freeze({ attempts: 5, initialDelayMs: 100, maxDelayMs: 2000, removalAttempts: 10 });

/** Failures after which the engine may have acted anyway: a retry must expect to find the work done. */
export function isAmbiguousFailure(error: unknown): boolean {
  return isBerthError(error) && error.retryable;
}

/**
 * Creates the task's container, idempotently. A name conflict with a container of the same task and
 * owner is adopted (an earlier attempt, whose answer was lost, created it); a conflict with anyone
 * else is refused. If creation still fails, whatever may exist under the name is force-removed
 * before the error is reported, so a failed create never leaks a container.
 */
export async function createIdempotent(
  engine: Pick<ContainerEngine, 'createContainer' | 'inspectContainer' | 'removeContainer'>,
  plan: CreatePlan,
  identity: CreateIdentity,
  policy: RetryPolicy,
  logger: Logger,
  signal?: AbortSignal,
  /** Told when an attempt's request may still reach the engine later (it timed out or lost its connection). */
  onRequestInFlight: () => void = () => undefined,
): Promise<{ containerId: string; adopted: boolean }> {
  try {
    return await retry(
      async () => {
        try {
          return { containerId: await engine.createContainer(plan.name, plan.body, { signal }), adopted: false };
        } catch (error) {
          if (isBerthError(error, 'BERTH_ENGINE_TIMEOUT') || isBerthError(error, 'BERTH_ENGINE_UNAVAILABLE')) onRequestInFlight();
          if (isBerthError(error, 'BERTH_ENGINE_CONFLICT')) return { containerId: await adoptOwnContainer(engine, plan.name, identity, policy, signal), adopted: true };
          // A create whose answer was lost may have made the container: asked first, so that faults on
          // the creates sent again (each a new chance of one) cannot spend the attempts of a task whose
          // container exists.
          if (isAmbiguousFailure(error) && !engineCertainlyDidNotAct(error)) {
            const made = await ownContainerUnder(engine, plan.name, identity, policy, signal);
            if (made !== undefined) return { containerId: made, adopted: true };
          }
          throw error;
        }
      },
      {
        ...policy,
        signal,
        shouldRetry: isAmbiguousFailure,
        onRetry: (error, attempt) => logger.warn({ taskId: identity.taskId, attempt, code: codeOf(error) }, 'create failed; retrying'),
      },
    );
  } catch (error) {
    if (!isBerthError(error, 'BERTH_NAME_CONFLICT')) await removeOwnQuietly(engine, plan.name, identity, policy, logger);
    throw error;
  }
}

/**
 * Connects a created container to the plan's further named networks (the engine takes one at
 * create), between its create and its start, so that the task's first instruction finds every
 * endpoint in place. Idempotent (an endpoint that exists counts as done), so a create that was
 * retried or adopted, or a recovered container that never started, is connected again safely.
 * Ambiguous failures are retried.
 */
export async function connectNetworks(engine: Pick<ContainerEngine, 'connectNetwork'>, containerId: string, plan: Pick<CreatePlan, 'connectNetworks'>, policy: RetryPolicy, signal?: AbortSignal): Promise<void> {
  for (const network of plan.connectNetworks) {
    await retry(() => engine.connectNetwork(network.name, containerId, network.aliases, { signal }), { ...policy, signal, shouldRetry: isAmbiguousFailure });
  }
}

/**
 * Of several containers of one task of one owner (one an earlier berth named `berth-<task id>`, one
 * named today): the running one, else the newest. Undefined for none.
 */
export function preferredContainer<T extends Pick<ContainerSummary, 'state' | 'createdAt'>>(rows: readonly T[]): T | undefined {
  return [...rows].sort((a, b) => Number(b.state === 'running') - Number(a.state === 'running') || b.createdAt.getTime() - a.createdAt.getTime())[0];
}

/** Whether a container was made by this very start (owner, task or pool, and attempt). */
function isThisStarts(labels: Readonly<Record<string, string>>, identity: CreateIdentity): boolean {
  const isItsOwn = identity.poolName === undefined ? labels[LABELS.taskId] === identity.taskId : labels[LABELS.pool] === identity.poolName && labels[LABELS.taskId] === undefined;
  return labels[LABELS.managed] === 'true' && isItsOwn && labels[LABELS.ownerId] === identity.ownerId && labels[LABELS.startAttempt] === identity.startAttempt;
}

async function adoptOwnContainer(engine: Pick<ContainerEngine, 'inspectContainer'>, name: string, identity: CreateIdentity, policy: RetryPolicy, signal?: AbortSignal): Promise<string> {
  let existing;
  try {
    // The inspect that decides is retried on its own: were its failures to spend the create's
    // attempts, a few faults after one lost create would fail a task whose container exists.
    existing = await retry(() => engine.inspectContainer(name, { signal }), { ...policy, signal, shouldRetry: isAmbiguousFailure });
  } catch (error) {
    // The engine holds the name for a create it has not finished (an earlier attempt of ours, or
    // another start's): ask again, when the container exists and its labels can decide.
    if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) {
      throw new BerthError('BERTH_ENGINE_CONFLICT', `the name ${name} is held by a create the engine has not finished`, { retryable: true, cause: error, context: { name } });
    }
    throw error;
  }
  if (!isThisStarts(existing.labels, identity)) {
    // As docker words its own name conflict: what holds the name, and how to free it.
    const sameTask = existing.labels[LABELS.managed] === 'true' && existing.labels[LABELS.taskId] === identity.taskId && existing.labels[LABELS.ownerId] === identity.ownerId;
    const holder = sameTask
      ? `task ${identity.taskId} of ${identity.ownerId} already has a container (${name}, ${existing.id.slice(0, 12)}, ${existing.status})`
      : `the name ${name} is in use by container ${existing.id.slice(0, 12)}, which is not task ${identity.taskId} of ${identity.ownerId}`;
    throw new BerthError('BERTH_NAME_CONFLICT', `${holder}; remove it (docker rm -f ${name}) or choose another task id`, {
      context: { name, containerId: existing.id, taskId: identity.taskId, ownerId: identity.ownerId },
    });
  }
  return existing.id;
}

/**
 * The container of this very start under `name`, when the engine has it; undefined when it has none,
 * another's is there, or the engine does not say (the caller's create is then sent again and decides).
 */
async function ownContainerUnder(engine: Pick<ContainerEngine, 'inspectContainer'>, name: string, identity: TaskIdentity, policy: RetryPolicy, signal?: AbortSignal): Promise<string | undefined> {
  try {
    const existing = await retry(() => engine.inspectContainer(name, { signal }), { ...policy, signal, shouldRetry: isAmbiguousFailure });
    return isThisStarts(existing.labels, identity) ? existing.id : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Starts a container, idempotently: "already started" is success, and after an ambiguous failure an
 * inspect decides: a container that is running, or that ran and exited, was started.
 *
 * Start is sent again only when an inspect that answered shows the container never started. A
 * container that ran and exited is not "already started" to the engine: a second start runs it
 * again, and its output appears twice in its log. So when the inspect itself fails, it is the
 * inspect that is retried, never the start; if it never answers, the start's error is reported.
 */
export async function startIdempotent(engine: Pick<ContainerEngine, 'startContainer' | 'inspectContainer'>, containerId: string, policy: RetryPolicy, logger: Logger, signal?: AbortSignal): Promise<void> {
  let delayMs = policy.initialDelayMs;
  for (let attempt = 1; ; attempt++) {
    try {
      await engine.startContainer(containerId, { signal });
      return;
    } catch (error) {
      if (!isAmbiguousFailure(error) || signal?.aborted) throw error;
      const state = await retry(() => engine.inspectContainer(containerId, { signal }), { ...policy, signal, shouldRetry: isAmbiguousFailure }).catch(
        (inspectError: unknown) => {
          logger.warn({ containerId, code: codeOf(inspectError) }, 'start failed and the container could not be inspected; not starting it again');
          throw error;
        },
      );
      if (hasStarted(state)) return;
      if (attempt >= policy.attempts) throw error;
      logger.warn({ containerId, attempt, code: codeOf(error) }, 'start failed; retrying');
      await sleep(delayMs * (0.5 + Math.random() / 2), signal);
      delayMs = Math.min(delayMs * 2, policy.maxDelayMs);
    }
  }
}

/** Whether an inspected container has ever started: running, paused, or ran and exited. */
function hasStarted(state: { running: boolean; paused: boolean; startedAt?: Date }): boolean {
  return state.running || state.paused || state.startedAt !== undefined;
}

async function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await delay(ms, undefined, { signal });
  } catch {
    throw cancelledError('start retry', signal?.reason);
  }
}

/**
 * A removal's attempts when the caller did not set `retry.attempts`. It is idempotent (not-found is
 * success) and giving up leaks the container, so it is worth more attempts than a call whose repeat
 * could act twice: after an answer lost on its way back, the next attempt most often finds the
 * container gone. A caller that sets `retry.attempts` gets exactly that for removals too.
 */
export const REMOVAL_DEFAULT_ATTEMPTS = 10;

/** `policy` completed with its removal attempts: `retry.attempts` when the caller set it, else REMOVAL_DEFAULT_ATTEMPTS. */
export function withRemovalAttempts(policy: RetryPolicy, given: Partial<RetryPolicy> | undefined): RetryPolicy {
  return { ...policy, removalAttempts: given?.removalAttempts ?? given?.attempts ?? Math.max(policy.attempts, REMOVAL_DEFAULT_ATTEMPTS) };
}

/**
 * Force-removes a container with its anonymous volumes; not-found is success; transient failures
 * are retried (`policy.removalAttempts`, else `policy.attempts`, in all). Each attempt has the
 * engine's write deadline; `signal` ends the whole (BERTH_CANCELLED).
 */
export async function removeContainer(engine: Pick<ContainerEngine, 'removeContainer'>, idOrName: string, policy: RetryPolicy, signal?: AbortSignal): Promise<'removed' | 'absent'> {
  const attempts = policy.removalAttempts ?? policy.attempts;
  return retry(() => engine.removeContainer(idOrName, { signal }), { ...policy, attempts, signal, shouldRetry: isAmbiguousFailure });
}

/**
 * After a failed create: removes what this start may have made under the name, and nothing else (a
 * container another start made under the same name is not ours to remove).
 */
async function removeOwnQuietly(engine: Pick<ContainerEngine, 'inspectContainer' | 'removeContainer'>, name: string, identity: CreateIdentity, policy: RetryPolicy, logger: Logger): Promise<void> {
  const taskId = identity.taskId;
  try {
    const existing = await retry(() => engine.inspectContainer(name), { ...policy, shouldRetry: isAmbiguousFailure });
    if (isThisStarts(existing.labels, identity)) await removeContainer(engine, existing.id, policy);
  } catch (error) {
    if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return;
    // The create error is the one worth reporting; this one is logged so the leak is visible.
    logger.error({ taskId, name, code: codeOf(error) }, 'could not remove a possibly created container after a failed create');
  }
}

export { codeOf } from '../common/errors.js';
