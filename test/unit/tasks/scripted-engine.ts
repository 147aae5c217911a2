/**
 * A scripted fake of the tasks' engine port (ContainerEngine), for unit tests of coordination that
 * the real engine cannot make deterministic: stop while a start is under way, a create whose answer
 * is lost, a stop answered "not running".
 *
 * It models the few facts those paths read: containers by name and id, with labels and a state;
 * waits that answer when a container stops. Every call is logged. A method the test `hold`s does
 * nothing until the test takes the call (`next`) and decides: act and answer, act and lose the
 * answer, or fail before acting. Methods the tasks' coordination never calls throw.
 */
import { Readable } from 'node:stream';
import { BerthError } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { ContainerEventStream, StartOutcome } from '../../../src/engine/engine.js';
import type { ContainerCreateBody, ContainerInspect, ContainerStatus, ContainerSummary, WaitResult } from '../../../src/engine/types.js';
import { resolveTaskSpec, type TaskSpec } from '../../../src/spec/schema.js';
import type { ContainerEngine } from '../../../src/tasks/container-ops.js';
import { TaskHandle } from '../../../src/tasks/handle.js';
import { inspectFixture } from '../../support/inspect.js';

/** The calls a test can hold. */
export type HeldMethod = 'createContainer' | 'startContainer' | 'stopContainer' | 'killContainer' | 'removeContainer' | 'inspectContainer';

interface FakeContainer {
  id: string;
  name: string;
  labels: Record<string, string>;
  status: ContainerStatus;
  exitCode: number;
  startedAt?: Date;
  finishedAt?: Date;
}

/** A call the test holds: nothing happened in the engine yet. */
export interface HeldCall {
  readonly method: HeldMethod;
  readonly args: readonly unknown[];
  /** The engine acts and answers. */
  proceed(): void;
  /** The engine acts, and its answer is lost with `error` (a 500 after acting, a dropped connection). */
  proceedThenFail(error: BerthError): void;
  /** The engine never sees the call: it fails with `error`. */
  fail(error: BerthError): void;
}

interface Waiter {
  resolve(result: WaitResult): void;
}

/** An event stream that yields nothing until it is closed. */
class SilentEvents implements ContainerEventStream {
  #close!: () => void;
  readonly #closed = new Promise<void>((resolve) => (this.#close = resolve));

  close(): void {
    this.#close();
  }

