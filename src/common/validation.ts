import { z } from 'zod';
import { ValidationError, type FieldIssue } from './errors.js';
import { durationBoundRule, parseDurationMs, type DurationBounds } from './units.js';

/** The rule a duration option breaks, in words. */
export const DURATION_RULE = 'must be a duration such as "3m", "1m30s" or a number of milliseconds';

/**
 * Parses options with a zod schema, or throws a ValidationError naming every field at fault under
 * `fieldPrefix` (e.g. `images.` inside the agent's configuration). An unknown key is named as such;
 * a union that matched nothing (string-or-number durations) gets `unionRule`.
 */
export function parseOptions<Schema extends z.ZodType>(
  schema: Schema,
  input: unknown,
  fieldPrefix = '',
  unionRule = DURATION_RULE,
): z.output<Schema> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issues: FieldIssue[] = parsed.error.issues.flatMap((issue) => {
    if (issue.code === 'unrecognized_keys') return issue.keys.map((key) => ({ field: `${fieldPrefix}${key}`, rule: 'is not a known option' }));
    const field = `${fieldPrefix}${issue.path.map(String).join('.')}`;
    return [{ field, rule: issue.code === 'invalid_union' ? unionRule : issue.message }];
  });
  throw new ValidationError(issues);
}

/**
 * A duration option (`'30s'` or milliseconds) within `bounds`, in milliseconds. Anything else, a
 * wrong type included, is an issue with the rule in words: the option's bounds are part of its rule.
 */
export function durationOption(bounds: DurationBounds, rule = DURATION_RULE) {
  return z.unknown().transform((value, ctx): number => {
    const ms = typeof value === 'string' || typeof value === 'number' ? parseDurationMs(value) : undefined;
    const broken = ms === undefined ? rule : durationBoundRule(ms, bounds);
    if (broken !== undefined) {
      ctx.addIssue({ code: 'custom', message: broken });
      return z.NEVER;
    }
    return ms!;
  });
}
