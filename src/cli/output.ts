import type { Writable } from 'node:stream';
import { isBerthError, messageOf } from '../common/errors.js';

/**
 * Terminal output of the client commands: aligned tables for people, one JSON document (or one
 * JSON line per event) for scripts. Pure functions of their input and `nowMs`, so they are tested
 * without a terminal or a clock.
 */

/** Columns are separated by at least this many spaces, as docker's tables are. */
const COLUMN_GAP = 3;

/**
 * Renders rows under headers, each column as wide as its widest cell; the last column is not
 * padded, so no line ends in spaces. An empty row list renders the header line alone.
 */
export function renderTable(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    headers
      .map((_, column) => {
        const cell = cells[column] ?? '';
        return column === headers.length - 1 ? cell : cell.padEnd(widths[column]! + COLUMN_GAP);
      })
      .join('')
      .trimEnd();
  return [headers, ...rows].map(line).join('\n') + '\n';
}

/** Writes a value as pretty JSON (one document, for `--json`). */
export function writeJson(stream: Writable, value: unknown): void {
  stream.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** The first `length` characters of an id (docker's 12 by default); an absent id is empty. */
export function shortId(id: string | undefined, length = 12): string {
  if (id === undefined) return '';
  const bare = id.startsWith('sha256:') ? id.slice('sha256:'.length) : id;
  return bare.slice(0, length);
}

/** A random UUID, as the agent makes a task id when none is given. */
const GENERATED_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * A task id as `ps` shows it: an id the agent generated (a UUID) by its first 12 characters, as
 * docker shows container ids; an id given at submit (`--name`) whole, as docker shows names, since
 * names that share their first 12 characters would otherwise look alike. `noTrunc` shows every id whole.
 */
export function displayTaskId(id: string, noTrunc = false): string {
  return !noTrunc && GENERATED_ID.test(id) ? shortId(id) : id;
}

/** A time as milliseconds, from an ISO string or milliseconds; undefined when absent or unreadable. */
export function toMs(time: string | number | undefined): number | undefined {
  if (time === undefined) return undefined;
  const ms = typeof time === 'number' ? time : Date.parse(time);
  return Number.isFinite(ms) ? ms : undefined;
}

/** A span in words, rounded down to its largest unit: "Less than a second", "5 seconds", "3 minutes", "2 hours", "4 days". */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(Math.max(0, ms) / 1000);
  const plural = (n: number, unit: string): string => `${n} ${unit}${n === 1 ? '' : 's'}`;
  if (seconds < 1) return 'Less than a second';
  if (seconds < 60) return plural(seconds, 'second');
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return plural(minutes, 'minute');
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return plural(hours, 'hour');
  return plural(Math.floor(hours / 24), 'day');
}

/** "5 seconds ago" (docker's CREATED column); empty when the time is unknown. */
export function ago(time: string | number | undefined, nowMs: number): string {
  const ms = toMs(time);
  if (ms === undefined) return '';
  const span = humanDuration(nowMs - ms);
  return span === 'Less than a second' ? 'Less than a second ago' : `${span} ago`;
}

/** The shape of a task that the table reads: a subset of the agent's TaskView. */
export interface TaskRowInput {
  id: string;
  state: string;
  spec: { image?: string; command?: readonly string[]; entrypoint?: readonly string[]; labels?: Readonly<Record<string, string>> };
  endState?: { kind: string; exitCode?: number; reason?: string; signal?: string } | undefined;
  exitCode?: number | undefined;
  /** Under a restart policy: restarts so far, the attempts' ends, and when the next attempt is due while it waits. */
  restarts?: number | undefined;
  attempts?: ReadonlyArray<{ exitCode?: number; finishedAt?: string }> | undefined;
  restartAt?: string | undefined;
  submittedAt: string | number;
  /** The host ports it publishes (the agent's task view). */
  ports?: ReadonlyArray<{ container: number; protocol: string; hostIp: string; host: number }> | undefined;
  /** How it started (warm from a pool, or cold and why), as the agent's task view says. */
  start?: { path: string; pool?: string | undefined; reason?: string | undefined } | undefined;
  startedAt?: string | number | undefined;
  /** Cluster mode: the node that runs it (null while queued); absent on a single agent. */
  node?: string | null | undefined;
  finishedAt?: string | number | undefined;
  /** Absent for a task without a health check. */
  health?: { status: string } | undefined;
}

/** Long cells are cut with an ellipsis so that a table stays one line per task. */
export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(0, max - 1))}…`;
}

/** The command as it would be typed, quoted where a word has spaces or quotes. */
export function formatCommand(words: readonly string[] | undefined): string {
  if (!words || words.length === 0) return '';
  return words.map((word) => (/^[\w@%+=:,./-]+$/.test(word) ? word : `"${word.replace(/(["\\$`])/g, '\\$1')}"`)).join(' ');
}

/** How long the reason of a failed start may be in the STATUS column (--no-trunc shows it whole). */
export const START_REASON_WIDTH = 60;

