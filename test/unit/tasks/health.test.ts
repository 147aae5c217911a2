import assert from 'node:assert/strict';
import { afterEach, describe, test, mock } from 'node:test';
import { BerthError, isBerthError } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { ContainerEventStream } from '../../../src/engine/engine.js';
import type { ContainerEvent, ContainerInspect, HealthStatus } from '../../../src/engine/types.js';
import type { EndState } from '../../../src/tasks/end-state.js';
import { inspectFixture } from '../../support/inspect.js';
import { settle, until } from '../../support/time.js';
import { awaitHealthy, healthPollMs, healthVerdictDeadlineMs, type AwaitHealthyOptions, type HealthEngine } from '../../../src/tasks/health.js';

const SECOND_NS = 1_000_000_000;
const check = { test: ['CMD', 'cat', '/tmp/ready'], intervalNs: SECOND_NS, timeoutNs: 5 * SECOND_NS, startPeriodNs: 0, retries: 3 };

/** A container as inspect returns it, with only the fields the health wait reads set meaningfully. */
function container(health: HealthStatus | undefined, overrides: Partial<ContainerInspect> = {}): ContainerInspect {
  return inspectFixture({
    healthcheck: check,
    ...(health === undefined ? {} : { health: { status: health, failingStreak: health === 'unhealthy' ? 3 : 0, probes: [] } }),
    ...overrides,
  });
}

/** An event stream the test pushes events into; it records whether it was closed. */
class ScriptedEvents implements ContainerEventStream {
  closed = false;
  readonly #queue: ContainerEvent[] = [];
  #notify: (() => void) | undefined;

  push(action: string): void {
    this.#queue.push({ action, at: new Date(), containerId: 'c1' });
    this.#notify?.();
  }

