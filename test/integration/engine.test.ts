/**
 * The engine port against the real engine, directly and through the fault-injecting proxy.
 * Every test labels what it creates with its own run id and removes it afterwards.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it, type TestContext } from 'node:test';
import { isBerthError, type BerthError, type ErrorCode } from '../../src/common/errors.js';
import { Engine, MINIMUM_API_VERSION } from '../../src/engine/engine.js';
import { createTestContainer, readAll, requireEngine, startTestContainer, TEST_IMAGE, TEST_RUN_LABEL, testRun, type TestRun, testEngine } from '../support/engine.js';
import { FaultProxy } from '../support/fault-proxy.js';

const skip = await requireEngine();

function hasCode(code: ErrorCode): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(isBerthError(error), `expected a BerthError, got ${String(error)}`);
    assert.equal((error as BerthError).code, code, (error as BerthError).message);
    return true;
  };
}

const MiB = 1024 * 1024;

describe('Engine (real engine)', { skip }, () => {
  const engine = testEngine();
  let proxy: FaultProxy;
  /** Through the proxy, with the default read retries. */
  let proxied: Engine;
  /** Through the proxy with no retries, so that any fault of the proxy itself shows. */
  let proxiedOnce: Engine;

  before(async () => {
    proxy = await FaultProxy.start();
    proxied = new Engine({ socketPath: proxy.socketPath });
    proxiedOnce = new Engine({ socketPath: proxy.socketPath, readAttempts: 1 });
  });
  after(async () => {
    await proxy.close();
  });
  beforeEach(() => {
    proxy.reset();
    proxy.clearLog();
  });

  /** A run whose containers are removed when the test ends, pass or fail. */
  function runFor(t: TestContext): TestRun {
    const run = testRun(engine);
    t.after(() => run.cleanup());
    return run;
  }

  describe('version', () => {
    it('checkCompatible passes on this engine and reports its API version', async () => {
      const version = await engine.checkCompatible();
      assert.match(version.apiVersion, /^\d+\.\d+$/);
      const [major = 0, minor = 0] = version.apiVersion.split('.').map(Number);
      const [minMajor = 0, minMinor = 0] = MINIMUM_API_VERSION.split('.').map(Number);
      assert.ok(major > minMajor || (major === minMajor && minor >= minMinor));
      assert.equal(version.os, 'linux');
    });

    it('checkCompatible rejects an engine older than the minimum with BERTH_ENGINE_VERSION naming both versions', async () => {
      const actual = await engine.version();
      const demanding = testEngine({ minimumApiVersion: '9.99' });
      await assert.rejects(demanding.checkCompatible(), (error: unknown) => {
        hasCode('BERTH_ENGINE_VERSION')(error);
        const berthError = error as BerthError;
        assert.equal(berthError.context.apiVersion, actual.apiVersion);
        assert.equal(berthError.context.minimumApiVersion, '9.99');
        assert.match(berthError.message, new RegExp(`${actual.apiVersion.replace('.', '\\.')}.*9\\.99`));
        return true;
      });
    });

    it('checkCompatible compares minor versions numerically (1.9 is older than 1.41)', async () => {
      await testEngine({ minimumApiVersion: '1.9' }).checkCompatible();
    });
  });

  describe('container lifecycle', () => {
    it('inspect of a missing container fails with BERTH_ENGINE_NOT_FOUND, not retryable', async () => {
      await assert.rejects(engine.inspectContainer('berth-test-no-such-container'), (error: unknown) => {
        hasCode('BERTH_ENGINE_NOT_FOUND')(error);
        assert.equal((error as BerthError).retryable, false);
        assert.match((error as BerthError).message, /^inspect container: No such container: berth-test-no-such-container$/);
        return true;
      });
    });

    it('creates, starts, waits for and removes a container, reporting its exit code', async (t) => {
      const run = runFor(t);
      const name = run.name('round-trip');
      const id = await createTestContainer(engine, run, { name, cmd: ['sh', '-c', 'exit 7'] });
      const created = await engine.inspectContainer(name);
      assert.equal(created.id, id);
      assert.equal(created.name, name);
      assert.equal(created.status, 'created');
      assert.equal(created.labels[TEST_RUN_LABEL], run.id);
      assert.equal(created.image, TEST_IMAGE);
      assert.equal(created.hostConfig.networkMode, 'none');

      assert.equal(await engine.startContainer(id), 'started');
      assert.deepEqual(await engine.waitContainer(id), { exitCode: 7, error: undefined });
      const exited = await engine.inspectContainer(id);
      assert.equal(exited.status, 'exited');
      assert.equal(exited.exitCode, 7);
      assert.equal(exited.running, false);
      assert.ok(exited.finishedAt instanceof Date);

      const listed = await engine.listContainers({ labels: [run.labelFilter] });
      assert.deepEqual(listed.map((c) => c.id), [id]);
      assert.equal(listed[0]?.state, 'exited');

      assert.equal(await engine.removeContainer(id), 'removed');
      await assert.rejects(engine.inspectContainer(id), hasCode('BERTH_ENGINE_NOT_FOUND'));
    });

    it('creating a second container with a taken name fails with BERTH_ENGINE_CONFLICT', async (t) => {
      const run = runFor(t);
      const name = run.name('taken');
      await createTestContainer(engine, run, { name, cmd: ['true'] });
      await assert.rejects(createTestContainer(engine, run, { name, cmd: ['true'] }), hasCode('BERTH_ENGINE_CONFLICT'));
    });

    it('starting a running container again reports already-running', async (t) => {
      const run = runFor(t);
      const id = await createTestContainer(engine, run, { cmd: ['sleep', '60'] });
      assert.equal(await engine.startContainer(id), 'started');
      assert.equal(await engine.startContainer(id), 'already-running');
    });

    it('concurrent forced removals of one running container all succeed: the engine finishing one is not a failure of the others', async (t) => {
      const run = runFor(t);
      const id = await startTestContainer(engine, run, { cmd: ['sleep', '60'] });
      // The engine answers 409 "removal … already in progress" to all but one of these (classified by the container's state, not the text).
      const outcomes = await Promise.all([1, 2, 3, 4].map(() => engine.removeContainer(id)));
      for (const outcome of outcomes) assert.ok(outcome === 'removed' || outcome === 'absent', outcome);
      await assert.rejects(engine.inspectContainer(id), hasCode('BERTH_ENGINE_NOT_FOUND'));
    });

    it('removing a missing container reports absent', async () => {
      assert.equal(await engine.removeContainer('berth-test-no-such-container'), 'absent');
    });

    it('stop and kill treat a stopped or missing container as done', async (t) => {
      const run = runFor(t);
      const id = await startTestContainer(engine, run, { cmd: ['sleep', '60'] });
      await engine.stopContainer(id, 0);
      assert.equal((await engine.inspectContainer(id)).running, false);
      await engine.stopContainer(id, 0);
      await engine.killContainer(id);
      await engine.stopContainer('berth-test-no-such-container', 0);
      await engine.killContainer('berth-test-no-such-container');
    });

    it('reads what a container wrote while nobody was attached from its logs, stdout and stderr apart', async (t) => {
      const run = runFor(t);
      for (const via of [engine, proxiedOnce]) {
        const id = await startTestContainer(via, run, { cmd: ['sh', '-c', 'echo to-out; echo to-err >&2'] });
        assert.equal((await via.waitContainer(id)).exitCode, 0);
        const { stdout, stderr } = await via.containerLogs(id);
        assert.deepEqual(await Promise.all([readAll(stdout), readAll(stderr)]), ['to-out\n', 'to-err\n']);
      }
    });

    it('reads the log of a TTY container as raw text, even when it looks like JSON', async (t) => {
      const run = runFor(t);
      const id = await startTestContainer(engine, run, { cmd: ['echo', '42'], tty: true });
      assert.equal((await engine.waitContainer(id)).exitCode, 0);
      const { stdout, stderr } = await engine.containerLogs(id, { tty: true });
      assert.deepEqual(await Promise.all([readAll(stdout), readAll(stderr)]), ['42\r\n', '']);
    });

    it('follows the log of a running container until it exits', async (t) => {
      const run = runFor(t);
      const id = await startTestContainer(engine, run, { cmd: ['sh', '-c', 'echo first; read line; echo "got $line"'], stdin: true });
      const { stdout, stderr } = await proxiedOnce.containerLogs(id, { follow: true });
      const stdoutText = readAll(stdout);
      const stderrText = readAll(stderr);
      const attached = await engine.attachContainer(id, { stdin: true });
      attached.stdin?.end('second\n');
      assert.deepEqual(await Promise.all([stdoutText, stderrText]), ['first\ngot second\n', '']);
      attached.close();
    });
  });

  describe('failures through the fault proxy', () => {
    it('retries an inspect whose connection was dropped once, and succeeds', async (t) => {
      const run = runFor(t);
      const id = await createTestContainer(engine, run, { cmd: ['true'] });
      const rule = proxy.addRule({ method: 'GET', path: /^\/containers\/[^/]+\/json$/, fault: { kind: 'drop' }, times: 1 });
      const inspected = await proxied.inspectContainer(id);
      assert.equal(inspected.id, id);
      assert.equal(rule.fired, 1);
      assert.equal(proxy.count('GET', /^\/containers\/[^/]+\/json$/), 2);
    });

    it('retries an inspect whose answer was dropped after the engine answered, and succeeds', async (t) => {
      const run = runFor(t);
      const id = await createTestContainer(engine, run, { cmd: ['true'] });
      proxy.addRule({ method: 'GET', path: `/containers/${id}/json`, fault: { kind: 'dropAfterForward' }, times: 2 });
      assert.equal((await proxied.inspectContainer(id)).id, id);
      assert.deepEqual(proxy.requests.map((r) => r.engineStatus), [200, 200, 200]);
    });

    it('fails a call delayed past its deadline with BERTH_ENGINE_TIMEOUT, after the read retries', async (t) => {
      const run = runFor(t);
      const id = await createTestContainer(engine, run, { cmd: ['true'] });
      proxy.addRule({ method: 'GET', path: `/containers/${id}/json`, fault: { kind: 'delay', delayMs: 30_000 } });
      await assert.rejects(proxied.inspectContainer(id, { deadlineMs: 150 }), (error: unknown) => {
        hasCode('BERTH_ENGINE_TIMEOUT')(error);
        assert.equal((error as BerthError).retryable, true);
        assert.equal((error as BerthError).context.deadlineMs, 150);
        return true;
      });
      assert.equal(proxy.count('GET', /\/json$/), 3, 'three attempts, each past its deadline');
    });

    it('fails a write delayed past its deadline with BERTH_ENGINE_TIMEOUT, without retrying it', async (t) => {
      const run = runFor(t);
      const id = await createTestContainer(engine, run, { cmd: ['sleep', '60'] });
      proxy.addRule({ method: 'POST', path: `/containers/${id}/start`, fault: { kind: 'delay', delayMs: 30_000 } });
      await assert.rejects(proxied.startContainer(id, { deadlineMs: 150 }), hasCode('BERTH_ENGINE_TIMEOUT'));
      assert.equal(proxy.count('POST', /\/start$/), 1);
    });

    it('fails every call with BERTH_ENGINE_UNAVAILABLE while the engine refuses connections, and recovers', async () => {
      proxy.refuseAll = true;
      await assert.rejects(proxied.ping(), (error: unknown) => {
        hasCode('BERTH_ENGINE_UNAVAILABLE')(error);
        assert.equal((error as BerthError).retryable, true);
        return true;
      });
      await assert.rejects(proxiedOnce.inspectContainer('anything'), hasCode('BERTH_ENGINE_UNAVAILABLE'));
      proxy.refuseAll = false;
      await proxied.ping();
    });

    it('fails with BERTH_ENGINE_UNAVAILABLE when nothing listens on the socket', async () => {
      const nowhere = new Engine({ socketPath: `${proxy.socketPath}.missing`, readAttempts: 1 });
      await assert.rejects(nowhere.ping(), hasCode('BERTH_ENGINE_UNAVAILABLE'));
    });

    it('fails with BERTH_CANCELLED when the caller aborts a wait in flight', async (t) => {
      const run = runFor(t);
      const id = await startTestContainer(engine, run, { cmd: ['sleep', '60'] });
      const controller = new AbortController();
      const waiting = proxied.waitContainer(id, { signal: controller.signal });
      await proxy.waitForRequest((r) => r.method === 'POST' && r.path === `/containers/${id}/wait`);
      controller.abort(new Error('caller gave up'));
      await assert.rejects(waiting, (error: unknown) => {
        hasCode('BERTH_CANCELLED')(error);
        assert.equal((error as BerthError).retryable, false);
        return true;
      });
      assert.equal((await engine.inspectContainer(id)).running, true, 'cancelling the wait leaves the container alone');
    });

    it('fails with BERTH_CANCELLED, not a timeout, when the caller aborts a delayed read', async () => {
      proxy.addRule({ path: '/_ping', fault: { kind: 'delay', delayMs: 30_000 } });
      const controller = new AbortController();
      const pinging = proxied.ping({ signal: controller.signal });
      await proxy.waitForRequest((r) => r.path === '/_ping');
      controller.abort();
      await assert.rejects(pinging, hasCode('BERTH_CANCELLED'));
      assert.equal(proxy.count(undefined, /^\/_ping$/), 1, 'a cancelled read is not retried');
    });

    it('reports BERTH_ENGINE_SERVER_ERROR for an injected 500 although the engine created the container', async (t) => {
      const run = runFor(t);
      const name = run.name('acted');
      proxy.addRule({ method: 'POST', path: '/containers/create', fault: { kind: 'error500AfterForward' }, times: 1 });
      await assert.rejects(createTestContainer(proxiedOnce, run, { name, cmd: ['true'] }), (error: unknown) => {
        hasCode('BERTH_ENGINE_SERVER_ERROR')(error);
        assert.match((error as BerthError).message, /injected fault/);
        return true;
      });
      assert.equal((await engine.inspectContainer(name)).name, name, 'the engine acted before the injected 500');
      assert.deepEqual(proxy.requests.map((r) => [r.status, r.engineStatus]), [[500, 201]]);
    });

    it('reports BERTH_ENGINE_SERVER_ERROR for a 500 injected before the engine saw the request', async (t) => {
      const run = runFor(t);
      const name = run.name('not-acted');
      proxy.addRule({ method: 'POST', path: '/containers/create', fault: { kind: 'error500Before' } });
      await assert.rejects(createTestContainer(proxiedOnce, run, { name, cmd: ['true'] }), hasCode('BERTH_ENGINE_SERVER_ERROR'));
      await assert.rejects(engine.inspectContainer(name), hasCode('BERTH_ENGINE_NOT_FOUND'));
    });

    it('reports BERTH_ENGINE_UNAVAILABLE when the answer to a remove is dropped, though the container is gone', async (t) => {
      const run = runFor(t);
      const id = await createTestContainer(engine, run, { cmd: ['true'] });
      proxy.addRule({ method: 'DELETE', path: `/containers/${id}`, fault: { kind: 'dropAfterForward' }, times: 1 });
      await assert.rejects(proxied.removeContainer(id), hasCode('BERTH_ENGINE_UNAVAILABLE'));
      await assert.rejects(engine.inspectContainer(id), hasCode('BERTH_ENGINE_NOT_FOUND'));
      assert.equal(await proxied.removeContainer(id), 'absent');
    });

    it('a stalled answer holds the call until its deadline although the engine answered', async () => {
      proxy.addRule({ path: '/_ping', fault: { kind: 'stall' }, times: 1 });
      await assert.rejects(proxiedOnce.ping({ deadlineMs: 150 }), hasCode('BERTH_ENGINE_TIMEOUT'));
      assert.equal(proxy.requests[0]?.status, 200, 'the head was relayed');
      await proxiedOnce.ping();
    });

    it('applies a rule with probability 0 never and counts its matches', async () => {
      const rule = proxy.addRule({ path: '/_ping', fault: { kind: 'drop' }, probability: 0 });
      await proxiedOnce.ping();
      await proxiedOnce.ping();
      assert.equal(rule.matched, 2);
      assert.equal(rule.fired, 0);
    });

    it('relays many sequential and concurrent calls faithfully over keep-alive connections', async (t) => {
      const run = runFor(t);
      const id = await createTestContainer(engine, run, { cmd: ['true'] });
      for (let i = 0; i < 25; i++) assert.equal((await proxiedOnce.inspectContainer(id)).id, id);
      const concurrent = await Promise.all(Array.from({ length: 10 }, () => proxiedOnce.inspectContainer(id)));
      assert.ok(concurrent.every((c) => c.id === id));
      assert.equal(proxy.count('GET', /\/json$/), 35);
      assert.ok(proxy.requests.every((r) => r.status === 200 && r.fault === undefined));
    });
  });

  for (const via of ['direct', 'through the proxy'] as const) {
    describe(`streams (${via})`, () => {
      const client = (): Engine => (via === 'direct' ? engine : proxiedOnce);

      it('attach before start captures stdout and stderr separately', async (t) => {
        const run = runFor(t);
        const id = await createTestContainer(engine, run, { cmd: ['sh', '-c', 'echo out1; echo err1 >&2; echo out2; echo err2 >&2'] });
        const { stdout, stderr } = await client().attachContainer(id);
        const outputs = Promise.all([readAll(stdout), readAll(stderr)]);
        await client().startContainer(id);
        assert.deepEqual(await outputs, ['out1\nout2\n', 'err1\nerr2\n']);
        assert.equal((await client().waitContainer(id)).exitCode, 0);
      });

      it('attach with stdin pipes input to cat and closes its stdin when the input ends', async (t) => {
        const run = runFor(t);
        const id = await createTestContainer(engine, run, { cmd: ['cat'], stdin: true });
        const attached = await client().attachContainer(id, { stdin: true });
        assert.ok(attached.stdin, 'an attach with stdin has a stdin stream');
        const outputs = Promise.all([readAll(attached.stdout), readAll(attached.stderr)]);
        await client().startContainer(id);
        attached.stdin.write('hello\n');
        attached.stdin.end('world\n');
        assert.deepEqual(await outputs, ['hello\nworld\n', '']);
        assert.equal((await client().waitContainer(id)).exitCode, 0);
      });

      it('streamStats yields a sample with the memory limit of a running container', async (t) => {
        const run = runFor(t);
        const id = await startTestContainer(engine, run, { cmd: ['sleep', '60'], hostConfig: { Memory: 64 * MiB } });
        const controller = new AbortController();
        t.after(() => controller.abort());
        let sample;
        for await (const s of client().streamStats(id, { signal: controller.signal })) {
          sample = s;
          break;
        }
        assert.ok(sample, 'at least one sample');
        assert.equal(sample.memoryLimitBytes, 64 * MiB);
        assert.ok(sample.memoryBytes > 0 && sample.memoryBytes < 64 * MiB);
        assert.ok(sample.at instanceof Date && !Number.isNaN(sample.at.getTime()));
        assert.ok(sample.pids >= 1);
      });

      it('streamStats ends when the caller aborts', async (t) => {
        const run = runFor(t);
        const id = await startTestContainer(engine, run, { cmd: ['sleep', '60'] });
        const controller = new AbortController();
        let samples = 0;
        for await (const _sample of client().streamStats(id, { signal: controller.signal })) {
          samples++;
          controller.abort();
        }
        assert.equal(samples, 1);
      });

      it('exec runs a command and returns its exit code and output', async (t) => {
        const run = runFor(t);
        const id = await startTestContainer(engine, run, { cmd: ['sleep', '60'] });
        const session = await client().exec(id, { cmd: ['sh', '-c', 'echo inside; echo oops >&2; exit 5'] });
        assert.match(session.id, /^[0-9a-f]{64}$/);
        const [out, err] = await Promise.all([readAll(session.stdout), readAll(session.stderr)]);
        assert.equal(out, 'inside\n');
        assert.equal(err, 'oops\n');
        assert.equal(await session.exitCode(), 5);
      });

      it('exec with stdin pipes input to the command', async (t) => {
        const run = runFor(t);
        const id = await startTestContainer(engine, run, { cmd: ['sleep', '60'] });
        const session = await client().exec(id, { cmd: ['sh', '-c', 'wc -c'], stdin: true });
        assert.ok(session.stdin);
        const output = Promise.all([readAll(session.stdout), readAll(session.stderr)]);
        session.stdin.end('12345');
        const [out] = await output;
        assert.equal(out.trim(), '5');
        assert.equal(await session.exitCode(), 0);
      });
    });
  }
});
