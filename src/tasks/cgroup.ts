import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { CONTAINER_CGROUP_DIRS } from '../engine/detect.js';

/**
 * Where a container's cgroup lives on the engine's host and how its files are read: the one place
 * that knows the layouts (cgroup v1 with one directory per controller, or v2 unified; the engine's
 * cgroupfs or systemd driver). The agent's usage sampler (src/agent/usage.ts) and the driver's OOM
 * watch (oom-watch.ts) both read through it.
 *
 * The engine removes a container's cgroup as its process exits, before its wait returns (dockerd
 * 20.10 deletes the containerd task, which removes the cgroup, and only then reports the exit), so
 * whatever must be read from a cgroup is read while the container runs.
 */

/** The cgroup hierarchy mounted under /sys/fs/cgroup by default. */
export const DEFAULT_CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * Where a container's cgroup lives under a hierarchy (v2) or a controller's directory (v1), as the
 * engines' cgroup drivers name it: Docker's first, then Podman's (the reader keeps to the one that
 * answered last, so the other engine's paths cost nothing once one was found).
 */
const CONTAINER_CGROUP_PATHS = [...CONTAINER_CGROUP_DIRS.docker, ...CONTAINER_CGROUP_DIRS.podman];

/** Parses `key value` lines (cpu.stat, memory.events, memory.oom_control …) into numbers. */
export function parseFlatKeyed(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key === undefined || key === '' || value === undefined) continue;
    const number = Number(value);
    if (Number.isFinite(number)) values.set(key, number);
  }
  return values;
}

/** A file holding one number (cpuacct.usage, memory.max_usage_in_bytes …); undefined when it holds none ("max"). */
export function parseSingleValue(text: string): number | undefined {
  const trimmed = text.trim();
  if (!/^\d+$/.test(trimmed)) return undefined;
  return Number(trimmed);
}

/**
 * One buffer for every read: the reads are synchronous, so it is never shared by two at once. The
 * files are a few hundred bytes at most; reading them synchronously (open, read, close) costs a few
 * microseconds each, far less than the thread pool's round trips and buffers of fs/promises, and
 * leaves no garbage but the text.
 */
const READ_BUFFER = Buffer.alloc(8192);

/** Reads a small cgroup file; throws as the file system does (ENOENT once the cgroup is gone). */
export function readSmallFile(file: string): string {
  const fd = openSync(file, 'r');
  try {
    const length = readSync(fd, READ_BUFFER, 0, READ_BUFFER.length, 0);
    return READ_BUFFER.toString('latin1', 0, length);
  } finally {
    closeSync(fd);
  }
}

/** A file some kernels lack (memory.peak before Linux 5.19): undefined when it cannot be read. */
export function readOptionalFile(file: string): string | undefined {
  try {
    return readSmallFile(file);
  } catch {
    return undefined;
  }
}

/** Whether the error says the file is not there (the cgroup went away, or never was). */
export function isGone(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ENOENT' || code === 'ENODEV' || code === 'ESRCH';
}

/** How a container's files are read on one hierarchy: v1 names a controller, v2 has one directory. */
export interface CgroupFileReaders<T> {
  /** Reads a v1 container; `at(controller, file)` is the path of one of its files. */
  v1: (at: (controller: string, file: string) => string) => T;
  /** The v1 controllers `v1` reads: without them mounted, the host has nothing to read. */
  v1Controllers: readonly string[];
  /** Reads a v2 container; `at(file)` is the path of one of its files. */
  v2: (at: (file: string) => string) => T;
}

/** Reads one container's cgroup; undefined when its cgroup is not (or no longer) there. Throws on other errors (permissions). */
export type ContainerCgroupReader<T> = (containerId: string) => T | undefined;

/** Which cgroup version is mounted at `root`: 2 when it has cgroup.controllers, 1 with the named controllers, else undefined. */
export function cgroupVersionAt(root: string, v1Controllers: readonly string[]): 1 | 2 | undefined {
  if (existsSync(path.join(root, 'cgroup.controllers'))) return 2;
  // v1: cpu and cpuacct may be one mount (cpu,cpuacct) or two; each name resolves either way.
  return v1Controllers.every((controller) => existsSync(path.join(root, controller))) ? 1 : undefined;
}

/**
 * A reader of containers' cgroups under the hierarchy mounted at `root`, or undefined when none
 * is there (not Linux, or the engine's cgroups are not mounted here). It tries each layout's path,
 * the one that worked last first (a host uses one cgroup driver): the first file a gone cgroup
 * lacks ends the try.
 */
export function containerCgroupReader<T>(root: string, readers: CgroupFileReaders<T>): ContainerCgroupReader<T> | undefined {
  const version = cgroupVersionAt(root, readers.v1Controllers);
  if (version === undefined) return undefined;
  const read =
    version === 2
      ? (relative: string): T => readers.v2((file) => path.join(root, relative, file))
      : (relative: string): T => readers.v1((controller, file) => path.join(root, controller, relative, file));
  let preferred = 0;
  return (containerId) => {
    for (let offset = 0; offset < CONTAINER_CGROUP_PATHS.length; offset++) {
      const index = (preferred + offset) % CONTAINER_CGROUP_PATHS.length;
      try {
        const result = read(CONTAINER_CGROUP_PATHS[index]!(containerId));
        preferred = index;
        return result;
      } catch (error) {
        if (!isGone(error)) throw error;
      }
    }
    return undefined;
  };
}

/**
 * The OOM kills the kernel counted in a v1 memory cgroup (memory.oom_control's `oom_kill`, Linux
 * 4.13 and later); undefined when the kernel does not count them.
 */
export function oomKillsFromV1(oomControl: string): number | undefined {
  return parseFlatKeyed(oomControl).get('oom_kill');
}

/** The OOM kills the kernel counted in a v2 cgroup (memory.events' `oom_kill`, Linux 4.13 and later). */
export function oomKillsFromV2(memoryEvents: string): number | undefined {
  return parseFlatKeyed(memoryEvents).get('oom_kill');
}

/**
 * A reader of a container's OOM kill counter (see oomKillsFromV1/V2): the number, undefined when the
 * cgroup is gone, or null when the kernel keeps no counter there. Undefined when no hierarchy is mounted.
 */
export function oomKillCounterReader(root: string): ContainerCgroupReader<number | null> | undefined {
  return containerCgroupReader<number | null>(root, {
    v1Controllers: ['memory'],
    v1: (at) => oomKillsFromV1(readSmallFile(at('memory', 'memory.oom_control'))) ?? null,
    v2: (at) => oomKillsFromV2(readSmallFile(at('memory.events'))) ?? null,
  });
}
