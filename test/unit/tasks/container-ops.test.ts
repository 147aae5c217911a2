import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError, isBerthError } from '../../../src/common/errors.js';
import { LABELS } from '../../../src/common/labels.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { ContainerInspect } from '../../../src/engine/types.js';
import { resolveTaskSpec } from '../../../src/spec/schema.js';
import { toCreatePlan, type TaskIdentity } from '../../../src/spec/translate.js';
import { createIdempotent, DEFAULT_RETRY_POLICY, REMOVAL_DEFAULT_ATTEMPTS, removeContainer, startIdempotent, withRemovalAttempts, type ContainerEngine } from '../../../src/tasks/container-ops.js';
import { ScriptedEngine } from './scripted-engine.js';

const policy = { attempts: 5, initialDelayMs: 1, maxDelayMs: 2 };
const serverError = (): BerthError => new BerthError('BERTH_ENGINE_SERVER_ERROR', 'injected fault');

/** An engine whose start acts and then fails, and whose inspects fail as scripted: it counts real starts. */
function scriptedEngine(script: { startFailsAfterActing: number; inspectFailures: number }) {
  let runs = 0;
  let startCalls = 0;
  let inspectFailures = script.inspectFailures;
  const engine = {
    async startContainer() {
      startCalls++;
      // Docker runs an exited container again on every start: that is how output appeared twice.
      runs++;
      if (startCalls <= script.startFailsAfterActing) throw serverError();
      return 'started' as const;
    },
    async inspectContainer() {
      if (inspectFailures-- > 0) throw serverError();
      return { running: false, paused: false, status: 'exited', ...(runs > 0 ? { startedAt: new Date() } : {}) } as unknown as ContainerInspect;
    },
  } as unknown as ContainerEngine;
  return { engine, runs: () => runs };
}

describe('starting a container idempotently', () => {
  test('a start answered 500 after the engine ran it is not sent again when the inspect that decides fails once', async () => {
    const { engine, runs } = scriptedEngine({ startFailsAfterActing: 1, inspectFailures: 1 });
    await startIdempotent(engine, 'c1', policy, silentLogger);
    assert.equal(runs(), 1);
  });

  test('an inspect that never answers fails the start with its error, without starting again', async () => {
    const { engine, runs } = scriptedEngine({ startFailsAfterActing: 1, inspectFailures: 100 });
    await assert.rejects(startIdempotent(engine, 'c1', policy, silentLogger), (error: unknown) => error instanceof BerthError && error.code === 'BERTH_ENGINE_SERVER_ERROR');
    assert.equal(runs(), 1);
  });

  test('a start that failed before the engine acted (the inspect shows it never started) is sent again', async () => {
    let starts = 0;
    const engine = {
      async startContainer() {
        starts++;
        if (starts === 1) throw serverError();
        return 'started' as const;
      },
      async inspectContainer() {
        return { running: false, paused: false, status: 'created' } as unknown as ContainerInspect;
      },
    } as unknown as ContainerEngine;
    await startIdempotent(engine, 'c1', policy, silentLogger);
    assert.equal(starts, 2);
  });
});

