import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { ValidationError } from '../common/errors.js';
import { readTypedDuration, readTypedSize, typedDurationBoundRule, typedSizeBoundRule, type BareNumberReading, type DurationBounds, type SizeBounds } from '../common/units.js';
import { SPEC_BOUNDS, ULIMIT_NAMES, type CountBounds, type TaskSpec } from '../spec/schema.js';

type MountInput = NonNullable<TaskSpec['mounts']>[number];

/** Collects a repeatable flag's values. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** `-e KEY=VALUE`, or `-e KEY` to pass the variable from berth's own environment (as docker does). */
export function parseEnvFlags(values: readonly string[], env: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const result: Record<string, string> = {};
  for (const value of values) {
    const eq = value.indexOf('=');
    if (eq === -1) {
      const inherited = env[value];
      if (inherited !== undefined) result[value] = inherited;
    } else {
      result[value.slice(0, eq)] = value.slice(eq + 1);
    }
  }
  return result;
}

/** `-l key=value` (or `-l key` for an empty value). */
export function parseLabelFlags(values: readonly string[]): Record<string, string> {
  const result: Record<string, string> = {};
  for (const value of values) {
    const eq = value.indexOf('=');
    if (eq === -1) result[value] = '';
    else result[value.slice(0, eq)] = value.slice(eq + 1);
  }
  return result;
}

/**
 * `--cpus 0.5` → 500 milli-CPUs; 0.01 (the engine's smallest CPU quota) to 1024. `--cpus 0` is no
 * limit, as in docker (undefined), unless a `refusal` says why there is none.
 */
export function parseCpus(value: string, refusal?: NoLimitRefusal): number | undefined {
  const flag = '--cpus';
  const cpus = Number(value);
  const zero = refusal === undefined ? ', or 0 for no limit' : '';
  if (!/^\d*\.?\d+$/.test(value.trim()) || !Number.isFinite(cpus)) {
    throw new ValidationError([{ field: flag, rule: `"${value.trim()}" is not a number of CPUs; use e.g. 0.5 or 2${zero}` }]);
  }
  if (cpus === 0) return zeroLimit(flag, refusal);
  const milli = Math.round(cpus * 1000);
  const { min, max } = SPEC_BOUNDS.cpuMilli;
  if (milli < min) throw new ValidationError([{ field: flag, rule: `must be at least ${min / 1000} (the engine's smallest CPU quota)${zero}` }]);
  if (milli > max) throw new ValidationError([{ field: flag, rule: `must be at most ${max / 1000}` }]);
  return milli;
}

/**
 * A duration flag (`--health-interval 30s`), read by the one rule (common/units.ts
 * `readTypedDuration`): it needs its unit, as a bare "5" could mean seconds or milliseconds; 0 is
 * checked against the field's bounds like any value. The bounds are the spec field's, checked here
 * so that the error names the flag as typed (`flag`, e.g. `--health-interval`); the text is passed
 * on as written, for the spec to compile.
 */
export function durationFlag(value: string, flag: string, bounds: DurationBounds, bare: BareNumberReading = 'unit-required'): string {
  const read = readTypedDuration(value, bare);
  const rule = read.ok ? typedDurationBoundRule(read.value, bounds) : read.problem;
  if (rule !== undefined) throw new ValidationError([{ field: flag, rule }]);
  // A bare number of seconds is handed on with its unit, so the spec reads it as seconds too.
  return bare === 'seconds' && /^\s*\d+\s*$/.test(value) ? `${value.trim()}s` : value.trim();
}

/**
 * `berth submit --restart`, in docker's words: `no`, or `on-failure[:max-restarts]` (the spec's
 * `restart.attempts`; without a count, the spec's default); `--restart-delay` is the pause before
 * each restart. `always` and `unless-stopped` are refused: a task runs to its end, it is no service.
 */
export function restartFlag(value: string, delay?: string): NonNullable<TaskSpec['restart']> {
  const match = /^\s*(no|on-failure)(?::(\d+))?\s*$/.exec(value);
  if (!match || (match[1] === 'no' && match[2] !== undefined)) {
    const rule = /^\s*(always|unless-stopped)\b/.test(value)
      ? 'must be no or on-failure[:max-restarts]: a task runs to its end, so always and unless-stopped do not apply'
      : 'must be no or on-failure[:max-restarts], e.g. on-failure:3';
    throw new ValidationError([{ field: '--restart', rule }]);
  }
  if (match[1] === 'no') {
    if (delay !== undefined) throw new ValidationError([{ field: '--restart-delay', rule: 'needs --restart on-failure' }]);
    return { policy: 'never' };
  }
  return {
    policy: 'on-failure',
    ...(match[2] !== undefined ? { attempts: Number(match[2]) } : {}),
    ...(delay !== undefined ? { delay: durationFlag(delay, '--restart-delay', SPEC_BOUNDS.restartDelay) } : {}),
  };
}

