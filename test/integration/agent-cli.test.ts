import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LABELS } from '../../src/common/labels.js';
import { agentProcesses, berth, BERTH_CLI, CLUSTER_SUITE, berthInspect, berthJson, cleanEnv, httpGet, tempDirs, writeAgentConfig, type RunningAgent } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine, TEST_ENGINE_KIND } from '../support/engine.js';
import { hasEnded, TASK_STATES, type TaskState } from '../../src/state/tasks.js';
import { compareLogTimestamps } from '../../src/engine/log-entries.js';

/**
 * The agent and the client commands end to end, as a user runs them: a real `berth agent` process
 * on a temporary data directory, and the real CLI (`node bin/berth.js …`) finding it through
 * BERTH_DATA_DIR, against the real engine.
 */

const engine = testEngine();
const run = testRun(engine);
const RUN_LABEL = run.labelFilter;
const agents = agentProcesses();
const dirs = tempDirs();

/** Waits (bounded) for a log line of the agent that matches. */
function waitForLog(agent: RunningAgent, what: string, match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  return pollUntil(what, () => agent.logLines().find(match), { timeoutMs: 20_000, intervalMs: 25 });
}

interface TaskView {
  id: string;
  state: TaskState;
  spec: Record<string, unknown>;
  containerId?: string;
  endState?: { kind: string; exitCode?: number; reason?: string };
  exitCode?: number;
  submittedAt: string;
  admittedAt?: string;
  startedAt?: string;
  finishedAt?: string;
}

const ENDED = TASK_STATES.filter(hasEnded);

async function waitForState(dataDir: string, taskId: string, states: readonly TaskState[]): Promise<TaskView> {
  return pollUntil(
    `task ${taskId} to be ${states.join(' or ')}`,
    async () => {
      const task = await berthInspect<TaskView>(dataDir, taskId);
      return states.includes(task.state) ? task : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 100 },
  );
}

/** Submits through the CLI with this run's label; resolves with the printed task id. */
async function submit(dataDir: string, args: string[]): Promise<string> {
  const result = await berth(dataDir, ['submit', '-l', RUN_LABEL, ...args]);
  assert.equal(result.code, 0, result.stderr);
  const id = result.stdout.trim();
  assert.match(id, /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/);
  return id;
}

after(async () => {
  await agents.killAll();
  await run.cleanup();
  await dirs.removeAll();
});

const skip = await requireEngine();

