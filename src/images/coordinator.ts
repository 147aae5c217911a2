import { createHash } from 'node:crypto';
import { systemClock, type Clock, type TimerHandle } from '../common/clock.js';
import { asBerthError, BerthError, cancelledError, codeOf, isBerthError, messageOf, ValidationError } from '../common/errors.js';
import { IMAGES_CHANNEL } from '../common/diagnostics.js';
import { Events, type EventListener, type EventSource, type Unsubscribe } from '../common/events.js';
import { silentLogger, type Logger } from '../common/logger.js';
import { retry } from '../common/retry.js';
import type { Engine } from '../engine/engine.js';
import { RegistryAuthResolver, type RegistryCredentials } from './auth.js';
import type { ImageCoordinatorEvents, ImageEventType } from './events.js';
import { ResolutionLock } from './lock.js';
import { resolveImageCoordinatorOptions, type ImageCoordinatorOptions, type ResolvedImageCoordinatorOptions } from './options.js';
import { runPull, type PullProgress } from './pull.js';
import { parseImageReference, type ImageReference } from './reference.js';
import { removeBerthImage, type ImageRemoval } from './removal.js';

/** The engine calls the coordinator makes; a narrow port, so tests can script it. */
export type ImageEngine = Pick<Engine, 'openPull' | 'inspectImage' | 'removeImage'>;

/**
 * When an acquire pulls: `if-not-present` (inspect first, pull only when missing), `always` (pull,
 * which is quick when the registry has nothing newer), `never` (a missing image is an error).
 */
export type PullPolicy = 'if-not-present' | 'always' | 'never';

export interface AcquireOptions {
  /** Default `if-not-present`. */
  policy?: PullPolicy;
  /** The task's own registry credentials; they take precedence over the Docker configuration. */
  auth?: RegistryCredentials;
  /**
   * Stops this acquire waiting. A pull that other acquires share goes on for them; it is cancelled
   * only when every acquire waiting on it has gone.
   */
  signal?: AbortSignal;
  /** Progress of the pull this acquire waits on, from the moment it joined. */
  onProgress?: (progress: PullProgress) => void;
}

export interface AcquiredImage {
  /** The engine's image id (`sha256:…`), which the holder now holds. */
  imageId: string;
  ref: ImageReference;
  /** Whether a pull ran for this acquire (its own or one it shared). */
  pulled: boolean;
}

export interface ImageSnapshot {
  imageId: string;
  /** The names berth acquired the image by, as the engine knows them: `busybox:latest`. */
  refs: string[];
  holders: string[];
  /** Whether berth pulled it: only such images are ever removed. */
  pulledByBerth: boolean;
  /** When the image will be removed, if nobody holds it and a removal is scheduled. */
  removalDueAt?: Date;
}

export interface PullSnapshot {
  ref: string;
  phase: 'inspecting' | 'pulling';
  waiters: number;
  startedAt: Date;
}

/** The images berth holds and the pulls under way, for listing (the agent's images endpoint). */
export interface ImageCoordinatorSnapshot {
  images: ImageSnapshot[];
  pulls: PullSnapshot[];
}

export interface ImageCoordinatorInit {
  engine: ImageEngine;
  /** Validated once, here. */
  options?: ImageCoordinatorOptions;
  /** Default: silent. */
  logger?: Logger;
  /** Default: the system clock. Tests pass their own to fire removals and activity timeouts when they choose. */
  clock?: Pick<Clock, 'now' | 'setTimeout' | 'clearTimeout'>;
}

interface Waiter {
  readonly holderId: string;
  readonly onProgress: ((progress: PullProgress) => void) | undefined;
  settled: boolean;
  resolve(result: { imageId: string; pulled: boolean }): void;
  reject(error: unknown): void;
}

/** One resolution under way of a reference (with one set of task credentials): shared by every acquire of it. */
interface Resolution {
  readonly key: string;
  readonly ref: ImageReference;
  readonly credentials: RegistryCredentials | undefined;
  readonly controller: AbortController;
  readonly waiters: Set<Waiter>;
  readonly startedAt: number;
  phase: 'inspecting' | 'pulling';
  /** Set when an acquire with policy `always` joined: the resolution pulls even if the image is present. */
  mustPull: boolean;
  attempts: number;
}

