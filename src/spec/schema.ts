import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { ValidationError, type FieldIssue } from '../common/errors.js';
import { LABEL_PREFIX } from '../common/labels.js';
import { DURATION_LIMITS, formatDurationMs, formatSize, MAX_SIZE_BYTES, type CountBounds, type DurationBounds, type SizeBounds } from '../common/units.js';
import { anyTypedAs, countOption, durationOption, issue, sizeOption } from '../common/validation.js';
import { parseImageReference } from './reference.js';
import { registryAuthPolicyIssues, registryAuthSchema, type RegistryAuthPolicy, type RegistryAuthSpec } from './registry-auth.js';

const MiB = 1024 * 1024;

/** The engine's floor for a health check's interval, timeout and start period (Moby's MinimumDuration). */
export const HEALTHCHECK_MINIMUM_MS = 1;
/** berth's ceiling for them: a day, so that their nanoseconds stay exact in a JSON number (and far within the engine's int64). */
export const HEALTHCHECK_MAXIMUM_MS = DURATION_LIMITS.operationMs;

export type { CountBounds } from '../common/units.js';

/**
 * The bounds of every duration, size and count in a spec, in one place (README "Task spec bounds").
 * Floors are the engine's or the kernel's own where they have one, so that the engine never refuses
 * a spec berth accepted; ceilings keep each value exact and within what holds it.
 */
/** The most paths a spec's `collect` may name. */
export const COLLECT_MAX_PATHS = 32;

export const SPEC_BOUNDS = Object.freeze({
  /** Held by setLongTimeout, so a year-long limit fires after a year, not at once. */
  timeout: { minMs: 1, maxMs: DURATION_LIMITS.longMs },
  /** Sent to the engine in whole seconds; berth's stop call waits the grace plus a margin on one Node timer. */
  stopGracePeriod: { minMs: 0, maxMs: DURATION_LIMITS.operationMs },
  /** Interval, timeout and start period: sent to the engine in nanoseconds. */
  healthcheck: { minMs: HEALTHCHECK_MINIMUM_MS, maxMs: HEALTHCHECK_MAXIMUM_MS },
  healthRetries: { min: 1, max: 1_000_000 },
  /** The engine refuses a limit under 6 MiB. */
  memory: { minBytes: 6 * MiB, maxBytes: MAX_SIZE_BYTES },
  /** The engine refuses a reservation under 6 MiB. */
  memoryReservation: { minBytes: 6 * MiB, maxBytes: MAX_SIZE_BYTES },
  /** 10 milli-CPUs is the engine's smallest CFS quota (1 ms in berth's 100 ms period); 1024 CPUs at most. */
  cpuMilli: { min: 10, max: 1_024_000 },
  /** The engine's range for relative CPU weight. */
  cpuShares: { min: 2, max: 262_144 },
  /** The kernel refuses a pids.max above PID_MAX_LIMIT (2^22). */
  pidsLimit: { min: 1, max: 4_194_304 },
  tmpfsSize: { minBytes: 1, maxBytes: MAX_SIZE_BYTES },
  logMaxSize: { minBytes: 1024, maxBytes: MAX_SIZE_BYTES },
  logMaxFiles: { min: 1, max: 100 },
  /** Restarts allowed (in all, or per `restart.interval`). */
  restartAttempts: { min: 0, max: 100 },
  /** The pause before a restart, and its ceiling under backoff: one Node timer. */
  restartDelay: { minMs: 0, maxMs: DURATION_LIMITS.operationMs },
  /** The window restarts are counted in: a restart waits at most this long, on one Node timer. */
  restartInterval: { minMs: 1, maxMs: DURATION_LIMITS.timerMs },
} satisfies Record<string, DurationBounds | SizeBounds | CountBounds>);

