import { isIP } from 'node:net';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { ValidationError, type FieldIssue } from '../common/errors.js';
import { LABEL_PREFIX } from '../common/labels.js';
import { DURATION_LIMITS, formatDurationMs, formatSize, MAX_SIZE_BYTES, type CountBounds, type DurationBounds, type SizeBounds } from '../common/units.js';
import { anyTypedAs, countOption, durationOption, issue, sizeOption } from '../common/validation.js';
import { parseImageReference } from './reference.js';
import { filesPolicyIssues, filesSchema, resolveFiles, type FilesPolicy, type ResolvedFile } from './files.js';
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
  /** The engine refuses a /dev/shm of 0 bytes (it means "the engine's default", 64 MiB). */
  shmSize: { minBytes: 1, maxBytes: MAX_SIZE_BYTES },
  /** A quota on the writable layer: under 1 MiB would leave no room for a container's first files. */
  storageSize: { minBytes: MiB, maxBytes: MAX_SIZE_BYTES },
  /** A resource limit (setrlimit): -1 is unlimited, as the engine reads it; safe integers otherwise. */
  ulimit: { min: -1, max: Number.MAX_SAFE_INTEGER },
  /** The kernel's range for /proc/<pid>/oom_score_adj. */
  oomScoreAdj: { min: -1000, max: 1000 },
  logMaxSize: { minBytes: 1024, maxBytes: MAX_SIZE_BYTES },
  logMaxFiles: { min: 1, max: 100 },
  /** Restarts allowed (in all, or per `restart.interval`). */
  restartAttempts: { min: 0, max: 100 },
  /** The pause before a restart, and its ceiling under backoff: one Node timer. */
  restartDelay: { minMs: 0, maxMs: DURATION_LIMITS.operationMs },
  /** The window restarts are counted in: a restart waits at most this long, on one Node timer. */
  restartInterval: { minMs: 1, maxMs: DURATION_LIMITS.timerMs },
  /** A task's place in the cluster queue (higher first): the cluster store's own bound. */
  priority: { min: -1_000_000, max: 1_000_000 },
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

/** A constraint's key: `node.` and a node label name (the names `cluster.labels` takes). */
const CONSTRAINT_KEY = /^node\.[a-zA-Z0-9][a-zA-Z0-9_./-]{0,62}$/;

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

/** A tmpfs mode, as octal text ("1777") or a number (0o1777): permission bits plus sticky, setgid and setuid. */
const fileMode = anyTypedAs<number | string>()
  .transform((value, ctx): number => {
    if (typeof value === 'string' && /^0?[0-7]{3,4}$/.test(value.trim())) return parseInt(value.trim(), 8);
    if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0o7777) return value;
    return issue(ctx, 'must be a file mode in octal text such as "1777" or "700" (or a number up to 0o7777)');
  })
  .meta({ anyOf: [{ type: 'string', pattern: '^0?[0-7]{3,4}$' }, { type: 'integer', minimum: 0, maximum: 0o7777 }], description: 'A file mode: octal text such as "1777", or a number.' });

