/**
 * The images berth may prune: those it pulled (the coordinator says which, and by which names),
 * that no task holds, and that nobody else names. Pure helpers for exemption and shared names,
 * kept apart from the engine calls so that they can be tested on their own.
 */
import { ValidationError, type FieldIssue } from '../common/errors.js';
import { parseImageReference } from '../images/reference.js';

/** An image berth pulled, as its image coordinator knows it. */
export interface BerthImage {
  /** The engine's image id, `sha256:…`. */
  imageId: string;
  /** The local names berth acquired it by (`busybox:latest`, `repo@sha256:…`): what removal untags. */
  refs: readonly string[];
}

/**
 * Where the pruner learns which images are berth's and which are in use: a port over the image
 * coordinator (its snapshot) and the agent's durable holders.
 */
export interface PruneImageSource {
  /** Images berth pulled and may remove. Only these are ever considered. */
  berthImages(): Iterable<BerthImage>;
  /** Image ids some task holds now: never removed. */
  heldImageIds(): Iterable<string>;
  /**
   * When the image was last used (its last acquire or release), for least-recently-used order.
   * Optional; without an answer the image's last local tag time is used, then its creation time.
   */
  lastUsedAt?(imageId: string): number | Date | undefined;
}

/** What the pruner found out about one berth image (one inspect). */
export interface BerthImageFacts {
  imageId: string;
  refs: string[];
  sizeBytes: number;
  createdAtMs: number;
  lastUsedAtMs: number;
  labels: Record<string, string>;
  repoTags: string[];
  repoDigests: string[];
  /**
   * Whether the engine knows the image by a name berth did not acquire it by: someone else uses it
   * (tagged it, or pulled it under another name), so berth leaves it alone.
   */
  shared: boolean;
}

/** A name in the form the engine compares: `docker.io/library/busybox:latest`; unparsable text as it is. */
export function canonicalImageName(text: string): string {
  try {
    return parseImageReference(text).canonical;
  } catch {
    return text;
  }
}

/** Whether some name of the image is not one berth acquired it by. */
export function isSharedImage(berthRefs: readonly string[], repoTags: readonly string[]): boolean {
  const ours = new Set(berthRefs.map(canonicalImageName));
  return repoTags.some((tag) => !ours.has(canonicalImageName(tag)));
}

/**
 * Exempt images: by reference with a tag or digest (`busybox:1.36`, `repo@sha256:…`: that name), by
 * repository alone (`busybox`, `registry:5000/team/app`: every tag of it) or by image id (`sha256:…`).
 */
export interface ExemptImages {
  /** Canonical names with tag or digest. */
  readonly names: ReadonlySet<string>;
  /** Canonical repositories (`docker.io/library/busybox`) whose every name is exempt. */
  readonly repositories: ReadonlySet<string>;
  readonly ids: ReadonlySet<string>;
}

/** Whether the text names a tag or a digest, rather than a whole repository (a port's colon is not a tag's). */
function hasTagOrDigest(text: string): boolean {
  return text.includes('@') || text.slice(text.lastIndexOf('/') + 1).includes(':');
}

function repositoryOf(text: string): string | undefined {
  try {
    const ref = parseImageReference(text);
    return `${ref.registry}/${ref.repository}`;
  } catch {
    return undefined;
  }
}

const IMAGE_ID = /^sha256:[a-f0-9]{64}$/;

/** Parses an exempt list once: every entry must be a valid reference or a full image id. */
export function parseExemptImages(entries: readonly string[] | undefined, field = 'exempt'): ExemptImages {
  const names = new Set<string>();
  const repositories = new Set<string>();
  const ids = new Set<string>();
  const issues: FieldIssue[] = [];
  (entries ?? []).forEach((entry, index) => {
    if (typeof entry !== 'string') {
      issues.push({ field: `${field}[${index}]`, rule: 'must be an image reference or an image id' });
      return;
    }
    if (IMAGE_ID.test(entry)) {
      ids.add(entry);
      return;
    }
    try {
      const ref = parseImageReference(entry, `${field}[${index}]`);
      if (hasTagOrDigest(entry)) names.add(ref.canonical);
      else repositories.add(`${ref.registry}/${ref.repository}`);
    } catch (error) {
      if (error instanceof ValidationError) issues.push(...error.issues);
      else throw error;
    }
  });
  if (issues.length > 0) throw new ValidationError(issues);
  return { names, repositories, ids };
}

/** Whether any name of the image (berth's, the engine's tags or digests) or its id is exempt. */
export function isExemptImage(image: Pick<BerthImageFacts, 'imageId' | 'refs' | 'repoTags' | 'repoDigests'>, exempt: ExemptImages): boolean {
  if (exempt.ids.has(image.imageId)) return true;
  return [...image.refs, ...image.repoTags, ...image.repoDigests].some((name) => {
    if (exempt.names.has(canonicalImageName(name))) return true;
    const repository = exempt.repositories.size > 0 ? repositoryOf(name) : undefined;
    return repository !== undefined && exempt.repositories.has(repository);
  });
}

/** The coordinator may list one image under several entries: one per image, with every name. */
export function mergeBerthImages(images: Iterable<BerthImage>): Array<{ imageId: string; refs: string[] }> {
  const merged = new Map<string, Set<string>>();
  for (const image of images) {
    const refs = merged.get(image.imageId) ?? new Set<string>();
    for (const ref of image.refs) refs.add(ref);
    merged.set(image.imageId, refs);
  }
  return [...merged].map(([imageId, refs]) => ({ imageId, refs: [...refs] }));
}