/** A duration (`"30s"` or milliseconds) within bounds, in milliseconds; any other type is named with the rule. */
const duration = (bounds: DurationBounds) =>
  durationOption(bounds, 'must be a duration such as "30s", "1m30s" or a number of milliseconds')
    // What the JSON Schema (the agent's OpenAPI document) says of it.
    .meta({
      description: `A duration, ${formatDurationMs(bounds.minMs)} to ${formatDurationMs(bounds.maxMs)}: "30s", "1h30m", "365d" or milliseconds.`,
      anyOf: [
        { type: 'string', pattern: '^\\s*\\d+(\\.\\d+)?((ms|s|m|h|d)(\\d+(\\.\\d+)?(ms|s|m|h|d))*)?\\s*$' },
        { type: 'number', minimum: bounds.minMs, maximum: bounds.maxMs },
      ],
    });

/** A size (`"128m"` or bytes) within bounds, in bytes; any other type is named with the rule. */
const bytes = (bounds: SizeBounds) =>
  sizeOption(bounds)
    .meta({
      description: `A size, ${formatSize(bounds.minBytes)} to ${formatSize(bounds.maxBytes)}: "128m", "1g", "1p" (binary units) or bytes.`,
      anyOf: [
        { type: 'string', pattern: '^\\s*\\d+(\\.\\d+)?\\s*([bBkKmMgGtTpP]([iI]?[bB])?)?\\s*$' },
        { type: 'integer', minimum: bounds.minBytes, maximum: bounds.maxBytes },
      ],
    });

/** A whole number within bounds. */
const count = (bounds: CountBounds, unit = '') =>
  countOption(bounds, unit)
    .meta({ type: 'integer', minimum: bounds.min, maximum: bounds.max });

/** An image reference in the engine's grammar (distribution's), checked at submit rather than at pull. */
const imageReference = anyTypedAs<string>()
  .transform((value, ctx): string => {
    if (typeof value !== 'string') return issue(ctx, 'must be an image reference such as "busybox:1.36" or "registry:5000/team/app@sha256:<64 hex>"');
    try {
      parseImageReference(value, 'image');
      return value;
    } catch (error) {
      if (!(error instanceof ValidationError)) throw error;
      return issue(ctx, error.issues.map((i) => i.rule).join('; '));
    }
  })
  .meta({
    type: 'string',
    minLength: 1,
    pattern: '^[^\\s@]+(@[a-z0-9]+([.+_-][a-z0-9]+)*:[a-f0-9]+)?$',
    description: 'An image reference in the engine\'s grammar: [registry[:port]/]path[:tag][@sha256:<64 hex>]; lowercase path components, a tag of up to 128 characters, at most 255 characters of name.',
  });

/** What a health check given with a command (or a shell line) gets for the settings it leaves out. */
export const HEALTHCHECK_DEFAULTS = Object.freeze({
  /** Between the end of one check and the start of the next. Short, since a caller may be waiting for health. */
  intervalMs: 1000,
  /** A check that runs longer fails. */
  timeoutMs: 5000,
  /** Consecutive failures (after the start period) that make the task unhealthy. */
  retries: 3,
});

const healthDuration = () => duration(SPEC_BOUNDS.healthcheck);

const HEALTHCHECK_SETTINGS = ['command', 'shell', 'interval', 'timeout', 'startPeriod', 'retries'] as const;

/**
 * A health check the engine runs in the task's container; `{ disabled: true }` switches off the
 * image's own HEALTHCHECK. Defaults are applied when resolving, so that an unset field can be told
 * from a defaulted one (an image's own check inherits its own settings).
 */
const healthcheck = z
  .object({
    /** Argv run directly in the container (the engine's CMD form, no shell). */
    command: z
      .array(z.string())
      .refine((argv) => argv.length > 0 && argv[0]!.trim() !== '', 'must be a non-empty argv array, the program first')
      .optional(),
    /** A command line run by the container's /bin/sh -c (the engine's CMD-SHELL form). */
    shell: z.string().regex(/\S/, 'must be a non-empty shell command').optional(),
    interval: healthDuration().optional(),
    timeout: healthDuration().optional(),
    startPeriod: healthDuration().optional(),
    retries: count(SPEC_BOUNDS.healthRetries).optional(),
    /** Switches off the health check, the image's own included. */
    disabled: z.boolean().optional(),
  })
  .strict()
  .superRefine((check, ctx) => {
    if (check.command !== undefined && check.shell !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['shell'], message: 'cannot be combined with command: give command (run without a shell) or shell (run by /bin/sh -c)' });
    }
    if (check.disabled === true) {
      const given = HEALTHCHECK_SETTINGS.filter((key) => check[key] !== undefined);
      if (given.length > 0) ctx.addIssue({ code: 'custom', path: ['disabled'], message: `cannot be combined with ${given.join(', ')}: a disabled health check has no settings` });
    }
  });

