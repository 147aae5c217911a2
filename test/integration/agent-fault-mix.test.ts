import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { TaskView } from '../../src/agent/client.js';
import { assertOutputOnce, finishesWithin, numberedLines, printLines } from '../support/fault-matrix.js';
import { addMixedFaults, seededRandom } from '../support/fault-mix.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { startServedAgent, type ServedAgent } from '../support/agent.js';
import { hasEnded } from '../../src/state/tasks.js';

const TASKS = 200;
const LINES = 10;
/**
 * The engine deadlines of the mix's agent: each call that never answers costs one of them, and a
 * create that never answered is watched for twice the write deadline before the task starts again.
 */
const DEADLINES = { readTimeout: '5s', writeTimeout: '10s' };
/**
 * Generous: a task whose create and a retry both never answer waits about 2 × 10 s, then 2 × 10 s
 * of late-create watch, then starts; on a loaded host, with the default 30 s deadlines, one such
 * task took longer than 120 s while the other 199 ended within 84 s.
 */
const BOUND_MS = 120_000;
const SEED = Number(process.env.BERTH_MIX_SEED ?? Date.now() % 1_000_000);

const direct = testEngine();
const run = testRun(direct);
const exitCodeOf = (i: number): number => i % 4;

describe('the agent under a mix of engine faults', { skip: await requireEngine() }, () => {
  let proxy: FaultProxy;
  let agent: ServedAgent;

  before(async () => {
    proxy = await FaultProxy.start({ random: seededRandom(SEED) });
    agent = await startServedAgent(proxy.socketPath, { admission: { maxConcurrent: 16 }, defaults: { resources: { cpuMilli: 100, memory: '64m' } }, engineDeadlines: DEADLINES });
  });

  after(async () => {
    proxy.reset();
    await agent.close();
    await proxy.close();
    await run.cleanup();
  });

  test(`${TASKS} tasks under about 10% of faults at once each end right, with output exactly once, nothing leaked and the budget free`, { timeout: BOUND_MS + 120_000 }, async () => {
    const rules = addMixedFaults(proxy, { rate: 0.1, neverAnswering: 2 });
    const ids = await Promise.all(
      Array.from({ length: TASKS }, async (_, i) => {
        const view = await agent.client.submit({
          id: `mix-${run.id}-${i}`,
          spec: { image: TEST_IMAGE, labels: { ...run.labels }, command: ['sh', '-c', `${printLines(LINES)}; exit ${exitCodeOf(i)}`] },
        });
        return view.id;
      }),
    );

    // Every problem is collected, a hang included, so that one failure shows all there is to see.
    let views: TaskView[] = [];
    const notEnded: string[] = [];
    await pollUntil('every task to end', async () => {
      views = await agent.client.list({ label: run.labelFilter, limit: TASKS * 2 }).catch(() => views);
      return views.length === TASKS && views.every((v) => hasEnded(v.state)) ? true : undefined;
    }, { timeoutMs: BOUND_MS, intervalMs: 500 }).catch(() => {
      for (const v of views) if (!hasEnded(v.state)) notEnded.push(`${v.id}: still ${v.state} after ${BOUND_MS / 1000} s`);
    });
    const idle = await finishesWithin('the agent to remove the containers of ended tasks', 20_000, agent.runtime.supervisor.idle()).then(
      () => 'idle',
      (error: unknown) => String(error),
    );
    const fired = rules.reduce((n, r) => n + r.fired, 0);
    assert.ok(fired >= TASKS / 10, `the mix injected faults (${fired})`);
    const firstSubmit = Math.min(...views.map((v) => Date.parse(v.submittedAt)));
    const lastEnd = Math.max(...views.flatMap((v) => (v.finishedAt ? [Date.parse(v.finishedAt)] : [])));

    const wrongEnds: string[] = [];
    const outputProblems: string[] = [];
    const byId = new Map(views.map((v) => [v.id, v]));
    for (const [i, id] of ids.entries()) {
      const view = byId.get(id);
      const code = exitCodeOf(i);
      if (!view) {
        wrongEnds.push(`${id}: not listed`);
        continue;
      }
      const expectedKind = code === 0 ? 'success' : 'failed';
      if (!hasEnded(view.state)) continue;
      if (view.state !== 'exited' || view.endState?.kind !== expectedKind || view.exitCode !== code) {
        wrongEnds.push(`${id}: ${view.state} ${JSON.stringify(view.endState)}, expected ${expectedKind} ${code}`);
      }
      let text = '';
      for await (const record of agent.client.logs(id)) text += `${record.text.replace(/\n$/, '')}\n`;
      try {
        assertOutputOnce(text, numberedLines(LINES), id);
      } catch (error) {
        outputProblems.push(error instanceof Error ? error.message.split('\n')[0]! : String(error));
      }
    }
    const leaked = await direct.listContainers({ all: true, labels: [run.labelFilter] });
    const admission = agent.runtime.admission.snapshot();
    assert.deepEqual(
      {
        notEnded,
        idle,
        wrongEnds,
        outputProblems,
        leaked: leaked.map((c) => `${c.names[0]} (${c.state})`),
        budget: { tasks: admission.used.tasks, memoryBytes: admission.used.memoryBytes, cpuMilli: admission.used.cpuMilli, queued: admission.queued.length },
      },
      { notEnded: [], idle: 'idle', wrongEnds: [], outputProblems: [], leaked: [], budget: { tasks: 0, memoryBytes: 0, cpuMilli: 0, queued: 0 } },
      `seed ${SEED}, ${fired} faults injected; the last recorded end came ${Math.round((lastEnd - firstSubmit) / 1000)} s after the first submit`,
    );
  });
});
