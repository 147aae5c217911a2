/**
 * OOM kills against the real engine while it is loaded: several tasks killed at once are each
 * `oom` (the engine's own OOMKilled flag can miss such a kill, see src/tasks/oom-watch.ts), and the
 * kernel's OOM counter of a task's memory cgroup is read on this host while the task runs.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { LABELS } from '../../src/common/labels.js';
import type { Engine } from '../../src/engine/engine.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { OomWatch } from '../../src/tasks/oom-watch.js';
import { silentLogger } from '../../src/common/logger.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

const engine = testEngine();
const run = testRun(engine);
const driver = new TaskDriver({ engine, ownerId: `test-${run.id}` });
const spec = (command: string[], overrides: Partial<TaskSpec> = {}): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, command, ...overrides });
/** Asks for 64 MiB at once under a 16 MiB limit: the kernel kills it within moments of its start. */
const oomCommand = ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1'];
const ROUNDS = 3;
const AT_ONCE = 3;

/**
 * The real engine with its OOM word hidden (the OOMKilled flag reads false, its `oom` events are
 * dropped), as a loaded dockerd can give it: only the kernel's evidence can tell the driver.
 */
function withoutOomWord(real: Engine): Engine {
  return new Proxy(real, {
    get(target, property) {
      if (property === 'inspectContainer') {
        return async (...args: Parameters<Engine['inspectContainer']>) => ({ ...(await target.inspectContainer(...args)), oomKilled: false });
      }
      if (property === 'openLabelledContainerEvents') {
        return async (...args: Parameters<Engine['openLabelledContainerEvents']>) => {
          const events = await target.openLabelledContainerEvents(...args);
          return {
            close: () => events.close(),
            async *[Symbol.asyncIterator]() {
              for await (const event of events) if (event.action !== 'oom') yield event;
            },
          };
        };
      }
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

describe('OOM kills under load', { skip: await requireEngine() }, () => {
  after(() => run.cleanup());

  // First in the file: the kernel keeps at most 10 OOM kill records in 5 s across the host, and the rounds below make 9.
  test('with the engine\'s OOM flag and events hidden, a task killed within moments of its start ends oom by the kernel\'s log', async () => {
    const masked = new TaskDriver({ engine: withoutOomWord(engine), ownerId: `test-${run.id}-masked` });
    const handle = await masked.start(spec(oomCommand, { resources: { memory: '16m' } }), { taskId: `${run.id}-masked-log`, output: 'engine-log' });
    try {
      assert.deepEqual(await handle.wait(), { kind: 'oom', exitCode: 137, hint: 'the task ran out of memory: raise its memory limit of 16 MiB' });
    } finally {
      await handle.destroy();
    }
  });

  test('with the engine\'s OOM flag and events hidden and no kernel log, an OOM kill counted in the task\'s cgroup while it ran makes it oom, whatever its exit code', async () => {
    const masked = new TaskDriver({ engine: withoutOomWord(engine), ownerId: `test-${run.id}-counter`, oomEvidence: { kernelLogPath: false } });
    // The child dd is killed; the shell lives on for a few of the driver's readings, then exits 3.
    const handle = await masked.start(spec(['sh', '-c', `${oomCommand.join(' ')}; sleep 3; exit 3`], { resources: { memory: '16m' } }), { taskId: `${run.id}-masked-counter`, output: 'engine-log' });
    try {
      assert.deepEqual(await handle.wait(), { kind: 'oom', exitCode: 3, hint: 'the task ran out of memory: raise its memory limit of 16 MiB' });
    } finally {
      await handle.destroy();
    }
  });

  test(`${AT_ONCE} tasks OOM-killed at once while busy containers load the engine all end oom, in ${ROUNDS} rounds`, async () => {
    const busy = await Promise.all([1, 2].map((n) => driver.start(spec(['sh', '-c', 'while :; do :; done'], { resources: { cpuMilli: 500 } }), { taskId: `${run.id}-busy-${n}`, output: 'engine-log' })));
    try {
      for (let round = 1; round <= ROUNDS; round++) {
        const handles = await Promise.all(
          Array.from({ length: AT_ONCE }, (_, n) => driver.start(spec(oomCommand, { resources: { memory: '16m' } }), { taskId: `${run.id}-oom-${round}-${n}`, output: 'engine-log' })),
        );
        const ends = await Promise.all(handles.map((handle) => handle.wait()));
        await Promise.all(handles.map((handle) => handle.destroy()));
        assert.deepEqual(ends.map((end) => end.kind), Array(AT_ONCE).fill('oom'), `round ${round}: ${JSON.stringify(ends)}`);
      }
    } finally {
      await Promise.all(busy.map((handle) => handle.destroy()));
    }
  });

  test('the engine replays a container\'s oom event to a labelled event stream opened after it ended, from a time before its start', async () => {
    const handle = await driver.start(spec(oomCommand, { resources: { memory: '16m' } }), { taskId: `${run.id}-replay`, output: 'engine-log' });
    try {
      assert.equal((await handle.wait()).kind, 'oom');
      const events = await engine.openLabelledContainerEvents([`${LABELS.ownerId}=test-${run.id}`, `${LABELS.taskId}=${run.id}-replay`], ['oom', 'die'], { sinceMs: handle.startedAt!.getTime() - 2000 });
      const seen: string[] = [];
      const timer = setTimeout(() => events.close(), 30_000);
      try {
        for await (const event of events) {
          if (event.containerId === handle.containerId) seen.push(event.action);
          if (seen.includes('oom') && seen.includes('die')) break;
        }
      } finally {
        clearTimeout(timer);
        events.close();
      }
      assert.deepEqual([...new Set(seen)].sort(), ['die', 'oom']);
    } finally {
      await handle.destroy();
    }
  });

  test('an OOM kill that a task survives is counted in its memory cgroup on this host while it runs', async () => {
    // The child dd is killed; the task's shell goes on, so its cgroup stays to be read.
    const handle = await driver.start(spec(['sh', '-c', `${oomCommand.join(' ')}; sleep 60`], { resources: { memory: '16m' } }), { taskId: `${run.id}-survivor`, output: 'engine-log' });
    const watch = new OomWatch({ kernelLogPath: false, intervalMs: 100, logger: silentLogger });
    try {
      watch.track(handle.containerId);
      await pollUntil('the OOM kill counted in the task\'s cgroup', () => (watch.countedKill(handle.containerId) ? true : undefined), { timeoutMs: 30_000 });
      await handle.stop({ graceMs: 0 });
      assert.equal((await handle.wait()).kind, 'cancelled');
    } finally {
      watch.close();
      await handle.destroy();
    }
  });
});