/** The task ends the restart policy may answer with a new attempt (`restart.on`). */
export const RESTART_ON = ['failed', 'oom', 'timed-out', 'lost'] as const;
export type RestartOn = (typeof RESTART_ON)[number];

/** Defaults of the restart policy's settings (Nomad's restart stanza, for a batch job, where it has one). */
export const RESTART_DEFAULTS = Object.freeze({
  attempts: 2,
  delayMs: 15_000,
  backoff: 1,
  maxDelayMs: 5 * 60_000,
  mode: 'fail' as const,
  on: RESTART_ON,
});

/**
 * What the agent does when a task's container ends (Nomad's restart stanza, simplified): `never`
 * (default), or `on-failure`: an end listed in `on` (a failure, by default any of failed, oom,
 * timed-out, lost) starts a new container after `delay`, growing by the `backoff` factor per
 * restart up to `maxDelay`, at most `attempts` times in all, or per `interval` when one is given.
 * Past that, mode `fail` ends the task with the last attempt's end; mode `delay` (which needs an
 * interval) waits until the interval lets another restart in. A success and a stop never restart.
 */
const restartPolicy = z
  .object({
    policy: z.enum(['never', 'on-failure']).default('never'),
    /** Restarts allowed: 0 to 100. Default 2. */
    attempts: count(SPEC_BOUNDS.restartAttempts).optional(),
    /** The pause before the first restart. Default 15 s; 0 to 24 h. */
    delay: duration(SPEC_BOUNDS.restartDelay).optional(),
    /** The factor the pause grows by with each restart: 1 (constant, default) to 10; 2 doubles it. */
    backoff: z.number().min(1, 'must be 1 (a constant delay) to 10').max(10, 'must be 1 (a constant delay) to 10').optional(),
    /** The longest pause backoff grows to. Default 5 m; 0 to 24 h, and at least the delay. */
    maxDelay: duration(SPEC_BOUNDS.restartDelay).optional(),
    /** The window `attempts` counts restarts in; without one they count over the task's whole life. 1 ms to 24 days. */
    interval: duration(SPEC_BOUNDS.restartInterval).optional(),
    /** When the attempts are used up: `fail` (default) ends the task; `delay` waits for the interval to let another in. */
    mode: z.enum(['fail', 'delay']).optional(),
    /** Which ends restart; default every failure: failed, oom, timed-out, lost. */
    on: z
      .array(z.enum(RESTART_ON, { message: `must be one of ${RESTART_ON.join(', ')}` }))
      .min(1, 'must name at least one end (failed, oom, timed-out, lost); use policy "never" to restart on none')
      .refine((ends) => new Set(ends).size === ends.length, 'must not name an end twice')
      .optional(),
  })
  .strict()
  .superRefine((restart, ctx) => {
    const delayMs = restart.delay ?? RESTART_DEFAULTS.delayMs;
    if (restart.maxDelay !== undefined && restart.maxDelay < delayMs) {
      ctx.addIssue({ code: 'custom', path: ['maxDelay'], message: `must be at least the delay (${formatDurationMs(delayMs)})` });
    }
    if (restart.mode === 'delay' && restart.interval === undefined) {
      ctx.addIssue({ code: 'custom', path: ['interval'], message: 'is required with mode "delay": attempts are counted per interval, and the wait lasts until it lets another in' });
    }
    if (restart.policy === 'never') {
      const given = (['attempts', 'delay', 'backoff', 'maxDelay', 'interval', 'mode', 'on'] as const).filter((key) => restart[key] !== undefined);
      if (given.length > 0) ctx.addIssue({ code: 'custom', path: ['policy'], message: `is "never", which takes no ${given.join(', ')}: set policy "on-failure"` });
    }
  });

