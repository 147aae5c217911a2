/** Every label key berth writes on engine objects. User labels may not use this prefix. */
export const LABEL_PREFIX = 'io.berth.';

export const LABELS = {
  /** Marks an object as created by berth; its value is always "true". */
  managed: `${LABEL_PREFIX}managed`,
  /** The task id the container runs. */
  taskId: `${LABEL_PREFIX}task-id`,
  /** The id of the driver or agent that owns the container. */
  ownerId: `${LABEL_PREFIX}owner-id`,
  /** The start that created the container: only that start adopts it after a create whose answer was lost. */
  startAttempt: `${LABEL_PREFIX}start-attempt`,
  /** The group a container, volume or network belongs to (its tasks, its infrastructure container, its shared volume and network). */
  groupId: `${LABEL_PREFIX}group-id`,
  /** A group task's name within its group. */
  groupTask: `${LABEL_PREFIX}group-task`,
  /**
   * What a berth object other than a task container is for: `infra` (a group's infrastructure
   * container, which owns the group's network namespace), `shared-dir` (a group's shared volume),
   * `network` (a group's own network), `pool` (a warm pool's container, idle or serving a task).
   * Task containers carry none.
   */
  role: `${LABEL_PREFIX}role`,
  /** The warm pool a pool container belongs to (role `pool`); it carries no task id, for a task takes it after its create. */
  pool: `${LABEL_PREFIX}pool`,
  /**
   * The owner process labels below are written only on containers of short-lived owners (`berth
   * run`, a library driver): together they let anyone on the same host tell that the owner process
   * is gone, as testcontainers reaps by session. All five or none. See `src/common/owner-process.ts`.
   *
   * The host: a keyed hash of /etc/machine-id (never the id itself, as machine-id(5) asks), or of
   * the hostname when there is none.
   */
  ownerHost: `${LABEL_PREFIX}owner-host`,
  /** The boot of the host the owner ran in: /proc/sys/kernel/random/boot_id. A pid means nothing across boots. */
  ownerBootId: `${LABEL_PREFIX}owner-boot-id`,
  /** The owner's pid namespace (the inode of /proc/self/ns/pid, `4026531836`): a pid means nothing in another namespace. */
  ownerPidNamespace: `${LABEL_PREFIX}owner-pid-ns`,
  /** The owner's pid, in that namespace. */
  ownerPid: `${LABEL_PREFIX}owner-pid`,
  /** The owner's start time, field 22 of /proc/<pid>/stat (clock ticks after boot): a reused pid has another. */
  ownerStartTime: `${LABEL_PREFIX}owner-start-time`,
} as const;

/** The values of LABELS.role. */
export const ROLES = { infra: 'infra', sharedDir: 'shared-dir', network: 'network', pool: 'pool' } as const;
export type BerthRole = (typeof ROLES)[keyof typeof ROLES];

/** Every container name berth gives starts with this. */
export const CONTAINER_NAME_PREFIX = 'berth-';

/** Who a container name is for: the task and the driver or agent that owns it. */
export interface ContainerNameParts {
  taskId: string;
  ownerId: string;
}

/**
 * The container name of a task of an owner: `berth-<task id>.<owner id>.<length of the owner id>`,
 * e.g. `berth-build-42.cli.3` for `berth run --name build-42`. Derived from the pair so that a
 * retried create finds its own container, and distinct for every pair so that owners sharing an
 * engine never collide on a task id: ids may contain `.` and `-`, so the owner id is found from the
 * end by its length (the digits after the last `.`), and the task id is what remains. The task id
 * comes first so that `docker ps` shows it where a reader looks, and a docker name filter for
 * `berth-<task id>` finds it. Ids match `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, so the name is a valid docker
 * name. Containers made by earlier versions of berth are named `berth-<task id>`; berth finds its
 * containers by their labels, never by name, so those are still recovered, exec'd into and pruned.
 */
export function containerNameForTask(parts: ContainerNameParts): string {
  return `${CONTAINER_NAME_PREFIX}${parts.taskId}.${parts.ownerId}.${parts.ownerId.length}`;
}

/**
 * The task and owner a container name was made for by `containerNameForTask`, or undefined when the
 * name is not of that form (a name of berth before owners were part of it, or anyone else's). The
 * inverse of `containerNameForTask`: `parseContainerName(containerNameForTask(p))` is `p` for every
 * pair of non-empty ids, which is why no two pairs share a name. Accepts the engine's `/name` form.
 */
export function parseContainerName(name: string): ContainerNameParts | undefined {
  const bare = name.startsWith('/') ? name.slice(1) : name;
  if (!bare.startsWith(CONTAINER_NAME_PREFIX)) return undefined;
  const rest = bare.slice(CONTAINER_NAME_PREFIX.length);
  const lastDot = rest.lastIndexOf('.');
  const digits = rest.slice(lastDot + 1);
  // The length is written without leading zeros, so one name has one reading.
  if (lastDot < 0 || !/^[1-9][0-9]*$/.test(digits)) return undefined;
  const ownerLength = Number(digits);
  const ownerStart = lastDot - ownerLength;
  // At least one character of task id, and the separator before the owner id.
  if (ownerStart < 2 || rest[ownerStart - 1] !== '.') return undefined;
  return { taskId: rest.slice(0, ownerStart - 1), ownerId: rest.slice(ownerStart, lastDot) };
}

/** What a group's engine objects are named for: the group and its owner. */
export interface GroupNameParts {
  groupId: string;
  ownerId: string;
}

/**
 * The name of a group's infrastructure container: the container name of a task named
 * `<group id>.infra` would be the same only if a task id contained `.infra`-suffixed owner parts,
 * so the role is spelled into the owner part: `berth-<group id>.<owner id>-infra.<length>`.
 * Derived from the pair, so a retried create finds its own container.
 */
export function infraContainerName(parts: GroupNameParts): string {
  return containerNameForTask({ taskId: parts.groupId, ownerId: `${parts.ownerId}-infra` });
}

/** The name of a group's shared volume: `berth-<group id>.<owner id>.shared`. */
export function groupVolumeName(parts: GroupNameParts): string {
  return `${CONTAINER_NAME_PREFIX}${parts.groupId}.${parts.ownerId}.shared`;
}

/** The name of a group's own network: `berth-<group id>.<owner id>.net`. */
export function groupNetworkName(parts: GroupNameParts): string {
  return `${CONTAINER_NAME_PREFIX}${parts.groupId}.${parts.ownerId}.net`;
}

/** What a warm pool's containers are named for: the pool, its owner, and the container's own random id. */
export interface PoolContainerNameParts {
  poolName: string;
  ownerId: string;
  /** A random id per container (a pool holds many). */
  slotId: string;
}

/**
 * The name of a warm pool's container: `berth-<pool>-<slot>.<owner id>-pool.<length>`, the role spelled
 * into the owner part as for an infrastructure container, so that no task's container name can equal it.
 */
export function poolContainerName(parts: PoolContainerNameParts): string {
  return containerNameForTask({ taskId: `${parts.poolName}-${parts.slotId}`, ownerId: `${parts.ownerId}-pool` });
}