/** A duration limit flag where 0 means no limit, as docker's (`--timeout 0`): undefined for 0, else as `durationFlag`. */
export function limitDurationFlag(value: string, flag: string, bounds: DurationBounds): string | undefined {
  const read = readTypedDuration(value);
  return read.ok && read.value === 0 ? undefined : durationFlag(value, flag, bounds);
}

/** A size flag (`--log-max-size 1m`), read by the one rule (`readTypedSize`) and checked against the spec field's bounds, the error naming the flag. */
export function sizeFlag(value: string, flag: string, bounds: SizeBounds): string {
  const read = readTypedSize(value);
  const rule = read.ok ? typedSizeBoundRule(read.value, bounds) : read.problem;
  if (rule !== undefined) throw new ValidationError([{ field: flag, rule }]);
  return value.trim();
}

/**
 * Why a limit flag's 0 ("no limit") is refused where it is (a task the agent runs always has a
 * limit), or undefined where 0 is no limit.
 */
export type NoLimitRefusal = string | undefined;

/** Refuses a limit flag's 0 with `refusal`, or answers undefined (no limit). */
function zeroLimit(flag: string, refusal: NoLimitRefusal): undefined {
  if (refusal !== undefined) throw new ValidationError([{ field: flag, rule: refusal }]);
  return undefined;
}

/**
 * A size limit flag where 0 means no limit, as docker's `-m 0`: undefined for 0 (or, given a
 * `refusal`, a ValidationError saying why there is no "no limit"), else as `sizeFlag`.
 */
export function limitSizeFlag(value: string, flag: string, bounds: SizeBounds, refusal?: NoLimitRefusal): string | undefined {
  const read = readTypedSize(value);
  if (read.ok && read.value === 0) return zeroLimit(flag, refusal);
  const rule = read.ok ? typedSizeBoundRule(read.value, bounds) : read.problem;
  if (rule !== undefined) throw new ValidationError([{ field: flag, rule: read.ok && refusal === undefined ? `${rule}, or 0 for no limit` : rule }]);
  return value.trim();
}

/** A whole-number flag (`--health-retries 3`) within the spec field's bounds. */
export function countFlag(value: string, flag: string, bounds: CountBounds): number {
  const text = value.trim();
  if (!/^\d+$/.test(text)) throw new ValidationError([{ field: flag, rule: `"${text}" is not a whole number; use one from ${bounds.min} to ${bounds.max}` }]);
  const count = Number(text);
  if (count < bounds.min || count > bounds.max) throw new ValidationError([{ field: flag, rule: `must be a whole number from ${bounds.min} to ${bounds.max}` }]);
  return count;
}

/**
 * A count limit flag where 0 (or docker's -1) means no limit (`--pids-limit 0`): undefined for
 * those (or, given a `refusal`, a ValidationError saying why), else as `countFlag`.
 */
export function limitCountFlag(value: string, flag: string, bounds: CountBounds, refusal?: NoLimitRefusal): number | undefined {
  const text = value.trim();
  if (text === '0' || text === '-1') return zeroLimit(flag, refusal);
  const zero = refusal === undefined ? ', or 0 for no limit' : '';
  if (!/^\d+$/.test(text)) throw new ValidationError([{ field: flag, rule: `"${text}" is not a whole number; use one from ${bounds.min} to ${bounds.max}${zero}` }]);
  return countFlag(text, flag, bounds);
}

/**
 * A grace period in docker's seconds (`--stop-timeout 5`, `stop -t 5`): a bare whole number is
 * seconds, as docker reads it; a duration with a unit (`1m30s`) is read as such. 0 stops at once
 * (SIGKILL without a grace period). Within the stop grace period's bounds.
 */
export function stopTimeoutFlag(value: string, flag = '--stop-timeout'): string {
  return durationFlag(value, flag, SPEC_BOUNDS.stopGracePeriod, 'seconds');
}

