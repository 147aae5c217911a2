/**
 * berth's own view of the Docker Engine API objects it uses. Field names follow the engine's JSON,
 * so the translation from a task spec is easy to check against the API reference; nothing here is
 * a dockerode type.
 */

export interface MountBody {
  Type: 'bind' | 'volume' | 'tmpfs';
  Source?: string;
  Target: string;
  ReadOnly?: boolean;
  BindOptions?: { Propagation: 'rprivate' | 'rslave' | 'rshared' };
  VolumeOptions?: { NoCopy?: boolean; Labels?: Record<string, string> };
  TmpfsOptions?: { SizeBytes?: number; Mode?: number };
}

export interface LogConfigBody {
  Type: 'local' | 'json-file' | 'none';
  Config: Record<string, string>;
}

export interface HostConfigBody {
  Memory?: number;
  MemorySwap?: number;
  MemoryReservation?: number;
  CpuQuota?: number;
  CpuPeriod?: number;
  CpuShares?: number;
  PidsLimit?: number;
  Mounts?: MountBody[];
  NetworkMode?: string;
  CapAdd?: string[];
  CapDrop?: string[];
  Privileged?: boolean;
  LogConfig?: LogConfigBody;
  /** Removal is berth's job: AutoRemove would race its wait and lose the exit code. */
  AutoRemove?: false;
  ReadonlyRootfs?: boolean;
  /** `no-new-privileges`, `seccomp=unconfined`, `seccomp=<profile JSON>`, `apparmor=<profile>`. */
  SecurityOpt?: string[];
  Ulimits?: Array<{ Name: string; Soft: number; Hard: number }>;
  Init?: boolean;
  ShmSize?: number;
  Dns?: string[];
  DnsSearch?: string[];
  /** `host:ip` lines for /etc/hosts. */
  ExtraHosts?: string[];
  Sysctls?: Record<string, string>;
  Devices?: Array<{ PathOnHost: string; PathInContainer: string; CgroupPermissions: string }>;
  Runtime?: string;
  OomScoreAdj?: number;
  CpusetCpus?: string;
  /** The storage driver's options: `size` is a quota on the writable layer. */
  StorageOpt?: Record<string, string>;
  /** `<port>/<protocol>` → where it is published; HostPort "" lets the engine pick one. */
  PortBindings?: Record<string, Array<{ HostIp: string; HostPort: string }>>;
}

/** The endpoint settings of one network at create (aliases are the names it answers to there). */
export interface EndpointSettingsBody {
  Aliases?: string[];
}

/**
 * The engine's health check settings (Config.Healthcheck). Durations are nanoseconds; 0 or absent
 * inherits the image's (or the engine's default). Test: [] inherits the image's command,
 * ["NONE"] disables, ["CMD", argv…] runs argv directly, ["CMD-SHELL", line] runs /bin/sh -c line.
 */
export interface HealthcheckBody {
  Test: string[];
  Interval?: number;
  Timeout?: number;
  StartPeriod?: number;
  Retries?: number;
}

/** The body of POST /containers/create. */
export interface ContainerCreateBody {
  Image: string;
  Cmd?: string[];
  Entrypoint?: string[];
  Env?: string[];
  WorkingDir?: string;
  User?: string;
  Labels: Record<string, string>;
  Tty: boolean;
  OpenStdin: boolean;
  /** With StdinOnce the container's stdin closes when berth's attach closes it. */
  StdinOnce: boolean;
  AttachStdin: boolean;
  AttachStdout: boolean;
  AttachStderr: boolean;
  StopSignal?: string;
  StopTimeout?: number;
  NetworkDisabled?: boolean;
  Hostname?: string;
  Healthcheck?: HealthcheckBody;
  /** `<port>/<protocol>` → {}: the ports PortBindings publishes. */
  ExposedPorts?: Record<string, Record<string, never>>;
  HostConfig: HostConfigBody;
  /** The network named by NetworkMode, with its endpoint settings (API 1.41 takes one here). */
  NetworkingConfig?: { EndpointsConfig: Record<string, EndpointSettingsBody> };
}

