import diagnostics from 'node:diagnostics_channel';

/**
 * Every `node:diagnostics_channel` berth publishes on, in one place (as undici keeps its channels
 * in lib/core/diagnostics.js). Channels are for tracing and observers that hold no reference to
 * the component; a component's own subscribers use its `on(event, listener)` (common/events.ts).
 * Each message is `{ type, ...event }` with the component's event payload, so a tracer sees the
 * same fields a listener does.
 */
export const CHANNEL_NAMES = Object.freeze({
  /** Image coordinators: `pull-started`, `pull-progress`, `pull-finished`, `pull-shared`, `image-removed`, `image-kept`, `image-removal-failed`. */
  images: 'berth:images',
  /** Reconcilers: `removed`, `orphan-removed`, `sweep` (`{ type: 'sweep', outcome }`). */
  reconcile: 'berth:reconcile',
  /** Pruners: `removed`. */
  prune: 'berth:prune',
  /** Task drivers: every phase change of a handle, `{ taskId, from, to, ... }` (no `type`, as before). */
  taskPhase: 'berth:task:phase',
  /** Task groups: `state`, `task-started`, `task-ended` (`{ type, groupId, ... }`). */
  groups: 'berth:groups',
});

/** The channel of image coordinators' events. */
export const IMAGES_CHANNEL = diagnostics.channel(CHANNEL_NAMES.images);
/** The channel of reconcilers' events. */
export const RECONCILE_CHANNEL = diagnostics.channel(CHANNEL_NAMES.reconcile);
/** The channel of pruners' events. */
export const PRUNE_CHANNEL = diagnostics.channel(CHANNEL_NAMES.prune);
/** The channel of task phase changes. */
export const TASK_PHASE_CHANNEL = diagnostics.channel(CHANNEL_NAMES.taskPhase);
/** The channel of task groups' events. */
export const GROUPS_CHANNEL = diagnostics.channel(CHANNEL_NAMES.groups);
