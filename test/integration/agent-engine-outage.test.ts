import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import type { Logger } from '../../src/common/logger.js';
import { buildAgent, createAgent, type AgentRuntime } from '../../src/agent/agent.js';
import { AgentClient } from '../../src/agent/client.js';
import type { AgentConfigInput, ConfigSources } from '../../src/agent/config.js';
import { serveAgent, type ServingAgent } from '../../src/agent/http/serve.js';
import { RECONCILE_EVENTS_CHANNEL } from '../../src/reconcile/index.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { testHost } from '../support/agent.js';

const engine = testEngine();
const run = testRun(engine);

/** Every log line as level and message, so a test can count what the agent said about an outage. */
function recordingLogger(): Logger & { lines: Array<{ level: string; message: string; meta: Record<string, unknown> }> } {
  const lines: Array<{ level: string; message: string; meta: Record<string, unknown> }> = [];
  const at = (level: string) => (meta: Record<string, unknown>, message: string): void => void lines.push({ level, message, meta });
  return { lines, debug: () => undefined, info: at('info'), warn: at('warn'), error: at('error') };
}

/** An agent on `dataDir` whose engine is reached through `proxy`. */
function throughProxy(dataDir: string, proxy: FaultProxy, flags: Omit<AgentConfigInput, 'dataDir' | 'socketPath' | 'engine'> = {}): ConfigSources {
  return {
    flags: { dataDir, socketPath: path.join(dataDir, 'agent.sock'), engine: { socket: proxy.socketPath }, ...flags },
    host: testHost(dataDir),
  };
}

/** Ends what a test made, in order: the agent's tasks, its API, the agent, the proxy, containers, files. */
async function tearDown(parts: { runtime: AgentRuntime; serving: ServingAgent; proxy: FaultProxy; dataDir: string }): Promise<void> {
  parts.proxy.refuseAll = false;
  await parts.runtime.supervisor.idle();
  await parts.serving.close();
  await parts.runtime.close();
  await parts.proxy.close();
  await run.cleanup();
  await rm(parts.dataDir, { recursive: true, force: true });
}

describe('the agent outlives an engine that stops answering', { skip: await requireEngine() }, () => {
  let proxy: FaultProxy;
  let dataDir: string;
  let runtime: AgentRuntime;
  let serving: ServingAgent;
  let client: AgentClient;
  const logger = recordingLogger();
  const paused = (): number => logger.lines.filter((l) => /sweeps paused/.test(l.message)).length;

  before(async () => {
    proxy = await FaultProxy.start();
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-outage-'));
    runtime = await createAgent(throughProxy(dataDir, proxy, { reconcile: { enabled: true, period: '1s', creationGrace: '1s' } }), logger);
    serving = await serveAgent(runtime, { processMetrics: false });
    client = AgentClient.connect({ host: `unix://${serving.socketPath}`, token: runtime.token });
  });

  after(() => tearDown({ runtime, serving, proxy, dataDir }));

  test('reconciler sweeps pause with one log line, the API keeps answering, and work resumes when the engine is back', async () => {
    // The first sweep runs once recovery had its chance; from then on the engine is reached every period.
    await pollUntil('a first reconciler sweep', () => (proxy.count('GET', /\/containers\/json/) > 0 ? true : undefined), { timeoutMs: 15_000 });

    proxy.refuseAll = true;
    proxy.dropOpenConnections();
    // Sweeps that did not sweep (the engine failed them, or its health check), as the reconciler publishes them.
    let missed = 0;
    const onSweep = (message: unknown): void => {
      const event = message as { type?: string; outcome?: { kind?: string } };
      if (event.type === 'sweep' && event.outcome?.kind !== 'swept') missed++;
    };
    RECONCILE_EVENTS_CHANNEL.subscribe(onSweep);
    try {
      await pollUntil('sweeps to meet the unreachable engine', () => (missed >= 3 && paused() === 1 ? true : undefined), { timeoutMs: 30_000 });
    } finally {
      RECONCILE_EVENTS_CHANNEL.unsubscribe(onSweep);
    }
    const down = await client.health();
    assert.deepEqual({ agent: down.agent, engine: down.engine, code: down.engineError?.code }, { agent: 'ok', engine: 'unavailable', code: 'BERTH_ENGINE_UNAVAILABLE' });
    assert.equal((await client.list()).length, 0, 'the API answers from the store while the engine is down');
    assert.equal(paused(), 1, 'the outage is logged once, not every period');

    proxy.refuseAll = false;
    const resumed = await pollUntil('the sweeps to resume', () => logger.lines.find((l) => /sweeps resumed/.test(l.message)), { timeoutMs: 30_000 });
    assert.ok(Number(resumed.meta.sweepsMissed) >= 2, `several sweeps were missed and counted: ${JSON.stringify(resumed.meta)}`);
    assert.equal(paused(), 1);
    assert.deepEqual(await client.health(), { agent: 'ok', engine: 'ok' });

    const task = await client.submit({ spec: { image: TEST_IMAGE, command: ['sh', '-c', 'exit 7'], labels: { ...run.labels } } });
    const ended = await pollUntil('the task to end', async () => {
      const view = await client.get(task.id);
      return view.state === 'exited' || view.state === 'removed' ? view : undefined;
    }, { timeoutMs: 60_000 });
    assert.equal(ended.exitCode, 7);
  });
});

