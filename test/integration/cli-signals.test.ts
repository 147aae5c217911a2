import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { containerNameForTask, LABELS } from '../../src/common/labels.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import type { TaskHandle } from '../../src/tasks/handle.js';
import { BERTH_CLI, cleanEnv } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { FaultProxy, type FaultRule } from '../support/fault-proxy.js';

/**
 * Every berth process exits when asked (issue 9, item 3), as a user or a supervisor asks: the real
 * CLI in a child process, against the real engine, a wedged one (the fault proxy holding one kind of
 * call forever: DOCKER_HOST=unix://<proxy>) or an agent that never answers. The first SIGTERM exits
 * 143 once the cleanup finished or its bound ran out; a second signal during a stuck cleanup exits
 * at once with its own code. Nothing here asserts a duration: a generous deadline only tells a hang.
 */
const engine = testEngine();
const run = testRun(engine);
const driver = new TaskDriver({ engine, ownerId: 'cli' });
const handles: TaskHandle[] = [];
/** Long enough for any bound of these processes to pass under load: reaching it means a hang. */
const HANG_MS = 120_000;
/** "Never answers". */
const FOREVER_MS = 24 * 3_600_000;
/** The cleanup's bound in tests that let it run out: short, so the suite stays short. */
const SHORT_BOUND = '2s';
/** The bound in tests where only a second signal may end the cleanup. */
const LONG_BOUND = '1h';

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface RunningCli {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** The exit, or a failure (and the child killed) if it does not come before HANG_MS. */
  exit(): Promise<Exit>;
}

const children: ChildProcess[] = [];

function startBerth(args: string[], env: Record<string, string>): RunningCli {
  const child = spawn(process.execPath, [...BERTH_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv(env) });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let exited: Exit | undefined;
  const closed = once(child, 'close').then(([code, signal]) => (exited = { code: code as number | null, signal: signal as NodeJS.Signals | null, stdout, stderr }));
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    async exit() {
      try {
        await pollUntil(`berth ${args[0]} to exit`, () => exited, { timeoutMs: HANG_MS, intervalMs: 50 });
      } finally {
        if (exited === undefined) child.kill('SIGKILL');
      }
      await closed;
      return exited!;
    },
  };
}

/** A proxy in front of the engine whose calls matching `method` and `pathPattern` never answer. */
async function wedgedEngine(method: string, pathPattern: RegExp): Promise<{ proxy: FaultProxy; rule: FaultRule; env: Record<string, string> }> {
  const proxy = await FaultProxy.start();
  proxies.push(proxy);
  const rule = proxy.addRule({ method, path: pathPattern, fault: { kind: 'delay', delayMs: FOREVER_MS } });
  return { proxy, rule, env: { DOCKER_HOST: `unix://${proxy.socketPath}` } };
}
const proxies: FaultProxy[] = [];

/** Waits until the wedged call was made: the process is then stuck on it. */
function untilWedged(rule: FaultRule, what: string): Promise<true> {
  return pollUntil(what, () => (rule.fired > 0 ? true : undefined), { timeoutMs: HANG_MS, intervalMs: 25 });
}

function taskContainers(taskId: string) {
  return engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${taskId}`] });
}

async function removeTask(taskId: string): Promise<void> {
  await Promise.all((await taskContainers(taskId)).map((container) => engine.removeContainer(container.id)));
}

async function untilRunning(taskId: string): Promise<void> {
  await pollUntil(`task ${taskId} to run`, async () => ((await engine.listContainers({ labels: [`${LABELS.taskId}=${taskId}`], status: ['running'] })).length > 0 ? true : undefined), {
    timeoutMs: HANG_MS,
  });
}

/** A unix socket that accepts connections and never answers: an agent that hangs. */
async function mutedAgent(): Promise<{ env: Record<string, string>; connections(): number }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'berth-mute-'));
  dirs.push(dir);
  const socketPath = path.join(dir, 'agent.sock');
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.listen(socketPath);
  await once(server, 'listening');
  servers.push({ server, sockets });
  return { env: { BERTH_HOST: `unix://${socketPath}`, BERTH_TOKEN: 'any' }, connections: () => connections };
}
const servers: Array<{ server: net.Server; sockets: Set<net.Socket> }> = [];
const dirs: string[] = [];

const runArgs = (taskId: string, ...rest: string[]): string[] => ['run', '--name', taskId, '-l', `berth-test.run=${run.id}`, '--pull', 'never', ...rest];

