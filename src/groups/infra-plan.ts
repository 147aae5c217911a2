/**
 * The create request of a group's infrastructure container, and the names and labels of the
 * group's engine objects. Pure: no I/O. The infrastructure container owns the group's network
 * namespace, so everything network-facing about the group is set on it (ports, DNS, hosts file,
 * host name, networks and aliases); its tasks join with `container:<id>` and set none of it.
 */
import { groupNetworkName, groupVolumeName, infraContainerName, LABELS, ROLES, type BerthRole } from '../common/labels.js';
import { ownerProcessLabels, type OwnerProcess } from '../common/owner-process.js';
import type { ContainerCreateBody } from '../engine/types.js';
import { groupAliases, type ResolvedGroupSpec } from '../spec/group.js';
import { toNetworkPlacement, toPortBindings, type CreatePlan, type GroupMembership } from '../spec/translate.js';

export interface GroupIdentity {
  groupId: string;
  /** The driver or agent that owns the group. */
  ownerId: string;
  /**
   * The start of the group that creates its objects: a retried create adopts only objects of the
   * same start, as a task's create does (src/tasks/container-ops.ts).
   */
  startAttempt: string;
  /** A short-lived owner's process (`berth group run`, a library driver): its objects carry the owner-process labels. */
  ownerProcess?: OwnerProcess;
  /** The caller's own labels, put on every object of the group (tests scope by them). */
  labels?: Readonly<Record<string, string>>;
}

/** The labels of one of the group's objects in `role`. */
export function groupObjectLabels(identity: GroupIdentity, role: BerthRole): Record<string, string> {
  return {
    ...identity.labels,
    [LABELS.managed]: 'true',
    [LABELS.ownerId]: identity.ownerId,
    [LABELS.groupId]: identity.groupId,
    [LABELS.role]: role,
    [LABELS.startAttempt]: identity.startAttempt,
    ...(identity.ownerProcess === undefined ? {} : ownerProcessLabels(identity.ownerProcess)),
  };
}

/** The names of the group's engine objects; the volume and network only when the group has them. */
export interface GroupObjectNames {
  infraContainer: string;
  volume?: string;
  network?: string;
}

export function groupObjectNames(spec: Pick<ResolvedGroupSpec, 'sharedDir' | 'network'>, identity: Pick<GroupIdentity, 'groupId' | 'ownerId'>): GroupObjectNames {
  return {
    infraContainer: infraContainerName(identity),
    ...(spec.sharedDir === undefined ? {} : { volume: groupVolumeName(identity) }),
    ...(spec.network.mode === 'private' ? { network: groupNetworkName(identity) } : {}),
  };
}

/** How a task of the group is placed in it, once its infrastructure container exists. */
export function membershipOf(spec: Pick<ResolvedGroupSpec, 'sharedDir' | 'network'>, identity: Pick<GroupIdentity, 'groupId' | 'ownerId'>, taskName: string, infraContainerId: string): GroupMembership {
  const names = groupObjectNames(spec, identity);
  return {
    groupId: identity.groupId,
    taskName,
    infraContainerId,
    ...(names.volume === undefined || spec.sharedDir === undefined ? {} : { sharedDir: { volumeName: names.volume, target: spec.sharedDir } }),
  };
}

/**
 * The infrastructure container's create plan: `image` (berth's built-in pause image or a configured
 * one) with its own command, no capabilities, a read-only root, no log, killed (not stopped) at
 * removal. The network comes from the group: none, the default bridge, its private network (with
 * its tasks' names and its aliases as DNS names), or named networks (the first at create, the rest
 * connected before start).
 */
export function toInfraCreatePlan(spec: ResolvedGroupSpec, identity: GroupIdentity, image: string): CreatePlan {
  const names = groupObjectNames(spec, identity);
  const { network } = spec;
  const { ExposedPorts, PortBindings } = toPortBindings(network.ports);
  const attachments =
    network.mode === 'private' && names.network !== undefined ? [{ name: names.network, aliases: groupAliases(spec) }] : network.mode === 'none' ? [] : network.networks;
  const placement = toNetworkPlacement(attachments);
  const body: ContainerCreateBody = {
    Image: image,
    Labels: groupObjectLabels(identity, ROLES.infra),
    Tty: false,
    OpenStdin: false,
    StdinOnce: false,
    AttachStdin: false,
    AttachStdout: false,
    AttachStderr: false,
    // The pause program has no handler: SIGTERM would wait out a grace period for nothing.
    StopSignal: 'SIGKILL',
    HostConfig: {
      NetworkMode: placement.networkMode ?? (network.mode === 'none' ? 'none' : 'bridge'),
      CapDrop: ['ALL'],
      ReadonlyRootfs: true,
      SecurityOpt: ['no-new-privileges'],
      LogConfig: { Type: 'none', Config: {} },
      AutoRemove: false,
      // Small: it holds a namespace and a sleeping process.
      Memory: 16 * 1024 * 1024,
      MemorySwap: 16 * 1024 * 1024,
      PidsLimit: 8,
      ...(PortBindings === undefined ? {} : { PortBindings }),
      ...(network.dns.length > 0 ? { Dns: [...network.dns] } : {}),
      ...(network.dnsSearch.length > 0 ? { DnsSearch: [...network.dnsSearch] } : {}),
      ...(network.extraHosts.length > 0 ? { ExtraHosts: [...network.extraHosts] } : {}),
    },
  };
  if (ExposedPorts !== undefined) body.ExposedPorts = ExposedPorts;
  if (network.hostname !== undefined) body.Hostname = network.hostname;
  if (placement.networkingConfig !== undefined) body.NetworkingConfig = placement.networkingConfig;
  return { name: names.infraContainer, body, connectNetworks: placement.connectNetworks };
}
