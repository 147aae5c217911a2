import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import type { ErrorCode } from '../../src/common/errors.js';
import { containerNameForTask, LABELS } from '../../src/common/labels.js';
import type { Logger } from '../../src/common/logger.js';
import { agentTestFile, serveAgentIn, taskOutput, withAgentBehindProxy, type ServedAgent } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';
import type { FaultProxy } from '../support/fault-proxy.js';

/**
 * An engine outage is not the end of a task: an agent restarted while the engine fails the inspect
 * of a running task's container follows that task once the engine answers, and a removal of an
 * ended task's container that the engine fails is tried again until the container is gone.
 */

const engine = testEngine();
const { run, dirs } = agentTestFile(engine);
const skip = await requireEngine();

type LogLine = { level: string; message: string; meta: Record<string, unknown> };

/** Every log line as level, message and metadata. */
function recordingLogger(): Logger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: string) => (meta: Record<string, unknown>, message: string): void => void lines.push({ level, message, meta });
  return { lines, debug: () => undefined, info: at('info'), warn: at('warn'), error: at('error') };
}

type Agent = ServedAgent & { logger: ReturnType<typeof recordingLogger>; errors: ErrorCode[] };

/** An agent on `dataDir` behind `proxy` that may bind `gateDir`, recording its log lines and the error codes it counts. */
async function startRecordingAgent(proxy: FaultProxy, dataDir: string, gateDir: string): Promise<Agent> {
  const logger = recordingLogger();
  const errors: ErrorCode[] = [];
  const agent = await serveAgentIn(dataDir, proxy.socketPath, { policy: { allowedBindSources: [gateDir] } }, { logger, onError: (code) => errors.push(code) });
  return { ...agent, logger, errors };
}

const gated = (gate: string): string => `while [ ! -e /gate/${gate} ]; do sleep 0.05; done`;