interface ImageRecord {
  readonly imageId: string;
  readonly holders: Set<string>;
  /** Local names (`repo:tag`, `repo@digest`) the image was acquired by: what removal untags. */
  readonly refs: Set<string>;
  removal: { handle: TimerHandle; dueAt: number } | undefined;
  removing: boolean;
  /**
   * Whether berth pulled the image. Only such images are ever removed: an image that was on the
   * host before berth needed it belongs to someone else, and nothing berth did not create is touched.
   */
  pulledByBerth: boolean;
}


/**
 * Makes images present and keeps track of who uses them (Nomad's image coordinator, in Node):
 *
 * - Concurrent acquires of one reference share one resolution: one inspect, at most one engine
 *   pull, one result (image id or error) for all of them. An acquire whose signal aborts stops
 *   waiting; the pull goes on for the others and is cancelled only when every acquire has gone.
 * - Every holder (a task id) holds the image it acquired; holders are a set, so acquiring twice
 *   counts once. When the last holder releases, removal is scheduled after `removeDelay` and
 *   cancelled by an acquire meanwhile. Removal untags the names berth acquired the image by (the
 *   image goes with its last name); not-found is done, in use (a container berth does not own) keeps it.
 * - With `cleanup: false` nothing is counted and nothing is removed.
 */
export class ImageCoordinator implements EventSource<ImageCoordinatorEvents> {
  readonly options: ResolvedImageCoordinatorOptions;
  readonly #events: Events<ImageCoordinatorEvents>;
  readonly #engine: ImageEngine;
  readonly #logger: Logger;
  readonly #clock: Pick<Clock, 'now' | 'setTimeout' | 'clearTimeout'>;
  readonly #auth: RegistryAuthResolver;
  readonly #lock = new ResolutionLock();
  readonly #resolutions = new Map<string, Resolution>();
  readonly #images = new Map<string, ImageRecord>();
  readonly #heldBy = new Map<string, Set<string>>();
  readonly #removals = new Set<Promise<void>>();
  /** Resolutions under way, abandoned or not: close() waits for them to wind down. */
  readonly #running = new Set<Promise<void>>();
  readonly #closing = new AbortController();