const tmpfsMount = z
  .object({
    type: z.literal('tmpfs'),
    target: absolutePath,
    size: bytes(SPEC_BOUNDS.tmpfsSize).optional(),
    /** The tmpfs root's mode (the engine's default is 1777). */
    mode: fileMode.optional(),
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

// ---- the sandbox: hardening and the container's own environment (README "The sandbox") ----

/** The resource limits the engine (and docker's --ulimit) knows, by their docker names. */
export const ULIMIT_NAMES = Object.freeze(['core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack'] as const);
export type UlimitName = (typeof ULIMIT_NAMES)[number];

const ulimit = z
  .object({
    name: z.enum(ULIMIT_NAMES, { message: `must be one of ${ULIMIT_NAMES.join(', ')}` }),
    soft: count(SPEC_BOUNDS.ulimit),
    /** Default: the soft limit. */
    hard: count(SPEC_BOUNDS.ulimit).optional(),
  })
  .strict()
  .refine((u) => u.hard === undefined || u.hard === -1 || (u.soft !== -1 && u.soft <= u.hard), { message: 'must be at least soft (-1 is unlimited)', path: ['hard'] });

/** A profile name: in the agent's allow-list (`policy.allowedSeccompProfiles`), or the driver's `seccompProfiles`. */
export const SECCOMP_PROFILE_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;

/**
 * `default` (the engine's profile), `unconfined` (none: needs the policy's allowUnconfinedSeccomp),
 * a profile's name from the policy's allow-list, or (the library) a profile itself: an object, or
 * its JSON text, with a `defaultAction`.
 */
const seccomp = anyTypedAs<string | Record<string, unknown>>()
  .transform((value, ctx): SeccompSpec => {
    const rule = 'must be "default", "unconfined", a profile name from the allow-list, or a seccomp profile (a JSON object with defaultAction)';
    let profile: unknown = value;
    if (typeof value === 'string') {
      const text = value.trim();
      if (text === 'default') return { kind: 'default' };
      if (text === 'unconfined') return { kind: 'unconfined' };
      if (SECCOMP_PROFILE_NAME.test(text)) return { kind: 'named', name: text };
      if (!text.startsWith('{')) return issue(ctx, rule);
      try {
        profile = JSON.parse(text);
      } catch {
        return issue(ctx, 'is not valid JSON: a profile given as text must be the JSON of a seccomp profile');
      }
    }
    if (typeof profile !== 'object' || profile === null || Array.isArray(profile)) return issue(ctx, rule);
    if (typeof (profile as { defaultAction?: unknown }).defaultAction !== 'string') return issue(ctx, 'a seccomp profile needs a defaultAction such as "SCMP_ACT_ALLOW" or "SCMP_ACT_ERRNO"');
    return { kind: 'profile', json: JSON.stringify(profile) };
  })
  .meta({ anyOf: [{ type: 'string' }, { type: 'object' }], description: '"default", "unconfined", a profile name from the agent\'s allow-list, or a seccomp profile (JSON object).' });

/** RFC 1123 host name: labels of letters, digits and hyphens, not at either end, 63 at most each, 253 in all. */
const HOSTNAME = /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;
export const hostname = z.string().regex(HOSTNAME, 'must be a host name (RFC 1123): letters, digits and hyphens in dot-separated labels of at most 63 characters, 253 in all');
export const ipAddress = z.string().refine((v) => isIP(v) !== 0, 'must be an IPv4 or IPv6 address');
const searchDomain = z.string().regex(/^\.?$|^(?=.{1,253}$)[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?(\.[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?)*\.?$/, 'must be a domain name such as example.com');

/** `host:ip` as docker's --add-host spells it (the ip may be IPv6, or `host-gateway`). */
export const extraHost = z.string().refine((v) => {
  const colon = v.indexOf(':');
  if (colon <= 0) return false;
  const ip = v.slice(colon + 1).replace(/^\[(.*)\]$/, '$1');
  return HOSTNAME.test(v.slice(0, colon)) && (isIP(ip) !== 0 || ip === 'host-gateway');
}, 'must be host:ip, such as db.local:10.0.0.5 (the ip may be IPv6, or host-gateway)');

/** A network's name as the engine takes it (docker's own rule), at most 64 characters. */
const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/;
export const networkName = z.string().regex(NETWORK_NAME, 'must be a network name: a letter or digit, then letters, digits, _ . or -, at most 64 characters');
/** A DNS alias on a network: a host name of at most 63 characters per label. */
export const networkAlias = hostname;
export const MAX_PORTS = 64;
const port = (what: string) => z.number({ message: `must be a ${what} port number` }).int(`must be a whole ${what} port number`).min(1, 'must be at least 1').max(65_535, 'must be at most 65535');

/**
 * A published port: the container's port, and the host's (static) or none (dynamic: the driver or
 * the agent picks one from its range). `hostIp` is the host address it is bound to; undefined:
 * the driver's (loopback unless configured otherwise).
 */
export const portSpec = z
  .object({
    container: port('container'),
    host: port('host').optional(),
    protocol: z.enum(['tcp', 'udp']).default('tcp'),
    hostIp: ipAddress.optional(),
  })
  .strict();

export const portList = z
  .array(portSpec)
  .max(MAX_PORTS, `must publish at most ${MAX_PORTS} ports`)
  .superRefine((ports, ctx) => {
    const seen = new Set<string>();
    const hosts = new Set<string>();
    ports.forEach((p, i) => {
      const key = `${p.container}/${p.protocol}`;
      if (seen.has(key)) ctx.addIssue({ code: 'custom', path: [i, 'container'], message: `publishes ${key} twice` });
      seen.add(key);
      if (p.host !== undefined) {
        const hostKey = `${p.host}/${p.protocol}`;
        if (hosts.has(hostKey)) ctx.addIssue({ code: 'custom', path: [i, 'host'], message: `host port ${hostKey} is asked for twice` });
        hosts.add(hostKey);
      }
    });
  });

/** A named network the task (or a group's infrastructure container) joins, with its DNS aliases there. */
export const networkAttachment = z
  .object({
    name: networkName,
    aliases: z.array(networkAlias).max(16, 'must give at most 16 aliases').default([]),
  })
  .strict();
export const networkList = z
  .array(networkAttachment)
  .max(8, 'must join at most 8 networks')
  .refine((list) => new Set(list.map((n) => n.name)).size === list.length, 'must not name a network twice');


/**
 * Sysctls the engine sets per container: those in a namespace the container has its own of
 * (docker's own list: IPC ones and the network's). Others would change the whole host.
 */
export function isNamespacedSysctl(key: string): boolean {
  return /^net\.[a-zA-Z0-9_./-]+$/.test(key) || /^kernel\.(shm[a-z_]*|msg[a-z_]*|sem)$/.test(key) || /^fs\.mqueue\.[a-z_]+$/.test(key);
}

const sysctls = z.record(z.string(), z.string()).superRefine((record, ctx) => {
  for (const key of Object.keys(record)) {
    if (!isNamespacedSysctl(key)) ctx.addIssue({ code: 'custom', path: [key], message: 'is not a namespaced sysctl: only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* are set per container' });
  }
});

/** A host device given to the task: `source` on the host, `target` in the container (default the same), `permissions` of r, w, m. */
const device = z
  .object({
    source: absolutePath,
    target: absolutePath.optional(),
    permissions: z.string().regex(/^(?!.*(.).*\1)[rwm]{1,3}$/, 'must be some of r, w and m, each once (e.g. "rwm", "r")').default('rwm'),
  })
  .strict();

const runtime = z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/, 'must be a runtime name as the engine knows it, such as runc or runsc');
const apparmor = z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_./-]{0,127}$/, 'must be an AppArmor profile name such as docker-default, or unconfined');

/** `0-3`, `1,3`, `0-1,4-5`: CPUs the task may run on, as the kernel's cpuset lists them. */
const cpuset = z.string().regex(/^\d+(-\d+)?(,\d+(-\d+)?)*$/, 'must be a CPU list such as 0-1,3').refine((list) => list.split(',').every((part) => {
  const [from, to] = part.split('-').map(Number);
  return to === undefined || from! <= to;
}), 'each range must go from low to high, such as 0-3');

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
    /** Ports to publish on the host; needs network "bridge". */
    ports: portList.default([]),
    /** Named networks to join (instead of the default bridge), with aliases; needs network "bridge". */
    networks: networkList.default([]),
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
    /** The container's root file system read-only; writes go to tmpfs or volume mounts. Default false. */
    readOnlyRootfs: z.boolean().default(false),
    /** No process in the task gains privileges through setuid, setgid or file capabilities. Default false. */
    noNewPrivileges: z.boolean().default(false),
    /** The seccomp profile. Default: the engine's (`default`). */
    seccomp: seccomp.optional(),
    /** An AppArmor profile by name; `unconfined` needs the policy's allowUnconfinedApparmor. Default: the engine's. */
    apparmor: apparmor.optional(),
    ulimits: z.array(ulimit).default([]),
    /** The engine's init (tini) as PID 1: it reaps zombies and forwards signals. Default false. */
    init: z.boolean().default(false),
    /** The size of /dev/shm. Default: the engine's (64 MiB). */
    shmSize: bytes(SPEC_BOUNDS.shmSize).optional(),
    hostname: hostname.optional(),
    dns: z.array(ipAddress).default([]),
    dnsSearch: z.array(searchDomain).default([]),
    /** Lines added to /etc/hosts: `host:ip`. */
    extraHosts: z.array(extraHost).default([]),
    /** Namespaced sysctls only (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*). */
    sysctls: sysctls.default({}),
    devices: z.array(device).default([]),
    /** The OCI runtime (runc, runsc for gVisor where installed). Default: the engine's. */
    runtime: runtime.optional(),
    /** -1000 to 1000; higher is killed first when the host runs out of memory. Default 0. */
    oomScoreAdj: count(SPEC_BOUNDS.oomScoreAdj).optional(),
    /** CPUs the task may run on, such as "0-1,3". Default: all. */
    cpuset: cpuset.optional(),
    /** A quota on the container's writable layer; only with a storage driver that supports one (overlay2 on xfs with pquota). */
    storageSize: bytes(SPEC_BOUNDS.storageSize).optional(),
    /** Files written into the container after create and before start: inline, or an upload's archive (src/spec/files.ts). */
    files: filesSchema.default([]),
    /**
     * Paths in the container to collect when the task ends (artifacts), whatever its end state,
     * before its container is removed: absolute, distinct, at most 32, each at most 4096 characters.
     */
    collect: z
      .array(absolutePath.max(4096, 'must be at most 4096 characters'))
      .max(COLLECT_MAX_PATHS, `must name at most ${COLLECT_MAX_PATHS} paths`)
      .refine((paths) => new Set(paths).size === paths.length, 'must not name a path twice')
      .default([]),
    /**
     * Cluster mode only: the node labels a node must have to run the task, `{ "node.disk": "ssd" }`
     * (keys `node.<label>`, text values). A single agent refuses a spec with constraints.
     */
    constraints: recordWithKeys(
      (key) => CONSTRAINT_KEY.test(key),
      'must be node.<label>, a label name of [a-zA-Z0-9_./-] starting with a letter or digit',
    ).optional(),
    /** Cluster mode: the task's place in the queue, higher first (FIFO within one priority). Default 0; a single agent ignores it. */
    priority: count(SPEC_BOUNDS.priority).default(0),
  })
  .strict()
  .superRefine((spec, ctx) => {
    // The engine refuses these with the host's network (its namespace and files are the host's).
    if (spec.network === 'host') {
      if (spec.hostname !== undefined) ctx.addIssue({ code: 'custom', path: ['hostname'], message: 'cannot be set with network "host": the task shares the host\'s UTS namespace' });
      for (const key of Object.keys(spec.sysctls)) {
        if (key.startsWith('net.')) ctx.addIssue({ code: 'custom', path: ['sysctls', key], message: 'cannot be set with network "host": it would change the host\'s own network settings' });
      }
    }
    if (spec.network !== 'bridge') {
      if (spec.ports.length > 0) ctx.addIssue({ code: 'custom', path: ['ports'], message: `needs network "bridge" (network is "${spec.network}")` });
      if (spec.networks.length > 0) ctx.addIssue({ code: 'custom', path: ['networks'], message: `needs network "bridge" (network is "${spec.network}")` });
    }
    if (spec.waitHealthy && spec.healthcheck?.disabled === true) {
      ctx.addIssue({ code: 'custom', path: ['waitHealthy'], message: 'needs a health check, and healthcheck.disabled switches it off' });
    }
  });

