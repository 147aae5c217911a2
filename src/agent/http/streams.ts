import { Readable } from 'node:stream';
import type { Logger } from '../../common/logger.js';
import type { AgentEvent, AgentEvents } from '../events.js';

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
  events: Pick<AgentEvents, 'subscribe'>;
  /** A comment is sent this often so that proxies and clients see the connection is alive. Default 15 s. */
  heartbeatMs?: number;
  /**
   * A client that lets more than this much pile up unread is disconnected rather than buffered for
   * without bound; it may reconnect. Default 1 MiB.
   */
  maxBufferedBytes?: number;
  logger: Logger;
}

/** One server-sent event: `event: <type>` and `data: <json>`, ended by a blank line. */
export function formatServerSentEvent(event: AgentEvent): string {
  // JSON.stringify escapes newlines, so the data is always one line.
  return `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

/**
 * A `text/event-stream` of every agent event from now on. It starts with a comment, so the client
 * knows as soon as it has its response that the subscription is in place. Destroying the stream
 * (the client went away, the server closes) unsubscribes and stops the heartbeat.
 */
export function agentEventStream(options: EventStreamOptions): Readable {
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  const maxBufferedBytes = options.maxBufferedBytes ?? 1024 * 1024;
  const stream = new Readable({ read() {} });
  const send = (text: string): void => {
    if (stream.destroyed) return;
    if (stream.readableLength > maxBufferedBytes) {
      options.logger.warn({ bufferedBytes: stream.readableLength }, 'an event stream client reads too slowly; disconnecting it');
      stream.destroy();
      return;
    }
    stream.push(text);
  };
  const unsubscribe = options.events.subscribe((event) => send(formatServerSentEvent(event)));
  const heartbeat = setInterval(() => send(': heartbeat\n\n'), heartbeatMs);
  heartbeat.unref();
  stream.once('close', () => {
    clearInterval(heartbeat);
    unsubscribe();
  });
  send(': connected\n\n');
  return stream;
}