  close(): void {
    this.closed = true;
    this.#notify?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<ContainerEvent> {
    for (;;) {
      while (this.#queue.length > 0) yield this.#queue.shift()!;
      if (this.closed) return;
      await new Promise<void>((resolve) => (this.#notify = resolve));
      this.#notify = undefined;
    }
  }
}

/**
 * A narrow scripted engine: each inspect answers with the next scripted container (or error), the
 * last one repeating; `onInspect` lets a test act during a given inspect, which answers once what it returns settles.
 */
function scriptedEngine(script: Array<ContainerInspect | Error>, options: { events?: ScriptedEvents | Error; onInspect?: (count: number) => unknown } = {}) {
  let inspects = 0;
  const engine: HealthEngine = {
    inspectContainer: async () => {
      const answer = script[Math.min(inspects, script.length - 1)]!;
      inspects++;
      // An inspect stays in flight until what onInspect returns settles.
      await options.onInspect?.(inspects);
      if (answer instanceof Error) throw answer;
      return answer;
    },
    openContainerEvents: async () => {
      if (options.events instanceof Error) throw options.events;
      return options.events ?? new ScriptedEvents();
    },
  };
  return { engine, inspects: () => inspects };
}

const never = new Promise<EndState>(() => undefined);

function wait(engine: HealthEngine, overrides: Partial<AwaitHealthyOptions> = {}): Promise<void> {
  return awaitHealthy(engine, { taskId: 't1', containerId: 'c0ffee', ended: never, logger: silentLogger, pollMs: 1, ...overrides });
}

function isUnhealthy(reason: string) {
  return (error: unknown): boolean => isBerthError(error, 'BERTH_TASK_UNHEALTHY') && error.context.reason === reason;
}

/**
 * Puts the wait's poll timer under the test's control (node:test mock timers): no poll fires unless
 * the test ticks, so a wait that settles did so because of an event, an end or an abort.
 */
function freezePolls(): void {
  mock.timers.enable({ apis: ['setTimeout'] });
}

/**
 * Waits (with a deadline, not a threshold) for `promise` to settle while no mocked time passes; a
 * regression that leaves it waiting for a poll fails here instead of hanging.
 */
async function settlesWithoutPolling<T>(promise: Promise<T>, what: string): Promise<T> {
  let settled = false;
  const observed = promise.finally(() => (settled = true));
  observed.catch(() => undefined);
  await until(() => settled, what);
  return observed;
}

describe('awaitHealthy', () => {
  afterEach(() => mock.timers.reset());

  test('resolves once inspect reports the container healthy', async () => {
    const { engine, inspects } = scriptedEngine([container('starting'), container('starting'), container('healthy')]);
    await wait(engine);
    assert.equal(inspects(), 3);
  });

  test('treats a container whose health is not reported yet as starting', async () => {
    const { engine } = scriptedEngine([container(undefined), container('healthy')]);
    await wait(engine);
  });

  test('rejects with BERTH_TASK_UNHEALTHY naming the failing streak and the last probe’s output', async () => {
    const unhealthy = container('unhealthy');
    unhealthy.health!.probes.push({ exitCode: 1, output: "cat: can't open '/tmp/ready': No such file or directory\n" });
    const { engine } = scriptedEngine([container('starting'), unhealthy]);
    await assert.rejects(wait(engine), (error: unknown) => {
      assert.ok(isUnhealthy('unhealthy')(error));
      assert.match((error as BerthError).message, /failed 3 time\(s\) in a row \(last exit code 1: cat: can't open '\/tmp\/ready'/);
      assert.deepEqual((error as BerthError).context.lastProbe, { exitCode: 1, output: "cat: can't open '/tmp/ready': No such file or directory" });
      return true;
    });
  });

  test('is woken by the engine’s events, not only by the poll', async () => {
    freezePolls();
    const events = new ScriptedEvents();
    // No poll fires: only the event can bring the second inspect.
    const { engine, inspects } = scriptedEngine([container('starting'), container('healthy')], { events, onInspect: (n) => n === 1 && setImmediate(() => events.push('health_status: healthy')) });
    await settlesWithoutPolling(wait(engine, { pollMs: 1000 }), 'the event to wake the wait');
    assert.equal(inspects(), 2);
    assert.equal(events.closed, true);
  });

  test('keeps the event stream’s wake for the next wait when it arrives during an inspect', async () => {
    freezePolls();
    const events = new ScriptedEvents();
    // The event is delivered while the first inspect is still in flight, before the wait sleeps: it must not be lost.
    const { engine, inspects } = scriptedEngine([container('starting'), container('healthy')], {
      events,
      onInspect: async (n) => {
        if (n !== 1) return;
        events.push('health_status: healthy');
        await settle();
      },
    });
    await settlesWithoutPolling(wait(engine, { pollMs: 1000 }), 'the kept wake to end the next wait');
    assert.equal(inspects(), 2);
  });

  test('polls at its interval when the event stream cannot be opened', async () => {
    freezePolls();
    const { engine, inspects } = scriptedEngine([container('starting'), container('starting'), container('healthy')], { events: new BerthError('BERTH_ENGINE_UNAVAILABLE', 'down') });
    let settled = false;
    const waiting = wait(engine, { pollMs: 1000 }).finally(() => (settled = true));
    for (const inspectsBefore of [1, 2]) {
      await until(() => inspects() === inspectsBefore, `inspect ${inspectsBefore}`);
      await settle();
      mock.timers.tick(999);
      await settle();
      assert.equal(inspects(), inspectsBefore, 'no inspect before the poll interval has passed');
      mock.timers.tick(1);
    }
    await until(() => settled, 'the third inspect to find the container healthy');
    await waiting;
    assert.equal(inspects(), 3);
  });

  test('rejects with reason ended when the task ends first, with its end state', async () => {
    let end!: (state: EndState) => void;
    const ended = new Promise<EndState>((resolve) => (end = resolve));
    freezePolls();
    const { engine } = scriptedEngine([container('starting')], { onInspect: (n) => n === 1 && setImmediate(() => end({ kind: 'failed', exitCode: 3 })) });
    await assert.rejects(settlesWithoutPolling(wait(engine, { ended, pollMs: 1000 }), 'the end to wake the wait'), (error: unknown) => {
      assert.ok(isUnhealthy('ended')(error));
      assert.deepEqual((error as BerthError).context.endState, { kind: 'failed', exitCode: 3 });
      assert.match((error as BerthError).message, /ended before it was healthy/);
      return true;
    });
  });

  test('rejects with reason ended when inspect shows the container exited', async () => {
    const { engine } = scriptedEngine([container('starting'), container('unhealthy', { status: 'exited', running: false, exitCode: 2 })]);
    await assert.rejects(wait(engine), (error: unknown) => isUnhealthy('ended')(error) && /exited \(exit code 2\)/.test((error as Error).message));
  });

  test('rejects with reason ended when the container is gone', async () => {
    const { engine } = scriptedEngine([container('starting'), new BerthError('BERTH_ENGINE_NOT_FOUND', 'no such container')]);
    await assert.rejects(wait(engine), isUnhealthy('ended'));
  });

  test('rejects with reason no-verdict once the deadline passes while still starting', async () => {
    let clock = 0;
    const { engine } = scriptedEngine([container('starting')], { onInspect: () => (clock += 400) });
    await assert.rejects(wait(engine, { deadlineMs: 1000, now: () => clock }), (error: unknown) => isUnhealthy('no-verdict')(error) && /within 1000 ms/.test((error as Error).message));
  });

  test('rejects with BERTH_TASK_STATE when the container has no health check, or a disabled one', async () => {
    for (const healthcheck of [undefined, { ...check, test: ['NONE'] }, { ...check, test: [] }]) {
      const { engine } = scriptedEngine([container(undefined, { healthcheck })]);
      await assert.rejects(wait(engine), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE') && /has no health check/.test((error as Error).message));
    }
  });

  test('accepts the shell form of a health check', async () => {
    const { engine } = scriptedEngine([container('healthy', { healthcheck: { ...check, test: ['CMD-SHELL', 'true'] } })]);
    await wait(engine);
  });

  test('rejects with BERTH_CANCELLED when the signal aborts, and closes the event stream', async () => {
    freezePolls();
    const events = new ScriptedEvents();
    const abort = new AbortController();
    const { engine } = scriptedEngine([container('starting')], { events, onInspect: (n) => n === 1 && setImmediate(() => abort.abort()) });
    await assert.rejects(settlesWithoutPolling(wait(engine, { signal: abort.signal, pollMs: 1000 }), 'the abort to end the wait'), (error: unknown) => isBerthError(error, 'BERTH_CANCELLED'));
    assert.equal(events.closed, true);
  });

  test('rejects at once with BERTH_CANCELLED for a signal aborted already, without asking the engine', async () => {
    const { engine, inspects } = scriptedEngine([container('healthy')]);
    await assert.rejects(wait(engine, { signal: AbortSignal.abort() }), (error: unknown) => isBerthError(error, 'BERTH_CANCELLED'));
    assert.equal(inspects(), 0);
  });

  test('keeps waiting through an inspect that fails transiently after the first answer', async () => {
    const { engine } = scriptedEngine([container('starting'), new BerthError('BERTH_ENGINE_TIMEOUT', 'slow'), container('healthy')]);
    await wait(engine);
  });

  test('rejects with the engine’s error when the first inspect fails', async () => {
    const { engine } = scriptedEngine([new BerthError('BERTH_ENGINE_UNAVAILABLE', 'down')]);
    await assert.rejects(wait(engine), (error: unknown) => isBerthError(error, 'BERTH_ENGINE_UNAVAILABLE'));
  });

  test('rejects with the engine’s error when a later inspect fails for good', async () => {
    const { engine } = scriptedEngine([container('starting'), new BerthError('BERTH_ENGINE_BAD_REQUEST', 'bad')]);
    await assert.rejects(wait(engine), (error: unknown) => isBerthError(error, 'BERTH_ENGINE_BAD_REQUEST'));
  });
});

describe('health deadlines and polls', () => {
  test('the deadline is twice the engine’s longest time to a verdict, plus 10 s', () => {
    // start period 10 s + (3 + 1) rounds of (1 s interval + 5 s timeout) = 34 s
    assert.equal(healthVerdictDeadlineMs({ ...check, startPeriodNs: 10 * SECOND_NS }), 2 * 34_000 + 10_000);
  });

  test('settings left at 0 take the engine’s defaults: 30 s interval and timeout, 3 retries, no start period', () => {
    assert.equal(healthVerdictDeadlineMs({ test: ['CMD', 'true'], intervalNs: 0, timeoutNs: 0, startPeriodNs: 0, retries: 0 }), 2 * 4 * 60_000 + 10_000);
  });

  test('the poll follows the interval between 100 ms and 1 s', () => {
    assert.equal(healthPollMs({ ...check, intervalNs: 1_000_000 }), 100);
    assert.equal(healthPollMs({ ...check, intervalNs: SECOND_NS / 2 }), 500);
    assert.equal(healthPollMs({ ...check, intervalNs: 30 * SECOND_NS }), 1000);
  });
});
