/**
 * The pool key and the other pure parts of warm pools: which tasks may run pooled at all, whether a
 * task matches a pool, the pool container's create plan, and the exec a warm task runs as. No I/O.
 *
 * The key is the create request berth would send for the spec (toCreatePlan), as canonical JSON,
 * without what a task may still choose when it runs as an exec in an already started container:
 * its command and entrypoint, working directory, env (the pool's env must be a subset of the task's
 * with equal values; the task's extra env goes to the exec), stdin and attach flags, stop signal and
 * grace (berth stops a warm task by killing its container), the health check (a poolable task has
 * none of its own), berth's own labels (task identity, owner process, group) and the name. What is
 * left (image, resources, mounts, network, security options, user, hostname, log, the user's
 * labels, …) is fixed at create, so a task whose key differs cannot use the container.
 */
import { canonicalJson } from '../common/canonical-json.js';
import { LABEL_PREFIX, LABELS, ROLES, poolContainerName } from '../common/labels.js';
import { ownerProcessLabels, type OwnerProcess } from '../common/owner-process.js';
import type { ContainerCreateBody } from '../engine/types.js';
import type { ResolvedTaskSpec } from '../spec/schema.js';
import { toCreatePlan, type CreatePlan } from '../spec/translate.js';

/** Where the holder program is bind-mounted (read-only) in every pool container, and run as its entrypoint. */
export const HOLDER_TARGET = '/.berth-holder';

/** The identity used to make a key's create plan: its labels and name are dropped from the key. */
const KEY_IDENTITY = { taskId: 'pool-key', ownerId: 'pool-key', startAttempt: 'pool-key' } as const;

/** The create body's fields a task chooses itself (or berth sets per task), left out of the key. */
const TASK_CHOSEN_FIELDS = ['Cmd', 'Entrypoint', 'WorkingDir', 'Env', 'Tty', 'OpenStdin', 'StdinOnce', 'AttachStdin', 'AttachStdout', 'AttachStderr', 'StopSignal', 'StopTimeout', 'Healthcheck', 'Labels'] as const;

/** The user's own labels (berth's, under io.berth., are identity and left out). */
function userLabels(labels: Readonly<Record<string, string>> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(labels ?? {}).filter(([key]) => !key.startsWith(LABEL_PREFIX)));
}

/**
 * The pool key of a resolved spec (named seccomp profiles already read, see withSeccompProfile):
 * canonical JSON of its create body without the task-chosen fields, its user labels kept.
 */
export function poolKeyOf(spec: ResolvedTaskSpec): string {
  const body: Partial<ContainerCreateBody> = { ...toCreatePlan(spec, KEY_IDENTITY).body };
  for (const field of TASK_CHOSEN_FIELDS) delete body[field];
  return canonicalJson({ ...body, Labels: userLabels(spec.labels) });
}

/** Whether the pool's env is a subset of the task's, each value equal (the task's extra env goes to the exec). */
export function envFits(poolEnv: Readonly<Record<string, string>>, taskEnv: Readonly<Record<string, string>>): boolean {
  return Object.entries(poolEnv).every(([key, value]) => Object.hasOwn(taskEnv, key) && taskEnv[key] === value);
}

/** Whether a task (its spec, already resolved) matches a pool: the same key, the pool's env within the task's. */
export function matchesPool(pool: { key: string; env: Readonly<Record<string, string>> }, taskKey: string, taskEnv: Readonly<Record<string, string>>): boolean {
  return pool.key === taskKey && envFits(pool.env, taskEnv);
}

/**
 * Why a task cannot run pooled (a short phrase naming the spec field or start option), or
 * undefined when it can. Each reason is a guarantee an exec in a started container cannot give
 * as a cold start does:
 * - `files`: files are placed after the create and before the start, so the first instruction finds them;
 * - `healthcheck`, `waitHealthy`: a health check is the container's, set at create and run against PID 1's life;
 * - `ports`: published ports are bound at create, and a fixed host port cannot be held by many idle containers;
 * - `group`: a group's task joins its infrastructure container's namespaces at create;
 * - `tty`: the TTY is the container's (resize, raw attach), while an exec's TTY would be another;
 * - `openStdin`: attach clients attach to the container's stdin, which the holder owns;
 * - `pull: always`: the task asks for the registry's current image, which a container created earlier may not run.
 */
export function notPoolableReason(spec: ResolvedTaskSpec, options: { waitHealthy?: boolean; inGroup?: boolean } = {}): string | undefined {
  if (spec.files.length > 0) return 'files';
  if (spec.healthcheck !== undefined && !spec.healthcheck.disabled) return 'healthcheck';
  if (options.waitHealthy ?? spec.waitHealthy) return 'waitHealthy';
  if (spec.ports.length > 0) return 'ports';
  if (options.inGroup) return 'group';
  if (spec.tty) return 'tty';
  if (spec.openStdin) return 'openStdin';
  if (spec.pull === 'always') return 'pull: always';
  return undefined;
}

/** What of the image a warm task's command is resolved against (its inspect). */
export interface ImageRunConfig {
  entrypoint?: readonly string[];
  cmd?: readonly string[];
}

/**
 * The argv of a task's exec: the spec's entrypoint and command merged with the image's as the
 * engine merges them at create (daemon's `merge`): without an entrypoint of its own (or an empty
 * one), the task gets the image's command unless it gives one, and the image's entrypoint unless it
 * set one (an empty entrypoint clears it); with an entrypoint of its own, the image's command is
 * dropped. Undefined when nothing is left to run (the engine refuses such a create: "No command specified").
 */