/** The task spec as users write it: sizes and durations may be strings. */
export type TaskSpec = z.input<typeof taskSpecSchema>;

/** A published port; `host` undefined: a dynamic one. `hostIp` undefined: the driver's address. */
export interface PortSpec {
  readonly container: number;
  readonly host?: number;
  readonly protocol: 'tcp' | 'udp';
  readonly hostIp?: string;
}

export interface NetworkAttachmentSpec {
  readonly name: string;
  readonly aliases: readonly string[];
}

export type MountSpec =
  | { type: 'bind'; source: string; target: string; readOnly: boolean; propagation: Propagation }
  | { type: 'volume'; source?: string; target: string; readOnly: boolean }
  | { type: 'tmpfs'; target: string; sizeBytes?: number; mode?: number };

/**
 * The seccomp profile: the engine's, none, one by name (resolved by the driver from its policy's
 * profiles just before the create), or the profile's own JSON text.
 */
export type SeccompSpec =
  | { readonly kind: 'default' }
  | { readonly kind: 'unconfined' }
  | { readonly kind: 'named'; readonly name: string }
  | { readonly kind: 'profile'; readonly json: string };

export interface UlimitSpec {
  readonly name: UlimitName;
  readonly soft: number;
  readonly hard: number;
}

export interface DeviceSpec {
  readonly source: string;
  readonly target: string;
  readonly permissions: string;
}

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
  /** Published ports (network "bridge" only). */
  readonly ports: readonly PortSpec[];
  /** Named networks joined instead of the default bridge (network "bridge" only). */
  readonly networks: readonly NetworkAttachmentSpec[];
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
  readonly readOnlyRootfs: boolean;
  readonly noNewPrivileges: boolean;
  readonly seccomp: SeccompSpec;
  readonly apparmor?: string;
  readonly ulimits: readonly UlimitSpec[];
  readonly init: boolean;
  readonly shmSizeBytes?: number;
  readonly hostname?: string;
  readonly dns: readonly string[];
  readonly dnsSearch: readonly string[];
  readonly extraHosts: readonly string[];
  readonly sysctls: Readonly<Record<string, string>>;
  readonly devices: readonly DeviceSpec[];
  readonly runtime?: string;
  readonly oomScoreAdj?: number;
  readonly cpuset?: string;
  readonly storageSizeBytes?: number;
  /** Written into the container after create, before start. */
  readonly files: readonly ResolvedFile[];
  /** Paths collected as artifacts when the task ends (empty: none). */
  readonly collect: readonly string[];
  /** Cluster mode: `{ "node.<label>": value }` a node must satisfy (empty: any node). Not the engine's. */
  readonly constraints: Readonly<Record<string, string>>;
  /** Cluster mode: the place in the queue, higher first. Not the engine's. */
  readonly priority: number;
}

