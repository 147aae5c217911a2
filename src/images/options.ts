import { z } from 'zod';
import { booleanOption, countOption, durationOption, durationRule, optionsResolver, type OptionsResolver } from '../common/validation.js';
import { DURATION_LIMITS, type DurationBounds } from '../common/units.js';

/** The bounds of the coordinator's durations: each is held by one Node timer, so none reaches its 24.8-day limit. */
export const IMAGE_OPTION_BOUNDS = Object.freeze({
  removeDelay: { minMs: 0, maxMs: DURATION_LIMITS.timerMs },
  pullActivityTimeout: { minMs: 100, maxMs: DURATION_LIMITS.operationMs },
  pullRetryDelay: { minMs: 0, maxMs: DURATION_LIMITS.operationMs },
  removeRetryDelay: { minMs: 0, maxMs: DURATION_LIMITS.operationMs },
  credentialHelperTimeout: { minMs: 100, maxMs: DURATION_LIMITS.operationMs },
} satisfies Record<string, DurationBounds>);

const attempts = () => countOption({ min: 1, max: 20 });

/**
 * The rule of each option, defaulted: the coordinator resolves its options with them, and the
 * agent's configuration composes the ones it exposes (`images.*`), so both hold the same rule.
 */
export const IMAGE_OPTION_FIELDS = Object.freeze({
  removeDelay: durationOption(IMAGE_OPTION_BOUNDS.removeDelay, durationRule('3m')).default(180_000),
  pullActivityTimeout: durationOption(IMAGE_OPTION_BOUNDS.pullActivityTimeout, durationRule('2m')).default(120_000),
  cleanup: booleanOption().default(true),
  pullAttempts: attempts().default(3),
  pullRetryDelay: durationOption(IMAGE_OPTION_BOUNDS.pullRetryDelay, durationRule('1s')).default(1_000),
  removeAttempts: attempts().default(3),
  removeRetryDelay: durationOption(IMAGE_OPTION_BOUNDS.removeRetryDelay, durationRule('500ms')).default(500),
  dockerConfigDir: z.string().min(1, 'must be a directory path').optional(),
  credentialHelperEnv: z.record(z.string(), z.string()).optional(),
  credentialHelperTimeout: durationOption(IMAGE_OPTION_BOUNDS.credentialHelperTimeout, durationRule('10s')).default(10_000),
});

const schema = z.object(IMAGE_OPTION_FIELDS).strict();

/** Options of the image coordinator as users write them; durations take `'3m'` or milliseconds. */
export interface ImageCoordinatorOptions {
  /** How long an image nobody holds is kept before it is removed. Default `'3m'`; at most `'24d'`. */
  removeDelay?: string | number;
  /** A pull that delivers nothing for this long is aborted as stalled. Default `'2m'`; 100 ms to `'24h'`. */
  pullActivityTimeout?: string | number;
  /** Whether images are reference-counted and removed when unused. Default true; false: nothing is counted or removed. */
  cleanup?: boolean;
  /** Attempts of a pull that fails for a reason that may pass (network, engine, stall). Default 3. */
  pullAttempts?: number;
  /** Delay before the second pull attempt; doubles after each. Default `'1s'`; at most `'24h'`. */
  pullRetryDelay?: string | number;
  /** Attempts of a removal that fails for a reason that may pass. Default 3. */
  removeAttempts?: number;
  /** Delay before the second removal attempt; doubles after each. Default `'500ms'`; at most `'24h'`. */
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
  /** A credential helper that has not answered in this time is killed. Default `'10s'`; 100 ms to `'24h'`. */
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

/** Validates the coordinator's options once (see `optionsResolver`); `fieldPrefix` is e.g. `images.` in the agent's configuration. */
export const resolveImageCoordinatorOptions: OptionsResolver<ImageCoordinatorOptions, ResolvedImageCoordinatorOptions> = optionsResolver(schema, (o) => ({
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
}));
