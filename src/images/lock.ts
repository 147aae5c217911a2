/**
 * Keeps removals apart from resolutions. A resolution (inspect an image, then register its holders)
 * and a removal of an image nobody holds must not interleave: otherwise an acquire could find an
 * image, a removal could delete it the next moment, and the task would be handed an image id that
 * no longer exists. Resolutions share the lock; a removal takes it alone, waits for resolutions under
 * way to finish, and holds back new ones while it runs (removals are short engine calls).
 */
export class ResolutionLock {
  #sharedHolders = 0;
  /** Set while a removal waits for, or holds, the lock. */
  #exclusive: Promise<void> | undefined;
  #onDrained: (() => void) | undefined;

  async shared<T>(work: () => Promise<T>): Promise<T> {
    while (this.#exclusive) await this.#exclusive;
    this.#sharedHolders++;
    try {
      return await work();
    } finally {
      this.#sharedHolders--;
      if (this.#sharedHolders === 0) this.#onDrained?.();
    }
  }

  async exclusive<T>(work: () => Promise<T>): Promise<T> {
    while (this.#exclusive) await this.#exclusive;
    let release!: () => void;
    this.#exclusive = new Promise<void>((resolve) => (release = resolve));
    try {
      if (this.#sharedHolders > 0) await new Promise<void>((resolve) => (this.#onDrained = resolve));
      this.#onDrained = undefined;
      return await work();
    } finally {
      this.#exclusive = undefined;
      release();
    }
  }
}