/** What the caller's driver permits; the spec is checked against it. */
export interface SpecPolicy extends RegistryAuthPolicy, FilesPolicy {
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
  /**
   * Named networks `networks` (and a group's `network.networks`) may join; undefined allows any,
   * an empty list none. The agent's default is none.
   */
  allowedNetworks?: readonly string[];
  /** Host device paths `devices[].source` may name; undefined allows any, an empty list none. */
  allowedDevices?: readonly string[];
  /** Runtimes `runtime` may name; undefined allows any. The engine's default runtime (no `runtime`) is always allowed. */
  allowedRuntimes?: readonly string[];
  /** Sysctl patterns `sysctls` keys must match (`net.ipv4.ping_group_range`, or `net.ipv4.*`); undefined allows any namespaced one. */
  allowedSysctls?: readonly string[];
  /**
   * Seccomp profiles a spec may name: name → the profile's file (JSON) on this host, read when
   * the container is created. A name not listed is refused; undefined lists none.
   */
  allowedSeccompProfiles?: Readonly<Record<string, string>>;
  /** Whether `seccomp: "unconfined"` is accepted. Undefined allows it. */
  allowUnconfinedSeccomp?: boolean;
  /** Whether a seccomp profile given in the spec itself (not by name) is accepted. Undefined allows it. */
  allowInlineSeccomp?: boolean;
  /** Whether `apparmor: "unconfined"` is accepted. Undefined allows it. */
  allowUnconfinedApparmor?: boolean;
  /**
   * Whether a negative `oomScoreAdj` is accepted: it shields the task from the OOM killer at the
   * expense of the host's other processes (-1000 exempts it). Undefined allows it.
   */
  allowNegativeOomScoreAdj?: boolean;
}

