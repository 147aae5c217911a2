import type { StatsSample } from '../engine/types.js';

/**
 * The figures of a stats sample as `berth stats` and the agent's stats stream show them: CPU % as
 * the docker CLI computes it, memory %, and one sample as a JSON record. Pure functions.
 */

/**
 * CPU use in percent of one CPU, as the docker CLI computes it: the container's share of the CPU
 * time the whole host spent between two readings, times the CPUs online (so 200% is two full
 * cores). 0 when either delta is not positive (the first reading, or a counter reset).
 */
export function cpuPercent(sample: Pick<StatsSample, 'cpuDeltaNanos' | 'systemCpuDeltaNanos' | 'onlineCpus'>): number {
  if (sample.systemCpuDeltaNanos <= 0 || sample.cpuDeltaNanos <= 0) return 0;
  return (sample.cpuDeltaNanos / sample.systemCpuDeltaNanos) * sample.onlineCpus * 100;
}

/** Memory use in percent of the limit (the host's memory when the task has none); 0 without a limit. */
export function memoryPercent(sample: Pick<StatsSample, 'memoryBytes' | 'memoryLimitBytes'>): number {
  return sample.memoryLimitBytes > 0 ? (sample.memoryBytes / sample.memoryLimitBytes) * 100 : 0;
}

/** One sample for scripts (`--json`): raw numbers, the percentages unrounded. */
export interface StatsRecord {
  taskId: string;
  containerId: string;
  /** When the engine took the reading (ISO 8601). */
  at: string;
  /** When it took the previous one; null on the first sample of a stream, whose CPU % then spans the container's life. */
  previousAt: string | null;
  cpuPercent: number;
  onlineCpus: number;
  memoryBytes: number;
  memoryLimitBytes: number;
  memoryPercent: number;
  pids: number;
  networkRxBytes: number;
  networkTxBytes: number;
  blockReadBytes: number;
  blockWriteBytes: number;
}

export function statsRecord(taskId: string, containerId: string, sample: StatsSample): StatsRecord {
  return {
    taskId,
    containerId,
    at: sample.at.toISOString(),
    previousAt: sample.previousAt?.toISOString() ?? null,
    cpuPercent: cpuPercent(sample),
    onlineCpus: sample.onlineCpus,
    memoryBytes: sample.memoryBytes,
    memoryLimitBytes: sample.memoryLimitBytes,
    memoryPercent: memoryPercent(sample),
    pids: sample.pids,
    networkRxBytes: sample.networkRxBytes,
    networkTxBytes: sample.networkTxBytes,
    blockReadBytes: sample.blockReadBytes,
    blockWriteBytes: sample.blockWriteBytes,
  };
}
