import { Readable } from 'node:stream';
import type { ClusterEvent, ClusterEventPage } from '../../cluster/index.js';
import { codeOf, messageOf, ValidationError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';

/**
 * `GET /v1/events?scope=cluster`: the cluster's event log (node.registered, node.down, task.queued,
 * claimed, running, exited, lost, requeued, released) as server-sent events, read from PostgreSQL
 * with its cursor and polled for new ones. Each page's last event carries the cursor as its `id`, so a
 * client that reconnects with `Last-Event-ID` gets what followed that page (an event of a page cut
 * short may come twice: at least once).
 */

/** A cluster event as the API shows it. */
export interface ClusterEventView {
  seq: number;
  at: string;
  kind: ClusterEvent['kind'];
  taskId?: string;
  nodeId?: string;
  epoch?: number;
  data: Readonly<Record<string, unknown>>;
}

export function toClusterEventView(event: ClusterEvent): ClusterEventView {
  return {
    seq: event.seq,
    at: event.at.toISOString(),
    kind: event.kind,
    ...(event.taskId !== undefined ? { taskId: event.taskId } : {}),
    ...(event.nodeId !== undefined ? { nodeId: event.nodeId } : {}),
    ...(event.epoch !== undefined ? { epoch: event.epoch } : {}),
    data: event.data,
  };
}

/** A page of cluster events as server-sent events: the page's cursor is the last one's id. */
export function formatClusterEvents(page: ClusterEventPage): string {
  return page.events
    .map((event, index) => {
      const id = index === page.events.length - 1 ? `id: ${page.cursor}\n` : '';
      return `${id}event: ${event.kind}\ndata: ${JSON.stringify(toClusterEventView(event))}\n\n`;
    })
    .join('');
}

/** A cluster cursor as `Last-Event-ID` carries it (`<xid>:<seq>`). */
const CLUSTER_CURSOR = /^[0-9]{1,20}:[0-9]{1,20}$/;

/** The cursor a resumed cluster stream starts after, from `Last-Event-ID`; undefined: from now. */
export function clusterEventResume(lastEventId: string | string[] | undefined): string | undefined {
  if (lastEventId === undefined) return undefined;
  const text = (Array.isArray(lastEventId) ? lastEventId.join(',') : lastEventId).trim();
  if (!CLUSTER_CURSOR.test(text)) throw new ValidationError([{ field: 'last-event-id', rule: 'with scope=cluster, must be a cluster event cursor (<xid>:<seq>), as sent in an event\'s id field' }]);
  return text;
}

export interface ClusterEventStreamOptions {
  readEvents(options: { after?: string; limit?: number }): Promise<ClusterEventPage>;
  /** Resume after this cursor; without it, the stream starts with the events that come after it opened. */
  readonly after?: string;
  /** How often the log is read for new events. Default 250 ms. */
  readonly pollMs?: number;
  /** Default 15 s. */
  readonly heartbeatMs?: number;
  readonly logger: Logger;
}

/** The page size of each read. */
const PAGE = 500;

/**
 * The stream. Reads are paced by the client (a page is read when the last one was taken); the
 * database being away is logged once and the reads go on (the stream stays open, with heartbeats).
 */
export function clusterEventStream(options: ClusterEventStreamOptions): Readable {
  const pollMs = options.pollMs ?? 250;
  let cursor = options.after;
  let timer: NodeJS.Timeout | undefined;
  let reading = false;
  let wanted = false;
  let failing = false;
  let started = options.after !== undefined;
  const stream = new Readable({
    read: () => {
      wanted = true;
      if (!reading && timer === undefined) void pump();
    },
  });
  const schedule = (): void => {
    if (stream.destroyed || timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      void pump();
    }, pollMs);
    timer.unref();
  };
  const pump = async (): Promise<void> => {
    if (reading || stream.destroyed) return;
    reading = true;
    try {
      for (;;) {
        const page = await options.readEvents({ ...(cursor !== undefined ? { after: cursor } : {}), limit: PAGE });
        if (stream.destroyed) return;
        if (failing) {
          failing = false;
          options.logger.info({}, 'the cluster event stream reads the cluster database again');
        }
        cursor = page.cursor;
        // Opened without a cursor: what was logged before is skipped, pages read until the log's end.
        if (!started) {
          if (page.events.length < PAGE) started = true;
          continue;
        }
        if (page.events.length === 0) break;
        wanted = stream.push(formatClusterEvents(page));
        if (!wanted) return;
      }
    } catch (error) {
      if (!failing) options.logger.warn({ code: codeOf(error), error: messageOf(error) }, 'the cluster event stream cannot read the cluster database; retrying');
      failing = true;
    } finally {
      reading = false;
    }
    if (wanted) schedule();
  };
  const heartbeat = setInterval(() => stream.push(': heartbeat\n\n'), options.heartbeatMs ?? 15_000);
  heartbeat.unref();
  stream.once('close', () => {
    clearInterval(heartbeat);
    if (timer !== undefined) clearTimeout(timer);
  });
  stream.push(': connected\n\n');
  return stream;
}