export const DEFAULT_SPEC_POLICY: Readonly<SpecPolicy> = Object.freeze({ allowPrivileged: false });

export function fieldName(path: readonly PropertyKey[]): string {
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
      m.type === 'tmpfs' ? { type: 'tmpfs', target: m.target, sizeBytes: m.size, ...(m.mode === undefined ? {} : { mode: m.mode }) } : m,
    ),
    network: spec.network,
    ports: spec.ports,
    networks: spec.networks,
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
    readOnlyRootfs: spec.readOnlyRootfs,
    noNewPrivileges: spec.noNewPrivileges,
    seccomp: spec.seccomp ?? { kind: 'default' },
    apparmor: spec.apparmor,
    ulimits: spec.ulimits.map((u) => ({ name: u.name, soft: u.soft, hard: u.hard ?? u.soft })),
    init: spec.init,
    shmSizeBytes: spec.shmSize,
    hostname: spec.hostname,
    dns: spec.dns,
    dnsSearch: spec.dnsSearch,
    extraHosts: spec.extraHosts,
    sysctls: spec.sysctls,
    devices: spec.devices.map((d) => ({ source: d.source, target: d.target ?? d.source, permissions: d.permissions })),
    runtime: spec.runtime,
    oomScoreAdj: spec.oomScoreAdj,
    cpuset: spec.cpuset,
    storageSizeBytes: spec.storageSize,
    files: resolveFiles(spec.files),
    collect: spec.collect,
    constraints: spec.constraints ?? {},
    priority: spec.priority,
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
  const raw = input as { privileged?: unknown; capAdd?: unknown; mounts?: unknown; network?: unknown; networks?: unknown; devices?: unknown; runtime?: unknown; sysctls?: unknown; seccomp?: unknown; apparmor?: unknown; oomScoreAdj?: unknown };
  issues.push(...registryAuthPolicyIssues(input as { image?: unknown; registryAuth?: unknown }, policy));
  issues.push(...sandboxPolicyIssues(raw, policy));
  issues.push(...filesPolicyIssues(input as { files?: unknown }, policy));
  if (raw.privileged === true && !policy.allowPrivileged) {
    issues.push({ field: 'privileged', rule: 'privileged tasks are not allowed by this driver (allowPrivileged is off)' });
  }
  if (raw.network === 'host' && policy.allowHostNetwork === false) {
    issues.push({ field: 'network', rule: 'the host network is not allowed by this driver (allowHostNetwork is off)' });
  }
  issues.push(...networkPolicyIssues(raw.networks, policy, 'networks'));
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

