import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { LABELS } from '../../src/common/labels.js';
import { Engine } from '../../src/engine/engine.js';
import { tarArchive } from '../../src/tasks/tar.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { pollUntil, requireEngine, startTestContainer, testRun, testEngine } from '../support/engine.js';

const direct = testEngine();
const run = testRun(direct);
const retryableUnavailable = (error: unknown): boolean => isBerthError(error, 'BERTH_ENGINE_UNAVAILABLE') && error.retryable;

describe('followed engine streams settle when their connection dies', { skip: await requireEngine() }, () => {
  let proxy: FaultProxy;
  let engine: Engine;

  before(async () => {
    proxy = await FaultProxy.start();
    engine = new Engine({ socketPath: proxy.socketPath });
  });
  after(async () => {
    await run.cleanup();
    await proxy.close();
  });

  /** Waits until the proxy relays a request matching `path`, then cuts every open connection. */
  async function cutOnce(method: string, path: RegExp): Promise<void> {
    // Once the engine's answer head has passed, the response is being followed.
    await pollUntil(`the engine to answer ${method} ${path}`, () => (proxy.requests.some((r) => r.method === method && path.test(r.path) && r.engineStatus === 200) ? true : undefined), {
      timeoutMs: 20_000,
    });
    proxy.dropOpenConnections();
  }

  test('a wait whose connection dies rejects with a retryable BERTH_ENGINE_UNAVAILABLE', { timeout: 60_000 }, async () => {
    const id = await startTestContainer(direct, run, { cmd: ['sleep', '600'] });
    const waiting = engine.waitContainer(id);
    await cutOnce('POST', /\/wait$/);
    await assert.rejects(waiting, retryableUnavailable);
  });

  test('a followed log whose connection dies fails with a retryable BERTH_ENGINE_UNAVAILABLE', { timeout: 60_000 }, async () => {
    const id = await startTestContainer(direct, run, { cmd: ['sh', '-c', 'echo one; sleep 600'] });
    const reading = (async () => {
      for await (const _entry of engine.logEntries(id, { follow: true })) {
        // Reading until the stream ends or fails.
      }
    })();
    await cutOnce('GET', /\/logs$/);
    await assert.rejects(reading, retryableUnavailable);
  });

  test('an owner\'s events stream whose connection dies fails with a retryable BERTH_ENGINE_UNAVAILABLE', { timeout: 60_000 }, async () => {
    const events = await engine.openLabelledContainerEvents([`${LABELS.ownerId}=nobody-${run.id}`], ['die']);
    const reading = (async () => {
      for await (const _event of events) {
        // Nothing arrives for an owner nobody has.
      }
    })();
    proxy.dropOpenConnections();
    await assert.rejects(reading, retryableUnavailable);
  });

  test('an attach connection that dies resolves closed', { timeout: 60_000 }, async () => {
    const id = await startTestContainer(direct, run, { cmd: ['sleep', '600'] });
    const attached = await engine.attachContainer(id);
    attached.stdout.resume();
    attached.stderr.resume();
    proxy.dropOpenConnections();
    await attached.closed;
    assert.equal((await direct.inspectContainer(id)).running, true, 'the container runs on: the attach end alone says nothing');
  });

  test('the owner\'s events stream reports a labelled container\'s die with its id', { timeout: 60_000 }, async () => {
    const owner = `events-${run.id}`;
    const events = await engine.openLabelledContainerEvents([`${LABELS.ownerId}=${owner}`], ['die']);
    const id = await startTestContainer(direct, run, { cmd: ['sh', '-c', 'exit 2'], labels: { [LABELS.ownerId]: owner } });
    const seen = await pollUntil('the die event', async () => {
      for await (const event of events) return event;
      return undefined;
    }, { timeoutMs: 30_000 });
    events.close();
    assert.deepEqual({ action: seen.action, containerId: seen.containerId }, { action: 'die', containerId: id });
  });
});

describe('an image import whose progress stream the engine never ends', { skip: await requireEngine() }, () => {
  const direct = testEngine();
  const repo = `berth-test/import-stall-${process.pid}`;
  let proxy: FaultProxy;

  before(async () => {
    proxy = await FaultProxy.start();
  });
  after(async () => {
    await direct.removeImage(`${repo}:v1`, { force: true }).catch(() => undefined);
    await proxy.close();
  });

  test('fails with a retryable BERTH_ENGINE_TIMEOUT at the write deadline instead of waiting for ever', { timeout: 60_000 }, async () => {
    proxy.addRule({ method: 'POST', path: /^\/images\/create$/, fault: { kind: 'stall' } });
    const engine = new Engine({ socketPath: proxy.socketPath, deadlines: { writeMs: 2_000 } });
    const tar = Readable.from([tarArchive([{ header: { name: 'hello', type: 'file', mode: 0o644 }, body: Buffer.from('hi') }])]);
    await assert.rejects(engine.importImage(tar, { repo, tag: 'v1' }, []), (error: unknown) => isBerthError(error, 'BERTH_ENGINE_TIMEOUT') && error.retryable);
  });
});
