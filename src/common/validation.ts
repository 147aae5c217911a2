import { z } from 'zod';
import { ValidationError, type FieldIssue } from './errors.js';
import {
  countBoundRule,
  durationBoundRule,
  formatDurationMs,
  parseBytes,
  parseDurationMs,
  sizeBoundRule,
  type CountBounds,
  type DurationBounds,
  type SizeBounds,
} from './units.js';

/**
 * The zod leaves every layer validates its durations, sizes, counts and switches with: the task
 * spec, the library components' options and the agent's configuration compose these, so a value
 * means the same and breaks the same rule, in the same words, wherever it is written.
 */

/** The rule a duration option breaks, in words. */
export const DURATION_RULE = 'must be a duration such as "3m", "1m30s" or a number of milliseconds';

/** The rule a size option breaks, in words. */
export const SIZE_RULE = 'must be a size such as "128m", "1g" or a whole number of bytes';

/** The duration rule with an option's own default as the example: `must be a duration such as "5m"`. */
export const durationRule = (example: string): string => `must be a duration such as "${example}"`;

/** The size rule with an option's own default as the example: `must be a size such as "10m"`. */
export const sizeRule = (example: string): string => `must be a size such as "${example}"`;

/**
 * Any value, typed as what users should write: the transform that follows checks the type itself,
 * so that a wrong type is reported with the field's own rule rather than zod's "invalid input".
 */
export const anyTypedAs = <T>() => z.custom<T>(() => true);

/** Adds an issue with `message` and answers zod's NEVER, so a transform can `return issue(ctx, …)`. */
export const issue = (ctx: z.RefinementCtx, message: string): never => {
  ctx.addIssue({ code: 'custom', message });
  return z.NEVER;
};

const toMs = (value: unknown): number | undefined => (typeof value === 'string' || typeof value === 'number' ? parseDurationMs(value) : undefined);

/**
 * A duration (`'30s'` or milliseconds) within `bounds`, in milliseconds. Anything else, a wrong
 * type included, is an issue with `rule`; a duration out of bounds names the bound it broke.
 */
export function durationOption(bounds: DurationBounds, rule = DURATION_RULE) {
  return anyTypedAs<string | number>().transform((value, ctx): number => {
    const ms = toMs(value);
    if (ms === undefined) return issue(ctx, rule);
    const broken = durationBoundRule(ms, bounds);
    return broken === undefined ? ms : issue(ctx, broken);
  });
}

/**
 * `"off"` (undefined: the thing is not bounded or not scheduled) or a duration within `bounds`. Its
 * rule names the range, since "off" is the usual value and the bound is what users need to know.
 */
export function durationOrOffOption(bounds: DurationBounds, example: string) {
  return anyTypedAs<string | number>().transform((value, ctx): number | undefined => {
    if (value === 'off') return undefined;
    const ms = toMs(value);
    const broken = ms === undefined ? undefined : durationBoundRule(ms, bounds);
    if (ms !== undefined && broken === undefined) return ms;
    const range = `${formatDurationMs(bounds.minMs)} to ${formatDurationMs(bounds.maxMs)}`;
    return issue(ctx, `must be "off" or a duration from ${range}, such as "${example}"${broken === undefined ? '' : ` (${broken})`}`);
  });
}

/** A size (`'128m'` or bytes) within `bounds`, in bytes; anything else is an issue with `rule`. */
export function sizeOption(bounds: SizeBounds, rule = SIZE_RULE) {
  return anyTypedAs<string | number>().transform((value, ctx): number => {
    const bytes = typeof value === 'string' || typeof value === 'number' ? parseBytes(value) : undefined;
    if (bytes === undefined) return issue(ctx, rule);
    const broken = sizeBoundRule(bytes, bounds);
    return broken === undefined ? bytes : issue(ctx, broken);
  });
}

/** A whole number within `bounds`; `unit` completes the type rule (`must be a whole number of milli-CPUs`). */
export function countOption(bounds: CountBounds, unit = '') {
  return anyTypedAs<number>().transform((value, ctx): number => {
    if (typeof value !== 'number' || !Number.isInteger(value)) return issue(ctx, `must be a whole number${unit}`);
    const broken = countBoundRule(value, bounds);
    return broken === undefined ? value : issue(ctx, broken);
  });
}

/** true or false, and nothing that merely looks like one ("yes", 1). */
export function booleanOption() {
  return anyTypedAs<boolean>().transform((value, ctx): boolean => (typeof value === 'boolean' ? value : issue(ctx, 'must be true or false')));
}

/**
 * Parses options with a zod schema, or throws a ValidationError naming every field at fault under
 * `fieldPrefix` (e.g. `images.` inside the agent's configuration). An unknown key is named as such.
 */
export function parseOptions<Schema extends z.ZodType>(schema: Schema, input: unknown, fieldPrefix = ''): z.output<Schema> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issues: FieldIssue[] = parsed.error.issues.flatMap((issue) => {
    if (issue.code === 'unrecognized_keys') return issue.keys.map((key) => ({ field: `${fieldPrefix}${key}`, rule: 'is not a known option' }));
    return [{ field: `${fieldPrefix}${issue.path.map(String).join('.')}`, rule: issue.message }];
  });
  throw new ValidationError(issues);
}

/** A component's `resolve…Options`: options as users write them, and a field prefix for its errors. */
export type OptionsResolver<Options, Resolved> = (input?: Options, fieldPrefix?: string) => Resolved;

/**
 * Makes a component's `resolve…Options`, the one step that turns options as users write them into
 * resolved options: it parses them with `schema` (a ValidationError names every field at fault,
 * under `fieldPrefix`, e.g. `images.` in the agent's configuration), compiles the parsed values into
 * the resolved shape (`…Ms` names, derived values) and freezes the result. Input defaults to `{}`.
 */
export function optionsResolver<Schema extends z.ZodType, Resolved extends object>(
  schema: Schema,
  compile: (parsed: z.output<Schema>) => Resolved,
): OptionsResolver<unknown, Readonly<Resolved>> {
  return (input = {}, fieldPrefix = '') => Object.freeze(compile(parseOptions(schema, input, fieldPrefix)));
}

/**
 * The entries of a configuration mapping, given as an object or (from the environment, which holds
 * only strings) as a list of `name=value`; undefined for anything else. An item without `=` gives
 * the value undefined, for the caller's rule to refuse.
 */
export function mappingEntries(value: unknown): Array<[string, unknown]> | undefined {
  if (Array.isArray(value)) {
    return value.map((item): [string, unknown] => {
      const text = typeof item === 'string' ? item : '';
      const eq = text.indexOf('=');
      return eq === -1 ? [text, undefined] : [text.slice(0, eq).trim(), text.slice(eq + 1).trim()];
    });
  }
  return typeof value === 'object' && value !== null ? Object.entries(value) : undefined;
}
