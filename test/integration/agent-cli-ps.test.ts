import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { AgentClient, TaskView } from '../../src/agent/client.js';
import { agentClientOf, agentProcesses, berth, berthJson, submitViaCli, tempDirs, waitForTaskState, type RunningAgent } from '../support/agent.js';
import { requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { hasEnded, TASK_STATES, type TaskState } from '../../src/state/tasks.js';

/**
 * `berth ps` and `berth stop -t` as a docker user types them, through the real CLI against a real
 * agent on the real engine: newest first, -n/-l, -f end=<kind>, filters validated, a failed
 * start's reason in ps and in logs; a stop's own grace period.
 */

const engine = testEngine();
const run = testRun(engine);
const agents = agentProcesses();
const dirs = tempDirs();
let client: AgentClient | undefined;

const ENDED = TASK_STATES.filter(hasEnded);

after(async () => {
  client?.close();
  await agents.killAll();
  await run.cleanup();
  await dirs.removeAll();
});

const skip = await requireEngine();

describe('ps, its filters and stop -t through the CLI', { skip }, () => {
  let agent: RunningAgent;
  let dataDir: string;
  /** Names of this file's tasks start with it, so that prefixes are this run's alone. */
  const stem = `ps-${run.id}`;

  before(async () => {
    dataDir = await dirs.make('berth-ps-');
    agent = await agents.start(dataDir);
    client = await agentClientOf(agent);
  });

  const submit = (args: string[], label = run.labelFilter): Promise<string> => submitViaCli(dataDir, label, args);
  const waitForState = (taskId: string, states: readonly TaskState[]): Promise<TaskView> => waitForTaskState(client!, taskId, states);

  test('ps lists newest first; -n N gives the newest N in any state; -f end= selects by outcome, and a failed start says why in ps and logs', async () => {
    const label = `${run.labelFilter}-outcomes`;
    const ok = await submit(['--name', `${stem}-ok`, TEST_IMAGE, 'true'], label);
    const failed = await submit(['--name', `${stem}-failed`, TEST_IMAGE, 'sh', '-c', 'exit 3'], label);
    const oom = await submit(['--name', `${stem}-oom`, '-m', '32m', TEST_IMAGE, 'dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1'], label);
    const late = await submit(['--name', `${stem}-late`, '--timeout', '1s', '--stop-timeout', '0', TEST_IMAGE, 'sleep', '60'], label);
    const unstarted = await submit(['--name', `${stem}-unstarted`, '--pull', 'never', `berth-test/no-such-image-${run.id}:latest`, 'true'], label);
    const submitted = [ok, failed, oom, late, unstarted];
    for (const id of submitted) await waitForState(id, ENDED);

    const ps = (...flags: string[]) => berth(dataDir, ['ps', ...flags, '-f', `label=${label}`]);
    const byEnd = async (...kinds: string[]): Promise<string[]> =>
      (await berthJson<TaskView[]>(dataDir, ['ps', ...kinds.flatMap((kind) => ['-f', `end=${kind}`]), '-f', `label=${label}`])).map((t) => t.id);
    const [listed, lastTwo, latest, table, logs, ranLogs] = await Promise.all([
      ps('-a', '-q', '--no-trunc'),
      ps('-n', '2', '-q', '--no-trunc'),
      ps('-l', '-q', '--no-trunc'),
      ps('-a'),
      berth(dataDir, ['logs', unstarted]),
      berth(dataDir, ['logs', failed]),
    ]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(listed.stdout.trim().split('\n'), [...submitted].reverse(), 'newest first');
    assert.deepEqual(lastTwo.stdout.trim().split('\n'), [unstarted, late], '-n 2: the two newest, ended ones included, as docker ps -n');
    assert.equal(latest.stdout, `${unstarted}\n`);

    const [oomOnly, lateOnly, successOnly, failedOnly, oomOrLate] = await Promise.all([byEnd('oom'), byEnd('timed-out'), byEnd('success'), byEnd('failed'), byEnd('oom', 'timed-out')]);
    assert.deepEqual(oomOnly, [oom]);
    assert.deepEqual(lateOnly, [late]);
    assert.deepEqual(successOnly, [ok]);
    assert.deepEqual(failedOnly, [unstarted, failed], 'a failed start is a failed end');
    assert.deepEqual(oomOrLate, [late, oom]);

    // Ids given with --name are names: shown whole, as docker shows names.
    const rowOf = (id: string): string => table.stdout.split('\n').find((line) => line.startsWith(`${id} `)) ?? '';
    assert.match(rowOf(unstarted), /\sFailed to start: .*no-such-image/, table.stdout);
    assert.doesNotMatch(rowOf(unstarted), /Exited \(125\)/);
    assert.match(rowOf(failed), /\sExited \(3\)/);
    assert.match(rowOf(oom), /\sOut of memory \(137\)/);
    assert.match(rowOf(late), /\sTimed out/);

    assert.equal(logs.code, 0, 'logs exits as before');
    assert.equal(logs.stdout, '');
    assert.match(logs.stderr, new RegExp(`^berth: task ${unstarted} failed to start: .*no-such-image.*\\n$`));
    assert.equal(logs.stderr.split('\n').length, 2, 'one line');
    assert.equal(ranLogs.stderr, '', 'a task that ran gets no such line');
  });

  test('filters and -n are validated naming what is allowed', async () => {
    const [badKey, badEnd, badLast, badGrace] = await Promise.all([
      berth(dataDir, ['ps', '-f', 'colour=red']),
      berth(dataDir, ['ps', '-f', 'end=crashed']),
      berth(dataDir, ['ps', '-n', 'two']),
      berth(dataDir, ['stop', '-t', 'soon', 'anything']),
    ]);
    assert.equal(badKey.code, 2);
    assert.match(badKey.stderr, /--filter\[0\]: unknown filter key "colour"; the keys are state, status, end, label/);
    assert.equal(badEnd.code, 2);
    assert.match(badEnd.stderr, /end must be one of success, failed, oom, timed-out, cancelled, lost; got "crashed"/);
    assert.equal(badLast.code, 2);
    assert.match(badLast.stderr, /-n\/--last: must be a whole number/);
    assert.equal(badGrace.code, 2);
    // The rule of --stop-timeout (stopTimeoutFlag), naming the flag as typed.
    assert.match(badGrace.stderr, /-t\/--time: "soon" is not a duration/);
  });

  test('stop -t gives this stop its grace period: a task ignoring SIGTERM with a 10-minute stop timeout is killed after 1 s', async () => {
    // PID 1 has no handler for TERM, so only the SIGKILL after the grace period ends it.
    const id = await submit(['--stop-timeout', '10m', TEST_IMAGE, 'sh', '-c', "trap '' TERM; while true; do sleep 1; done"]);
    await waitForState(id, ['running']);
    const stop = await berth(dataDir, ['stop', '-t', '1', id.slice(0, 12)]);
    assert.equal(stop.code, 0, stop.stderr);
    const ended = await waitForState(id, ENDED);
    assert.equal(ended.endState?.kind, 'cancelled');
    assert.equal(ended.exitCode, 137, 'killed by SIGKILL after the grace period');
  });
});