describe('every berth process exits when asked (SIGINT, SIGTERM)', { skip: await requireEngine() }, () => {
  let task: TaskHandle;

  before(async () => {
    // A running task container, for exec and stats to find (as berth run --name or an agent makes one).
    task = await driver.start({ image: TEST_IMAGE, command: ['sleep', '600'], labels: { ...run.labels }, pull: 'never' }, { taskId: `${run.id}-target` });
    task.stdout.resume();
    task.stderr.resume();
    handles.push(task);
  });

  after(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await Promise.all(handles.map((handle) => handle.destroy()));
    await Promise.all(proxies.map((proxy) => proxy.close()));
    for (const { server, sockets } of servers) {
      for (const socket of sockets) socket.destroy();
      server.close();
    }
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
    await run.cleanup();
  });

  describe('berth run', () => {
    test('a stop the engine never answers: one SIGTERM exits 143 when the cleanup\'s bound runs out, naming the container left behind', async () => {
      const taskId = `${run.id}-run-stop`;
      const { rule, env } = await wedgedEngine('POST', /^\/containers\/[^/]+\/stop$/);
      const cli = startBerth(runArgs(taskId, '--stop-timeout', '1', TEST_IMAGE, 'sleep', '600'), { ...env, BERTH_CLEANUP_TIMEOUT: SHORT_BOUND });
      await untilRunning(taskId);
      cli.child.kill('SIGTERM');
      const exit = await cli.exit();
      assert.equal(exit.code, 143, exit.stderr);
      assert.match(exit.stderr, new RegExp(`^berth: the cleanup after SIGTERM did not finish within \\d+s: exiting now; left behind: container ${containerNameForTask({ taskId, ownerId: 'cli' })}, for berth prune or an agent's reconciler to remove$`, 'm'));
      assert.ok(rule.fired > 0, 'the stop reached the wedged engine');
      // What the reconciler and prune would remove is still there; the test removes it.
      assert.equal((await taskContainers(taskId)).length, 1);
      await removeTask(taskId);
    });

    test('a wait the engine never answers: one SIGTERM still stops and removes the container, and exits 143', async () => {
      const taskId = `${run.id}-run-wait`;
      const { rule, env } = await wedgedEngine('POST', /^\/containers\/[^/]+\/wait$/);
      const cli = startBerth(runArgs(taskId, '--stop-timeout', '1', TEST_IMAGE, 'sleep', '600'), { ...env, BERTH_CLEANUP_TIMEOUT: LONG_BOUND });
      await untilRunning(taskId);
      await untilWedged(rule, 'the wait to reach the wedged engine');
      cli.child.kill('SIGTERM');
      const exit = await cli.exit();
      assert.equal(exit.code, 143, exit.stderr);
      assert.doesNotMatch(exit.stderr, /left behind/);
      assert.deepEqual(await taskContainers(taskId), []);
    });

    test('a create the engine never answers: one SIGTERM exits 143', async () => {
      const taskId = `${run.id}-run-create`;
      const { rule, env } = await wedgedEngine('POST', /^\/containers\/create$/);
      const cli = startBerth(runArgs(taskId, TEST_IMAGE, 'true'), { ...env, BERTH_CLEANUP_TIMEOUT: SHORT_BOUND });
      await untilWedged(rule, 'the create to reach the wedged engine');
      cli.child.kill('SIGTERM');
      const exit = await cli.exit();
      assert.equal(exit.code, 143, exit.stderr);
      // The held create never reached the engine: nothing was made.
      assert.deepEqual(await taskContainers(taskId), []);
    });

    test('a second signal during a stuck cleanup exits at once with its own code (SIGTERM, then SIGINT: 130)', async () => {
      const taskId = `${run.id}-run-twice`;
      const { rule, env } = await wedgedEngine('POST', /^\/containers\/[^/]+\/stop$/);
      // A bound no test reaches: only the second signal can end this cleanup.
      const cli = startBerth(runArgs(taskId, '--stop-timeout', '1', TEST_IMAGE, 'sleep', '600'), { ...env, BERTH_CLEANUP_TIMEOUT: LONG_BOUND });
      await untilRunning(taskId);
      cli.child.kill('SIGTERM');
      await untilWedged(rule, 'the cleanup\'s stop to reach the wedged engine');
      cli.child.kill('SIGINT');
      const exit = await cli.exit();
      assert.equal(exit.code, 130, exit.stderr);
      assert.match(exit.stderr, new RegExp(`^berth: SIGINT during the cleanup: exiting now; left behind: container ${containerNameForTask({ taskId, ownerId: 'cli' })}, `, 'm'));
      await removeTask(taskId);
    });

    for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
      test(`${signal} of a healthy run stops and removes its container and exits ${code}`, async () => {
        const taskId = `${run.id}-run-healthy-${signal.toLowerCase()}`;
        const cli = startBerth(runArgs(taskId, '--stop-timeout', '1', TEST_IMAGE, 'sh', '-c', 'echo started; sleep 600'), {});
        await pollUntil('the task to print', () => (cli.stdout().includes('started') ? true : undefined), { timeoutMs: HANG_MS });
        cli.child.kill(signal);
        const exit = await cli.exit();
        assert.equal(exit.code, code, exit.stderr);
        assert.doesNotMatch(exit.stderr, /left behind/);
        assert.deepEqual(await taskContainers(taskId), []);
      });
    }
  });

  describe('berth exec and berth stats', () => {
    test('exec: an exec create the engine never answers; one SIGTERM exits 143', async () => {
      const { rule, env } = await wedgedEngine('POST', /^\/containers\/[^/]+\/exec$/);
      const cli = startBerth(['exec', task.taskId, 'true'], env);
      await untilWedged(rule, 'the exec to reach the wedged engine');
      cli.child.kill('SIGTERM');
      const exit = await cli.exit();
      assert.equal(exit.code, 143, exit.stderr);
    });

    test('exec: SIGINT while the command runs exits 130', async () => {
      const cli = startBerth(['exec', task.taskId, 'sh', '-c', 'echo begun; sleep 600'], {});
      await pollUntil('the command to print', () => (cli.stdout().includes('begun') ? true : undefined), { timeoutMs: HANG_MS });
      cli.child.kill('SIGINT');
      const exit = await cli.exit();
      assert.equal(exit.code, 130, exit.stderr);
    });

    test('stats: a stats stream the engine never answers; one SIGTERM exits 143, Ctrl-C 0', async () => {
      for (const [signal, code] of [['SIGTERM', 143], ['SIGINT', 0]] as const) {
        const { rule, env } = await wedgedEngine('GET', /^\/containers\/[^/]+\/stats$/);
        const cli = startBerth(['stats', '--json', task.taskId], env);
        await untilWedged(rule, 'the stats stream to reach the wedged engine');
        cli.child.kill(signal);
        const exit = await cli.exit();
        assert.equal(exit.code, code, `${signal}: ${exit.stderr}`);
      }
    });
  });

  describe('agent clients: logs -f and events', () => {
    for (const args of [['logs', '-f', 'some-task'], ['events']]) {
      test(`${args.join(' ')}: an agent that never answers; one SIGTERM exits 143, Ctrl-C 0`, async () => {
        for (const [signal, code] of [['SIGTERM', 143], ['SIGINT', 0]] as const) {
          const agent = await mutedAgent();
          const cli = startBerth(args, agent.env);
          await pollUntil('the CLI to connect to the agent', () => (agent.connections() > 0 ? true : undefined), { timeoutMs: HANG_MS });
          cli.child.kill(signal);
          const exit = await cli.exit();
          assert.equal(exit.code, code, `${signal}: ${exit.stderr}`);
        }
      });
    }
  });

  describe('berth agent', () => {
    async function stuckAgent(bound: string): Promise<{ cli: RunningCli; rule: FaultRule }> {
      const dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-sig-'));
      dirs.push(dataDir);
      // The agent's start asks the engine's version, which never comes: its shutdown waits for that start.
      const { rule, env } = await wedgedEngine('GET', /^\/version$/);
      const cli = startBerth(['agent', '--data-dir', dataDir], { ...env, BERTH_CLEANUP_TIMEOUT: bound });
      await untilWedged(rule, 'the agent\'s start to reach the wedged engine');
      await pollUntil('the agent to listen', () => (cli.stdout().includes('"agent listening"') ? true : undefined), { timeoutMs: HANG_MS });
      return { cli, rule };
    }

    test('a start the engine never answers: one SIGTERM exits 143 when the shutdown\'s bound runs out', async () => {
      const { cli } = await stuckAgent(SHORT_BOUND);
      cli.child.kill('SIGTERM');
      const exit = await cli.exit();
      assert.equal(exit.code, 143, exit.stderr);
      assert.match(exit.stderr, /^berth: the cleanup after SIGTERM did not finish within 2s: exiting now; left behind: its running tasks, which keep running \(the next agent follows them\)$/m);
      assert.match(exit.stdout, /"shutting down/);
    });

    test('a second signal during a stuck shutdown exits at once with its own code (SIGTERM, then SIGINT: 130)', async () => {
      const { cli } = await stuckAgent(LONG_BOUND);
      cli.child.kill('SIGTERM');
      await pollUntil('the shutdown to begin', () => (cli.stdout().includes('"shutting down') ? true : undefined), { timeoutMs: HANG_MS });
      cli.child.kill('SIGINT');
      const exit = await cli.exit();
      assert.equal(exit.code, 130, exit.stderr);
      assert.match(exit.stderr, /^berth: SIGINT during the cleanup: exiting now/m);
      assert.doesNotMatch(exit.stdout, /"agent stopped"/);
    });
  });
});