describe('an agent restarted while the engine fails the inspect of a running task\'s container', { skip }, () => {
  test('keeps the task running with its share, follows it once the engine answers, and records its real end with its output once', () =>
    withAgentBehindProxy(dirs, 'recover-outage', startRecordingAgent, async ({ proxy, bindDir: gateDir, startAgent }) => {
      const id = `recover-outage-${process.pid}`;
      let agent = await startAgent();
      await agent.client.submit({
        id,
        spec: {
          image: TEST_IMAGE,
          command: ['sh', '-c', `echo one; ${gated('finish')}; echo two; exit 3`],
          mounts: [{ type: 'bind', source: gateDir, target: '/gate', readOnly: true }],
          labels: { ...run.labels },
        },
      });
      await pollUntil('the task to print its first line', async () => ((await taskOutput(agent.client, id)).length === 1 ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
      // The agent goes; its task's container keeps running.
      await agent.close();

      // The inspect that recovery makes (by the container's name) answers 500 until the test lets it through.
      const inspectPath = new RegExp(`^/containers/${containerNameForTask({ taskId: id, ownerId: agent.runtime.agentId })}/json$`);
      const failing = proxy.addRule({ method: 'GET', path: inspectPath, fault: { kind: 'error500Before' } });
      agent = await startAgent();
      const recovered = agent.logger.lines.find((l) => l.message === 'recovered tasks');
      assert.deepEqual({ lost: recovered?.meta.lost, waiting: recovered?.meta.waiting }, { lost: 0, waiting: 1 });
      // Several attempts meet the failing engine, and the task stays as it was, holding its share.
      await pollUntil('recovery to try again', () => (failing.fired >= 3 ? true : undefined), { timeoutMs: 30_000 });
      assert.equal((await agent.client.get(id)).state, 'running');
      assert.deepEqual(agent.runtime.admission.positionOf(id), { state: 'admitted' });

      // Then dropped connections (one whole call, with the engine's own read retries) and the engine answers.
      failing.remove();
      const dropping = proxy.addRule({ method: 'GET', path: inspectPath, fault: { kind: 'drop' }, times: 3 });
      await pollUntil('the task to be followed again', () => agent.logger.lines.find((l) => l.message === 'the engine answers; following the task again'), { timeoutMs: 60_000 });
      assert.equal(dropping.fired, 3);
      assert.equal((await agent.client.get(id)).state, 'running', 'followed, still running');

      await writeFile(path.join(gateDir, 'finish'), '');
      const ended = await pollUntil('the task to end', async () => {
        const view = await agent.client.get(id);
        return view.state === 'running' ? undefined : view;
      }, { timeoutMs: 60_000, intervalMs: 100 });
      assert.deepEqual({ state: ended.state, endState: ended.endState }, { state: 'exited', endState: { kind: 'failed', exitCode: 3 } });
      assert.deepEqual(await taskOutput(agent.client, id), ['one\n', 'two\n'], 'every line exactly once');
      assert.equal(agent.logger.lines.filter((l) => /could not ask the engine about the task's container/.test(l.message)).length, 1, 'the outage is logged once');
      assert.deepEqual(agent.errors, ['BERTH_ENGINE_SERVER_ERROR'], 'and counted once');
      await agent.runtime.supervisor.idle();
      await pollUntil('the container to be removed', async () => ((await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] })).length === 0 ? true : undefined), { timeoutMs: 30_000 });
      assert.equal(agent.runtime.admission.positionOf(id), undefined, 'its share is free again');
    }));
});

describe('an agent restarted while the engine fails the inspect of a container that is then removed', { skip }, () => {
  test('records the task as lost only once the engine answers that its container is gone', () =>
    withAgentBehindProxy(dirs, 'recover-gone', startRecordingAgent, async ({ proxy, bindDir: gateDir, startAgent }) => {
      const id = `recover-gone-${process.pid}`;
      let agent = await startAgent();
      await agent.client.submit({ id, spec: { image: TEST_IMAGE, command: ['sh', '-c', `echo one; ${gated('never')}`], mounts: [{ type: 'bind', source: gateDir, target: '/gate', readOnly: true }], labels: { ...run.labels } } });
      await pollUntil('the task to print its first line', async () => ((await taskOutput(agent.client, id)).length === 1 ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
      const containerId = (await agent.client.get(id)).containerId;
      assert.ok(containerId);
      await agent.close();

      const failing = proxy.addRule({ method: 'GET', path: new RegExp(`^/containers/${containerNameForTask({ taskId: id, ownerId: agent.runtime.agentId })}/json$`), fault: { kind: 'error503Before' } });
      agent = await startAgent();
      await pollUntil('recovery to try again', () => (failing.fired >= 2 ? true : undefined), { timeoutMs: 30_000 });
      assert.equal((await agent.client.get(id)).state, 'running', 'an outage does not make the task lost');
      // Someone removes the container while the engine fails the agent's inspects.
      await engine.removeContainer(containerId);
      failing.remove();
      const ended = await pollUntil('the task to end', async () => {
        const view = await agent.client.get(id);
        return view.state === 'running' ? undefined : view;
      }, { timeoutMs: 60_000, intervalMs: 100 });
      assert.deepEqual({ state: ended.state, endState: ended.endState }, { state: 'lost', endState: { kind: 'lost', reason: 'its container was gone when the agent restarted' } });
      assert.ok(!agent.runtime.store.images.holders().some((h) => h.taskId === id), 'its image is released');
      assert.equal(agent.runtime.admission.positionOf(id), undefined, 'its share is free again');
    }));
});

describe('a removal of an ended task\'s container that the engine fails', { skip }, () => {
  test('is tried again in the background until the container is gone, and only then is the image released', () =>
    withAgentBehindProxy(dirs, 'removal-retry', startRecordingAgent, async ({ proxy, startAgent }) => {
      const agent = await startAgent();
      const failing = proxy.addRule({ method: 'DELETE', path: /^\/containers\/[0-9a-f]{64}$/, fault: { kind: 'error500Before' } });
      const task = await agent.client.submit({ spec: { image: TEST_IMAGE, command: ['sh', '-c', 'echo done; exit 4'], labels: { ...run.labels } } });
      const ended = await pollUntil('the task to end', async () => {
        const view = await agent.client.get(task.id);
        return view.state === 'exited' ? view : undefined;
      }, { timeoutMs: 60_000, intervalMs: 100 });
      assert.deepEqual(ended.endState, { kind: 'failed', exitCode: 4 });
      await agent.runtime.supervisor.idle();
      const firstFailures = failing.fired;
      assert.ok(firstFailures > 0, 'the removal failed');
      // Tried again in the background while the engine keeps failing it.
      await pollUntil('the removal to be tried again', () => (failing.fired > firstFailures ? true : undefined), { timeoutMs: 30_000 });
      const containers = await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${task.id}`] });
      assert.equal(containers.length, 1, 'the container is still there');
      assert.ok(agent.runtime.store.images.holders().some((h) => h.taskId === task.id), 'the task still holds its image');

      failing.remove();
      await agent.runtime.supervisor.removalsSettled();
      assert.deepEqual(await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${task.id}`] }), [], 'the container is removed once the engine answers');
      assert.ok(!agent.runtime.store.images.holders().some((h) => h.taskId === task.id), 'the image is released');
      assert.deepEqual(await taskOutput(agent.client, task.id), ['done\n']);
      assert.equal(agent.logger.lines.filter((l) => /could not remove the container of an ended task/.test(l.message)).length, 1, 'logged once');
      assert.ok(agent.logger.lines.some((l) => l.message === 'removed the container of an ended task'));
      assert.deepEqual(agent.errors, ['BERTH_ENGINE_SERVER_ERROR'], 'counted once');
    }));
});

describe('a task whose followed log stream stalls', { skip }, () => {
  test('still has its end recorded, with its output read again from the cursor exactly once', () =>
    withAgentBehindProxy(dirs, 'log-stall', startRecordingAgent, async ({ proxy, startAgent }) => {
      const agent = await startAgent();
      // The first log read (the pump's follow) gets its head and then nothing, and never ends.
      const stalled = proxy.addRule({ method: 'GET', path: /^\/containers\/[^/]+\/logs$/, fault: { kind: 'stall' }, times: 1 });
      const task = await agent.client.submit({ spec: { image: TEST_IMAGE, command: ['sh', '-c', 'echo a; echo b; exit 2'], labels: { ...run.labels } } });
      const ended = await pollUntil('the task to end', async () => {
        const view = await agent.client.get(task.id);
        return view.state === 'exited' ? view : undefined;
      }, { timeoutMs: 60_000, intervalMs: 100 });
      assert.equal(stalled.fired, 1);
      assert.deepEqual(ended.endState, { kind: 'failed', exitCode: 2 });
      assert.deepEqual(await taskOutput(agent.client, task.id), ['a\n', 'b\n']);
      await agent.runtime.supervisor.idle();
    }));
});