  [Symbol.asyncIterator](): AsyncIterator<never> {
    return { next: async () => (await this.#closed, { done: true, value: undefined }) };
  }
}

const unscripted =
  (method: string) =>
  (..._args: unknown[]): never => {
    throw new Error(`the scripted engine does not script ${method}`);
  };

export class ScriptedEngine implements ContainerEngine {
  readonly deadlines = { readMs: 1000, writeMs: 1000, stopExtraMs: 1000 };
  /** Every call, in order, as method name and first argument. */
  readonly calls: Array<{ method: string; target: unknown }> = [];
  readonly #containers = new Map<string, FakeContainer>();
  readonly #waiters = new Map<string, Waiter[]>();
  readonly #held = new Set<HeldMethod>();
  readonly #arrived: HeldCall[] = [];
  readonly #onArrival: Array<() => void> = [];
  #nextId = 1;

  /** From now on, calls of `method` wait for the test (`next`). */
  hold(method: HeldMethod): void {
    this.#held.add(method);
  }

  /** From now on, calls of `method` act and answer at once; calls already held stay held. */
  release(method: HeldMethod): void {
    this.#held.delete(method);
  }

  /** The next held call of `method` (waiting for it to arrive). */
  async next(method: HeldMethod): Promise<HeldCall> {
    for (;;) {
      const index = this.#arrived.findIndex((call) => call.method === method);
      if (index >= 0) return this.#arrived.splice(index, 1)[0]!;
      await new Promise<void>((resolve) => this.#onArrival.push(resolve));
    }
  }

  /** How many calls of `method` were made. */
  count(method: string): number {
    return this.calls.filter((call) => call.method === method).length;
  }

  /** Adds a container as another start (or another owner) left it. */
  addContainer(name: string, labels: Record<string, string>, status: ContainerStatus = 'created'): string {
    const id = `c${this.#nextId++}`;
    this.#containers.set(id, { id, name, labels, status, exitCode: 0, ...(status === 'running' ? { startedAt: new Date() } : {}) });
    return id;
  }

  /** The task's main process exits on its own. */
  exit(id: string, exitCode: number): void {
    const container = this.#require(id);
    if (container.status !== 'running') throw new Error(`container ${id} is ${container.status}`);
    this.#stopped(container, exitCode);
  }

  /** The containers that exist now, by name. */
  get names(): string[] {
    return [...this.#containers.values()].map((c) => c.name);
  }

  /** The state of a container, or undefined once it is removed. */
  statusOf(id: string): ContainerStatus | undefined {
    return this.#containers.get(id)?.status;
  }

  createContainer(name: string, body: ContainerCreateBody): Promise<string> {
    return this.#call('createContainer', name, () => {
      if (this.#find(name)) throw new BerthError('BERTH_ENGINE_CONFLICT', `Conflict. The container name "/${name}" is already in use`, { context: { name } });
      return this.addContainer(name, { ...body.Labels });
    });
  }

  startContainer(id: string): Promise<StartOutcome> {
    return this.#call('startContainer', id, () => {
      const container = this.#require(id);
      if (container.status === 'running') return 'already-running' as const;
      container.status = 'running';
      container.startedAt = new Date();
      return 'started' as const;
    });
  }

  inspectContainer(idOrName: string): Promise<ContainerInspect> {
    return this.#call('inspectContainer', idOrName, () => {
      const container = this.#find(idOrName);
      if (!container) throw new BerthError('BERTH_ENGINE_NOT_FOUND', `no such container: ${idOrName}`);
      return inspectFixture({
        id: container.id,
        name: container.name,
        labels: { ...container.labels },
        status: container.status,
        running: container.status === 'running',
        exitCode: container.exitCode,
        ...(container.startedAt ? { startedAt: container.startedAt } : {}),
        ...(container.finishedAt ? { finishedAt: container.finishedAt } : {}),
      });
    });
  }

  /** Records the connect (network, container, aliases) in `calls`; the container must exist. */
  async connectNetwork(network: string, containerId: string, aliases: readonly string[]): Promise<void> {
    this.calls.push({ method: 'connectNetwork', target: { network, containerId, aliases: [...aliases] } });
    this.#require(containerId);
  }

  async listContainers(): Promise<ContainerSummary[]> {
    this.calls.push({ method: 'listContainers', target: undefined });
    return [...this.#containers.values()].map((c) => ({ id: c.id, names: [`/${c.name}`], image: 'img', labels: { ...c.labels }, createdAt: new Date(0), state: c.status, status: c.status }));
  }

  waitContainer(id: string, options: { signal?: AbortSignal } = {}): Promise<WaitResult> {
    this.calls.push({ method: 'waitContainer', target: id });
    const container = this.#containers.get(id);
    if (!container) return Promise.reject(new BerthError('BERTH_ENGINE_NOT_FOUND', `no such container: ${id}`));
    if (container.status === 'exited') return Promise.resolve({ exitCode: container.exitCode });
    return new Promise<WaitResult>((resolve, reject) => {
      const waiter = { resolve };
      const waiters = this.#waiters.get(id) ?? [];
      waiters.push(waiter);
      this.#waiters.set(id, waiters);
      options.signal?.addEventListener('abort', () => {
        this.#waiters.set(id, (this.#waiters.get(id) ?? []).filter((w) => w !== waiter));
        reject(new BerthError('BERTH_CANCELLED', 'wait cancelled'));
      });
    });
  }

  /** The grace period (seconds) of each stop call, in order. */
  readonly stopTimeouts: Array<number | undefined> = [];

  stopContainer(id: string, timeoutSeconds?: number): Promise<'stopped' | 'not-running'> {
    this.stopTimeouts.push(timeoutSeconds);
    return this.#call('stopContainer', id, () => {
      const container = this.#require(id);
      if (container.status !== 'running') return 'not-running' as const;
      this.#stopped(container, 143);
      return 'stopped' as const;
    });
  }

  killContainer(id: string): Promise<void> {
    return this.#call('killContainer', id, () => {
      const container = this.#require(id);
      if (container.status !== 'running') throw new BerthError('BERTH_ENGINE_CONFLICT', `container ${id} is not running`);
      this.#stopped(container, 137);
    });
  }

  removeContainer(id: string): Promise<'removed' | 'absent'> {
    return this.#call('removeContainer', id, () => {
      const container = this.#find(id);
      if (!container) return 'absent' as const;
      if (container.status === 'running') this.#stopped(container, 137);
      this.#containers.delete(container.id);
      return 'removed' as const;
    });
  }

  async openLabelledContainerEvents(): Promise<ContainerEventStream> {
    return new SilentEvents();
  }

  async openContainerEvents(): Promise<ContainerEventStream> {
    return new SilentEvents();
  }

  readonly attachContainer = unscripted('attachContainer');
  readonly containerLogs = unscripted('containerLogs');
  readonly streamStats = unscripted('streamStats');
  readonly getArchive = unscripted('getArchive');
  readonly exec = unscripted('exec');
  readonly pauseContainer = unscripted('pauseContainer');
  readonly putArchive = unscripted('putArchive');
  readonly unpauseContainer = unscripted('unpauseContainer');
  readonly resizeContainer = unscripted('resizeContainer');

  #find(idOrName: string): FakeContainer | undefined {
    return this.#containers.get(idOrName) ?? [...this.#containers.values()].find((c) => c.name === idOrName);
  }

  #require(idOrName: string): FakeContainer {
    const container = this.#find(idOrName);
    if (!container) throw new BerthError('BERTH_ENGINE_NOT_FOUND', `no such container: ${idOrName}`);
    return container;
  }

  #stopped(container: FakeContainer, exitCode: number): void {
    container.status = 'exited';
    container.exitCode = exitCode;
    container.finishedAt = new Date();
    for (const waiter of this.#waiters.get(container.id) ?? []) waiter.resolve({ exitCode });
    this.#waiters.delete(container.id);
  }

  /** Runs `act` as the engine would, now or when the test lets a held call through. */
  #call<T>(method: HeldMethod, target: string, act: () => T): Promise<T> {
    this.calls.push({ method, target });
    if (!this.#held.has(method)) return new Promise<T>((resolve) => resolve(act()));
    return new Promise<T>((resolve, reject) => {
      this.#arrived.push({
        method,
        args: [target],
        proceed: () => {
          try {
            resolve(act());
          } catch (error) {
            reject(error);
          }
        },
        proceedThenFail: (error) => {
          try {
            act();
          } catch {
            // The engine's own answer is lost either way.
          }
          reject(error);
        },
        fail: (error) => reject(error),
      });
      for (const wake of this.#onArrival.splice(0)) wake();
    });
  }
}

