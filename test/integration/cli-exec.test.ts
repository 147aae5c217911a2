import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { containerNameForTask } from '../../src/common/labels.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import type { TaskHandle } from '../../src/tasks/handle.js';
import { BERTH_CLI } from '../support/agent.js';
import { requireEngine, startTestContainer, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

/**
 * `berth exec` as a user runs it: the CLI in a child process, against task containers made by a
 * TaskDriver (as `berth run --name` and the agent make them) and a look-alike container that is not
 * berth's. The CLI runs from source, so the test exercises this checkout whether or not dist/ is built.
 */
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const engine = testEngine();
const run = testRun(engine);
const driver = new TaskDriver({ engine, ownerId: 'cli' });

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function berth(args: string[], options: { input?: string; onStdout?: (text: string, pid: number) => void } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [...BERTH_CLI, ...args], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    options.onStdout?.(stdout, child.pid!);
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  if (options.input !== undefined) child.stdin.end(options.input);
  else child.stdin.end();
  return once(child, 'close').then(([code]) => ({ code: code as number | null, stdout, stderr }));
}

/** Starts a berth task container labelled with this run, as `berth run --name <taskId>` would. */
async function startTask(suffix: string, command: string[]): Promise<TaskHandle> {
  const handle = await driver.start({ image: TEST_IMAGE, command, labels: { ...run.labels }, pull: 'never' }, { taskId: `${run.id}-${suffix}` });
  // Nobody reads the task's own output here.
  handle.stdout.resume();
  handle.stderr.resume();
  handles.push(handle);
  return handle;
}

const handles: TaskHandle[] = [];

describe('berth exec (the CLI, as a user runs it)', { skip: await requireEngine() }, () => {
  let task: TaskHandle;

  before(async () => {
    task = await startTask('main', ['sleep', '300']);
  });

  after(async () => {
    await Promise.all(handles.map((h) => h.destroy()));
    await run.cleanup();
  });

  test('exits with the command\'s exit code, stdout and stderr kept separate', async () => {
    const result = await berth(['exec', task.taskId, 'sh', '-c', 'echo out; echo err >&2; exit 5']);
    assert.equal(result.code, 5);
    assert.equal(result.stdout, 'out\n');
    assert.equal(result.stderr, 'err\n');
    const ok = await berth(['exec', task.taskId, 'true']);
    assert.equal(ok.code, 0, ok.stderr);
  });

  test('-i forwards stdin, and its end closes the command\'s stdin', async () => {
    const result = await berth(['exec', '-i', task.taskId, 'tr', 'a-z', 'A-Z'], { input: 'shout\nagain\n' });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'SHOUT\nAGAIN\n');
  });

  test('without -i the command gets no stdin', async () => {
    const result = await berth(['exec', task.taskId, 'cat'], { input: 'not forwarded\n' });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, '');
  });

  test('-e, -w and -u take effect inside the container', async () => {
    const result = await berth(['exec', '-e', 'GREETING=hi', '-e', 'EMPTY=', '-w', '/tmp', '-u', '65534', task.taskId, 'sh', '-c', 'echo "$GREETING [$EMPTY] $(pwd) $(id -u)"']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'hi [] /tmp 65534\n');
  });

  test('options after the command belong to the command', async () => {
    const result = await berth(['exec', task.taskId, 'sh', '-c', 'echo "$@"', 'sh', '-i', '--tty']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, '-i --tty\n');
  });

  test('-t gives the command a TTY; without it there is none', async () => {
    const withTty = await berth(['exec', '-t', task.taskId, 'sh', '-c', 'test -t 1 && echo tty']);
    assert.equal(withTty.code, 0, withTty.stderr);
    // A TTY turns "\n" into "\r\n" on its way out.
    assert.equal(withTty.stdout, 'tty\r\n');
    const withoutTty = await berth(['exec', task.taskId, 'sh', '-c', 'test -t 1']);
    assert.equal(withoutTty.code, 1);
  });

  test('Ctrl-C ends the CLI with 130', async () => {
    let signalled = false;
    const result = await berth(['exec', task.taskId, 'sh', '-c', 'echo started; sleep 60'], {
      onStdout: (text, pid) => {
        if (!signalled && text.includes('started')) {
          signalled = true;
          process.kill(pid, 'SIGINT');
        }
      },
    });
    assert.equal(signalled, true);
    assert.equal(result.code, 130);
  });

  test('does not take a container under a task\'s name that is not berth\'s for the task, and leaves it alone', async () => {
    const taskId = `${run.id}-foreign`;
    // The name a task's container has (today's and an earlier berth's), but no io.berth.* labels: someone else's.
    const id = await startTestContainer(engine, run, { name: containerNameForTask({ taskId, ownerId: 'cli' }), cmd: ['sleep', '300'] });
    const old = await startTestContainer(engine, run, { name: `berth-${taskId}`, cmd: ['sleep', '300'] });
    const result = await berth(['exec', taskId, 'touch', '/tmp/touched']);
    assert.equal(result.code, 125);
    assert.match(result.stderr, /^berth: task .* has no container .*\[BERTH_TASK_NOT_FOUND\]\n$/);
    assert.equal(result.stdout, '');
    assert.equal((await engine.inspectContainer(id)).running, true);
    assert.equal((await engine.inspectContainer(old)).running, true);
  });

  test('refuses a task whose container has stopped', async () => {
    const stopped = await startTask('stopped', ['true']);
    assert.deepEqual(await stopped.wait(), { kind: 'success', exitCode: 0 });
    const result = await berth(['exec', stopped.taskId, 'true']);
    assert.equal(result.code, 125);
    assert.match(result.stderr, /^berth: cannot exec in task .*exited, not running \[BERTH_TASK_STATE\]\n$/);
  });

  test('refuses a task that has no container', async () => {
    const result = await berth(['exec', `${run.id}-absent`, 'true']);
    assert.equal(result.code, 125);
    assert.match(result.stderr, /^berth: task .* has no container .*\[BERTH_TASK_NOT_FOUND\]\n$/);
  });

  test('bad usage exits 2 and names the flag', async () => {
    const relative = await berth(['exec', '-w', 'tmp', task.taskId, 'pwd']);
    assert.equal(relative.code, 2);
    assert.match(relative.stderr, /--workdir/);
    const unknown = await berth(['exec', '--no-such-flag', task.taskId, 'true']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /--no-such-flag/);
    const missing = await berth(['exec', task.taskId]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /command/);
  });
});