/** Named networks the policy does not list, read defensively (`field` is where the list sits). */
export function networkPolicyIssues(networks: unknown, policy: Pick<SpecPolicy, 'allowedNetworks'>, field: string): FieldIssue[] {
  if (policy.allowedNetworks === undefined || !Array.isArray(networks)) return [];
  const allowed = new Set(policy.allowedNetworks);
  const issues: FieldIssue[] = [];
  networks.forEach((n: unknown, i) => {
    const name = (n as { name?: unknown } | null)?.name;
    if (typeof name === 'string' && !allowed.has(name)) issues.push({ field: `${field}[${i}].name`, rule: `network ${name} is not in the allowed list (allowedNetworks)` });
  });
  return issues;
}

/** Whether a sysctl matches an allow-list pattern: the name itself, or a prefix ending in `*` (`net.ipv4.*`). */
export function sysctlAllowed(key: string, patterns: readonly string[]): boolean {
  return patterns.some((pattern) => (pattern.endsWith('*') ? key.startsWith(pattern.slice(0, -1)) : key === pattern));
}

/** The powerful knobs of the sandbox fields, each needing the policy's allow-list. */
function sandboxPolicyIssues(
  raw: { devices?: unknown; runtime?: unknown; sysctls?: unknown; seccomp?: unknown; apparmor?: unknown; oomScoreAdj?: unknown },
  policy: SpecPolicy,
): FieldIssue[] {
  const issues: FieldIssue[] = [];
  if (policy.allowedDevices && Array.isArray(raw.devices)) {
    const allowed = new Set(policy.allowedDevices.map((d) => posix.normalize(d)));
    raw.devices.forEach((d: unknown, i) => {
      const source = (d as { source?: unknown } | null)?.source;
      if (typeof source === 'string' && !allowed.has(posix.normalize(source))) issues.push({ field: `devices[${i}].source`, rule: `device ${source} is not in the device allow-list (allowedDevices)` });
    });
  }
  if (policy.allowedRuntimes && typeof raw.runtime === 'string' && !policy.allowedRuntimes.includes(raw.runtime)) {
    issues.push({ field: 'runtime', rule: `runtime ${raw.runtime} is not in the runtime allow-list (allowedRuntimes${policy.allowedRuntimes.length === 0 ? ' is empty' : `: ${policy.allowedRuntimes.join(', ')}`})` });
  }
  if (policy.allowedSysctls && typeof raw.sysctls === 'object' && raw.sysctls !== null) {
    for (const key of Object.keys(raw.sysctls)) {
      if (!sysctlAllowed(key, policy.allowedSysctls)) issues.push({ field: `sysctls.${key}`, rule: `sysctl ${key} is not in the sysctl allow-list (allowedSysctls)` });
    }
  }
  const seccompText = typeof raw.seccomp === 'string' ? raw.seccomp.trim() : undefined;
  if (seccompText === 'unconfined' && policy.allowUnconfinedSeccomp === false) {
    issues.push({ field: 'seccomp', rule: 'an unconfined task (no seccomp profile) is not allowed by this driver (allowUnconfinedSeccomp is off)' });
  } else if (seccompText !== undefined && seccompText !== 'default' && seccompText !== 'unconfined' && SECCOMP_PROFILE_NAME.test(seccompText) && !Object.hasOwn(policy.allowedSeccompProfiles ?? {}, seccompText)) {
    const names = Object.keys(policy.allowedSeccompProfiles ?? {});
    issues.push({ field: 'seccomp', rule: `seccomp profile ${seccompText} is not in the allow-list (allowedSeccompProfiles${names.length === 0 ? ' is empty' : `: ${names.join(', ')}`})` });
  } else if (raw.seccomp !== undefined && seccompText !== 'default' && seccompText !== 'unconfined' && !(seccompText !== undefined && SECCOMP_PROFILE_NAME.test(seccompText)) && policy.allowInlineSeccomp === false) {
    issues.push({ field: 'seccomp', rule: 'a seccomp profile given in the spec is not allowed by this driver: name one from its allow-list (allowedSeccompProfiles)' });
  }
  if (raw.apparmor === 'unconfined' && policy.allowUnconfinedApparmor === false) {
    issues.push({ field: 'apparmor', rule: 'an unconfined task (no AppArmor profile) is not allowed by this driver (allowUnconfinedApparmor is off)' });
  }
  if (typeof raw.oomScoreAdj === 'number' && raw.oomScoreAdj < 0 && policy.allowNegativeOomScoreAdj === false) {
    issues.push({ field: 'oomScoreAdj', rule: 'a negative value (shielding the task from the OOM killer) is not allowed by this driver (allowNegativeOomScoreAdj is off)' });
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
