import { z } from 'zod';
import { parseOptions } from '../common/validation.js';
import { parseDurationMs } from '../common/units.js';

const duration = (minimumMs: number) =>
  z.union([z.string(), z.number()]).transform((value, ctx) => {
    const ms = parseDurationMs(value);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: 'must be a duration such as "3m", "1m30s" or a number of milliseconds' });
      return z.NEVER;
    }
    if (ms < minimumMs) {
      ctx.addIssue({ code: 'custom', message: `must be at least ${minimumMs} ms` });
      return z.NEVER;
    }
    return ms;
  });

const attempts = z.number().int('must be a whole number').min(1, 'must be at least 1').max(20, 'must be at most 20');

const schema = z
  .object({
    removeDelay: duration(0).default(180_000),
    pullActivityTimeout: duration(100).default(120_000),
    cleanup: z.boolean().default(true),
    pullAttempts: attempts.default(3),
    pullRetryDelay: duration(0).default(1_000),
    removeAttempts: attempts.default(3),
    removeRetryDelay: duration(0).default(500),
    dockerConfigDir: z.string().min(1, 'must be a directory path').optional(),
    credentialHelperEnv: z.record(z.string(), z.string()).optional(),
    credentialHelperTimeout: duration(100).default(10_000),
  })
  .strict();

/** Options of the image coordinator as users write them; durations take `'3m'` or milliseconds. */
export interface ImageCoordinatorOptions {
  /** How long an image nobody holds is kept before it is removed. Default `'3m'`. */
  removeDelay?: string | number;
  /** A pull that delivers nothing for this long is aborted as stalled. Default `'2m'`; minimum 100 ms. */
  pullActivityTimeout?: string | number;
  /** Whether images are reference-counted and removed when unused. Default true; false: nothing is counted or removed. */
  cleanup?: boolean;
  /** Attempts of a pull that fails for a reason that may pass (network, engine, stall). Default 3. */
  pullAttempts?: number;
  /** Delay before the second pull attempt; doubles after each. Default `'1s'`. */
  pullRetryDelay?: string | number;
  /** Attempts of a removal that fails for a reason that may pass. Default 3. */
  removeAttempts?: number;
  /** Delay before the second removal attempt; doubles after each. Default `'500ms'`. */
  removeRetryDelay?: string | number;
  /**
   * The Docker client configuration directory holding config.json, resolved at the edge with
   * `dockerConfigDirFromEnv(process.env)`. Default: none, so no credentials come from a config.
   */
  dockerConfigDir?: string;
  /**
   * The environment `docker-credential-*` helpers run with, PATH included (it is where they are
   * found). Default: this process's environment, inherited.
   */
  credentialHelperEnv?: Readonly<Record<string, string>>;
  /** A credential helper that has not answered in this time is killed. Default `'10s'`. */
  credentialHelperTimeout?: string | number;
}

/** The validated, defaulted, frozen options. */
export interface ResolvedImageCoordinatorOptions {
  readonly removeDelayMs: number;
  readonly pullActivityTimeoutMs: number;
  readonly cleanup: boolean;
  readonly pullAttempts: number;
  readonly pullRetryDelayMs: number;
  readonly removeAttempts: number;
  readonly removeRetryDelayMs: number;
  readonly dockerConfigDir: string | undefined;
  readonly credentialHelperEnv: Readonly<Record<string, string>> | undefined;
  readonly credentialHelperTimeoutMs: number;
}

/**
 * Validates the coordinator's options once: a ValidationError names every field at fault, under
 * `fieldPrefix` (e.g. `images.` in the agent's configuration).
 */
export function resolveImageCoordinatorOptions(input: ImageCoordinatorOptions = {}, fieldPrefix = ''): ResolvedImageCoordinatorOptions {
  const o = parseOptions(schema, input, fieldPrefix);
  return Object.freeze({
    removeDelayMs: o.removeDelay,
    pullActivityTimeoutMs: o.pullActivityTimeout,
    cleanup: o.cleanup,
    pullAttempts: o.pullAttempts,
    pullRetryDelayMs: o.pullRetryDelay,
    removeAttempts: o.removeAttempts,
    removeRetryDelayMs: o.removeRetryDelay,
    dockerConfigDir: o.dockerConfigDir,
    credentialHelperEnv: o.credentialHelperEnv === undefined ? undefined : Object.freeze({ ...o.credentialHelperEnv }),
    credentialHelperTimeoutMs: o.credentialHelperTimeout,
  });
}
