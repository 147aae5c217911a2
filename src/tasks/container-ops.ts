import { BerthError, isBerthError } from '../common/errors.js';
import { LABELS } from '../common/labels.js';
import type { Logger } from '../common/logger.js';
import { retry } from '../common/retry.js';
import type { Engine } from '../engine/engine.js';
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
  | 'streamStats'
  | 'exec'
  | 'pauseContainer'
  | 'unpauseContainer'
  | 'openContainerEvents'
  | 'openLabelledContainerEvents'
  | 'listContainers'
  | 'deadlines'
>;

/** How hard berth tries when the engine fails in ways that may have left work done. */
export interface RetryPolicy {
  attempts: number;
  initialDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = Object.freeze({ attempts: 5, initialDelayMs: 100, maxDelayMs: 2000 });

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
  engine: ContainerEngine,
  plan: CreatePlan,
  identity: TaskIdentity,
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
          if (!isBerthError(error, 'BERTH_ENGINE_CONFLICT')) throw error;
          return { containerId: await adoptOwnContainer(engine, plan.name, identity, signal), adopted: true };
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
    if (!isBerthError(error, 'BERTH_NAME_CONFLICT')) {
      await removeQuietly(engine, plan.name, policy, logger, identity.taskId);
    }
    throw error;
  }
}

async function adoptOwnContainer(engine: ContainerEngine, name: string, identity: TaskIdentity, signal?: AbortSignal): Promise<string> {
  const existing = await engine.inspectContainer(name, { signal });
  const isOurs =
    existing.labels[LABELS.managed] === 'true' &&
    existing.labels[LABELS.taskId] === identity.taskId &&
    existing.labels[LABELS.ownerId] === identity.ownerId;
  if (!isOurs) {
    throw new BerthError('BERTH_NAME_CONFLICT', `a container named ${name} exists and does not belong to task ${identity.taskId} of ${identity.ownerId}`, {
      context: { name, containerId: existing.id, taskId: identity.taskId },
    });
  }
  return existing.id;
}

/**
 * Starts a container, idempotently: "already started" is success, and after an ambiguous failure an
 * inspect decides: a container that is running, or that ran and exited, was started.
 */
export async function startIdempotent(engine: ContainerEngine, containerId: string, policy: RetryPolicy, logger: Logger, signal?: AbortSignal): Promise<void> {
  await retry(
    async () => {
      try {
        await engine.startContainer(containerId, { signal });
      } catch (error) {
        if (!isAmbiguousFailure(error)) throw error;
        const state = await engine.inspectContainer(containerId, { signal }).catch(() => undefined);
        if (state && (state.running || state.paused || state.startedAt !== undefined)) return;
        throw error;
      }
    },
    {
      ...policy,
      signal,
      shouldRetry: isAmbiguousFailure,
      onRetry: (error, attempt) => logger.warn({ containerId, attempt, code: codeOf(error) }, 'start failed; retrying'),
    },
  );
}

/**
 * Force-removes a container with its anonymous volumes; not-found is success; transient failures
 * are retried. Each attempt has the engine's write deadline; `signal` ends the whole (BERTH_CANCELLED).
 */
export async function removeContainer(engine: ContainerEngine, idOrName: string, policy: RetryPolicy, signal?: AbortSignal): Promise<'removed' | 'absent'> {
  return retry(() => engine.removeContainer(idOrName, { signal }), { ...policy, signal, shouldRetry: isAmbiguousFailure });
}

async function removeQuietly(engine: ContainerEngine, name: string, policy: RetryPolicy, logger: Logger, taskId: string): Promise<void> {
  try {
    await removeContainer(engine, name, policy);
  } catch (error) {
    // The create error is the one worth reporting; this one is logged so the leak is visible.
    logger.error({ taskId, name, code: codeOf(error) }, 'could not remove a possibly created container after a failed create');
  }
}

export function codeOf(error: unknown): string {
  return isBerthError(error) ? error.code : 'UNKNOWN';
}