/**
 * Why a task could not start, for people: the reason the agent recorded, without its error code
 * (`BERTH_IMAGE_NOT_FOUND: …`), on one line; undefined for a task that started.
 */
export function startFailureReason(task: Pick<TaskRowInput, 'endState'>): string | undefined {
  const end = task.endState;
  if (end?.kind !== 'failed' || end.reason === undefined) return undefined;
  return end.reason.replace(/^BERTH_[A-Z_]+: /, '').replace(/\s+/g, ' ').trim();
}

/** docker ps's health suffix: " (healthy)", " (unhealthy)", " (health: starting)"; empty without a health check. */
export function healthSuffix(health: TaskRowInput['health']): string {
  if (!health) return '';
  return health.status === 'starting' ? ' (health: starting)' : ` (${health.status})`;
}

/**
 * A task's status in docker's words: "Pending", "Starting", "Up 5 seconds", "Stopping",
 * "Exited (3) 2 seconds ago", "Out of memory (137) …", "Timed out …", "Cancelled …", "Lost …",
 * "Removed"; a task that could not start says why: "Failed to start: <reason>", cut to
 * `reasonWidth` characters. A starting or running task with a health check says how it is, as
 * docker does: "Up 5 seconds (healthy)", "Starting (health: starting)" (a `waitHealthy` task).
 */
export function taskStatus(task: TaskRowInput, nowMs: number, reasonWidth = START_REASON_WIDTH): string {
  const endedAgo = task.finishedAt !== undefined ? ` ${ago(task.finishedAt, nowMs)}` : '';
  switch (task.state) {
    case 'pending':
      return 'Pending';
    case 'starting': {
      // Waiting for its next attempt (its restart policy), as docker's "Restarting (1) 2 seconds ago": the last attempt's exit code and end.
      if (task.restartAt === undefined) return `Starting${healthSuffix(task.health)}`;
      const last = task.attempts?.[task.attempts.length - 1];
      const lastExit = last?.exitCode !== undefined ? ` (${last.exitCode})` : '';
      const endedAgo = last?.finishedAt !== undefined ? ` ${ago(last.finishedAt, nowMs)}` : '';
      return `Restarting${lastExit}${endedAgo}`;
    }
    case 'running': {
      const started = toMs(task.startedAt);
      return `${started === undefined ? 'Up' : `Up ${humanDuration(nowMs - started)}`}${healthSuffix(task.health)}`;
    }
    case 'stopping':
      return 'Stopping';
    case 'removed':
      return 'Removed';
    default: {
      const exit = task.exitCode !== undefined ? ` (${task.exitCode})` : '';
      switch (task.endState?.kind) {
        case 'oom':
          return `Out of memory${exit}${endedAgo}`;
        case 'timed-out':
          return `Timed out${exit}${endedAgo}`;
        case 'cancelled':
          return `Cancelled${exit}${endedAgo}`;
        case 'lost':
          return `Lost${endedAgo}`;
        case 'failed': {
          const reason = startFailureReason(task);
          if (reason !== undefined) return `Failed to start: ${truncate(reason, reasonWidth)}`;
          return `Exited${exit}${endedAgo}`;
        }
        default:
          return `Exited${exit}${endedAgo}`;
      }
    }
  }
}

/**
 * `berth ps`: TASK ID, IMAGE, COMMAND, STATUS, CREATED (docker ps's columns). Generated ids are cut
 * to 12 characters (`displayTaskId`) and long commands and reasons end in an ellipsis, as docker's;
 * `noTrunc` shows them whole.
 */
export function renderTaskTable(tasks: readonly TaskRowInput[], nowMs: number, options: { noTrunc?: boolean } = {}): string {
  const whole = options.noTrunc ?? false;
  // A cluster's tasks carry their node: the table gains a NODE column (empty while a task is queued).
  const inCluster = tasks.some((task) => task.node !== undefined);
  const rows = tasks.map((task) => [
      displayTaskId(task.id, whole),
      task.spec.image ?? '',
      whole ? formatCommand([...(task.spec.entrypoint ?? []), ...(task.spec.command ?? [])]) : truncate(formatCommand([...(task.spec.entrypoint ?? []), ...(task.spec.command ?? [])]), 30),
      taskStatus(task, nowMs, whole ? Number.POSITIVE_INFINITY : START_REASON_WIDTH),
      ago(task.submittedAt, nowMs),
      formatTaskPorts(task),
    ]);
  if (!inCluster) return renderTable(['TASK ID', 'IMAGE', 'COMMAND', 'STATUS', 'CREATED', 'PORTS'], rows);
  return renderTable(
    ['TASK ID', 'IMAGE', 'COMMAND', 'STATUS', 'CREATED', 'PORTS', 'NODE'],
    rows.map((row, index) => [...row, tasks[index]!.node ?? '']),
  );
}

/** A published port as docker writes it: `127.0.0.1:20001->80/tcp` (an IPv6 address in brackets). */
export function formatPublishedPort(port: { container: number; protocol: string; hostIp: string; host: number }): string {
  const address = port.hostIp.includes(':') ? `[${port.hostIp}]` : port.hostIp;
  return `${address}:${port.host}->${port.container}/${port.protocol}`;
}

