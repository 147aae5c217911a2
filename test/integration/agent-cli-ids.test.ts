import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { AgentClient, TaskView } from '../../src/agent/client.js';
import { LABELS } from '../../src/common/labels.js';
import { agentClientOf, agentProcesses, berth, berthInspect, submitViaCli, tempDirs, waitForTaskState, type RunningAgent } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { hasEnded, TASK_STATES, type TaskState } from '../../src/state/tasks.js';

/**
 * Task ids as a docker user types them, through the real CLI against a real agent on the real
 * engine: short ids shown, any unique prefix taken (by the agent's routes and by exec and stats on
 * the engine), an ambiguous one refused with its candidates; inspect of several ids; rm -f.
 */

const engine = testEngine();
const run = testRun(engine);
const agents = agentProcesses();
const dirs = tempDirs();
let client: AgentClient | undefined;

const ENDED = TASK_STATES.filter(hasEnded);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

after(async () => {
  client?.close();
  await agents.killAll();
  await run.cleanup();
  await dirs.removeAll();
});

const skip = await requireEngine();

describe('task ids and listings through the CLI', { skip }, () => {
  let agent: RunningAgent;
  let dataDir: string;
  /** Names of this file's tasks start with it, so that prefixes are this run's alone. */
  const stem = `ids-${run.id}`;

  before(async () => {
    dataDir = await dirs.make('berth-ids-');
    agent = await agents.start(dataDir);
    client = await agentClientOf(agent);
  });

  const submit = (args: string[], label = run.labelFilter): Promise<string> => submitViaCli(dataDir, label, args);
  const waitForState = (taskId: string, states: readonly TaskState[]): Promise<TaskView> => waitForTaskState(client!, taskId, states);

  test('submit prints the whole id; ps shows 12 characters (-q too), --no-trunc the whole id; a unique prefix works on every command', async () => {
    const id = await submit([TEST_IMAGE, 'sh', '-c', 'echo hello from the task; sleep 60']);
    assert.match(id, UUID, 'submit prints the whole id, as docker run -d');
    await waitForState(id, ['running']);

    const ps = (...flags: string[]) => berth(dataDir, ['ps', ...flags, '-f', `label=${run.labelFilter}`]);
    const [table, quiet, whole, wideTable] = await Promise.all([ps(), ps('-q'), ps('-q', '--no-trunc'), ps('--no-trunc')]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`^${id.slice(0, 12)}\\s+${TEST_IMAGE}\\s+`, 'm'));
    assert.ok(!table.stdout.includes(id), 'the table shows no whole id');
    assert.ok(quiet.stdout.split('\n').includes(id.slice(0, 12)), quiet.stdout);
    assert.ok(whole.stdout.split('\n').includes(id), whole.stdout);
    assert.match(wideTable.stdout, new RegExp(`^${id}\\s+${TEST_IMAGE}\\s+`, 'm'));

    // The short id as printed, and shorter prefixes, name the task everywhere a task id is taken;
    // exec and stats find the container on the engine by the same rule.
    const prefix = id.slice(0, 8);
    const [inspected, logs, exec, stats] = await Promise.all([
      berthInspect<TaskView>(dataDir, id.slice(0, 12)),
      berth(dataDir, ['logs', prefix]),
      berth(dataDir, ['exec', prefix, 'echo', 'inside']),
      berth(dataDir, ['stats', '--no-stream', '--json', prefix]),
    ]);
    assert.equal(inspected.id, id);
    assert.equal(logs.code, 0, logs.stderr);
    assert.equal(logs.stdout, 'hello from the task\n');
    assert.equal(exec.code, 0, exec.stderr);
    assert.equal(exec.stdout, 'inside\n');
    assert.equal(stats.code, 0, stats.stderr);
    assert.ok(stats.stdout.includes(id), `stats names the whole task id: ${stats.stdout}`);

    const stop = await berth(dataDir, ['stop', '-t', '0', prefix]);
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal(stop.stdout, `${prefix}\n`, 'stop prints the ids as typed, as docker');
    assert.equal((await waitForState(id, ENDED)).endState?.kind, 'cancelled');
    const removed = await berth(dataDir, ['rm', prefix]);
    assert.equal(removed.code, 0, removed.stderr);
    const gone = await berth(dataDir, ['inspect', prefix]);
    assert.equal(gone.code, 1);
    assert.equal(gone.stderr, `berth: no task ${prefix} [BERTH_TASK_NOT_FOUND]\n`);
  });

  test('an ambiguous prefix is refused by every command with its candidates; the exact id wins over longer ids', async () => {
    const [a1, a2, exact] = await Promise.all([
      submit(['--name', `${stem}-a1`, TEST_IMAGE, 'sleep', '60']),
      submit(['--name', `${stem}-a2`, TEST_IMAGE, 'sleep', '60']),
      submit(['--name', `${stem}-a`, TEST_IMAGE, 'true']),
    ]);
    assert.deepEqual([a1, a2, exact], [`${stem}-a1`, `${stem}-a2`, `${stem}-a`], 'an explicit id is a name: kept as given');
    await waitForState(a1, ['running']);
    await waitForState(a2, ['running']);

    // `<stem>-a` is an exact id (it would win), so the ambiguous prefix is one character shorter.
    const ambiguous = new RegExp(`^berth: task id prefix ${stem}- is ambiguous: 3 tasks start with it \\(${stem}-a, ${stem}-a1, ${stem}-a2\\); type more of the id \\[BERTH_TASK_AMBIGUOUS\\]$`);
    const commands = [['logs'], ['stop'], ['rm'], ['rm', '-f']];
    const refusals = await Promise.all(commands.map((command) => berth(dataDir, [...command, `${stem}-`])));
    refusals.forEach((result, index) => {
      const command = commands[index]!.join(' ');
      assert.equal(result.code, 1, `${command}: ${result.stderr}`);
      assert.match(result.stderr.trim(), ambiguous, command);
    });
    const [inspect, exactOne] = await Promise.all([berth(dataDir, ['inspect', `${stem}-`]), berthInspect<TaskView>(dataDir, `${stem}-a`)]);
    assert.equal(inspect.code, 1);
    assert.match(inspect.stderr, /3 tasks start with it .*\[BERTH_TASK_AMBIGUOUS\]/);
    assert.equal(JSON.parse(inspect.stdout).length, 0);
    assert.equal(exactOne.id, exact, 'the exact id wins');

    // exec and stats go through the agent, by the agent's rule: the exact id wins, and that task has ended.
    await waitForState(exact, ENDED);
    const [exec, stats] = await Promise.all([berth(dataDir, ['exec', `${stem}-a`, 'touch', '/tmp/ran']), berth(dataDir, ['stats', '--no-stream', `${stem}-a`])]);
    assert.equal(exec.code, 125, exec.stderr);
    assert.match(exec.stderr.trim(), new RegExp(`^berth: cannot exec in task ${stem}-a: it is exited, not running \\[BERTH_TASK_STATE\\]$`));
    assert.equal(stats.code, 125, stats.stderr);
    assert.match(stats.stderr.trim(), new RegExp(`^berth: cannot read the stats of task ${stem}-a: it is exited \\[BERTH_TASK_STATE\\]$`));
    // Nothing ran: the file the refused exec would have made is in neither container.
    const checks = await Promise.all([a1, a2].map((id) => berth(dataDir, ['exec', id, 'sh', '-c', 'test ! -e /tmp/ran'])));
    for (const check of checks) assert.equal(check.code, 0, check.stderr);

    // rm -f stops a running task and removes it, in one command.
    const force = await berth(dataDir, ['rm', '-f', a1, a2]);
    assert.equal(force.code, 0, force.stderr);
    assert.equal(force.stdout, `${a1}\n${a2}\n`);
    for (const id of [a1, a2]) assert.equal((await berth(dataDir, ['inspect', id])).code, 1, `${id} is gone`);
    await pollUntil('the containers to be removed', async () => ((await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${a1}`] })).length === 0 ? true : undefined));
  });

  test('inspect of several ids prints one array; a missing one is an error line while the others print, exit 1', async () => {
    const first = await submit(['--name', `${stem}-i1`, TEST_IMAGE, 'true']);
    const second = await submit(['--name', `${stem}-i2`, TEST_IMAGE, 'true']);
    const one = await berth(dataDir, ['inspect', first]);
    assert.equal(one.code, 0, one.stderr);
    const single = JSON.parse(one.stdout) as TaskView[];
    assert.ok(Array.isArray(single) && single.length === 1 && single[0]!.id === first, 'one id prints an array of one, as docker');
    const several = await berth(dataDir, ['inspect', first, `${stem}-missing`, second]);
    assert.equal(several.code, 1);
    assert.deepEqual((JSON.parse(several.stdout) as TaskView[]).map((t) => t.id), [first, second]);
    assert.equal(several.stderr, `berth: no task ${stem}-missing [BERTH_TASK_NOT_FOUND]\n`);
  });
});
