import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { ContainerInspect, WaitResult } from '../../../src/engine/types.js';
import { EndWatch, hasStopped, listingVerdict, type EndFacts, type EndWatchEngine } from '../../../src/tasks/end-watch.js';
import { inspectFixture } from '../../support/inspect.js';

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const unavailable = (): BerthError => new BerthError('BERTH_ENGINE_UNAVAILABLE', 'wait container: the engine is unreachable (ECONNRESET)');

/**
 * A scripted engine: each wait is a deferred the test settles (an aborted wait rejects, as the real
 * one does); each inspect answers with the next scripted state or error.
 */
class ScriptedEngine implements EndWatchEngine {
  readonly waits: Array<Deferred<WaitResult> & { aborted: boolean }> = [];
  readonly inspects: Array<Partial<ContainerInspect> | Error> = [];
  inspectCalls = 0;
  #waitListeners: Array<() => void> = [];

  readonly deadlines = { readMs: 1000, writeMs: 1000, stopExtraMs: 1000 };

  waitContainer(_id: string, options: { signal?: AbortSignal } = {}): Promise<WaitResult> {
    const wait = Object.assign(deferred<WaitResult>(), { aborted: false });
    options.signal?.addEventListener('abort', () => {
      wait.aborted = true;
      wait.reject(new BerthError('BERTH_CANCELLED', 'wait cancelled'));
    });
    this.waits.push(wait);
    for (const listener of this.#waitListeners.splice(0)) listener();
    return wait.promise;
  }

  async inspectContainer(id: string): Promise<ContainerInspect> {
    this.inspectCalls++;
    const next = this.inspects.shift() ?? { running: true, status: 'running' };
    if (next instanceof Error) throw next;
    return inspectFixture({ id, ...next });
  }

  /** Resolves once the watch has dialled its `count`th wait. */
  async waitDialled(count: number): Promise<Deferred<WaitResult> & { aborted: boolean }> {
    while (this.waits.length < count) await new Promise<void>((resolve) => this.#waitListeners.push(resolve));
    return this.waits[count - 1]!;
  }
}

function watch(engine: ScriptedEngine, extra: { lostAfterUnreachableMs?: number; now?: () => number } = {}): EndWatch {
  return new EndWatch('c1', engine as unknown as EndWatchEngine, {
    taskId: 't1',
    retryInitialDelayMs: 1,
    retryMaxDelayMs: 5,
    logger: silentLogger,
    ...extra,
  });
}

describe('listingVerdict', () => {
  it('reads a running, paused or restarting container as running, another state as stopped, and absence as gone', () => {
    for (const state of ['running', 'paused', 'restarting'] as const) assert.equal(listingVerdict('c1', [{ id: 'c1', state }]), 'running');
    for (const state of ['exited', 'dead', 'created', 'removing'] as const) assert.equal(listingVerdict('c1', [{ id: 'c1', state }]), 'stopped');
    assert.equal(listingVerdict('c1', [{ id: 'c2', state: 'running' }]), 'gone');
  });
});

describe('hasStopped', () => {
  it('is true only for a container that is neither running, paused nor restarting', () => {
    assert.equal(hasStopped({ running: false, paused: false, status: 'exited' }), true);
    assert.equal(hasStopped({ running: true, paused: false, status: 'running' }), false);
    assert.equal(hasStopped({ running: false, paused: true, status: 'paused' }), false);
    assert.equal(hasStopped({ running: false, paused: false, status: 'restarting' }), false);
  });
});

describe('EndWatch', () => {
  it('ends with the exit code the wait reports', async () => {
    const engine = new ScriptedEngine();
    const w = watch(engine);
    (await engine.waitDialled(1)).resolve({ exitCode: 3 });
    assert.deepEqual(await w.ended, { kind: 'stopped', exitCode: 3, seenBy: 'wait' });
    assert.equal(engine.inspectCalls, 0);
  });

  it('learns the end from the inspect a relist hint triggers while the wait never answers, and closes the wait', async () => {
    const engine = new ScriptedEngine();
    const w = watch(engine);
    const wait = await engine.waitDialled(1);
    engine.inspects.push({ running: false, status: 'exited', exitCode: 42, oomKilled: true });
    w.hint('relist-stopped');
    assert.deepEqual(await w.ended, { kind: 'stopped', exitCode: 42, oomKilled: true, seenBy: 'inspect' });
    assert.equal(wait.aborted, true, 'the stalled wait connection is closed');
  });

  it('keeps waiting when a hint finds the container still running', async () => {
    const engine = new ScriptedEngine();
    const w = watch(engine);
    const wait = await engine.waitDialled(1);
    engine.inspects.push({ running: true, status: 'running' });
    w.hint('event');
    await new Promise((resolve) => setImmediate(resolve));
    while (engine.inspectCalls < 1) await new Promise((resolve) => setImmediate(resolve));
    wait.resolve({ exitCode: 0 });
    assert.deepEqual(await w.ended, { kind: 'stopped', exitCode: 0, seenBy: 'wait' });
    assert.equal(engine.waits.length, 1, 'the same wait served throughout');
  });

  it('dials the wait again after its connection broke, for as long as the engine stays away, and says so once', async () => {
    const engine = new ScriptedEngine();
    const warnings: string[] = [];
    const w = new EndWatch('c1', engine as unknown as EndWatchEngine, {
      taskId: 't1',
      retryInitialDelayMs: 1,
      retryMaxDelayMs: 5,
      logger: { ...silentLogger, warn: (_meta, message) => void warnings.push(message) },
    });
    // Ten broken waits, each followed by an inspect the unreachable engine cannot answer.
    for (let n = 1; n <= 10; n++) {
      engine.inspects.push(unavailable());
      (await engine.waitDialled(n)).reject(unavailable());
    }
    (await engine.waitDialled(11)).resolve({ exitCode: 137 });
    assert.deepEqual(await w.ended, { kind: 'stopped', exitCode: 137, seenBy: 'wait' });
    assert.equal(warnings.length, 1, 'one warning for the whole outage');
  });

  it('ends as lost when the container is gone', async () => {
    const engine = new ScriptedEngine();
    const w = watch(engine);
    await engine.waitDialled(1);
    engine.inspects.push(new BerthError('BERTH_ENGINE_NOT_FOUND', 'inspect container: no such container'));
    w.hint('relist-gone');
    const ended = await w.ended;
    assert.equal(ended.kind, 'lost');
    assert.match((ended as Extract<EndFacts, { kind: 'lost' }>).reason, /vanished/);
  });

  it('ends as lost when the wait reports the container gone', async () => {
    const engine = new ScriptedEngine();
    const w = watch(engine);
    (await engine.waitDialled(1)).reject(new BerthError('BERTH_ENGINE_NOT_FOUND', 'wait container: no such container'));
    assert.equal((await w.ended).kind, 'lost');
  });

  it('ends as lost, saying so, once the engine was unreachable longer than the configured bound', async () => {
    const engine = new ScriptedEngine();
    let now = 0;
    const w = watch(engine, { lostAfterUnreachableMs: 60_000, now: () => now });
    await engine.waitDialled(1);
    w.hint('engine-unreachable');
    now = 30_000;
    w.hint('engine-unreachable');
    now = 61_000;
    w.hint('engine-unreachable');
    const ended = await w.ended;
    assert.equal(ended.kind, 'lost');
    assert.match((ended as Extract<EndFacts, { kind: 'lost' }>).reason, /unreachable for 61000 ms/);
  });

  it('does not end on an outage when the engine answered in between', async () => {
    const engine = new ScriptedEngine();
    let now = 0;
    const w = watch(engine, { lostAfterUnreachableMs: 60_000, now: () => now });
    const wait = await engine.waitDialled(1);
    w.hint('engine-unreachable');
    now = 50_000;
    w.hint('engine-answered');
    now = 70_000;
    w.hint('engine-unreachable');
    now = 100_000;
    w.hint('engine-unreachable');
    await new Promise((resolve) => setImmediate(resolve));
    wait.resolve({ exitCode: 5 });
    assert.deepEqual(await w.ended, { kind: 'stopped', exitCode: 5, seenBy: 'wait' });
  });

  it('dials a broken wait again as soon as a relist finds the engine answering, without sitting out its backoff', async () => {
    const engine = new ScriptedEngine();
    const w = new EndWatch('c1', engine as unknown as EndWatchEngine, { taskId: 't1', retryInitialDelayMs: 3_600_000, retryMaxDelayMs: 3_600_000, logger: silentLogger });
    engine.inspects.push(unavailable());
    (await engine.waitDialled(1)).reject(unavailable());
    while (engine.inspectCalls < 1) await new Promise((resolve) => setImmediate(resolve));
    assert.ok(w.unreachableSince !== undefined, 'the outage is noted');
    w.hint('engine-answered');
    (await engine.waitDialled(2)).resolve({ exitCode: 1 });
    assert.deepEqual(await w.ended, { kind: 'stopped', exitCode: 1, seenBy: 'wait' });
    assert.equal(w.unreachableSince, undefined);
  });
});
