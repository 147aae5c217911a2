/**
 * Prune filters as Moby's, parsed once into a pure predicate:
 *
 * - `label=<key>` / `label=<key>=<value>`: only objects with the label (and that value); every
 *   `label` filter must hold.
 * - `label!=<key>` / `label!=<key>=<value>`: only objects without the label (or with another
 *   value); every `label!` filter must hold.
 * - `until=<time>`: only objects created before the time: a duration back from now (`24h`,
 *   `1h30m`), an RFC 3339 time (`2024-05-01T12:00:00Z`) or a Unix timestamp in seconds with an
 *   optional fraction (`1714564800`, `1714564800.5`). At most one.
 *
 * Filters come as the CLI writes them (`['label=a', 'until=24h']`) or as the engine's HTTP API
 * takes them (`{ label: ['a'], until: ['24h'] }`, or the older `{ label: { a: true } }`).
 */
import { ValidationError, type FieldIssue } from '../common/errors.js';
import { parseDurationMs } from '../common/units.js';

/** The filter names prune accepts. */
export const ACCEPTED_PRUNE_FILTERS = Object.freeze(['label', 'label!', 'until'] as const);

export type PruneFilterName = (typeof ACCEPTED_PRUNE_FILTERS)[number];

/** Filters as users give them: CLI strings, or the engine API's map. */
export type PruneFilterInput = readonly string[] | Readonly<Record<string, readonly string[] | Readonly<Record<string, boolean>>>>;

/** One label condition: the key, and the value when one was given. */
export interface LabelCondition {
  readonly key: string;
  readonly value?: string;
}

/** Parsed filters; nothing set means everything matches. */
export interface PruneFilters {
  /** Each must hold: the object has the label (with that value, when given). */
  readonly labels: readonly LabelCondition[];
  /** Each must hold: the object lacks the label (or has another value, when one is given). */
  readonly notLabels: readonly LabelCondition[];
  /** Only objects created strictly before this time (ms since the epoch, fractional) match. */
  readonly untilMs: number | undefined;
}

/** What a filter is matched against. */
export interface FilterSubject {
  labels: Readonly<Record<string, string>>;
  /** Creation time in ms; an object without one never matches an `until` filter (it is kept). */
  createdAtMs: number | undefined;
}

export const NO_PRUNE_FILTERS: PruneFilters = Object.freeze({ labels: Object.freeze([]), notLabels: Object.freeze([]), untilMs: undefined });

