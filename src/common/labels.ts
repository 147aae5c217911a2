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

/** Container names are derived from the task id so that a retried create finds its own container. */
export const CONTAINER_NAME_PREFIX = 'berth-';

export function containerNameForTask(taskId: string): string {
  return `${CONTAINER_NAME_PREFIX}${taskId}`;
}