describe('creating a container idempotently', () => {
  const identity: TaskIdentity = { taskId: 't1', ownerId: 'owner-a', startAttempt: 'attempt-1' };
  const plan = toCreatePlan(resolveTaskSpec({ image: 'img' }, { allowPrivileged: false }), identity);
  const labelsOf = (overrides: Partial<TaskIdentity>): Record<string, string> => {
    const who = { ...identity, ...overrides };
    return { [LABELS.managed]: 'true', [LABELS.taskId]: who.taskId, [LABELS.ownerId]: who.ownerId, [LABELS.startAttempt]: who.startAttempt };
  };
  const create = (engine: ScriptedEngine, onRequestInFlight?: () => void) => createIdempotent(engine, plan, identity, policy, silentLogger, undefined, onRequestInFlight);

  test('a create whose answer is lost after the engine made the container adopts that container on the retry', async () => {
    const engine = new ScriptedEngine();
    engine.hold('createContainer');
    const creating = create(engine);
    (await engine.next('createContainer')).proceedThenFail(serverError());
    engine.release('createContainer');
    const created = await creating;
    assert.deepEqual(created, { containerId: 'c1', adopted: true });
    assert.deepEqual(engine.names, [plan.name], 'one container, the one the lost create made');
    assert.equal(engine.count('createContainer'), 1, 'found by an inspect, not by a second create');
  });

  test('a lost create whose container the inspects cannot confirm is sent again; a fault on that create and failing inspects still end in the adopted container', async () => {
    const engine = new ScriptedEngine();
    engine.hold('createContainer');
    engine.hold('inspectContainer');
    const creating = create(engine);
    (await engine.next('createContainer')).proceedThenFail(serverError());
    // The inspects after the lost create all fail: the create is sent again, and its answer is lost too.
    for (let i = 0; i < policy.attempts; i++) (await engine.next('inspectContainer')).fail(serverError());
    (await engine.next('createContainer')).fail(serverError());
    // Its inspects fail as often as they may; the third create conflicts, and the adopting inspect fails four times more.
    for (let i = 0; i < policy.attempts; i++) (await engine.next('inspectContainer')).fail(serverError());
    engine.release('createContainer');
    for (let i = 0; i < policy.attempts - 1; i++) (await engine.next('inspectContainer')).fail(serverError());
    engine.release('inspectContainer');
    assert.deepEqual(await creating, { containerId: 'c1', adopted: true });
    assert.deepEqual(engine.names, [plan.name]);
  });

  test('a lost create whose adopting inspects fail a few times still adopts the container: the inspects are retried, not the create budget spent on them', async () => {
    const engine = new ScriptedEngine();
    engine.hold('createContainer');
    engine.hold('inspectContainer');
    const creating = create(engine);
    (await engine.next('createContainer')).proceedThenFail(serverError());
    engine.release('createContainer');
    // As many failed inspects as the create has attempts left: each conflict's inspect is retried on its own.
    for (let i = 0; i < policy.attempts - 1; i++) (await engine.next('inspectContainer')).fail(serverError());
    engine.release('inspectContainer');
    assert.deepEqual(await creating, { containerId: 'c1', adopted: true });
    assert.deepEqual(engine.names, [plan.name]);
  });

  test('a create that failed before the engine acted is sent again and makes the container, not adopting anything', async () => {
    const engine = new ScriptedEngine();
    engine.hold('createContainer');
    const creating = create(engine);
    (await engine.next('createContainer')).fail(serverError());
    engine.release('createContainer');
    assert.deepEqual(await creating, { containerId: 'c1', adopted: false });
  });

  test('a conflict with a container another start of the same task made is refused with BERTH_NAME_CONFLICT, and that container is left alone', async () => {
    const engine = new ScriptedEngine();
    const theirs = engine.addContainer(plan.name, labelsOf({ startAttempt: 'attempt-0' }), 'running');
    await assert.rejects(create(engine), (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_NAME_CONFLICT'));
      assert.match(error.message, /task t1 of owner-a already has a container/);
      assert.equal(error.context.containerId, theirs);
      return true;
    });
    assert.equal(engine.statusOf(theirs), 'running');
    assert.equal(engine.count('removeContainer'), 0);
  });

  test('a conflict with a container of another owner is refused with BERTH_NAME_CONFLICT naming the holder, and it is left alone', async () => {
    const engine = new ScriptedEngine();
    const theirs = engine.addContainer(plan.name, labelsOf({ ownerId: 'owner-b' }));
    await assert.rejects(create(engine), (error: unknown) => isBerthError(error, 'BERTH_NAME_CONFLICT') && /is in use by container c\d+, which is not task t1 of owner-a/.test(error.message));
    assert.equal(engine.statusOf(theirs), 'created');
    assert.equal(engine.count('removeContainer'), 0);
  });

  test('a create that keeps failing after it made the container removes that container before reporting the error', async () => {
    const engine = new ScriptedEngine();
    engine.hold('createContainer');
    engine.hold('inspectContainer');
    const attempts = 2;
    const creating = createIdempotent(engine, plan, identity, { ...policy, attempts }, silentLogger);
    (await engine.next('createContainer')).proceedThenFail(serverError());
    // The inspects that would find the container fail, and the retry fails before it reaches the engine: the attempts are spent.
    for (let i = 0; i < attempts; i++) (await engine.next('inspectContainer')).fail(serverError());
    (await engine.next('createContainer')).fail(serverError());
    for (let i = 0; i < attempts; i++) (await engine.next('inspectContainer')).fail(serverError());
    // The clean-up's inspect answers.
    engine.release('inspectContainer');
    await assert.rejects(creating, (error: unknown) => isBerthError(error, 'BERTH_ENGINE_SERVER_ERROR'));
    assert.deepEqual(engine.names, [], 'the container the lost create made is removed');
  });

  test('a create that timed out is reported as possibly still in flight, and the retry goes on', async () => {
    const engine = new ScriptedEngine();
    engine.hold('createContainer');
    let inFlight = 0;
    const creating = create(engine, () => inFlight++);
    (await engine.next('createContainer')).fail(new BerthError('BERTH_ENGINE_TIMEOUT', 'create container did not answer within 1000 ms'));
    engine.release('createContainer');
    assert.deepEqual(await creating, { containerId: 'c1', adopted: false });
    assert.equal(inFlight, 1);
  });

  test('a create answered 500 before acting is not reported as in flight', async () => {
    const engine = new ScriptedEngine();
    engine.hold('createContainer');
    let inFlight = 0;
    const creating = create(engine, () => inFlight++);
    (await engine.next('createContainer')).fail(serverError());
    engine.release('createContainer');
    await creating;
    assert.equal(inFlight, 0);
  });
});

