import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Logger } from '../../src/common/logger.js';
import { createAgent, type AgentRuntime } from '../../src/agent/agent.js';
import { AgentClient, type TaskView } from '../../src/agent/client.js';
import type { AgentConfigInput, ConfigSources } from '../../src/agent/config.js';
import { serveAgent, type ServingAgent } from '../../src/agent/http/serve.js';
import { LABELS } from '../../src/common/labels.js';
import { pollUntil, requireEngine, TEST_IMAGE } from '../support/engine.js';
import { requireOwnEngine, startOwnEngine, type OwnEngine } from '../support/own-engine.js';
import { testHost } from '../support/agent.js';

/**
 * A wedged engine is an outage, not a failure: dockerd paused with SIGSTOP (it holds every
 * connection and answers nothing) on an engine of the test's own, under an agent whose engine
 * deadlines are short, so that the pause outlasts every deadline the agent uses.
 */

const ENGINE_TIMEOUTS = { readTimeout: '1s', writeTimeout: '2s' } as const;
const WRITE_TIMEOUT_MS = 2000;
/**
 * A probe's own bound: above health.engineTimeout (1s), below what a ping retried inside the probe
 * would take (3 × 1s and the backoff between), which is what a probe saw before.
 */
const PROBE_TIMEOUT_MS = 2500;
const CLIENT_DEADLINE_MS = 10_000;

async function skipReason(): Promise<false | string> {
  const engine = await requireEngine();
  if (engine) return engine;
  return requireOwnEngine();
}
const skip = await skipReason();

function collectingLogger(): Logger & { messages: string[] } {
  const messages: string[] = [];
  const at = (meta: Record<string, unknown>, message: string): void => void messages.push(`${message} ${JSON.stringify(meta)}`);
  return { messages, debug: () => undefined, info: at, warn: at, error: at };
}

function sources(dataDir: string, own: OwnEngine, extra: Omit<AgentConfigInput, 'dataDir' | 'socketPath' | 'engine'> = {}): ConfigSources {
  return {
    flags: { dataDir, socketPath: path.join(dataDir, 'agent.sock'), engine: { socket: own.socketPath, ...ENGINE_TIMEOUTS }, health: { engineTimeout: '1s' }, ...extra },
    host: testHost(dataDir),
  };
}

/** GET /healthz with a bound of the probe's own: resolves with the status and body, rejects when the agent does not answer in time. */
function probe(socketPath: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/healthz', timeout: PROBE_TIMEOUT_MS }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
    });
    req.once('timeout', () => req.destroy(new Error(`/healthz did not answer within the probe's ${PROBE_TIMEOUT_MS} ms`)));
    req.once('error', reject);
    req.end();
  });
}

interface Agent {
  runtime: AgentRuntime;
  serving: ServingAgent;
  client: AgentClient;
  dataDir: string;
  logger: ReturnType<typeof collectingLogger>;
}

async function startAgent(own: OwnEngine, extra: Omit<AgentConfigInput, 'dataDir' | 'socketPath' | 'engine'> = {}): Promise<Agent> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-paused-'));
  const logger = collectingLogger();
  const runtime = await createAgent(sources(dataDir, own, extra), logger);
  const serving = await serveAgent(runtime, { processMetrics: false });
  const client = AgentClient.connect({ host: `unix://${serving.socketPath}`, token: runtime.token, deadlineMs: CLIENT_DEADLINE_MS });
  return { runtime, serving, client, dataDir, logger };
}

async function stopAgent(agent: Agent): Promise<void> {
  agent.client.close();
  await agent.serving.close();
  await agent.runtime.close();
  await rm(agent.dataDir, { recursive: true, force: true });
}

const ended = (view: TaskView): boolean => view.state === 'exited' || view.state === 'lost';

