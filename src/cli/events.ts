import { Option, type Command } from 'commander';
import type { AgentClient, AgentEvent } from '../agent/client.js';
import type { ClusterEventView } from '../agent/http/cluster-events.js';
import { ValidationError } from '../common/errors.js';
import { agentCommand, withClient, write, type AgentFlags } from './client.js';
import { collect } from './flags.js';
import { EVENT_FIELDS, eventFormatRow, FORMAT_HELP, parseFormat, renderFormatted } from './format.js';
import { endedByUser } from './interrupts.js';
import { parseLogTime } from './log-times.js';
import { formatEventLine } from './output.js';
import type { CliIo } from './run.js';

/**
 * `--since` as the API takes it: an event id (fewer than 10 digits, as `--json` prints it) as it is;
 * a time in `logs --since`'s forms (RFC 3339, Unix seconds, or a duration ago) as RFC 3339.
 */
export function eventsSince(value: string, nowMs: number): string {
  const text = value.trim();
  if (/^(0|[1-9][0-9]{0,8})$/.test(text)) return text;
  try {
    return parseLogTime(text, '--since', nowMs);
  } catch {
    throw new ValidationError([{ field: '--since', rule: `"${value}" is not an event id (as --json prints it), an RFC 3339 time, Unix seconds or a duration before now (10m)` }]);
  }
}

/** The agent's event types; `type=task` stands for `task.state`, as docker's `type=container`. */
const EVENT_TYPES = ['task.state', 'task.health', 'image.pull', 'image.removed', 'container.reconciled', 'network.reconciled', 'volume.reconciled', 'prune'] as const;

/** The keys `events --filter` takes. */
export const EVENT_FILTER_KEYS = ['type', 'event', 'task', 'image', 'container'] as const;
type EventFilterKey = (typeof EVENT_FILTER_KEYS)[number];

/** Parsed `--filter`s: values of one key are alternatives (any may match); different keys must all match, as docker's. */
export type EventFilters = ReadonlyMap<EventFilterKey, readonly string[]>;

/**
 * `--filter type=task`, `--filter event=exited`, `--filter task=<id or prefix>`, `--filter
 * image=<reference or id>`, `--filter container=<id or prefix>`, as docker events spells them. A
 * bare value (`--filter task.state`) is `type=` (berth's earlier spelling, kept).
 */
export function parseEventFilters(values: readonly string[]): EventFilters {
  const filters = new Map<EventFilterKey, string[]>();
  values.forEach((value, index) => {
    const eq = value.indexOf('=');
    const key = eq === -1 ? 'type' : value.slice(0, eq).trim().toLowerCase();
    const wanted = (eq === -1 ? value : value.slice(eq + 1)).trim();
    const field = `--filter[${index}]`;
    if (!(EVENT_FILTER_KEYS as readonly string[]).includes(key)) {
      throw new ValidationError([{ field, rule: `unknown key "${key}" (known: ${EVENT_FILTER_KEYS.map((k) => `${k}=`).join(', ')})` }]);
    }
    if (wanted === '') throw new ValidationError([{ field, rule: `${key}= needs a value` }]);
    if (key === 'type' && !EVENT_TYPES.some((type) => type === wanted || type.split('.')[0] === wanted)) {
      throw new ValidationError([{ field, rule: `type must be one of ${[...new Set(EVENT_TYPES.flatMap((t) => [t.split('.')[0]!, t]))].join(', ')}` }]);
    }
    filters.set(key as EventFilterKey, [...(filters.get(key as EventFilterKey) ?? []), wanted]);
  });
  return filters;
}

/** Whether an event passes the filters. */
export function eventMatches(event: Readonly<Record<string, unknown>>, filters: EventFilters): boolean {
  const row = eventFormatRow(event);
  const text = (value: unknown): string => (typeof value === 'string' ? value : '');
  const tests: Record<EventFilterKey, (wanted: string) => boolean> = {
    type: (wanted) => row.Type === wanted || text(row.Type).split('.')[0] === wanted,
    event: (wanted) => row.Action === wanted || row.EndKind === wanted,
    task: (wanted) => text(row.TaskID) !== '' && text(row.TaskID).startsWith(wanted),
    image: (wanted) => (text(row.Image) !== '' && row.Image === wanted) || (text(row.ImageID) !== '' && (text(row.ImageID).startsWith(wanted) || text(row.ImageID).replace(/^sha256:/, '').startsWith(wanted))),
    container: (wanted) => text(row.ContainerID) !== '' && text(row.ContainerID).startsWith(wanted),
  };
  return [...filters].every(([key, wanted]) => wanted.some(tests[key]));
}

