/**
 * One registry of error codes. Every failure berth reports carries one of these codes; callers
 * (the agent, the CLI, library users) map codes to statuses and exit codes, never message text.
 */
export const ERROR_CODES = {
  BERTH_VALIDATION: 'The input (a task spec, an option, a flag) broke a rule; the message names the field and the rule.',
  BERTH_UPLOAD_TOO_LARGE: 'An archive uploaded to the agent (POST /v1/uploads) was larger than files.uploadMaxSize; nothing was kept.',
  BERTH_CANCELLED: 'The caller aborted the operation through its AbortSignal.',
  BERTH_ENGINE_NOT_FOUND: 'The engine has no such object (container, image, exec, network, volume).',
  BERTH_ENGINE_CONFLICT: 'The engine refused because of a conflict (a name in use, an image in use, an operation already running).',
  BERTH_ENGINE_NOT_MODIFIED: 'The engine had nothing to do (already started, already stopped).',
  BERTH_ENGINE_BAD_REQUEST: 'The engine rejected the request as malformed or impossible.',
  BERTH_ENGINE_UNAVAILABLE: 'The engine could not be reached: the socket was refused, reset or closed.',
  BERTH_ENGINE_TIMEOUT: 'The engine did not answer within the call\'s deadline.',
  BERTH_ENGINE_SERVER_ERROR: 'The engine answered with a server error (5xx); it may have acted before failing.',
  BERTH_ENGINE_VERSION: 'The engine\'s API version is older than berth supports.',
  BERTH_ENGINE_UNSUPPORTED: 'The engine berth speaks to (Docker or Podman, named in the message with its version) cannot provide a feature the request needs; the message names the feature.',
  BERTH_ENGINE_TLS: 'TLS with a remote engine failed: its certificate is not signed by the CA berth was given or not for its address, the engine refused berth\'s client certificate (or its absence), or the address does not speak TLS.',
  BERTH_ENGINE_SSH: 'SSH to a remote engine (ssh://) failed: the server\'s host key is not in ~/.ssh/known_hosts (or does not match it), or the server refused every key berth offered.',
  BERTH_ENGINE_FORBIDDEN: 'The engine or a registry refused access (wrong or missing credentials).',
  BERTH_NAME_CONFLICT: 'A container with the task\'s name exists and was not made by this start (another start of the task, or someone else\'s); it is left alone.',
  BERTH_PORT_UNAVAILABLE: 'A host port the task (or group) asks for is held by another task or group, or something else on the host listens on it, or the agent\'s dynamic range (ports.range) has no free port left; the message names the field and the port. Nothing was created.',
  BERTH_TASK_STATE: 'The operation is not allowed in the task\'s current state.',
  BERTH_TASK_EXISTS: 'A task with that id was submitted already, with another spec.',
  BERTH_TASK_UNHEALTHY: 'The task did not become healthy: its health check reported unhealthy, or the task ended (or gave no verdict in time) before it passed.',
  BERTH_TASK_AMBIGUOUS: 'A task id prefix matches several tasks (the message names some and the count): type more of the id; or containers of several owners carry the task id (exec, stats): the owner must be named.',
  BERTH_TASK_NOT_FOUND: 'No task with that id: the agent has no record of it, or (for exec) the engine has no container of it.',
  BERTH_IMAGE_NOT_FOUND: 'The image or its tag does not exist in the registry, or is missing locally with pull policy never.',
  BERTH_IMAGE_ACCESS_DENIED: 'The registry refused the pull: the credentials are wrong or missing.',
  BERTH_IMAGE_PULL_FAILED: 'The pull failed for a reason that may pass (network, engine).',
  BERTH_IMAGE_PULL_STALLED: 'The pull made no progress within the activity timeout and was aborted.',
  BERTH_PRUNE_RUNNING: 'A prune (or an image budget check) is already running; prunes do not queue.',
  BERTH_EXEC_TIMEOUT: 'A plain exec (POST /v1/tasks/:id/exec) did not end within its timeout; its process was killed.',
  BERTH_EVENTS_EXPIRED: 'The events after the one asked for are no longer kept (the event window was exceeded): resume from the current state instead.',
  BERTH_UNAUTHORIZED: 'The agent refused the request: the bearer token is missing or wrong.',
  BERTH_AGENT_UNAVAILABLE: 'The agent could not be reached, or it is shutting down and takes no new work.',
  BERTH_AGENT_TIMEOUT: 'The agent did not answer within the call\'s deadline.',
  BERTH_AGENT_TLS: 'TLS with the agent failed: the agent\'s certificate is not trusted or not for its address, the agent refused the client\'s certificate (or its absence), or the address does not speak TLS.',
  BERTH_DISK_FULL: 'The agent\'s data directory has no space left: a state write waits for space, output beyond it is cut.',
  BERTH_GROUP_INFRA: 'A group\'s infrastructure container (which owns its network namespace), its shared volume or its network could not be made: the infrastructure image does not run on this engine, or a name is held by another object.',
  BERTH_GROUP_NOT_FOUND: 'No group with that id: the agent has no record of it.',
  BERTH_GROUP_EXISTS: 'A group with that id was submitted already, with another spec.',
  BERTH_CLUSTER_UNAVAILABLE: 'The cluster\'s PostgreSQL could not be reached, or did not answer within the call\'s deadline; the call may or may not have been applied (a commit whose answer was lost), and it is safe to try again: submits and reports are idempotent, and a node asks what it holds after a failed claim. Calls work again once the database answers.',
  BERTH_STORE_UNAVAILABLE: 'The agent\'s state database on PostgreSQL (`state.postgres`) could not be reached, or did not answer within its deadline: the write was not recorded, or its answer was lost. The agent records a task\'s end again until the database answers; a submit may be tried again.',
  BERTH_CLUSTER_FENCED: 'A node reported for a task it no longer holds under that lease epoch (its lease expired and the task was declared lost or placed elsewhere): the node must stop and remove that task\'s container and report nothing more for it.',
  BERTH_CLUSTER_LEASE_LOST: 'A node\'s heartbeat or claim carried a lease epoch that is no longer current: the node was declared down (or registered again); it must drop what it holds and register again for a new epoch.',
  BERTH_NODE_UNREACHABLE: 'The cluster node that runs (or ran) the task could not be reached to forward the request to it, or is down: try again, or read the task\'s state from the cluster index (GET /v1/tasks/:id answers it from there).',
  BERTH_FORWARD_LOOP: 'A request another node forwarded names a task this node does not hold: a forwarded request is never forwarded again (the cluster index and the node disagree: the task is recorded on a node that has no record of it).',
  BERTH_CLUSTER_SCHEMA: 'The cluster database has a schema newer than this berth knows (upgrade berth), or is not a berth cluster database.',
  BERTH_INTERNAL: 'A bug in berth: an invariant did not hold.',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** Codes whose operations may succeed when tried again. */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'BERTH_ENGINE_UNAVAILABLE',
  'BERTH_ENGINE_TIMEOUT',
  'BERTH_ENGINE_SERVER_ERROR',
  'BERTH_IMAGE_PULL_FAILED',
  'BERTH_IMAGE_PULL_STALLED',
  'BERTH_AGENT_UNAVAILABLE',
  'BERTH_AGENT_TIMEOUT',
  'BERTH_DISK_FULL',
  'BERTH_CLUSTER_UNAVAILABLE',
  'BERTH_STORE_UNAVAILABLE',
  'BERTH_NODE_UNREACHABLE',
]);

