import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { ExecExitStatus, ExecInspect } from '../../../src/engine/engine.js';
import type { ContainerInspect, WaitResult } from '../../../src/engine/types.js';
import { ExecEndWatch, type ExecEndWatchEngine } from '../../../src/tasks/exec-end-watch.js';
import { inspectFixture } from '../../support/inspect.js';

/**
 * A scripted engine for a warm task: the container's wait resolves when the test says; the exec's
 * inspect answers the exec's current state, which the test sets.
 */
class ScriptedExecEngine implements ExecEndWatchEngine {
  exec: ExecInspect = { id: 'e1', running: true, pid: 42, exitCode: null, containerId: 'c0ffee' };
  container: Partial<ContainerInspect> = { running: true };
  execInspects = 0;
  waitAborted = false;
  #endWait: ((result: WaitResult) => void) | undefined;

  waitContainer(_id: string, options: { signal?: AbortSignal } = {}): Promise<WaitResult> {
    return new Promise<WaitResult>((resolve, reject) => {
      this.#endWait = resolve;
      options.signal?.addEventListener('abort', () => {
        this.waitAborted = true;
        reject(new BerthError('BERTH_CANCELLED', 'wait cancelled'));
      });
    });
  }

  /** The container stops with `exitCode` (its wait answers). */
  stopContainer(exitCode: number): void {
    this.container = { running: false, exitCode };
    this.#endWait?.({ exitCode });
  }

  async inspectContainer(): Promise<ContainerInspect> {
    return inspectFixture(this.container);
  }

  async inspectExec(): Promise<ExecInspect> {
    this.execInspects++;
    return { ...this.exec };
  }
}

function session(engine: ScriptedExecEngine): { closed: Promise<void>; close(): void; exitStatus(): Promise<ExecExitStatus> } {
  let close!: () => void;
  const closed = new Promise<void>((resolve) => (close = resolve));
  return { closed, close, exitStatus: async () => ({ exitCode: engine.exec.exitCode ?? -1 }) };
}

/**
 * Awaits `promise` with the event loop held open: the watch's own poll timers are unref'd (they must
 * not keep a process alive), so without this the test could end before the watch's next poll.
 */
async function held<T>(promise: Promise<T>): Promise<T> {
  const keepAlive = setInterval(() => undefined, 1000);
  try {
    return await promise;
  } finally {
    clearInterval(keepAlive);
  }
}

const options = { taskId: 't1', retryInitialDelayMs: 10, retryMaxDelayMs: 10, logger: silentLogger, execPollMs: 5 };

describe('ExecEndWatch', () => {
  it('ends with the exec\'s exit code once its stream closed and the engine shows it ended, and lets the container\'s wait go', async () => {
    const engine = new ScriptedExecEngine();
    const exec = session(engine);
    const watch = new ExecEndWatch('c0ffee', 'e1', engine, exec, options);
    engine.exec = { ...engine.exec, running: false, exitCode: 3 };
    exec.close();
    assert.deepEqual(await held(watch.ended), { kind: 'stopped', exitCode: 3, seenBy: 'wait' });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(engine.waitAborted, true, 'the container runs on: its wait is not kept');
  });

  it('a stream cut while the exec runs is no end: the exec is asked again until it ends', async () => {
    const engine = new ScriptedExecEngine();
    const exec = session(engine);
    const watch = new ExecEndWatch('c0ffee', 'e1', engine, exec, options);
    exec.close();
    let settled = false;
    void watch.ended.then(() => (settled = true));
    while (engine.execInspects < 3) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(settled, false);
    engine.exec = { ...engine.exec, running: false, exitCode: 0 };
    assert.deepEqual(await held(watch.ended), { kind: 'stopped', exitCode: 0, seenBy: 'wait' });
  });

  it('the container stopping first ends the task with the exec\'s code as the engine recorded it', async () => {
    const engine = new ScriptedExecEngine();
    const watch = new ExecEndWatch('c0ffee', 'e1', engine, session(engine), options);
    engine.exec = { ...engine.exec, running: false, exitCode: 143 };
    engine.stopContainer(137);
    const facts = await held(watch.ended);
    assert.equal(facts.kind, 'stopped');
    assert.equal(facts.kind === 'stopped' ? facts.exitCode : undefined, 143);
  });

  it('a hint that the container vanished ends the task lost', async () => {
    const engine = new ScriptedExecEngine();
    const watch = new ExecEndWatch('c0ffee', 'e1', engine, session(engine), options);
    engine.inspectContainer = () => Promise.reject(new BerthError('BERTH_ENGINE_NOT_FOUND', 'no such container'));
    watch.hint('relist-gone');
    const facts = await held(watch.ended);
    assert.equal(facts.kind, 'lost');
  });
});