/** A resolved restart policy: every setting in milliseconds, defaults applied. */
export type ResolvedRestartPolicy =
  | { readonly policy: 'never' }
  | {
      readonly policy: 'on-failure';
      readonly attempts: number;
      readonly delayMs: number;
      readonly backoff: number;
      readonly maxDelayMs: number;
      readonly intervalMs?: number;
      readonly mode: 'fail' | 'delay';
      readonly on: readonly RestartOn[];
    };

function resolveRestart(restart: z.output<typeof restartPolicy> | undefined): ResolvedRestartPolicy {
  if (restart === undefined || restart.policy === 'never') return { policy: 'never' };
  return {
    policy: 'on-failure',
    attempts: restart.attempts ?? RESTART_DEFAULTS.attempts,
    delayMs: restart.delay ?? RESTART_DEFAULTS.delayMs,
    backoff: restart.backoff ?? RESTART_DEFAULTS.backoff,
    maxDelayMs: restart.maxDelay ?? Math.max(RESTART_DEFAULTS.maxDelayMs, restart.delay ?? RESTART_DEFAULTS.delayMs),
    ...(restart.interval !== undefined ? { intervalMs: restart.interval } : {}),
    mode: restart.mode ?? RESTART_DEFAULTS.mode,
    on: restart.on ?? RESTART_DEFAULTS.on,
  };
}

const absolutePath = z.string().regex(/^\//, 'must be an absolute path');
const capability = z
  .string()
  .regex(/^(CAP_)?[A-Z_]+$|^ALL$/i, 'must be a capability name such as NET_ADMIN')
  .transform((c) => c.toUpperCase().replace(/^CAP_/, ''));

/** Where mounts below a bind propagate: named as Kubernetes does, mapped to Linux propagation modes. */
export const PROPAGATION = { private: 'rprivate', 'host-to-task': 'rslave', bidirectional: 'rshared' } as const;
export type Propagation = keyof typeof PROPAGATION;

const bindMount = z
  .object({
    type: z.literal('bind'),
    source: absolutePath,
    target: absolutePath,
    readOnly: z.boolean().default(false),
    propagation: z.enum(['private', 'host-to-task', 'bidirectional']).default('private'),
  })
  .strict()
  .refine((m) => !(m.propagation === 'bidirectional' && m.readOnly), {
    // A bidirectional mount lets the task create mounts on the host; only sensible, and only allowed, read-write.
    message: 'propagation "bidirectional" requires a read-write mount (readOnly: false)',
    path: ['propagation'],
  });

const volumeMount = z
  .object({
    type: z.literal('volume'),
    /** Named volume; omitted for an anonymous volume, removed with the container. */
    source: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/, 'must be a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)').optional(),
    target: absolutePath,
    readOnly: z.boolean().default(false),
  })
  .strict();

const tmpfsMount = z
  .object({
    type: z.literal('tmpfs'),
    target: absolutePath,
    size: bytes(SPEC_BOUNDS.tmpfsSize).optional(),
  })
  .strict();

const mount = z.discriminatedUnion('type', [bindMount, volumeMount, tmpfsMount]);

const stdinInput = z.union([
  z.string(),
  z.instanceof(Uint8Array),
  z.custom<Readable>((value) => value instanceof Readable, { message: 'must be a string, bytes or a readable stream' }),
]);

/** A string map whose keys obey a rule; each bad key is reported as its own field. */
const recordWithKeys = (isValidKey: (key: string) => boolean, rule: string) =>
  z.record(z.string(), z.string()).superRefine((record, ctx) => {
    for (const key of Object.keys(record)) {
      if (!isValidKey(key)) ctx.addIssue({ code: 'custom', path: [key], message: rule });
    }
  });

