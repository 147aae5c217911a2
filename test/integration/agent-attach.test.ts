import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket, { type RawData } from 'ws';
import { isBerthError } from '../../src/common/errors.js';
import { AgentClient, type AttachSession, type TaskView } from '../../src/agent/client.js';
import { TOKEN_FILE_NAME } from '../../src/agent/agent.js';
import type { StoredTaskSpec } from '../../src/state/tasks.js';
import { pollUntil, requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';
import { agentClientOf, agentTestFile, BERTH_CLI, cleanEnv, httpGet, waitForTaskState, writeAgentConfig, type RunningAgent } from '../support/agent.js';
import { makeTestCertificates } from '../support/tls.js';

/**
 * Attach to a running task's live output and stdin, through a real agent process on the real
 * engine: with the agent's client, a raw `ws` client speaking the wire format, and the real CLI.
 */
const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);

const spec = (command: string[], extra: Partial<StoredTaskSpec> = {}): StoredTaskSpec => ({ image: TEST_IMAGE, command, labels: { ...run.labels }, stopGracePeriod: '1s', ...extra });

/** A task that prints numbered lines on stdout and stderr, five a second, until stopped. */
const TICKER = ['sh', '-c', 'i=0; while true; do echo out-$i; echo err-$i >&2; i=$((i+1)); sleep 0.2; done'];

/** Collects an attach session's output as text. */
function collect(session: AttachSession): { stdout: () => string; stderr: () => string } {
  let stdout = '';
  let stderr = '';
  session.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  session.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  return { stdout: () => stdout, stderr: () => stderr };
}

const linesOf = (text: string): string[] => text.split('\n').filter((line) => line !== '');

/** Waits (bounded) until `read()` has at least `count` lines. */
function untilLines(what: string, read: () => string, count: number): Promise<string[]> {
  return pollUntil(what, async () => {
    const lines = linesOf(read());
    return lines.length >= count ? lines : undefined;
  }, { timeoutMs: 30_000, intervalMs: 50 });
}

async function outputOf(client: AgentClient, id: string): Promise<string> {
  let text = '';
  for await (const record of client.logs(id)) text += record.text;
  return text;
}

/** Numbered lines `prefix-N` in order, each once, from `first` on: their numbers. */
function numbersOf(lines: readonly string[], prefix: string): number[] {
  return lines.map((line) => {
    const match = new RegExp(`^${prefix}-(\\d+)$`).exec(line);
    assert.ok(match, `"${line}" is not a ${prefix} line`);
    return Number(match[1]);
  });
}

function assertIncreasing(numbers: readonly number[], what: string): void {
  numbers.forEach((n, i) => assert.ok(i === 0 || n > numbers[i - 1]!, `${what}: ${numbers.join(',')}`));
}

function assertConsecutive(numbers: readonly number[], what: string): void {
  numbers.forEach((n, i) => assert.equal(n, numbers[0]! + i, `${what}: ${numbers.join(',')}`));
}

