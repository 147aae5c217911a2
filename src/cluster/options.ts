import { z } from 'zod';
import { countOption, durationOption, durationRule, optionsResolver, type OptionsResolver } from '../common/validation.js';
import { DURATION_LIMITS, type DurationBounds } from '../common/units.js';

/** The bounds of the cluster store's durations. */
export const CLUSTER_OPTION_BOUNDS = Object.freeze({
  lease: { minMs: 100, maxMs: DURATION_LIMITS.operationMs },
  callDeadline: { minMs: 50, maxMs: DURATION_LIMITS.operationMs },
  placementGrace: { minMs: 0, maxMs: DURATION_LIMITS.operationMs },
  pollInterval: { minMs: 10, maxMs: DURATION_LIMITS.timerMs },
} satisfies Record<string, DurationBounds>);

const schema = z
  .object({
    connectionString: z.string().min(1, 'must be a postgres:// URL'),
    lease: durationOption(CLUSTER_OPTION_BOUNDS.lease, durationRule('10s')).default(10_000),
    callDeadline: durationOption(CLUSTER_OPTION_BOUNDS.callDeadline, durationRule('5s')).default(5_000),
    placementGrace: durationOption(CLUSTER_OPTION_BOUNDS.placementGrace, durationRule('2s')).default(2_000),
    poolSize: countOption({ min: 1, max: 100 }).default(10),
  })
  .strict();

/** Options of a {@link ClusterStore} as users write them; durations take `'10s'` or milliseconds. */
export interface ClusterStoreOptions {
  /** The PostgreSQL URL, e.g. `postgres://berth@db.example:5432/berth`. Required. */
  connectionString: string;
  /**
   * How long a node's lease lasts after its registration or last heartbeat; a node whose lease ran
   * out is declared down by the next `expireLeases`. Default `'10s'`; 100 ms to 24 h. Every node of a
   * cluster should use the same value (the lease is written by the node that renews it).
   */
  lease?: string | number;
  /** Every call fails with BERTH_CLUSTER_UNAVAILABLE when PostgreSQL has not answered in this time. Default `'5s'`; 50 ms to 24 h. */
  callDeadline?: string | number;
  /**
   * A queued task may be claimed by any node it fits once it has waited this long, even when the
   * strategy prefers another node (so a slow best node never blocks it). Default `'2s'`; 0 to 24 h.
   */
  placementGrace?: string | number;
  /** Connections the store's pool opens at most. Default 10. */
  poolSize?: number;
}

export interface ResolvedClusterStoreOptions {
  readonly connectionString: string;
  readonly leaseMs: number;
  readonly callDeadlineMs: number;
  readonly placementGraceMs: number;
  readonly poolSize: number;
}

/** Validates a cluster store's options once (see `optionsResolver`). */
export const resolveClusterStoreOptions: OptionsResolver<ClusterStoreOptions, ResolvedClusterStoreOptions> = optionsResolver(schema, (o) => ({
  connectionString: o.connectionString,
  leaseMs: o.lease,
  callDeadlineMs: o.callDeadline,
  placementGraceMs: o.placementGrace,
  poolSize: o.poolSize,
}));
