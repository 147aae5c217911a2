import { ValidationError } from '../common/errors.js';
import { containerNameForTask, LABELS } from '../common/labels.js';
import { ownerProcessLabels, type OwnerProcess } from '../common/owner-process.js';
import { formatBytesForEngine } from '../common/units.js';
import type { ContainerCreateBody, HealthcheckBody, HostConfigBody, LogConfigBody, MountBody } from '../engine/types.js';
import { PROPAGATION, type MountSpec, type NetworkAttachmentSpec, type PortSpec, type ResolvedHealthcheck, type ResolvedTaskSpec } from './schema.js';

/** The CFS period berth uses; quota = milli-CPUs × 100 over it, as Fn does. */
export const CPU_PERIOD_US = 100_000;

export interface TaskIdentity {
  taskId: string;
  /** The driver or agent that owns the container. */
  ownerId: string;
  /**
   * The start that creates the container. A create whose answer was lost is retried, and the
   * container it made is adopted only by the start that sent it (same owner, task and attempt);
   * any other container under the name is a conflict, as the engine's own name conflict is.
   */
  startAttempt: string;
  /**
   * The process that owns the container, when the owner is short-lived (`berth run`, a library
   * driver): written as the owner-process labels, so that the container can be removed once that
   * process is gone. Absent for owners that outlive their process (the agent).
   */
  ownerProcess?: OwnerProcess;
  /** The task's group, when it belongs to one: it joins the group's namespace and shared volume. */
  group?: GroupMembership;
}

/** How a task of a group is placed in it. */
export interface GroupMembership {
  groupId: string;
  /** The task's name in its group. */
  taskName: string;
  /** The infrastructure container whose network namespace the task joins (`container:<id>`). */
  infraContainerId: string;
  /** The group's shared volume and where every task of the group mounts it. */
  sharedDir?: { volumeName: string; target: string };
}

/** Where a published port is bound on the host when neither the spec nor the driver says. */
export const DEFAULT_PUBLISH_ADDRESS = '127.0.0.1';

export interface CreatePlan {
  name: string;
  body: ContainerCreateBody;
  /**
   * Named networks to connect the container to after its create and before its start: the engine
   * takes one network at create (the first of `networks`), the others are connected one by one.
   */
  connectNetworks: ReadonlyArray<{ name: string; aliases: readonly string[] }>;
}

/** The engine's port bindings and exposed ports for `ports`; a port without a host port gets a dynamic one (HostPort ""). */
export function toPortBindings(ports: readonly PortSpec[]): Pick<ContainerCreateBody, 'ExposedPorts'> & Pick<HostConfigBody, 'PortBindings'> {
  if (ports.length === 0) return {};
  const exposed: Record<string, Record<string, never>> = {};
  const bindings: Record<string, Array<{ HostIp: string; HostPort: string }>> = {};
  for (const port of ports) {
    const key = `${port.container}/${port.protocol}`;
    exposed[key] = {};
    bindings[key] = [{ HostIp: port.hostIp ?? DEFAULT_PUBLISH_ADDRESS, HostPort: port.host === undefined ? '' : String(port.host) }];
  }
  return { ExposedPorts: exposed, PortBindings: bindings };
}

/** NetworkMode and the create's endpoint for named networks; the rest are connected after the create. */
export function toNetworkPlacement(networks: readonly NetworkAttachmentSpec[]): {
  networkMode?: string;
  networkingConfig?: ContainerCreateBody['NetworkingConfig'];
  connectNetworks: CreatePlan['connectNetworks'];
} {
  const [first, ...rest] = networks;
  if (first === undefined) return { connectNetworks: [] };
  return {
    networkMode: first.name,
    networkingConfig: { EndpointsConfig: { [first.name]: first.aliases.length > 0 ? { Aliases: [...first.aliases] } : {} } },
    connectNetworks: rest.map((n) => ({ name: n.name, aliases: [...n.aliases] })),
  };
}

function toMount(mount: MountSpec): MountBody {
  switch (mount.type) {
    case 'bind':
      return {
        Type: 'bind',
        Source: mount.source,
        Target: mount.target,
        ReadOnly: mount.readOnly,
        BindOptions: { Propagation: PROPAGATION[mount.propagation] },
      };
    case 'volume':
      return { Type: 'volume', Source: mount.source, Target: mount.target, ReadOnly: mount.readOnly };
    case 'tmpfs':
      return {
        Type: 'tmpfs',
        Target: mount.target,
        TmpfsOptions: { ...(mount.sizeBytes === undefined ? {} : { SizeBytes: mount.sizeBytes }), ...(mount.mode === undefined ? {} : { Mode: mount.mode }) },
      };
  }
}

