import type { ClusterTask } from '../../cluster/index.js';
import type { TaskState } from '../../state/tasks.js';
import type { EndKind } from '../../tasks/end-state.js';
import { toIndexTaskView, type TaskView } from './views.js';

/**
 * `GET /v1/tasks` in cluster mode (pure): this node's records (as views, already filtered) and the
 * cluster index's tasks that no record here describes, with the list's filters applied to those too
 * (state as the index shows it, spec labels `key` or `key=value`, end kinds), in submission order
 * (or newest first), cut at `limit`. A record here wins over the index: it has the detail.
 */
export function mergeClusterTasks(
  local: readonly TaskView[],
  indexed: readonly ClusterTask[],
  filter: {
    /** Whether this node has a record of the task (in any state, removed included): then the index's entry is not shown. */
    isRecordedHere(taskId: string): boolean;
    readonly states: readonly TaskState[];
    readonly labels: readonly string[];
    readonly endKinds: readonly EndKind[];
    readonly order: 'oldest-first' | 'newest-first';
    readonly limit?: number;
  },
): TaskView[] {
  const shown = new Set(local.map((view) => view.id));
  const fromIndex = indexed
    .filter((task) => !shown.has(task.id) && !filter.isRecordedHere(task.id))
    .map(toIndexTaskView)
    .filter((view) => filter.states.includes(view.state))
    .filter((view) => filter.endKinds.length === 0 || (view.endState !== undefined && filter.endKinds.includes(view.endState.kind)))
    .filter((view) => filter.labels.every((label) => labelMatches(view, label)));
  const all = [...local, ...fromIndex];
  all.sort((a, b) => (a.submittedAt < b.submittedAt ? -1 : a.submittedAt > b.submittedAt ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  if (filter.order === 'newest-first') all.reverse();
  return filter.limit === undefined ? all : all.slice(0, filter.limit);
}

/** Docker's label filter: `key` (present) or `key=value`. */
function labelMatches(view: TaskView, label: string): boolean {
  const labels = (view.spec as { labels?: Record<string, string> }).labels ?? {};
  const equals = label.indexOf('=');
  if (equals < 0) return Object.hasOwn(labels, label);
  return labels[label.slice(0, equals)] === label.slice(equals + 1);
}