/** Each spec field a `berth run`/`submit` flag sets, by the field's dotted path, with the flag as typed. */
const FLAG_OF_SPEC_FIELD: ReadonlyArray<readonly [RegExp, string]> = [
  [/^entrypoint(\[\d+\])?$/, '--entrypoint'],
  [/^env(\.|$)/, '-e/--env'],
  [/^workdir$/, '-w/--workdir'],
  [/^user$/, '-u/--user'],
  [/^labels(\.|$)/, '-l/--label'],
  [/^stdin$/, '-i/--interactive'],
  [/^tty$/, '-t/--tty'],
  [/^resources\.memory$/, '-m/--memory'],
  [/^resources\.cpuMilli$/, '--cpus'],
  [/^resources\.pidsLimit$/, '--pids-limit'],
  [/^network$/, '--network'],
  [/^networks\[\d+\]\.aliases/, '--network-alias'],
  [/^networks(\[\d+\]\.name|$)/, '--network'],
  [/^ports(\[\d+\])?/, '-p/--publish'],
  [/^capAdd(\[\d+\])?$/, '--cap-add'],
  [/^capDrop(\[\d+\])?$/, '--cap-drop'],
  [/^privileged$/, '--privileged'],
  [/^log\.driver$/, '--log-driver'],
  [/^log\.maxSize$/, '--log-max-size'],
  [/^timeout$/, '--timeout'],
  [/^stopSignal$/, '--stop-signal'],
  [/^stopGracePeriod$/, '--stop-timeout'],
  [/^pull$/, '--pull'],
  [/^registryAuth\.ref$/, '--registry-auth'],
  [/^healthcheck\.shell$/, '--health-cmd'],
  [/^healthcheck\.interval$/, '--health-interval'],
  [/^healthcheck\.timeout$/, '--health-timeout'],
  [/^healthcheck\.startPeriod$/, '--health-start-period'],
  [/^healthcheck\.retries$/, '--health-retries'],
  [/^healthcheck\.disabled$/, '--no-healthcheck'],
  [/^restart\.delay$/, '--restart-delay'],
  [/^restart(\.|$)/, '--restart'],
  [/^readOnlyRootfs$/, '--read-only'],
  [/^(noNewPrivileges|seccomp|apparmor)$/, '--security-opt'],
  [/^ulimits(\[\d+\])?/, '--ulimit'],
  [/^init$/, '--init'],
  [/^shmSize$/, '--shm-size'],
  [/^hostname$/, '--hostname'],
  [/^dns(\[\d+\])?$/, '--dns'],
  [/^dnsSearch(\[\d+\])?$/, '--dns-search'],
  [/^extraHosts(\[\d+\])?$/, '--add-host'],
  [/^sysctls(\.|$)/, '--sysctl'],
  [/^devices(\[\d+\])?/, '--device'],
  [/^runtime$/, '--runtime'],
  [/^oomScoreAdj$/, '--oom-score-adj'],
  [/^cpuset$/, '--cpuset-cpus'],
];

/**
 * The flag that set a spec field, as users type it (`-m/--memory` for `resources.memory` or
 * `spec.resources.memory`, `--mount[0] source` for `mounts[0].source`), or the field itself when no flag
 * sets it. `extra` names fields of the request around the spec (submit's `id` is `--name`).
 */
export function flagForSpecField(field: string, extra: Readonly<Record<string, string>> = {}): string {
  if (Object.hasOwn(extra, field)) return extra[field]!;
  const bare = field.replace(/^spec\./, '');
  // `--mount[0] source`, as parseMountFlag names a mount's own keys (`--mount[1] tmpfs-size`).
  const mount = /^mounts\[(\d+)\](?:\.(\w+))?/.exec(bare);
  if (mount) return `--mount[${mount[1]}]${mount[2] === undefined ? '' : ` ${mount[2]}`}`;
  return FLAG_OF_SPEC_FIELD.find(([pattern]) => pattern.test(bare))?.[1] ?? field;
}

/**
 * A spec's ValidationError (from the driver or the agent) restated with the flags that set each
 * field, so that the CLI names `-m/--memory`, not `spec.resources.memory`. Anything else is returned as it is.
 */
export function withFlagNames(error: unknown, extra: Readonly<Record<string, string>> = {}): unknown {
  if (!(error instanceof ValidationError)) return error;
  const issues = error.issues.map((issue) => ({ field: flagForSpecField(issue.field, extra), rule: issue.rule }));
  return issues.every((issue, i) => issue.field === error.issues[i]!.field) ? error : new ValidationError(issues, { cause: error, context: error.context });
}

const DOCKER_PROPAGATION: Readonly<Record<string, string>> = {
  rprivate: 'private',
  private: 'private',
  rslave: 'host-to-task',
  slave: 'host-to-task',
  'host-to-task': 'host-to-task',
  rshared: 'bidirectional',
  shared: 'bidirectional',
  bidirectional: 'bidirectional',
};

