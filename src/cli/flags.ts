import { ValidationError } from '../common/errors.js';
import type { TaskSpec } from '../spec/schema.js';

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

/** `--cpus 0.5` → 500 milli-CPUs. */
export function parseCpus(value: string): number {
  const cpus = Number(value);
  if (!/^\d*\.?\d+$/.test(value.trim()) || !Number.isFinite(cpus) || cpus <= 0) {
    throw new ValidationError([{ field: '--cpus', rule: 'must be a positive decimal number of CPUs, such as 0.5 or 2' }]);
  }
  const milli = Math.round(cpus * 1000);
  if (milli < 1) throw new ValidationError([{ field: '--cpus', rule: 'must be at least 0.001 (one milli-CPU)' }]);
  return milli;
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
  if (type === 'tmpfs') return { type: 'tmpfs', target, size: fields['tmpfs-size'] ?? fields.size };
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

/** A duration flag needs its unit, as docker's do: a bare "5" could mean seconds or milliseconds. */
function durationFlag(value: string, flag: string): string {
  if (/^\s*\d+(\.\d+)?\s*$/.test(value)) throw new ValidationError([{ field: flag, rule: 'must be a duration with a unit, such as 30s, 1m30s or 500ms' }]);
  return value;
}

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
  if (flags.healthInterval !== undefined) check.interval = durationFlag(flags.healthInterval, '--health-interval');
  if (flags.healthTimeout !== undefined) check.timeout = durationFlag(flags.healthTimeout, '--health-timeout');
  if (flags.healthStartPeriod !== undefined) check.startPeriod = durationFlag(flags.healthStartPeriod, '--health-start-period');
  if (flags.healthRetries !== undefined) {
    if (!/^\s*\d+\s*$/.test(flags.healthRetries)) throw new ValidationError([{ field: '--health-retries', rule: 'must be a whole number of at least 1' }]);
    check.retries = Number(flags.healthRetries);
  }
  return check;
}