export interface BerthErrorOptions {
  cause?: unknown;
  /** Structured context: ids, names, fields. Never credentials. */
  context?: Readonly<Record<string, unknown>>;
  /** Overrides the code's default retryability. */
  retryable?: boolean;
}

/** The base of every error berth throws. `code` is stable; `message` is for people. */
export class BerthError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly context: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, options: BerthErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BerthError';
    this.code = code;
    this.retryable = options.retryable ?? RETRYABLE.has(code);
    this.context = Object.freeze({ ...(options.context ?? {}) });
  }

  toJSON(): { code: ErrorCode; message: string; retryable: boolean; context: Readonly<Record<string, unknown>> } {
    return { code: this.code, message: this.message, retryable: this.retryable, context: this.context };
  }
}

/** One problem with one field of some input. */
export interface FieldIssue {
  /** Dotted path of the field, e.g. `resources.memory`. */
  field: string;
  /** The rule it broke, in words. */
  rule: string;
}

/** Bad input: names every field at fault and its rule. */
export class ValidationError extends BerthError {
  readonly issues: readonly FieldIssue[];

  constructor(issues: readonly FieldIssue[], options: BerthErrorOptions = {}) {
    super('BERTH_VALIDATION', issues.map((i) => `${i.field}: ${i.rule}`).join('; '), {
      ...options,
      context: { ...(options.context ?? {}), issues },
    });
    this.name = 'ValidationError';
    this.issues = Object.freeze([...issues]);
  }
}

export function isBerthError(error: unknown, code?: ErrorCode): error is BerthError {
  return error instanceof BerthError && (code === undefined || error.code === code);
}

/** The message of a thrown value: an Error's message, or the value itself as text (anything may be thrown). */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** What to log of a thrown value nobody expected (a bug): its stack where it has one, else its message. */
export function stackOf(error: unknown): string {
  return error instanceof Error ? (error.stack ?? error.message) : String(error);
}

/** A thrown value as a BerthError: itself, or BERTH_INTERNAL (a bug) carrying it as the cause. */
export function asBerthError(error: unknown, what = 'unexpected failure'): BerthError {
  return isBerthError(error) ? error : new BerthError('BERTH_INTERNAL', `${what}: ${messageOf(error)}`, { cause: error });
}

/** The code of a thrown value, for logs and metrics: its BerthError code, or UNKNOWN. */
export function codeOf(error: unknown): string {
  return isBerthError(error) ? error.code : 'UNKNOWN';
}

/** The error to throw when a caller's signal has aborted. */
export function cancelledError(what: string, cause?: unknown): BerthError {
  return new BerthError('BERTH_CANCELLED', `${what} was cancelled`, { cause });
}

export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw cancelledError(what, signal.reason);
}