const MOUNT_KEYS = new Set(['type', 'source', 'src', 'target', 'destination', 'dst', 'readonly', 'ro', 'propagation', 'bind-propagation', 'tmpfs-size', 'size']);

/**
 * `--mount type=bind,source=/a,target=/b,readonly,propagation=host-to-task` in the docker CLI's
 * syntax (src/dst/destination, ro/readonly, bind-propagation, tmpfs-size accepted too).
 */
export function parseMountFlag(value: string, index: number): MountInput {
  const field = `--mount[${index}]`;
  const fields: Record<string, string> = {};
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    const key = (eq === -1 ? part : part.slice(0, eq)).trim().toLowerCase();
    // A misspelt key (say "redonly") must not silently give a read-write mount.
    if (!MOUNT_KEYS.has(key)) throw new ValidationError([{ field, rule: `unknown key "${key}" (known: ${[...MOUNT_KEYS].join(', ')})` }]);
    fields[key] = eq === -1 ? 'true' : part.slice(eq + 1).trim();
  }
  const readOnlyFlag = (fields.readonly ?? fields.ro ?? 'false').toLowerCase();
  if (!['true', 'false', '1', '0'].includes(readOnlyFlag)) throw new ValidationError([{ field, rule: 'readonly must be true, false, 1 or 0' }]);
  const type = fields.type ?? 'volume';
  const source = fields.source ?? fields.src;
  const target = fields.target ?? fields.destination ?? fields.dst;
  const readOnly = readOnlyFlag === 'true' || readOnlyFlag === '1';
  if (target === undefined) throw new ValidationError([{ field, rule: 'needs target=/path' }]);
  if (type === 'bind') {
    const propagationFlag = fields.propagation ?? fields['bind-propagation'] ?? 'private';
    const propagation = DOCKER_PROPAGATION[propagationFlag];
    if (!propagation) throw new ValidationError([{ field, rule: 'propagation must be private, host-to-task or bidirectional (or rprivate, rslave, rshared)' }]);
    if (source === undefined) throw new ValidationError([{ field, rule: 'a bind mount needs source=/host/path' }]);
    return { type: 'bind', source, target, readOnly, propagation: propagation as 'private' | 'host-to-task' | 'bidirectional' };
  }
  if (type === 'volume') return { type: 'volume', source, target, readOnly };
  if (type === 'tmpfs') {
    const size = fields['tmpfs-size'] ?? fields.size;
    return { type: 'tmpfs', target, size: size === undefined ? undefined : sizeFlag(size, `${field} tmpfs-size`, SPEC_BOUNDS.tmpfsSize) };
  }
  throw new ValidationError([{ field, rule: 'type must be bind, volume or tmpfs' }]);
}

/** `berth run`'s health check flags, as commander parses them (`--no-healthcheck` sets `healthcheck: false`). */
export interface HealthFlags {
  healthCmd?: string;
  healthInterval?: string;
  healthTimeout?: string;
  healthStartPeriod?: string;
  healthRetries?: string;
  /** False with `--no-healthcheck`. */
  healthcheck?: boolean;
}

const HEALTH_FLAG_NAMES: ReadonlyArray<[keyof HealthFlags, string]> = [
  ['healthCmd', '--health-cmd'],
  ['healthInterval', '--health-interval'],
  ['healthTimeout', '--health-timeout'],
  ['healthStartPeriod', '--health-start-period'],
  ['healthRetries', '--health-retries'],
];

/**
 * `--health-cmd` (a shell line, run as the engine's CMD-SHELL, as docker run does), `--health-interval`,
 * `--health-timeout`, `--health-start-period`, `--health-retries`, or `--no-healthcheck`, to the
 * spec's `healthcheck`; undefined when none is given, so the image's own check applies. Settings
 * without `--health-cmd` tune the image's own check. The spec's validation names any bad value.
 */
