import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { Engine } from '../../src/engine/engine.js';
import { GroupRunner } from '../../src/groups/runner.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { FaultProxy, type Fault } from '../support/fault-proxy.js';
import { groupLeftovers, removeRunObjects } from '../support/groups.js';

/**
 * Group creation under engine faults (through test/support/fault-proxy.ts): a group either starts
 * and ends as it should, or fails cleanly; either way no infrastructure container, network or
 * volume is left behind (checked by the run's labels after every case).
 */

const realEngine = testEngine();
const run = testRun(realEngine);
const NOTHING = { containers: [], volumes: [], networks: [] };
let proxy: FaultProxy | undefined;
let runner: GroupRunner | undefined;

/** A private network, a shared volume, an infrastructure container and two task containers. */
const GROUP = {
  name: 'faults',
  network: { mode: 'private' },
  tasks: [
    { name: 'setup', lifecycle: 'prestart', image: TEST_IMAGE, command: ['sh', '-c', 'echo ok > /alloc/ready'] },
    { name: 'main', image: TEST_IMAGE, command: ['cat', '/alloc/ready'] },
  ],
};

const CALLS: ReadonlyArray<{ call: string; method: string; path: RegExp }> = [
  { call: 'volume create', method: 'POST', path: /^\/volumes\/create$/ },
  { call: 'network create', method: 'POST', path: /^\/networks\/create$/ },
  { call: 'container create', method: 'POST', path: /^\/containers\/create$/ },
  { call: 'container start', method: 'POST', path: /^\/containers\/[^/]+\/start$/ },
];

const ONCE: ReadonlyArray<{ name: string; fault: Fault }> = [
  { name: 'a 500 after the engine acted', fault: { kind: 'error500AfterForward' } },
  { name: 'a connection dropped after the engine acted', fault: { kind: 'dropAfterForward' } },
];

describe('group creation under engine faults leaves nothing behind', { skip: await requireEngine() }, () => {
  before(async () => {
    proxy = await FaultProxy.start();
    const engine = new Engine({ socketPath: proxy.socketPath });
    const driver = new TaskDriver({ engine, ownerId: `test-${run.id}`, retry: { initialDelayMs: 50 } });
    runner = new GroupRunner({ driver, engine, labels: run.labels });
  });
  afterEach(async () => {
    proxy?.reset();
    assert.deepEqual(await groupLeftovers(realEngine, run), NOTHING);
  });
  after(async () => {
    await removeRunObjects(realEngine, run);
    await proxy?.close();
  });

  for (const { call, method, path } of CALLS) {
    for (const { name, fault } of ONCE) {
      test(`${name} on the first ${call}: the group starts and ends as it should`, async () => {
        const rule = proxy!.addRule({ method, path, fault, times: 1 });
        const group = await runner!.start(GROUP);
        assert.deepEqual(await group.wait(), { kind: 'success', exitCode: 0 });
        assert.equal(rule.fired, 1, 'the fault was injected');
        assert.equal(group.state, 'removed');
      });
    }
  }

  // A start whose answer is lost is checked by an inspect (the container runs): every start dropped still starts the group.
  test('a connection dropped after every container start: the starts are confirmed by inspect and the group runs to its end', async () => {
    const rule = proxy!.addRule({ method: 'POST', path: /^\/containers\/[^/]+\/start$/, fault: { kind: 'dropAfterForward' } });
    const group = await runner!.start(GROUP);
    assert.deepEqual(await group.wait(), { kind: 'success', exitCode: 0 });
    assert.equal(rule.fired, 3, 'the infrastructure container\'s start and both tasks\'');
  });

  const ALWAYS: ReadonlyArray<{ call: string; method: string; path: RegExp; fault: Fault }> = [
    { call: 'container create', method: 'POST', path: /^\/containers\/create$/, fault: { kind: 'error500AfterForward' } },
    { call: 'network create', method: 'POST', path: /^\/networks\/create$/, fault: { kind: 'drop' } },
    { call: 'volume create', method: 'POST', path: /^\/volumes\/create$/, fault: { kind: 'error500AfterForward' } },
  ];
  for (const { call, method, path, fault } of ALWAYS) {
    test(`${fault.kind} on every ${call}: the start fails with the engine's error and removes what it made`, async () => {
      proxy!.addRule({ method, path, fault });
      await assert.rejects(runner!.start(GROUP), (error: unknown) => isBerthError(error) && error.code.startsWith('BERTH_ENGINE_'));
    });
  }
});
