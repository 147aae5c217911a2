/**
 * The library sees every task's end across an engine crash: dockerd SIGKILLed while tasks run, then
 * restarted, or paused. On an engine of this test's own (slot e1), so the shared one keeps serving.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Engine } from '../../src/engine/engine.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import type { EndState } from '../../src/tasks/end-state.js';
import type { TaskHandle } from '../../src/tasks/handle.js';
import { pollUntil, TEST_IMAGE, testRun } from '../support/engine.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { requireOwnEngine, startOwnEngine, type OwnEngine } from '../support/own-engine.js';


const WAIT_PATH = /^\/containers\/[^/]+\/wait$/;
const NEVER_MS = 3_600_000;
const RELIST_MS = 500;

/** What the engine says about a container's end now: its exit code. */
async function engineExitCode(engine: Engine, id: string): Promise<number> {
  const state = await engine.inspectContainer(id);
  assert.equal(state.running, false, `container ${id} has stopped`);
  return state.exitCode;
}

function expectedEnd(exitCode: number): EndState {
  return exitCode === 0 ? { kind: 'success', exitCode: 0 } : { kind: 'failed', exitCode };
}

describe('task ends across an engine killed with SIGKILL and restarted, or paused', { skip: requireOwnEngine() }, () => {
  let own: OwnEngine;
  let direct: Engine;
  const run = testRun();
  const spec = (command: string): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, network: 'none', command: ['sh', '-c', command] });

  before(async () => {
    own = await startOwnEngine('e1');
    direct = new Engine({ socketPath: own.socketPath });
  });
  after(async () => {
    await own?.destroy();
  });

  test('every handle\'s wait resolves with the engine\'s exit code and every container is removable', { timeout: 150_000 }, async (t) => {
    const driver = new TaskDriver({ engine: direct, ownerId: `test-${run.id}`, relistPeriodMs: RELIST_MS });
    const handles: TaskHandle[] = [
      // Killed by the engine's restart (no live restore).
      await driver.start(spec('sleep 600'), { output: 'engine-log' }),
      await driver.start(spec('trap "exit 3" TERM; sleep 600 & wait'), { output: 'engine-log' }),
      // Attached: its attach connection dies with the engine too.
      await driver.start(spec('echo hello; sleep 600')),
      // Ends by itself, about when the engine is killed.
      await driver.start(spec('sleep 1; exit 7'), { output: 'engine-log' }),
    ];
    handles[2]!.stdout.resume();
    handles[2]!.stderr.resume();

    await own.kill();
    await own.restart();
    const answeredAt = Date.now();

    const ends = await Promise.all(handles.map((h) => h.wait()));
    t.diagnostic(`every end seen ${Date.now() - answeredAt} ms after the engine answered again (relist period ${RELIST_MS} ms)`);
    for (const [i, handle] of handles.entries()) {
      assert.deepEqual(ends[i], expectedEnd(await engineExitCode(direct, handle.containerId)), `task ${i} ends with the engine's exit code`);
    }
    for (const handle of handles) await handle.destroy();
    assert.deepEqual(await direct.listContainers({ all: true, labels: [run.labelFilter] }), [], 'every container was removed');
  });

  test('with every wait held after the crash, the relist ends each task right, and a container gone meanwhile as lost', { timeout: 150_000 }, async (t) => {
    const proxy = await FaultProxy.start({ upstreamSocketPath: own.socketPath });
    try {
      const driver = new TaskDriver({ engine: new Engine({ socketPath: proxy.socketPath }), ownerId: `test-${run.id}`, relistPeriodMs: RELIST_MS });
      const running = await driver.start(spec('sleep 600'), { output: 'engine-log' });
      const removed = await driver.start(spec('sleep 600'), { output: 'engine-log' });
      // From now on no wait answers, and no events stream opens: only the relist can tell.
      proxy.addRule({ method: 'POST', path: WAIT_PATH, fault: { kind: 'delay', delayMs: NEVER_MS } });
      proxy.addRule({ method: 'GET', path: '/events', fault: { kind: 'drop' } });

      await own.kill();
      // berth sees nothing of the restarted engine until the container is gone.
      proxy.refuseAll = true;
      await own.restart();
      await direct.removeContainer(removed.containerId);
      proxy.clearLog();
      proxy.refuseAll = false;
      const answeredAt = Date.now();

      const [runningEnd, removedEnd] = await Promise.all([running.wait(), removed.wait()]);
      t.diagnostic(`every end seen ${Date.now() - answeredAt} ms after the engine answered again, from the relist alone (period ${RELIST_MS} ms)`);
      assert.deepEqual(runningEnd, expectedEnd(await engineExitCode(direct, running.containerId)));
      assert.equal(removedEnd.kind, 'lost');
      assert.match(removedEnd.kind === 'lost' ? removedEnd.reason : '', /vanished/);
      assert.ok(proxy.count('GET', /^\/containers\/json$/) >= 1, 'the relist listed the containers once the engine was back');
      assert.equal(proxy.requests.filter((r) => WAIT_PATH.test(r.path) && r.status !== undefined).length, 0, 'no wait answered after the crash');
      for (const handle of [running, removed]) await handle.destroy();
      assert.deepEqual(await direct.listContainers({ all: true, labels: [run.labelFilter] }), []);
    } finally {
      await proxy.close();
    }
  });

  test('a task that ends while the engine is paused ends with its exit code once the engine resumes', { timeout: 150_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'berth-pause-'));
    try {
      const relistFailures: string[] = [];
      const logger = { debug: (_meta: Record<string, unknown>, message: string) => void (/relist/.test(message) && relistFailures.push(message)), info: () => undefined, warn: () => undefined, error: () => undefined };
      const driver = new TaskDriver({ engine: direct, ownerId: `test-${run.id}`, relistPeriodMs: RELIST_MS, logger });
      // The task exits when told to, and says so in a file the test can see while the engine answers nothing.
      const handle = await driver.start(
        {
          ...spec('until [ -f /x/go ]; do sleep 0.05; done; touch /x/done; exit 5'),
          mounts: [{ type: 'bind', source: dir, target: '/x' }],
        },
        { output: 'engine-log' },
      );
      own.pause();
      try {
        await writeFile(path.join(dir, 'go'), '');
        await pollUntil('the task to finish while the engine is paused', () => (existsSync(path.join(dir, 'done')) ? true : undefined), { timeoutMs: 30_000 });
        // Relists run into the paused engine meanwhile; an outage is not an end.
        const failedBefore = relistFailures.length;
        await pollUntil('a relist to meet the paused engine', () => (relistFailures.length > failedBefore ? true : undefined), { timeoutMs: 30_000 });
      } finally {
        own.resume();
      }
      assert.deepEqual(await handle.wait(), { kind: 'failed', exitCode: 5 });
      await handle.destroy();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
