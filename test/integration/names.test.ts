import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, describe, test } from 'node:test';
import { containerNameForTask, LABELS, parseContainerName } from '../../src/common/labels.js';
import type { ContainerSummary } from '../../src/engine/types.js';
import { TASK_ID, TaskDriver } from '../../src/tasks/driver.js';
import { agentProcesses, berth, berthInspect, cleanEnv, runBerth, tempDirs, type CliResult } from '../support/agent.js';
import { pollUntil, readAll, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { DOCKER_CLI } from '../support/registry.js';

// The test image's busybox runs its applets from sh only: exec `sh -c '…'`, not `touch` itself.

/**
 * Container names on one engine shared by several owners (an agent, `berth run`, library drivers):
 * one task id under different owners runs side by side; under one owner a second start is refused
 * as docker refuses a name in use; exec and stats find a task by its labels; an agent recovers a
 * container an earlier berth named `berth-<task id>`. Everything made here carries this run's label.
 *
 * The tasks wait for /tmp/go inside their own container, which the test creates with `berth exec`:
 * so the test, not the host's speed, decides when each ends, and a release that reached the wrong
 * container would show.
 */
const engine = testEngine();
const run = testRun(engine);
const RUN_LABEL = run.labelFilter;
const agents = agentProcesses();
const dirs = tempDirs();
const execFileAsync = promisify(execFile);

/** Prints "I am $WHO", waits for /tmp/go in its own container, prints "done $WHO", exits with `exitCode`. */
/**
 * What an exec runs to let a waiting task end: /tmp/go appears only after the exec's own shell has
 * exited, so the task's end (which ends every process in its container) cannot cut the exec short.
 */
const RELEASE = '(sleep 0.2; touch /tmp/go) >/dev/null 2>&1 &';
const waitingScript = (exitCode: number): string => `echo "I am $WHO"; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo "done $WHO"; exit ${exitCode}`;

/** `berth run` with this run's label, no pull, as a user types it. */
const cliRun = (...rest: string[]): Promise<CliResult> => runBerth(['run', '-l', RUN_LABEL, '--pull', 'never', ...rest], cleanEnv());

/** `berth exec|stats …` against the engine. */
const cli = (...args: string[]): Promise<CliResult> => runBerth(args, cleanEnv());

/** The containers of this run carrying task id `taskId`, of any owner. */
function containersOf(taskId: string): Promise<ContainerSummary[]> {
  return engine.listContainers({ all: true, labels: [RUN_LABEL, `${LABELS.taskId}=${taskId}`] });
}

/** Waits until `count` containers of the task run. */
function untilRunning(taskId: string, count: number): Promise<ContainerSummary[]> {
  return pollUntil(`${count} running container(s) of task ${taskId}`, async () => {
    const rows = (await containersOf(taskId)).filter((row) => row.state === 'running');
    return rows.length === count ? rows : undefined;
  }, { timeoutMs: 60_000, intervalMs: 100 });
}

function untilNoContainer(taskId: string): Promise<true> {
  return pollUntil(`no container of task ${taskId} left`, async () => ((await containersOf(taskId)).length === 0 ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
}

interface TaskView {
  id: string;
  state: string;
  exitCode?: number;
}

after(async () => {
  await agents.killAll();
  await run.cleanup();
  await dirs.removeAll();
});

const skip = await requireEngine();

describe('container names across owners', { skip }, () => {
  test('an agent, berth run and a library driver run one task id side by side, each with its own container, output and end; exec and stats pick the owner', async () => {
    const taskId = `${run.id}-shared`;
    const dataDir = await dirs.make('berth-names-');
    const agent = await agents.start(dataDir);
    const lib = new TaskDriver({ engine, ownerId: `lib-${run.id}` });

    const submitted = await berth(dataDir, ['submit', '-l', RUN_LABEL, '--name', taskId, '-e', 'WHO=agent', '--pull', 'never', TEST_IMAGE, 'sh', '-c', waitingScript(3)]);
    assert.equal(submitted.code, 0, submitted.stderr);
    const cliRunning = cliRun('--name', taskId, '-e', 'WHO=cli', TEST_IMAGE, 'sh', '-c', waitingScript(4));
    const libHandle = await lib.start({ image: TEST_IMAGE, command: ['sh', '-c', waitingScript(5)], env: { WHO: 'lib' }, labels: { ...run.labels }, pull: 'never' }, { taskId });
    const libOutput = readAll(libHandle.stdout);
    try {
      const rows = await untilRunning(taskId, 3);
      const owners = rows.map((row) => row.labels[LABELS.ownerId]!).sort();
      const agentId = owners.find((owner) => owner !== 'cli' && owner !== lib.ownerId);
      assert.ok(agentId, `the agent's container is among ${owners.join(', ')}`);
      assert.deepEqual(owners, [agentId, 'cli', lib.ownerId].sort());
      for (const row of rows) assert.deepEqual(row.names, [containerNameForTask({ taskId, ownerId: row.labels[LABELS.ownerId]! })]);

      // Without an owner nothing is guessed, and nothing is run anywhere.
      const ambiguous = await cli('exec', taskId, 'sh', '-c', 'touch /tmp/go');
      assert.equal(ambiguous.code, 125);
      assert.equal(ambiguous.stdout, '');
      assert.match(ambiguous.stderr, /^berth: task \S+ has containers of 3 owners \(.*\); name the owner \(--owner\) \[BERTH_TASK_AMBIGUOUS\]\n$/);
      for (const owner of owners) assert.ok(ambiguous.stderr.includes(owner), `the refusal names owner ${owner}`);
      const statsAmbiguous = await cli('stats', '--no-stream', taskId);
      assert.equal(statsAmbiguous.code, 125);
      assert.match(statsAmbiguous.stderr, /\[BERTH_TASK_AMBIGUOUS\]\n$/);
      for (const owner of owners) {
        const untouched = await cli('exec', '--owner', owner, taskId, 'sh', '-c', 'test -e /tmp/go');
        assert.equal(untouched.code, 1, `no /tmp/go in ${owner}'s container: ${untouched.stderr}`);
      }

      // With an owner: that owner's container, and only it.
      const cliContainer = rows.find((row) => row.labels[LABELS.ownerId] === 'cli')!;
      const stats = await cli('stats', '--no-stream', '--json', '--owner', 'cli', taskId);
      assert.equal(stats.code, 0, stats.stderr);
      assert.equal((JSON.parse(stats.stdout) as { containerId: string }).containerId, cliContainer.id);
      for (const [owner, who] of [['cli', 'cli'], [lib.ownerId, 'lib'], [agentId, 'agent']] as const) {
        const released = await cli('exec', '--owner', owner, taskId, 'sh', '-c', `echo $WHO; ${RELEASE}`);
        assert.equal(released.code, 0, released.stderr);
        assert.equal(released.stdout, `${who}\n`);
      }

      const cliResult = await cliRunning;
      assert.equal(cliResult.code, 4, cliResult.stderr);
      assert.equal(cliResult.stdout, 'I am cli\ndone cli\n');
      assert.deepEqual(await libHandle.wait(), { kind: 'failed', exitCode: 5 });
      assert.equal(await libOutput, 'I am lib\ndone lib\n');
      const ended = await pollUntil('the agent\'s task to end', async () => {
        const task = await berthInspect<TaskView>(dataDir, taskId);
        return task.state === 'exited' ? task : undefined;
      }, { timeoutMs: 60_000, intervalMs: 100 });
      assert.equal(ended.exitCode, 3);
      assert.equal((await berth(dataDir, ['logs', taskId])).stdout, 'I am agent\ndone agent\n');
    } finally {
      await libHandle.destroy();
      await agent.stop('SIGTERM');
    }
    await untilNoContainer(taskId);
  });
});

/** The longest id TASK_ID accepts that starts with `prefix` (padded with `pad`). */
function longestId(prefix: string, pad: string): string {
  let id = prefix;
  while (TASK_ID.test(id + pad)) id += pad;
  return id;
}

describe('the longest ids', { skip }, () => {
  test('the longest task and owner ids berth accepts make a name the engine accepts, and the task runs under it', async () => {
    const driver = new TaskDriver({ engine, ownerId: longestId(`o-${run.id}.`, 'o') });
    const taskId = longestId(`t-${run.id}.`, 't');
    const handle = await driver.start({ image: TEST_IMAGE, command: ['echo', 'long'], labels: { ...run.labels }, pull: 'never' }, { taskId });
    try {
      const output = readAll(handle.stdout);
      assert.deepEqual(await handle.wait(), { kind: 'success', exitCode: 0 });
      assert.equal(await output, 'long\n');
      const inspect = await engine.inspectContainer(handle.containerId);
      assert.equal(inspect.name, containerNameForTask({ taskId, ownerId: driver.ownerId }));
      assert.deepEqual(parseContainerName(inspect.name), { taskId, ownerId: driver.ownerId });
    } finally {
      await handle.destroy();
    }
  });
});

describe('one task id twice under one owner (berth run --name X twice)', { skip }, () => {
  test('a second run while the first runs is refused as docker refuses a name in use: exit 125, one line, nothing of the first printed or touched', async () => {
    const taskId = `${run.id}-twice`;
    const first = cliRun('--name', taskId, '-e', 'WHO=first', TEST_IMAGE, 'sh', '-c', waitingScript(0));
    const [container] = await untilRunning(taskId, 1);
    const second = await cliRun('--name', taskId, '-e', 'WHO=second', '-m', '64m', TEST_IMAGE, 'sh', '-c', 'echo "I am second"');
    assert.equal(second.code, 125);
    assert.equal(second.stdout, '', 'nothing of either task is printed');
    const name = containerNameForTask({ taskId, ownerId: 'cli' });
    assert.equal(
      second.stderr,
      `berth: task ${taskId} of cli already has a container (${name}, ${container!.id.slice(0, 12)}, running); remove it (docker rm -f ${name}) or choose another task id [BERTH_NAME_CONFLICT]\n`,
    );
    const [still] = await untilRunning(taskId, 1);
    assert.equal(still!.id, container!.id, 'the first run keeps its container');
    assert.equal((await engine.inspectContainer(container!.id)).hostConfig.memoryBytes, 0, 'with its own settings');

    const released = await cli('exec', taskId, 'sh', '-c', RELEASE);
    assert.equal(released.code, 0, released.stderr);
    const firstResult = await first;
    assert.equal(firstResult.code, 0, firstResult.stderr);
    assert.equal(firstResult.stdout, 'I am first\ndone first\n');
    await untilNoContainer(taskId);
  });

  test('a second run while the first\'s --keep container is there is refused, and prints nothing of the first', async () => {
    const taskId = `${run.id}-kept`;
    const first = await cliRun('--keep', '--name', taskId, TEST_IMAGE, 'sh', '-c', 'echo "I am first"; exit 6');
    assert.equal(first.code, 6, first.stderr);
    assert.equal(first.stdout, 'I am first\n');
    const [kept] = await containersOf(taskId);
    assert.ok(kept);
    const second = await cliRun('--name', taskId, TEST_IMAGE, 'sh', '-c', 'echo "I am second"');
    assert.equal(second.code, 125);
    assert.equal(second.stdout, '');
    assert.match(second.stderr, /^berth: task \S+ of cli already has a container \(\S+, [0-9a-f]{12}, exited\); remove it \(docker rm -f \S+\) or choose another task id \[BERTH_NAME_CONFLICT\]\n$/);
    const after = await engine.inspectContainer(kept.id);
    assert.deepEqual({ status: after.status, exitCode: after.exitCode }, { status: 'exited', exitCode: 6 }, 'the kept container is untouched');
    assert.equal((await containersOf(taskId)).length, 1);
    await engine.removeContainer(kept.id);
  });

  test('two concurrent runs with one name: exactly one runs, the other exits 125 with nothing printed, and nothing is left', async () => {
    const taskId = `${run.id}-race`;
    const runs = ['1', '2'].map((who) => cliRun('--name', taskId, '-e', `WHO=${who}`, TEST_IMAGE, 'sh', '-c', waitingScript(0)));
    // The winner waits for its release; the loser has ended by then.
    const [winner] = await untilRunning(taskId, 1);
    const loser = await Promise.race(runs.map((r, index) => r.then((result) => ({ result, index }))));
    assert.equal(loser.result.code, 125, loser.result.stderr);
    assert.equal(loser.result.stdout, '');
    assert.match(loser.result.stderr, /^berth: task \S+ of cli already has a container .*\[BERTH_NAME_CONFLICT\]\n$/);
    assert.equal((await containersOf(taskId)).length, 1, 'the loser left no container');
    const released = await cli('exec', taskId, 'sh', '-c', RELEASE);
    assert.equal(released.code, 0, released.stderr);
    const won = await runs[1 - loser.index]!;
    const who = String(2 - loser.index);
    assert.equal(won.code, 0, won.stderr);
    assert.equal(won.stdout, `I am ${who}\ndone ${who}\n`, 'the winner printed its own output');
    assert.equal((await engine.inspectContainer(winner!.id).catch(() => undefined)), undefined, 'the winner removed its container');
    await untilNoContainer(taskId);
  });
});

describe('containers named by an earlier berth (berth-<task id>)', { skip }, () => {
  test('an agent recovers its task from a container under the old name, execs into it and follows it to its real end with all its output', async () => {
    const dataDir = await dirs.make('berth-oldname-');
    const first = await agents.start(dataDir);
    const submitted = await berth(dataDir, ['submit', '-l', RUN_LABEL, '--name', `${run.id}-old`, '-e', 'WHO=old', '--pull', 'never', TEST_IMAGE, 'sh', '-c', waitingScript(9)]);
    assert.equal(submitted.code, 0, submitted.stderr);
    const taskId = submitted.stdout.trim();
    await pollUntil('the first line to be stored', async () => ((await berth(dataDir, ['logs', taskId])).stdout === 'I am old\n' ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
    assert.equal(await first.stop('SIGTERM'), 0, first.stderr());

    // The agent is gone and its task runs on: give its container the name an earlier berth gave it.
    const [container] = await untilRunning(taskId, 1);
    assert.deepEqual(container!.names, [containerNameForTask({ taskId, ownerId: container!.labels[LABELS.ownerId]! })]);
    await execFileAsync(DOCKER_CLI, ['rename', container!.id, `berth-${taskId}`]);
    assert.equal((await engine.inspectContainer(`berth-${taskId}`)).id, container!.id);

    const second = await agents.start(dataDir);
    try {
      const recovered = second.logLines().find((line) => line.msg === 'recovered tasks');
      assert.equal(recovered?.lost, 0, JSON.stringify(recovered));
      assert.equal((await berthInspect<TaskView>(dataDir, taskId)).state, 'running');
      // exec finds it by its labels too.
      const released = await cli('exec', taskId, 'sh', '-c', `echo $WHO; ${RELEASE}`);
      assert.equal(released.code, 0, released.stderr);
      assert.equal(released.stdout, 'old\n');
      const logs = await berth(dataDir, ['logs', '-f', taskId]);
      assert.equal(logs.stdout, 'I am old\ndone old\n');
      const ended = await pollUntil('the task to end', async () => {
        const task = await berthInspect<TaskView>(dataDir, taskId);
        return task.state === 'exited' ? task : undefined;
      }, { timeoutMs: 60_000, intervalMs: 100 });
      assert.equal(ended.exitCode, 9);
      await untilNoContainer(taskId);
    } finally {
      await second.stop('SIGTERM');
    }
  });

  test('a driver recovers only its own old-named container: its owner\'s, not another owner\'s with the task id', async () => {
    const taskId = `${run.id}-lib-old`;
    const mine = new TaskDriver({ engine, ownerId: `mine-${run.id}` });
    const theirs = new TaskDriver({ engine, ownerId: `theirs-${run.id}` });
    const id = await engine.createContainer(`berth-${taskId}`, {
      Image: TEST_IMAGE, Cmd: ['sleep', '300'], Labels: { ...run.labels, [LABELS.managed]: 'true', [LABELS.taskId]: taskId, [LABELS.ownerId]: mine.ownerId },
      Tty: false, OpenStdin: false, StdinOnce: false, AttachStdin: false, AttachStdout: false, AttachStderr: false, HostConfig: { NetworkMode: 'none' },
    });
    await engine.startContainer(id);
    const spec = { image: TEST_IMAGE, command: ['sleep', '300'], labels: { ...run.labels }, pull: 'never' as const };
    assert.equal(await theirs.recover(taskId, spec), undefined, 'another owner\'s container is not recovered');
    const handle = await mine.recover(taskId, spec);
    assert.ok(handle, 'the old-named container is recovered by its labels');
    try {
      assert.equal(handle.containerId, id);
      // sleep as pid 1 ignores SIGTERM: a short grace, then SIGKILL.
      await handle.stop({ graceMs: 500 });
      assert.equal((await handle.wait()).kind, 'cancelled');
    } finally {
      await handle.destroy();
    }
    await untilNoContainer(taskId);
  });

  test('of an owner\'s old-named and new-named containers of one task, exec takes the running one and recover the one under the task\'s name', async () => {
    const taskId = `${run.id}-both`;
    const ownerId = `both-${run.id}`;
    const driver = new TaskDriver({ engine, ownerId });
    const body = (cmd: string[]) => ({
      Image: TEST_IMAGE, Cmd: cmd, Labels: { ...run.labels, [LABELS.managed]: 'true', [LABELS.taskId]: taskId, [LABELS.ownerId]: ownerId },
      Tty: false, OpenStdin: false, StdinOnce: false, AttachStdin: false, AttachStdout: false, AttachStderr: false, HostConfig: { NetworkMode: 'none' },
    });
    const oldId = await engine.createContainer(`berth-${taskId}`, body(['sleep', '300']));
    await engine.startContainer(oldId);
    // Created after the old one and not started: the newest, but not running.
    const newId = await engine.createContainer(containerNameForTask({ taskId, ownerId }), body(['true']));
    const viaExec = await cli('exec', '--owner', ownerId, taskId, 'sh', '-c', 'echo $HOSTNAME');
    assert.equal(viaExec.code, 0, viaExec.stderr);
    assert.equal(viaExec.stdout, `${oldId.slice(0, 12)}\n`, 'exec ran in the running (old-named) container');

    const spec = { image: TEST_IMAGE, command: ['true'], labels: { ...run.labels }, pull: 'never' as const };
    const named = await driver.recover(taskId, spec);
    assert.equal(named?.containerId, newId, 'recover takes the container under the task\'s name first (and starts it, as it was created)');
    assert.deepEqual(await named.wait(), { kind: 'success', exitCode: 0 });
    await named.destroy();
    const old = await driver.recover(taskId, spec);
    assert.equal(old?.containerId, oldId, 'with that one gone, the old-named one is found by its labels');
    await old.kill();
    assert.equal((await old.wait()).kind, 'failed');
    await old.destroy();
    await untilNoContainer(taskId);
  });
});
