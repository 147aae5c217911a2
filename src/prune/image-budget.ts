/**
 * The image cache budget (Fn's image cleaner): which images go when the ones berth pulled and
 * nobody holds take more than the budget, and the paced removal that enforces it. The selection is
 * pure; the enforcement runs it over what the engine says, through the pruner's removal step.
 */
import type { Clock } from '../common/clock.js';
import { isBerthError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ImageRemoval } from '../images/removal.js';
import { isExemptImage, mergeBerthImages, type BerthImageFacts, type ExemptImages, type PruneImageSource } from './images.js';
import type { ImageBudgetReport } from './report.js';

export interface BudgetCandidate {
  imageId: string;
  sizeBytes: number;
  lastUsedAtMs: number;
  exempt: boolean;
}

export interface BudgetSelection {
  /** The size of every candidate, exempt ones included: the cache's size. */
  totalBytes: number;
  /** What to remove, least recently used first, to bring the total within the budget (or as near as exemptions allow). */
  victims: BudgetCandidate[];
  /** Every candidate that may go, least recently used first: where to go on when a victim turns out to be in use. */
  order: BudgetCandidate[];
}

/**
 * Fn's image cleaner: when the cache is over budget, the least recently used images go first.
 * Exempt images count toward the cache's size but are never chosen. Ties go to the larger image,
 * then by id, so the choice is stable.
 */
export function selectBudgetVictims(candidates: readonly BudgetCandidate[], budgetBytes: number): BudgetSelection {
  const totalBytes = candidates.reduce((sum, c) => sum + c.sizeBytes, 0);
  const order = candidates
    .filter((c) => !c.exempt)
    .sort((a, b) => a.lastUsedAtMs - b.lastUsedAtMs || b.sizeBytes - a.sizeBytes || (a.imageId < b.imageId ? -1 : a.imageId > b.imageId ? 1 : 0));
  const victims: BudgetCandidate[] = [];
  let remaining = totalBytes;
  for (const candidate of order) {
    if (remaining <= budgetBytes) break;
    victims.push(candidate);
    remaining -= candidate.sizeBytes;
  }
  return { totalBytes, victims, order };
}

export interface ImageBudgetOptions {
  /** The size the images berth pulled and nobody holds may take, in bytes. */
  budgetBytes: number;
  /** Never removed: references (`busybox`, `registry/app:1`) or image ids (`sha256:…`). */
  exempt?: readonly string[];
  /** Report what would be removed; remove nothing. Default false. */
  dryRun?: boolean;
  /** Aborting stops at the next image; resolves with what was removed so far and `cancelled: true`. */
  signal?: AbortSignal;
}

/** What the enforcement needs of the pruner that runs it: a narrow port. */
export interface ImageBudgetDeps {
  /** Without it, no image is ever removed. */
  images: PruneImageSource | undefined;
  /** At most this many removals per enforcement. */
  maxRemovals: number;
  /** The pause between two removals. */
  removalIntervalMs: number;
  clock: Pick<Clock, 'sleep'>;
  logger: Logger;
  /** One inspect of a berth image; undefined when it is gone. */
  imageFacts(image: { imageId: string; refs: string[] }, signal: AbortSignal | undefined): Promise<BerthImageFacts | undefined>;
  /** Removes the image by the removal rule, reporting an untag or deletion; undefined when it failed (recorded in `failed`). */
  removeImage(image: BerthImageFacts, failed: ImageBudgetReport['failed']): Promise<ImageRemoval | undefined>;
}

/**
 * Enforces the budget once: removes the least recently used unheld images until the rest fit,
 * never a held or exempt one, at most `maxRemovals`, one every `removalIntervalMs`. Images someone
 * else names are not berth's to manage: they neither count nor go.
 */