describe('berth agent with the client commands', { skip }, () => {
  let agent: RunningAgent;
  let dataDir: string;
  let allowedDir: string;

  before(async () => {
    dataDir = await dirs.make('berth-cli-');
    allowedDir = await dirs.make('berth-allowed-');
    await writeFile(path.join(allowedDir, 'greeting'), 'hello from the host\n');
    const config = await writeAgentConfig(dataDir, `policy:\n  allowedBindSources: [${JSON.stringify(allowedDir)}]\n`);
    agent = await agents.start(dataDir, ['--config', config]);
  });

  test('submit prints the task id; ps, inspect and logs -f follow the task to its end', async () => {
    const id = await submit(dataDir, [TEST_IMAGE, 'sh', '-c', 'for i in 1 2 3; do echo out $i; echo err $i >&2; sleep 0.2; done; exit 3']);
    const listed = await berthJson<TaskView[]>(dataDir, ['ps']);
    const mine = listed.find((t) => t.id === id);
    // ps without -a lists tasks that have not ended; this one may have ended already on a slow host.
    if (mine) assert.ok(!hasEnded(mine.state), mine.state);

    const logs = await berth(dataDir, ['logs', '-f', id]);
    assert.equal(logs.code, 0, logs.stderr);
    assert.equal(logs.stdout, 'out 1\nout 2\nout 3\n');
    assert.equal(logs.stderr, 'err 1\nerr 2\nerr 3\n');

    const task = await waitForState(dataDir, id, ENDED);
    assert.equal(task.state, 'exited');
    assert.equal(task.exitCode, 3);
    assert.deepEqual(task.endState, { kind: 'failed', exitCode: 3 });
    assert.ok(task.containerId, 'inspect shows the container id');
    assert.ok(task.startedAt && task.finishedAt && Date.parse(task.finishedAt) >= Date.parse(task.startedAt));
    assert.deepEqual(task.spec.command, ['sh', '-c', 'for i in 1 2 3; do echo out $i; echo err $i >&2; sleep 0.2; done; exit 3']);

    assert.ok(!(await berthJson<TaskView[]>(dataDir, ['ps'])).some((t) => t.id === id), 'ps without -a leaves out ended tasks');
    assert.ok((await berthJson<TaskView[]>(dataDir, ['ps', '-a'])).some((t) => t.id === id), 'ps -a lists ended tasks');
    const table = await berth(dataDir, ['ps', '-a', '--filter', `label=${RUN_LABEL}`]);
    assert.equal(table.code, 0);
    // In cluster mode (the agent suite's cluster run) each task has a node, and ps shows it.
    assert.match(table.stdout, CLUSTER_SUITE ? /^TASK ID\s+IMAGE\s+COMMAND\s+STATUS\s+CREATED\s+PORTS\s+NODE$/m : /^TASK ID\s+IMAGE\s+COMMAND\s+STATUS\s+CREATED\s+PORTS$/m);
    // A generated id shows by its first 12 characters, as docker's container ids.
    assert.match(table.stdout, new RegExp(`^${id.slice(0, 12)}\\s+${TEST_IMAGE}\\s+.*Exited \\(3\\)`, 'm'));
    const byState = await berthJson<TaskView[]>(dataDir, ['ps', '--filter', 'state=exited', '--filter', `label=${RUN_LABEL}`]);
    assert.ok(byState.some((t) => t.id === id) && byState.every((t) => t.state === 'exited'));

    // Output stays readable after the container is gone, and --since skips what came before.
    const again = await berth(dataDir, ['logs', '--json', id]);
    const records = again.stdout.trim().split('\n').map((line) => JSON.parse(line) as { stream: string; timestamp: string; text: string });
    assert.equal(records.length, 6);
    const since = await berth(dataDir, ['logs', '--since', records[1]!.timestamp, id]);
    // What is stamped after the cut: records 2.. on Docker (nanosecond stamps); Podman stamps its log
    // to the second, so there the lines of the cut's second go with it.
    const after = (stream: string): string => records.filter((r) => compareLogTimestamps(r.timestamp, records[1]!.timestamp) > 0 && r.stream === stream).map((r) => r.text).join('');
    if (TEST_ENGINE_KIND === 'docker') assert.equal(after('stdout') + after('stderr'), records.slice(2).map((r) => r.text).filter((t) => t.startsWith('out')).join('') + records.slice(2).map((r) => r.text).filter((t) => t.startsWith('err')).join(''));
    assert.equal(since.stdout, after('stdout'));
    assert.equal(since.stderr, after('stderr'));
  });

  test('stop ends a running task as cancelled; rm refuses a task that has not ended, then removes it', async () => {
    const id = await submit(dataDir, ['--stop-timeout', '1', TEST_IMAGE, 'sleep', '60']);
    await waitForState(dataDir, id, ['running']);
    const early = await berth(dataDir, ['rm', id]);
    assert.equal(early.code, 1);
    assert.match(early.stderr, /^berth: .*stop it before removing it \[BERTH_TASK_STATE\]$/m);

    const stopped = await berth(dataDir, ['stop', id]);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(stopped.stdout, `${id}\n`);
    const task = await waitForState(dataDir, id, ENDED);
    assert.equal(task.endState?.kind, 'cancelled');
    await pollUntil('the container to be removed', async () => ((await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] })).length === 0 ? true : undefined));

    const removed = await berth(dataDir, ['rm', id]);
    assert.equal(removed.code, 0, removed.stderr);
    const gone = await berth(dataDir, ['inspect', id]);
    assert.equal(gone.code, 1);
    assert.equal(gone.stderr, `berth: no task ${id} [BERTH_TASK_NOT_FOUND]\n`);
    const unknown = await berth(dataDir, ['stop', 'no-such-task']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /\[BERTH_TASK_NOT_FOUND\]/);
  });

  test('run --detach submits the task as submit does and prints its id', async () => {
    const result = await berth(dataDir, ['run', '--detach', '-l', RUN_LABEL, '-e', 'WHO=detached', TEST_IMAGE, 'sh', '-c', 'echo hello $WHO']);
    assert.equal(result.code, 0, result.stderr);
    const id = result.stdout.trim();
    const logs = await berth(dataDir, ['logs', '-f', id]);
    assert.equal(logs.stdout, 'hello detached\n');
    assert.equal((await waitForState(dataDir, id, ENDED)).exitCode, 0);
  });

  test('run --detach takes the agent\'s address, token and --json as submit does; a run without --detach refuses them', async () => {
    const token = (await readFile(path.join(dataDir, 'token'), 'utf8')).trim();
    const agentFlags = ['-H', `unix://${path.join(dataDir, 'agent.sock')}`, '--token', token];
    // BERTH_DATA_DIR names no agent: the flags alone find it.
    const result = await berth(path.join(dataDir, 'elsewhere'), ['run', '-d', ...agentFlags, '--json', '--restart', 'on-failure:1', '--open-stdin', '-l', RUN_LABEL, TEST_IMAGE, 'true']);
    assert.equal(result.code, 0, result.stderr);
    const task = JSON.parse(result.stdout) as TaskView;
    assert.equal(task.spec.image, TEST_IMAGE);
    assert.equal((task.spec.restart as { policy?: string } | undefined)?.policy, 'on-failure');
    assert.equal(task.spec.openStdin, true);
    assert.equal((await waitForState(dataDir, task.id, ENDED)).exitCode, 0);

    const here = await berth(path.join(dataDir, 'elsewhere'), ['run', ...agentFlags, '--restart', 'on-failure', '--rm', '-l', RUN_LABEL, TEST_IMAGE, 'true']);
    assert.equal(here.code, 2, here.stderr);
    assert.match(here.stderr, /--restart: needs --detach/);
    assert.match(here.stderr, /--host: needs --detach/);
    assert.match(here.stderr, /--token: needs --detach/);
  });

  test('images lists the image with each running task as a holder, once, until it ends', async () => {
    const id = await submit(dataDir, ['--stop-timeout', '1', TEST_IMAGE, 'sleep', '60']);
    await waitForState(dataDir, id, ['running']);
    type ImageView = { imageId: string; refs: string[]; holders: string[]; removalDueAt?: string };
    const held = await berthJson<ImageView[]>(dataDir, ['images']);
    const image = held.find((i) => i.holders.includes(id));
    assert.ok(image, JSON.stringify(held));
    assert.ok(image.refs.includes(TEST_IMAGE));
    assert.equal(image.holders.filter((h) => h === id).length, 1);
    assert.equal(image.removalDueAt, undefined);
    const table = await berth(dataDir, ['images']);
    assert.match(table.stdout, /^IMAGE ID\s+REFERENCES\s+HOLDERS\s+REMOVAL$/m);
    assert.match(table.stdout, new RegExp(`^${image.imageId.replace('sha256:', '').slice(0, 12)}\\s+.*${TEST_IMAGE}`, 'm'));

    assert.equal((await berth(dataDir, ['stop', id])).code, 0);
    await waitForState(dataDir, id, ENDED);
    await pollUntil('the task to release the image', async () => ((await berthJson<ImageView[]>(dataDir, ['images'])).some((i) => i.holders.includes(id)) ? undefined : true));
  });

  test('events --json prints each state change of a task as it happens, and Ctrl-C ends it with 0', async () => {
    const child = spawn(process.execPath, [...BERTH_CLI, 'events', '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv({ BERTH_DATA_DIR: dataDir }) });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const closed = once(child, 'close');
    try {
      // The command says when its subscription is in place: every event after that is printed.
      await pollUntil('events to subscribe', () => (stderr.includes('listening for events') ? true : undefined), { timeoutMs: 30_000 });
      const id = await submit(dataDir, [TEST_IMAGE, 'sh', '-c', 'exit 2']);
      const events = await pollUntil(
        'the task to end on the event stream',
        () => {
          const parsed = stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { type: string; taskId?: string; state?: string; endState?: { kind: string }; at: string });
          const mine = parsed.filter((e) => e.type === 'task.state' && e.taskId === id);
          return mine.some((e) => e.state === 'exited') ? mine : undefined;
        },
        { timeoutMs: 30_000 },
      );
      assert.deepEqual(events.map((e) => e.state), ['pending', 'starting', 'running', 'exited']);
      assert.equal(events.at(-1)!.endState?.kind, 'failed');
      assert.ok(events.every((e) => !Number.isNaN(Date.parse(e.at))));
    } finally {
      child.kill('SIGINT');
      const [code] = (await closed) as [number | null];
      assert.equal(code, 0, stderr);
    }
  });

  test('the token is required: without it the CLI says where to put it, and the API answers 401', async () => {
    const elsewhere = await dirs.make('berth-notoken-');
    const noToken = await berth(elsewhere, ['ps'], { BERTH_HOST: `unix://${agent.socketPath}` });
    assert.equal(noToken.code, 2);
    assert.match(noToken.stderr, /^berth: token: cannot read the agent's token from .*\/token \(ENOENT\)\. .*set BERTH_DATA_DIR=DIR, or pass --token TOKEN \(or set BERTH_TOKEN\) \[BERTH_VALIDATION\]$/m);

    const wrong = await berth(dataDir, ['ps'], { BERTH_TOKEN: 'not-the-token' });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /^berth: the request needs .*token.*\[BERTH_UNAUTHORIZED\]$/m);
    assert.match(wrong.stderr, /^berth: pass the agent's token with --token or BERTH_TOKEN/m);

    assert.equal((await httpGet(agent.socketPath, '/v1/tasks')).status, 401);
    assert.equal((await httpGet(agent.socketPath, '/healthz')).status, 200, 'health needs no token');
  });

  test('an agent that does not answer exits 125', async () => {
    const result = await berth(dataDir, ['ps'], { BERTH_HOST: `unix://${path.join(dataDir, 'nobody.sock')}`, BERTH_TOKEN: 'x' });
    assert.equal(result.code, 125);
    assert.match(result.stderr, /does not answer.*berth agent.*\[BERTH_AGENT_UNAVAILABLE\]/);
  });

  test('a bind mount outside the allow-list is refused at submit naming the field; one inside it runs', async () => {
    const refused = await berth(dataDir, ['submit', '-l', RUN_LABEL, '--mount', 'type=bind,source=/etc,target=/host-etc', TEST_IMAGE, 'true']);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /^berth: --mount\[0\] source: .*allow-list.*\[BERTH_VALIDATION\]$/m);
    assert.equal(refused.stdout, '');

    const id = await submit(dataDir, ['--mount', `type=bind,source=${allowedDir},target=/data,readonly`, TEST_IMAGE, 'cat', '/data/greeting']);
    const logs = await berth(dataDir, ['logs', '-f', id]);
    assert.equal(logs.stdout, 'hello from the host\n');
    assert.equal((await waitForState(dataDir, id, ENDED)).exitCode, 0);
  });

  test('usage errors exit 2 before anything is sent', async () => {
    const badFilter = await berth(dataDir, ['ps', '--filter', 'colour=red']);
    assert.equal(badFilter.code, 2);
    assert.match(badFilter.stderr, /--filter\[0\]: unknown filter key "colour"; the keys are state, status, end, label/);
    const badMemory = await berth(dataDir, ['submit', '-l', RUN_LABEL, '-m', 'lots', TEST_IMAGE, 'true']);
    assert.equal(badMemory.code, 2);
    assert.match(badMemory.stderr, /^berth: -m\/--memory: "lots" is not a size; use e\.g\. 512m or 1g/);
    const missing = await berth(dataDir, ['inspect']);
    assert.equal(missing.code, 2);
  });
});