const envName = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The task spec as users write it. Everything but `image` is optional. */
export const taskSpecSchema = z
  .object({
    image: imageReference,
    /** Arguments to the image's entrypoint (the image's CMD when omitted). */
    command: z.array(z.string()).optional(),
    entrypoint: z.array(z.string()).optional(),
    env: recordWithKeys(
      (key) => envName.test(key),
      'must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)',
    ).default({}),
    workdir: absolutePath.optional(),
    user: z.string().regex(/^[a-zA-Z0-9_.-]+(:[a-zA-Z0-9_.-]+)?$/, 'must be user, uid, user:group or uid:gid').optional(),
    labels: recordWithKeys(
      (key) => key !== '' && !key.startsWith(LABEL_PREFIX),
      `must be a non-empty label key outside berth's own prefix "${LABEL_PREFIX}"`,
    ).default({}),
    /** Input piped to the task's stdin, which is closed at its end (unless `openStdin`). */
    stdin: stdinInput.optional(),
    /**
     * Keeps the task's stdin open for its whole life, as docker's `-i` (OpenStdin) does, so that
     * clients that attach to it (the agent's attach route) can write to it. `stdin` content, when
     * given, is written first and stdin then stays open. While no client writes, the task reads
     * nothing (a read waits); stdin closes only with the task. Default false.
     */
    openStdin: z.boolean().default(false),
    tty: z.boolean().default(false),
    resources: z
      .object({
        /** Hard memory limit; swap is disabled (memory-swap = memory). 6 MiB (the engine's floor) to 1 PiB. */
        memory: bytes(SPEC_BOUNDS.memory).optional(),
        /** Soft limit; 6 MiB (the engine's floor) to 1 PiB, and at most `memory`. */
        memoryReservation: bytes(SPEC_BOUNDS.memoryReservation).optional(),
        /** CPU in milli-CPUs: 500 = half a core. 10 to 1,024,000. */
        cpuMilli: count(SPEC_BOUNDS.cpuMilli, ' of milli-CPUs').optional(),
        cpuShares: count(SPEC_BOUNDS.cpuShares).optional(),
        /** 1 to 4,194,304 (the kernel's PID_MAX_LIMIT). */
        pidsLimit: count(SPEC_BOUNDS.pidsLimit).optional(),
      })
      .strict()
      .refine((r) => r.memory === undefined || r.memoryReservation === undefined || r.memoryReservation <= r.memory, {
        message: 'must not exceed resources.memory',
        path: ['memoryReservation'],
      })
      .default({}),
    mounts: z.array(mount).default([]),
    network: z.enum(['none', 'bridge', 'host']).default('none'),
    capAdd: z.array(capability).default([]),
    capDrop: z.array(capability).default([]),
    privileged: z.boolean().default(false),
    log: z
      .object({
        driver: z.enum(['local', 'json-file', 'none']).default('local'),
        maxSize: bytes(SPEC_BOUNDS.logMaxSize).default(1024 * 1024),
        maxFiles: count(SPEC_BOUNDS.logMaxFiles).default(1),
      })
      .strict()
      .default({ driver: 'local', maxSize: 1024 * 1024, maxFiles: 1 }),
    /** Run time limit; when it passes the task is stopped and ends as timed-out. 1 ms to 365 days. */
    timeout: duration(SPEC_BOUNDS.timeout).optional(),
    stopSignal: z.string().regex(/^(SIG)?[A-Z0-9+-]+$|^\d+$/, 'must be a signal such as SIGTERM or 15').default('SIGTERM'),
    /** Time between the stop signal and SIGKILL. Default 10 s; 0 to 24 h. */
    stopGracePeriod: duration(SPEC_BOUNDS.stopGracePeriod).default(10_000),
    /** When to pull the image: if-not-present (default), always, never. */
    pull: z.enum(['if-not-present', 'always', 'never']).default('if-not-present'),
    /** A health check run by the engine; `{ disabled: true }` switches off the image's own. Default: the image's. */
    healthcheck: healthcheck.optional(),
    /** What the agent does when the task's container ends: never (default) or on-failure, with attempts, delay and backoff. */
    restart: restartPolicy.optional(),
    /**
     * Report the task running only once the engine says it is healthy (its health check, or its
     * image's own); until then it is starting. One that turns unhealthy, or gives no verdict in
     * time, is stopped and removed, and ends failed (BERTH_TASK_UNHEALTHY). Default false.
     */
    waitHealthy: z.boolean().default(false),
    /** The task's own credentials for its image's registry (src/spec/registry-auth.ts). Default: the driver's (the Docker configuration). */
    registryAuth: registryAuthSchema.optional(),
    /**
     * Paths in the container to collect when the task ends (artifacts), whatever its end state,
     * before its container is removed: absolute, distinct, at most 32, each at most 4096 characters.
     */
    collect: z
      .array(absolutePath.max(4096, 'must be at most 4096 characters'))
      .max(COLLECT_MAX_PATHS, `must name at most ${COLLECT_MAX_PATHS} paths`)
      .refine((paths) => new Set(paths).size === paths.length, 'must not name a path twice')
      .default([]),
  })
  .strict()
  .refine((spec) => !(spec.waitHealthy && spec.healthcheck?.disabled === true), {
    message: 'needs a health check, and healthcheck.disabled switches it off',
    path: ['waitHealthy'],
  });

