/**
 * Decoders of the engine's raw JSON (inspect, list, stats, events, wait, version, image removal) into
 * berth's own types: what the port's methods return. Pure, kept apart from the calls (as Nomad keeps
 * stats apart), so that the port reads as calls and each decoder can be tested on its own.
 */
import type Dockerode from 'dockerode';
import type {
  ContainerEvent,
  ContainerInspect,
  ContainerStatus,
  ContainerSummary,
  EngineVersion,
  HealthStatus,
  HostConfigBody,
  ImageDeleteOutcome,
  ImageInspect,
  ImageSummary,
  NetworkSummary,
  PublishedPort,
  StatsSample,
  VolumeSummary,
  WaitResult,
  StorageDriverInfo,
} from './types.js';

/** A time the engine wrote (RFC 3339, or Unix seconds), or undefined for none (empty, Go's zero time). */
function toDate(value: string | number | undefined): Date | undefined {
  if (value === undefined || value === '' || value === '0001-01-01T00:00:00Z') return undefined;
  return typeof value === 'number' ? new Date(value * 1000) : new Date(value);
}

/** Shape of the engine's container inspect JSON, for the fields berth reads. */
export interface RawInspect {
  Id: string;
  Name: string;
  Created: string;
  Config: {
    Image: string;
    Labels?: Record<string, string> | null;
    Tty?: boolean;
    OpenStdin?: boolean;
    Healthcheck?: { Test?: string[] | null; Interval?: number; Timeout?: number; StartPeriod?: number; Retries?: number } | null;
  };
  State: {
    Status: ContainerStatus;
    Running: boolean;
    Paused: boolean;
    ExitCode: number;
    OOMKilled: boolean;
    StartedAt?: string;
    FinishedAt?: string;
    Error?: string;
    Health?: {
      Status: HealthStatus;
      FailingStreak?: number;
      Log?: Array<{ Start?: string; End?: string; ExitCode: number; Output?: string }> | null;
    } | null;
  };
  /** What create was given (HostConfigBody) comes back, but a limit or a list may be null, and the log driver may be any. */
  HostConfig: { [K in Exclude<keyof HostConfigBody, 'Mounts' | 'LogConfig' | 'AutoRemove'>]?: HostConfigBody[K] | null } & {
    LogConfig?: { Type: string; Config?: Record<string, string> };
  };
  Mounts?: Array<{ Type: string; Source: string; Destination: string; RW: boolean; Propagation: string }>;
  NetworkSettings?: {
    Ports?: Record<string, Array<{ HostIp: string; HostPort: string }> | null> | null;
    Networks?: Record<string, { Aliases?: string[] | null; IPAddress?: string }> | null;
  } | null;
}