/** A task's published ports, comma-separated, as docker ps shows them: only while it has not ended (an ended task holds none). */
export function formatTaskPorts(task: Pick<TaskRowInput, 'state' | 'ports'>): string {
  if (task.state === 'exited' || task.state === 'lost' || task.state === 'removed') return '';
  return (task.ports ?? []).map(formatPublishedPort).join(', ');
}

/** The shape of an image that the table reads: the agent's image listing. */
export interface ImageRowInput {
  imageId: string;
  refs: readonly string[];
  holders: readonly string[];
  removalDueAt?: string | number | undefined;
}

/** `berth images`: IMAGE ID, REFERENCES, HOLDERS, REMOVAL (when an unheld image goes). */
export function renderImageTable(images: readonly ImageRowInput[], nowMs: number, noTrunc = false): string {
  return renderTable(
    ['IMAGE ID', 'REFERENCES', 'HOLDERS', 'REMOVAL'],
    images.map((image) => {
      const due = toMs(image.removalDueAt);
      return [
        noTrunc ? image.imageId : shortId(image.imageId),
        image.refs.join(', '),
        image.holders.length === 0 ? '0' : `${image.holders.length} (${truncate(image.holders.join(', '), 40)})`,
        due === undefined ? '' : due <= nowMs ? 'due now' : `in ${humanDuration(due - nowMs).toLowerCase()}`,
      ];
    }),
  );
}

/** One agent event as a line for people: time, type, and what it is about. */
export function formatEventLine(event: Readonly<Record<string, unknown>>): string {
  const text = (value: unknown): string => (typeof value === 'string' || typeof value === 'number' ? String(value) : '');
  const at = text(event.at);
  const type = text(event.type);
  let detail: string;
  switch (type) {
    case 'task.state': {
      const end = event.endState as { kind?: string; exitCode?: number } | undefined;
      const endText = end?.kind ? ` (${end.kind}${end.exitCode !== undefined ? ` ${end.exitCode}` : ''})` : '';
      detail = `${text(event.taskId)} ${text(event.state)}${endText}`;
      break;
    }
    case 'task.health': {
      // The last check's exit code and the end of its output, on one line.
      const output = text(event.output).replace(/\s+/g, ' ').trim();
      const probe = event.exitCode !== undefined ? ` (last check exit ${text(event.exitCode)}${output ? `: ${output}` : ''})` : '';
      detail = `${text(event.taskId)} ${text(event.status)}${Number(event.failingStreak) > 0 ? `, failing streak ${text(event.failingStreak)}` : ''}${probe}`;
      break;
    }
    case 'image.pull':
      detail = `${text(event.image)} ${text(event.phase)}${event.imageId ? ` ${shortId(text(event.imageId))}` : ''}${event.error ? `: ${text(event.error)}` : ''}`;
      break;
    case 'image.removed':
      detail = shortId(text(event.imageId));
      break;
    case 'container.reconciled': {
      // An orphan's reason says whose it was: the owner id and the process that is gone.
      const why = event.reason === 'orphaned' ? ` orphaned (owner ${text(event.ownerId) || '?'}, pid ${text(event.ownerPid) || '?'} gone)` : event.reason ? ` ${text(event.reason)}` : '';
      const group = event.groupId ? ` (${event.role === 'infra' ? 'infrastructure of ' : ''}group ${text(event.groupId)})` : '';
      detail = `${shortId(text(event.containerId))}${event.taskId ? ` (task ${text(event.taskId)})` : ''}${group}${why}${event.dryRun ? ' dry run' : ''}`;
      break;
    }
    case 'network.reconciled':
    case 'volume.reconciled':
      // The name says whose it is (berth-<group>.<owner>.net / .shared); the reason, why it went.
      detail = `${text(event.type === 'network.reconciled' ? event.network : event.volume)} (group ${text(event.groupId)}, owner ${text(event.ownerId)}) ${text(event.reason)}${event.dryRun ? ' dry run' : ''}`;
      break;
    case 'task.expired':
      detail = `${text(event.taskId)} removed by retention (${text(event.reason)}; ended ${text(event.endedAt)})`;
      break;
    default: {
      const rest = Object.entries(event).filter(([key]) => key !== 'at' && key !== 'type' && key !== 'id');
      detail = rest.map(([key, value]) => `${key}=${typeof value === 'object' ? JSON.stringify(value) : String(value)}`).join(' ');
    }
  }
  return [at, type, detail].filter((part) => part !== '').join('  ');
}

/** The one line a failed command prints: `berth: <message> [CODE]`. */
export function errorLine(error: unknown): string {
  if (isBerthError(error)) return `berth: ${error.message} [${error.code}]`;
  const coded = error as { message?: unknown; code?: unknown } | null;
  if (coded && typeof coded.message === 'string' && typeof coded.code === 'string') return `berth: ${coded.message} [${coded.code}]`;
  return `berth: ${messageOf(error)}`;
}
