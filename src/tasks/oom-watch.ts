import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { DEFAULT_CGROUP_ROOT, oomKillCounterReader, type ContainerCgroupReader } from './cgroup.js';

/**
 * Out-of-memory evidence from the kernel, for the tasks the driver follows.
 *
 * Why not only the engine's `State.OOMKilled`: dockerd 20.10 sets it on the exit only when
 * containerd's TaskOOM event reached it before the TaskExit, and the shim publishes TaskOOM from a
 * goroutine woken by the cgroup's OOM notification, which drops it altogether when the cgroup is
 * already gone. On a loaded host (several tasks OOM-killed at once) the exit can win: the flag then
 * reads false, and the engine's `oom` event comes late or never. The kernel itself is not racy:
 *
 * - the container's memory cgroup counts its OOM kills (v1 memory.oom_control, v2 memory.events,
 *   `oom_kill`), read here every `intervalMs` and whenever the engine announces an `oom` or a `die`;
 *   but the engine removes the cgroup as the container exits (measured on dockerd 20.10: 25-170 ms
 *   after the kill), so a task killed within a moment of a reading is seen only by luck;
 * - the kernel's log records a memory cgroup OOM kill with the victim's cgroup path
 *   (`oom-kill:… task_memcg=/docker/<id>`, or `Task in /docker/<id> killed as a result of limit`
 *   before Linux 4.19), and the record outlives the cgroup. It is read (/dev/kmsg, which needs root
 *   or CAP_SYSLOG) only when a task ended in a way only an OOM kill or a stranger's SIGKILL explains.
 *   The kernel rate-limits that record (10 in 5 s across the host), so it is evidence when present,
 *   never proof of absence.
 *
 * Nomad's exec driver watches the cgroup's OOM notification in the same spirit (an eventfd, which
 * Node cannot make: hence the polling and the log). Where neither shows an OOM kill (the engine on
 * another host, no permission, a record rate-limited away), the driver keeps to the engine's flag
 * and events.
 */

/** The narrow port a task handle takes: read now (the task may just have ended) and the verdict at its end. */
export interface OomEvidence {
  /** Reads the container's OOM counter now, if it is still there. */
  readNow(containerId: string): void;
  /** Whether an OOM kill was counted in the container's cgroup by any reading so far. */
  countedKill(containerId: string): boolean;
  /**
   * Whether the kernel shows an OOM kill in the container, asked at its end: its cgroup's counter,
   * then the kernel's log. False says only that nothing here shows one (see the module comment).
   */
  showsOomKill(containerId: string): Promise<boolean>;
}

export interface OomWatchOptions {
  /** Where the cgroup hierarchy is mounted. Default /sys/fs/cgroup. */
  cgroupRoot?: string;
  /** The kernel's log, read as /dev/kmsg is (one record a read), or a plain file; false: never read. Default /dev/kmsg. */
  kernelLogPath?: string | false;
  /** How often every followed container's counter is read. Default 1 s. */
  intervalMs?: number;
  logger: Logger;
}

/** The default reading interval of the OOM counters. */
export const OOM_COUNTER_INTERVAL_MS = 1000;

/** The default kernel log: one record a read, from the oldest kept; needs root or CAP_SYSLOG. */
export const DEFAULT_KERNEL_LOG_PATH = '/dev/kmsg';

/** A record of /dev/kmsg: `priority,sequence,timestamp,flags;message`; a plain file's line is the message. */
const KMSG_PREFIX = /^\d+,\d+,\d+,[^;]*;/;
/** A container id as the engine makes them: 64 hex digits, in the victim's cgroup path. */
const CONTAINER_ID = /[0-9a-f]{64}/;

/**
 * The container whose cgroup an OOM kill record of the kernel's log names as the victim's, or
 * undefined when the line is no such record. Linux 4.19 and later: `oom-kill:…,task_memcg=<path>,…`;
 * before: `Task in <path> killed as a result of limit of <path>`.
 */
export function oomKilledContainerOf(line: string): string | undefined {
  const message = line.replace(KMSG_PREFIX, '');
  const path = message.startsWith('oom-kill:') ? /[:,]task_memcg=([^,\s]*)/.exec(message)?.[1] : /^Task in (\S+) killed as a result of limit/.exec(message)?.[1];
  return path === undefined ? undefined : CONTAINER_ID.exec(path)?.[0];
}

/** Buffer of one kernel log read: larger than a record can be (about 1 KiB of text and its dictionary), or /dev/kmsg refuses the read. */
const KERNEL_LOG_READ_BYTES = 16384;

/**
 * The containers the kernel's log names as OOM-killed, from its oldest kept record to its end;
 * undefined when it cannot be read. /dev/kmsg answers one record a read (EAGAIN at the end, EPIPE
 * for records overwritten while reading); a plain file answers chunks: both are split into lines.
 */
