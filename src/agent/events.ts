import { EventEmitter } from 'node:events';
import type { StoredEndState, TaskState } from '../state/tasks.js';

/** Everything the agent announces on its event stream (`GET /v1/events`). */
export type AgentEvent =
  | { type: 'task.state'; taskId: string; state: TaskState; endState?: StoredEndState; at: string }
  | { type: 'image.pull'; phase: 'started' | 'shared' | 'finished' | 'failed'; image: string; imageId?: string; error?: string; at: string }
  | { type: 'image.removed'; imageId: string; at: string }
  | {
      type: 'container.reconciled';
      containerId: string;
      taskId?: string;
      /** `dangling`: this agent's, untracked. `orphaned`: a short-lived owner's (`berth run`), whose owner process is gone. */
      reason?: 'dangling' | 'orphaned';
      /** For an orphan: the owner id it carried (`cli` for `berth run`) and its owner's pid. */
      ownerId?: string;
      ownerPid?: number;
      dryRun: boolean;
      at: string;
    }
  | { type: 'prune'; removed: Record<string, number>; reclaimedBytes: number; at: string };

/** Distributes agent events to subscribers (the SSE endpoint, metrics). */
export class AgentEvents {
  readonly #emitter = new EventEmitter();

  constructor() {
    this.#emitter.setMaxListeners(0);
  }

  /** Publishes an event; `at` is filled in when omitted. */
  emit(event: DistributiveOmit<AgentEvent, 'at'> & { at?: string }): void {
    this.#emitter.emit('event', { ...event, at: event.at ?? new Date().toISOString() } as AgentEvent);
  }

  subscribe(listener: (event: AgentEvent) => void): () => void {
    this.#emitter.on('event', listener);
    return () => this.#emitter.off('event', listener);
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