describe('removing a container', () => {
  /** An engine whose removals fail `failures` times with `error` (the first after acting), then find the container gone. */
  function removals(failures: number, error: () => BerthError) {
    let calls = 0;
    const engine = {
      async removeContainer() {
        calls++;
        if (calls <= failures) throw error();
        return calls === 1 ? ('removed' as const) : ('absent' as const);
      },
    };
    return { engine, calls: () => calls };
  }

  test('by default a removal tries REMOVAL_DEFAULT_ATTEMPTS times, more than other calls: answers lost that often still end in a removal', async () => {
    const lost = (): BerthError => new BerthError('BERTH_ENGINE_UNAVAILABLE', 'the engine is unreachable (ECONNRESET)');
    const defaults = withRemovalAttempts({ ...DEFAULT_RETRY_POLICY, initialDelayMs: 1, maxDelayMs: 2 }, undefined);
    assert.ok(REMOVAL_DEFAULT_ATTEMPTS > DEFAULT_RETRY_POLICY.attempts);
    const { engine, calls } = removals(REMOVAL_DEFAULT_ATTEMPTS - 1, lost);
    assert.equal(await removeContainer(engine, 'c1', defaults), 'absent');
    assert.equal(calls(), REMOVAL_DEFAULT_ATTEMPTS);
    const past = removals(REMOVAL_DEFAULT_ATTEMPTS, serverError);
    await assert.rejects(removeContainer(past.engine, 'c1', defaults), (error: unknown) => isBerthError(error, 'BERTH_ENGINE_SERVER_ERROR'));
    assert.equal(past.calls(), REMOVAL_DEFAULT_ATTEMPTS);
  });

  test('a caller that sets retry.attempts gets exactly that many removal attempts; a failure that is not transient is not retried', async () => {
    const given = withRemovalAttempts({ ...DEFAULT_RETRY_POLICY, ...policy, attempts: 2 }, { attempts: 2 });
    const { engine, calls } = removals(5, serverError);
    await assert.rejects(removeContainer(engine, 'c1', given), (error: unknown) => isBerthError(error, 'BERTH_ENGINE_SERVER_ERROR'));
    assert.equal(calls(), 2);
    const refused = removals(1, () => new BerthError('BERTH_ENGINE_FORBIDDEN', 'denied'));
    await assert.rejects(removeContainer(refused.engine, 'c1', given), (error: unknown) => isBerthError(error, 'BERTH_ENGINE_FORBIDDEN'));
    assert.equal(refused.calls(), 1);
  });
});