export async function oomKilledContainersInLog(file: string): Promise<Set<string> | undefined> {
  let handle;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  const found = new Set<string>();
  const buffer = Buffer.alloc(KERNEL_LOG_READ_BYTES);
  let pending = '';
  const take = (text: string): void => {
    const lines = (pending + text).split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      const id = oomKilledContainerOf(line);
      if (id !== undefined) found.add(id);
    }
  };
  try {
    for (;;) {
      let bytesRead: number;
      try {
        ({ bytesRead } = await handle.read(buffer, 0, buffer.length, null));
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        // Records overwritten while this reader lagged: the next read goes on from the oldest kept.
        if (code === 'EPIPE') continue;
        if (code === 'EAGAIN') break;
        throw error;
      }
      if (bytesRead === 0) break;
      take(buffer.toString('utf8', 0, bytesRead));
    }
    take('\n');
    return found;
  } catch {
    return undefined;
  } finally {
    await handle.close().catch(() => undefined);
  }
}

interface Watched {
  /** The highest OOM kill count read, once a reading found one. */
  kills?: number;
  /** Whether a reading found the cgroup. */
  seen: boolean;
  /** Set once a reading found the cgroup gone: the container has ended. */
  isGone: boolean;
}

/**
 * Follows the OOM kill counters of the driver's running tasks: once when a task is followed, then
 * every `intervalMs` by one timer for all of them, and when the driver hears of an `oom` or a `die`;
 * tells at a task's end whether the kernel shows an OOM kill. See the module comment for why.
 */
export class OomWatch implements OomEvidence {
  readonly #watched = new Map<string, Watched>();
  readonly #reader: ContainerCgroupReader<number | null> | undefined;
  readonly #kernelLogPath: string | false;
  readonly #intervalMs: number;
  readonly #logger: Logger;
  #timer: NodeJS.Timeout | undefined;
  /** A scan of the kernel's log under way: a verdict asked meanwhile shares it (it reads to the log's end, which is past the ask). */
  #scan: Promise<Set<string> | undefined> | undefined;
  #warned = false;

  constructor(options: OomWatchOptions) {
    this.#reader = oomKillCounterReader(options.cgroupRoot ?? DEFAULT_CGROUP_ROOT);
    this.#kernelLogPath = options.kernelLogPath ?? DEFAULT_KERNEL_LOG_PATH;
    this.#intervalMs = options.intervalMs ?? OOM_COUNTER_INTERVAL_MS;
    this.#logger = options.logger;
  }

  /** Starts following a container (started, or found again after a restart). */
  track(containerId: string): void {
    if (this.#watched.has(containerId)) return;
    const watched: Watched = { seen: false, isGone: false };
    this.#watched.set(containerId, watched);
    if (!this.#reader) return;
    this.#read(containerId, watched);
    if (!this.#timer) {
      this.#timer = setInterval(() => this.#readAll(), this.#intervalMs);
      // The watch serves the tasks' ends; it alone must not keep a process alive.
      this.#timer.unref();
    }
  }

  /** Stops following a container (its end is classified). */
  forget(containerId: string): void {
    this.#watched.delete(containerId);
    this.#stopWhenIdle();
  }

  readNow(containerId: string): void {
    const watched = this.#watched.get(containerId);
    if (watched) this.#read(containerId, watched);
  }

  countedKill(containerId: string): boolean {
    return (this.#watched.get(containerId)?.kills ?? 0) > 0;
  }

  async showsOomKill(containerId: string): Promise<boolean> {
    this.readNow(containerId);
    if (this.countedKill(containerId)) return true;
    if (this.#kernelLogPath === false) return false;
    const logged = await (this.#scan ??= oomKilledContainersInLog(this.#kernelLogPath).finally(() => (this.#scan = undefined)));
    return logged?.has(containerId) ?? false;
  }

  close(): void {
    this.#watched.clear();
    this.#stopWhenIdle();
  }

  #stopWhenIdle(): void {
    if (this.#watched.size > 0 || !this.#timer) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #readAll(): void {
    for (const [containerId, watched] of this.#watched) this.#read(containerId, watched);
  }

  /** Reads a container's counter once, synchronously (see readSmallFile). */
  #read(containerId: string, watched: Watched): void {
    if (watched.isGone || !this.#reader) return;
    try {
      const kills = this.#reader(containerId);
      if (kills === undefined) {
        // Gone, or never there (a task not started yet has no cgroup): gone only once it was seen.
        watched.isGone = watched.seen;
        return;
      }
      watched.seen = true;
      if (kills !== null) watched.kills = Math.max(watched.kills ?? 0, kills);
    } catch (error) {
      // A file that cannot be read (permissions): this container's counter is left out; the kernel's log and the engine still tell.
      watched.isGone = true;
      if (!this.#warned) this.#logger.warn({ containerId, error: messageOf(error) }, 'could not read a container\'s memory cgroup; OOM kills are taken from the engine and the kernel\'s log');
      this.#warned = true;
    }
  }
}