export function healthcheckFromFlags(flags: HealthFlags): TaskSpec['healthcheck'] {
  const given = HEALTH_FLAG_NAMES.filter(([key]) => flags[key] !== undefined).map(([, name]) => name);
  if (flags.healthcheck === false) {
    if (given.length > 0) throw new ValidationError([{ field: '--no-healthcheck', rule: `cannot be combined with ${given.join(', ')}` }]);
    return { disabled: true };
  }
  if (given.length === 0) return undefined;
  const check: NonNullable<TaskSpec['healthcheck']> = {};
  if (flags.healthCmd !== undefined) check.shell = flags.healthCmd;
  if (flags.healthInterval !== undefined) check.interval = durationFlag(flags.healthInterval, '--health-interval', SPEC_BOUNDS.healthcheck);
  if (flags.healthTimeout !== undefined) check.timeout = durationFlag(flags.healthTimeout, '--health-timeout', SPEC_BOUNDS.healthcheck);
  if (flags.healthStartPeriod !== undefined) check.startPeriod = durationFlag(flags.healthStartPeriod, '--health-start-period', SPEC_BOUNDS.healthcheck);
  if (flags.healthRetries !== undefined) check.retries = countFlag(flags.healthRetries, '--health-retries', SPEC_BOUNDS.healthRetries);
  return check;
}

/** `--pull` words, as the docker CLI spells them, to the spec's pull policy. */
const PULL_FLAG: Readonly<Record<string, NonNullable<TaskSpec['pull']>>> = { missing: 'if-not-present', always: 'always', never: 'never' };

/** `--pull missing|always|never` (docker's words) to the spec's pull policy. */
export function pullFlag(value: string): NonNullable<TaskSpec['pull']> {
  const policy = PULL_FLAG[value.trim()];
  if (policy === undefined) throw new ValidationError([{ field: '--pull', rule: `"${value}" is not a pull policy: use missing (the default), always or never` }]);
  return policy;
}

const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/**
 * `-v/--volume` in docker's short syntax, to the same mount `--mount` gives (so the same policy
 * applies): `/host:/ctr[:opts]` a bind mount, `name:/ctr[:opts]` a named volume, `/ctr` an anonymous
 * volume. Options, comma-separated: `ro` or `rw`, and for a bind a propagation (`rprivate`,
 * `private`, `rslave`, `slave`, `rshared`, `shared`).
 */
export function parseVolumeFlag(value: string, index: number): MountInput {
  const field = `-v/--volume[${index}]`;
  const parts = value.split(':');
  if (parts.some((part) => part === '') || parts.length > 3) throw new ValidationError([{ field, rule: `"${value}" is not /host/path:/container/path[:ro], volume-name:/container/path[:ro] or /container/path` }]);
  if (parts.length === 1) {
    if (!parts[0]!.startsWith('/')) throw new ValidationError([{ field, rule: `"${value}": an anonymous volume needs an absolute container path, such as /data` }]);
    return { type: 'volume', target: parts[0]!, readOnly: false };
  }
  const [source, target, options = ''] = parts as [string, string, string?];
  if (!target.startsWith('/')) throw new ValidationError([{ field, rule: `"${target}" must be an absolute container path` }]);
  const isBind = source.startsWith('/');
  if (!isBind && !VOLUME_NAME.test(source)) {
    throw new ValidationError([{ field, rule: `"${source}" is neither an absolute host path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*); a bind mount needs an absolute path` }]);
  }
  let readOnly = false;
  let propagation: string | undefined;
  let access: string | undefined;
  for (const option of options === '' ? [] : options.split(',')) {
    if (option === 'ro' || option === 'rw') {
      if (access !== undefined && access !== option) throw new ValidationError([{ field, rule: 'cannot be both ro and rw' }]);
      access = option;
      readOnly = option === 'ro';
    } else if (DOCKER_PROPAGATION[option] !== undefined && !['host-to-task', 'bidirectional'].includes(option)) {
      if (!isBind) throw new ValidationError([{ field, rule: `propagation "${option}" applies to a bind mount (a host path), not to volume "${source}"` }]);
      propagation = DOCKER_PROPAGATION[option];
    } else {
      throw new ValidationError([{ field, rule: `unknown option "${option}" (known: ro, rw, and for a bind mount rprivate, private, rslave, slave, rshared, shared)` }]);
    }
  }
  if (isBind) return { type: 'bind', source, target, readOnly, propagation: (propagation ?? 'private') as 'private' | 'host-to-task' | 'bidirectional' };
  return { type: 'volume', source, target, readOnly };
}

/**
 * `--env-file FILE` in docker's format: `KEY=VALUE` lines (the value as written, quotes and all),
 * `#` comment lines and blank lines skipped, `KEY` alone passing the variable from berth's own
 * environment. Files are read in order, later ones overriding earlier ones; `-e` overrides them all.
 * An unreadable file or a bad line is a usage error naming the file and line.
 */
