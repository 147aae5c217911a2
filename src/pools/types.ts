/**
 * Warm pools: the shapes the library's pools, the driver and the agent share.
 *
 * A pool keeps containers of one *pool key* created, started and idle, each running berth's holder
 * program as PID 1. A task whose spec has the same key (it may still choose its command, entrypoint,
 * working directory, extra env and stdin) takes one, runs as an exec in it, and the container is then
 * removed (or, with `reuse`, returned to the pool). See README "Warm pools".
 */
import type { TaskSpec } from '../spec/schema.js';

/** A pool as declared in the agent's config (`pools`) or given to the library's driver. */
export interface PoolDefinition {
  /** `[a-z0-9][a-z0-9_-]*`, at most 32 characters; unique among the owner's pools. */
  readonly name: string;
  /**
   * The spec whose create-time parts are the pool key: image, resources, mounts, network, security
   * options, user, log, env the pool fixes. Its command, entrypoint and working directory are not used.
   */
  readonly spec: TaskSpec;
  /** Idle containers kept started; 0 keeps none (the pool only serves hot reuse). */
  readonly size: number;
  /** An idle container is frozen (the engine's pause) once idle this long; undefined: never frozen. */
  readonly freezeAfterMs?: number;
  /** Hot reuse: a container that served a task that exited on its own serves the next one too. Off by default. */
  readonly reuse?: boolean;
}

/** How a task was started: `warm` took a pool container (named `pool`), `cold` created its own. */
export type StartPath = { kind: 'cold'; reason: ColdReason } | { kind: 'warm'; pool: string; execId: string; containerId: string };

/**
 * Why a task started cold: `pool-failed` when the pool containers it took could not serve it (their
 * thaw or launcher failed before anything of the task ran; they were removed).
 */
export type ColdReason = 'no-pool' | 'no-match' | 'pool-empty' | 'not-poolable' | 'pool-failed';

/** What the pools report, for metrics and events. */
export type PoolEvent =
  | { type: 'pool.hit'; pool: string; taskId: string }
  | { type: 'pool.miss'; pool?: string; taskId: string; reason: ColdReason }
  | { type: 'pool.refilled'; pool: string; containerId: string; latencyMs: number }
  | { type: 'pool.frozen'; pool: string; containerId: string }
  | { type: 'pool.thawed'; pool: string; containerId: string }
  | { type: 'pool.removed'; pool: string; containerId: string; reason: 'served' | 'shrunk' | 'failed' | 'closed' | 'orphaned' };

/** A pool's containers by state, for metrics and the agent's view. */
export interface PoolSnapshot {
  readonly name: string;
  readonly target: number;
  readonly idle: number;
  readonly frozen: number;
  readonly inUse: number;
  readonly starting: number;
}
