/** The cluster store over PostgreSQL (docs/cluster.md): nodes and leases, the queue, the task index, events. */
export { CANCELLED_END, ClusterStore, PLACEMENT_CHANNEL, QUEUE_CHANNEL, type CancelResult, type EnqueueResult, type ExpiryResult, type ListTasksFilter } from './store.js';
export { QueueWaker, type QueueWakerOptions, type WakeReason } from './waker.js';
export { resolveClusterStoreOptions, CLUSTER_OPTION_BOUNDS, type ClusterStoreOptions, type ResolvedClusterStoreOptions } from './options.js';
export { CLUSTER_MIGRATIONS, CLUSTER_SCHEMA_VERSION, migrateCluster, pendingMigrations, type ClusterMigration } from './migrations.js';
export { constraintLabels, labelsSatisfy, NODE_LABEL_PREFIX } from './constraints.js';
export { fits, isBetter, mayClaim, scoreAfter, type PlacementNode } from './placement.js';
export type * from './types.js';
