import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { AgentClient, type TaskView } from '../../src/agent/client.js';
import { isBerthError } from '../../src/common/errors.js';
import { LABELS } from '../../src/common/labels.js';
import type { StoredTaskSpec } from '../../src/state/tasks.js';
import { agentProcesses, berth, tempDirs, writeAgentConfig, type RunningAgent } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

/**
 * The agent killed (SIGKILL) immediately after it accepted submits, round after round: every
 * accepted task runs exactly once (each run appends a line to a file of its own on a bind-mounted
 * host directory, so a second run would show) and ends right, and a client retrying a submit after
 * the restart gets the same task. Also: submitting is idempotent (200 for the same spec, whatever
 * the key order, 409 for another), through the real API and the real CLI.
 */

const engine = testEngine();
const run = testRun(engine);
const agents = agentProcesses();
const dirs = tempDirs();
const skip = await requireEngine();

after(async () => {
  await agents.killAll();
  await run.cleanup();
  await dirs.removeAll();
});

interface Setup {
  dataDir: string;
  configFile: string;
  sideDir: string;
}

async function setUp(): Promise<Setup> {
  const dataDir = await dirs.make('berth-kill-');
  const sideDir = await dirs.make('berth-side-');
  const configFile = await writeAgentConfig(dataDir, `policy:\n  allowedBindSources: [${sideDir}]\n`);
  return { dataDir, configFile, sideDir };
}

async function connect(agent: RunningAgent): Promise<AgentClient> {
  const token = (await readFile(path.join(agent.dataDir, 'token'), 'utf8')).trim();
  return AgentClient.connect({ host: `unix://${agent.socketPath}`, token });
}

/** A task that leaves a trace of every run: one line appended to /side/<id> on the host. */
function sideEffectSpec(setup: Setup, id: string): StoredTaskSpec {
  return {
    image: TEST_IMAGE,
    command: ['sh', '-c', `echo ran >> /side/${id}; echo hello ${id}`],
    mounts: [{ type: 'bind', source: setup.sideDir, target: '/side' }],
    labels: { ...run.labels },
  };
}

describe('the agent killed right after it accepted submits', { skip }, () => {
  test('every accepted task runs exactly once and ends right, and a retried submit gets the same task, over several kill rounds', async () => {
    const setup = await setUp();
    const rounds = 4;
    const perRound = 3;
    const submitted = new Map<string, TaskView>();
    let previous: string[] = [];
    /** The client whose submits' agent died retries them: the same task, never a second one, and never lost. */
    const retryPrevious = async (client: AgentClient): Promise<void> => {
      for (const id of previous) {
        const again = await client.submitTask({ id, spec: sideEffectSpec(setup, id) });
        assert.equal(again.created, false, `${id}: a retry after the restart is not a new task`);
        assert.equal(again.task.id, id);
        assert.equal(again.task.submittedAt, submitted.get(id)!.submittedAt, `${id}: the same task`);
        assert.notEqual(again.task.state, 'lost', `${id}: accepted, so it runs`);
      }
    };
    for (let round = 0; round < rounds; round++) {
      const agent = await agents.start(setup.dataDir, ['--config', setup.configFile]);
      const client = await connect(agent);
      try {
        await retryPrevious(client);
        const ids = Array.from({ length: perRound }, (_, i) => `kill-${round}-${i}-${process.pid}`);
        const outcomes = await Promise.all(ids.map((id) => client.submitTask({ id, spec: sideEffectSpec(setup, id) })));
        for (const outcome of outcomes) {
          assert.equal(outcome.created, true);
          submitted.set(outcome.task.id, outcome.task);
        }
        // Immediately after the last acceptance: the starts are under way (image check, create, start).
        agent.child.kill('SIGKILL');
        await agent.exited;
        previous = ids;
      } finally {
        client.close();
      }
    }

    const agent = await agents.start(setup.dataDir, ['--config', setup.configFile]);
    const client = await connect(agent);
    try {
      await retryPrevious(client);
      const views = await pollUntil(
        'every accepted task to end',
        async () => {
          const all = await Promise.all([...submitted.keys()].map((id) => client.get(id)));
          return all.every((v) => v.state === 'exited' || v.state === 'lost') ? all : undefined;
        },
        { timeoutMs: 150_000, intervalMs: 250 },
      );
      assert.equal(views.length, rounds * perRound);
      for (const view of views) {
        assert.deepEqual({ state: view.state, endState: view.endState, exitCode: view.exitCode }, { state: 'exited', endState: { kind: 'success', exitCode: 0 }, exitCode: 0 }, view.id);
        assert.equal(await readFile(path.join(setup.sideDir, view.id), 'utf8'), 'ran\n', `${view.id} ran exactly once`);
        const lines = [];
        for await (const record of client.logs(view.id)) lines.push(record.text);
        assert.deepEqual(lines, [`hello ${view.id}\n`], `${view.id} output, exactly once`);
      }
      // Each task's container is removed after its end is recorded.
      await pollUntil(
        'the tasks\' containers to be removed',
        async () => {
          const left = await engine.listContainers({ all: true, labels: [run.labelFilter, LABELS.taskId] });
          return left.length === 0 ? true : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 250 },
      );
    } finally {
      client.close();
      await agent.stop();
    }
  });
});

