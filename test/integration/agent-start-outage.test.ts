import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { silentLogger } from '../../src/common/logger.js';
import { LABELS } from '../../src/common/labels.js';
import { createAgent } from '../../src/agent/agent.js';
import { AgentClient } from '../../src/agent/client.js';
import { serveAgent } from '../../src/agent/http/serve.js';
import { Engine } from '../../src/engine/engine.js';
import { tempDirs, testHost } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun } from '../support/engine.js';
import { FaultProxy } from '../support/fault-proxy.js';

/**
 * A start that fails because the engine did not answer waits for it, and a create that was in
 * flight and lands after berth gave up does not make the task run twice: every create of the task
 * is pushed past the agent's write deadline and still reaches the engine later.
 */

const engine = new Engine();
const run = testRun(engine);
const dirs = tempDirs();
const skip = await requireEngine();

after(async () => {
  await run.cleanup();
  await dirs.removeAll();
});

describe('a start whose creates never answer in time', { skip }, () => {
  test('waits instead of failing, and runs exactly once though the timed-out creates land late', async () => {
    const proxy = await FaultProxy.start();
    const dataDir = await dirs.make('berth-late-');
    const sideDir = await dirs.make('berth-late-side-');
    const runtime = await createAgent(
      {
        flags: {
          dataDir,
          socketPath: path.join(dataDir, 'agent.sock'),
          engine: { socket: proxy.socketPath, readTimeout: '2s', writeTimeout: '1s' },
          policy: { allowedBindSources: [sideDir] },
        },
        host: testHost(dataDir),
      },
      silentLogger,
    );
    const serving = await serveAgent(runtime, { processMetrics: false });
    const client = AgentClient.connect({ host: `unix://${serving.socketPath}`, token: runtime.token });
    try {
      // Every create the driver tries for its first start (five attempts) answers after the deadline, and lands.
      const late = proxy.addRule({ method: 'POST', path: '/containers/create', fault: { kind: 'delay', delayMs: 2500, forwardIfClientGone: true }, times: 5 });
      const id = `late-create-${process.pid}`;
      const spec = {
        image: TEST_IMAGE,
        command: ['sh', '-c', `echo ran >> /side/${id}; echo hello`],
        mounts: [{ type: 'bind' as const, source: sideDir, target: '/side' }],
        labels: { ...run.labels },
      };
      assert.equal((await client.submitTask({ id, spec })).created, true);
      const view = await pollUntil('the task to end', async () => {
        const current = await client.get(id);
        return current.state === 'exited' || current.state === 'lost' ? current : undefined;
      }, { timeoutMs: 120_000, intervalMs: 250 });
      assert.equal(late.fired, 5, 'every create of the first start timed out');
      assert.ok(proxy.count('POST', /^\/containers\/create$/) >= 5);
      assert.deepEqual({ endState: view.endState, exitCode: view.exitCode }, { endState: { kind: 'success', exitCode: 0 }, exitCode: 0 });
      assert.equal(await readFile(path.join(sideDir, id), 'utf8'), 'ran\n', 'the task ran exactly once');
      const lines = [];
      for await (const record of client.logs(id)) lines.push(record.text);
      assert.deepEqual(lines, ['hello\n']);
      await runtime.supervisor.idle();
      await runtime.driver.settled();
      assert.deepEqual(await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] }), [], 'no container of the task is left');
    } finally {
      client.close();
      await serving.close();
      await runtime.close();
      await proxy.close();
    }
  });
});