/** `berth events`: the agent's events as they happen, until Ctrl-C. */
export function addEventsCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
  agentCommand(program, 'events', 'Print the agent\'s events as they happen (task states, pulls, removals) until Ctrl-C')
    .addOption(new Option('-f, --filter <key=value>', 'type=task|image|container|network|volume|prune (or a full type such as task.state), event=<state or phase>, task=<id>, image=<ref or id>, container=<id> (repeatable: one key\'s values are alternatives, different keys must all match)').argParser(collect).default([]))
    .option('--since <id|time>', 'first the events after this one: an event id (as --json prints it), an RFC 3339 time, Unix seconds, or a duration before now such as 10m')
    .option('--format <format>', FORMAT_HELP)
    .option('--cluster', 'the cluster\'s events instead (cluster mode): nodes registered and down, tasks queued, claimed, running, exited, lost, requeued')
    .action((flags: AgentFlags & { filter: string[]; format?: string; since?: string; cluster?: boolean }) =>
      run(() =>
        withClient(io, flags, async (client) => {
          if (flags.cluster) return clusterEvents(io, client, flags);
          const filters = parseEventFilters(flags.filter);
          const format = parseFormat(flags.format, EVENT_FIELDS);
          const abort = new AbortController();
          const removeInterrupt = io.interrupts.onInterrupt(() => abort.abort());
          try {
            const since = flags.since === undefined ? undefined : eventsSince(flags.since, Date.now());
            const subscription = await client.events({ signal: abort.signal, ...(since !== undefined ? { since } : {}) });
            // Says when the subscription is in place: every event after this line is printed.
            io.stderr.write('berth: listening for events (Ctrl-C to stop)\n');
            let headerDone = false;
            for await (const event of subscription) {
              const record = event as AgentEvent & Record<string, unknown>;
              if (!eventMatches(record, filters)) continue;
              let line: string;
              if (flags.json || format.kind === 'json') line = `${JSON.stringify(event)}\n`;
              else if (format.kind === 'table') line = `${formatEventLine(record)}\n`;
              else if (format.table) {
                // A live stream cannot align columns to rows yet to come: the header once, then tab-separated lines.
                line = `${headerDone ? '' : `${format.headers.join('\t')}\n`}${renderFormatted({ ...format, table: false }, [eventFormatRow(record)])}`;
                headerDone = true;
              } else line = renderFormatted(format, [eventFormatRow(record)]);
              await write(io.stdout, line);
            }
          } catch (error) {
            if (!abort.signal.aborted) throw error;
          } finally {
            removeInterrupt();
          }
          return endedByUser(io);
        }),
      ),
    );
}

/** `berth events --cluster`: the cluster's event log from now on, one line (or JSON object) per event, until Ctrl-C. */
async function clusterEvents(io: CliIo, client: AgentClient, flags: AgentFlags & { filter: string[]; format?: string; since?: string }): Promise<number> {
  const refused = [...(flags.filter.length > 0 ? ['--filter'] : []), ...(flags.format !== undefined ? ['--format'] : []), ...(flags.since !== undefined ? ['--since'] : [])];
  if (refused.length > 0) throw new ValidationError([{ field: refused[0]!, rule: 'is not taken with --cluster (the cluster\'s events print whole, from now on)' }]);
  const abort = new AbortController();
  const removeInterrupt = io.interrupts.onInterrupt(() => abort.abort());
  try {
    const subscription = await client.events({ signal: abort.signal, scope: 'cluster' });
    io.stderr.write('berth: listening for the cluster\'s events (Ctrl-C to stop)\n');
    for await (const event of subscription) {
      const record = event as unknown as ClusterEventView;
      const line = flags.json
        ? `${JSON.stringify(record)}\n`
        : `${record.at} ${record.kind}${record.taskId !== undefined ? ` task=${record.taskId}` : ''}${record.nodeId !== undefined ? ` node=${record.nodeId}` : ''}${record.epoch !== undefined ? ` epoch=${record.epoch}` : ''}\n`;
      await write(io.stdout, line);
    }
  } catch (error) {
    if (!abort.signal.aborted) throw error;
  } finally {
    removeInterrupt();
  }
  return endedByUser(io);
}