describe('submitting is idempotent', { skip }, () => {
  test('the same id with the same spec answers 200 with the task, whatever the key order and with the defaults spelled out; another spec answers 409', async () => {
    const setup = await setUp();
    const agent = await agents.start(setup.dataDir, ['--config', setup.configFile]);
    const client = await connect(agent);
    try {
      const id = `idem-${process.pid}`;
      const spec = { image: TEST_IMAGE, command: ['sh', '-c', 'echo once'], env: { A: '1', B: '2' }, labels: { ...run.labels } };
      const first = await client.submitTask({ id, spec });
      assert.equal(first.created, true);

      const reordered = { labels: { ...run.labels }, env: { B: '2', A: '1' }, command: ['sh', '-c', 'echo once'], image: TEST_IMAGE };
      const again = await client.submitTask({ id, spec: reordered });
      assert.equal(again.created, false);
      assert.equal(again.task.id, id);
      assert.equal(again.task.submittedAt, first.task.submittedAt);
      // The agent's defaults (256m, 250 milli-CPU, 1024 pids) written out are the same spec.
      const withDefaults = { ...spec, resources: { memory: 256 * 1024 * 1024, cpuMilli: 250, pidsLimit: 1024 } };
      assert.equal((await client.submitTask({ id, spec: withDefaults })).created, false);

      for (const other of [{ ...spec, command: ['sh', '-c', 'echo twice'] }, { ...spec, env: { A: '1' } }, { ...spec, resources: { memory: '64m' } }]) {
        await assert.rejects(client.submitTask({ id, spec: other }), (error: unknown) => isBerthError(error, 'BERTH_TASK_EXISTS') && error.context.status === 409);
      }

      // The CLI says so when a named submit was made before, and prints the id either way.
      const cliId = `idem-cli-${process.pid}`;
      const args = ['submit', '--name', cliId, '--label', `${Object.keys(run.labels)[0]}=${Object.values(run.labels)[0]}`, TEST_IMAGE, 'echo', 'cli'];
      const created = await berth(setup.dataDir, args);
      assert.equal(created.code, 0, created.stderr);
      assert.equal(created.stdout, `${cliId}\n`);
      assert.equal(created.stderr, '');
      const repeated = await berth(setup.dataDir, args);
      assert.equal(repeated.code, 0, repeated.stderr);
      assert.equal(repeated.stdout, `${cliId}\n`);
      assert.match(repeated.stderr, new RegExp(`task ${cliId} was submitted before with the same spec`));
      const changed = await berth(setup.dataDir, [...args.slice(0, -1), 'other']);
      assert.equal(changed.code, 1);
      assert.match(changed.stderr, /BERTH_TASK_EXISTS|exists already/);

      for (const taskId of [id, cliId]) {
        await pollUntil(`${taskId} to end`, async () => ((await client.get(taskId)).state === 'exited' ? true : undefined), { timeoutMs: 60_000, intervalMs: 200 });
      }
      assert.equal((await client.get(id)).exitCode, 0);
    } finally {
      client.close();
      await agent.stop();
    }
  });
});