describe('attach to a task through the agent', { skip: await requireEngine() }, () => {
  let agent: RunningAgent;
  let client: AgentClient;
  let token: string;

  before(async () => {
    agent = await agents.start(await dirs.make('berth-att-'));
    client = await agentClientOf(agent);
    token = (await readFile(path.join(agent.dataDir, TOKEN_FILE_NAME), 'utf8')).trim();
  });
  after(() => client.close());

  /** Submits a task and waits until it runs. */
  async function runTask(name: string, taskSpec: StoredTaskSpec): Promise<TaskView> {
    const id = `${run.id}-${name}`;
    await client.submit({ id, spec: taskSpec });
    return waitForTaskState(client, id, ['running']);
  }

  test('live output arrives from the moment of attaching with stdout and stderr apart; logs=true sends the earlier output first; two clients at once; detaching leaves the task running', async () => {
    const task = await runTask('live', spec(TICKER));
    // Output from before the attach exists: out-0 … out-2 at least.
    await pollUntil('earlier output', async () => ((await outputOf(client, task.id)).includes('out-2\n') ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });

    const live = await client.attach(task.id);
    const liveText = collect(live);
    // The second client is a raw WebSocket speaking the wire format: a stream byte, then the bytes.
    const raw = new WebSocket(`ws+unix://${agent.socketPath}:/v1/tasks/${task.id}/attach?logs=true`, { headers: { authorization: `Bearer ${token}` } });
    const rawOut = { stdout: '', stderr: '', controls: [] as unknown[] };
    raw.on('message', (data: RawData, isBinary: boolean) => {
      const bytes = data as Buffer;
      if (!isBinary) return void rawOut.controls.push(JSON.parse(bytes.toString('utf8')));
      if (bytes[0] === 1) rawOut.stdout += bytes.subarray(1).toString('utf8');
      else if (bytes[0] === 2) rawOut.stderr += bytes.subarray(1).toString('utf8');
      else assert.fail(`unknown stream byte ${bytes[0]}`);
    });
    await once(raw, 'open');

    const liveOut = await untilLines('live stdout', liveText.stdout, 3);
    const liveErr = await untilLines('live stderr', liveText.stderr, 3);
    // Live only: what the task printed before the attach (out-0 came before out-2 was read) is not sent again.
    assert.ok(!liveOut.includes('out-0'), liveOut.join(','));
    assertConsecutive(numbersOf(liveOut, 'out'), 'live stdout');
    assertConsecutive(numbersOf(liveErr, 'err'), 'live stderr');

    // With logs=true: the earlier output from the task's first line on, then the live output, in
    // order and nothing twice (the engine replays its log, then attaches, as docker attach --logs).
    const rawLines = await untilLines('stdout with logs', () => rawOut.stdout, liveOut.length + 5);
    const rawNumbers = numbersOf(rawLines, 'out');
    assert.deepEqual(rawNumbers.slice(0, 3), [0, 1, 2], rawNumbers.join(','));
    assertIncreasing(rawNumbers, 'stdout with logs');
    assert.ok(rawNumbers.at(-1)! > liveOut.length, 'the live output follows the log');
    assertIncreasing(numbersOf(await untilLines('stderr with logs', () => rawOut.stderr, 3), 'err'), 'stderr with logs');

    // One client detaches: the task goes on, and so does the other client's output.
    live.detach();
    assert.deepEqual(await live.end, { kind: 'detached' });
    const seenByRaw = linesOf(rawOut.stdout).length;
    await untilLines('output after the other client detached', () => rawOut.stdout, seenByRaw + 3);
    assert.equal((await client.get(task.id)).state, 'running');
    raw.close();
    await once(raw, 'close');
    assert.equal((await client.get(task.id)).state, 'running', 'detaching never stops the task');
    assert.deepEqual(rawOut.controls, []);
    await client.stop(task.id, { graceMs: 0 });
    await waitForTaskState(client, task.id, ['exited']);
    // The agent's own copy of the output (its log files, read from the engine's log) is whole: the attaches took nothing from it.
    let stored = '';
    for await (const record of client.logs(task.id, { stream: 'stdout' })) stored += record.text;
    const storedNumbers = numbersOf(linesOf(stored), 'out');
    assert.equal(storedNumbers[0], 0);
    assertConsecutive(storedNumbers, 'stored stdout');
    assert.ok(storedNumbers.length >= linesOf(rawOut.stdout).length, `${storedNumbers.length} stored lines, ${linesOf(rawOut.stdout).length} attached`);
  });

  test('stdin frames reach a task with open stdin, after its stdin content; the exit message carries its exit code and end state; stdin is refused for a task without', async () => {
    // Content first, then stdin stays open: a=first comes from the spec, b=second from the attach.
    const task = await runTask('stdin', spec(['sh', '-c', 'read a; echo a=$a; read b; echo b=$b; exit 7'], { stdin: 'first\n', openStdin: true }));
    await pollUntil('the content to be read', async () => ((await outputOf(client, task.id)).includes('a=first') ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
    // The task waits on its open stdin: nothing is read while nobody writes.
    assert.equal((await client.get(task.id)).state, 'running');
    const session = await client.attach(task.id, { logs: true });
    const text = collect(session);
    session.stdin.write('second\n');
    const end = await session.end;
    assert.deepEqual(linesOf(text.stdout()), ['a=first', 'b=second']);
    assert.equal(end.kind, 'exit');
    assert.equal(end.kind === 'exit' && end.exitCode, 7);
    assert.equal(end.kind === 'exit' && end.endState?.kind, 'failed');

    // A task without open stdin: its first stdin frame is refused with a clear error, and the task goes on.
    const closed = await runTask('no-stdin', spec(TICKER));
    const refused = await client.attach(closed.id);
    refused.stdin.write('ignored\n');
    await assert.rejects(refused.end, (error: unknown) => isBerthError(error, 'BERTH_VALIDATION') && /openStdin/.test(error.message));
    assert.equal((await client.get(closed.id)).state, 'running');
    await client.stop(closed.id, { graceMs: 0 });
  });

  test('refused before the upgrade: a wrong token 401, an ended task 409 that points at its logs, an unknown task 404, a plain GET 400', async () => {
    const task = await runTask('refusals', spec(TICKER));
    const wrong = AgentClient.connect({ host: `unix://${agent.socketPath}`, token: 'not-the-token' });
    await assert.rejects(wrong.attach(task.id), (error: unknown) => isBerthError(error, 'BERTH_UNAUTHORIZED') && error.context.status === 401);
    wrong.close();
    // A raw WebSocket with the wrong token gets the 401 answer, never an upgrade.
    const raw = new WebSocket(`ws+unix://${agent.socketPath}:/v1/tasks/${task.id}/attach`, { headers: { authorization: 'Bearer nope' } });
    const [, response] = (await once(raw, 'unexpected-response')) as [unknown, { statusCode: number }];
    assert.equal(response.statusCode, 401);
    // Ending a socket that was never upgraded reports that as an error: expected here.
    raw.once('error', () => undefined);
    raw.terminate();

    const plain = await httpGet(agent.socketPath, `/v1/tasks/${task.id}/attach`, token);
    assert.equal(plain.status, 400, plain.body);
    await assert.rejects(client.attach(`${run.id}-nosuch`), (error: unknown) => isBerthError(error, 'BERTH_TASK_NOT_FOUND'));

    await client.stop(task.id, { graceMs: 0 });
    await waitForTaskState(client, task.id, ['exited']);
    await assert.rejects(client.attach(task.id), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE') && error.context.status === 409 && /berth logs/.test(error.message));
  });

  test('over mutual TLS on the TCP listener: a client with a certificate the agent\'s CA signed attaches (wss), stays attached past the HTTP request timeouts and writes stdin; one without is refused 403 before the upgrade; the agent shutting down closes attaches (1001) and the task goes on', async () => {
    const certs = await makeTestCertificates(await dirs.make('berth-att-certs-'));
    const dataDir = await dirs.make('berth-att-tls-');
    const config = await writeAgentConfig(dataDir, `listen: 127.0.0.1:0\ntls:\n  cert: ${JSON.stringify(certs.server.cert)}\n  key: ${JSON.stringify(certs.server.key)}\n  clientCa: ${JSON.stringify(certs.ca.cert)}\nhttp:\n  headersTimeout: 500ms\n  requestTimeout: 1s\n  keepAliveTimeout: 500ms\n`);
    const tlsAgent = await agents.start(dataDir, ['--config', config]);
    const tcp = String(tlsAgent.logLines().find((line) => line.msg === 'agent listening')?.tcp);
    assert.match(tcp, /^127\.0\.0\.1:\d+$/, tlsAgent.tail());
    const tlsToken = (await readFile(path.join(dataDir, TOKEN_FILE_NAME), 'utf8')).trim();
    const ca = await readFile(certs.ca.cert);
    const remote = AgentClient.connect({ host: `https://${tcp}`, token: tlsToken, tls: { ca, cert: await readFile(certs.client.cert), key: await readFile(certs.client.key) } });
    const id = `${run.id}-tls`;
    // Three seconds of ticks before it reads: an attach is no request, and outlives the request timeout (1 s).
    await remote.submit({ id, spec: spec(['sh', '-c', 'echo ready; read go; i=0; while [ $i -lt 15 ]; do echo tick-$i; i=$((i+1)); sleep 0.2; done; read x; echo tls-$x; exit 6'], { openStdin: true }) });
    await waitForTaskState(remote, id, ['running']);

    const noCert = AgentClient.connect({ host: `https://${tcp}`, token: tlsToken, tls: { ca } });
    await assert.rejects(noCert.attach(id), (error: unknown) => isBerthError(error, 'BERTH_AGENT_TLS') && error.context.status === 403);
    noCert.close();

    const session = await remote.attach(id);
    const text = collect(session);
    session.stdin.write('go\n');
    await pollUntil('the ticks', async () => (text.stdout().includes('tick-14\n') ? true : undefined), { timeoutMs: 30_000, intervalMs: 50 });
    session.stdin.end('ok\n');
    const end = await session.end;
    assert.deepEqual([end.kind, end.kind === 'exit' && end.exitCode], ['exit', 6]);
    assert.match(text.stdout(), /(^|\n)tick-0\n(.|\n)*tick-14\ntls-ok\n$/);

    // The agent shutting down closes its attaches (1001, saying so); the task goes on.
    const ticker = `${run.id}-tls-ticker`;
    await remote.submit({ id: ticker, spec: spec(TICKER) });
    const { containerId } = await waitForTaskState(remote, ticker, ['running']);
    const held = await remote.attach(ticker);
    await untilLines('output before the shutdown', collect(held).stdout, 1);
    remote.close();
    await tlsAgent.stop('SIGTERM');
    await assert.rejects(held.end, (error: unknown) => isBerthError(error, 'BERTH_AGENT_UNAVAILABLE') && /1001: the agent is shutting down/.test(error.message));
    assert.equal((await engine.inspectContainer(containerId!)).running, true);
  });

  /** `berth attach …` as a child process with its stdin a pipe; read as it goes. */
  function spawnAttach(args: readonly string[]) {
    const child = spawn(process.execPath, [...BERTH_CLI, 'attach', ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv({ BERTH_DATA_DIR: agent.dataDir }) });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const closed = once(child, 'close').then(([code]) => code as number | null);
    return { child, stdout: () => stdout, stderr: () => stderr, closed };
  }

  test('berth attach prints the live output, forwards stdin to a task that keeps it open, and exits with the task\'s exit code', async () => {
    const task = await runTask('cli', spec(['sh', '-c', 'echo ready; read x; echo hello-$x; echo bye >&2; exit 4'], { openStdin: true }));
    const cli = spawnAttach([task.id.slice(0, -1)]);
    cli.child.stdin.write('cli\n');
    const code = await cli.closed;
    assert.equal(code, 4, cli.stderr());
    // "ready" came before the attach may have; the reply to the CLI's input came through it.
    assert.match(cli.stdout(), /hello-cli\n$/);
    assert.equal(cli.stderr(), 'bye\n');
  });

  test('berth attach: with sig-proxy Ctrl-C reaches a task that traps it; without, Ctrl-C detaches (130) and the task goes on', async () => {
    const task = await runTask('sig', spec(['sh', '-c', 'trap "echo got-int; exit 5" INT; while true; do echo tick; sleep 0.2; done']));

    const detaching = spawnAttach(['--sig-proxy=false', task.id]);
    await pollUntil('the CLI to print live output', async () => (detaching.stdout().includes('tick') ? true : undefined), { timeoutMs: 30_000, intervalMs: 50 });
    detaching.child.kill('SIGINT');
    assert.equal(await detaching.closed, 130, detaching.stderr());
    assert.equal((await client.get(task.id)).state, 'running');
    assert.doesNotMatch(await outputOf(client, task.id), /got-int/);

    const proxying = spawnAttach([task.id]);
    await pollUntil('the CLI to print live output', async () => (proxying.stdout().includes('tick') ? true : undefined), { timeoutMs: 30_000, intervalMs: 50 });
    proxying.child.kill('SIGINT');
    assert.equal(await proxying.closed, 5, proxying.stderr());
    assert.match(proxying.stdout(), /got-int\n$/);
    const ended = await client.wait(task.id);
    assert.deepEqual([ended.endState?.kind, ended.exitCode], ['failed', 5]);
  });
});