export async function enforceImageBudget(
  deps: ImageBudgetDeps,
  request: { budgetBytes: number; exempt: ExemptImages; dryRun: boolean; signal: AbortSignal | undefined },
): Promise<ImageBudgetReport> {
  const { images, logger } = deps;
  const { budgetBytes, exempt, dryRun, signal } = request;
  const report: ImageBudgetReport = {
    budgetBytes,
    unheldBytesBefore: 0,
    unheldBytesAfter: 0,
    removed: [],
    untagged: [],
    reclaimedBytes: 0,
    withinBudget: true,
    limitReached: false,
    kept: [],
    failed: [],
    dryRun,
    cancelled: false,
  };
  if (!images) return report;
  /** Checks the signal between images: an aborted enforcement stops at the next one. */
  const stopped = (): boolean => {
    if (signal?.aborted) report.cancelled = true;
    return report.cancelled;
  };
  const held = new Set(images.heldImageIds());
  const facts = new Map<string, BerthImageFacts>();
  try {
    for (const image of mergeBerthImages(images.berthImages())) {
      if (stopped()) break;
      if (held.has(image.imageId)) continue;
      const found = await deps.imageFacts(image, signal);
      if (!found) continue;
      if (found.shared) report.kept.push({ kind: 'images', id: found.imageId, reason: 'shared' });
      else facts.set(found.imageId, found);
    }
  } catch (error) {
    if (signal?.aborted && isBerthError(error, 'BERTH_CANCELLED')) report.cancelled = true;
    else throw error;
  }
  const candidates = [...facts.values()].map((f) => ({ imageId: f.imageId, sizeBytes: f.sizeBytes, lastUsedAtMs: f.lastUsedAtMs, exempt: isExemptImage(f, exempt) }));
  const selection = selectBudgetVictims(candidates, budgetBytes);
  report.unheldBytesBefore = selection.totalBytes;
  let remaining = selection.totalBytes;
  if (!report.cancelled && remaining > budgetBytes) {
    for (const candidate of candidates) if (candidate.exempt) report.kept.push({ kind: 'images', id: candidate.imageId, reason: 'exempt' });
    let attempts = 0;
    for (const victim of selection.order) {
      if (remaining <= budgetBytes) break;
      if (report.removed.length >= deps.maxRemovals) {
        report.limitReached = true;
        break;
      }
      // Paced: each removal makes the engine delete layers from disk, competing with running tasks.
      if (attempts > 0 && !dryRun) await deps.clock.sleep(deps.removalIntervalMs, signal);
      if (stopped()) break;
      const image = facts.get(victim.imageId)!;
      // Asked again just before removing: a task may have acquired it since.
      if (new Set(images.heldImageIds()).has(image.imageId)) {
        report.kept.push({ kind: 'images', id: image.imageId, reason: 'held' });
        continue;
      }
      const removal = { imageId: image.imageId, refs: image.refs, sizeBytes: image.sizeBytes, lastUsedAt: new Date(image.lastUsedAtMs) };
      if (dryRun) {
        report.removed.push(removal);
        report.untagged.push(...image.refs);
        remaining -= image.sizeBytes;
        continue;
      }
      attempts++;
      const outcome = await deps.removeImage(image, report.failed);
      if (!outcome) continue;
      report.untagged.push(...outcome.untagged);
      if (outcome.kind === 'in-use') report.kept.push({ kind: 'images', id: image.imageId, reason: 'in-use' });
      if (outcome.kind === 'named') report.kept.push({ kind: 'images', id: image.imageId, reason: 'shared' });
      if (outcome.kind === 'deleted' || outcome.kind === 'absent') {
        remaining -= image.sizeBytes;
        if (outcome.kind === 'deleted') {
          report.removed.push(removal);
          report.reclaimedBytes += image.sizeBytes;
        }
      }
    }
  }
  report.unheldBytesAfter = remaining;
  report.withinBudget = remaining <= budgetBytes;
  if (report.withinBudget) report.limitReached = false;
  logger.debug({ budgetBytes, before: report.unheldBytesBefore, after: remaining, removed: report.removed.length, dryRun }, 'image budget enforced');
  return report;
}