/** A container's inspect JSON as berth's ContainerInspect. */
export function containerInspectFromRaw(raw: RawInspect): ContainerInspect {
  const host = raw.HostConfig;
  return {
    id: raw.Id,
    name: raw.Name.replace(/^\//, ''),
    image: raw.Config.Image,
    labels: raw.Config.Labels ?? {},
    createdAt: new Date(raw.Created),
    status: raw.State.Status,
    running: raw.State.Running,
    paused: raw.State.Paused,
    exitCode: raw.State.ExitCode,
    oomKilled: raw.State.OOMKilled,
    startedAt: toDate(raw.State.StartedAt),
    finishedAt: toDate(raw.State.FinishedAt),
    error: raw.State.Error ?? '',
    tty: raw.Config.Tty ?? false,
    openStdin: raw.Config.OpenStdin ?? false,
    ...healthFromRaw(raw),
    hostConfig: {
      memoryBytes: host.Memory ?? 0,
      memorySwapBytes: host.MemorySwap ?? 0,
      memoryReservationBytes: host.MemoryReservation ?? 0,
      cpuQuota: host.CpuQuota ?? 0,
      cpuPeriod: host.CpuPeriod ?? 0,
      cpuShares: host.CpuShares ?? 0,
      pidsLimit: host.PidsLimit ?? 0,
      networkMode: host.NetworkMode ?? '',
      privileged: host.Privileged ?? false,
      capAdd: host.CapAdd ?? [],
      capDrop: host.CapDrop ?? [],
      logType: host.LogConfig?.Type ?? '',
      logConfig: host.LogConfig?.Config ?? {},
    },
    publishedPorts: publishedPortsFromRaw(raw.NetworkSettings?.Ports),
    networks: Object.entries(raw.NetworkSettings?.Networks ?? {}).map(([name, n]) => ({ name, aliases: n.Aliases ?? [], ipAddress: n.IPAddress ?? '' })),
    mounts: (raw.Mounts ?? []).map((m) => ({
      type: m.Type,
      source: m.Source,
      destination: m.Destination,
      readWrite: m.RW,
      propagation: m.Propagation,
    })),
  };
}

function healthFromRaw(raw: RawInspect): Pick<ContainerInspect, 'healthcheck' | 'health'> {
  const check = raw.Config.Healthcheck;
  // Podman answers a health state with an empty status for a container without a check; Docker none.
  const health = raw.State.Health?.Status ? raw.State.Health : undefined;
  return {
    ...(check
      ? {
          healthcheck: {
            test: check.Test ?? [],
            intervalNs: check.Interval ?? 0,
            timeoutNs: check.Timeout ?? 0,
            startPeriodNs: check.StartPeriod ?? 0,
            retries: check.Retries ?? 0,
          },
        }
      : {}),
    ...(health
      ? {
          health: {
            status: health.Status,
            failingStreak: health.FailingStreak ?? 0,
            probes: (health.Log ?? []).map((probe) => ({
              start: toDate(probe.Start),
              end: toDate(probe.End),
              exitCode: probe.ExitCode,
              output: probe.Output ?? '',
            })),
          },
        }
      : {}),
  };
}

/** Shape of one sample of the engine's stats stream, for the fields berth reads. */
export interface RawStats {
  read: string;
  preread?: string;
  memory_stats?: { usage?: number; limit?: number; stats?: { inactive_file?: number; total_inactive_file?: number } };
  cpu_stats?: { cpu_usage?: { total_usage?: number; percpu_usage?: number[] | null }; system_cpu_usage?: number; online_cpus?: number };
  precpu_stats?: { cpu_usage?: { total_usage?: number }; system_cpu_usage?: number };
  pids_stats?: { current?: number };
  networks?: Record<string, { rx_bytes: number; tx_bytes: number }>;
  blkio_stats?: { io_service_bytes_recursive?: Array<{ op?: string; value?: number }> | null };
}

/** The engine writes Go's zero time where it has no time ("0001-01-01T00:00:00Z"). */
export const isZeroTime = (time: string | undefined): boolean => time === undefined || time === '' || time.startsWith('0001-');

/**
 * The working set, as the docker CLI computes MEM USAGE: usage less the inactive page cache, which
 * the kernel reclaims first (cgroup v1 reports it as total_inactive_file, v2 as inactive_file).
 */
function memoryWorkingSetBytes(memory: NonNullable<RawStats['memory_stats']>): number {
  const usage = memory.usage ?? 0;
  const cgroupV1Inactive = memory.stats?.total_inactive_file;
  if (cgroupV1Inactive !== undefined && cgroupV1Inactive < usage) return usage - cgroupV1Inactive;
  const inactive = memory.stats?.inactive_file ?? 0;
  return inactive < usage ? usage - inactive : usage;
}

/** One stats sample as berth's StatsSample: CPU in millicores over the engine's own interval, memory as the working set. */
export function statsFromRaw(raw: RawStats): StatsSample {
  const cpuDelta = (raw.cpu_stats?.cpu_usage?.total_usage ?? 0) - (raw.precpu_stats?.cpu_usage?.total_usage ?? 0);
  const systemDelta = (raw.cpu_stats?.system_cpu_usage ?? 0) - (raw.precpu_stats?.system_cpu_usage ?? 0);
  const cpus = raw.cpu_stats?.online_cpus || raw.cpu_stats?.cpu_usage?.percpu_usage?.length || 1;
  const cpuMilli = systemDelta > 0 && cpuDelta > 0 ? Math.round((cpuDelta / systemDelta) * cpus * 1000) : 0;
  let rx = 0;
  let tx = 0;
  for (const net of Object.values(raw.networks ?? {})) {
    rx += net.rx_bytes;
    tx += net.tx_bytes;
  }
  // cgroup v1 names the operations "Read"/"Write", v2 "read"/"write"; the docker CLI sums both.
  let blockRead = 0;
  let blockWrite = 0;
  for (const entry of raw.blkio_stats?.io_service_bytes_recursive ?? []) {
    const op = (entry.op ?? '').toLowerCase();
    if (op === 'read') blockRead += entry.value ?? 0;
    else if (op === 'write') blockWrite += entry.value ?? 0;
  }
  const sample: StatsSample = {
    at: new Date(raw.read),
    memoryBytes: raw.memory_stats ? memoryWorkingSetBytes(raw.memory_stats) : 0,
    memoryLimitBytes: raw.memory_stats?.limit ?? 0,
    cpuMilli,
    pids: raw.pids_stats?.current ?? 0,
    networkRxBytes: rx,
    networkTxBytes: tx,
    blockReadBytes: blockRead,
    blockWriteBytes: blockWrite,
    cpuDeltaNanos: cpuDelta,
    systemCpuDeltaNanos: systemDelta,
    onlineCpus: cpus,
  };
  if (!isZeroTime(raw.preread)) sample.previousAt = new Date(raw.preread!);
  return sample;
}

/** A network (listed or inspected) as berth's NetworkSummary. */
export function networkFromRaw(raw: Dockerode.NetworkInspectInfo): NetworkSummary {
  return {
    id: raw.Id,
    name: raw.Name,
    driver: raw.Driver,
    scope: raw.Scope,
    labels: raw.Labels ?? {},
    createdAt: new Date(raw.Created),
  };
}

/** A row of the container list. `withSize`: the list was asked for sizes (SizeRw). */
export function containerSummaryFromRaw(row: Dockerode.ContainerInfo, withSize: boolean): ContainerSummary {
  return {
    id: row.Id,
    names: row.Names.map((n) => n.replace(/^\//, '')),
    image: row.Image,
    labels: row.Labels ?? {},
    createdAt: new Date(row.Created * 1000),
    state: row.State as ContainerStatus,
    status: row.Status,
    ...(withSize ? { sizeRwBytes: (row as { SizeRw?: number }).SizeRw ?? 0 } : {}),
  };
}

export function imageInspectFromRaw(raw: Dockerode.ImageInspectInfo): ImageInspect {
  return {
    id: raw.Id,
    repoTags: raw.RepoTags ?? [],
    repoDigests: raw.RepoDigests ?? [],
    sizeBytes: raw.Size,
    createdAt: new Date(raw.Created),
    labels: raw.Config?.Labels ?? {},
    lastTagTime: toDate((raw as { Metadata?: { LastTagTime?: string } }).Metadata?.LastTagTime),
    ...imageRunConfig(raw.Config as { Entrypoint?: string[] | string | null; Cmd?: string[] | string | null; WorkingDir?: string } | undefined),
  };
}

/** The image's own Entrypoint, Cmd and WorkingDir (a string form, as old images may hold, is one argument). */
function imageRunConfig(config: { Entrypoint?: string[] | string | null; Cmd?: string[] | string | null; WorkingDir?: string } | undefined): Pick<ImageInspect, 'entrypoint' | 'cmd' | 'workingDir'> {
  const argv = (value: string[] | string | null | undefined): string[] | undefined => (value === null || value === undefined ? undefined : typeof value === 'string' ? [value] : [...value]);
  const entrypoint = argv(config?.Entrypoint);
  const cmd = argv(config?.Cmd);
  return { ...(entrypoint ? { entrypoint } : {}), ...(cmd ? { cmd } : {}), ...(config?.WorkingDir ? { workingDir: config.WorkingDir } : {}) };
}

export function imageSummaryFromRaw(row: Dockerode.ImageInfo): ImageSummary {
  return {
    id: row.Id,
    repoTags: row.RepoTags ?? [],
    sizeBytes: row.Size,
    createdAt: new Date(row.Created * 1000),
    labels: row.Labels ?? {},
  };
}

/** The answer of DELETE /images/{name}: rows of `Untagged` names and `Deleted` image ids. */
export function imageRemovedFromRaw(raw: unknown): ImageDeleteOutcome {
  const rows = Array.isArray(raw) ? (raw as Array<{ Untagged?: string; Deleted?: string }>) : [];
  return {
    kind: 'removed',
    untagged: rows.flatMap((row) => (row.Untagged ? [row.Untagged] : [])),
    deleted: rows.flatMap((row) => (row.Deleted ? [row.Deleted] : [])),
  };
}

export function volumeFromRaw(volume: Dockerode.VolumeInspectInfo): VolumeSummary {
  const size = volume.UsageData?.Size;
  const createdAt = toDate((volume as { CreatedAt?: string }).CreatedAt);
  return {
    name: volume.Name,
    driver: volume.Driver,
    labels: volume.Labels ?? {},
    ...(createdAt ? { createdAt } : {}),
    // The engine reports -1 when it has not computed the size.
    ...(size !== undefined && size >= 0 ? { sizeBytes: size } : {}),
  };
}

/** One line of the engine's event stream, for the fields berth reads (older engines wrote `status` and `id`). */
export interface RawEvent {
  Action?: string;
  status?: string;
  id?: string;
  Actor?: { ID?: string };
  timeNano?: number;
  time?: number;
}

export function containerEventFromRaw(raw: RawEvent): ContainerEvent {
  return {
    action: raw.Action ?? raw.status ?? '',
    at: new Date(raw.timeNano !== undefined ? raw.timeNano / 1e6 : (raw.time ?? 0) * 1000),
    containerId: raw.Actor?.ID ?? raw.id ?? '',
  };
}

/** The storage driver part of GET /info. */
export function storageDriverFromRaw(raw: { Driver?: string; DriverStatus?: Array<[string, string]> | null }): StorageDriverInfo {
  const driver = raw.Driver ?? '';
  const backingFilesystem = (raw.DriverStatus ?? []).find(([key]) => key === 'Backing Filesystem')?.[1];
  const supportsSizeQuota = ['btrfs', 'zfs', 'devicemapper'].includes(driver) || ((driver === 'overlay2' || driver === 'overlay') && backingFilesystem === 'xfs');
  return { driver, ...(backingFilesystem === undefined ? {} : { backingFilesystem }), supportsSizeQuota };
}

export function versionFromRaw(raw: Dockerode.DockerVersion): EngineVersion {
  return { apiVersion: raw.ApiVersion, version: raw.Version, os: raw.Os, arch: raw.Arch };
}

/** The body of POST /containers/{id}/wait. */
export function waitResultFromRaw(raw: { StatusCode: number; Error?: { Message?: string } | null }): WaitResult {
  return { exitCode: raw.StatusCode, error: raw.Error?.Message || undefined };
}

/** The host ports the engine published, from NetworkSettings.Ports (`8080/tcp` → bindings; null: exposed, not published). */
export function publishedPortsFromRaw(raw: Record<string, Array<{ HostIp: string; HostPort: string }> | null> | null | undefined): PublishedPort[] {
  const ports: PublishedPort[] = [];
  for (const [key, bindings] of Object.entries(raw ?? {})) {
    const [port, protocol] = key.split('/');
    for (const binding of bindings ?? []) {
      ports.push({ container: Number(port), protocol: protocol === 'udp' ? 'udp' : 'tcp', hostIp: binding.HostIp, host: Number(binding.HostPort) });
    }
  }
  return ports.sort((a, b) => a.container - b.container || a.protocol.localeCompare(b.protocol) || a.hostIp.localeCompare(b.hostIp));
}