function toLogConfig(log: ResolvedTaskSpec['log']): LogConfigBody {
  if (log.driver === 'none') return { Type: 'none', Config: {} };
  // The engine keeps its own copy of the output; berth reads attach, so the copy only needs a bound.
  const config: Record<string, string> = { 'max-size': formatBytesForEngine(log.maxSizeBytes), 'max-file': String(log.maxFiles) };
  // The local driver compresses rotated files by default, which the engine refuses with a single file.
  if (log.driver === 'local' && log.maxFiles === 1) config.compress = 'false';
  return { Type: log.driver, Config: config };
}

const NS_PER_MS = 1_000_000;

/** Milliseconds (possibly fractional) to the engine's whole nanoseconds; undefined stays unset (the engine's 0: inherit). */
function toNanoseconds(ms: number | undefined): number | undefined {
  return ms === undefined ? undefined : Math.round(ms * NS_PER_MS);
}

/** The engine's Healthcheck: ["NONE"] disables, [] inherits the image's command, CMD runs argv, CMD-SHELL a shell line. */
export function toHealthcheck(check: ResolvedHealthcheck): HealthcheckBody {
  if (check.disabled) return { Test: ['NONE'] };
  const { test } = check;
  const body: HealthcheckBody = {
    Test: test.kind === 'exec' ? ['CMD', ...test.command] : test.kind === 'shell' ? ['CMD-SHELL', test.shell] : [],
  };
  const interval = toNanoseconds(check.intervalMs);
  const timeout = toNanoseconds(check.timeoutMs);
  const startPeriod = toNanoseconds(check.startPeriodMs);
  if (interval !== undefined) body.Interval = interval;
  if (timeout !== undefined) body.Timeout = timeout;
  if (startPeriod !== undefined) body.StartPeriod = startPeriod;
  if (check.retries !== undefined) body.Retries = check.retries;
  return body;
}

/**
 * The engine's security options for a spec: no-new-privileges, the seccomp profile (its JSON text
 * itself, as the docker CLI sends a profile file's content) and the AppArmor profile.
 */
export function toSecurityOpt(spec: Pick<ResolvedTaskSpec, 'noNewPrivileges' | 'seccomp' | 'apparmor'>): string[] {
  const options: string[] = [];
  if (spec.noNewPrivileges) options.push('no-new-privileges');
  switch (spec.seccomp.kind) {
    case 'default':
      break;
    case 'unconfined':
      options.push('seccomp=unconfined');
      break;
    case 'profile':
      options.push(`seccomp=${spec.seccomp.json}`);
      break;
    case 'named':
      // The driver reads a named profile's file just before the create (tasks/seccomp-profiles.ts).
      throw new ValidationError([{ field: 'seccomp', rule: `profile ${spec.seccomp.name} was not resolved to its file before the create` }]);
  }
  if (spec.apparmor !== undefined) options.push(`apparmor=${spec.apparmor}`);
  return options;
}

/** The sandbox's host settings: set only where the spec sets them, so that the engine's defaults stay its own. */
function addSandbox(hostConfig: HostConfigBody, spec: ResolvedTaskSpec): void {
  if (spec.readOnlyRootfs) hostConfig.ReadonlyRootfs = true;
  const securityOpt = toSecurityOpt(spec);
  if (securityOpt.length > 0) hostConfig.SecurityOpt = securityOpt;
  if (spec.ulimits.length > 0) hostConfig.Ulimits = spec.ulimits.map((u) => ({ Name: u.name, Soft: u.soft, Hard: u.hard }));
  if (spec.init) hostConfig.Init = true;
  if (spec.shmSizeBytes !== undefined) hostConfig.ShmSize = spec.shmSizeBytes;
  if (spec.dns.length > 0) hostConfig.Dns = [...spec.dns];
  if (spec.dnsSearch.length > 0) hostConfig.DnsSearch = [...spec.dnsSearch];
  if (spec.extraHosts.length > 0) hostConfig.ExtraHosts = [...spec.extraHosts];
  if (Object.keys(spec.sysctls).length > 0) hostConfig.Sysctls = { ...spec.sysctls };
  if (spec.devices.length > 0) hostConfig.Devices = spec.devices.map((d) => ({ PathOnHost: d.source, PathInContainer: d.target, CgroupPermissions: d.permissions }));
  if (spec.runtime !== undefined) hostConfig.Runtime = spec.runtime;
  if (spec.oomScoreAdj !== undefined) hostConfig.OomScoreAdj = spec.oomScoreAdj;
  if (spec.cpuset !== undefined) hostConfig.CpusetCpus = spec.cpuset;
  if (spec.storageSizeBytes !== undefined) hostConfig.StorageOpt = { size: String(spec.storageSizeBytes) };
}

