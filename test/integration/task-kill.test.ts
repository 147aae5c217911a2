import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { Engine } from '../../src/engine/engine.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import type { TaskHandle } from '../../src/tasks/handle.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { NEVER_MS, shareFaultProxy } from '../support/fault-matrix.js';
import type { FaultProxy } from '../support/fault-proxy.js';

const direct = testEngine();
const run = testRun(direct);
const spec = (script: string, overrides: Partial<TaskSpec> = {}): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, command: ['sh', '-c', script], ...overrides });
const STOP_PATH = /^\/containers\/[^/]+\/stop$/;
const KILL_PATH = /^\/containers\/[^/]+\/kill$/;

/** Reads the task's stdout as text and resolves once it holds `line`. */
function untilPrinted(handle: TaskHandle, line: string): { text(): string; printed: Promise<unknown> } {
  let text = '';
  handle.stdout.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  handle.stderr.resume();
  return { text: () => text, printed: pollUntil(`the task to print ${line}`, () => (text.includes(`${line}\n`) ? true : undefined), { timeoutMs: 30_000 }) };
}

describe('handle.kill and the stop that falls back to a kill', { skip: await requireEngine() }, () => {
  let proxy: FaultProxy;
  let driver: TaskDriver;
  /** The kill calls the proxy saw before the current case (its log spans the whole file). */
  let killsBefore = 0;
  const killsInCase = (): number => proxy.count('POST', KILL_PATH) - killsBefore;

  shareFaultProxy(run, (started) => {
    proxy = started;
    // Short stop deadlines and two stop attempts, so that a stop that never answers gives up in seconds.
    const engine = new Engine({ socketPath: proxy.socketPath, deadlines: { readMs: 2000, writeMs: 3000, stopExtraMs: 1000 } });
    driver = new TaskDriver({ engine, ownerId: `kill-${run.id}`, retry: { attempts: 2, initialDelayMs: 20, maxDelayMs: 100 } });
  });
  beforeEach(() => {
    killsBefore = proxy.count('POST', KILL_PATH);
  });

  test('kill() sends SIGKILL: the task ends as the engine reports it, failed with 137, not cancelled', async () => {
    await using handle = await driver.start(spec('echo ready; sleep 600'));
    const out = untilPrinted(handle, 'ready');
    await out.printed;
    await handle.kill();
    assert.deepEqual(await handle.wait(), { kind: 'failed', exitCode: 137 });
    assert.equal(killsInCase(), 1);
  });

  test('kill(signal) delivers another signal to the main process, which may handle it', async () => {
    await using handle = await driver.start(spec("trap 'echo got-usr1; exit 4' USR1; echo ready; while :; do sleep 0.1; done"));
    const out = untilPrinted(handle, 'ready');
    await out.printed;
    await handle.kill('SIGUSR1');
    assert.deepEqual(await handle.wait(), { kind: 'failed', exitCode: 4 });
    await pollUntil('the handler output', () => (out.text().includes('got-usr1\n') ? true : undefined), { timeoutMs: 10_000 });
  });

  test('kill() of a task that has ended is refused with BERTH_TASK_STATE and sends nothing', async () => {
    await using handle = await driver.start(spec('exit 2'));
    handle.stdout.resume();
    handle.stderr.resume();
    assert.deepEqual(await handle.wait(), { kind: 'failed', exitCode: 2 });
    await assert.rejects(handle.kill(), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
    assert.equal(killsInCase(), 0);
  });

  test('a kill whose answer is lost (500 after the engine acted) is sent again and the task still ends with 137', async () => {
    const rule = proxy.addRule({ method: 'POST', path: KILL_PATH, fault: { kind: 'error500AfterForward' }, times: 1 });
    await using handle = await driver.start(spec('echo ready; sleep 600'));
    await untilPrinted(handle, 'ready').printed;
    await handle.kill();
    assert.equal(rule.fired, 1);
    assert.deepEqual(await handle.wait(), { kind: 'failed', exitCode: 137 });
  });

  test('a stop that never answers ends the task through a kill (SIGKILL): cancelled with 137', async () => {
    // Every stop is held and never reaches the engine; the task would ignore SIGTERM anyway.
    const stops = proxy.addRule({ method: 'POST', path: STOP_PATH, fault: { kind: 'delay', delayMs: NEVER_MS } });
    await using handle = await driver.start(spec("trap '' TERM; echo ready; sleep 600"));
    await untilPrinted(handle, 'ready').printed;
    await handle.stop({ graceMs: 1000 });
    assert.equal(stops.fired, 2, 'the stop was tried with every attempt of the retry policy');
    assert.equal(killsInCase(), 1, 'then berth sent one kill');
    assert.deepEqual(await handle.wait(), { kind: 'cancelled', exitCode: 137 });
  });
});
