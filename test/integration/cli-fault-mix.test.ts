import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { assertOutputOnce, numberedLines, printLines, runBerthWithin, type BoundedRun } from '../support/fault-matrix.js';
import { addMixedFaults, seededRandom } from '../support/fault-mix.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

const RUNS = 24;
const CONCURRENCY = 4;
const LINES = 10;
/**
 * A run that has not exited after this hangs: it is killed and counted as hung. Generous: a call
 * that never answers costs the CLI its default engine deadline (30 s for a create) before a retry,
 * and the whole-log read after an end learnt without its wait as much again; one run may meet
 * several such calls, on a CI machine running other files on 2 cores.
 */
const RUN_BOUND_MS = 180_000;
const SEED = Number(process.env.BERTH_MIX_SEED ?? Date.now() % 1_000_000);

const direct = testEngine();
const run = testRun(direct);
const exitCodeOf = (i: number): number => i % 4;

/** `berth run` from source, on the proxy (DOCKER_HOST), killed when it outlives the bound. */
async function berthRun(proxy: FaultProxy, index: number): Promise<BoundedRun & { index: number; openAtHang?: string[] }> {
  const args = ['run', '-l', `${Object.keys(run.labels)[0]}=${run.id}`, TEST_IMAGE, 'sh', '-c', `${printLines(LINES)}; exit ${exitCodeOf(index)}`];
  // A hang is diagnosed by the calls still open at the proxy when it is declared (other runs' among them).
  let openAtHang: string[] | undefined;
  const outcome = await runBerthWithin(proxy.socketPath, args, RUN_BOUND_MS, () => (openAtHang = proxy.openRequests()));
  return { index, ...outcome, ...(openAtHang ? { openAtHang } : {}) };
}

describe('berth run under a mix of engine faults', { skip: await requireEngine() }, () => {
  let proxy: FaultProxy;

  before(async () => {
    proxy = await FaultProxy.start({ random: seededRandom(SEED) });
  });
  after(async () => {
    await proxy.close();
    await run.cleanup();
  });

  test(`${RUNS} runs under about 10% of faults each exit with their task's code, print its output once, leave nothing and none hangs`, { timeout: RUN_BOUND_MS * 3 + 60_000 }, async (t) => {
    const rules = addMixedFaults(proxy, { rate: 0.1, neverAnswering: 2 });
    const outcomes: Array<BoundedRun & { index: number; openAtHang?: string[] }> = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < RUNS) outcomes.push(await berthRun(proxy, next++));
      }),
    );
    const fired = rules.reduce((n, r) => n + r.fired, 0);
    const problems: string[] = [];
    for (const outcome of outcomes.sort((a, b) => a.index - b.index)) {
      const tail = outcome.stderr.trim().split('\n').slice(-2).join(' | ');
      if (outcome.hung) problems.push(`run ${outcome.index} hung (killed after ${RUN_BOUND_MS / 1000} s): ${tail}; calls open at the proxy then: ${(outcome.openAtHang ?? []).join('; ')}`);
      else if (outcome.code !== exitCodeOf(outcome.index)) problems.push(`run ${outcome.index} exited ${outcome.code ?? outcome.signal}, expected ${exitCodeOf(outcome.index)}: ${tail}`);
      try {
        assertOutputOnce(outcome.stdout, numberedLines(LINES), `run ${outcome.index}`);
      } catch (error) {
        problems.push(error instanceof Error ? error.message.split('\n')[0]! : String(error));
      }
    }
    const leaked = await direct.listContainers({ all: true, labels: [run.labelFilter] });
    const slowest = [...outcomes].sort((a, b) => b.durationMs - a.durationMs).slice(0, 3).map((o) => `run ${o.index} ${(o.durationMs / 1000).toFixed(1)} s`);
    t.diagnostic(`seed ${SEED}, ${fired} faults injected; slowest runs: ${slowest.join(', ')}`);
    if (process.env.BERTH_MIX_VERBOSE === '1') for (const o of outcomes) t.diagnostic(`run ${o.index} ${o.durationMs} ms: ${o.stderr.trim().split('\n').join(' | ')}`);
    assert.deepEqual(
      { problems, leaked: leaked.map((c) => `${c.names[0]} (${c.state})`) },
      { problems: [], leaked: [] },
      `seed ${SEED}, ${fired} faults injected; slowest runs: ${slowest.join(', ')}`,
    );
    assert.ok(fired >= RUNS / 4, `the mix injected faults (${fired})`);
  });
});
