import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { ContainerInspect } from '../../../src/engine/types.js';
import { startIdempotent, type ContainerEngine } from '../../../src/tasks/container-ops.js';

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
