import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { containerNameForTask, LABELS } from '../../src/common/labels.js';
import { META_KEYS } from '../../src/state/meta.js';

import { agentProcesses, berth, berthInspect, berthJson, httpGet, openAgentStoreIn, tempDirs, writeAgentConfig } from '../support/agent.js';
import { pollUntil, requireEngine, startTestContainer, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

/**
 * The agent survives its own crash: tasks submitted through the real CLI to a real agent process,
 * the agent killed with SIGKILL while they run (some finish while it is down), and a new agent on
 * the same data directory that must pick every task up with its real exit code, every line of its
 * output exactly once, and exact image holders, leaving no container behind.
 */

const engine = testEngine();
const run = testRun(engine);
const RUN_LABEL = run.labelFilter;
const agents = agentProcesses();
const dirs = tempDirs();

interface TaskView {
  id: string;
  state: string;
  endState?: { kind: string; exitCode?: number };
  exitCode?: number;
  finishedAt?: string;
}
interface ImageView {
  imageId: string;
  refs: string[];
  holders: string[];
}
interface LogRecord {
  stream: 'stdout' | 'stderr';
  timestamp: string;
  text: string;
}

// Decided once, before any suite is declared: a top-level await between suites lets the runner finish the file early.
const skip = await requireEngine();

after(async () => {
  await agents.killAll();
  await run.cleanup();
  await dirs.removeAll();
});

/**
 * The tasks wait on files in a directory bind-mounted read-only at /gate, so that the test, not the
 * host's speed, decides when each ends: `short` opens while the agent is down, `finish` once the
 * second agent has taken over.
 */
const waitFor = (gate: string): string => `while [ ! -e /gate/${gate} ]; do sleep 0.05; done`;
/** Numbered lines, one every 0.05 s, until the finish gate opens; then the count, so the test knows every line that was written. */
const numberedUntilFinish = (body: string): string => `i=0; while [ ! -e /gate/finish ]; do i=$((i+1)); ${body}; sleep 0.05; done; echo "total $i"`;

/**
 * Puts the store and the engine in the state a crash leaves between recording a task's end and
 * removing its container: the task has ended, but its exited container is still there and its image
 * holder still recorded. The next agent must remove the container and release the image.
 */
async function simulateCutShortRemoval(dataDir: string, taskId: string): Promise<void> {
  const store = openAgentStoreIn(dataDir);
  try {
    assert.equal(store.tasks.get(taskId)?.state, 'exited');
    const imageId = (await engine.inspectImage(TEST_IMAGE)).id;
    store.images.addHolder({ imageId, imageRef: TEST_IMAGE, taskId });
    const ownerId = store.meta.get(META_KEYS.agentId);
    assert.ok(ownerId);
    const containerId = await startTestContainer(engine, run, {
      cmd: ['true'],
      name: containerNameForTask({ taskId, ownerId }),
      labels: { [LABELS.managed]: 'true', [LABELS.taskId]: taskId, [LABELS.ownerId]: ownerId },
    });
    await engine.waitContainer(containerId);
  } finally {
    store.close();
  }
}

/** The container of a task of this run, found by its labels (the agent's id, part of its name, is the agent's own). */
async function containerOf(taskId: string): Promise<string> {
  const rows = await engine.listContainers({ all: true, labels: [RUN_LABEL, `${LABELS.taskId}=${taskId}`] });
  assert.equal(rows.length, 1, `one container of task ${taskId}`);
  return rows[0]!.id;
}

describe('recovery after the agent is killed with SIGKILL', { skip }, () => {
  test('every task ends with its real exit code, every output line exactly once, exact image holders, no container left', async () => {
    const dir = await dirs.make('berth-rec-');
    const gateDir = await dirs.make('berth-gate-');
    const config = await writeAgentConfig(dir, `policy:\n  allowedBindSources: [${JSON.stringify(gateDir)}]\n`);
    const first = await agents.start(dir, ['--config', config]);
    const id = (name: string): string => `rec-${run.id}-${name}`;
    const tasks: Record<string, { script: string; exitCode: number }> = {
      // Ends before the crash.
      quick: { script: 'echo quick; exit 4', exitCode: 4 },
      // These end while the agent is down: their exit codes and last lines come from the engine.
      short1: { script: `${waitFor('short')}; echo done 1; exit 3`, exitCode: 3 },
      short2: { script: `echo start 2; ${waitFor('short')}; echo done 2 >&2; exit 5`, exitCode: 5 },
      // These write before, during and after the crash.
      long1: { script: `${numberedUntilFinish('echo "line $i"')}; exit 7`, exitCode: 7 },
      long2: { script: `${numberedUntilFinish('echo "out $i"; echo "err $i" >&2')} >&2; exit 6`, exitCode: 6 },
      // Its container is removed while the agent is down: it is recorded as lost, and lets go of the image.
      gone: { script: `echo going; ${waitFor('never')}`, exitCode: -1 },
    };
    const names = Object.keys(tasks);
    const submitted = await Promise.all(
      names.map((name) =>
        berth(dir, ['submit', '-l', RUN_LABEL, '--name', id(name), '--stop-timeout', '1', '--mount', `type=bind,source=${gateDir},target=/gate,readonly`, TEST_IMAGE, 'sh', '-c', tasks[name]!.script]),
      ),
    );
    for (const result of submitted) assert.equal(result.code, 0, result.stderr);

    const live = ['short1', 'short2', 'long1', 'long2', 'gone'].map(id);
    let lastImages = '';
    const holdersOfTestImage = async (): Promise<string[]> => {
      const images = await berthJson<ImageView[]>(dir, ['images']);
      lastImages = JSON.stringify(images);
      const holders = images.filter((i) => i.refs.includes(TEST_IMAGE)).flatMap((i) => i.holders);
      const ours = holders.filter((h) => h.startsWith(`rec-${run.id}-`));
      assert.equal(new Set(ours).size, ours.length, `no task holds the image twice: ${ours.join(', ')}`);
      return ours.sort();
    };
    const expectHolders = (what: string, expected: readonly string[]): Promise<unknown> =>
      pollUntil(what, async () => ((await holdersOfTestImage()).join() === [...expected].sort().join() ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 }).catch(
        (error: Error) => {
          throw new Error(`${error.message}; the agent's images: ${lastImages}`);
        },
      );

    // Before the crash: the quick task has ended (and released the image); the others run, each holding it once.
    await pollUntil(
      'the quick task to end and the others to run',
      async () => {
        const states = await berthJson<TaskView[]>(dir, ['ps', '-a', '--filter', `label=${RUN_LABEL}`]);
        const byId = new Map(states.map((t) => [t.id, t.state]));
        return byId.get(id('quick')) === 'exited' && live.every((t) => byId.get(t) === 'running') ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 100 },
    );
    await expectHolders('holders to be the five running tasks', live);

    first.child.kill('SIGKILL');
    assert.equal(await first.exited, null, 'the agent died of SIGKILL');
    for (const name of ['short1', 'short2', 'long1', 'long2', 'gone']) {
      assert.equal((await engine.inspectContainer(await containerOf(id(name)))).status, 'running', `${name} was running when the agent died`);
    }

    // While the agent is down: the long tasks go on writing, the short ones end, and one container vanishes.
    const engineLines = async (name: string, stream?: 'stdout' | 'stderr'): Promise<number> => {
      let count = 0;
      for await (const entry of engine.logEntries(await containerOf(id(name)))) if (entry.data.length > 0 && (stream === undefined || entry.stream === stream)) count++;
      return count;
    };
    const linesAtCrash = await engineLines('long1');
    await pollUntil('long1 to write while the agent is down', async () => ((await engineLines('long1')) >= linesAtCrash + 10 ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
    await writeFile(path.join(gateDir, 'short'), '');
    const engineExitCodes = new Map<string, number>();
    const engineFinishedAt = new Map<string, string>();
    await pollUntil(
      'the short tasks to end in the engine',
      async () => {
        for (const name of ['short1', 'short2']) {
          const container = await engine.inspectContainer(await containerOf(id(name)));
          if (container.status === 'exited') {
            engineExitCodes.set(name, container.exitCode);
            engineFinishedAt.set(name, container.finishedAt!.toISOString());
          }
        }
        return engineExitCodes.size === 2 ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    assert.equal(engineExitCodes.get('short1'), 3);
    assert.equal(engineExitCodes.get('short2'), 5);
    assert.equal(await engine.removeContainer(await containerOf(id('gone'))), 'removed');
    await simulateCutShortRemoval(dir, id('quick'));

    const second = await agents.start(dir, ['--config', config]);
    const recovered = second.logLines().find((line) => line.msg === 'recovered tasks');
    assert.ok(recovered, 'the agent logs what it recovered');
    assert.equal(recovered.lost, 1);
    assert.equal(recovered.pending, 0);
    assert.equal(Number(recovered.resumed) + Number(recovered.ended), 4);

    // The short tasks' ends are recorded and their containers removed, the lost one lets go, and so
    // does the quick one whose removal was cut short: the long ones hold the image once each.
    await expectHolders('holders to be the two long tasks', [id('long1'), id('long2')]);
    for (const name of ['short1', 'short2']) {
      const task = await berthInspect<TaskView>(dir, id(name));
      assert.equal(task.state, 'exited');
      assert.equal(task.exitCode, engineExitCodes.get(name), `${name} ends with the exit code the engine saw`);
      // It ended while the agent was down: its recorded end is the engine's, not the recovery's.
      assert.equal(task.finishedAt, engineFinishedAt.get(name), `${name} ends when the engine saw it end`);
    }
    // The second agent follows the long tasks' output live before they end.
    const linesAtRestart = await engineLines('long1');
    // Each long task is measured against its own count: on a loaded host one may have written fewer lines than the other.
    const long2ErrLinesAtRestart = await engineLines('long2', 'stderr');
    await pollUntil(
      'the second agent to store new lines of long1',
      async () => {
        const result = await berth(dir, ['logs', id('long1')]);
        return result.stdout.split('\n').filter((l) => l !== '').length > linesAtRestart ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    await writeFile(path.join(gateDir, 'finish'), '');

    const ended = await pollUntil(
      'every task to end',
      async () => {
        const states = await berthJson<TaskView[]>(dir, ['ps', '-a', '--filter', `label=${RUN_LABEL}`]);
        return states.length === names.length && states.every((t) => t.state === 'exited' || t.state === 'lost') ? states : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    const lost = ended.find((t) => t.id === id('gone'))!;
    assert.equal(lost.state, 'lost');
    assert.equal(lost.endState?.kind, 'lost');
    assert.equal(lost.exitCode, undefined);
    for (const name of names.filter((n) => n !== 'gone')) {
      const task = ended.find((t) => t.id === id(name))!;
      assert.equal(task.exitCode, tasks[name]!.exitCode, `${name} ends with its real exit code`);
      assert.deepEqual(task.endState, { kind: 'failed', exitCode: tasks[name]!.exitCode });
    }

    // Output: every line exactly once, in order, on its own stream, including what was written while the agent was down.
    const output = async (name: string): Promise<{ stdout: string[]; stderr: string[] }> => {
      const result = await berth(dir, ['logs', '--json', id(name)]);
      assert.equal(result.code, 0, result.stderr);
      const records = result.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as LogRecord);
      const timestamps = records.map((r) => `${r.stream} ${r.timestamp}`);
      assert.equal(new Set(timestamps).size, timestamps.length, `${name}: no record twice`);
      return {
        stdout: records.filter((r) => r.stream === 'stdout').map((r) => r.text.trimEnd()),
        stderr: records.filter((r) => r.stream === 'stderr').map((r) => r.text.trimEnd()),
      };
    };
    /** `<prefix> 1` … `<prefix> n` then `total n`, where n is what the task says it wrote. */
    const numberedLines = (lines: string[], prefix: string, atRestart: number): string[] => {
      const total = /^total (\d+)$/.exec(lines.at(-1) ?? '');
      assert.ok(total, `the last line is the count: ${lines.at(-1)}`);
      const n = Number(total[1]);
      assert.ok(n > atRestart, `${prefix}: lines were written before, during and after the crash (${n}, ${atRestart} at the restart)`);
      return [...Array.from({ length: n }, (_, i) => `${prefix} ${i + 1}`), `total ${n}`];
    };
    assert.deepEqual(await output('quick'), { stdout: ['quick'], stderr: [] });
    assert.deepEqual(await output('gone'), { stdout: ['going'], stderr: [] });
    assert.deepEqual(await output('short1'), { stdout: ['done 1'], stderr: [] });
    assert.deepEqual(await output('short2'), { stdout: ['start 2'], stderr: ['done 2'] });
    const long1 = await output('long1');
    assert.deepEqual(long1.stdout, numberedLines(long1.stdout, 'line', linesAtRestart));
    assert.deepEqual(long1.stderr, []);
    const long2 = await output('long2');
    const long2Total = numberedLines(long2.stderr, 'err', long2ErrLinesAtRestart).length - 1;
    assert.deepEqual(long2.stdout, Array.from({ length: long2Total }, (_, i) => `out ${i + 1}`));
    assert.deepEqual(long2.stderr, numberedLines(long2.stderr, 'err', long2ErrLinesAtRestart));
    // The plain command splits the streams the same way.
    const plain = await berth(dir, ['logs', id('long2')]);
    assert.equal(plain.stdout, long2.stdout.map((l) => `${l}\n`).join(''));
    assert.equal(plain.stderr, long2.stderr.map((l) => `${l}\n`).join(''));

    // Once every task has ended, nobody holds the image and no container is left.
    await expectHolders('every holder to be released', []);
    await pollUntil('every container to be removed', async () => ((await engine.listContainers({ all: true, labels: [run.labelFilter] })).length === 0 ? true : undefined), {
      timeoutMs: 30_000,
      intervalMs: 100,
    });

    second.child.kill('SIGTERM');
    assert.equal(await second.exited, 0);
  });
});

describe('a stop cut short by a crash', { skip }, () => {
  test('a task that was stopping when the agent died is stopped again by the next agent and ends as cancelled', async () => {
    const dir = await dirs.make('berth-stop-');
    const config = await writeAgentConfig(dir, '');
    const first = await agents.start(dir, ['--config', config]);
    const taskId = `rec-${run.id}-stopping`;
    // The shell is PID 1 and ignores SIGTERM: only the SIGKILL after the grace period ends it.
    const submitted = await berth(dir, ['submit', '-l', RUN_LABEL, '--name', taskId, '--stop-timeout', '8', TEST_IMAGE, 'sh', '-c', 'echo up; while true; do sleep 0.05; done']);
    assert.equal(submitted.code, 0, submitted.stderr);
    await pollUntil('the task to run', async () => ((await berthInspect<TaskView>(dir, taskId)).state === 'running' ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });

    // `berth stop` waits out the grace period; the agent dies while the task is stopping.
    const stopping = berth(dir, ['stop', taskId]);
    // Polled over the agent's socket, not through a CLI process per poll: on a loaded host spawning
    // the CLI can take longer than the grace period, and the stop would finish before the kill.
    const token = (await readFile(path.join(dir, 'token'), 'utf8')).trim();
    await pollUntil(
      'the task to be stopping',
      async () => {
        const view = await httpGet(first.socketPath, `/v1/tasks/${taskId}`, token);
        return (JSON.parse(view.body) as { task: TaskView }).task.state === 'stopping' ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 20 },
    );
    first.child.kill('SIGKILL');
    assert.equal(await first.exited, null);
    assert.notEqual((await stopping).code, 0, 'the stop command loses its agent');

    await agents.start(dir, ['--config', config]);
    const task = await pollUntil(
      'the task to end',
      async () => {
        const view = await berthInspect<TaskView>(dir, taskId);
        return view.state === 'exited' || view.state === 'lost' ? view : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    assert.equal(task.endState?.kind, 'cancelled', JSON.stringify(task));
    await pollUntil('the container to be removed', async () => ((await engine.listContainers({ all: true, labels: [run.labelFilter] })).length === 0 ? true : undefined), {
      timeoutMs: 30_000,
      intervalMs: 100,
    });
  });
});
