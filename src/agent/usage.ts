import type { Logger } from '../common/logger.js';
import { messageOf } from '../common/errors.js';
import { containerCgroupReader, DEFAULT_CGROUP_ROOT, parseFlatKeyed, parseSingleValue, readOptionalFile, readSmallFile, type ContainerCgroupReader } from '../tasks/cgroup.js';
import type { TaskUsage, UsageOutcome } from '../state/tasks.js';

/**
 * The usage summary the agent records when a task ends (CPU time, peak memory, whether it was
 * throttled), for billing and capacity planning.
 *
 * Why cgroup files, read by one timer for every running task: the figures must be read before the
 * container ends, because the engine removes a container's cgroup as its process exits (before
 * its wait returns), and its one-shot stats of an exited container are empty (dockerd 20.10). The
 * cgroup's counters are cumulative since the container started (CPU time, and on cgroup v1 and
 * Linux >= 5.19 the memory high-water mark), so the last reading holds the whole life up to it,
 * also for a task a restarted agent follows again. Reading three or four small files per task per
 * interval costs far less than the engine's stats stream (one HTTP stream per task, and the engine
 * reading the same files to encode JSON every second).
 *
 * Limits, documented in the README: what a task does after the last reading before its end (at
 * most `intervalMs`) is not counted; a task that ended before its first reading, or while the agent
 * was not running, has no usage (`usageMissing` says why); and the cgroups must be readable on the
 * agent's host (a remote engine: no usage). Where the kernel keeps no high-water mark (cgroup v2
 * before Linux 5.19), the peak is the highest reading.
 */

/** The counters of one container's cgroup at one reading. */
export interface CgroupReading {
  /** CPU time in user and system mode since the container started. */
  cpuNanos: number;
  /** The memory high-water mark, when the kernel keeps one (v1 memory.max_usage_in_bytes, v2 memory.peak). */
  peakMemoryBytes?: number;
  /** Memory in use now. */
  memoryBytes: number;
  /** Scheduler periods in which the CPU quota held the container back. */
  throttledPeriods: number;
  throttledNanos: number;
}

export type { TaskUsage, UsageOutcome };

export { parseFlatKeyed, parseSingleValue };

/** The files of a cgroup v1 container, read as text. */
export interface CgroupV1Files {
  cpuacctUsage: string;
  cpuStat: string;
  memoryMaxUsage: string;
  memoryUsage: string;
}

/** The files of a cgroup v2 container, read as text; memory.peak is absent before Linux 5.19. */
export interface CgroupV2Files {
  cpuStat: string;
  memoryCurrent: string;
  memoryPeak?: string;
}

/** A v1 reading: cpuacct.usage (ns), cpu.stat (nr_throttled, throttled_time in ns), memory max and current usage. */
export function readingFromV1(files: CgroupV1Files): CgroupReading {
  const cpuStat = parseFlatKeyed(files.cpuStat);
  const peak = parseSingleValue(files.memoryMaxUsage);
  return {
    cpuNanos: parseSingleValue(files.cpuacctUsage) ?? 0,
    ...(peak === undefined ? {} : { peakMemoryBytes: peak }),
    memoryBytes: parseSingleValue(files.memoryUsage) ?? 0,
    throttledPeriods: cpuStat.get('nr_throttled') ?? 0,
    throttledNanos: cpuStat.get('throttled_time') ?? 0,
  };
}

/** A v2 reading: cpu.stat (usage_usec, nr_throttled, throttled_usec), memory.current and memory.peak. */
export function readingFromV2(files: CgroupV2Files): CgroupReading {
  const cpuStat = parseFlatKeyed(files.cpuStat);
  const peak = files.memoryPeak === undefined ? undefined : parseSingleValue(files.memoryPeak);
  return {
    cpuNanos: (cpuStat.get('usage_usec') ?? 0) * 1000,
    ...(peak === undefined ? {} : { peakMemoryBytes: peak }),
    memoryBytes: parseSingleValue(files.memoryCurrent) ?? 0,
    throttledPeriods: cpuStat.get('nr_throttled') ?? 0,
    throttledNanos: (cpuStat.get('throttled_usec') ?? 0) * 1000,
  };
}

/** A task's readings so far, folded: counters are cumulative, so the latest wins; the peak is the highest seen. */
export interface UsageTally {
  samples: number;
  last: CgroupReading;
  lastAtMs: number;
  peakMemoryBytes: number;
}

/** Adds a reading to a tally (undefined: the first). */
export function addReading(tally: UsageTally | undefined, reading: CgroupReading, atMs: number): UsageTally {
  const peakOfReading = Math.max(reading.peakMemoryBytes ?? 0, reading.memoryBytes);
  return {
    samples: (tally?.samples ?? 0) + 1,
    // A counter never goes back within one cgroup; a lower reading (a late read overtaken by a newer one) is ignored.
    last: tally && tally.last.cpuNanos > reading.cpuNanos ? tally.last : reading,
    lastAtMs: Math.max(tally?.lastAtMs ?? 0, atMs),
    peakMemoryBytes: Math.max(tally?.peakMemoryBytes ?? 0, peakOfReading),
  };
}

/** The usage a tally gives at the task's end. */
export function usageOf(tally: UsageTally, end: { oomKilled: boolean }): TaskUsage {
  return {
    cpuTimeMs: Math.round(tally.last.cpuNanos / 1e6),
    peakMemoryBytes: tally.peakMemoryBytes,
    throttled: tally.last.throttledPeriods > 0 || end.oomKilled,
    throttledPeriods: tally.last.throttledPeriods,
    throttledTimeMs: Math.round(tally.last.throttledNanos / 1e6),
    oomKilled: end.oomKilled,
    samples: tally.samples,
    sampledAt: new Date(tally.lastAtMs).toISOString(),
  };
}