const UNIX_TIMESTAMP = /^(\d+)(?:\.(\d{1,9}))?$/;
const RFC3339 = /^(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$/;

/**
 * Parses the value of an `until` filter into a cut-off in ms since the epoch (fractional: a Unix
 * timestamp's fraction is kept to the nanosecond as far as a double can). Undefined when it is none
 * of the three forms.
 */
export function parseUntil(value: string, nowMs: number): number | undefined {
  const text = value.trim();
  // A bare number is a Unix timestamp, never a duration: Moby reads `until=1714564800` this way.
  const unix = UNIX_TIMESTAMP.exec(text);
  if (unix) return Number(unix[1]) * 1000 + (unix[2] === undefined ? 0 : Number(`0.${unix[2]}`) * 1000);
  const rfc = RFC3339.exec(text);
  if (rfc) {
    const [, dateTime, fraction, zone] = rfc;
    const wholeMs = Date.parse(`${dateTime!}${zone!.toUpperCase()}`);
    if (Number.isNaN(wholeMs) || !validCalendarDate(dateTime!)) return undefined;
    return wholeMs + (fraction === undefined ? 0 : Number(`0.${fraction}`) * 1000);
  }
  if (/^\d+(?:\.\d+)?(?:ms|s|m|h|d)/.test(text)) {
    const durationMs = parseDurationMs(text);
    if (durationMs !== undefined) return nowMs - durationMs;
  }
  return undefined;
}

/** Date.parse rolls 2024-02-30 over to March; the engine refuses it, and so does berth. */
function validCalendarDate(dateTime: string): boolean {
  const [year, month, day] = dateTime.slice(0, 10).split('-').map(Number) as [number, number, number];
  const [hour, minute, second] = dateTime.slice(11).split(':').map(Number) as [number, number, number];
  const date = new Date(Date.UTC(year, month - 1, day));
  return date.getUTCMonth() === month - 1 && date.getUTCDate() === day && hour < 24 && minute < 60 && second < 60;
}

function parseLabelCondition(value: string): LabelCondition | undefined {
  const equals = value.indexOf('=');
  const key = (equals === -1 ? value : value.slice(0, equals)).trim();
  if (key === '') return undefined;
  return equals === -1 ? { key } : { key, value: value.slice(equals + 1) };
}

/** Turns either input form into (name, value) pairs, in order. */
function entries(input: PruneFilterInput, field: string, issues: FieldIssue[]): Array<[string, string]> {
  if (Array.isArray(input)) {
    return (input as readonly unknown[]).flatMap((item, index): Array<[string, string]> => {
      if (typeof item !== 'string') {
        issues.push({ field: `${field}[${index}]`, rule: 'must be a string such as "label=key=value" or "until=24h"' });
        return [];
      }
      const equals = item.indexOf('=');
      if (equals <= 0) {
        issues.push({ field: `${field}[${index}]`, rule: `"${item}" is not a filter: write name=value, e.g. "label=key=value" or "until=24h"` });
        return [];
      }
      return [[item.slice(0, equals).trim(), item.slice(equals + 1)]];
    });
  }
  const pairs: Array<[string, string]> = [];
  for (const [name, values] of Object.entries(input)) {
    if (Array.isArray(values)) {
      for (const value of values as readonly unknown[]) {
        if (typeof value === 'string') pairs.push([name, value]);
        else issues.push({ field: `${field}.${name}`, rule: 'values must be strings' });
      }
    } else if (values !== null && typeof values === 'object') {
      // The engine's older form: { "label": { "a=b": true } }.
      for (const [value, on] of Object.entries(values)) if (on === true) pairs.push([name, value]);
    } else {
      issues.push({ field: `${field}.${name}`, rule: 'must be a list of strings' });
    }
  }
  return pairs;
}

/**
 * Parses prune filters, once, at the edge. Throws a ValidationError naming every bad filter;
 * an unknown filter's message lists the accepted ones. `nowMs` anchors a duration given to `until`.
 */
export function parsePruneFilters(input: PruneFilterInput | undefined, nowMs: number, field = 'filters'): PruneFilters {
  if (input === undefined) return NO_PRUNE_FILTERS;
  const issues: FieldIssue[] = [];
  if (input === null || typeof input !== 'object') {
    throw new ValidationError([{ field, rule: 'must be a list such as ["label=key=value", "until=24h"] or a map such as {"label": ["key=value"]}' }]);
  }
  const labels: LabelCondition[] = [];
  const notLabels: LabelCondition[] = [];
  const untils: number[] = [];
  for (const [name, value] of entries(input, field, issues)) {
    if (name === 'label' || name === 'label!') {
      const condition = parseLabelCondition(value);
      if (!condition) issues.push({ field: `${field}.${name}`, rule: `"${value}" has no label key: write ${name}=<key> or ${name}=<key>=<value>` });
      else (name === 'label' ? labels : notLabels).push(Object.freeze(condition));
    } else if (name === 'until') {
      const untilMs = parseUntil(value, nowMs);
      if (untilMs === undefined) {
        issues.push({ field: `${field}.until`, rule: `"${value}" is not a time: give a duration such as "24h", an RFC 3339 time such as "2024-05-01T12:00:00Z" or a Unix timestamp such as "1714564800.5"` });
      } else if (untilMs < 0) {
        // Nothing was created before 1970: such a filter would keep everything, silently.
        issues.push({ field: `${field}.until`, rule: `"${value}" reaches back before 1970-01-01 (the Unix epoch): a duration must be at most the time since then` });
      } else untils.push(untilMs);
    } else {
      issues.push({ field, rule: `unknown filter "${name}"; accepted filters: ${ACCEPTED_PRUNE_FILTERS.join(', ')}` });
    }
  }
  if (untils.length > 1) issues.push({ field: `${field}.until`, rule: 'more than one until filter; give at most one' });
  if (issues.length > 0) throw new ValidationError(issues);
  return Object.freeze({ labels: Object.freeze(labels), notLabels: Object.freeze(notLabels), untilMs: untils[0] });
}

function hasLabel(labels: Readonly<Record<string, string>>, condition: LabelCondition): boolean {
  if (!Object.hasOwn(labels, condition.key)) return false;
  return condition.value === undefined || labels[condition.key] === condition.value;
}

/** Whether an object passes every filter. */
export function matchesPruneFilters(filters: PruneFilters, subject: FilterSubject): boolean {
  if (!filters.labels.every((condition) => hasLabel(subject.labels, condition))) return false;
  if (filters.notLabels.some((condition) => hasLabel(subject.labels, condition))) return false;
  if (filters.untilMs !== undefined && (subject.createdAtMs === undefined || !(subject.createdAtMs < filters.untilMs))) return false;
  return true;
}

/** The `label` filters in the engine's list syntax (`key` or `key=value`), so lists are narrowed engine-side. */
export function engineLabelFilters(filters: PruneFilters): string[] {
  return filters.labels.map((c) => (c.value === undefined ? c.key : `${c.key}=${c.value}`));
}

/** The filters back in CLI form, for logs and reports. */
export function formatPruneFilters(filters: PruneFilters): string[] {
  const label = (name: string, c: LabelCondition): string => (c.value === undefined ? `${name}=${c.key}` : `${name}=${c.key}=${c.value}`);
  return [
    ...filters.labels.map((c) => label('label', c)),
    ...filters.notLabels.map((c) => label('label!', c)),
    ...(filters.untilMs === undefined ? [] : [`until=${new Date(Math.floor(filters.untilMs)).toISOString()}`]),
  ];
}
