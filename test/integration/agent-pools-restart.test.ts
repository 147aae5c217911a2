import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { LABELS, ROLES } from '../../src/common/labels.js';

import { agentClientOf, agentTestFile, openAgentStoreIn, waitForTaskState, writeAgentConfig } from '../support/agent.js';
import type { AgentClient } from '../../src/agent/client.js';
import { pollUntil, requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';

/**
 * An agent killed (SIGKILL) with warm tasks in flight and idle pool containers, then restarted on
 * the same data directory: a warm task whose exec ended while the agent was down is recorded with
 * its exit code; one still running cannot have its output followed again, so it ends `lost` with
 * that reason (its container killed); the earlier run's idle pool containers are removed and the
 * pool refills; nothing is left behind (checked by labels) once the agent stops.
 */

const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);
const skip = await requireEngine();

const POOL = 'gated';
const POOL_SIZE = 2;
const ENDED = ['exited', 'lost'] as const;

/** This run's pool containers on the engine (every state), by id, with their state. */
async function poolContainers(): Promise<Map<string, string>> {
  const rows = await engine.listContainers({ all: true, labels: [run.labelFilter, `${LABELS.role}=${ROLES.pool}`] });
  return new Map(rows.map((row) => [row.id, row.state]));
}

/**
 * Waits until `count` running pool containers are idle (not `inUse`) and no other pool container is
 * there, and the agent counts them idle (their launchers run: a container runs before it is offered).
 */
async function idleFilled(client: AgentClient, count: number, inUse: ReadonlySet<string> = new Set()): Promise<Set<string>> {
  return pollUntil(
    `${count} idle pool containers`,
    async () => {
      const containers = await poolContainers();
      const idle = [...containers].filter(([id, state]) => state === 'running' && !inUse.has(id)).map(([id]) => id);
      if (idle.length !== count || containers.size !== count + inUse.size) return undefined;
      const counted = new RegExp(`^berth_pool_containers\\{pool="${POOL}",state="idle"\\} (\\d+)$`, 'm').exec(await client.metrics());
      return Number(counted?.[1]) === count ? new Set(idle) : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 100 },
  );
}

describe('agent warm pools across an agent crash', { skip }, () => {
  test('every warm task ends right, the earlier idle containers go, the pool refills and nothing leaks', async () => {
    const dataDir = await dirs.make('berth-pools-crash-');
    const gateDir = await dirs.make('berth-pools-gate-');
    const spec = {
      image: TEST_IMAGE,
      labels: { ...run.labels },
      resources: { memory: '64m', cpuMilli: 100 },
      mounts: [{ type: 'bind' as const, source: gateDir, target: '/gate', readOnly: true }],
    };
    const config = await writeAgentConfig(
      dataDir,
      JSON.stringify({ agentId: `pools-crash-${run.id}`, policy: { allowedBindSources: [gateDir] }, pools: [{ name: POOL, size: POOL_SIZE, spec }] }),
    );
    const first = await agents.start(dataDir, ['--config', config]);
    const client = await agentClientOf(first);
    await idleFilled(client, POOL_SIZE);

    const endsWhileDown = `ends-${run.id}`;
    const stillRunning = `runs-${run.id}`;
    await client.submit({ id: endsWhileDown, spec: { ...spec, command: ['sh', '-c', 'echo started; while [ ! -e /gate/finish ]; do sleep 0.05; done; exit 7'] } });
    await client.submit({ id: stillRunning, spec: { ...spec, command: ['sh', '-c', 'echo started; while [ ! -e /gate/never ]; do sleep 0.05; done'] } });
    const inUse = new Set<string>();
    for (const id of [endsWhileDown, stillRunning]) {
      const task = await waitForTaskState(client, id, ['running']);
      assert.deepEqual(task.start, { path: 'warm', pool: POOL });
      inUse.add(task.containerId!);
      // Its first line is in its files before the crash.
      await pollUntil(`${id}'s first line`, async () => {
        for await (const record of client.logs(id)) if (record.text === 'started\n') return true;
        return undefined;
      });
    }
    // The pool refilled beside the two taken: idle containers are there when the agent dies.
    const idleBefore = await idleFilled(client, POOL_SIZE, inUse);
    client.close();
    await first.stop('SIGKILL');

    // While the agent is down, one exec ends with 7.
    const store = openAgentStoreIn(dataDir);
    const recorded = store.tasks.get(endsWhileDown);
    store.close();
    assert.equal(recorded?.start?.path, 'warm');
    const execId = recorded.start.path === 'warm' ? recorded.start.execId : '';
    await writeFile(path.join(gateDir, 'finish'), '');
    // (It writes nothing after the crash: the agent that read its streams is gone.)
    const exec = await pollUntil('the exec to end while the agent is down', async () => {
      const inspected = await engine.inspectExec(execId);
      return inspected.running ? undefined : inspected;
    });
    assert.equal(exec.exitCode, 7);

    const second = await agents.start(dataDir, ['--config', config]);
    const again = await agentClientOf(second);
    const ended = await waitForTaskState(again, endsWhileDown, ENDED);
    assert.equal(ended.state, 'exited');
    assert.equal(ended.exitCode, 7);
    assert.deepEqual(ended.endState, { kind: 'failed', exitCode: 7 });
    const texts: string[] = [];
    for await (const record of again.logs(endsWhileDown)) texts.push(record.text);
    assert.equal(texts[0], 'started\n', 'the output written before the crash is kept');

    const lost = await waitForTaskState(again, stillRunning, ENDED);
    assert.equal(lost.state, 'lost');
    assert.equal(lost.endState?.kind, 'lost');
    assert.match(lost.endState?.kind === 'lost' ? lost.endState.reason : '', /output cannot be followed/);

    // The tasks' containers are removed with their ends, the earlier idle ones by the start; the pool refills.
    const refilled = await idleFilled(again, POOL_SIZE);
    for (const id of [...idleBefore, ...inUse]) assert.ok(!refilled.has(id), `container ${id} of the earlier run is gone`);
    const metrics = await again.metrics();
    assert.match(metrics, new RegExp(`^berth_pool_containers\\{pool="${POOL}",state="idle"\\} ${POOL_SIZE}$`, 'm'));

    again.close();
    assert.equal(await second.stop('SIGTERM'), 0);
    assert.deepEqual(await run.leftovers(), [], 'no container of the run is left');
  });
});
