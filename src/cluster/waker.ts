/**
 * Wakes a node's claimer when there may be work: on a NOTIFY of the queue's channel (a task queued,
 * or put back), on every (re)connection of the listening client (notifications sent while it was
 * away are lost), and on a polling timer as the fallback that needs no connection at all.
 *
 * The same connection listens on the placement channel (a task recorded by the node that claimed
 * it, or cancelled): `onPlacement` listeners get the task's id, and `undefined` whenever the
 * connection comes up or goes away (notifications may have been missed: look again).
 */
import pg from 'pg';
import { clientConfig } from './db.js';
import { PLACEMENT_CHANNEL, QUEUE_CHANNEL } from './store.js';

export interface QueueWakerOptions {
  readonly connectionString: string;
  /** How often listeners are called without any notification. Default 1000 ms. */
  readonly pollIntervalMs?: number;
  /** The first pause before connecting again after the listening client failed; doubles to 5 s. Default 100 ms. */
  readonly reconnectDelayMs?: number;
  /** Connect timeout of the listening client. Default 5000 ms. */
  readonly connectTimeoutMs?: number;
}

const MAX_RECONNECT_DELAY_MS = 5_000;

/** Why a listener was called: a notification, a (re)connection, or the polling timer. */
export type WakeReason = 'notify' | 'connected' | 'poll';

export class QueueWaker {
  readonly #options: Required<QueueWakerOptions>;
  readonly #listeners = new Set<(reason: WakeReason) => void>();
  readonly #placementListeners = new Set<(taskId: string | undefined) => void>();
  readonly #poll: NodeJS.Timeout;
  #client: pg.Client | undefined;
  #reconnect: NodeJS.Timeout | undefined;
  #delayMs: number;
  #closed = false;
  #listening = false;

  constructor(options: QueueWakerOptions) {
    this.#options = { pollIntervalMs: 1_000, reconnectDelayMs: 100, connectTimeoutMs: 5_000, ...options };
    this.#delayMs = this.#options.reconnectDelayMs;
    this.#poll = setInterval(() => this.#wake('poll'), this.#options.pollIntervalMs);
    this.#poll.unref();
    void this.#connect();
  }

  /** Whether the LISTEN connection is up now (notifications arrive); polling goes on either way. */
  get isListening(): boolean {
    return this.#listening;
  }

  /** Calls `listener` at every wake-up until the returned function is called. */
  onWork(listener: (reason: WakeReason) => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  /**
   * Calls `listener` with a task's id on each NOTIFY of the placement channel, and with `undefined`
   * when the listening connection comes up or goes away, until the returned function is called.
   */
  onPlacement(listener: (taskId: string | undefined) => void): () => void {
    this.#placementListeners.add(listener);
    return () => void this.#placementListeners.delete(listener);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#poll);
    clearTimeout(this.#reconnect);
    this.#listeners.clear();
    this.#placementListeners.clear();
    const client = this.#client;
    this.#client = undefined;
    this.#listening = false;
    await client?.end().catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #wake(reason: WakeReason): void {
    for (const listener of [...this.#listeners]) listener(reason);
  }

  #placed(taskId: string | undefined): void {
    for (const listener of [...this.#placementListeners]) listener(taskId);
  }

  async #connect(): Promise<void> {
    if (this.#closed) return;
    const client = new pg.Client({ ...clientConfig({ connectionString: this.#options.connectionString, callDeadlineMs: this.#options.connectTimeoutMs }), query_timeout: undefined, statement_timeout: undefined });
    this.#client = client;
    let failed = false;
    const onFailure = (): void => {
      if (failed) return;
      failed = true;
      this.#listening = false;
      this.#placed(undefined);
      void client.end().catch(() => undefined);
      if (this.#client === client) this.#client = undefined;
      this.#scheduleReconnect();
    };
    client.on('error', onFailure);
    client.on('end', onFailure);
    client.on('notification', (message) => {
      if (message.channel === QUEUE_CHANNEL) this.#wake('notify');
      else if (message.channel === PLACEMENT_CHANNEL) this.#placed(message.payload === undefined || message.payload === '' ? undefined : message.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${QUEUE_CHANNEL}; LISTEN ${PLACEMENT_CHANNEL}`);
    } catch {
      onFailure();
      return;
    }
    if (this.#closed || failed) {
      await client.end().catch(() => undefined);
      return;
    }
    this.#listening = true;
    this.#delayMs = this.#options.reconnectDelayMs;
    this.#wake('connected');
    this.#placed(undefined);
  }

  #scheduleReconnect(): void {
    if (this.#closed) return;
    clearTimeout(this.#reconnect);
    this.#reconnect = setTimeout(() => void this.#connect(), this.#delayMs);
    this.#reconnect.unref();
    this.#delayMs = Math.min(this.#delayMs * 2, MAX_RECONNECT_DELAY_MS);
  }
}
