import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import type { StatsRecord } from '../../src/cli/stats-format.js';
import { containerNameForTask } from '../../src/common/labels.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import type { TaskHandle } from '../../src/tasks/handle.js';
import { BERTH_CLI } from '../support/agent.js';
import { pollUntil, requireEngine, startTestContainer, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

/**
 * `berth stats` as a user runs it: the CLI in a child process (stdout a pipe, so lines rather than
 * a redrawn table), against task containers made by a TaskDriver (as `berth run --name` and the
 * agent make them) and a look-alike container that is not berth's.
 */
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const MiB = 1024 * 1024;
/** How long the engine may take to give what a test waits for (it samples once a second). */
const DEADLINE_MS = 60_000;
const engine = testEngine();
const run = testRun(engine);
const driver = new TaskDriver({ engine, ownerId: 'cli' });
const handles: TaskHandle[] = [];

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A CLI process whose output is read as it comes. */
interface RunningCli {
  child: ChildProcess;
  /** stdout's complete lines so far. */
  lines(): string[];
  result: Promise<CliResult>;
}

function startBerth(args: string[]): RunningCli {
  const child = spawn(process.execPath, [...BERTH_CLI, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const result = once(child, 'close').then(([code]) => ({ code: code as number | null, stdout, stderr }));
  return { child, lines: () => stdout.split('\n').slice(0, -1), result };
}

const berth = (args: string[]): Promise<CliResult> => startBerth(args).result;

/** The CLI's exit, or a failure naming `what` (and the child killed) when it does not come within the deadline. */
async function exitOf(cli: RunningCli, what: string): Promise<CliResult> {
  let exited: CliResult | undefined;
  void cli.result.then((result) => (exited = result));
  try {
    await pollUntil(what, () => exited, { timeoutMs: DEADLINE_MS, intervalMs: 50 });
  } finally {
    if (exited === undefined) cli.child.kill('SIGKILL');
  }
  return exited!;
}

const records = (cli: RunningCli): StatsRecord[] => cli.lines().map((line) => JSON.parse(line) as StatsRecord);

/** Starts a berth task container labelled with this run, as `berth run --name <taskId>` would. */
async function startTask(suffix: string, command: string[], resources: TaskSpec['resources'] = {}): Promise<TaskHandle> {
  const handle = await driver.start({ image: TEST_IMAGE, command, resources, labels: { ...run.labels }, pull: 'never' }, { taskId: `${run.id}-${suffix}` });
  // Nobody reads the task's own output here.
  handle.stdout.resume();
  handle.stderr.resume();
  handles.push(handle);
  return handle;
}

async function stopTask(task: TaskHandle): Promise<void> {
  // sleep as PID 1 ignores SIGTERM: kill at once.
  await task.stop({ graceMs: 0 });
  await task.wait();
}

describe('berth stats (the CLI, as a user runs it)', { skip: await requireEngine() }, () => {
  after(async () => {
    await Promise.all(handles.map((h) => h.destroy()));
    await run.cleanup();
  });

  test('--no-stream --json prints one sample of a sleeping task: its memory limit, its pids, CPU measured over an interval', async () => {
    const task = await startTask('limited', ['sleep', '300'], { memory: '64m' });
    const result = await berth(['stats', '--no-stream', '--json', task.taskId]);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.split('\n').filter((line) => line !== '');
    assert.equal(lines.length, 1, result.stdout);
    const record = JSON.parse(lines[0]!) as StatsRecord;
    assert.equal(record.taskId, task.taskId);
    assert.equal(record.containerId, task.containerId);
    assert.equal(record.memoryLimitBytes, 64 * MiB);
    assert.ok(record.memoryBytes > 0 && record.memoryBytes < 64 * MiB, `memory ${record.memoryBytes}`);
    assert.equal(record.memoryPercent, (record.memoryBytes / record.memoryLimitBytes) * 100);
    assert.ok(record.pids >= 1, `pids ${record.pids}`);
    // The engine's first reading of a stream has no previous one; --no-stream waits for one that has.
    assert.notEqual(record.previousAt, null);
    assert.ok(record.onlineCpus >= 1);
    assert.equal(record.networkRxBytes, 0, 'the task has no network');
  });

  test('with no task ids, shows every running berth task (a library driver\'s too), not the stopped ones, and --format picks the columns', async () => {
    const running = await startTask('all-running', ['sleep', '300']);
    const stopped = await startTask('all-stopped', ['true']);
    await stopped.wait();
    const result = await berth(['stats', '--no-stream', '--no-trunc', '--format', '{{.Name}} {{.Container}} {{.PIDs}}']);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.split('\n');
    assert.ok(lines.includes(`${running.taskId} ${running.containerId} 1`), result.stdout);
    assert.ok(!lines.some((line) => line.startsWith(`${stopped.taskId} `)), result.stdout);
    await stopTask(running);
  });

  test('--no-stream prints a table of every task in the order given, each once', async () => {
    const limited = await startTask('table-a', ['sleep', '300'], { memory: '64m' });
    const other = await startTask('table-b', ['sleep', '300']);
    const result = await berth(['stats', '--no-stream', other.taskId, limited.taskId, other.taskId]);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 3, result.stdout);
    assert.match(lines[0]!, /^TASK ID +CPU % +MEM USAGE \/ LIMIT +MEM % +NET I\/O +BLOCK I\/O +PIDS$/);
    assert.ok(lines[1]!.startsWith(`${other.taskId} `), lines[1]);
    assert.ok(lines[2]!.startsWith(`${limited.taskId} `), lines[2]);
    assert.match(lines[2]!, /\d+(\.\d+)?%\s+\S+ \/ 64MiB\s+\d+\.\d\d%\s+0B \/ 0B\s+\S+ \/ \S+\s+[1-9]\d*$/);
  });

  test('a task that burns CPU shows CPU above 0; Ctrl-C then ends the stream with 0, as docker stats does', async () => {
    const burner = await startTask('burner', ['sh', '-c', 'while :; do :; done'], { cpuMilli: 500 });
    const cli = startBerth(['stats', '--json', burner.taskId]);
    try {
      // Over an interval: the first sample of a stream has none, and its CPU % spans the container's life.
      const busy = await pollUntil('a sample with CPU above 0', () => records(cli).find((record) => record.previousAt !== null && record.cpuPercent > 0), {
        timeoutMs: DEADLINE_MS,
        intervalMs: 50,
      });
      assert.equal(busy.taskId, burner.taskId);
      cli.child.kill('SIGINT');
      const result = await exitOf(cli, 'the CLI to exit after Ctrl-C');
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stderr, '');
    } finally {
      cli.child.kill('SIGKILL');
      await burner.destroy();
    }
  });

  test('a task\'s lines end when its container stops, the others go on, and the command ends when all have stopped', async () => {
    const first = await startTask('ends-first', ['sleep', '300']);
    const second = await startTask('ends-second', ['sleep', '300']);
    const cli = startBerth(['stats', first.taskId, second.taskId]);
    try {
      const linesOf = (task: TaskHandle): string[] => cli.lines().filter((line) => line.startsWith(`${task.taskId} `));
      const moreLinesOf = (task: TaskHandle, count: number): Promise<true> => {
        const seen = linesOf(task).length;
        return pollUntil(`${count} more lines of ${task.taskId}`, () => (linesOf(task).length >= seen + count ? true : undefined), { timeoutMs: DEADLINE_MS, intervalMs: 50 });
      };
      await Promise.all([moreLinesOf(first, 1), moreLinesOf(second, 1)]);
      assert.match(cli.lines()[0]!, /^TASK ID +CPU %/);
      await stopTask(first);
      // Lines of the first written before it stopped may still be on their way: let two of the second pass.
      await moreLinesOf(second, 2);
      const linesOfFirst = linesOf(first).length;
      await moreLinesOf(second, 2);
      assert.equal(linesOf(first).length, linesOfFirst, 'no line of a stopped task');
      await stopTask(second);
      const result = await exitOf(cli, 'the CLI to exit once every task stopped');
      assert.equal(result.code, 0, result.stderr);
    } finally {
      cli.child.kill('SIGKILL');
    }
  });

  test('does not take a container under a task\'s name that is not berth\'s for the task, and leaves it alone', async () => {
    const taskId = `${run.id}-foreign`;
    // The name a task's container has (today's and an earlier berth's), but no io.berth.* labels: someone else's.
    const id = await startTestContainer(engine, run, { name: containerNameForTask({ taskId, ownerId: 'cli' }), cmd: ['sleep', '300'] });
    const old = await startTestContainer(engine, run, { name: `berth-${taskId}`, cmd: ['sleep', '300'] });
    const result = await berth(['stats', '--no-stream', taskId]);
    assert.equal(result.code, 125);
    assert.match(result.stderr, /^berth: task .* has no container .*\[BERTH_TASK_NOT_FOUND\]\n$/);
    assert.equal(result.stdout, '');
    assert.equal((await engine.inspectContainer(id)).running, true);
    assert.equal((await engine.inspectContainer(old)).running, true);
  });

  test('refuses a task that has no container, and streams nothing for the others', async () => {
    const present = await startTask('present', ['sleep', '300']);
    const result = await berth(['stats', present.taskId, `${run.id}-absent`]);
    assert.equal(result.code, 125);
    assert.match(result.stderr, /^berth: task .*-absent has no container .*\[BERTH_TASK_NOT_FOUND\]\n$/);
    assert.equal(result.stdout, '');
  });

  test('refuses a task whose container has stopped', async () => {
    const stopped = await startTask('stopped', ['true']);
    assert.deepEqual(await stopped.wait(), { kind: 'success', exitCode: 0 });
    const result = await berth(['stats', stopped.taskId]);
    assert.equal(result.code, 125);
    assert.match(result.stderr, /^berth: cannot read the stats of task .*exited, not running \[BERTH_TASK_STATE\]\n$/);
  });

  test('bad usage exits 2 and names the flag or argument', async () => {
    const unknown = await berth(['stats', '--no-such-flag', `${run.id}-x`]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /--no-such-flag/);
    const badFormat = await berth(['stats', '--no-stream', '--format', '{{.Nope}}']);
    assert.equal(badFormat.code, 2);
    assert.match(badFormat.stderr, /^berth: --format: unknown field "Nope" .*known: ID, Name, Container, CPUPerc/);
    const malformed = await berth(['stats', 'not/a task']);
    assert.equal(malformed.code, 2);
    assert.match(malformed.stderr, /task-id: "not\/a task" must match/);
  });
});