  constructor(init: ImageCoordinatorInit) {
    this.options = resolveImageCoordinatorOptions(init.options);
    this.#engine = init.engine;
    this.#logger = init.logger ?? silentLogger;
    this.#events = new Events(this.#logger);
    this.#clock = init.clock ?? systemClock;
    this.#auth = new RegistryAuthResolver({
      dockerConfigDir: this.options.dockerConfigDir,
      credentialHelperEnv: this.options.credentialHelperEnv,
      credentialHelperTimeoutMs: this.options.credentialHelperTimeoutMs,
    });
  }

  /**
   * Makes `image` present according to the pull policy and records `holderId` as holding it.
   * Rejects with a ValidationError (field `image`) for a malformed reference, BERTH_IMAGE_NOT_FOUND,
   * BERTH_IMAGE_ACCESS_DENIED, BERTH_IMAGE_PULL_FAILED, BERTH_IMAGE_PULL_STALLED, or
   * BERTH_CANCELLED when `signal` aborts.
   */
  acquire(image: string, holderId: string, options: AcquireOptions = {}): Promise<AcquiredImage> {
    let ref: ImageReference;
    try {
      ref = parseImageReference(image);
      checkHolderId(holderId);
    } catch (error) {
      return Promise.reject(error);
    }
    const policy = options.policy ?? 'if-not-present';
    const { signal } = options;
    const what = `acquire of ${ref.canonical}`;
    if (this.#closing.signal.aborted) return Promise.reject(cancelledError(`${what}: the image coordinator is closed`));
    if (signal?.aborted) return Promise.reject(cancelledError(what, signal.reason));
    if (policy === 'never') return this.#acquirePresent(ref, holderId, signal);

    return new Promise<AcquiredImage>((resolve, reject) => {
      const key = resolutionKey(ref, options.auth);
      let resolution = this.#resolutions.get(key);
      const onAbort = (): void => {
        if (waiter.settled) return;
        waiter.settled = true;
        resolution!.waiters.delete(waiter);
        reject(cancelledError(what, signal?.reason));
        if (resolution!.waiters.size === 0) this.#abandon(resolution!);
      };
      const waiter: Waiter = {
        holderId,
        onProgress: options.onProgress,
        settled: false,
        resolve: ({ imageId, pulled }) => {
          signal?.removeEventListener('abort', onAbort);
          resolve({ imageId, ref, pulled });
        },
        reject: (error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      if (resolution) {
        if (policy === 'always') resolution.mustPull = true;
        resolution.waiters.add(waiter);
        this.#emit('pull-shared', { ref: ref.canonical, holderId, waiters: resolution.waiters.size });
        return;
      }
      resolution = {
        key,
        ref,
        credentials: options.auth,
        controller: new AbortController(),
        waiters: new Set([waiter]),
        startedAt: this.#clock.now(),
        phase: 'inspecting',
        mustPull: policy === 'always',
        attempts: 0,
      };
      this.#resolutions.set(key, resolution);
      const running = this.#resolve(resolution).finally(() => this.#running.delete(running));
      this.#running.add(running);
    });
  }

  /**
   * Releases everything `holderId` holds. An image left without holders is scheduled for removal
   * after `removeDelay`. Returns the ids of the images it held.
   */
  release(holderId: string): string[] {
    const imageIds = this.#heldBy.get(holderId);
    if (!imageIds) return [];
    this.#heldBy.delete(holderId);
    for (const imageId of imageIds) {
      const record = this.#images.get(imageId);
      if (!record) continue;
      record.holders.delete(holderId);
      if (record.holders.size === 0) this.#scheduleRemoval(record);
    }
    this.#logger.debug({ holderId, imageIds: [...imageIds] }, 'released images');
    return [...imageIds];
  }

  /**
   * Records that `holderId` holds `imageId`, without touching the engine: for an agent restoring its
   * tasks after a restart. Idempotent (holders are a set). `ref`, when known, is the name removal
   * untags later; without it the image is removed by id, which the engine refuses while other names
   * point to it.
   */
  restoreHolder(imageId: string, holderId: string, ref?: string, pulledByBerth = false): void {
    checkHolderId(holderId);
    if (typeof imageId !== 'string' || imageId === '') throw new ValidationError([{ field: 'imageId', rule: 'must be a non-empty image id' }]);
    this.#hold(imageId, holderId, ref === undefined ? undefined : parseImageReference(ref, 'ref'), pulledByBerth);
  }

  /** The holders of an image, in the order they acquired it. */
  holders(imageId: string): string[] {
    return [...(this.#images.get(imageId)?.holders ?? [])];
  }

  snapshot(): ImageCoordinatorSnapshot {
    return {
      images: [...this.#images.values()].map((record) => ({
        imageId: record.imageId,
        refs: [...record.refs],
        holders: [...record.holders],
        pulledByBerth: record.pulledByBerth,
        ...(record.removal ? { removalDueAt: new Date(record.removal.dueAt) } : {}),
      })),
      pulls: [...this.#resolutions.values()].map((r) => ({
        ref: r.ref.canonical,
        phase: r.phase,
        waiters: r.waiters.size,
        startedAt: new Date(r.startedAt),
      })),
    };
  }

  /**
   * Stops the coordinator: scheduled removals are dropped (the images stay), acquires still waiting
   * are cancelled with their pulls, and pulls and removals under way are awaited.
   */
  async close(): Promise<void> {
    this.#closing.abort(cancelledError('image coordinator'));
    for (const record of this.#images.values()) {
      if (record.removal) this.#clock.clearTimeout(record.removal.handle);
      record.removal = undefined;
    }
    for (const resolution of [...this.#resolutions.values()]) {
      for (const waiter of resolution.waiters) {
        waiter.settled = true;
        waiter.reject(cancelledError(`acquire of ${resolution.ref.canonical}: the image coordinator closed`));
      }
      resolution.waiters.clear();
      this.#abandon(resolution);
    }
    await Promise.all([...this.#running, ...this.#removals]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Policy `never`: the image must be present. */
  async #acquirePresent(ref: ImageReference, holderId: string, signal: AbortSignal | undefined): Promise<AcquiredImage> {
    return this.#lock.shared(async () => {
      const imageId = await this.#inspectId(ref, signal);
      if (imageId === undefined) {
        throw new BerthError('BERTH_IMAGE_NOT_FOUND', `image ${ref.canonical} is not present and the pull policy is never`, {
          retryable: false,
          context: { image: ref.canonical, policy: 'never' },
        });
      }
      this.#hold(imageId, holderId, ref);
      return { imageId, ref, pulled: false };
    });
  }

  async #resolve(resolution: Resolution): Promise<void> {
    const { ref } = resolution;
    const signal = resolution.controller.signal;
    /** Where the pull's credentials came from, once known: a refusal names it. */
    let authSource: string | undefined;
    try {
      if (!resolution.mustPull) {
        const present = await this.#lock.shared(async () => {
          const imageId = await this.#inspectId(ref, signal);
          // An `always` acquire may have joined while the inspect ran: then it pulls regardless.
          if (imageId === undefined || resolution.mustPull) return false;
          this.#settle(resolution, imageId, false);
          return true;
        });
        if (present) return;
      }
      resolution.phase = 'pulling';
      const auth = await this.#auth.resolve(ref.registry, resolution.credentials, signal);
      authSource = auth?.source ?? 'none';
      // Pulled, then removed by a removal that got the lock between the pull and the inspect (it
      // happens only to an image nobody held): one more pull brings it back.
      for (let round = 1; ; round++) {
        await retry(
          (attempt) => {
            resolution.attempts++;
            this.#emit('pull-started', {
              ref: ref.canonical,
              registry: ref.registry,
              attempt,
              authSource: auth?.source ?? 'none',
              waiters: resolution.waiters.size,
            });
            return runPull(this.#engine, ref, auth?.auth, {
              activityTimeoutMs: this.options.pullActivityTimeoutMs,
              clock: this.#clock,
              signal,
              onProgress: (progress) => this.#progress(resolution, progress),
            });
          },
          {
            attempts: this.options.pullAttempts,
            initialDelayMs: this.options.pullRetryDelayMs,
            maxDelayMs: Math.max(this.options.pullRetryDelayMs, 30_000),
            signal,
            onRetry: (error, attempt) =>
              this.#logger.warn(
                { image: ref.canonical, attempt, code: codeOf(error), reason: messageOf(error) },
                'pull failed; retrying',
              ),
          },
        );
        const settled = await this.#lock.shared(async () => {
          const imageId = await this.#inspectId(ref, signal);
          if (imageId === undefined) return false;
          this.#settle(resolution, imageId, true);
          return true;
        });
        if (settled) return;
        if (round >= 2) {
          throw new BerthError('BERTH_IMAGE_PULL_FAILED', `image ${ref.canonical} was pulled but the engine does not have it`, {
            context: { image: ref.canonical, registry: ref.registry },
          });
        }
      }
    } catch (error) {
      this.#fail(resolution, signal.aborted ? cancelledError(`pull of ${ref.canonical}`, error) : withAuthSource(error, authSource));
    }
  }

  /** The image id the engine has under the reference's name, or undefined. */
  async #inspectId(ref: ImageReference, signal: AbortSignal | undefined): Promise<string | undefined> {
    try {
      return (await this.#engine.inspectImage(ref.localName, { signal })).id;
    } catch (error) {
      if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return undefined;
      throw error;
    }
  }

  #progress(resolution: Resolution, progress: PullProgress): void {
    for (const waiter of resolution.waiters) {
      if (!waiter.onProgress) continue;
      try {
        waiter.onProgress(progress);
      } catch (error) {
        this.#logger.warn({ holderId: waiter.holderId, reason: messageOf(error) }, 'an onProgress callback threw; ignored');
      }
    }
    this.#emit('pull-progress', { ref: resolution.ref.canonical, ...progress });
  }

  /** Hands the image to every acquire still waiting, registering each as a holder first. */
  #settle(resolution: Resolution, imageId: string, pulled: boolean): void {
    this.#forgetResolution(resolution);
    const waiters = [...resolution.waiters].filter((w) => !w.settled);
    for (const waiter of waiters) {
      waiter.settled = true;
      this.#hold(imageId, waiter.holderId, resolution.ref, pulled);
      waiter.resolve({ imageId, pulled });
    }
    if (pulled) {
      this.#emit('pull-finished', {
        ref: resolution.ref.canonical,
        outcome: 'pulled',
        imageId,
        durationMs: this.#clock.now() - resolution.startedAt,
        attempts: resolution.attempts,
        waiters: waiters.length,
      });
    }
  }

  #fail(resolution: Resolution, error: unknown): void {
    this.#forgetResolution(resolution);
    const waiters = [...resolution.waiters].filter((w) => !w.settled);
    for (const waiter of waiters) {
      waiter.settled = true;
      waiter.reject(error);
    }
    if (resolution.phase === 'pulling') {
      const failure = isBerthError(error) ? error : undefined;
      const cancelled = failure?.code === 'BERTH_CANCELLED';
      this.#emit('pull-finished', {
        ref: resolution.ref.canonical,
        outcome: cancelled ? 'cancelled' : 'failed',
        durationMs: this.#clock.now() - resolution.startedAt,
        attempts: resolution.attempts,
        waiters: waiters.length,
        ...(failure && !cancelled ? { error: { code: failure.code, message: failure.message } } : {}),
      });
    }
  }

  /** Every acquire has gone: stop the resolution, and let the next acquire start afresh. */
  #abandon(resolution: Resolution): void {
    this.#forgetResolution(resolution);
    resolution.controller.abort(cancelledError(`pull of ${resolution.ref.canonical}`));
    this.#logger.debug({ image: resolution.ref.canonical }, 'every acquire left; resolution cancelled');
  }

  #forgetResolution(resolution: Resolution): void {
    if (this.#resolutions.get(resolution.key) === resolution) this.#resolutions.delete(resolution.key);
  }

  #hold(imageId: string, holderId: string, ref: ImageReference | undefined, pulled = false): void {
    if (!this.options.cleanup) return;
    let record = this.#images.get(imageId);
    if (!record) {
      record = { imageId, holders: new Set(), refs: new Set(), removal: undefined, removing: false, pulledByBerth: false };
      this.#images.set(imageId, record);
    }
    record.pulledByBerth ||= pulled;
    record.holders.add(holderId);
    if (ref) record.refs.add(ref.localName);
    if (record.removal) {
      this.#clock.clearTimeout(record.removal.handle);
      record.removal = undefined;
      this.#logger.debug({ imageId, holderId }, 'acquired again; removal cancelled');
    }
    let held = this.#heldBy.get(holderId);
    if (!held) this.#heldBy.set(holderId, (held = new Set()));
    held.add(imageId);
  }

  #scheduleRemoval(record: ImageRecord): void {
    if (!record.pulledByBerth) {
      // Not berth's to remove: forget it once nobody holds it.
      if (record.holders.size === 0 && !record.removing) this.#images.delete(record.imageId);
      return;
    }
    if (record.removal || record.removing || this.#closing.signal.aborted) return;
    const delayMs = this.options.removeDelayMs;
    const handle = this.#clock.setTimeout(() => {
      record.removal = undefined;
      this.#startRemoval(record);
    }, delayMs);
    record.removal = { handle, dueAt: this.#clock.now() + delayMs };
    this.#logger.debug({ imageId: record.imageId, delayMs }, 'image unused; removal scheduled');
  }

  #startRemoval(record: ImageRecord): void {
    if (record.holders.size > 0 || record.removing || this.#closing.signal.aborted) return;
    record.removing = true;
    const task = this.#remove(record).finally(() => {
      record.removing = false;
      this.#removals.delete(task);
      // Acquired and released again while the removal ran: the new release's removal is due.
      if (record.holders.size === 0 && this.#images.get(record.imageId) === record) this.#scheduleRemoval(record);
    });
    this.#removals.add(task);
  }

  async #remove(record: ImageRecord): Promise<void> {
    const { imageId } = record;
    const refs = [...record.refs];
    let outcome: ImageRemoval | { kind: 'held' };
    try {
      outcome = await retry(() => this.#lock.exclusive(() => this.#removeOnce(record)), {
        attempts: this.options.removeAttempts,
        initialDelayMs: this.options.removeRetryDelayMs,
        maxDelayMs: Math.max(this.options.removeRetryDelayMs, 10_000),
        signal: this.#closing.signal,
        onRetry: (error, attempt) =>
          this.#logger.warn({ imageId, attempt, code: codeOf(error), reason: messageOf(error) }, 'image removal failed; retrying'),
      });
    } catch (error) {
      if (this.#closing.signal.aborted || record.holders.size > 0) return;
      this.#images.delete(imageId);
      const failure = asBerthError(error, 'image removal failed');
      // Not thrown to anyone (a timer started it): logged once, and reported as an event.
      this.#logger.warn({ imageId, code: failure.code, reason: failure.message }, 'could not remove an unused image; it stays');
      this.#emit('image-removal-failed', { imageId, refs: [...record.refs], error: { code: failure.code, message: failure.message } });
      return;
    }
    if (outcome.kind === 'held') return;
    this.#images.delete(imageId);
    if (outcome.kind === 'in-use') {
      this.#logger.info({ imageId, refs: outcome.kept }, 'unused image kept: something outside berth uses it');
      this.#emit('image-kept', { imageId, refs: outcome.kept, reason: 'in-use' });
      return;
    }
    // 'named': berth's names are gone, the image stays because someone else names it.
    const deleted = outcome.kind !== 'named';
    this.#logger.info({ imageId, refs, deleted }, 'unused image removed');
    this.#emit('image-removed', { imageId, refs, deleted });
  }

  /** One removal attempt, alone under the lock: no acquire can be resolving meanwhile. */
  async #removeOnce(record: ImageRecord): Promise<ImageRemoval | { kind: 'held' }> {
    if (record.holders.size > 0 || this.#images.get(record.imageId) !== record) return { kind: 'held' };
    return removeBerthImage(this.#engine, { imageId: record.imageId, refs: [...record.refs] }, this.#closing.signal);
  }

  /** Calls `listener` with every later event of `type` (see ImageCoordinatorEvents); returns its unsubscribe. */
  on<K extends ImageEventType>(type: K, listener: EventListener<ImageCoordinatorEvents[K]>): Unsubscribe {
    return this.#events.on(type, listener);
  }

  #emit<K extends ImageEventType>(type: K, event: ImageCoordinatorEvents[K]): void {
    this.#events.emit(type, event);
    if (IMAGES_CHANNEL.hasSubscribers) IMAGES_CHANNEL.publish({ type, ...event });
  }
}

