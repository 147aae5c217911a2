/**
 * A scripted fake of the reconciler's engine port, a manual clock and a counting logger: the
 * reconciler's decisions and timing are tested against these, where the real engine could not make
 * them deterministic.
 */
import { BerthError } from '../../../src/common/errors.js';
import { LABELS } from '../../../src/common/labels.js';
import type { Logger } from '../../../src/common/logger.js';
import type { CallOptions } from '../../../src/engine/engine.js';
import type { ContainerListFilter, ContainerSummary } from '../../../src/engine/types.js';
import type { ReconcileClock } from '../../../src/reconcile/clock.js';
import type { ReconcileEngine } from '../../../src/reconcile/reconciler.js';

export const OWNER = 'agent-1';

/** A running berth container of `owner`, created at `createdAtMs` (a whole second, as the engine's list reports). */
export function berthContainer(id: string, createdAtMs: number, options: { owner?: string; taskId?: string } = {}): ContainerSummary {
  return {
    id,
    names: [`berth-${options.taskId ?? id}`],
    image: 'busybox:latest',
    labels: { [LABELS.managed]: 'true', [LABELS.ownerId]: options.owner ?? OWNER, [LABELS.taskId]: options.taskId ?? `task-${id}` },
    createdAt: new Date(Math.floor(createdAtMs / 1000) * 1000),
    state: 'running',
    status: 'Up',
  };
}

type Answer<T> = T | Error | Promise<T>;

export class FakeReconcileEngine implements ReconcileEngine {
  /** What the next list calls answer; the last one is repeated. */
  listAnswers: Array<Answer<ContainerSummary[]>> = [[]];
  readonly listCalls: Array<{ filter: ContainerListFilter; signal: AbortSignal | undefined }> = [];
  readonly removals: string[] = [];
  /** Per container id: what its removal answers. Default 'removed'. */
  readonly removeAnswers = new Map<string, Answer<'removed' | 'absent'>>();
  pingAnswer: Answer<void> = undefined;
  pings = 0;

  listContainers = async (filter: ContainerListFilter = {}, options: CallOptions = {}): Promise<ContainerSummary[]> => {
    this.listCalls.push({ filter, signal: options.signal });
    const answer = this.listAnswers.length > 1 ? this.listAnswers.shift()! : this.listAnswers[0]!;
    if (answer instanceof Error) throw answer;
    return answer;
  };

  removeContainer = async (id: string): Promise<'removed' | 'absent'> => {
    this.removals.push(id);
    const answer = this.removeAnswers.get(id) ?? 'removed';
    if (answer instanceof Error) throw answer;
    return answer;
  };

  ping = async (): Promise<void> => {
    this.pings++;
    if (this.pingAnswer instanceof Error) throw this.pingAnswer;
    await this.pingAnswer;
  };
}

export const unavailable = (): BerthError => new BerthError('BERTH_ENGINE_UNAVAILABLE', 'connect ECONNREFUSED');

export class ManualClock implements ReconcileClock {
  #now: number;
  readonly #timers = new Map<number, { at: number; callback: () => void }>();
  #nextId = 1;

  constructor(startMs = 1_700_000_000_000) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(callback: () => void, delayMs: number): unknown {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.#now + delayMs, callback });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  /** Delays of the pending timers, from now. */
  get pendingDelays(): number[] {
    return [...this.#timers.values()].map((t) => t.at - this.#now);
  }

  /** Moves time forward, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const target = this.#now + ms;
    for (;;) {
      const due = [...this.#timers.entries()].filter(([, t]) => t.at <= target).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.#now = due[1].at;
      due[1].callback();
    }
    this.#now = target;
  }
}

export interface LogLine {
  level: 'debug' | 'info' | 'warn' | 'error';
  meta: Record<string, unknown>;
  message: string;
}

/** A logger that keeps every line, for counting. */
export function recordingLogger(): Logger & { lines: LogLine[]; count(level: LogLine['level']): number } {
  const lines: LogLine[] = [];
  const at = (level: LogLine['level']) => (meta: Record<string, unknown>, message: string) => void lines.push({ level, meta, message });
  return {
    lines,
    count: (level) => lines.filter((l) => l.level === level).length,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
  };
}

/** Lets pending promise continuations run. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export async function until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await settle();
  }
}
