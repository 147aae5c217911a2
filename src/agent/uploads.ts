import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BerthError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { UPLOAD_ID } from '../spec/files.js';

/** The limits of uploads (the `files.uploadMaxSize` and `files.uploadTtl` keys), read at every use. */
export interface UploadLimits {
  maxBytes: number;
  ttlMs: number;
}

export interface UploadReceipt {
  id: string;
  sizeBytes: number;
}

/**
 * Archives uploaded for tasks' `files: [{ upload }]` (`POST /v1/uploads`), kept as files in the
 * data directory: a body is streamed to disk as it arrives (never held in memory), cut off with
 * BERTH_UPLOAD_TOO_LARGE past the size limit, and given an id once whole. An upload is opened
 * afresh for each extraction (a file stream), removed once a task without restarts used it, and
 * removed when nobody used it within the ttl (a use counts as a use: its time is refreshed).
 */
export class UploadStore {
  readonly #dir: string;
  readonly #limits: () => UploadLimits;
  readonly #logger: Pick<Logger, 'info' | 'warn'>;
  #sweepTimer: NodeJS.Timeout | undefined;

  constructor(dir: string, limits: () => UploadLimits, logger: Pick<Logger, 'info' | 'warn'>) {
    this.#dir = dir;
    this.#limits = limits;
    this.#logger = logger;
  }

  #file(id: string): string {
    return path.join(this.#dir, `${id}.tar`);
  }

  /** Streams an archive to a new upload; the partial file is removed on any failure. */
  async receive(body: Readable): Promise<UploadReceipt> {
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    const id = randomBytes(16).toString('hex');
    const partial = path.join(this.#dir, `${id}.part`);
    const maxBytes = this.#limits().maxBytes;
    let sizeBytes = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        sizeBytes += chunk.length;
        if (sizeBytes > maxBytes) {
          callback(new BerthError('BERTH_UPLOAD_TOO_LARGE', `the upload is larger than files.uploadMaxSize (${maxBytes} bytes)`, { context: { maxBytes } }));
          return;
        }
        callback(null, chunk);
      },
    });
    try {
      await pipeline(body, counter, createWriteStream(partial, { mode: 0o600 }));
      await rename(partial, this.#file(id));
    } catch (error) {
      await rm(partial, { force: true });
      throw error;
    }
    return { id, sizeBytes };
  }

  /** A fresh read of an upload, its use time refreshed; undefined when there is none by that id. */
  open(id: string): Readable | undefined {
    if (!UPLOAD_ID.test(id)) return undefined;
    const file = this.#file(id);
    if (!existsSync(file)) return undefined;
    const now = new Date();
    void utimes(file, now, now).catch(() => undefined);
    // Reads of a MiB: the engine takes a chunked body much faster in large chunks.
    return createReadStream(file, { highWaterMark: 1024 * 1024 });
  }

  has(id: string): boolean {
    return UPLOAD_ID.test(id) && existsSync(this.#file(id));
  }

  async remove(id: string): Promise<void> {
    if (UPLOAD_ID.test(id)) await rm(this.#file(id), { force: true });
  }

  /** Removes uploads (and partial ones) unused for longer than the ttl. Resolves with how many. */
  async sweep(nowMs = Date.now()): Promise<number> {
    let names: string[];
    try {
      names = await readdir(this.#dir);
    } catch {
      return 0;
    }
    const ttlMs = this.#limits().ttlMs;
    let removed = 0;
    for (const name of names) {
      const file = path.join(this.#dir, name);
      try {
        const info = await stat(file);
        if (nowMs - info.mtimeMs > ttlMs) {
          await rm(file, { force: true });
          removed += 1;
        }
      } catch {
        // Gone meanwhile.
      }
    }
    if (removed > 0) this.#logger.info({ removed }, 'removed uploads no task used in time');
    return removed;
  }

  /** Sweeps every `periodMs` until `close`; the timer never keeps the process alive. */
  startSweeping(periodMs = 60_000): void {
    this.#sweepTimer ??= setInterval(() => {
      this.sweep().catch((error: unknown) => this.#logger.warn({ error: String(error) }, 'upload sweep failed'));
    }, periodMs).unref();
  }

  close(): void {
    if (this.#sweepTimer) clearInterval(this.#sweepTimer);
    this.#sweepTimer = undefined;
  }
}

/** The upload ids a raw spec names in `files`. */
export function uploadsNamedBy(spec: unknown): string[] {
  const files = (spec as { files?: unknown } | null)?.files;
  if (!Array.isArray(files)) return [];
  return files.flatMap((file: unknown) => {
    const upload = (file as { upload?: unknown } | null)?.upload;
    return typeof upload === 'string' ? [upload] : [];
  });
}