/** A handle to a container of the scripted engine, as the driver makes one after the create; `start()` starts it as the driver does. */
export function scriptedHandle(engine: ScriptedEngine, spec: TaskSpec = { image: 'img' }) {
  const containerId = engine.addContainer('berth-t1', {});
  const phases: string[] = [];
  let destroyedCalls = 0;
  const handle = new TaskHandle(
    { taskId: 't1', containerId, spec: resolveTaskSpec(spec, { allowPrivileged: false }), streams: { stdout: Readable.from([]), stderr: Readable.from([]), close: () => undefined } },
    {
      engine,
      retryPolicy: { attempts: 3, initialDelayMs: 1, maxDelayMs: 2 },
      logger: silentLogger,
      onPhase: (change) => phases.push(`${change.from}->${change.to}`),
      onDestroyed: () => destroyedCalls++,
    },
  );
  return {
    handle,
    containerId,
    /** Every phase change the handle reported, as `from->to`. */
    phases,
    destroyedCalls: () => destroyedCalls,
    start: async (): Promise<void> => {
      await engine.startContainer(containerId);
      handle.markStarted();
    },
  };
}

/** A handle to a running task of a fresh scripted engine. */
export async function startedHandle(spec?: TaskSpec) {
  const engine = new ScriptedEngine();
  const scripted = scriptedHandle(engine, spec);
  await scripted.start();
  return { engine, ...scripted };
}

/** A handle to a running task whose `stop()` is under way, its stop call held for the test to answer. */
export async function stoppingHandle(options: { signal?: AbortSignal } = {}) {
  const started = await startedHandle();
  started.engine.hold('stopContainer');
  const stopping = started.handle.stop(options);
  const stop = await started.engine.next('stopContainer');
  return { ...started, stopping, stop };
}
