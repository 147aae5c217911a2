import { isBerthError } from '../common/errors.js';
import type { Engine } from '../engine/engine.js';
import type { ImageInspect } from '../engine/types.js';

/** The engine calls the removal rule makes: a narrow port. */
export type ImageRemovalEngine = Pick<Engine, 'inspectImage' | 'removeImage'>;

/** An image berth pulled: its id and the local names berth acquired it by. */
export interface RemovableImage {
  imageId: string;
  refs: readonly string[];
}

/** What became of an image the removal rule was given. `untagged` lists the names the engine untagged. */
export type ImageRemoval =
  /** The engine deleted the image. */
  | { kind: 'deleted'; untagged: string[] }
  /** The image was not there (any more): nothing left to delete. */
  | { kind: 'absent'; untagged: string[] }
  /** berth's names are gone, the image stays: someone else names it. */
  | { kind: 'named'; untagged: string[] }
  /** The engine refused (409): a container uses the image. `kept` are berth's names it still has. */
  | { kind: 'in-use'; untagged: string[]; kept: string[] };

/**
 * The one rule by which berth removes an image it pulled, for the image coordinator (a release's
 * delayed removal) and the pruner (prune and image budget) alike. Never forced:
 *
 * 1. Untag each name berth acquired the image by, but only while the name still means this image:
 *    a name re-pulled or re-tagged since means another image now, and is not berth's to remove. An
 *    image goes with its last name.
 * 2. If the image outlived its names, remove it by id, unless someone else still names it: removal
 *    by id would untag their name as well.
 *
 * A refusal because a container uses the image ends the removal (`in-use`); other engine failures
 * are thrown, and running the rule again picks up where it stopped.
 */
export async function removeBerthImage(engine: ImageRemovalEngine, image: RemovableImage, signal?: AbortSignal): Promise<ImageRemoval> {
  const untagged: string[] = [];
  for (const [index, name] of image.refs.entries()) {
    if ((await currentImage(engine, name, signal))?.id !== image.imageId) continue;
    const outcome = await engine.removeImage(name, { signal });
    if (outcome.kind === 'in-use') return { kind: 'in-use', untagged, kept: image.refs.slice(index) };
    if (outcome.kind === 'removed') {
      untagged.push(...outcome.untagged);
      if (outcome.deleted.includes(image.imageId)) return { kind: 'deleted', untagged };
    }
  }
  const remaining = await currentImage(engine, image.imageId, signal);
  if (!remaining) return { kind: 'absent', untagged };
  if (remaining.repoTags.length > 0) return { kind: 'named', untagged };
  const outcome = await engine.removeImage(image.imageId, { signal });
  if (outcome.kind === 'in-use') return { kind: 'in-use', untagged, kept: [] };
  if (outcome.kind === 'absent') return { kind: 'absent', untagged };
  untagged.push(...outcome.untagged);
  return { kind: outcome.deleted.includes(image.imageId) ? 'deleted' : 'named', untagged };
}

/** What the engine knows by `ref` now; undefined when nothing. */
async function currentImage(engine: ImageRemovalEngine, ref: string, signal: AbortSignal | undefined): Promise<ImageInspect | undefined> {
  try {
    return await engine.inspectImage(ref, { signal });
  } catch (error) {
    if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return undefined;
    throw error;
  }
}
