import type { PoolEvent, PoolSnapshot } from '../pools/types.js';
import type { TaskSpec } from '../spec/schema.js';
import type { TaskHandle } from '../tasks/handle.js';

/**
 * What the agent asks of the driver's warm pools (src/pools/pools.ts, `driver.pools`): a narrow
 * port, so that admission, metrics, the reconciler and prune each take only what they use.
 */
export interface WarmPoolsPort {
  /** Removes this owner's pool containers of earlier runs but those in `keep` (in use by tasks being recovered), then fills the pools in the background. */
  start(options?: { keep?: ReadonlySet<string> }): Promise<void>;
  /** Each pool's containers by state. */
  snapshot(): readonly PoolSnapshot[];
  /** Every pool container this process knows (idle, frozen, starting, in use): the reconciler and prune leave these alone. */
  containerIds(): ReadonlySet<string>;
  onEvent(listener: (event: PoolEvent) => void): () => void;
  /** At most this many idle containers of the pool (admission); default its size. */
  setAllowance(name: string, containers: number): void;
  /** One container's resources. */
  demandOf(name: string): { memoryBytes?: number; cpuMilli?: number };
  close(): Promise<void>;
}

/** What the supervisor asks of the driver for warm tasks: the pools, and the recovery of a warm task's exec after a restart. */
export interface WarmDriverPort {
  readonly pools: WarmPoolsPort;
  recoverWarm(taskId: string, options: { spec: TaskSpec; containerId: string; execId: string; stopRequested?: boolean }): Promise<TaskHandle | undefined>;
}
