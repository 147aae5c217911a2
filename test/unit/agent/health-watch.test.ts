import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import { AgentEvents, type AgentEvent } from '../../../src/agent/events.js';
import { HealthWatch, type HealthWatchEngine } from '../../../src/agent/health-watch.js';
import type { ContainerInspect } from '../../../src/engine/types.js';
import { openTestStore } from '../../support/store.js';

const CHECK = { test: ['CMD-SHELL', 'true'], intervalNs: 1e9, timeoutNs: 1e9, startPeriodNs: 0, retries: 2 };

/** Inspect data with a health check, running unless said otherwise. */
function inspect(health: ContainerInspect['health'], running = true): ContainerInspect {
  return { running, healthcheck: CHECK, ...(health ? { health } : {}) } as ContainerInspect;
}

/** A health watch over an engine whose inspect answers the next scripted state each time. */
function scripted(states: ContainerInspect[], store = openTestStore()) {
  const engine: HealthWatchEngine = {
    inspectContainer: async () => {
      const next = states.shift();
      if (!next) throw new BerthError('BERTH_ENGINE_NOT_FOUND', 'no such container');
      return next;
    },
    openContainerEvents: async () => {
      throw new BerthError('BERTH_ENGINE_UNAVAILABLE', 'no events here');
    },
  };
  const events = new AgentEvents();
  const seen: AgentEvent[] = [];
  events.subscribe((event) => seen.push(event));
  if (!store.tasks.get('t1')) store.tasks.insert({ id: 't1', spec: { image: 'busybox' } });
  const watch = new HealthWatch({ engine, tasks: store.tasks, events, logger: silentLogger, signal: new AbortController().signal });
  return { watch, store, seen };
}

const probe = (n: number, exitCode: number, output: string) => ({ start: new Date(n * 1000), end: new Date(n * 1000 + 10), exitCode, output });

describe('HealthWatch', () => {
  test('records each new health, and announces only changes of status, with the last probe', async () => {
    const { watch, store, seen } = scripted([
      inspect(undefined),
      inspect({ status: 'starting', failingStreak: 1, probes: [probe(1, 1, 'no')] }),
      inspect({ status: 'healthy', failingStreak: 0, probes: [probe(1, 1, 'no'), probe(2, 0, 'yes\n')] }),
      inspect({ status: 'healthy', failingStreak: 0, probes: [probe(1, 1, 'no'), probe(2, 0, 'yes\n')] }),
    ]);
    for (let i = 0; i < 4; i++) await watch.refresh('t1', 'c1');
    assert.deepEqual(
      seen.map((e) => (e.type === 'task.health' ? [e.status, e.failingStreak, e.exitCode, e.output] : e.type)),
      [
        ['starting', 0, undefined, undefined],
        ['healthy', 0, 0, 'yes'],
      ],
    );
    const health = store.tasks.get('t1')!.health!;
    assert.equal(health.status, 'healthy');
    assert.deepEqual(health.log.map((p) => [p.exitCode, p.output]), [[1, 'no'], [0, 'yes\n']]);
  });

  test('a stopped container is not read (the engine calls it unhealthy): the last health seen running stays', async () => {
    const { watch, store, seen } = scripted([
      inspect({ status: 'healthy', failingStreak: 0, probes: [probe(1, 0, 'ok')] }),
      inspect({ status: 'unhealthy', failingStreak: 0, probes: [probe(1, 0, 'ok')] }, false),
    ]);
    await watch.refresh('t1', 'c1');
    await watch.refresh('t1', 'c1');
    assert.equal(store.tasks.get('t1')!.health!.status, 'healthy');
    assert.deepEqual(seen.filter((e) => e.type === 'task.health').map((e) => (e as { status: string }).status), ['healthy']);
  });

  test('a restarted agent does not announce again the status its store recorded', async () => {
    const store = openTestStore();
    const before = scripted([inspect({ status: 'healthy', failingStreak: 0, probes: [probe(1, 0, 'ok')] })], store);
    await before.watch.refresh('t1', 'c1');
    const after = scripted([inspect({ status: 'healthy', failingStreak: 0, probes: [probe(1, 0, 'ok'), probe(2, 0, 'ok')] })], store);
    await after.watch.refresh('t1', 'c1');
    assert.equal(after.seen.length, 0);
    assert.equal(store.tasks.get('t1')!.health!.log.length, 2, 'the new probe is recorded');
  });

  test('a container without a health check gets no health', async () => {
    const { watch, store, seen } = scripted([{ running: true } as ContainerInspect]);
    await watch.refresh('t1', 'c1');
    assert.equal(store.tasks.get('t1')!.health, undefined);
    assert.equal(seen.length, 0);
  });

  test('gate: healthy moves the task on; unhealthy, no verdict or no check fail it; a task that ended on its own or was stopped is left alone', async () => {
    const { watch } = scripted([]);
    const outcomes: string[] = [];
    const gateOf = (waiting = true) => ({
      isWaiting: () => waiting,
      healthy: () => void outcomes.push('healthy'),
      unhealthy: async (error: BerthError) => void outcomes.push(`unhealthy ${error.code} ${String(error.context.reason)}`),
    });
    const handle = (verdict: () => Promise<void>) => ({ taskId: 't1', containerId: 'c1', healthy: verdict });
    await watch.gate(handle(async () => undefined), gateOf());
    await watch.gate(handle(async () => Promise.reject(new BerthError('BERTH_TASK_UNHEALTHY', 'sick', { context: { reason: 'unhealthy' } }))), gateOf());
    await watch.gate(handle(async () => Promise.reject(new BerthError('BERTH_TASK_UNHEALTHY', 'silent', { context: { reason: 'no-verdict' } }))), gateOf());
    await watch.gate(handle(async () => Promise.reject(new BerthError('BERTH_TASK_STATE', 'no check', { context: { reason: 'none' } }))), gateOf());
    await watch.gate(handle(async () => Promise.reject(new BerthError('BERTH_TASK_UNHEALTHY', 'ended', { context: { reason: 'ended' } }))), gateOf());
    await watch.gate(handle(async () => undefined), gateOf(false));
    assert.deepEqual(outcomes, ['healthy', 'unhealthy BERTH_TASK_UNHEALTHY unhealthy', 'unhealthy BERTH_TASK_UNHEALTHY no-verdict', 'unhealthy BERTH_TASK_STATE none']);
  });
});
