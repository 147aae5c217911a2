import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { BerthError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ArtifactSink, ArtifactsRecord } from '../tasks/files-out.js';
import type { TaskHandle } from '../tasks/handle.js';
import { TAR_TRAILER } from '../tasks/tar-cut.js';

/**
 * A task's artifacts (its spec's `collect` paths, read at its end) under `<dataDir>/artifacts/<taskId>/`,
 * one whole tar archive per path, named by a hash of the path. What was kept is recorded with the
 * task (ArtifactsRecord, in the state database); the files go with the task (remove and retention).
 */
export class ArtifactStore {
  readonly #dir: string;
  readonly #logger: Logger;

  constructor(dir: string, logger: Logger) {
    this.#dir = dir;
    this.#logger = logger;
  }

  /** The directory holding a task's artifacts. */
  dirOf(taskId: string): string {
    return path.join(this.#dir, taskId);
  }

  #fileOf(taskId: string, artifactPath: string): string {
    return path.join(this.dirOf(taskId), `${createHash('sha256').update(artifactPath).digest('hex').slice(0, 32)}.tar`);
  }

  /** Collects the task's `collect` paths from its container (ended, not yet removed) within `maxBytes`. */
  async collect(taskId: string, handle: TaskHandle, maxBytes: number, signal?: AbortSignal): Promise<ArtifactsRecord> {
    await rm(this.dirOf(taskId), { recursive: true, force: true });
    await mkdir(this.dirOf(taskId), { recursive: true });
    const record = await handle.collectArtifacts({ maxBytes, signal, open: (artifactPath) => this.#sink(this.#fileOf(taskId, artifactPath)) });
    this.#logger.info({ taskId, bytes: record.bytes, paths: record.paths.length, missing: record.missing?.length ?? 0, truncated: record.truncated?.length ?? 0 }, 'collected the task\'s artifacts');
    return record;
  }

  #sink(file: string): ArtifactSink {
    const partial = `${file}.part`;
    const out: WriteStream = createWriteStream(partial, { flags: 'w' });
    let failure: Error | undefined;
    out.on('error', (error) => (failure = error));
    const closed = (): Promise<void> => new Promise((resolve, reject) => {
      if (out.closed) return failure ? reject(failure) : resolve();
      out.once('close', () => (failure ? reject(failure) : resolve()));
    });
    return {
      write: (chunk) => {
        if (failure) return Promise.reject(failure);
        if (out.write(chunk)) return Promise.resolve();
        return new Promise((resolve, reject) => {
          const onDrain = (): void => { out.off('error', onError); resolve(); };
          const onError = (error: Error): void => { out.off('drain', onDrain); reject(error); };
          out.once('drain', onDrain);
          out.once('error', onError);
        });
      },
      end: async () => {
        out.end();
        await closed();
        await rename(partial, file);
      },
      discard: async () => {
        out.destroy();
        await closed().catch(() => undefined);
        await rm(partial, { force: true });
      },
    };
  }

  /**
   * One tar stream of everything kept (every path's entries, one trailer), or of one collected path
   * only. A path that was not collected is BERTH_ENGINE_NOT_FOUND with context `missing: 'path'`.
   */
  async open(taskId: string, record: ArtifactsRecord | undefined, onlyPath?: string): Promise<Readable> {
    const collected = record?.paths ?? [];
    if (onlyPath !== undefined && !collected.includes(onlyPath)) {
      throw new BerthError('BERTH_ENGINE_NOT_FOUND', `task ${taskId} has no artifact ${onlyPath} (collected: ${collected.length === 0 ? 'none' : collected.join(', ')})`, {
        context: { taskId, path: onlyPath, missing: 'path' },
      });
    }
    const files = (onlyPath !== undefined ? [onlyPath] : collected).map((p) => this.#fileOf(taskId, p));
    const sizes = await Promise.all(files.map(async (file) => (await stat(file)).size));
    const out = new PassThrough();
    void (async () => {
      try {
        for (const [i, file] of files.entries()) {
          // Each file is a whole archive; its trailer is left off so that the next one's entries follow.
          const end = sizes[i]! - TAR_TRAILER.length;
          if (end > 0) for await (const chunk of createReadStream(file, { start: 0, end: end - 1 })) {
            if (!out.write(chunk)) await new Promise((resolve) => out.once('drain', resolve));
            if (out.destroyed) return;
          }
        }
        out.end(TAR_TRAILER);
      } catch (error) {
        out.destroy(error as Error);
      }
    })();
    return out;
  }

  /** Removes a task's artifacts; none is no error. */
  async remove(taskId: string): Promise<void> {
    await rm(this.dirOf(taskId), { recursive: true, force: true });
  }
}
