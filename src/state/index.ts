export { openStore, Store, STORE_FILE_NAME } from './store.js';
export { PortRepository } from './ports.js';
export type { PortHold } from './ports.js';
export type { StoreOptions } from './store.js';
export { TaskRepository, TASK_STATES, UNENDED_STATES, ENDED_STATES_SQL, hasEnded, isLegalTransition, endTransition, ambiguousPrefixError, AMBIGUOUS_CANDIDATES_SHOWN } from './tasks.js';
export type {
  EndedTask,
  HealthProbeRecord,
  TaskHealth,
  InsertResult,
  LogCursor,
  NewTask,
  PrefixMatches,
  Reservation,
  StoredEndState,
  StoredError,
  StoredTaskSpec,
  TaskFilter,
  TaskRecord,
  TaskState,
  TaskTransition,
} from './tasks.js';
export { ImageHolderRepository } from './images.js';
export type { ImageHolder } from './images.js';
export { EventLogRepository } from './events.js';
export type { EventLogBounds, StoredEvent } from './events.js';
export { MetaRepository, META_KEYS } from './meta.js';
export { MIGRATIONS, SCHEMA_VERSION, migrate } from './migrations.js';
export type { Migration } from './migrations.js';
export { asDiskFull, isDiskFullError } from './disk-full.js';
export { GroupRepository, GROUP_STATES, LIVE_GROUP_STATES, isLegalGroupMove } from './groups.js';
export type { GroupRecord, GroupState, GroupUpdate, NewGroup, NewGroupTask } from './groups.js';
