/**
 * Parsing of the duration and size literals users write ("30s", "128m"), done once at the edge, and
 * the bounds every layer shares: each duration and size berth accepts is checked against one of them.
 */

export const SECOND_MS = 1000;
export const MINUTE_MS = 60 * SECOND_MS;
export const HOUR_MS = 60 * MINUTE_MS;
export const DAY_MS = 24 * HOUR_MS;

/**
 * The ceilings of durations, by what holds them. Node's setTimeout (and AbortSignal.timeout) fires
 * a delay past 2^31-1 ms (about 24.8 days) after 1 ms, so a duration a plain timer holds is kept
 * under it; a longer one needs setLongTimeout (common/timers.ts) or is only compared with the clock.
 */
export const DURATION_LIMITS = Object.freeze({
  /** A deadline of one operation: an engine call, a pull that makes no progress, a helper's answer. */
  operationMs: DAY_MS,
  /** A period or a delay held by one Node timer: 24 days, under the timer's 24.8-day limit. */
  timerMs: 24 * DAY_MS,
  /** A run time limit (held by setLongTimeout) or an age compared with the clock: a year. */
  longMs: 365 * DAY_MS,
});

/**
 * The ceiling of every size: 1 PiB. Far above any host's memory or disk, a safe integer (exact in
 * JSON and in JavaScript arithmetic), and within the engine's int64 and the kernel's page counters.
 */
export const MAX_SIZE_BYTES = 1024 ** 5;

/** A closed range of milliseconds. */
export interface DurationBounds {
  readonly minMs: number;
  readonly maxMs: number;
}

/** A closed range of bytes. */
export interface SizeBounds {
  readonly minBytes: number;
  readonly maxBytes: number;
}

/** A whole number's closed range. */
export interface CountBounds {
  readonly min: number;
  readonly max: number;
}

const DURATION_UNITS_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/**
 * Parses "1h30m", "30s", "250ms", "1.5s" (Go-style) or a number of milliseconds.
 * Returns undefined for anything else, so that callers can report the field by name.
 */
