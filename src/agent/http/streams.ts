import { Readable } from 'node:stream';
import type { Logger } from '../../common/logger.js';
import { asBerthError, ValidationError } from '../../common/errors.js';
import type { AgentEvent, AgentEvents, EventResume } from '../events.js';

/**
 * Turns records into `application/x-ndjson`: one JSON object per line. The stream pulls from the
 * iterable only as the client reads (backpressure), and destroying it returns the iterator. A
 * return waits for a pending read, so an iterator that waits on new output (a followed log) must
 * also be aborted through its own signal when the client goes away: that is the caller's.
 */
export function ndjsonStream<T>(records: AsyncIterable<T>): Readable {
  async function* lines(): AsyncGenerator<string> {
    for await (const record of records) yield `${JSON.stringify(record)}\n`;
  }
  return Readable.from(lines(), { objectMode: false });
}

export interface EventStreamOptions {
  events: Pick<AgentEvents, 'subscribe' | 'replayPage'>;
  /** Replay the logged events after this id first (a resumed stream), then go on live. */
  replayAfterId?: number;
  /** A comment is sent this often so that proxies and clients see the connection is alive. Default 15 s. */
  heartbeatMs?: number;
  /**
   * A client that lets more than this much pile up unread is disconnected rather than buffered for
   * without bound; it may reconnect. Default 1 MiB.
   */
  maxBufferedBytes?: number;
  logger: Logger;
}

/**
 * One server-sent event: `id: <id>` (what a client sends back as Last-Event-ID), `event: <type>`
 * and `data: <json>`, ended by a blank line.
 */
export function formatServerSentEvent(event: AgentEvent): string {
  // JSON.stringify escapes newlines, so the data is always one line.
  const id = event.id === undefined ? '' : `id: ${event.id}\n`;
  return `${id}event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

/**
 * A `text/event-stream` of every agent event from now on, or, resumed, of the logged events after
 * `replayAfterId` and then every later one, each once and in id order. It starts with a comment, so
 * the client knows as soon as it has its response that the subscription is in place. Destroying the
 * stream (the client went away, the server closes) unsubscribes and stops the heartbeat.
 */
export function agentEventStream(options: EventStreamOptions): Readable {
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  const maxBufferedBytes = options.maxBufferedBytes ?? 1024 * 1024;
  // A replay reads a page whenever the client has taken the last one (read() is called), so a long
  // backlog is paced by the client instead of buffered.
  let continueReplay: (() => void) | undefined;
  const stream = new Readable({ read: () => continueReplay?.() });
  const tooSlow = (): boolean => {
    if (stream.readableLength <= maxBufferedBytes) return false;
    options.logger.warn({ bufferedBytes: stream.readableLength }, 'an event stream client reads too slowly; disconnecting it');
    stream.destroy();
    return true;
  };
  const send = (text: string): void => {
    if (stream.destroyed || tooSlow()) return;
    stream.push(text);
  };
  // Live events that arrive during a replay wait here; those the replay also read are sent once.
  let held: AgentEvent[] | undefined = options.replayAfterId === undefined ? undefined : [];
  let heldBytes = 0;
  let lastSentId = options.replayAfterId ?? 0;
  const unsubscribe = options.events.subscribe((event) => {
    if (!held) return send(formatServerSentEvent(event));
    held.push(event);
    heldBytes += JSON.stringify(event).length;
    if (heldBytes > maxBufferedBytes) {
      options.logger.warn({ heldBytes }, 'an event stream replay falls behind the live events; disconnecting it');
      stream.destroy();
    }
  });
  const replay = (): void => {
    continueReplay = undefined;
    while (!stream.destroyed) {
      let page: AgentEvent[];
      try {
        page = options.events.replayPage(lastSentId);
      } catch (error) {
        // Events the client has not had were trimmed under a slow replay: it is told, in the stream
        // (its 200 is sent already), and the stream ends, rather than going on past the gap.
        const { code, message } = asBerthError(error);
        stream.push(`event: error\ndata: ${JSON.stringify({ error: { code, message } })}\n\n`);
        stream.push(null);
        return;
      }
      if (page.length === 0) break;
      let room = true;
      for (const event of page) {
        room = stream.push(formatServerSentEvent(event));
        lastSentId = event.id ?? lastSentId;
      }
      if (!room) {
        continueReplay = replay;
        return;
      }
    }
    // Caught up: what arrived meanwhile and was not in the log's pages goes out, then live.
    const waiting = held ?? [];
    held = undefined;
    for (const event of waiting) if (event.id === undefined || event.id > lastSentId) send(formatServerSentEvent(event));
  };
  const heartbeat = setInterval(() => send(': heartbeat\n\n'), heartbeatMs);
  heartbeat.unref();
  stream.once('close', () => {
    clearInterval(heartbeat);
    continueReplay = undefined;
    unsubscribe();
  });
  send(': connected\n\n');
  if (options.replayAfterId !== undefined) replay();
  return stream;
}

/** An event id as the API takes it: a whole number, no sign, no leading zeros. */
const EVENT_ID = /^(0|[1-9][0-9]{0,15})$/;

/**
 * Where a resumed event stream starts: the `Last-Event-ID` header (what an EventSource sends when
 * it reconnects) wins over `?since=`, which is an event id or an RFC 3339 time; neither, a live
 * stream (undefined).
 */
export function eventResume(lastEventId: string | string[] | undefined, since: string | undefined): EventResume | undefined {
  if (lastEventId !== undefined) {
    const text = Array.isArray(lastEventId) ? lastEventId.join(',') : lastEventId.trim();
    if (!EVENT_ID.test(text)) throw new ValidationError([{ field: 'last-event-id', rule: 'must be an event id: a whole number, as sent in an event\'s id field' }]);
    return { afterId: Number(text) };
  }
  if (since === undefined) return undefined;
  if (EVENT_ID.test(since)) return { afterId: Number(since) };
  const ms = Date.parse(since);
  if (!Number.isFinite(ms)) throw new ValidationError([{ field: 'since', rule: 'must be an event id or an RFC 3339 time' }]);
  return { afterMs: ms };
}
