import type { Logger } from './logger.js';
import { messageOf } from './errors.js';

/** A listener's unsubscribe: calling it again does nothing. */
export type Unsubscribe = () => void;

/** The listener of one event type of an event map: `{ 'pull-finished': PullFinishedEvent }`. */
export type EventListener<Payload> = (event: Payload) => void;

/**
 * How every library component publishes typed events: images, prune, the reconciler and the task
 * driver each own one `Events` and expose its `on`. One payload per event (no variadic arguments),
 * `on` returns the unsubscribe (no `off` to pair by identity), and a listener that throws is logged
 * and skipped, so an observer can never break the component it watches (unlike EventEmitter, where
 * a throwing listener throws into the emitter and an `error` event without a listener crashes).
 * Tracing observers that hold no reference to the component use `node:diagnostics_channel`
 * instead (see common/diagnostics.ts).
 */
export class Events<Map extends object> {
  readonly #listeners = new Map<keyof Map, Set<EventListener<never>>>();
  readonly #logger: Logger | undefined;

  /** `logger` receives the failures of throwing listeners; without one they are dropped silently. */
  constructor(logger?: Logger) {
    this.#logger = logger;
  }

  /** Calls `listener` with every later event of `type`; returns its unsubscribe. */
  on<K extends keyof Map>(type: K, listener: EventListener<Map[K]>): Unsubscribe {
    let listeners = this.#listeners.get(type);
    if (!listeners) this.#listeners.set(type, (listeners = new Set()));
    // A copy per subscription: the same function subscribed twice is called twice, and each unsubscribe removes one.
    const entry: EventListener<Map[K]> = (event) => listener(event);
    listeners.add(entry);
    return () => {
      listeners.delete(entry);
    };
  }

  /** Whether anyone listens to `type`: lets a publisher skip building an event nobody reads. */
  hasListeners(type: keyof Map): boolean {
    return (this.#listeners.get(type)?.size ?? 0) > 0;
  }

  /** Calls every listener of `type` in subscription order; one that throws is logged and the rest still run. */
  emit<K extends keyof Map>(type: K, event: Map[K]): void {
    const listeners = this.#listeners.get(type);
    if (!listeners) return;
    for (const listener of [...listeners]) {
      try {
        (listener as EventListener<Map[K]>)(event);
      } catch (error) {
        this.#logger?.warn({ event: String(type), reason: messageOf(error) }, 'an event listener threw; ignored');
      }
    }
  }
}

/** The read side of an `Events`, what a component exposes: subscribe, never publish. */
export interface EventSource<Map extends object> {
  on<K extends keyof Map>(type: K, listener: EventListener<Map[K]>): Unsubscribe;
}
