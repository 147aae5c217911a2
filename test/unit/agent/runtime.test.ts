/**
 * The agent runtime's own life, without an engine: it is disposable like a task handle, its close
 * is one close, and a start that comes after it leaves it closed.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildAgent, type AgentRuntime } from '../../../src/agent/agent.js';
import type { ConfigSources } from '../../../src/agent/config.js';
import { isBerthError } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import { testHost } from '../../support/agent.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'berth-runtime-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let counter = 0;
/** An agent whose engine socket answers nothing: nothing here may reach it. */
function sources(): ConfigSources {
  const dataDir = path.join(dir, `agent-${++counter}`);
  return { flags: { dataDir, socketPath: path.join(dataDir, 'agent.sock'), engine: { socket: path.join(dir, 'no-engine.sock') } }, host: testHost(dataDir) };
}

const refusedAsClosed = (error: unknown): boolean => isBerthError(error, 'BERTH_AGENT_UNAVAILABLE') && /shutting down/.test(error.message);

describe('the agent runtime', () => {
  test('is disposable: `await using` closes it, so it takes no work and its store is closed', async () => {
    let outside: AgentRuntime | undefined;
    {
      await using agent = await buildAgent(sources(), silentLogger);
      outside = agent;
      assert.equal(agent.store.isOpen, true);
    }
    assert.equal(outside.store.isOpen, false);
    assert.equal(outside.started, false);
    assert.throws(() => outside.supervisor.submit({ id: 'after-close', spec: { image: 'busybox' } }), refusedAsClosed);
  });

  test('closes once: a close after the dispose (or a second close) is the same close', async () => {
    const agent = await buildAgent(sources(), silentLogger);
    const first = agent.close();
    assert.equal(agent.close(), first);
    await first;
    await agent[Symbol.asyncDispose]();
    assert.equal(agent.store.isOpen, false);
  });

  test('a start that comes after the close leaves it closed and recovers nothing', async () => {
    const agent = await buildAgent(sources(), silentLogger);
    await agent.close();
    await agent.start();
    assert.equal(agent.started, false);
    assert.throws(() => agent.supervisor.submit({ id: 'late', spec: { image: 'busybox' } }), refusedAsClosed);
  });
});