describe('a paused engine (SIGSTOP) is an outage, not a failure', { skip }, () => {
  let own: OwnEngine;

  before(async () => {
    own = await startOwnEngine('o1');
  });

  after(async () => {
    own?.resume();
    await own?.destroy();
  });

  test('health answers 503 within its deadline while the engine is paused, and tasks submitted during the pause run after it with their output', async () => {
    const agent = await startAgent(own);
    const { client, serving } = agent;
    let paused = false;
    try {
      assert.equal((await probe(serving.socketPath)).status, 200);
      own.pause();
      paused = true;
      const pausedAtMs = Date.now();

      // A probe with a bound of its own gets its answer, not a hang: one ping, never retried.
      const down = await probe(serving.socketPath);
      assert.equal(down.status, 503);
      assert.equal(down.body.engine, 'unavailable');
      assert.equal((down.body.engineError as { code?: string } | undefined)?.code, 'BERTH_ENGINE_TIMEOUT');

      const ids = [0, 1, 2].map((i) => `paused-${i}-${process.pid}`);
      for (const [i, id] of ids.entries()) {
        const outcome = await client.submitTask({ id, spec: { image: TEST_IMAGE, command: ['sh', '-c', `echo out-${i}; echo err-${i} >&2`] } });
        assert.equal(outcome.created, true);
        assert.equal(outcome.task.state, 'starting');
      }
      const stoppedId = `paused-stopped-${process.pid}`;
      await client.submitTask({ id: stoppedId, spec: { image: TEST_IMAGE, command: ['echo', 'never'] } });

      // Every start met the paused engine, timed out, and waits for it: none failed.
      await pollUntil('the starts to wait for the engine', async () => ((await probe(serving.socketPath)).body.tasksWaitingForEngine === 4 ? true : undefined), {
        timeoutMs: 60_000,
        intervalMs: 200,
      });
      // Held past the agent's engine write deadline (twice over), so no call of the agent is still within it.
      await pollUntil('the pause to outlast the engine write deadline', () => (Date.now() - pausedAtMs > 2 * WRITE_TIMEOUT_MS ? true : undefined), { timeoutMs: 30_000 });
      for (const id of ids) assert.equal((await client.get(id)).state, 'starting', `${id} still waits to start`);

      // A task that waits for the engine is cancelled at once by a stop, engine or not.
      const stopped = await client.stop(stoppedId);
      assert.equal(stopped.state, 'exited');
      assert.equal(stopped.endState?.kind, 'cancelled');
      const still = await probe(serving.socketPath);
      assert.equal(still.status, 503);
      assert.equal(still.body.tasksWaitingForEngine, 3);

      own.resume();
      paused = false;
      const views = await pollUntil(
        'the tasks submitted during the pause to end',
        async () => {
          const all = await Promise.all(ids.map((id) => client.get(id)));
          return all.every(ended) ? all : undefined;
        },
        { timeoutMs: 120_000, intervalMs: 200 },
      );
      for (const [i, view] of views.entries()) {
        assert.deepEqual({ state: view.state, endState: view.endState, exitCode: view.exitCode }, { state: 'exited', endState: { kind: 'success', exitCode: 0 }, exitCode: 0 }, view.id);
        const lines = [];
        for await (const record of client.logs(view.id)) lines.push(`${record.stream}:${record.text}`);
        assert.deepEqual(lines.sort(), [`stderr:err-${i}\n`, `stdout:out-${i}\n`], `${view.id} output, exactly once`);
      }
      const healthy = await probe(serving.socketPath);
      assert.deepEqual({ status: healthy.status, body: healthy.body }, { status: 200, body: { agent: 'ok', engine: 'ok' } });
      // Their containers are removed after their end; the cancelled task never had one.
      await agent.runtime.supervisor.idle();
      for (const id of [...ids, stoppedId]) {
        assert.deepEqual(await own.engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] }), [], `no container of ${id} is left`);
      }
    } finally {
      if (paused) own.resume();
      await stopAgent(agent);
    }
  });

  test('a task that waits longer than tasks.startOutageLimit ends failed 125, saying the engine was unreachable for that long', async () => {
    const agent = await startAgent(own, { tasks: { startOutageLimit: '3s' } });
    const { client, serving } = agent;
    let paused = false;
    try {
      own.pause();
      paused = true;
      const id = `outage-limit-${process.pid}`;
      await client.submitTask({ id, spec: { image: TEST_IMAGE, command: ['echo', 'late'] } });
      const view = await pollUntil('the task to end', async () => {
        const current = await client.get(id);
        return ended(current) ? current : undefined;
      }, { timeoutMs: 60_000, intervalMs: 200 });
      assert.equal(view.exitCode, 125);
      assert.equal(view.endState?.kind, 'failed');
      const reason = view.endState && 'reason' in view.endState ? String(view.endState.reason) : '';
      assert.match(reason, /^BERTH_ENGINE_(TIMEOUT|UNAVAILABLE): the engine was unreachable for \d+s while the task waited to start \(tasks\.startOutageLimit is 3s\)/);
      assert.equal((await probe(serving.socketPath)).status, 503);
    } finally {
      if (paused) own.resume();
      await stopAgent(agent);
    }
  });
});