export function execArgv(spec: Pick<ResolvedTaskSpec, 'entrypoint' | 'command'>, image: ImageRunConfig): string[] | undefined {
  let entrypoint = spec.entrypoint === undefined ? undefined : [...spec.entrypoint];
  let cmd = spec.command === undefined ? undefined : [...spec.command];
  if (entrypoint === undefined || entrypoint.length === 0) {
    if (cmd === undefined || cmd.length === 0) cmd = image.cmd === undefined ? undefined : [...image.cmd];
    if (entrypoint === undefined) entrypoint = image.entrypoint === undefined ? undefined : [...image.entrypoint];
  }
  const argv = [...(entrypoint ?? []), ...(cmd ?? [])];
  return argv.length > 0 ? argv : undefined;
}

/** The exec's env: all of the task's (the pool's part is equal, so the container's own env agrees). */
export function execEnv(spec: Pick<ResolvedTaskSpec, 'env'>): string[] {
  return Object.entries(spec.env).map(([key, value]) => `${key}=${value}`);
}

/** The launcher's command in a pool container: the holder in its launch mode (see holder-program/holder.c). */
export const LAUNCHER_ARGV: readonly string[] = [HOLDER_TARGET, 'launch'];

/** What a launcher writes to its stderr once it has read a whole request, before anything of the task runs. */
export const LAUNCH_ACK: Buffer = Buffer.from('BRTH\x06', 'latin1');

/** The most bytes a launch request may hold (the launcher's buffer). */
export const LAUNCH_REQUEST_MAX_BYTES = 1 << 20;

/**
 * The request a pool container's launcher reads from its stdin before it becomes the task's process:
 * "BRTH", the payload's length (u32, little-endian), then argc and envc (u32 each) and the working
 * directory ("" for the container's), the arguments and the task's env entries, each NUL-terminated.
 * Undefined when it cannot be written: a string holds a NUL, or the whole is past the launcher's
 * buffer (the task then runs as a plain exec, which the engine checks itself).
 */
export function launchRequest(argv: readonly string[], env: readonly string[], workdir: string | undefined): Buffer | undefined {
  const strings = [workdir ?? '', ...argv, ...env];
  if (argv.length === 0 || strings.some((s) => s.includes('\0'))) return undefined;
  const body = Buffer.concat(strings.map((s) => Buffer.from(`${s}\0`, 'utf8')));
  const payloadLength = 8 + body.length;
  if (payloadLength > LAUNCH_REQUEST_MAX_BYTES || argv.length > 16_384 || env.length > 16_384) return undefined;
  const head = Buffer.alloc(16);
  head.write('BRTH', 0, 'latin1');
  head.writeUInt32LE(payloadLength, 4);
  head.writeUInt32LE(argv.length, 8);
  head.writeUInt32LE(env.length, 12);
  return Buffer.concat([head, body]);
}

export interface PoolContainerIdentity {
  poolName: string;
  ownerId: string;
  /** A random id per container: its name's part. */
  slotId: string;
  /** Labels the container as this create's, so that a create whose answer was lost is adopted by it alone. */
  startAttempt: string;
  ownerProcess?: OwnerProcess;
  /** The holder program's path on the host (src/pools/holder.ts). */
  holderPath: string;
}

/**
 * The create plan of a pool container: the pool spec's (bind sources resolved), with the holder
 * bind-mounted read-only and run as the entrypoint, no command, working dir or stdin of a task's,
 * no health check (it would judge the holder), the stop signal SIGKILL (the holder is PID 1, which
 * ignores SIGTERM; a warm task is stopped by killing its container), and the pool's labels
 * (managed, owner, role pool, pool name, start attempt, owner process) instead of a task's.
 */
export function poolContainerPlan(spec: ResolvedTaskSpec, identity: PoolContainerIdentity): CreatePlan {
  const plan = toCreatePlan(spec, { taskId: `${identity.poolName}-${identity.slotId}`, ownerId: identity.ownerId, startAttempt: identity.startAttempt });
  const body: ContainerCreateBody = {
    ...plan.body,
    Entrypoint: [HOLDER_TARGET],
    Cmd: [],
    Tty: false,
    OpenStdin: false,
    StdinOnce: false,
    AttachStdin: false,
    AttachStdout: false,
    AttachStderr: false,
    StopSignal: 'SIGKILL',
    Healthcheck: { Test: ['NONE'] },
    Labels: {
      ...userLabels(spec.labels),
      [LABELS.managed]: 'true',
      [LABELS.ownerId]: identity.ownerId,
      [LABELS.role]: ROLES.pool,
      [LABELS.pool]: identity.poolName,
      [LABELS.startAttempt]: identity.startAttempt,
      ...(identity.ownerProcess === undefined ? {} : ownerProcessLabels(identity.ownerProcess)),
    },
    HostConfig: {
      ...plan.body.HostConfig,
      Mounts: [...(plan.body.HostConfig.Mounts ?? []), { Type: 'bind', Source: identity.holderPath, Target: HOLDER_TARGET, ReadOnly: true }],
    },
  };
  delete body.WorkingDir;
  return { name: poolContainerName({ poolName: identity.poolName, ownerId: identity.ownerId, slotId: identity.slotId }), body, connectNetworks: plan.connectNetworks };
}
