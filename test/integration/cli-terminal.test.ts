import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { LABELS } from '../../src/common/labels.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import type { TaskHandle } from '../../src/tasks/handle.js';
import { BERTH_CLI, cleanEnv } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { BUSYBOX_PROMPT, shellReady, startOnPty, TTY_EOL, type PtySession, type TerminalSettings } from '../support/pty.js';

/**
 * `berth run -it` and `berth exec -it` as a person uses them: the real CLI on a real pseudo-terminal
 * (test/support/pty.ts), keys typed, the window resized, the terminal's settings read during the
 * session and after berth exited. Also the exit codes and messages of a command that cannot be
 * run, of Ctrl-C without a terminal, and of a timed-out task, through the CLI with pipes.
 */
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const engine = testEngine();
const run = testRun(engine);
const driver = new TaskDriver({ engine, ownerId: 'cli' });
const handles: TaskHandle[] = [];

/** What a fresh terminal has, and what berth must leave behind. */
const COOKED: Partial<TerminalSettings> = { icanon: true, echo: true, isig: true };
const RAW: Partial<TerminalSettings> = { icanon: false, echo: false, isig: false };
const PROMPT = BUSYBOX_PROMPT;
const EOL = TTY_EOL;

const runArgs = (...rest: string[]): string[] => ['run', '-l', `berth-test.run=${run.id}`, '--pull', 'never', ...rest];

function berthOnPty(args: string[], size = { rows: 31, columns: 97 }): PtySession {
  return startOnPty(process.execPath, [...BERTH_CLI, ...args], { ...size, cwd: REPO, env: cleanEnv() });
}

function pick(settings: TerminalSettings): Partial<TerminalSettings> {
  return { icanon: settings.icanon, echo: settings.echo, isig: settings.isig };
}

/** Types `line` and Enter, and resolves with the screen offset past `expect` printed after it. */
async function type(session: PtySession, line: string, expect: string | RegExp): Promise<number> {
  const from = session.screen.length;
  session.write(`${line}\r`);
  return session.waitFor(expect, { from });
}

/** How often `needle` is on the screen after `from`. */
function count(screen: string, needle: string, from = 0): number {
  return screen.slice(from).split(needle).length - 1;
}

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function berth(args: string[], options: { onStdout?: (text: string, pid: number) => void } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [...BERTH_CLI, ...args], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv() });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    options.onStdout?.(stdout, child.pid!);
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.end();
  return once(child, 'close').then(([code]) => ({ code: code as number | null, stdout, stderr }));
}

