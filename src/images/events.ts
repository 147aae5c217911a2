import { IMAGES_CHANNEL } from '../common/diagnostics.js';
import type { ErrorCode } from '../common/errors.js';
import type { AuthSource } from './auth.js';
import type { PullProgress } from './pull.js';

/** A pull began (again, for `attempt` > 1). */
export interface PullStartedEvent {
  /** Canonical reference: `docker.io/library/busybox:latest`. */
  ref: string;
  registry: string;
  attempt: number;
  /** Where the credentials came from; `none` for an anonymous pull. Never the credentials. */
  authSource: AuthSource | 'none';
  /** Acquires waiting on this pull when it began. */
  waiters: number;
}

/** One progress line of a pull, for one layer. */
export interface PullProgressNotice extends PullProgress {
  ref: string;
}

/** A pull ended: pulled, failed (after its attempts) or cancelled (every waiter left). */
export interface PullFinishedEvent {
  ref: string;
  outcome: 'pulled' | 'failed' | 'cancelled';
  imageId?: string;
  durationMs: number;
  attempts: number;
  /** Acquires that received the outcome. */
  waiters: number;
  error?: { code: ErrorCode; message: string };
}

/** An acquire joined a resolution of the same reference already under way instead of starting its own. */
export interface PullSharedEvent {
  ref: string;
  holderId: string;
  /** Acquires waiting, this one included. */
  waiters: number;
}

/** An image nobody held was removed (its names untagged; `deleted` when that removed the image itself). */
export interface ImageRemovedEvent {
  imageId: string;
  refs: string[];
  deleted: boolean;
}

/** An image nobody in berth held was kept, because something else uses it (a container berth does not own). */
export interface ImageKeptEvent {
  imageId: string;
  refs: string[];
  reason: 'in-use';
}

/** The removal of an image failed after its attempts; it is no longer tracked and stays on the engine. */
export interface ImageRemovalFailedEvent {
  imageId: string;
  refs: string[];
  error: { code: ErrorCode; message: string };
}

/** Events of an ImageCoordinator (`coordinator.on(type, listener)`), also published on IMAGE_EVENTS_CHANNEL as `{ type, ...event }`. */
export interface ImageCoordinatorEvents {
  'pull-started': PullStartedEvent;
  'pull-progress': PullProgressNotice;
  'pull-finished': PullFinishedEvent;
  'pull-shared': PullSharedEvent;
  'image-removed': ImageRemovedEvent;
  'image-kept': ImageKeptEvent;
  'image-removal-failed': ImageRemovalFailedEvent;
}

export type ImageEventType = keyof ImageCoordinatorEvents;

/** Every coordinator's events, for observers that do not hold the coordinator (metrics, tracing). */
export const IMAGE_EVENTS_CHANNEL = IMAGES_CHANNEL;