export function parseEnvFiles(paths: readonly string[], env: Readonly<Record<string, string | undefined>>, readText: (path: string) => string = (path) => readFileSync(path, 'utf8')): Record<string, string> {
  const result: Record<string, string> = {};
  for (const path of paths) {
    let text: string;
    try {
      text = readText(path);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      throw new ValidationError([{ field: '--env-file', rule: `cannot read ${path}${typeof code === 'string' ? ` (${code})` : ''}` }]);
    }
    text.split(/\r?\n/).forEach((raw, index) => {
      const line = raw.replace(/^\s+/, '');
      if (line === '' || line.startsWith('#')) return;
      const eq = line.indexOf('=');
      const key = eq === -1 ? line.trimEnd() : line.slice(0, eq);
      const where = `${path}:${index + 1}`;
      if (key === '') throw new ValidationError([{ field: '--env-file', rule: `${where}: "${raw}" has no variable name before "="` }]);
      if (/\s/.test(key)) throw new ValidationError([{ field: '--env-file', rule: `${where}: variable name "${key}" contains whitespace` }]);
      if (eq === -1) {
        const inherited = env[key];
        if (inherited !== undefined) result[key] = inherited;
      } else {
        result[key] = line.slice(eq + 1);
      }
    });
  }
  return result;
}

/**
 * `--tmpfs PATH[:size=64m,mode=1777]`, as docker spells it, to a tmpfs mount. Of docker's mount
 * options, `size` and `mode` are taken; the others (noexec, nosuid…) are the engine's defaults
 * for a tmpfs (rw, noexec, nosuid, nodev) and are refused rather than silently dropped.
 */
export function parseTmpfsFlag(value: string): MountInput {
  const flag = '--tmpfs';
  const colon = value.indexOf(':');
  const target = (colon === -1 ? value : value.slice(0, colon)).trim();
  if (!target.startsWith('/')) throw new ValidationError([{ field: flag, rule: `"${value}": needs an absolute container path, such as /tmp or /tmp:size=64m` }]);
  const mount: MountInput & { type: 'tmpfs' } = { type: 'tmpfs', target };
  for (const option of colon === -1 ? [] : value.slice(colon + 1).split(',')) {
    const eq = option.indexOf('=');
    const key = (eq === -1 ? option : option.slice(0, eq)).trim();
    const optionValue = eq === -1 ? '' : option.slice(eq + 1).trim();
    if (key === 'size') mount.size = sizeFlag(optionValue, `${flag} size`, SPEC_BOUNDS.tmpfsSize);
    else if (key === 'mode') {
      if (!/^0?[0-7]{3,4}$/.test(optionValue)) throw new ValidationError([{ field: `${flag} mode`, rule: `"${optionValue}" is not an octal file mode such as 1777 or 700` }]);
      mount.mode = optionValue;
    } else throw new ValidationError([{ field: flag, rule: `unknown option "${key}" (known: size, mode)` }]);
  }
  return mount;
}

/** What `--security-opt` sets in a spec. */
export interface SecurityOptFields {
  noNewPrivileges?: boolean;
  seccomp?: string;
  apparmor?: string;
}

/**
 * `--security-opt` values as docker takes them: `no-new-privileges[=true|false]` (or `:true`),
 * `seccomp=unconfined|default|…`, `apparmor=PROFILE` (`=` or the older `:`). For `berth run`
 * (target `engine`), any other seccomp value is a profile file, read here as the docker CLI does;
 * for a task the agent runs, it is a profile's name from the agent's `policy.allowedSeccompProfiles`
 * (a path is refused: the file would be read on this machine, not the agent's).
 */
export function parseSecurityOpts(values: readonly string[], target: 'engine' | 'agent', readText: (path: string) => string = (path) => readFileSync(path, 'utf8')): SecurityOptFields {
  const flag = '--security-opt';
  const fields: SecurityOptFields = {};
  for (const raw of values) {
    const value = raw.trim();
    const sep = /[=:]/.exec(value);
    const key = sep === null ? value : value.slice(0, sep.index);
    const option = sep === null ? undefined : value.slice(sep.index + 1);
    if (key === 'no-new-privileges') {
      if (option !== undefined && !['true', 'false'].includes(option)) throw new ValidationError([{ field: flag, rule: `no-new-privileges takes true or false, not "${option}"` }]);
      fields.noNewPrivileges = option !== 'false';
    } else if (key === 'seccomp' && option !== undefined && option !== '') {
      if (option === 'unconfined' || option === 'default' || option === 'builtin') fields.seccomp = option === 'builtin' ? 'default' : option;
      else if (target === 'agent') {
        if (option.includes('/') || option.endsWith('.json')) {
          throw new ValidationError([{ field: flag, rule: `seccomp=${option}: a profile file is read by berth run itself; a task the agent runs names a profile from the agent's policy.allowedSeccompProfiles` }]);
        }
        fields.seccomp = option;
      } else {
        try {
          fields.seccomp = readText(option);
        } catch (error) {
          const code = (error as { code?: unknown }).code;
          throw new ValidationError([{ field: flag, rule: `seccomp=${option}: cannot read the profile file${typeof code === 'string' ? ` (${code})` : ''}` }]);
        }
        if (!fields.seccomp.trim().startsWith('{')) throw new ValidationError([{ field: flag, rule: `seccomp=${option}: the file is not a JSON seccomp profile` }]);
      }
    } else if (key === 'apparmor' && option !== undefined && option !== '') {
      fields.apparmor = option;
    } else {
      throw new ValidationError([{ field: flag, rule: `"${raw}" is not one of no-new-privileges[=true|false], seccomp=PROFILE, apparmor=PROFILE` }]);
    }
  }
  return fields;
}