export function parseDurationMs(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  const text = value.trim();
  if (text === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const part = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let consumed = 0;
  for (let match = part.exec(text); match; match = part.exec(text)) {
    total += Number(match[1]) * (DURATION_UNITS_MS[match[2]!] ?? NaN);
    consumed = part.lastIndex;
  }
  return consumed === text.length && Number.isFinite(total) ? Math.round(total) : undefined;
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
  p: 1024 ** 5,
  pb: 1024 ** 5,
  pib: 1024 ** 5,
};

/** Parses "128m", "1g", "512k", "1.5g", "1p" (binary units, as the docker CLI does) or a number of bytes. */
export function parseBytes(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  if (!match) return undefined;
  const unit = SIZE_UNITS[match[2]!.toLowerCase()];
  if (unit === undefined) return undefined;
  const bytes = Math.floor(Number(match[1]) * unit);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** Formats bytes as the engine's log options want them ("1m"). */
export function formatBytesForEngine(bytes: number): string {
  for (const [unit, size] of [['g', 1024 ** 3], ['m', 1024 ** 2], ['k', 1024]] as const) {
    if (bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return String(bytes);
}

/**
 * A duration as people write it: the largest unit that divides it ("365d", "90s"), else
 * milliseconds; a single day reads as "24h".
 */
export function formatDurationMs(ms: number): string {
  if (ms > DAY_MS && ms % DAY_MS === 0) return `${ms / DAY_MS}d`;
  for (const [unit, size] of [['h', HOUR_MS], ['m', MINUTE_MS], ['s', SECOND_MS]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** A size as people write it: the largest binary unit that divides it ("1p", "6m"), else bytes. */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [['p', 1024 ** 5], ['t', 1024 ** 4], ['g', 1024 ** 3], ['m', 1024 ** 2], ['k', 1024]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes} byte${bytes === 1 ? '' : "s"}`;
}

/** The rule a duration in milliseconds breaks, in words ("must be at most 365d"), or undefined within bounds. */
export function durationBoundRule(ms: number, bounds: DurationBounds): string | undefined {
  if (ms < bounds.minMs) return `must be at least ${formatDurationMs(bounds.minMs)}`;
  if (ms > bounds.maxMs) return `must be at most ${formatDurationMs(bounds.maxMs)} (${bounds.maxMs} ms)`;
  return undefined;
}

/** The rule a size in bytes breaks, in words ("must be at most 1p"), or undefined within bounds. */
export function sizeBoundRule(bytes: number, bounds: SizeBounds): string | undefined {
  const inBytes = (n: number): string => (/ bytes?$/.test(formatSize(n)) ? formatSize(n) : `${formatSize(n)} (${n} bytes)`);
  if (bytes < bounds.minBytes) return `must be at least ${inBytes(bounds.minBytes)}`;
  if (bytes > bounds.maxBytes) return `must be at most ${inBytes(bounds.maxBytes)}`;
  return undefined;
}

/** The rule a whole number breaks, in words ("must be at least 1"), or undefined within bounds. */
export function countBoundRule(count: number, bounds: CountBounds): string | undefined {
  if (count < bounds.min) return `must be at least ${bounds.min}`;
  if (count > bounds.max) return `must be at most ${bounds.max}`;
  return undefined;
}

/**
 * A size for people to read, in binary units: `512 B`, `1.5 KiB`, `256 MiB`, `2 GiB` (one decimal,
 * none when it is zero). The CLI's tables and the agent's refusals print sizes the same way. Its
 * inverse for input is `parseBytes`; `formatSize` writes a size as users type it ("256m").
 */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1).replace(/\.0$/, '')} ${units[unit]}`;
}

// ---- the one rule for durations and sizes that people type (flags, configuration, environment) ----

/** The units a typed duration takes. */
export const DURATION_UNIT_NAMES: readonly string[] = Object.freeze(['ms', 's', 'm', 'h', 'd']);

/** The units a typed size takes: binary, as the docker CLI's (1k = 1024 bytes); kb/kib and so on are read the same. */
export const SIZE_UNIT_NAMES: readonly string[] = Object.freeze(['b', 'k', 'm', 'g', 't', 'p']);

/** What reading a typed duration or size gave: its value, or the problem in words (without the field's name). */
export type TypedQuantity = { readonly ok: true; readonly value: number } | { readonly ok: false; readonly problem: string };

const BARE_NUMBER = /^\d+(\.\d+)?$/;

/**
 * How a duration text is read where no unit is given: `unit-required` (the rule everywhere: a bare
 * "30" could mean seconds or milliseconds) or `seconds` (the flags docker defines in seconds,
 * `--stop-timeout` and `stop -t`, where "10" is ten seconds as in docker).
 */
export type BareNumberReading = 'unit-required' | 'seconds';

/**
 * The one rule for a duration people type (a flag, a configuration key, an environment variable):
 * a number with a unit, "30s", "1m30s", "500ms", "1.5h", "7d"; a bare number is refused with the
 * units named, except "0" (zero in any unit) and, with `bare: 'seconds'`, a whole number of seconds.
 * Whether 0 is allowed, or means "no limit", is the caller's (the field's bounds) to say.
 */
export function readTypedDuration(text: string, bare: BareNumberReading = 'unit-required'): TypedQuantity {
  const trimmed = text.trim();
  const units = `units: ${DURATION_UNIT_NAMES.join(', ')}`;
  if (BARE_NUMBER.test(trimmed)) {
    if (Number(trimmed) === 0) return { ok: true, value: 0 };
    if (bare === 'seconds' && /^\d+$/.test(trimmed)) return seconds(Number(trimmed));
    return { ok: false, problem: `"${trimmed}" has no unit; use e.g. ${trimmed}s or ${trimmed}ms (${units})` };
  }
  const ms = trimmed === '' ? undefined : parseDurationMs(trimmed);
  if (ms === undefined) return { ok: false, problem: `"${trimmed}" is not a duration; use e.g. 30s, 1m30s or 500ms (${units})` };
  return { ok: true, value: ms };
}

function seconds(count: number): TypedQuantity {
  const ms = count * SECOND_MS;
  return Number.isSafeInteger(ms) ? { ok: true, value: ms } : { ok: false, problem: `"${count}" is too many seconds` };
}

/**
 * The one rule for a size people type: a number with a binary unit, "512m", "1g", "1.5g", "64k",
 * "100b"; a bare number is refused with the units named, except "0" (zero in any unit). Whether 0
 * is allowed, or means "no limit", is the caller's (the field's bounds) to say.
 */
export function readTypedSize(text: string): TypedQuantity {
  const trimmed = text.trim();
  const units = `units: ${SIZE_UNIT_NAMES.join(', ')}`;
  if (BARE_NUMBER.test(trimmed)) {
    if (Number(trimmed) === 0) return { ok: true, value: 0 };
    return { ok: false, problem: `"${trimmed}" has no unit; use e.g. ${trimmed}m or ${trimmed}k (${units}; 1k = 1024 bytes)` };
  }
  const bytes = trimmed === '' ? undefined : parseBytes(trimmed);
  if (bytes === undefined) return { ok: false, problem: `"${trimmed}" is not a size; use e.g. 512m or 1g (${units})` };
  return { ok: true, value: bytes };
}

/** What 0 means for a field: no limit at all (docker's `-m 0`, `--pids-limit 0`), or just its value (checked against the bounds). */
export type ZeroMeaning = 'no-limit' | 'value';

/**
 * The rule a typed duration breaks against its field's bounds, in human units ("must be at least
 * 1ms; 0 is not allowed here"), or undefined within them.
 */
export function typedDurationBoundRule(ms: number, bounds: DurationBounds): string | undefined {
  if (ms < bounds.minMs) return `must be at least ${formatDurationMs(bounds.minMs)}${ms === 0 ? '; 0 is not allowed here' : ''}`;
  if (ms > bounds.maxMs) return `must be at most ${formatDurationMs(bounds.maxMs)}`;
  return undefined;
}

/** The rule a typed size breaks against its field's bounds, in human units ("must be at least 6m"), or undefined within them. */
export function typedSizeBoundRule(bytes: number, bounds: SizeBounds): string | undefined {
  const human = (n: number): string => formatSize(n).replace(/ bytes?$/, 'b');
  if (bytes < bounds.minBytes) return `must be at least ${human(bounds.minBytes)}${bytes === 0 ? '; 0 is not allowed here' : ''}`;
  if (bytes > bounds.maxBytes) return `must be at most ${human(bounds.maxBytes)}`;
  return undefined;
}