/**
 * The reader of containers' usage counters under the hierarchy mounted at `root` (see
 * src/tasks/cgroup.ts for the layouts), or undefined when none is there.
 */
function usageReader(root: string): ContainerCgroupReader<CgroupReading> | undefined {
  return containerCgroupReader<CgroupReading>(root, {
    v1Controllers: ['cpuacct', 'memory'],
    v1: (at) =>
      readingFromV1({
        cpuacctUsage: readSmallFile(at('cpuacct', 'cpuacct.usage')),
        cpuStat: readSmallFile(at('cpu', 'cpu.stat')),
        memoryMaxUsage: readSmallFile(at('memory', 'memory.max_usage_in_bytes')),
        memoryUsage: readSmallFile(at('memory', 'memory.usage_in_bytes')),
      }),
    v2: (at) => {
      const cpuStat = readSmallFile(at('cpu.stat'));
      const memoryCurrent = readSmallFile(at('memory.current'));
      const memoryPeak = readOptionalFile(at('memory.peak'));
      return readingFromV2({ cpuStat, memoryCurrent, ...(memoryPeak === undefined ? {} : { memoryPeak }) });
    },
  });
}

export interface UsageSamplerOptions {
  /** Where the cgroup hierarchy is mounted. Default /sys/fs/cgroup. */
  cgroupRoot?: string;
  /** How often every running task's cgroup is read. Default 1 s. */
  intervalMs?: number;
  logger: Logger;
  nowMs?: () => number;
}

/** The default reading interval: what a task does after its last reading is not counted. */
export const USAGE_SAMPLE_INTERVAL_MS = 1000;

interface Tracked {
  containerId: string;
  tally?: UsageTally;
  /** Set once a reading found the cgroup gone: the container has ended, and later readings would find nothing. */
  isGone: boolean;
}

/**
 * Reads the cgroups of the agent's running tasks: once when a task is followed (started or
 * recovered), then every `intervalMs` by one timer for all of them, and gives the summary when the
 * task ends. See the module comment for why and for the limits.
 */
export class UsageSampler {
  readonly #tracked = new Map<string, Tracked>();
  readonly #intervalMs: number;
  readonly #logger: Logger;
  readonly #nowMs: () => number;
  readonly #reader: ContainerCgroupReader<CgroupReading> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #warned = false;

  constructor(options: UsageSamplerOptions) {
    this.#intervalMs = options.intervalMs ?? USAGE_SAMPLE_INTERVAL_MS;
    this.#logger = options.logger;
    this.#nowMs = options.nowMs ?? Date.now;
    this.#reader = usageReader(options.cgroupRoot ?? DEFAULT_CGROUP_ROOT);
  }

  /** Starts reading a task's container (a task followed again after a restart is read from where its counters are). */
  track(taskId: string, containerId: string): void {
    const tracked: Tracked = { containerId, isGone: false };
    this.#tracked.set(taskId, tracked);
    // Nothing to read on this host: no reading, no timer.
    if (!this.#reader) return;
    this.#read(taskId, tracked);
    if (!this.#timer) {
      this.#timer = setInterval(() => this.#readAll(), this.#intervalMs);
      this.#timer.unref();
    }
  }

  /** What a running task used up to its latest reading; undefined before the first one, or when it is not tracked. */
  current(taskId: string): TaskUsage | undefined {
    const tally = this.#tracked.get(taskId)?.tally;
    return tally ? usageOf(tally, { oomKilled: false }) : undefined;
  }

  /** Stops reading a task without recording anything (the agent shuts down: the next agent follows it). */
  forget(taskId: string): void {
    this.#tracked.delete(taskId);
    this.#stopWhenIdle();
  }

  /** The task ended: its usage from the readings so far, or why there is none; undefined when it was never tracked. */
  async end(taskId: string, end: { oomKilled: boolean }): Promise<UsageOutcome | undefined> {
    const tracked = this.#tracked.get(taskId);
    if (!tracked) return undefined;
    this.#tracked.delete(taskId);
    this.#stopWhenIdle();
    if (tracked.tally) return { usage: usageOf(tracked.tally, end) };
    if (!this.#reader) return { missing: 'the engine\'s cgroups are not readable on the agent\'s host (cgroup v1 or v2 under /sys/fs/cgroup, cgroupfs or systemd driver)' };
    return { missing: 'the container ended before the agent\'s first reading of its cgroup (a task shorter than a moment, or one that ended while the agent was not running)' };
  }

  close(): void {
    this.#tracked.clear();
    this.#stopWhenIdle();
  }

  #stopWhenIdle(): void {
    if (this.#tracked.size > 0 || !this.#timer) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #readAll(): void {
    for (const [taskId, tracked] of this.#tracked) this.#read(taskId, tracked);
  }

  /** Reads a task's cgroup once, synchronously (see readSmallFile in src/tasks/cgroup.ts). */
  #read(taskId: string, tracked: Tracked): void {
    if (tracked.isGone || !this.#reader) return;
    try {
      const atMs = this.#nowMs();
      const reading = this.#reader(tracked.containerId);
      if (reading === undefined) tracked.isGone = true;
      else tracked.tally = addReading(tracked.tally, reading, atMs);
    } catch (error) {
      // A file that cannot be read (permissions, a kernel without it): usage is left out, the task is not affected.
      tracked.isGone = true;
      if (!this.#warned) this.#logger.warn({ taskId, error: messageOf(error) }, 'could not read a task\'s cgroup; its usage is not recorded');
      this.#warned = true;
    }
  }
}