/** The task spec as users write it: sizes and durations may be strings. */
export type TaskSpec = z.input<typeof taskSpecSchema>;

export type MountSpec =
  | { type: 'bind'; source: string; target: string; readOnly: boolean; propagation: Propagation }
  | { type: 'volume'; source?: string; target: string; readOnly: boolean }
  | { type: 'tmpfs'; target: string; sizeBytes?: number };

/** What a health check runs: argv directly, a shell line, or the image's own HEALTHCHECK command. */
export type HealthcheckTest =
  | { readonly kind: 'exec'; readonly command: readonly string[] }
  | { readonly kind: 'shell'; readonly shell: string }
  | { readonly kind: 'image' };

/**
 * A resolved health check. With a command or a shell line, the interval, timeout and retries are
 * always set (HEALTHCHECK_DEFAULTS); with the image's own command, unset ones are the image's.
 * An unset start period is none (or the image's own, as the engine merges it).
 */
export type ResolvedHealthcheck =
  | { readonly disabled: true }
  | {
      readonly disabled: false;
      readonly test: HealthcheckTest;
      readonly intervalMs?: number;
      readonly timeoutMs?: number;
      readonly startPeriodMs?: number;
      readonly retries?: number;
    };

/** A validated, defaulted, frozen spec with every size in bytes and every duration in milliseconds. */
export interface ResolvedTaskSpec {
  readonly image: string;
  readonly command?: readonly string[];
  readonly entrypoint?: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly workdir?: string;
  readonly user?: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly stdin?: string | Uint8Array | Readable;
  /** Whether stdin stays open after `stdin` (if any) is written, for attach clients. */
  readonly openStdin: boolean;
  readonly tty: boolean;
  readonly resources: {
    readonly memoryBytes?: number;
    readonly memoryReservationBytes?: number;
    readonly cpuMilli?: number;
    readonly cpuShares?: number;
    readonly pidsLimit?: number;
  };
  readonly mounts: readonly MountSpec[];
  readonly network: 'none' | 'bridge' | 'host';
  readonly capAdd: readonly string[];
  readonly capDrop: readonly string[];
  readonly privileged: boolean;
  readonly log: { readonly driver: 'local' | 'json-file' | 'none'; readonly maxSizeBytes: number; readonly maxFiles: number };
  readonly timeoutMs?: number;
  readonly stopSignal: string;
  readonly stopGraceMs: number;
  readonly pull: 'if-not-present' | 'always' | 'never';
  /** Undefined: whatever the image defines. */
  readonly healthcheck?: ResolvedHealthcheck;
  /** The agent's restart policy; the library's driver does not restart tasks (its owner decides). */
  readonly restart: ResolvedRestartPolicy;
  /** Whether the task counts as running only once healthy. */
  readonly waitHealthy: boolean;
  /** The task's own registry credentials, for its pull only; undefined: the driver's. */
  readonly registryAuth?: RegistryAuthSpec;
  /** Paths collected as artifacts when the task ends (empty: none). */
  readonly collect: readonly string[];
}

