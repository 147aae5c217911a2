/**
 * Rows of the cluster tables as berth's types. pg returns bigint (int8) columns as text, so counts,
 * bytes and epochs are read with Number (every one stays far below 2^53).
 */
import { constraintsOf } from './constraints.js';
import type { ClusterEvent, ClusterEventKind, ClusterTask, ClusterTaskState, NodeView } from './types.js';

type Int8 = string | number;

export interface NodeRow {
  node_id: string;
  address: string;
  labels: Record<string, string>;
  cap_mem: Int8;
  cap_cpu: Int8;
  cap_tasks: Int8;
  epoch: Int8;
  state: 'ready' | 'down';
  lease_live: boolean;
  lease_expires_at: Date;
  registered_at: Date;
  heartbeat_at: Date;
  load_mem: Int8;
  load_cpu: Int8;
  load_tasks: Int8;
  held_mem: Int8 | null;
  held_cpu: Int8 | null;
  held_tasks: Int8 | null;
  down_reason: string | null;
}

export interface TaskRow {
  task_id: string;
  spec: unknown;
  priority: number;
  constraint_labels: Record<string, string>;
  demand_memory_bytes: Int8;
  demand_cpu_milli: Int8;
  restart_on_lost: number;
  lost_count: number;
  state: ClusterTaskState;
  node_id: string | null;
  epoch: Int8 | null;
  attempt: number;
  container_id: string | null;
  exit_code: number | null;
  end_reason: string | null;
  submitted_at: Date;
  queued_at: Date;
  claimed_at: Date | null;
  started_at: Date | null;
  ended_at: Date | null;
}

export interface EventRow {
  seq: Int8;
  at: Date;
  kind: ClusterEventKind;
  task_id: string | null;
  node_id: string | null;
  epoch: Int8 | null;
  data: Record<string, unknown>;
}

const num = (value: Int8 | null): number => Number(value ?? 0);
const optional = <T>(value: T | null): T | undefined => (value === null ? undefined : value);

export function nodeFromRow(row: NodeRow): NodeView {
  return {
    nodeId: row.node_id,
    address: row.address,
    labels: Object.freeze({ ...row.labels }),
    capacity: { memoryBytes: num(row.cap_mem), cpuMilli: num(row.cap_cpu), tasks: num(row.cap_tasks) },
    // A lease that ran out is down even before a sweep says so.
    state: row.state === 'ready' && row.lease_live ? 'ready' : 'down',
    epoch: num(row.epoch),
    load: { memoryBytes: num(row.load_mem), cpuMilli: num(row.load_cpu), tasks: num(row.load_tasks) },
    held: { memoryBytes: num(row.held_mem), cpuMilli: num(row.held_cpu), tasks: num(row.held_tasks) },
    registeredAt: row.registered_at,
    heartbeatAt: row.heartbeat_at,
    leaseExpiresAt: row.lease_expires_at,
    downReason: row.state === 'down' ? (row.down_reason ?? undefined) : row.lease_live ? undefined : 'lease expired',
  };
}

export function taskFromRow(row: TaskRow): ClusterTask {
  return {
    id: row.task_id,
    spec: row.spec,
    priority: row.priority,
    constraints: Object.freeze(constraintsOf(row.constraint_labels)),
    demand: { memoryBytes: num(row.demand_memory_bytes), cpuMilli: num(row.demand_cpu_milli) },
    restartOnLost: row.restart_on_lost,
    lostCount: row.lost_count,
    state: row.state,
    nodeId: optional(row.node_id),
    epoch: row.epoch === null ? undefined : Number(row.epoch),
    attempt: row.attempt,
    containerId: optional(row.container_id),
    exitCode: optional(row.exit_code),
    endReason: optional(row.end_reason),
    submittedAt: row.submitted_at,
    queuedAt: row.queued_at,
    claimedAt: optional(row.claimed_at),
    startedAt: optional(row.started_at),
    endedAt: optional(row.ended_at),
  };
}

export function eventFromRow(row: EventRow): ClusterEvent {
  return {
    seq: Number(row.seq),
    at: row.at,
    kind: row.kind,
    taskId: optional(row.task_id),
    nodeId: optional(row.node_id),
    epoch: row.epoch === null ? undefined : Number(row.epoch),
    data: Object.freeze({ ...row.data }),
  };
}

/** An event cursor: the position after (xid, seq). Opaque to callers; `0:0` is the start. */
export interface EventCursor {
  readonly xid: bigint;
  readonly seq: bigint;
}

export const START_CURSOR = '0:0';

export function formatCursor(cursor: EventCursor): string {
  return `${cursor.xid}:${cursor.seq}`;
}

/** Reads a cursor from `formatCursor`; undefined when the text is not one. */
export function parseCursor(text: string): EventCursor | undefined {
  const match = /^(\d{1,20}):(\d{1,20})$/.exec(text);
  return match ? { xid: BigInt(match[1]!), seq: BigInt(match[2]!) } : undefined;
}
