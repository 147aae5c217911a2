import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { asBerthError, messageOf, type ErrorCode } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { Store } from '../state/store.js';
import type { EndedTask } from '../state/tasks.js';
import type { DiskUsage } from './disk-space.js';
import type { AgentEvents, ExpiryReason } from './events.js';

export type { ExpiryReason } from './events.js';

/** Every reason, in the order they are weighed. */
export const EXPIRY_REASONS: readonly ExpiryReason[] = Object.freeze(['age', 'count', 'disk']);

/** The limits of retention (the `retention.*` keys); each undefined is off. */
export interface RetentionLimits {
  /** An ended task is removed once it ended longer ago than this. */
  readonly maxAgeMs?: number;
  /** At most this many ended tasks are kept. */
  readonly maxCount?: number;
  /** Above this share of the data directory's file system in use (0.9 is 90%), the oldest ended tasks are removed early. */
  readonly diskWatermark?: number;
}

/** One ended task as the choice weighs it. */
export interface RetentionCandidate {
  readonly id: string;
  readonly endedAtMs: number;
  /** The bytes its removal frees (its output files): what counts against the disk's excess. */
  readonly bytes: number;
}

/** What the choice is made from, all measured just before. */
export interface RetentionFigures {
  readonly nowMs: number;
  /** How many tasks have ended, in all (not only the candidates). */
  readonly endedCount: number;
  /** The oldest ended tasks, oldest first (a batch of them). */
  readonly candidates: readonly RetentionCandidate[];
  /** The data directory's file system; undefined when not measured (no watermark, or the measure failed). */
  readonly disk?: DiskUsage;
}

/** A task chosen for removal, and why. */
export interface RetentionVictim {
  readonly id: string;
  readonly reason: ExpiryReason;
}

/** The bytes to free for the disk to be at its watermark again; 0 when it is at or below it (or unmeasured, or off). */
export function bytesOverWatermark(disk: DiskUsage | undefined, watermark: number | undefined): number {
  if (disk === undefined || watermark === undefined || disk.totalBytes <= 0) return 0;
  return Math.max(0, Math.ceil(disk.usedBytes - watermark * disk.totalBytes));
}

/**
 * Which of the candidates (the oldest ended tasks, oldest first) to remove now, and why: each in
 * turn goes if it ended longer ago than `maxAgeMs` (age), else if more than `maxCount` ended tasks
 * would be left with it (count), else while the disk is above its watermark and the removals so far
 * free less than the excess (disk: the choice counts the bytes of every removal, whatever its
 * reason). The first candidate that stays ends the choice: every later one ended later. Pure.
 */
export function chooseVictims(figures: RetentionFigures, limits: RetentionLimits): RetentionVictim[] {
  const victims: RetentionVictim[] = [];
  const excessBytes = bytesOverWatermark(figures.disk, limits.diskWatermark);
  let freedBytes = 0;
  for (const candidate of figures.candidates) {
    const kept = figures.endedCount - victims.length;
    let reason: ExpiryReason | undefined;
    if (limits.maxAgeMs !== undefined && figures.nowMs - candidate.endedAtMs > limits.maxAgeMs) reason = 'age';
    else if (limits.maxCount !== undefined && kept > limits.maxCount) reason = 'count';
    else if (freedBytes < excessBytes) reason = 'disk';
    if (reason === undefined) break;
    victims.push({ id: candidate.id, reason });
    freedBytes += candidate.bytes;
  }
  return victims;
}

/** What one retention pass removed. */
export interface RetentionReport {
  /** Tasks removed, by reason. */
  readonly removed: Readonly<Record<ExpiryReason, number>>;
  /** Pages of the state database given back to the file system. */
  readonly reclaimedPages: number;
}

