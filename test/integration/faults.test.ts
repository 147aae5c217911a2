import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { runToEnd } from '../../src/tasks/run.js';
import { seededRandom } from '../support/fault-mix.js';
import { useProxiedDriver } from '../support/proxied-driver.js';
import { requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { recordingLogger } from '../support/logger.js';
import { until } from '../support/time.js';

const direct = testEngine();
const run = testRun(direct);
const spec = (overrides: Partial<TaskSpec> = {}): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, command: ['sh', '-c', 'exit 7'], ...overrides });
const fastRetry = { attempts: 5, initialDelayMs: 20, maxDelayMs: 200 };
/** The driver's line for a container an earlier create of the same start made (found by an inspect after a lost answer, or by a conflict). */
const ADOPTED = 'adopted the container an earlier create made';
let taskCounter = 0;
const taskId = (what: string): string => `${what}-${run.id}-${++taskCounter}`;

describe('engine faults through a proxy in front of the real socket', { skip: await requireEngine() }, () => {
  // Each fault must leave nothing behind: checked after every case, not only at the end.
  const logger = recordingLogger();
  const faulty = useProxiedDriver(run, { proxy: { random: seededRandom(42) }, engine: { deadlines: { writeMs: 2000 } }, driver: { retry: fastRetry, logger } });

  /** The sequence number of the last request the proxy saw: later requests are this test's. */
  const lastSeq = (): number => faulty.proxy.requests.at(-1)?.seq ?? 0;
  /** The engine's answer to each create sent after `afterSeq` (undefined: it never answered). */
  const createAnswersAfter = (afterSeq: number): Array<number | undefined> =>
    faulty.proxy.requests.filter((r) => r.seq > afterSeq && r.method === 'POST' && r.path === '/containers/create').map((r) => r.engineStatus);
  /** The containers the driver logged adopting for a task. */
  const adoptedBy = (id: string): unknown[] => logger.lines.filter((l) => l.message === ADOPTED && l.meta.taskId === id).map((l) => l.meta.containerId);

  test('a 500 after the engine created the container is retried and the container adopted', async () => {
    const mark = lastSeq();
    const id = taskId('adopt-500');
    const rule = faulty.proxy.addRule({ method: 'POST', path: '/containers/create', fault: { kind: 'error500AfterForward' }, times: 1 });
    const result = await runToEnd(faulty.driver, spec(), { taskId: id });
    assert.equal(rule.fired, 1);
    // The engine made the container at the first create; an inspect found it, so no second create was sent.
    assert.deepEqual(createAnswersAfter(mark), [201]);
    assert.deepEqual(adoptedBy(id), [result.containerId], 'the task ran in the container the first create made');
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 7 });
  });

  test('a 500 after the engine started the container counts as started', async () => {
    const rule = faulty.proxy.addRule({ method: 'POST', path: /^\/containers\/[^/]+\/start$/, fault: { kind: 'error500AfterForward' }, times: 1 });
    const result = await runToEnd(faulty.driver, spec({ command: ['sh', '-c', 'echo once; exit 7'] }));
    assert.equal(rule.fired, 1);
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 7 });
  });

  test('a 500 after the engine removed the container still ends with no container left', async () => {
    const rule = faulty.proxy.addRule({ method: 'DELETE', path: /^\/containers\/[^/]+$/, fault: { kind: 'error500AfterForward' }, times: 1 });
    const result = await runToEnd(faulty.driver, spec());
    assert.equal(rule.fired, 1);
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 7 });
  });

  test('a dropped connection on create is retried and adopts what the engine made', async () => {
    const mark = lastSeq();
    const id = taskId('adopt-drop');
    const rule = faulty.proxy.addRule({ method: 'POST', path: '/containers/create', fault: { kind: 'dropAfterForward' }, times: 1 });
    const result = await runToEnd(faulty.driver, spec(), { taskId: id });
    assert.equal(rule.fired, 1);
    assert.deepEqual(createAnswersAfter(mark), [201]);
    assert.deepEqual(adoptedBy(id), [result.containerId]);
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 7 });
  });

  test('a dropped wait connection still yields the real exit code', async () => {
    const rule = faulty.proxy.addRule({ method: 'POST', path: /^\/containers\/[^/]+\/wait$/, fault: { kind: 'dropAfterForward' }, times: 1 });
    const result = await runToEnd(faulty.driver, spec({ command: ['sh', '-c', 'exit 9'] }));
    assert.equal(rule.fired, 1);
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 9 });
  });

  test('a create held past its deadline is retried, and the container it makes when it lands after the task was removed is removed', async () => {
    const mark = lastSeq();
    // Held until the test lets it through: the create that berth gave up on reaches the engine exactly when the test says.
    const rule = faulty.proxy.addRule({ method: 'POST', path: '/containers/create', fault: { kind: 'hold', forwardIfClientGone: true }, times: 1 });
    const result = await runToEnd(faulty.driver, spec());
    assert.equal(rule.fired, 1);
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 7 });
    const late = faulty.proxy.requests.find((r) => r.seq > mark && r.fault === 'hold');
    assert.ok(late, 'the first create was held');
    assert.equal(late.engineStatus, undefined, 'the held create had not reached the engine while the task ran');
    // The task is run and removed: now the late create lands, under the name it freed.
    rule.release();
    await until(() => late.engineStatus !== undefined, 'the late create to reach the engine', 30_000);
    assert.equal(late.engineStatus, 201, 'the late create reached the engine and created a container');
    await faulty.driver.settled();
    // The driver's guard removed it (afterEach checks that nothing of the run is left).
    const removals = faulty.proxy.requests.filter((r) => r.seq > late.seq && r.method === 'DELETE' && /^\/containers\/[^/]+$/.test(r.path));
    assert.ok(removals.some((r) => r.engineStatus === 204), 'the late container was removed');
  });

  test('a create answered 500 every time after the engine acted runs the task in the container the first one made', async () => {
    const mark = lastSeq();
    const id = taskId('adopt-always-500');
    faulty.proxy.addRule({ method: 'POST', path: '/containers/create', fault: { kind: 'error500AfterForward' } });
    const result = await runToEnd(faulty.driver, spec(), { taskId: id });
    assert.deepEqual(createAnswersAfter(mark), [201], 'one create reached the engine');
    assert.deepEqual(adoptedBy(id), [result.containerId]);
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 7 });
  });

  test('a create the engine refuses every time before acting reports a typed error and makes nothing', async () => {
    const mark = lastSeq();
    faulty.proxy.addRule({ method: 'POST', path: '/containers/create', fault: { kind: 'error503Before' } });
    await assert.rejects(runToEnd(faulty.driver, spec()), (e: unknown) => isBerthError(e, 'BERTH_ENGINE_SERVER_ERROR') && e.retryable);
    const answers = createAnswersAfter(mark);
    assert.equal(answers.length, fastRetry.attempts, 'every attempt was sent');
    assert.deepEqual(answers.filter((status) => status !== undefined), [], 'no create reached the engine');
  });

  test('an unreachable engine is a typed, retryable error and nothing is created', async () => {
    faulty.proxy.refuseAll = true;
    try {
      await assert.rejects(runToEnd(faulty.driver, spec()), (e: unknown) => isBerthError(e, 'BERTH_ENGINE_UNAVAILABLE') && e.retryable);
    } finally {
      faulty.proxy.refuseAll = false;
    }
  });

  test('with 30% of creates, starts and removes failing after the engine acted, every task ends right and nothing leaks', async () => {
    for (const path of ['/containers/create', /^\/containers\/[^/]+\/start$/]) {
      faulty.proxy.addRule({ method: 'POST', path, fault: { kind: 'error500AfterForward' }, probability: 0.3 });
    }
    faulty.proxy.addRule({ method: 'DELETE', path: /^\/containers\/[^/]+$/, fault: { kind: 'error500AfterForward' }, probability: 0.3 });
    const codes = Array.from({ length: 12 }, (_, i) => i % 5);
    const results = [];
    for (const code of codes) results.push(await runToEnd(faulty.driver, spec({ command: ['sh', '-c', `exit ${code}`] })));
    assert.deepEqual(results.map((r) => (r.end.kind === 'success' || r.end.kind === 'failed' ? r.end.exitCode : r.end.kind)), codes);
    assert.ok(faulty.proxy.requests.filter((r) => r.fault === 'error500AfterForward').length > 0, 'the faults fired');
  });
});
