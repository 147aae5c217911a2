import { statfs } from 'node:fs/promises';

/** What the agent knows of its data directory's free space. */
export type DiskCondition = 'ok' | 'full';

export interface DiskSpaceOptions {
  /**
   * Output is cut, and the condition is `full`, when less than this is free: the rest is kept for
   * the state database and the record that says output was cut. Default 2 MiB.
   */
  minFreeBytes?: number;
  /** Free bytes of the file system holding `dir`; default statfs (blocks available to the agent). */
  freeBytes?: (dir: string) => Promise<number>;
  /** After this many bytes written, free space is measured again. Default 256 KiB. */
  checkEveryBytes?: number;
}

export const DEFAULT_MIN_FREE_BYTES = 2 * 1024 * 1024;

/** How full a file system is, as `df` counts it: the share in use is `usedBytes / totalBytes`. */
export interface DiskUsage {
  /** Bytes in use (by anyone). */
  readonly usedBytes: number;
  /** Bytes in use plus those the agent may still use: blocks reserved for root (when the agent is not root) are left out, as df's Use% does. */
  readonly totalBytes: number;
}

/** Reads how full the file system holding `dir` is (retention's watermark); tests pass their own. */
export type DiskUsageReader = (dir: string) => Promise<DiskUsage>;

/** The file system holding `dir`, from statfs. */
export const readDiskUsage: DiskUsageReader = async (dir) => {
  const stats = await statfs(dir);
  const usedBytes = (stats.blocks - stats.bfree) * stats.bsize;
  return { usedBytes, totalBytes: usedBytes + stats.bavail * stats.bsize };
};

/**
 * Watches the free space of the agent's data directory, so that a full disk is a condition the
 * agent reports and works around (output is cut, state writes wait) rather than a crash.
 * Measured after every `checkEveryBytes` written and whenever asked (health); a write that failed
 * with "no space left" marks the condition at once.
 */
export class DiskSpace {
  readonly #dir: string;
  readonly #minFreeBytes: number;
  readonly #freeBytes: (dir: string) => Promise<number>;
  readonly #checkEveryBytes: number;
  #writtenSinceCheck = 0;
  #condition: DiskCondition = 'ok';
  #lastFreeBytes: number | undefined;

  constructor(dir: string, options: DiskSpaceOptions = {}) {
    this.#dir = dir;
    this.#minFreeBytes = options.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES;
    this.#freeBytes = options.freeBytes ?? (async (d) => {
      const stats = await statfs(d);
      return stats.bavail * stats.bsize;
    });
    this.#checkEveryBytes = options.checkEveryBytes ?? 256 * 1024;
  }

  get condition(): DiskCondition {
    return this.#condition;
  }

  get minFreeBytes(): number {
    return this.#minFreeBytes;
  }

  /** Free bytes at the last measure, if any. */
  get lastFreeBytes(): number | undefined {
    return this.#lastFreeBytes;
  }

  /** Measures now; the condition is `full` while less than `minFreeBytes` is free. A failed measure keeps the last condition. */
  async check(): Promise<DiskCondition> {
    this.#writtenSinceCheck = 0;
    try {
      const free = await this.#freeBytes(this.#dir);
      this.#lastFreeBytes = free;
      this.#condition = free < this.#minFreeBytes ? 'full' : 'ok';
    } catch {
      // The directory may be gone or unreadable for a moment; the next write or measure tells.
    }
    return this.#condition;
  }

  /** Counts bytes about to be written; measures again when enough were. Resolves with the condition. */
  async beforeWrite(bytes: number): Promise<DiskCondition> {
    this.#writtenSinceCheck += bytes;
    if (this.#condition === 'full' || this.#writtenSinceCheck >= this.#checkEveryBytes) return this.check();
    return this.#condition;
  }

  /** A write failed for want of space: full until a measure shows room again. */
  reportFull(): void {
    this.#condition = 'full';
  }
}