export interface RetentionDeps {
  store: Pick<Store, 'reclaimSpace' | 'freePages' | 'checkpoint'> & { tasks: Pick<Store['tasks'], 'countEnded' | 'oldestEnded'> };
  /** Removes ended tasks for good, output then record, and resolves with the ids removed (TaskSupervisor.forget: the one removal path). */
  forget: (taskIds: readonly string[]) => Promise<string[]>;
  /** The bytes of a task's stored output (TaskLogStore.outputBytes). */
  outputBytes: (taskId: string) => Promise<number>;
  /** The data directory's file system, as it is now. */
  diskUsage: () => Promise<DiskUsage>;
  events: Pick<AgentEvents, 'emit'>;
  logger: Logger;
  /** Told the code of a pass's failure (metrics: `berth_agent_failures_total`). */
  onError?: (code: ErrorCode) => void;
  /** The limits and interval in force (read at every pass and round, so a reload applies). */
  settings: () => RetentionLimits & { readonly intervalMs: number };
  /** Default Date.now. */
  nowMs?: () => number;
  /** Tasks weighed and removed per batch. Default 500. */
  batchSize?: number;
  /** Free pages given back per step (each step holds the write lock while it moves them). Default 256 (1 MiB of 4 KiB pages). */
  reclaimPagesPerStep?: number;
}

/**
 * Retention of ended tasks: every `retention.interval` (and once at start) it removes, oldest first,
 * the ended tasks past `retention.maxAge`, beyond `retention.maxCount`, and, while the data
 * directory's file system is above `retention.diskWatermark`, more of the oldest. Each removal goes
 * through the supervisor (output files, then record), is announced as a `task.expired` event and
 * counted. It works in batches, yielding to the event loop between them and holding the store's
 * write lock for one short transaction each, so a backlog of 100,000 tasks neither blocks the API
 * nor holds up submits; then it gives the freed database pages back, a few at a time.
 */
export class TaskRetention {
  readonly #deps: RetentionDeps;
  readonly #nowMs: () => number;
  readonly #batchSize: number;
  readonly #reclaimPagesPerStep: number;
  readonly #closing = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<RetentionReport> | undefined;
  /** The pass asked for while one was under way: it begins when that one ends, and every ask meanwhile shares it. */
  #queued: Promise<RetentionReport> | undefined;
  /** The code of the last pass's failure, so that one repeated at every pass is logged once. */
  #lastFailure: ErrorCode | undefined;
  /** Whether the last measure of the disk failed, likewise. */
  #diskUnreadable = false;

  constructor(deps: RetentionDeps) {
    this.#deps = deps;
    this.#nowMs = deps.nowMs ?? Date.now;
    this.#batchSize = deps.batchSize ?? 500;
    this.#reclaimPagesPerStep = deps.reclaimPagesPerStep ?? 256;
  }

  /** Runs a first pass now, then one every `retention.interval` (read again at every round). */
  start(): void {
    if (this.#closing.signal.aborted || this.#timer) return;
    const round = (): void => {
      void this.runNow()
        .catch(() => undefined)
        .finally(() => {
          if (this.#closing.signal.aborted) return;
          this.#timer = setTimeout(round, this.#deps.settings().intervalMs).unref();
        });
    };
    round();
  }

  /**
   * One pass that begins now, or, when one is under way, right after it: the pass under way
   * measured the disk and chose its tasks before this call, so joining it would report removals
   * made before the ask (and miss what changed since). Passes never overlap, and asks made while
   * one waits share it. Never rejects for a failure of its own work: that is logged once per pass,
   * and the next pass tries again.
   */
  runNow(): Promise<RetentionReport> {
    if (this.#queued) return this.#queued;
    if (!this.#running) return this.#begin();
    const queued = this.#running.catch(() => undefined).then(() => {
      this.#queued = undefined;
      return this.#begin();
    });
    this.#queued = queued;
    return queued;
  }

  #begin(): Promise<RetentionReport> {
    const running = this.#pass().finally(() => {
      if (this.#running === running) this.#running = undefined;
    });
    this.#running = running;
    return running;
  }