async function containersOf(taskId: string): Promise<number> {
  return (await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${taskId}`] })).length;
}

/** A running task container to exec into, made as `berth run --name` makes it. */
async function startTask(suffix: string): Promise<TaskHandle> {
  const handle = await driver.start({ image: TEST_IMAGE, command: ['sleep', '300'], labels: { ...run.labels }, pull: 'never' }, { taskId: `${run.id}-${suffix}` });
  handle.stdout.resume();
  handle.stderr.resume();
  handles.push(handle);
  return handle;
}


/**
 * The checks every interactive shell session gets: raw mode while it runs, a typed line echoed once
 * (by the remote TTY) and no cursor report on the screen, the window size at the start and after a
 * resize, and Ctrl-C reaching the shell's foreground `sleep` while the shell lives on.
 */
async function checkInteractiveShell(session: PtySession): Promise<void> {
  await shellReady(session);
  assert.deepEqual(pick(await session.settings()), RAW, 'the terminal is in raw mode during the session');

  const echoed = await type(session, "echo one-'line'", new RegExp(`one-line${EOL}`));
  assert.equal(count(session.screen, "echo one-'line'"), 1, `the typed line is echoed once: ${JSON.stringify(session.screen)}`);
  assert.equal(session.screen.includes('^['), false, `the terminal's cursor report is not echoed as text: ${JSON.stringify(session.screen)}`);

  await session.waitFor(PROMPT, { from: echoed });
  const sized = await type(session, 'stty size', new RegExp(`31 97${EOL}`));
  await session.waitFor(PROMPT, { from: sized });
  session.resize(40, 132);
  // The new size travels on its own (SIGWINCH to berth, a resize call, SIGWINCH in the container): asked until it has arrived.
  await pollUntil('the new window size inside', async () => {
    const from = session.screen.length;
    session.write('stty size\r');
    const at = await session.waitFor(new RegExp(`\\d+ \\d+${EOL}`), { from });
    await session.waitFor(PROMPT, { from: at });
    return new RegExp(`40 132${EOL}$`).test(session.screen.slice(from, at)) ? true : undefined;
  }, { intervalMs: 100 });

  const before = session.screen.length;
  await interruptSleep(session, '; echo after-sleep');
  // The shell interrupts the whole line (sleep and the echo after it) and prompts again.
  const prompted = await session.waitFor(PROMPT, { from: before });
  assert.doesNotMatch(session.screen.slice(before, prompted), new RegExp(`^after-sleep${EOL}`, 'm'));
  await type(session, 'echo still-here', new RegExp(`still-here${EOL}`));
}

/**
 * Runs a `sleep 60` job (then `rest`) in the shell and types Ctrl-C once the job is the terminal's
 * foreground: a Ctrl-C before the shell runs the line is a character for its line editor, and one
 * before the job has the terminal goes to the shell alone. The job says when it has it: a job
 * control shell hands the terminal to the job's process group before the job runs its command.
 */
async function interruptSleep(session: PtySession, rest = ''): Promise<void> {
  const from = session.screen.length;
  session.write(`sh -c 'echo sleep-starts; exec sleep 60'${rest}\r`);
  await session.waitFor(new RegExp(`^sleep-starts${EOL}`, 'm'), { from });
  session.write('\x03');
}

describe('berth run -it and exec -it on a real terminal', { skip: await requireEngine() }, () => {
  after(async () => {
    await Promise.all(handles.map((h) => h.destroy()));
    await run.cleanup();
  });

  test('run -it: raw mode, the window size and its changes, Ctrl-C to the shell; Ctrl-D ends the shell and berth exits 0 with the terminal restored', async () => {
    const taskId = `${run.id}-run-it`;
    const session = berthOnPty(runArgs('-it', '--name', taskId, TEST_IMAGE, 'sh'));
    try {
      assert.deepEqual(pick(await session.settings()), COOKED);
      await checkInteractiveShell(session);
      assert.equal(session.screen.includes('berth:'), false, 'Ctrl-C in raw mode is no signal to berth');
      session.write('\x04');
      const exit = await session.exited();
      assert.equal(exit.code, 0, session.screen);
      assert.deepEqual(pick(exit.settings), COOKED, 'the terminal is restored');
      assert.equal(await containersOf(taskId), 0);
    } finally {
      session.kill();
    }
  });

  test('run -it: the shell\'s exit code is berth\'s (exit 3 after a Ctrl-C)', async () => {
    const session = berthOnPty(runArgs('-it', TEST_IMAGE, 'sh'));
    try {
      await shellReady(session);
      const before = session.screen.length;
      await interruptSleep(session);
      await session.waitFor(PROMPT, { from: before });
      session.write('exit 3\r');
      const exit = await session.exited();
      assert.equal(exit.code, 3, session.screen);
      assert.deepEqual(pick(exit.settings), COOKED);
    } finally {
      session.kill();
    }
  });

  test('run -t without -i sizes the TTY but leaves the terminal alone: Ctrl-C stops the task, with one line saying so', async () => {
    const taskId = `${run.id}-run-t`;
    // The size is sent once the task runs (API 1.41 has no size at create): the task waits for it, as a program that reads it at start would not.
    const script = "until stty size 2>/dev/null | grep -q '^[1-9]'; do sleep 0.1; done; stty size; sleep 60";
    const session = berthOnPty(runArgs('-t', '--name', taskId, '--stop-timeout', '1s', TEST_IMAGE, 'sh', '-c', script), { rows: 27, columns: 101 });
    try {
      await session.waitFor(new RegExp(`27 101${EOL}`));
      assert.deepEqual(pick(await session.settings()), COOKED);
      // Ctrl-C is the terminal's SIGINT to berth, as with docker run -t.
      session.write('\x03');
      const exit = await session.exited();
      assert.equal(exit.code, 130, session.screen);
      assert.equal(count(session.screen, 'berth: stopping the task; press Ctrl-C again'), 1, session.screen);
      assert.deepEqual(pick(exit.settings), COOKED);
      assert.equal(await containersOf(taskId), 0);
    } finally {
      session.kill();
    }
  });

  test('run -it: SIGTERM to berth stops the task, exits 143 and restores the terminal', async () => {
    const taskId = `${run.id}-run-it-term`;
    const session = berthOnPty(runArgs('-it', '--name', taskId, '--stop-timeout', '1s', TEST_IMAGE, 'sh'));
    try {
      await session.waitFor(PROMPT);
      assert.deepEqual(pick(await session.settings()), RAW);
      session.signal('TERM');
      const exit = await session.exited();
      assert.equal(exit.code, 143, session.screen);
      assert.deepEqual(pick(exit.settings), COOKED);
      assert.equal(await containersOf(taskId), 0);
    } finally {
      session.kill();
    }
  });

  test('run -it: a forced exit (a second signal during a slow stop) restores the terminal too', async () => {
    const taskId = `${run.id}-run-it-forced`;
    // PID 1 ignores SIGTERM, so the stop takes the whole grace period: the second signal comes first.
    const session = berthOnPty(runArgs('-it', '--name', taskId, '--stop-timeout', '60s', TEST_IMAGE, 'sh', '-c', "trap '' TERM; exec sh"));
    try {
      await session.waitFor(PROMPT);
      assert.deepEqual(pick(await session.settings()), RAW);
      // A Ctrl-C from outside the terminal (in raw mode the key is the shell's): its line tells that the stop is under way.
      session.signal('INT');
      await session.waitFor('berth: stopping the task; press Ctrl-C again');
      session.signal('TERM');
      const exit = await session.exited();
      assert.equal(exit.code, 143, session.screen);
      assert.match(session.screen, /SIGTERM during the cleanup: exiting now/);
      assert.deepEqual(pick(exit.settings), COOKED);
    } finally {
      session.kill();
      const left = await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${taskId}`] });
      await Promise.all(left.map((c) => engine.removeContainer(c.id)));
    }
  });

  test('exec -it: raw mode, the window size and its changes, Ctrl-C to the shell; Ctrl-D ends it and berth exits 0 with the terminal restored', async () => {
    const task = await startTask('exec-it');
    const session = berthOnPty(['exec', '-it', task.taskId, 'sh']);
    try {
      await checkInteractiveShell(session);
      session.write('\x04');
      const exit = await session.exited();
      assert.equal(exit.code, 0, session.screen);
      assert.deepEqual(pick(exit.settings), COOKED);
    } finally {
      session.kill();
    }
  });

  test('exec -it: the shell\'s exit code is berth\'s', async () => {
    const task = await startTask('exec-it-code');
    const session = berthOnPty(['exec', '-it', task.taskId, 'sh']);
    try {
      await shellReady(session);
      session.write('exit 3\r');
      const exit = await session.exited();
      assert.equal(exit.code, 3, session.screen);
      assert.deepEqual(pick(exit.settings), COOKED);
    } finally {
      session.kill();
    }
  });
});

describe('exit codes and messages of berth run and exec', { skip: await requireEngine() }, () => {
  after(async () => {
    await Promise.all(handles.map((h) => h.destroy()));
    await run.cleanup();
  });

  test('run: a command that is not found exits 127, one that is not executable 126, each with one line naming the code', async () => {
    for (const [command, code, what] of [
      ['no-such-command', 127, 'not found'],
      ['/no/such/path', 127, 'not found'],
      ['/etc/passwd', 126, 'not executable'],
    ] as const) {
      const taskId = `${run.id}-cmd-${code}-${command.length}`;
      const result = await berth(runArgs('--name', taskId, TEST_IMAGE, command));
      assert.equal(result.code, code, result.stderr);
      assert.equal(result.stdout, '');
      assert.match(result.stderr, new RegExp(`^berth: command ${what} in the container: exec: "${command}": .*; exiting ${code}\\n$`));
      assert.equal(await containersOf(taskId), 0);
    }
  });

  test('exec: a command that is not found exits 127, one that is not executable 126, each with one line naming the code', async () => {
    const task = await startTask('exec-codes');
    for (const [command, code, what] of [
      ['no-such-command', 127, 'not found'],
      ['/etc/passwd', 126, 'not executable'],
    ] as const) {
      const result = await berth(['exec', task.taskId, command]);
      assert.equal(result.code, code, result.stderr);
      assert.match(result.stderr, new RegExp(`^berth: command ${what} in the container: exec: "${command}": .*; exiting ${code}\\n$`));
    }
    // A command that runs and exits 126 or 127 itself is not taken for one that could not start.
    const own = await berth(['exec', task.taskId, 'sh', '-c', 'exit 127']);
    assert.equal(own.code, 127);
    assert.equal(own.stderr, '');
  });

  test('the first Ctrl-C without a terminal prints one line saying the task is being stopped', async () => {
    const taskId = `${run.id}-ctrl-c-line`;
    let signalled = false;
    const result = await berth(runArgs('--name', taskId, '--stop-timeout', '1s', TEST_IMAGE, 'sh', '-c', 'echo started; sleep 60'), {
      onStdout: (text, pid) => {
        if (!signalled && text.includes('started')) {
          signalled = true;
          process.kill(pid, 'SIGINT');
        }
      },
    });
    assert.equal(result.code, 130);
    assert.equal(count(result.stderr, 'berth: stopping the task; press Ctrl-C again to exit now and leave the container to berth prune or an agent\n'), 1, result.stderr);
    assert.equal(await containersOf(taskId), 0);
  });

  test('a timeout whose task ignores SIGTERM says it was killed after the grace period, and the code berth exits with (124)', async () => {
    // sleep as PID 1 has no handler for SIGTERM, so the kernel ignores it: only the SIGKILL after the grace period ends it.
    const result = await berth(runArgs('--timeout', '1s', '--stop-timeout', '1s', TEST_IMAGE, 'sleep', '60'));
    assert.equal(result.code, 124);
    assert.equal(result.stderr, 'berth: task timed out after 1s and was killed after the 1s stop grace period, for it did not stop on its stop signal; exiting 124\n');
  });

  test('a timeout whose task stops on SIGTERM says so, and the code berth exits with (124)', async () => {
    const result = await berth(runArgs('--timeout', '1s', '--stop-timeout', '30s', TEST_IMAGE, 'sh', '-c', 'trap "exit 0" TERM; sleep 60 & wait'));
    assert.equal(result.code, 124);
    assert.equal(result.stderr, 'berth: task timed out after 1s and was stopped by its stop signal (the task exited with 0); exiting 124\n');
  });

  test('out of memory says the code berth exits with (137)', async () => {
    const result = await berth(runArgs('-m', '32m', TEST_IMAGE, 'dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1'));
    assert.equal(result.code, 137);
    assert.match(result.stderr, /^berth: task out of memory .*; exiting 137\n$/);
  });
});