/** Translates a resolved spec into the engine's create request. Pure: no I/O, no clock, no environment. */
export function toCreatePlan(spec: ResolvedTaskSpec, identity: TaskIdentity): CreatePlan {
  const { resources } = spec;
  const hostConfig: HostConfigBody = {
    NetworkMode: spec.network,
    Mounts: spec.mounts.map(toMount),
    CapAdd: [...spec.capAdd],
    CapDrop: [...spec.capDrop],
    Privileged: spec.privileged,
    LogConfig: toLogConfig(spec.log),
    AutoRemove: false,
  };
  if (resources.memoryBytes !== undefined) {
    hostConfig.Memory = resources.memoryBytes;
    // Equal to the memory limit: no swap, so an over-limit task is OOM-killed rather than thrashing.
    hostConfig.MemorySwap = resources.memoryBytes;
  }
  if (resources.memoryReservationBytes !== undefined) hostConfig.MemoryReservation = resources.memoryReservationBytes;
  if (resources.cpuMilli !== undefined) {
    hostConfig.CpuQuota = resources.cpuMilli * 100;
    hostConfig.CpuPeriod = CPU_PERIOD_US;
  }
  if (resources.cpuShares !== undefined) hostConfig.CpuShares = resources.cpuShares;
  if (resources.pidsLimit !== undefined) hostConfig.PidsLimit = resources.pidsLimit;
  addSandbox(hostConfig, spec);
  const { ExposedPorts, PortBindings } = toPortBindings(spec.ports);
  if (PortBindings !== undefined) hostConfig.PortBindings = PortBindings;
  const placement = toNetworkPlacement(spec.networks);
  if (placement.networkMode !== undefined) hostConfig.NetworkMode = placement.networkMode;
  const group = identity.group;
  if (group !== undefined) {
    // A group's task lives in the namespace its infrastructure container owns (ports, DNS, hosts and hostname are the group's).
    hostConfig.NetworkMode = `container:${group.infraContainerId}`;
    if (group.sharedDir !== undefined) hostConfig.Mounts = [...(hostConfig.Mounts ?? []), { Type: 'volume', Source: group.sharedDir.volumeName, Target: group.sharedDir.target }];
  }

  const hasStdin = spec.stdin !== undefined;
  // Stdin is open when there is content to write or the spec keeps it open for attach clients. With
  // content alone it closes once the content is written (StdinOnce: when berth's attach ends it);
  // with openStdin it stays open whoever attaches and detaches, until the task ends.
  const isStdinOpen = hasStdin || spec.openStdin;
  const body: ContainerCreateBody = {
    Image: spec.image,
    Env: Object.entries(spec.env).map(([key, value]) => `${key}=${value}`),
    Labels: {
      ...spec.labels,
      [LABELS.managed]: 'true',
      [LABELS.taskId]: identity.taskId,
      [LABELS.ownerId]: identity.ownerId,
      [LABELS.startAttempt]: identity.startAttempt,
      ...(identity.ownerProcess === undefined ? {} : ownerProcessLabels(identity.ownerProcess)),
      ...(group === undefined ? {} : { [LABELS.groupId]: group.groupId, [LABELS.groupTask]: group.taskName }),
    },
    Tty: spec.tty,
    OpenStdin: isStdinOpen,
    StdinOnce: hasStdin && !spec.openStdin,
    AttachStdin: isStdinOpen,
    AttachStdout: true,
    AttachStderr: true,
    StopSignal: spec.stopSignal,
    StopTimeout: Math.ceil(spec.stopGraceMs / 1000),
    HostConfig: hostConfig,
  };
  if (spec.command !== undefined) body.Cmd = [...spec.command];
  if (spec.entrypoint !== undefined) body.Entrypoint = [...spec.entrypoint];
  if (spec.workdir !== undefined) body.WorkingDir = spec.workdir;
  if (spec.user !== undefined) body.User = spec.user;
  if (spec.healthcheck !== undefined) body.Healthcheck = toHealthcheck(spec.healthcheck);
  if (spec.hostname !== undefined) body.Hostname = spec.hostname;
  if (ExposedPorts !== undefined) body.ExposedPorts = ExposedPorts;
  if (placement.networkingConfig !== undefined && group === undefined) body.NetworkingConfig = placement.networkingConfig;
  return { name: containerNameForTask(identity), body, connectNetworks: group === undefined ? placement.connectNetworks : [] };
}
