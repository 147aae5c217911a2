import { z } from 'zod';
import { ValidationError, type FieldIssue } from '../common/errors.js';
import { DURATION_LIMITS, type CountBounds, type DurationBounds } from '../common/units.js';
import { booleanOption, countOption, durationOrOffOption, issue } from '../common/validation.js';
import { notPoolableReason } from '../pools/key.js';
import type { PoolDefinition } from '../pools/types.js';
import { resolveTaskSpec, type SpecPolicy, type TaskSpec } from '../spec/schema.js';
import type { StoredTaskSpec } from '../state/tasks.js';
import { agentSpecIssues, withAgentDefaults, type SpecDefaultsConfig } from './spec-defaults.js';

/**
 * The agent's `pools` key: warm pools (src/pools) declared in its configuration. Each entry is a
 * name, a spec (checked as a submitted spec is: the agent's defaults and sandbox preset applied,
 * then its policy), a size, an idle time after which idle containers are frozen, and hot reuse.
 */

/** One entry of `pools` as users write it. */
export interface PoolConfigInput {
  /** `[a-z0-9][a-z0-9_-]*`, at most 32 characters; unique. */
  name: string;
  /** A task spec: its create-time parts are the pool key (its command is not used). */
  spec: Record<string, unknown>;
  /** Idle containers kept started. Default 1; 0 to 64. */
  size?: number;
  /** An idle container is frozen once idle this long; "off" (the default) never freezes. */
  freezeAfter?: string | number;
  /** Hot reuse: a container serves task after task (see README "Warm pools"). Default false. */
  reuse?: boolean;
}

/** A pool's name: [a-z0-9][a-z0-9_-]*, at most 32 characters. */
export const POOL_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;
export const POOL_NAME_RULE = 'must be 1 to 32 characters of [a-z0-9_-], starting with a letter or digit';

export const POOL_BOUNDS = Object.freeze({
  size: { min: 0, max: 64 } satisfies CountBounds,
  freezeAfter: { minMs: 0, maxMs: DURATION_LIMITS.timerMs } satisfies DurationBounds,
});

const POOL_KEYS: readonly string[] = ['name', 'spec', 'size', 'freezeAfter', 'reuse'];

const isPlain = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/** A pool entry parsed for its shape (the spec is checked later, against the policy: see compilePools). */
export interface ParsedPool {
  readonly name: string;
  readonly spec: Record<string, unknown>;
  readonly size: number;
  readonly freezeAfterMs?: number;
  readonly reuse: boolean;
}

const sizeField = countOption(POOL_BOUNDS.size);
const freezeField = durationOrOffOption(POOL_BOUNDS.freezeAfter, '30s');
const reuseField = booleanOption();

/** The `pools` key's schema: a list of entries, each named, with unique names. */
export const poolsOption = z.unknown().transform((value, ctx): ParsedPool[] => {
  if (!Array.isArray(value)) return issue(ctx, 'must be a list of pools: { name, spec, size, freezeAfter, reuse }');
  const pools: ParsedPool[] = [];
  const seen = new Map<string, number>();
  value.forEach((entry: unknown, i) => {
    const fail = (field: string | undefined, message: string): void => ctx.addIssue({ code: 'custom', path: field === undefined ? [i] : [i, field], message });
    if (!isPlain(entry)) {
      fail(undefined, 'must be a mapping: { name, spec, size, freezeAfter, reuse }');
      return;
    }
    for (const key of Object.keys(entry).filter((k) => !POOL_KEYS.includes(k))) fail(key, 'is not a pool key (name, spec, size, freezeAfter, reuse)');
    let ok = true;
    const name = entry.name;
    if (typeof name !== 'string' || !POOL_NAME.test(name)) {
      fail('name', POOL_NAME_RULE);
      ok = false;
    } else if (seen.has(name)) {
      fail('name', `is "${name}", the name of pools[${seen.get(name)}] too: pool names must be unique`);
      ok = false;
    } else {
      seen.set(name, i);
    }
    if (!isPlain(entry.spec)) {
      fail('spec', 'must be set: a task spec (a mapping with at least an image)');
      ok = false;
    }
    const parse = <T>(field: string, schema: z.ZodType<T, unknown>, raw: unknown): T | undefined => {
      const parsed = schema.safeParse(raw);
      if (parsed.success) return parsed.data;
      fail(field, parsed.error.issues[0]?.message ?? 'is not valid');
      ok = false;
      return undefined;
    };
    const size = entry.size === undefined ? 1 : parse('size', sizeField, entry.size);
    const freezeAfterMs = entry.freezeAfter === undefined ? undefined : parse('freezeAfter', freezeField, entry.freezeAfter);
    const reuse = entry.reuse === undefined ? false : parse('reuse', reuseField, entry.reuse);
    if (!ok || size === undefined || reuse === undefined) return;
    pools.push({ name: name as string, spec: entry.spec as Record<string, unknown>, size, ...(freezeAfterMs !== undefined ? { freezeAfterMs } : {}), reuse });
  });
  return pools;
});

/**
 * Checks each pool's spec as the agent checks a submitted one (its rules for the agent, its
 * defaults and sandbox preset applied, then the spec's schema and the policy) and returns the
 * pools with their specs as a task matching them would be stored. Throws one ValidationError
 * naming every problem as `pools[i].spec.<field>`.
 */
export function compilePools(pools: readonly ParsedPool[], config: SpecDefaultsConfig, policy: SpecPolicy): PoolDefinition[] {
  const issues: FieldIssue[] = [];
  const compiled: PoolDefinition[] = [];
  pools.forEach((pool, i) => {
    const prefix = `pools[${i}].spec`;
    const named = (found: readonly FieldIssue[]): FieldIssue[] => found.map((it) => ({ field: it.field === 'spec' ? prefix : `${prefix}.${it.field}`, rule: it.rule }));
    const own = agentSpecIssues(pool.spec);
    if (own.length > 0) {
      issues.push(...named(own));
      return;
    }
    if (pool.spec.stdin !== undefined) {
      issues.push({ field: `${prefix}.stdin`, rule: 'cannot be set on a pool: each task brings its own' });
      return;
    }
    const spec = withAgentDefaults(pool.spec as StoredTaskSpec, config);
    try {
      const notPoolable = notPoolableReason(resolveTaskSpec(spec, policy));
      if (notPoolable !== undefined) {
        issues.push({ field: prefix, rule: `cannot be pooled (${notPoolable}): a pool container is made before its task, see README "Warm pools"` });
        return;
      }
    } catch (error) {
      if (!(error instanceof ValidationError)) throw error;
      issues.push(...named(error.issues));
      return;
    }
    compiled.push({ name: pool.name, spec: spec as TaskSpec, size: pool.size, ...(pool.freezeAfterMs !== undefined ? { freezeAfterMs: pool.freezeAfterMs } : {}), reuse: pool.reuse });
  });
  if (issues.length > 0) throw new ValidationError(issues);
  return compiled;
}
