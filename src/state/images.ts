import type { SqlConnection } from './sql.js';
import { asDiskFull } from './disk-full.js';

/** One task's hold on one image. */
export interface ImageHolder {
  readonly imageId: string;
  /** The reference the task asked for (e.g. `busybox:latest`); the first one recorded is kept. */
  readonly imageRef: string;
  readonly taskId: string;
  readonly addedAtMs: number;
}

interface HolderRow {
  image_id: string;
  image_ref: string;
  task_id: string;
  added_at_ms: number;
}

const toHolder = (row: HolderRow): ImageHolder =>
  Object.freeze({ imageId: row.image_id, imageRef: row.image_ref, taskId: row.task_id, addedAtMs: row.added_at_ms });

/**
 * Which tasks hold which images: a set keyed by (image, task), so that a task that acquires an image
 * again (a retried start, a recovery after a restart) still counts once. Recovery rebuilds the
 * in-memory reference counts from `holders()` rather than re-acquiring, which is what keeps counts
 * from inflating across restarts. Record a hold before the task uses the image, and remove it only
 * once the task no longer needs it.
 */
export class ImageHolderRepository {
  readonly #db: SqlConnection;
  readonly #nowMs: () => number;

  constructor(db: SqlConnection, nowMs: () => number) {
    this.#db = db;
    this.#nowMs = nowMs;
  }

  /** Records that `taskId` holds `imageId`. Returns false when it already did (nothing changes). */
  addHolder(holder: { imageId: string; imageRef: string; taskId: string }): boolean {
    const result = asDiskFull(() =>
      this.#db
        .prepare('INSERT INTO image_holders (image_id, image_ref, task_id, added_at_ms) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING')
        .run(holder.imageId, holder.imageRef, holder.taskId, this.#nowMs()),
    );
    return result.changes === 1;
  }

  /** Drops one hold. Returns false when there was none. */
  removeHolder(imageId: string, taskId: string): boolean {
    return asDiskFull(() => this.#db.prepare('DELETE FROM image_holders WHERE image_id = ? AND task_id = ?').run(imageId, taskId)).changes === 1;
  }

  /** Drops every hold of a task (it ended or was removed); returns the images it held. */
  removeTask(taskId: string): string[] {
    const run = this.#db.transaction((): string[] => {
      const images = this.#db
        .prepare<[string], { image_id: string }>('SELECT image_id FROM image_holders WHERE task_id = ? ORDER BY image_id')
        .all(taskId)
        .map((row) => row.image_id);
      this.#db.prepare('DELETE FROM image_holders WHERE task_id = ?').run(taskId);
      return images;
    });
    return asDiskFull(() => run.immediate());
  }

  /** Every hold, ordered by image then by when it was added. */
  holders(): ImageHolder[] {
    return this.#db
      .prepare<[], HolderRow>('SELECT * FROM image_holders ORDER BY image_id, added_at_ms, task_id')
      .all()
      .map(toHolder);
  }

  /** The task ids holding one image, in the order they took it. */
  holdersOf(imageId: string): string[] {
    return this.#db
      .prepare<[string], { task_id: string }>('SELECT task_id FROM image_holders WHERE image_id = ? ORDER BY added_at_ms, task_id')
      .all(imageId)
      .map((row) => row.task_id);
  }
}
