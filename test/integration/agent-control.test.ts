import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { AgentClient, type TaskView } from '../../src/agent/client.js';
import { hasEnded, type StoredTaskSpec } from '../../src/state/tasks.js';
import { pollUntil, requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';
import { agentClientOf, agentTestFile, berth } from '../support/agent.js';

/**
 * Signals, pause and resume, and wait, through a real agent process on the real engine, by its
 * client and its CLI: a trap in the task sees the signal, a paused task's time limit stands still
 * (also across an agent restart), and wait answers with the end.
 */
const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);

const spec = (command: string[], extra: Partial<StoredTaskSpec> = {}): StoredTaskSpec => ({ image: TEST_IMAGE, command, labels: { ...run.labels }, stopGracePeriod: '1s', ...extra });

async function untilRunning(client: AgentClient, id: string): Promise<TaskView> {
  return pollUntil(`task ${id} to run`, async () => {
    const task = await client.get(id);
    return task.state === 'running' ? task : undefined;
  }, { timeoutMs: 60_000, intervalMs: 100 });
}

async function outputOf(client: AgentClient, id: string): Promise<string> {
  let text = '';
  for await (const record of client.logs(id)) text += record.text;
  return text;
}

describe('signals, pause and wait through the agent', { skip: await requireEngine() }, () => {
  test('berth kill -s delivers a signal a trap sees; berth kill ends the task, and berth wait prints its exit code', async () => {
    const dataDir = await dirs.make('berth-ctl-');
    const agent = await agents.start(dataDir);
    const client = await agentClientOf(agent);
    const id = `${run.id}-trap`;
    // The trap runs between short sleeps; "ready" says it is in place.
    await client.submit({ id, spec: spec(['sh', '-c', 'trap "echo got-hup" HUP; echo ready; while true; do sleep 0.1; done']) });
    await untilRunning(client, id);
    await pollUntil('the trap to be in place', async () => ((await outputOf(client, id)).includes('ready') ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
    const hup = await berth(dataDir, ['kill', '-s', 'HUP', id]);
    assert.equal(hup.code, 0, hup.stderr);
    await pollUntil('the trap to see SIGHUP', async () => ((await outputOf(client, id)).includes('got-hup') ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
    assert.equal((await client.get(id)).state, 'running', 'a signal the task handles does not end it');

    // berth pause and unpause freeze and thaw it in the engine.
    const paused = await berth(dataDir, ['pause', id]);
    assert.equal(paused.code, 0, paused.stderr);
    assert.equal((await engine.inspectContainer((await client.get(id)).containerId!)).paused, true);
    const resumed = await berth(dataDir, ['unpause', id]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.equal((await engine.inspectContainer((await client.get(id)).containerId!)).paused, false);

    const killed = await berth(dataDir, ['kill', id]);
    assert.equal(killed.code, 0, killed.stderr);
    const waited = await berth(dataDir, ['wait', id]);
    assert.deepEqual([waited.code, waited.stdout], [0, '137\n'], waited.stderr);
    const task = await client.get(id);
    assert.deepEqual([task.state, task.endState?.kind], ['exited', 'failed']);

    // Refusals: a task that has ended takes no signal or pause; an unknown task is 404.
    const late = await berth(dataDir, ['kill', '-s', 'HUP', id]);
    assert.equal(late.code, 1);
    assert.match(late.stderr, /BERTH_TASK_STATE/);
    await assert.rejects(client.pause(`${run.id}-nosuch`), (e: unknown) => isBerthError(e, 'BERTH_TASK_NOT_FOUND'));
    client.close();
  });

  test('a task whose command is missing ends failed with 127, and one that is not executable with 126, as a shell says', async () => {
    const dataDir = await dirs.make('berth-cmd-');
    const agent = await agents.start(dataDir);
    const client = await agentClientOf(agent);
    await client.submit({ id: `${run.id}-missing`, spec: spec(['no-such-command']) });
    await client.submit({ id: `${run.id}-noexec`, spec: spec(['/etc/passwd']) });
    const missing = await client.wait(`${run.id}-missing`);
    const noexec = await client.wait(`${run.id}-noexec`);
    assert.deepEqual([missing.endState?.kind, missing.exitCode], ['failed', 127], JSON.stringify(missing.endState));
    assert.deepEqual([noexec.endState?.kind, noexec.exitCode], ['failed', 126], JSON.stringify(noexec.endState));
    const waited = await berth(dataDir, ['wait', `${run.id}-missing`, `${run.id}-noexec`]);
    assert.equal(waited.stdout, '127\n126\n', waited.stderr);
    client.close();
  });

  test('a paused task\'s time limit stands still, across an agent restart too, and goes on after unpause', async () => {
    const dataDir = await dirs.make('berth-pau-');
    let agent = await agents.start(dataDir);
    let client = await agentClientOf(agent);
    const id = `${run.id}-pause`;
    // Long enough for the pause to come first on a loaded machine; the long poll below outlasts it.
    const timeoutMs = 8000;
    await client.submit({ id, spec: spec(['sleep', '600'], { timeout: `${timeoutMs}ms` }) });
    const started = await untilRunning(client, id);
    // Through the API, at once (the CLI's own pause is in the test above).
    await client.pause(id);
    const view = await client.get(id);
    assert.ok(view.pausedAt, 'the view says since when it is paused');
    const containerId = view.containerId!;
    assert.equal((await engine.inspectContainer(containerId)).paused, true);

    // A long poll longer than the time limit answers that the task has not ended: paused, its limit stands still.
    const poll = await client.waitOnce(id, timeoutMs + 2000);
    assert.deepEqual([poll.ended, poll.task.state], [false, 'running']);

    // The agent restarts while the task is paused: it finds it paused, with its pause recorded.
    client.close();
    await agent.stop('SIGTERM');
    agent = await agents.start(dataDir);
    client = await agentClientOf(agent);
    const recovered = await client.get(id);
    assert.equal(recovered.state, 'running');
    assert.equal(recovered.pausedAt, view.pausedAt, 'the pause survives the restart');
    assert.equal((await engine.inspectContainer(containerId)).paused, true);

    await client.unpause(id);
    const ended = await client.wait(id);
    assert.equal(ended.endState?.kind, 'timed-out');
    assert.ok(ended.pausedForMs! > 0);
    // The limit counted running time only: the task ran past its limit by the time it was paused.
    const ranMs = Date.parse(ended.finishedAt!) - Date.parse(started.startedAt!);
    assert.ok(ranMs >= timeoutMs + ended.pausedForMs! - 1000, `ran ${ranMs} ms with ${ended.pausedForMs} ms paused and a ${timeoutMs} ms limit`);
    assert.ok(hasEnded(ended.state));
    client.close();
  });
});
