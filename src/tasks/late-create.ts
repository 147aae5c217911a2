import { setTimeout as delay } from 'node:timers/promises';
import { isBerthError } from '../common/errors.js';
import { LABELS } from '../common/labels.js';
import type { Logger } from '../common/logger.js';
import type { TaskIdentity } from '../spec/translate.js';
import { codeOf, type ContainerEngine } from './container-ops.js';

/** How often a watched name is checked. */
const CHECK_INTERVAL_MS = 250;

/**
 * A create that timed out or lost its connection may still reach a wedged engine after berth has
 * given up, retried, and even removed the task: the engine then creates a container nobody tracks.
 * For a bounded window after such a task is gone, its name is watched and a container carrying the
 * task's labels is removed. (The agent's reconciler catches what arrives later still.)
 */
export class LateCreateGuard {
  readonly #watches = new Set<Promise<void>>();

  constructor(
    private readonly engine: ContainerEngine,
    private readonly logger: Logger,
  ) {}

  watch(name: string, identity: TaskIdentity, windowMs: number): void {
    const watch = this.#watch(name, identity, windowMs).finally(() => this.#watches.delete(watch));
    this.#watches.add(watch);
  }

  /** Resolves when every watch window has closed. */
  async settled(): Promise<void> {
    while (this.#watches.size > 0) await Promise.all([...this.#watches]);
  }

  async #watch(name: string, identity: TaskIdentity, windowMs: number): Promise<void> {
    const deadline = Date.now() + windowMs;
    while (Date.now() < deadline) {
      await delay(Math.min(CHECK_INTERVAL_MS, Math.max(0, deadline - Date.now())));
      try {
        const found = await this.engine.inspectContainer(name);
        // Only the timed-out create of this very start: a later start of the same task id is not ours to remove.
        if (found.labels[LABELS.taskId] === identity.taskId && found.labels[LABELS.ownerId] === identity.ownerId && found.labels[LABELS.startAttempt] === identity.startAttempt) {
          await this.engine.removeContainer(found.id);
          this.logger.warn({ taskId: identity.taskId, containerId: found.id }, 'removed a container created late by a timed-out create');
        }
      } catch (error) {
        if (!isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) this.logger.debug({ name, code: codeOf(error) }, 'late-create check failed');
      }
    }
  }
}
