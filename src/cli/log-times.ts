import { ValidationError } from '../common/errors.js';
import { parseDurationMs } from '../common/units.js';

/**
 * `logs --since` and `--until` in docker's forms, to the RFC 3339 time the agent takes:
 * an RFC 3339 timestamp (`2024-05-01T10:00:00Z`, `…+02:00`, up to nine fractional digits, as `-t`
 * prints), Unix seconds with an optional fraction (`1714557600`, `1714557600.5`), or a duration
 * with units meaning that long before now (`10s`, `10m`, `1h30m`).
 */
export function parseLogTime(value: string, flag: '--since' | '--until', nowMs: number): string {
  const text = value.trim();
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/.test(text) && Number.isFinite(Date.parse(text.replace(/(\.\d{3})\d+/, '$1')))) return text;
  const unix = /^(\d{1,12})(?:\.(\d{1,9}))?$/.exec(text);
  if (unix) {
    const seconds = new Date(Number(unix[1]) * 1000).toISOString().slice(0, 19);
    return `${seconds}.${(unix[2] ?? '').padEnd(9, '0')}Z`;
  }
  // A duration needs its unit here: a bare number is Unix seconds, as docker reads it.
  const agoMs = /[a-z]$/i.test(text) ? parseDurationMs(text) : undefined;
  if (agoMs !== undefined) return new Date(nowMs - agoMs).toISOString();
  throw new ValidationError([
    { field: flag, rule: `"${value}" is not a time: use an RFC 3339 timestamp (2024-05-01T10:00:00Z), Unix seconds (1714557600) or a duration before now (10s, 10m, 1h30m)` },
  ]);
}

/** The most lines `logs --tail` keeps (the agent's bound too): more is `all`. */
export const MAX_TAIL_LINES = 1_000_000;

/** `logs --tail N` (the last N lines) or `all`; undefined for all. */
export function parseTail(value: string): number | undefined {
  const text = value.trim();
  if (text === 'all') return undefined;
  if (!/^\d+$/.test(text) || Number(text) > MAX_TAIL_LINES) throw new ValidationError([{ field: '-n/--tail', rule: `"${value}" must be a number of lines from 0 to ${MAX_TAIL_LINES}, or all` }]);
  return Number(text);
}