/** A container's health as the engine reports it; `none` when its health check is disabled. */
export type HealthStatus = 'starting' | 'healthy' | 'unhealthy' | 'none';

/** One run of a container's health check, as the engine keeps the last few. */
export interface HealthProbe {
  start?: Date;
  end?: Date;
  exitCode: number;
  /** What the check printed (the engine keeps up to 4 KiB). */
  output: string;
}

export type ContainerStatus = 'created' | 'restarting' | 'running' | 'removing' | 'paused' | 'exited' | 'dead';

/** The part of a container's inspect data berth uses. */
export interface ContainerInspect {
  id: string;
  name: string;
  image: string;
  labels: Record<string, string>;
  createdAt: Date;
  status: ContainerStatus;
  running: boolean;
  paused: boolean;
  exitCode: number;
  oomKilled: boolean;
  startedAt?: Date;
  finishedAt?: Date;
  /** The engine's error for the container (e.g. a failed start), or "". */
  error: string;
  tty: boolean;
  openStdin: boolean;
  /**
   * The health check as the engine stored it, the spec's merged with the image's (Config.Healthcheck);
   * undefined when neither defines one. Durations in nanoseconds, 0 for the engine's default.
   */
  healthcheck?: { test: string[]; intervalNs: number; timeoutNs: number; startPeriodNs: number; retries: number };
  /** The health check's state (State.Health); undefined while no check is configured or running. */
  health?: { status: HealthStatus; failingStreak: number; probes: HealthProbe[] };
  hostConfig: {
    memoryBytes: number;
    memorySwapBytes: number;
    memoryReservationBytes: number;
    cpuQuota: number;
    cpuPeriod: number;
    cpuShares: number;
    pidsLimit: number;
    networkMode: string;
    privileged: boolean;
    capAdd: string[];
    capDrop: string[];
    logType: string;
    logConfig: Record<string, string>;
  };
  mounts: Array<{ type: string; source: string; destination: string; readWrite: boolean; propagation: string }>;
  /** The ports the engine published on the host (empty until the container runs, and for network modes without ports). */
  publishedPorts: PublishedPort[];
  /** The networks the container has an endpoint on, with its aliases there. */
  networks: Array<{ name: string; aliases: string[]; ipAddress: string }>;
}

/** A container port published on the host, as the engine bound it. */
export interface PublishedPort {
  container: number;
  protocol: 'tcp' | 'udp';
  hostIp: string;
  host: number;
}

/** One row of GET /containers/json. */
export interface ContainerSummary {
  id: string;
  names: string[];
  image: string;
  labels: Record<string, string>;
  createdAt: Date;
  state: ContainerStatus;
  status: string;
  /** Bytes in the container's writable layer (the engine's SizeRw); present only when listed with `withSize`. */
  sizeRwBytes?: number;
}

export interface ContainerListFilter {
  /** Include stopped containers (default true). */
  all?: boolean;
  /** `key` or `key=value`, all must match (engine-side). */
  labels?: string[];
  names?: string[];
  status?: ContainerStatus[];
  /**
   * Ask the engine for each container's writable-layer size (`sizeRwBytes`). Costly: the engine
   * walks every listed container's layer, so ask only for short, filtered lists. Default false.
   */
  withSize?: boolean;
}

/** One event of a container, e.g. `die` or `health_status: healthy`. */
export interface ContainerEvent {
  /** The engine's action, e.g. `start`, `die`, `health_status: unhealthy`. */
  action: string;
  at: Date;
  /** The container the event is about. */
  containerId: string;
}

export interface WaitResult {
  exitCode: number;
  /** The engine's error waiting on the container, if any. */
  error?: string;
}

