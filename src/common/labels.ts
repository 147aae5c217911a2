/** Every label key berth writes on engine objects. User labels may not use this prefix. */
export const LABEL_PREFIX = 'io.berth.';

export const LABELS = {
  /** Marks an object as created by berth; its value is always "true". */
  managed: `${LABEL_PREFIX}managed`,
  /** The task id the container runs. */
  taskId: `${LABEL_PREFIX}task-id`,
  /** The id of the driver or agent that owns the container. */
  ownerId: `${LABEL_PREFIX}owner-id`,
} as const;

/** Container names are derived from the task id so that a retried create finds its own container. */
export const CONTAINER_NAME_PREFIX = 'berth-';

export function containerNameForTask(taskId: string): string {
  return `${CONTAINER_NAME_PREFIX}${taskId}`;
}