const ULIMIT_VALUE = /^-?\d+$/;

/** `--ulimit nofile=1024[:2048]` (docker's syntax; the hard limit defaults to the soft one). */
export function parseUlimitFlags(values: readonly string[]): NonNullable<TaskSpec['ulimits']> {
  return values.map((value) => {
    const flag = '--ulimit';
    const eq = value.indexOf('=');
    const name = value.slice(0, eq).trim();
    const [soft, hard, extra] = value.slice(eq + 1).split(':');
    if (eq <= 0 || extra !== undefined || soft === undefined || !ULIMIT_VALUE.test(soft) || (hard !== undefined && !ULIMIT_VALUE.test(hard))) {
      throw new ValidationError([{ field: flag, rule: `"${value}" is not name=soft[:hard], such as nofile=1024:2048 (-1 is unlimited)` }]);
    }
    if (!(ULIMIT_NAMES as readonly string[]).includes(name)) throw new ValidationError([{ field: flag, rule: `"${name}" is not a limit name: use one of ${ULIMIT_NAMES.join(', ')}` }]);
    return { name: name as (typeof ULIMIT_NAMES)[number], soft: Number(soft), ...(hard === undefined ? {} : { hard: Number(hard) }) };
  });
}

/** `--sysctl key=value` (repeatable). */
export function parseSysctlFlags(values: readonly string[]): Record<string, string> {
  const result: Record<string, string> = {};
  for (const value of values) {
    const eq = value.indexOf('=');
    if (eq <= 0) throw new ValidationError([{ field: '--sysctl', rule: `"${value}" is not key=value, such as net.ipv4.ip_unprivileged_port_start=0` }]);
    result[value.slice(0, eq).trim()] = value.slice(eq + 1);
  }
  return result;
}

/** `--device /dev/x[:/dev/y][:rwm]` in docker's syntax: host path, container path (default the same), permissions (default rwm). */
export function parseDeviceFlag(value: string): NonNullable<TaskSpec['devices']>[number] {
  const parts = value.split(':');
  const isPermissions = (part: string): boolean => /^[rwm]{1,3}$/.test(part);
  if (parts.length > 3 || parts.some((part) => part === '')) throw new ValidationError([{ field: '--device', rule: `"${value}" is not /dev/host[:/dev/container][:rwm]` }]);
  const [source, second, third] = parts as [string, string?, string?];
  if (third !== undefined) return { source, target: second!, permissions: third };
  if (second !== undefined && isPermissions(second)) return { source, permissions: second };
  return second === undefined ? { source } : { source, target: second };
}

/** `--oom-score-adj -500`: a whole number from -1000 to 1000. */
export function oomScoreAdjFlag(value: string): number {
  const text = value.trim();
  const { min, max } = SPEC_BOUNDS.oomScoreAdj;
  if (!/^-?\d+$/.test(text) || Number(text) < min || Number(text) > max) throw new ValidationError([{ field: '--oom-score-adj', rule: `"${text}" is not a whole number from ${min} to ${max}` }]);
  return Number(text);
}

type PortInput = NonNullable<TaskSpec['ports']>[number];

/** A port number of a `-p` part: 1 to 65535. */
function publishPort(text: string, index: number, what: string): number {
  const port = /^\d{1,5}$/.test(text) ? Number(text) : Number.NaN;
  if (!(port >= 1 && port <= 65_535)) throw new ValidationError([{ field: `-p/--publish[${index}]`, rule: `${what} must be a port number from 1 to 65535; got "${text}"` }]);
  return port;
}

