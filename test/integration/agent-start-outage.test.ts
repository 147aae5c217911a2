import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { LABELS } from '../../src/common/labels.js';
import { agentTestFile, serveAgentIn, taskOutput, withAgentBehindProxy, type ServedAgent } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';
import type { FaultProxy } from '../support/fault-proxy.js';

/**
 * A start that fails because the engine did not answer waits for it, and a create that was in
 * flight and lands after berth gave up does not make the task run twice: every create of the task
 * is pushed past the agent's write deadline and still reaches the engine later.
 */

const engine = testEngine();
const { run, dirs } = agentTestFile(engine);
const skip = await requireEngine();

/** An agent whose engine (the proxy) must answer a write within 1 s and a read within 2 s, and whose tasks may bind `sideDir`. */
const startLateAgent = (proxy: FaultProxy, dataDir: string, sideDir: string): Promise<ServedAgent> =>
  serveAgentIn(dataDir, proxy.socketPath, { engineDeadlines: { readTimeout: '2s', writeTimeout: '1s' }, policy: { allowedBindSources: [sideDir] } });

describe('a start whose creates never answer in time', { skip }, () => {
  test('waits instead of failing, and runs exactly once though the timed-out creates land late', () =>
    withAgentBehindProxy(dirs, 'late', startLateAgent, async ({ proxy, bindDir: sideDir, startAgent }) => {
      const { runtime, client } = await startAgent();
      // The creates the driver tries for its first start (up to five) answer after the deadline, and land.
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
      // The first create timed out; a later try finds the container it made once it landed (and
      // adopts it), or the start waits out its outage: either way the task runs once.
      assert.ok(late.fired >= 1, 'a create timed out');
      assert.ok(proxy.count('POST', /^\/containers\/create$/) >= late.fired);
      assert.deepEqual({ endState: view.endState, exitCode: view.exitCode }, { endState: { kind: 'success', exitCode: 0 }, exitCode: 0 });
      assert.equal(await readFile(path.join(sideDir, id), 'utf8'), 'ran\n', 'the task ran exactly once');
      assert.deepEqual(await taskOutput(client, id), ['hello\n']);
      await runtime.supervisor.idle();
      await runtime.driver.settled();
      assert.deepEqual(await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] }), [], 'no container of the task is left');
    }));
});
