import type { Readable } from 'node:stream';
import { BerthError, cancelledError, isBerthError, messageOf } from '../common/errors.js';
import { engineMessage } from '../engine/classify.js';
import type { Engine } from '../engine/engine.js';
import type { PullProgressEvent, RegistryAuth } from '../engine/types.js';
import type { Clock } from '../common/clock.js';
import { pullArguments, type ImageReference } from './reference.js';

/** What one layer of a pull is doing. */
export type PullPhase = 'waiting' | 'downloading' | 'verifying' | 'extracting' | 'complete' | 'exists' | 'other';

/** One progress line of a pull, per layer: its phase and, while downloading or extracting, bytes so far of the total. */
export interface PullProgress extends PullProgressEvent {
  phase: PullPhase;
}

/** The engine's status words, per layer, mapped to phases. */
const LAYER_PHASES: Readonly<Record<string, PullPhase>> = {
  'Pulling fs layer': 'waiting',
  Waiting: 'waiting',
  Downloading: 'downloading',
  'Verifying Checksum': 'verifying',
  'Download complete': 'verifying',
  Extracting: 'extracting',
  'Pull complete': 'complete',
  'Already exists': 'exists',
};

/**
 * The registry's reasons, as the engine words them. API 1.41 engines flatten a registry's error
 * into the message of an HTTP 500 (or of an in-stream error once progress was sent), so for those
 * the text is all there is: the registry error codes (`UNAUTHORIZED`, `DENIED`, `MANIFEST_UNKNOWN`,
 * `NAME_UNKNOWN`) appear lower-cased in it. This is the only place berth reads a pull's message text.
 */
const DENIED_REASON = /\b(unauthorized|denied|no basic auth credentials|authentication required|pull access denied)\b/i;
const NOT_FOUND_REASON = /\b(manifest unknown|name unknown|repository does not exist)\b|manifest for \S+ not found/i;

/** A line of the pull stream that reported an error: `{"error": …, "errorDetail": {"message": …}}`. */
class PullStreamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PullStreamError';
  }
}

/**
 * Classifies a failed pull, whether the engine refused it with an HTTP status or reported it inside
 * the stream. Image or tag not found → BERTH_IMAGE_NOT_FOUND and access denied →
 * BERTH_IMAGE_ACCESS_DENIED, neither retryable; everything else (network, registry, engine) →
 * BERTH_IMAGE_PULL_FAILED, retryable. The one place pull failures are classified.
 */
export function classifyPullFailure(error: unknown, ref: ImageReference): BerthError {
  if (isBerthError(error) && error.code.startsWith('BERTH_IMAGE_')) return error;
  if (isBerthError(error, 'BERTH_CANCELLED')) return error;
  const context = { image: ref.canonical, registry: ref.registry };
  const reasonOf = (e: unknown): string => {
    if (e instanceof PullStreamError) return e.message;
    if (isBerthError(e) && e.cause !== undefined && typeof e.cause === 'object' && e.cause !== null) return engineMessage(e.cause);
    return messageOf(e);
  };
  const reason = reasonOf(error);
  const notFound = (): BerthError =>
    new BerthError('BERTH_IMAGE_NOT_FOUND', `image ${ref.canonical} was not found in registry ${ref.registry}: ${reason}`, { cause: error, context, retryable: false });
  const denied = (): BerthError =>
    new BerthError('BERTH_IMAGE_ACCESS_DENIED', `registry ${ref.registry} refused the pull of ${ref.canonical}: ${reason}`, { cause: error, context, retryable: false });
  const failed = (retryable: boolean): BerthError =>
    new BerthError('BERTH_IMAGE_PULL_FAILED', `pull of ${ref.canonical} from registry ${ref.registry} failed: ${reason}`, { cause: error, context, retryable });

  if (isBerthError(error)) {
    switch (error.code) {
      case 'BERTH_ENGINE_NOT_FOUND':
        return notFound();
      case 'BERTH_ENGINE_FORBIDDEN':
        return denied();
      case 'BERTH_ENGINE_BAD_REQUEST':
        // The engine rejected the reference itself: asking again will not change its mind.
        return failed(false);
      case 'BERTH_ENGINE_SERVER_ERROR':
        break;
      default:
        // Unavailable, timed out: the engine, not the registry.
        return failed(true);
    }
  }
  if (DENIED_REASON.test(reason)) return denied();
  if (NOT_FOUND_REASON.test(reason)) return notFound();
  return failed(true);
}

export interface RunPullOptions {
  /** The pull is aborted as stalled when the stream delivers nothing for this long. */
  activityTimeoutMs: number;
  clock: Pick<Clock, 'setTimeout' | 'clearTimeout'>;
  signal?: AbortSignal;
  onProgress?: (progress: PullProgress) => void;
}

export type PullEngine = Pick<Engine, 'openPull'>;