/**
 * `-p/--publish` in docker's spellings: `CONTAINER`, `HOST:CONTAINER`, `IP:HOST:CONTAINER`,
 * `IP::CONTAINER` (a dynamic host port on IP), each with an optional `/tcp` or `/udp`; an IPv6
 * address in brackets (`[::1]:8080:80`). Without a host port the port is dynamic: the engine (berth
 * run) or the agent (`ports.range`, with -d) picks it. Ranges (`8000-8010:80-90`) are refused.
 */
export function parsePublishFlag(value: string, index: number): PortInput {
  const field = `-p/--publish[${index}]`;
  const slash = value.lastIndexOf('/');
  const protocolText = slash === -1 ? 'tcp' : value.slice(slash + 1);
  if (protocolText !== 'tcp' && protocolText !== 'udp') throw new ValidationError([{ field, rule: `the protocol must be tcp or udp (as in 53:53/udp); got "${protocolText}"` }]);
  const rest = slash === -1 ? value : value.slice(0, slash);
  if (/\d-\d/.test(rest)) throw new ValidationError([{ field, rule: 'port ranges (8000-8010:80-90) are not supported: give one -p per port' }]);
  let hostIp: string | undefined;
  let parts: string[];
  const bracketed = /^\[([^\]]+)\]:(.*)$/.exec(rest);
  if (bracketed) {
    hostIp = bracketed[1]!;
    parts = bracketed[2]!.split(':');
    if (parts.length !== 2) throw new ValidationError([{ field, rule: `must be [IP]:HOST:CONTAINER or [IP]::CONTAINER; got "${value}"` }]);
  } else {
    parts = rest.split(':');
    if (parts.length === 3) hostIp = parts.shift()!;
    else if (parts.length > 3) throw new ValidationError([{ field, rule: `must be CONTAINER, HOST:CONTAINER, IP:HOST:CONTAINER or IP::CONTAINER (an IPv6 address in brackets); got "${value}"` }]);
  }
  if (hostIp !== undefined && isIP(hostIp) === 0) throw new ValidationError([{ field, rule: `the host address must be an IPv4 or IPv6 address; got "${hostIp}"` }]);
  const containerText = parts[parts.length - 1]!;
  const hostText = parts.length === 2 ? parts[0]! : '';
  const port: PortInput = { container: publishPort(containerText, index, 'the container port'), protocol: protocolText };
  if (hostText !== '') port.host = publishPort(hostText, index, 'the host port');
  if (hostIp !== undefined) port.hostIp = hostIp;
  return port;
}

/** The network modes `--network` takes besides a named network's name. */
const NETWORK_MODES = new Set(['none', 'bridge', 'host']);

/**
 * `--network`, `--network-alias` and `-p/--publish` as the spec's `network`, `networks` and `ports`.
 * `--network none|bridge|host` is the mode (`default` is docker's name for bridge); any other
 * value is a named (user-defined) network, joined instead of the default bridge, with the aliases.
 * `-p` needs the bridge: without `--network` it implies it (as docker's default network is the
 * bridge); with `--network none` or `host` it is refused (docker would drop the ports silently).
 */
export function networkFromFlags(flags: { network?: string | undefined; networkAlias?: readonly string[] | undefined; publish?: readonly string[] | undefined }): Pick<TaskSpec, 'network' | 'networks' | 'ports'> {
  const aliases = flags.networkAlias ?? [];
  const ports = (flags.publish ?? []).map((value, index) => parsePublishFlag(value, index));
  const out: Pick<TaskSpec, 'network' | 'networks' | 'ports'> = {};
  const mode = flags.network === 'default' ? 'bridge' : flags.network;
  if (mode === undefined) {
    if (aliases.length > 0) throw new ValidationError([{ field: '--network-alias', rule: 'needs a named network (--network NAME): an alias is a name on a user-defined network' }]);
    if (ports.length > 0) out.network = 'bridge';
  } else if (NETWORK_MODES.has(mode)) {
    if (aliases.length > 0) throw new ValidationError([{ field: '--network-alias', rule: `needs a named network (--network NAME), not --network ${mode}: aliases exist on user-defined networks only` }]);
    if (ports.length > 0 && mode !== 'bridge') throw new ValidationError([{ field: '-p/--publish', rule: `needs --network bridge or a named network (--network is ${mode}, where a port cannot be published)` }]);
    out.network = mode as TaskSpec['network'];
  } else {
    out.network = 'bridge';
    out.networks = [{ name: mode, aliases: [...aliases] }];
  }
  if (ports.length > 0) out.ports = ports;
  return out;
}
