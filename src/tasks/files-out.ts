import type { Readable } from 'node:stream';
import { BerthError } from '../common/errors.js';
import type { Engine } from '../engine/engine.js';
import { copyTarEntries, TAR_TRAILER } from './tar-cut.js';

/** What was collected of a task's `collect` paths when it ended. */
export interface ArtifactsRecord {
  /** Bytes kept, over all paths (tar entries, without trailers). */
  bytes: number;
  /** The paths collected (whole or in part), in the spec's order. */
  paths: string[];
  /** Paths the container did not have. */
  missing?: string[];
  /** Paths cut because the size limit was reached, with the first entry left out of each. */
  truncated?: Array<{ path: string; cutAt: string }>;
  /** Paths that could not be read for another reason (the engine failed), with its code. */
  failed?: Array<{ path: string; code: string }>;
}

/** A sink for one path's archive: `write` resolves when more may be written, `end` once it is all stored. */
export interface ArtifactSink {
  write(chunk: Buffer): Promise<void>;
  end(): Promise<void>;
  /** Called instead of `end` when nothing of the path was kept. */
  discard(): Promise<void>;
}

export type ArchiveEngine = Pick<Engine, 'getArchive'>;

/** A tar stream of `path` in the container, running or ended (docker cp's read side). */
export function copyOut(engine: ArchiveEngine, containerId: string, path: string, signal?: AbortSignal): Promise<Readable> {
  return engine.getArchive(containerId, path, { signal });
}

/**
 * Collects `paths` from the container (running or ended, not removed) into one sink per path, each
 * a whole tar archive, within `maxBytes` over them all: an entry that does not fit is left out with
 * the rest of its path (cut at a file boundary), recorded in `truncated`; later paths still get
 * what budget remains. A path the container lacks is recorded in `missing`; never throws for one
 * path's failure (recorded in `failed`), only for the caller's abort.
 */
export async function collectArtifacts(
  engine: ArchiveEngine,
  containerId: string,
  paths: readonly string[],
  options: { maxBytes: number; open: (path: string, index: number) => ArtifactSink; signal?: AbortSignal },
): Promise<ArtifactsRecord> {
  const record: ArtifactsRecord = { bytes: 0, paths: [] };
  for (const [index, path] of paths.entries()) {
    if (options.signal?.aborted) throw new BerthError('BERTH_CANCELLED', 'artifact collection was cancelled', { context: { containerId } });
    let archive: Readable;
    try {
      archive = await copyOut(engine, containerId, path, options.signal);
    } catch (error) {
      if (error instanceof BerthError && error.code === 'BERTH_ENGINE_NOT_FOUND' && error.context.missing === 'path') {
        (record.missing ??= []).push(path);
        continue;
      }
      if (error instanceof BerthError && error.code === 'BERTH_CANCELLED') throw error;
      (record.failed ??= []).push({ path, code: error instanceof BerthError ? error.code : 'BERTH_INTERNAL' });
      continue;
    }
    const sink = options.open(path, index);
    const budget = Math.max(0, options.maxBytes - record.bytes);
    let outcome;
    try {
      outcome = await copyTarEntries(archive, budget, (chunk) => sink.write(chunk));
    } catch (error) {
      await sink.discard();
      if (options.signal?.aborted) throw new BerthError('BERTH_CANCELLED', 'artifact collection was cancelled', { cause: error, context: { containerId } });
      (record.failed ??= []).push({ path, code: error instanceof BerthError ? error.code : 'BERTH_ENGINE_UNAVAILABLE' });
      continue;
    }
    if (outcome.entries === 0) await sink.discard();
    else {
      await sink.write(TAR_TRAILER);
      await sink.end();
      record.paths.push(path);
      record.bytes += outcome.bytes;
    }
    if (outcome.cutAt !== undefined) (record.truncated ??= []).push({ path, cutAt: outcome.cutAt });
  }
  return record;
}