/** A sample of a running container's resource use, computed from the engine's stats. */
export interface StatsSample {
  at: Date;
  memoryBytes: number;
  memoryLimitBytes: number;
  /** CPU use in milli-CPUs since the previous sample (1000 = one full core). */
  cpuMilli: number;
  pids: number;
  networkRxBytes: number;
  networkTxBytes: number;
  /** Bytes read from block devices since the container started (every device, as the engine counts them). */
  blockReadBytes: number;
  /** Bytes written to block devices since the container started. */
  blockWriteBytes: number;
  /**
   * CPU time the container used since the previous reading, in nanoseconds (all cores); with
   * `systemCpuDeltaNanos` and `onlineCpus` it gives docker's CPU %.
   */
  cpuDeltaNanos: number;
  /** CPU time the whole host spent since the previous reading, in nanoseconds (all cores). */
  systemCpuDeltaNanos: number;
  /** CPUs online on the host (the engine's count, else the per-CPU usage entries, else 1). */
  onlineCpus: number;
  /**
   * When the engine took the previous reading. Absent on the first sample of a stream: the engine
   * has no previous reading then, so its deltas count from zero and span the container's whole life.
   */
  previousAt?: Date;
}

export interface ImageInspect {
  id: string;
  repoTags: string[];
  repoDigests: string[];
  sizeBytes: number;
  createdAt: Date;
  labels: Record<string, string>;
  /** When the image was last tagged locally (tag, import, commit); undefined when the engine never recorded one. */
  lastTagTime?: Date;
  /** What a container of the image runs unless its create says otherwise (undefined: the image sets none). */
  entrypoint?: string[];
  cmd?: string[];
  workingDir?: string;
}

/** What DELETE /images/{name} did: the names it untagged and the image ids it deleted. */
export type ImageDeleteOutcome =
  | { kind: 'removed'; untagged: string[]; deleted: string[] }
  /** No such image or name: nothing to do. */
  | { kind: 'absent' }
  /** The engine refused (409): a container uses it, or the name is one of several and removal by id was asked. */
  | { kind: 'in-use' };

/** The outcome of removing a network or a volume; not-found and in-use are outcomes, not errors. */
export type RemovalOutcome = 'removed' | 'absent' | 'in-use';

/** One row of GET /networks. The list does not say which containers are attached: inspect does. */
export interface NetworkSummary {
  id: string;
  name: string;
  driver: string;
  scope: string;
  labels: Record<string, string>;
  createdAt: Date;
}

/** A network as GET /networks/{id} shows it, with the containers attached to it. */
export interface NetworkInspect extends NetworkSummary {
  /** Ids of the containers with an endpoint on the network. */
  containerIds: string[];
}

/** One row of GET /volumes. */
export interface VolumeSummary {
  name: string;
  driver: string;
  labels: Record<string, string>;
  /** Undefined when the driver does not report one. */
  createdAt?: Date;
  /** The engine's UsageData.Size when it reports one (GET /system/df does; a list usually does not). */
  sizeBytes?: number;
}

export interface ImageSummary {
  id: string;
  repoTags: string[];
  sizeBytes: number;
  createdAt: Date;
  labels: Record<string, string>;
}

/** Registry credentials as the engine takes them in X-Registry-Auth. */
export interface RegistryAuth {
  username?: string;
  password?: string;
  identitytoken?: string;
  serveraddress: string;
}

/** One line of a pull's progress stream. */
export interface PullProgressEvent {
  /** Layer id, when the line is about a layer. */
  layerId?: string;
  status: string;
  currentBytes?: number;
  totalBytes?: number;
}

/** The engine's storage driver, from its info endpoint: what bounds a container's writable layer. */
export interface StorageDriverInfo {
  /** `overlay2`, `btrfs`, `zfs`, `devicemapper`, `vfs`… */
  driver: string;
  /** The file system under it (`extfs`, `xfs`…), when the driver reports one. */
  backingFilesystem?: string;
  /**
   * Whether the driver can take a size quota (`StorageOpt size=`): btrfs, zfs and devicemapper
   * can; overlay2 only on xfs (mounted with pquota, which the engine does not report: it refuses
   * the create then).
   */
  supportsSizeQuota: boolean;
}

export interface EngineVersion {
  apiVersion: string;
  /** The engine's own version (Docker's, or Podman's when `engine` is podman). */
  version: string;
  os: string;
  arch: string;
  /** Which engine answered (see detect.ts); undefined from `version()`, which does not ask /info. */
  engine?: 'docker' | 'podman';
}