/** What the caller's driver permits; the spec is checked against it. */
export interface SpecPolicy extends RegistryAuthPolicy {
  /** Whether `privileged: true` is accepted. Default false. */
  allowPrivileged: boolean;
  /**
   * Host directories bind mounts may use; undefined allows any, an empty list none. A source must
   * be written under one of them, and (checked on the host when a task is submitted and again just
   * before its container is created) resolve under one of them too, symlinks followed.
   */
  allowedBindSources?: readonly string[];
  /**
   * Whether a bind may expose the engine's socket (the socket, its directory or any directory above
   * them). Default false: such a bind is refused unless allowedBindSources names that very path.
   */
  allowEngineSocket?: boolean;
  /** Capabilities `capAdd` may name; undefined allows any. */
  allowedCapabilities?: readonly string[];
  /**
   * Whether `network: "host"` is accepted: a task in the host's network namespace reaches every
   * service the host does (its loopback listeners included). Undefined allows it; the agent's
   * default is false.
   */
  allowHostNetwork?: boolean;
}

export const DEFAULT_SPEC_POLICY: Readonly<SpecPolicy> = Object.freeze({ allowPrivileged: false });

function fieldName(path: readonly PropertyKey[]): string {
  return path.length === 0 ? '(spec)' : path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[');
}

/** Whether a host path lies under a prefix, after resolving . and .. so the prefix cannot be escaped. */
function isUnder(hostPath: string, prefix: string): boolean {
  const resolved = posix.normalize(hostPath);
  const base = posix.normalize(prefix).replace(/\/$/, '');
  return resolved === base || resolved.startsWith(`${base}/`);
}

/**
 * Validates a task spec once, at the edge, into a frozen ResolvedTaskSpec. Throws a ValidationError
 * naming every field at fault and its rule.
 */
export function resolveTaskSpec(input: unknown, policy: SpecPolicy = DEFAULT_SPEC_POLICY): ResolvedTaskSpec {
  // Policy is checked on the raw input too, so one answer names every problem, schema and policy alike.
  return compileTaskSpec(input, policyIssues(input, policy));
}

/**
 * Re-reads a spec its owner accepted earlier under its policy (`resolveTaskSpec`), such as a task
 * the agent stored at submit and starts or recovers later, into the same ResolvedTaskSpec. The
 * schema is applied (the stored text is compiled again, so a stored spec needs no second, derived
 * copy that could drift from it); the policy is skipped on purpose, rather than checked again
 * under a permissive stand-in. It was checked when the spec was accepted, and a policy tightened
 * since (the agent reloads its configuration) must not strand a task already accepted: it could
 * neither start nor be recovered and removed. Bind sources are another matter: they are host state
 * that can change, so their owner checks them against the policy in force before each create.
 */
export function resolveAcceptedTaskSpec(stored: unknown): ResolvedTaskSpec {
  return compileTaskSpec(stored, []);
}

/** The schema, then the policy's issues found beforehand; a ValidationError names them all. */
function compileTaskSpec(input: unknown, issues: readonly FieldIssue[]): ResolvedTaskSpec {
  const parsed = taskSpecSchema.safeParse(input);
  if (!parsed.success) {
    const schemaIssues: FieldIssue[] = parsed.error.issues.map((issue) => ({
      field: fieldName(issue.path),
      rule: issue.code === 'unrecognized_keys' ? `unknown field(s): ${issue.keys.join(', ')}` : issue.message,
    }));
    throw new ValidationError([...schemaIssues, ...issues.filter((p) => !schemaIssues.some((s) => s.field === p.field))]);
  }
  if (issues.length > 0) throw new ValidationError(issues);
  const spec = parsed.data;

  const resolved: ResolvedTaskSpec = {
    image: spec.image,
    command: spec.command,
    entrypoint: spec.entrypoint,
    env: spec.env,
    workdir: spec.workdir,
    user: spec.user,
    labels: spec.labels,
    stdin: spec.stdin,
    openStdin: spec.openStdin,
    tty: spec.tty,
    resources: {
      memoryBytes: spec.resources.memory,
      memoryReservationBytes: spec.resources.memoryReservation,
      cpuMilli: spec.resources.cpuMilli,
      cpuShares: spec.resources.cpuShares,
      pidsLimit: spec.resources.pidsLimit,
    },
    mounts: spec.mounts.map((m): MountSpec =>
      m.type === 'tmpfs' ? { type: 'tmpfs', target: m.target, sizeBytes: m.size } : m,
    ),
    network: spec.network,
    capAdd: spec.capAdd,
    capDrop: spec.capDrop,
    privileged: spec.privileged,
    log: { driver: spec.log.driver, maxSizeBytes: spec.log.maxSize, maxFiles: spec.log.maxFiles },
    timeoutMs: spec.timeout,
    stopSignal: spec.stopSignal,
    stopGraceMs: spec.stopGracePeriod,
    pull: spec.pull,
    healthcheck: resolveHealthcheck(spec.healthcheck),
    restart: resolveRestart(spec.restart),
    waitHealthy: spec.waitHealthy,
    ...(spec.registryAuth !== undefined ? { registryAuth: spec.registryAuth } : {}),
    collect: spec.collect,
  };
  return deepFreeze(resolved);
}

function resolveHealthcheck(check: z.output<typeof healthcheck> | undefined): ResolvedHealthcheck | undefined {
  if (check === undefined) return undefined;
  if (check.disabled === true) return { disabled: true };
  const test: HealthcheckTest =
    check.command !== undefined ? { kind: 'exec', command: check.command } : check.shell !== undefined ? { kind: 'shell', shell: check.shell } : { kind: 'image' };
  // The image's own command keeps the image's own settings where the spec gives none, as docker run does.
  const defaults: Partial<typeof HEALTHCHECK_DEFAULTS> = test.kind === 'image' ? {} : HEALTHCHECK_DEFAULTS;
  return {
    disabled: false,
    test,
    intervalMs: check.interval ?? defaults.intervalMs,
    timeoutMs: check.timeout ?? defaults.timeoutMs,
    startPeriodMs: check.startPeriod,
    retries: check.retries ?? defaults.retries,
  };
}

/** What the driver's policy forbids in a spec, read defensively from input that may not have passed the schema. */
function policyIssues(input: unknown, policy: SpecPolicy): FieldIssue[] {
  const issues: FieldIssue[] = [];
  if (typeof input !== 'object' || input === null) return issues;
  const raw = input as { privileged?: unknown; capAdd?: unknown; mounts?: unknown; network?: unknown };
  issues.push(...registryAuthPolicyIssues(input as { image?: unknown; registryAuth?: unknown }, policy));
  if (raw.privileged === true && !policy.allowPrivileged) {
    issues.push({ field: 'privileged', rule: 'privileged tasks are not allowed by this driver (allowPrivileged is off)' });
  }
  if (raw.network === 'host' && policy.allowHostNetwork === false) {
    issues.push({ field: 'network', rule: 'the host network is not allowed by this driver (allowHostNetwork is off)' });
  }
  if (policy.allowedCapabilities && Array.isArray(raw.capAdd)) {
    const normalize = (c: string): string => c.toUpperCase().replace(/^CAP_/, '');
    const allowed = new Set(policy.allowedCapabilities.map(normalize));
    raw.capAdd.forEach((cap: unknown, i) => {
      if (typeof cap === 'string' && !allowed.has(normalize(cap))) issues.push({ field: `capAdd[${i}]`, rule: `capability ${normalize(cap)} is not in the allowed list` });
    });
  }
  if (policy.allowedBindSources && Array.isArray(raw.mounts)) {
    raw.mounts.forEach((m: unknown, i) => {
      const mount = m as { type?: unknown; source?: unknown };
      if (mount?.type === 'bind' && typeof mount.source === 'string' && !policy.allowedBindSources!.some((prefix) => isUnder(mount.source as string, prefix))) {
        issues.push({ field: `mounts[${i}].source`, rule: `host path ${mount.source} is not in the bind-mount allow-list` });
      }
    });
  }
  return issues;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !(value instanceof Readable) && !(value instanceof Uint8Array)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