/**
 * Pulls one image through the engine and follows its progress stream to the end. Resolves when the
 * engine reports the pull done; rejects with a classified BerthError, BERTH_IMAGE_PULL_STALLED when
 * the stream stays silent for the activity timeout (a slow pull that still delivers goes on), or
 * BERTH_CANCELLED when `signal` aborts. Either abort closes the connection, which cancels the
 * engine's pull.
 */
export async function runPull(engine: PullEngine, ref: ImageReference, auth: RegistryAuth | undefined, options: RunPullOptions): Promise<void> {
  const { clock, activityTimeoutMs, signal } = options;
  if (signal?.aborted) throw cancelledError(`pull of ${ref.canonical}`, signal.reason);
  const controller = new AbortController();
  const onCallerAbort = (): void => controller.abort(signal?.reason);
  signal?.addEventListener('abort', onCallerAbort, { once: true });
  let stalled = false;
  let finished = false;
  let stream: Readable | undefined;
  const onStall = (): void => {
    stalled = true;
    controller.abort(new Error('pull stalled'));
    stream?.destroy();
  };
  let timer = clock.setTimeout(onStall, activityTimeoutMs);
  const touch = (): void => {
    clock.clearTimeout(timer);
    timer = clock.setTimeout(onStall, activityTimeoutMs);
  };
  const stalledError = (cause?: unknown): BerthError =>
    new BerthError('BERTH_IMAGE_PULL_STALLED', `pull of ${ref.canonical} from registry ${ref.registry} made no progress for ${activityTimeoutMs} ms and was aborted`, {
      cause,
      context: { image: ref.canonical, registry: ref.registry, activityTimeoutMs },
    });
  try {
    const { fromImage, tag } = pullArguments(ref);
    try {
      // The engine answers once the registry has, so waiting for it counts against the activity timeout too.
      stream = await engine.openPull(fromImage, tag, auth, { signal: controller.signal, deadlineMs: activityTimeoutMs });
    } catch (error) {
      if (stalled || isBerthError(error, 'BERTH_ENGINE_TIMEOUT')) throw stalledError(error);
      throw error;
    }
    if (stalled) throw stalledError();
    touch();
    await followPullStream(stream, touch, options.onProgress);
    finished = true;
  } catch (error) {
    if (signal?.aborted) throw cancelledError(`pull of ${ref.canonical}`, signal.reason);
    if (stalled) throw isBerthError(error, 'BERTH_IMAGE_PULL_STALLED') ? error : stalledError(error);
    throw classifyPullFailure(error, ref);
  } finally {
    clock.clearTimeout(timer);
    signal?.removeEventListener('abort', onCallerAbort);
    // A failed open may have left the engine's request running (a deadline only races it): end it.
    if (!finished) controller.abort(new Error('pull abandoned'));
    stream?.destroy();
  }
}

/** Reads the JSON-lines stream to its end; rejects on an in-stream error or a stream cut short. */
function followPullStream(stream: Readable, touch: () => void, onProgress: ((progress: PullProgress) => void) | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let partial = '';
    let settled = false;
    const settle = (error?: unknown): void => {
      if (settled) return;
      settled = true;
      if (error === undefined) resolve();
      else reject(error);
    };
    const handleLine = (line: string): void => {
      if (line.trim() === '') return;
      let message: RawPullLine;
      try {
        message = JSON.parse(line) as RawPullLine;
      } catch {
        return;
      }
      if (message.error !== undefined || message.errorDetail !== undefined) {
        settle(new PullStreamError(String(message.errorDetail?.message ?? message.error ?? 'unknown pull error').trim()));
        stream.destroy();
        return;
      }
      if (onProgress && typeof message.status === 'string') {
        try {
          onProgress(progressFromLine(message));
        } catch {
          // A consumer's failing callback must not fail a pull that others share.
        }
      }
    };
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      touch();
      partial += chunk;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        handleLine(line);
        if (settled) return;
      }
    });
    stream.once('end', () => {
      handleLine(partial);
      settle();
    });
    stream.once('error', (error) => settle(error));
    stream.once('close', () => settle(new PullStreamError('the engine closed the pull stream before the pull finished')));
  });
}

interface RawPullLine {
  status?: string;
  id?: string;
  progressDetail?: { current?: number; total?: number };
  error?: string;
  errorDetail?: { message?: string; code?: number };
}

function progressFromLine(line: RawPullLine): PullProgress {
  const status = line.status ?? '';
  const phase = LAYER_PHASES[status] ?? 'other';
  const progress: PullProgress = { status, phase };
  // Non-layer lines ("Pulling from library/busybox") carry the tag as their id; it is not a layer.
  if (phase !== 'other' && line.id) progress.layerId = line.id;
  if (typeof line.progressDetail?.current === 'number') progress.currentBytes = line.progressDetail.current;
  if (typeof line.progressDetail?.total === 'number' && line.progressDetail.total > 0) progress.totalBytes = line.progressDetail.total;
  return progress;
}