/** What a refused pull's message says of its credentials: where they came from, never what they are. */
const AUTH_SOURCE_WORDS: Readonly<Record<string, string>> = {
  none: 'no credentials were sent (an anonymous pull): give the task registryAuth, or configure credentials for the registry',
  task: 'the task\'s own credentials (registryAuth) were sent',
  'credential-helper': 'credentials from a Docker credential helper were sent',
  'credentials-store': 'credentials from the Docker credentials store were sent',
  'config-auths': 'credentials from the Docker configuration (auths) were sent',
};

/** A refused pull (BERTH_IMAGE_ACCESS_DENIED) with the source of its credentials in its message and context. */
function withAuthSource(error: unknown, authSource: string | undefined): unknown {
  if (authSource === undefined || !isBerthError(error, 'BERTH_IMAGE_ACCESS_DENIED')) return error;
  return new BerthError('BERTH_IMAGE_ACCESS_DENIED', `${error.message}; ${AUTH_SOURCE_WORDS[authSource] ?? `credentials: ${authSource}`}`, {
    cause: error.cause ?? error,
    retryable: false,
    context: { ...error.context, authSource },
  });
}

const HOLDER_ID = /^[^\s]{1,256}$/;

function checkHolderId(holderId: string): void {
  if (typeof holderId !== 'string' || !HOLDER_ID.test(holderId)) {
    throw new ValidationError([{ field: 'holderId', rule: 'must be 1 to 256 characters without white space' }]);
  }
}

/**
 * Acquires share a resolution when they name the same image with the same task credentials: an
 * acquire with its own credentials must not ride on a pull made with someone else's (nor fail with
 * someone else's wrong ones). The credentials enter the key only as a hash.
 */
function resolutionKey(ref: ImageReference, credentials: RegistryCredentials | undefined): string {
  if (!credentials) return ref.canonical;
  const fingerprint = createHash('sha256')
    .update(JSON.stringify([credentials.username ?? '', credentials.password ?? '', credentials.identityToken ?? '', credentials.serverAddress ?? '']))
    .digest('hex');
  return `${ref.canonical}#${fingerprint}`;
}