describe('SIGHUP reloads the configuration file', { skip }, () => {
  test('a valid file takes effect and the changed keys are logged; an invalid one is refused naming the key, and the old one stays', async () => {
    const dataDir = await dirs.make('berth-hup-');
    const dirA = await dirs.make('berth-a-');
    const dirB = await dirs.make('berth-b-');
    const config = await writeAgentConfig(dataDir, `policy:\n  allowedBindSources: [${JSON.stringify(dirA)}]\n`);
    const agent = await agents.start(dataDir, ['--config', config, '--listen', '127.0.0.1:0']);
    const bindB = ['submit', '-l', RUN_LABEL, '--mount', `type=bind,source=${dirB},target=/b`, TEST_IMAGE, 'true'];

    const before = await berth(dataDir, bindB);
    assert.equal(before.code, 2);
    assert.match(before.stderr, /--mount\[0\] source: /);

    await writeFile(config, `policy:\n  allowedBindSources: [${JSON.stringify(dirA)}, ${JSON.stringify(dirB)}]\nadmission:\n  maxConcurrent: 3\n`);
    agent.child.kill('SIGHUP');
    const reloaded = await waitForLog(agent, 'the reload to be logged', (line) => line.msg === 'configuration reloaded');
    assert.deepEqual(reloaded.changed, ['admission.maxConcurrent', 'policy.allowedBindSources']);
    const accepted = await berth(dataDir, bindB);
    assert.equal(accepted.code, 0, accepted.stderr);

    // Invalid: maxConcurrent below 1. The file also drops dirB, which must not take effect either.
    await writeFile(config, `policy:\n  allowedBindSources: [${JSON.stringify(dirA)}]\nadmission:\n  maxConcurrent: 0\n`);
    agent.child.kill('SIGHUP');
    const refused = await waitForLog(agent, 'the refused reload to be logged', (line) => typeof line.msg === 'string' && line.msg.startsWith('configuration not reloaded'));
    assert.equal(refused.level, 50);
    assert.deepEqual(refused.keys, ['admission.maxConcurrent']);
    assert.match(String(refused.msg), /admission\.maxConcurrent: must be at least 1 \(from /);
    assert.equal((await httpGet(agent.socketPath, '/healthz')).status, 200, 'the agent keeps running');
    const stillAccepted = await berth(dataDir, bindB);
    assert.equal(stillAccepted.code, 0, `the old configuration stays: ${stillAccepted.stderr}`);

    // The same agent over TCP: BERTH_HOST names it, the token still comes from the data directory.
    const started = agent.logLines().find((line) => line.msg === 'agent listening');
    assert.match(String(started?.tcp), /^127\.0\.0\.1:\d+$/);
    const overTcp = await berth(dataDir, ['ps', '-a', '--json'], { BERTH_HOST: `http://${String(started!.tcp)}` });
    assert.equal(overTcp.code, 0, overTcp.stderr);
    assert.equal((JSON.parse(overTcp.stdout) as TaskView[]).length, 2);

    assert.equal(await agent.stop('SIGTERM'), 0, `SIGTERM shuts the agent down with 0: ${agent.stderr()}`);
    assert.ok(agent.logLines().some((line) => line.msg === 'agent stopped'));
  });
});

describe('graceful shutdown', { skip }, () => {
  test('SIGTERM exits 0 and leaves running tasks running; the next agent follows them to their end with all their output', async () => {
    const dataDir = await dirs.make('berth-term-');
    const gateDir = await dirs.make('berth-gate-');
    const config = await writeAgentConfig(dataDir, `policy:\n  allowedBindSources: [${JSON.stringify(gateDir)}]\n`);
    const first = await agents.start(dataDir, ['--config', config]);
    const id = await submit(dataDir, ['--mount', `type=bind,source=${gateDir},target=/gate,readonly`, TEST_IMAGE, 'sh', '-c', 'echo before; while [ ! -e /gate/open ]; do sleep 0.05; done; echo after; exit 9']);
    await pollUntil('the first line to be stored', async () => ((await berth(dataDir, ['logs', id])).stdout === 'before\n' ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });

    assert.equal(await first.stop('SIGTERM'), 0, first.stderr());
    assert.ok(first.logLines().some((line) => line.msg === 'agent stopped'));
    const [container] = await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] });
    assert.equal(container?.state, 'running', 'the task outlives the agent');

    const second = await agents.start(dataDir, ['--config', config]);
    assert.equal(second.logLines().find((line) => line.msg === 'recovered tasks')?.lost, 0);
    await writeFile(path.join(gateDir, 'open'), '');
    const logs = await berth(dataDir, ['logs', '-f', id]);
    assert.equal(logs.stdout, 'before\nafter\n');
    const task = await waitForState(dataDir, id, ENDED);
    assert.equal(task.exitCode, 9);
    await pollUntil('the container to be removed', async () => ((await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${id}`] })).length === 0 ? true : undefined));
  });
});

describe('berth agent configuration errors', () => {
  test('an invalid configuration file stops the agent before it listens, exit 2, naming the key and the file', async () => {
    const dataDir = await dirs.make('berth-badcfg-');
    const config = await writeAgentConfig(dataDir, 'admission:\n  maxConcurent: 2\nlogs:\n  maxFiles: many\n');
    const result = await berth(dataDir, ['agent', '--data-dir', dataDir, '--config', config]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /admission\.maxConcurent: is not a configuration key/);
    assert.match(result.stderr, new RegExp(`logs\\.maxFiles: must be a whole number \\(from ${config.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\)`));
    assert.match(result.stderr, /\[BERTH_VALIDATION\]$/m);
  });
});

describe('admission', { skip }, () => {
  let dataDir: string;
  /** Bind-mounted into the tasks: each waits for the file `open` in it, so the test decides when the first one ends. */
  let gateDir: string;

  before(async () => {
    dataDir = await dirs.make('berth-adm-');
    gateDir = await dirs.make('berth-gate-');
    const config = await writeAgentConfig(dataDir, `admission:\n  maxConcurrent: 1\n  memory: 1g\npolicy:\n  allowedBindSources: [${JSON.stringify(gateDir)}]\n`);
    await agents.start(dataDir, ['--config', config]);
  });

  test('with maxConcurrent 1, three tasks submitted at once wait as pending and run one at a time in submission order', async () => {
    const label = `berth-test.admission=${run.id}`;
    const gate = `type=bind,source=${gateDir},target=/gate,readonly`;
    const waitForGate = 'while [ ! -e /gate/open ]; do sleep 0.05; done; echo';
    const submits = await Promise.all(
      ['first', 'second', 'third'].map((name) => berth(dataDir, ['submit', '-l', RUN_LABEL, '-l', label, '--mount', gate, TEST_IMAGE, 'sh', '-c', `${waitForGate} ${name}`])),
    );
    for (const result of submits) assert.equal(result.code, 0, result.stderr);
    // ps lists newest first; reversed, that is submission order, the order admission must keep.
    // The first holds the only slot until the gate opens (in cluster mode once its node claimed it,
    // a moment after the submit); the two behind it wait, durably, as pending.
    const submitted = await pollUntil(
      'the first task to hold the slot',
      async () => {
        const tasks = (await berthJson<TaskView[]>(dataDir, ['ps', '-a', '--filter', `label=${label}`])).reverse();
        return tasks.length === 3 && ['starting', 'running'].includes(tasks[0]!.state) ? tasks : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    assert.deepEqual(submitted.slice(1).map((t) => t.state), ['pending', 'pending']);
    await writeFile(path.join(gateDir, 'open'), '');

    const ended = await pollUntil(
      'all three to end',
      async () => {
        const tasks = (await berthJson<TaskView[]>(dataDir, ['ps', '-a', '--filter', `label=${label}`])).reverse();
        return tasks.every((t) => ENDED.includes(t.state)) ? tasks : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    assert.deepEqual(ended.map((t) => t.id), submitted.map((t) => t.id));
    assert.deepEqual(ended.map((t) => t.exitCode), [0, 0, 0]);
    const ms = (time: string | undefined): number => Date.parse(time!);
    for (let i = 1; i < ended.length; i++) {
      const previous = ended[i - 1]!;
      const task = ended[i]!;
      assert.ok(ms(task.startedAt) > ms(previous.startedAt), `task ${i + 1} starts after task ${i}`);
      assert.ok(ms(task.admittedAt) >= ms(previous.finishedAt), `task ${i + 1} is admitted only once task ${i} has finished`);
      assert.ok(ms(task.startedAt) >= ms(previous.finishedAt), `task ${i + 1} starts only once task ${i} has finished`);
    }
  });

  test('a task larger than the whole budget is refused at submit with the reason', async () => {
    const result = await berth(dataDir, ['submit', '-l', RUN_LABEL, '-m', '2g', TEST_IMAGE, 'true']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^berth: -m\/--memory: 2 GiB is more than the agent's whole memory budget of 1 GiB: the task could never start \[BERTH_VALIDATION\]$/m);
    assert.equal(result.stdout, '');
  });
});