  /** Stops the schedule and waits for a pass under way (and one asked for after it), which stops after its current batch. */
  async close(): Promise<void> {
    this.#closing.abort();
    clearTimeout(this.#timer);
    await (this.#queued ?? this.#running)?.catch(() => undefined);
  }

  async #pass(): Promise<RetentionReport> {
    const removed: Record<ExpiryReason, number> = { age: 0, count: 0, disk: 0 };
    let reclaimedPages = 0;
    const signal = this.#closing.signal;
    // Counted once per pass, and only for a count limit (a scan of the ended tasks' index), then
    // less what the pass removes: a task that ends during the pass is counted by the next one.
    let endedCount: number | undefined;
    try {
      while (!signal.aborted) {
        const limits = this.#deps.settings();
        if (limits.maxAgeMs === undefined && limits.maxCount === undefined && limits.diskWatermark === undefined) break;
        endedCount ??= limits.maxCount === undefined ? 0 : this.#deps.store.tasks.countEnded();
        const batch = await this.#batch(limits, endedCount);
        if (batch.length === 0) break;
        endedCount -= batch.length;
        for (const victim of batch) removed[victim.reason]++;
        reclaimedPages += this.#reclaimStep();
        // Between batches the API and the supervisor run: a backlog never holds the event loop.
        await yieldToEventLoop();
      }
      while (!signal.aborted && this.#deps.store.freePages() > 0) {
        const step = this.#reclaimStep();
        if (step === 0) break;
        reclaimedPages += step;
        await yieldToEventLoop();
      }
      if (reclaimedPages > 0) this.#deps.store.checkpoint();
      if (this.#lastFailure !== undefined) this.#deps.logger.info({}, 'retention passes work again');
      this.#lastFailure = undefined;
    } catch (error) {
      const code = asBerthError(error).code;
      this.#deps.onError?.(code);
      if (code !== this.#lastFailure) this.#deps.logger.warn({ code, error: messageOf(error), removed }, 'retention pass failed; the next one tries again');
      this.#lastFailure = code;
    }
    const total = removed.age + removed.count + removed.disk;
    if (total > 0) this.#deps.logger.info({ removed, reclaimedPages }, 'retention removed ended tasks');
    return { removed, reclaimedPages };
  }

  /** Chooses and removes one batch; resolves with the tasks removed (none: nothing more to do). */
  async #batch(limits: RetentionLimits, endedCount: number): Promise<RetentionVictim[]> {
    const disk = limits.diskWatermark === undefined ? undefined : await this.#measureDisk();
    const oldest: EndedTask[] = this.#deps.store.tasks.oldestEnded(this.#batchSize);
    if (oldest.length === 0) return [];
    // Only a disk over its watermark needs the sizes (a stat per file): age and count do not.
    const overWatermark = bytesOverWatermark(disk, limits.diskWatermark) > 0;
    const candidates: RetentionCandidate[] = [];
    for (const task of oldest) candidates.push({ id: task.id, endedAtMs: task.endedAtMs, bytes: overWatermark ? await this.#deps.outputBytes(task.id).catch(() => 0) : 0 });
    const victims = chooseVictims({ nowMs: this.#nowMs(), endedCount, candidates, ...(disk ? { disk } : {}) }, limits);
    if (victims.length === 0) return [];
    const forgotten = new Set(await this.#deps.forget(victims.map((victim) => victim.id)));
    const endedAt = new Map(oldest.map((task) => [task.id, task.endedAtMs]));
    const done = victims.filter((victim) => forgotten.has(victim.id));
    for (const victim of done) {
      this.#deps.events.emit({ type: 'task.expired', taskId: victim.id, reason: victim.reason, endedAt: new Date(endedAt.get(victim.id)!).toISOString() });
    }
    return done;
  }

  /** The data directory's file system; undefined when it cannot be measured (logged once while that lasts). */
  async #measureDisk(): Promise<DiskUsage | undefined> {
    try {
      const usage = await this.#deps.diskUsage();
      this.#diskUnreadable = false;
      return usage;
    } catch (error) {
      if (!this.#diskUnreadable) this.#deps.logger.warn({ error: messageOf(error) }, 'could not measure the data directory\'s disk; retention by watermark waits until it can');
      this.#diskUnreadable = true;
      return undefined;
    }
  }

  /** Gives one step of free pages back; resolves with how many. */
  #reclaimStep(): number {
    const before = this.#deps.store.freePages();
    if (before === 0) return 0;
    return Math.max(0, before - this.#deps.store.reclaimSpace(this.#reclaimPagesPerStep));
  }
}