describe('an agent started while the engine does not answer', { skip: await requireEngine() }, () => {
  test('listens at once, answers health and reads, refuses work with 503 until the engine answers, then recovers and runs tasks', async () => {
    const proxy = await FaultProxy.start();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-wedged-start-'));
    const logger = recordingLogger();
    proxy.refuseAll = true;
    const runtime = await buildAgent(throughProxy(dataDir, proxy), logger);
    const serving = await serveAgent(runtime, { processMetrics: false });
    const client = AgentClient.connect({ host: `unix://${serving.socketPath}`, token: runtime.token });
    const starting = runtime.start();
    try {
      // The start waits for the engine: several attempts, one log line.
      await pollUntil('the start to meet the unreachable engine', () => (proxy.refusedConnections >= 3 ? true : undefined), { timeoutMs: 30_000 });
      assert.equal(runtime.started, false);
      const down = await client.health();
      assert.deepEqual({ agent: down.agent, engine: down.engine, code: down.engineError?.code }, { agent: 'starting', engine: 'unavailable', code: 'BERTH_ENGINE_UNAVAILABLE' });
      assert.deepEqual(await client.list(), []);
      const refusedWork = (error: unknown): boolean => isBerthError(error, 'BERTH_AGENT_UNAVAILABLE') && error.context.status === 503 && /starting/.test(error.message);
      await assert.rejects(client.submit({ spec: { image: TEST_IMAGE, command: ['true'], labels: { ...run.labels } } }), refusedWork);
      await assert.rejects(client.prune({ dryRun: true }), refusedWork);
      assert.equal(logger.lines.filter((l) => /engine does not answer/.test(l.message)).length, 1);

      proxy.refuseAll = false;
      await starting;
      assert.equal(runtime.started, true);
      assert.ok(logger.lines.some((l) => l.message === 'recovered tasks'));
      assert.deepEqual(await client.health(), { agent: 'ok', engine: 'ok' });
      const task = await client.submit({ spec: { image: TEST_IMAGE, command: ['sh', '-c', 'exit 4'], labels: { ...run.labels } } });
      const ended = await pollUntil('the task to end', async () => {
        const view = await client.get(task.id);
        return view.state === 'exited' || view.state === 'removed' ? view : undefined;
      }, { timeoutMs: 60_000 });
      assert.equal(ended.exitCode, 4);
    } finally {
      proxy.refuseAll = false;
      await starting.catch(() => undefined);
      client.close();
      await tearDown({ runtime, serving, proxy, dataDir });
    }
  });

  test('a stop while the start waits for the engine ends the wait and closes cleanly', async () => {
    const proxy = await FaultProxy.start();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-wedged-stop-'));
    proxy.refuseAll = true;
    const runtime = await buildAgent(throughProxy(dataDir, proxy), recordingLogger());
    const starting = runtime.start();
    try {
      await pollUntil('the start to meet the unreachable engine', () => (proxy.refusedConnections >= 1 ? true : undefined), { timeoutMs: 30_000 });
      await runtime.close();
      await starting;
      assert.equal(runtime.started, false, 'nothing was recovered or started');
    } finally {
      await proxy.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
