import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { isBerthError } from '../../src/common/errors.js';
import { AgentClient, type AgentExecSession } from '../../src/agent/client.js';
import { TOKEN_FILE_NAME } from '../../src/agent/agent.js';
import { decodeData, encodeData } from '../../src/agent/stream-frames.js';
import type { StoredTaskSpec } from '../../src/state/tasks.js';
import { pollUntil, requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';
import { agentClientOf, agentTestFile, berth, BERTH_CLI, cleanEnv, waitForTaskState, writeAgentConfig, type RunningAgent } from '../support/agent.js';
import { makeTestCertificates, type TestCertificates } from '../support/tls.js';
import { startOnPty } from '../support/pty.js';

/**
 * Exec through a real agent process on the real engine: over its WebSocket (a raw `ws` client
 * speaking the wire format, and AgentClient.exec), as a plain request, and by the real CLI (with
 * pipes, and `-it` on a real pseudo-terminal). One long-running task serves every exec.
 */
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);

const spec = (command: string[]): StoredTaskSpec => ({ image: TEST_IMAGE, command, labels: { ...run.labels }, stopGracePeriod: '1s' });

let agent: RunningAgent;
let client: AgentClient;
let token: string;
let certs: TestCertificates;
const taskId = `${run.id}-exec`;

/** Reads a session's stdout and stderr to their ends. */
async function outputOf(session: AgentExecSession): Promise<{ stdout: string; stderr: string }> {
  const read = async (stream: NodeJS.ReadableStream): Promise<string> => {
    let text = '';
    for await (const chunk of stream) text += chunk.toString();
    return text;
  };
  const [stdout, stderr] = await Promise.all([read(session.stdout), read(session.stderr)]);
  return { stdout, stderr };
}

/** A raw WebSocket to the agent's exec route: the wire format as a non-Node client speaks it. */
function rawSocket(query: string, bearer = token): WebSocket {
  const socket = new WebSocket(`ws+unix://${agent.socketPath}:/v1/tasks/${taskId}/exec?${query}`, { headers: { authorization: `Bearer ${bearer}` } });
  // A refused upgrade is read from 'unexpected-response'; terminating the socket then also reports it as an error.
  socket.on('error', () => undefined);
  return socket;
}

/** Whether a process with `marker` in its command line runs in the task's container (ps through a plain exec). */
async function isRunningInTask(marker: string): Promise<boolean> {
  const ps = await client.execOnce(taskId, { cmd: ['ps', '-o', 'args'] });
  return ps.stdout.split('\n').some((line) => line.includes(marker) && !line.includes('ps -o'));
}

describe('exec through the agent', { skip: await requireEngine() }, () => {
  before(async () => {
    const dataDir = await dirs.make('berth-exec-');
    certs = await makeTestCertificates(await dirs.make('berth-exec-certs-'));
    // Mutual TLS on a TCP listener besides the unix socket: exec must work over wss:// too.
    const tls = `tls:\n  cert: ${JSON.stringify(certs.server.cert)}\n  key: ${JSON.stringify(certs.server.key)}\n  clientCa: ${JSON.stringify(certs.ca.cert)}\n`;
    agent = await agents.start(dataDir, ['--config', await writeAgentConfig(dataDir, `listen: 127.0.0.1:0\n${tls}`)]);
    client = await agentClientOf(agent);
    token = (await readFile(path.join(dataDir, TOKEN_FILE_NAME), 'utf8')).trim();
    await client.submit({ id: taskId, spec: spec(['sleep', '3600']) });
    await waitForTaskState(client, taskId, ['running']);
  });

  test('a TTY exec over the raw WebSocket starts at the size asked, follows a resize (stty size shows it), and ends with its exit code and close code 1000', async () => {
    const socket = rawSocket('cmd=sh&tty=true&stdin=true&rows=24&cols=80');
    let screen = '';
    const controls: Array<Record<string, unknown>> = [];
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) screen += decodeData(data)?.data.toString('utf8') ?? '';
      else controls.push(JSON.parse(data.toString('utf8')) as Record<string, unknown>);
    });
    const closed = once(socket, 'close') as Promise<[number, Buffer]>;
    await once(socket, 'open');
    const type = (line: string): void => void socket.send(encodeData('stdin', Buffer.from(`${line}\n`)));
    await pollUntil('the exec to start', () => (controls.some((c) => c.type === 'started') ? true : undefined), { timeoutMs: 30_000 });
    type('stty size');
    await pollUntil('stty to show 24 80', () => (/24 80/.test(screen) ? true : undefined), { timeoutMs: 30_000 });
    socket.send(JSON.stringify({ type: 'resize', rows: 40, cols: 100 }));
    // The resize is applied before the next line is read (one socket, in order; the agent resizes as it reads).
    await pollUntil('stty to show 40 100', async () => {
      type('stty size');
      await new Promise((resolve) => setTimeout(resolve, 200));
      return /40 100/.test(screen) ? true : undefined;
    }, { timeoutMs: 30_000 });
    type('exit 3');
    const [code] = await closed;
    assert.equal(code, 1000);
    assert.deepEqual(controls.at(-1), { type: 'exit', exitCode: 3 });
  });

  test('without a TTY stdout and stderr stay apart, stdin reaches the command, and exit codes are 0, 3 and 127', async () => {
    const streams = await client.exec(taskId, { cmd: ['sh', '-c', 'echo to-out; echo to-err >&2; exit 3'] });
    assert.deepEqual(await outputOf(streams), { stdout: 'to-out\n', stderr: 'to-err\n' });
    assert.equal(await streams.exitCode, 3);

    const cat = await client.exec(taskId, { cmd: ['cat'], stdin: true });
    cat.stdin!.end('hello through stdin');
    const [catOutput, catExit] = await Promise.all([outputOf(cat), cat.exitCode]);
    assert.deepEqual([catOutput.stdout, catExit], ['hello through stdin', 0]);

    const missing = await client.exec(taskId, { cmd: ['no-such-command'] });
    await outputOf(missing);
    const exit = await missing.exit;
    assert.equal(exit.exitCode, 127);
    assert.equal(exit.commandFailure?.kind, 'not-found');
  });

  test('closing the socket before the exit ends the exec\'s process', async () => {
    const marker = 'sleep 3217';
    const session = await client.exec(taskId, { cmd: ['sh', '-c', `${marker}; echo never`] });
    await pollUntil('the command to run', async () => ((await isRunningInTask(marker)) ? true : undefined), { timeoutMs: 30_000, intervalMs: 200 });
    const execId = session.execId;
    session.close();
    await assert.rejects(session.exit, (error: unknown) => isBerthError(error, 'BERTH_CANCELLED'));
    await pollUntil('the exec to end', async () => ((await engine.inspectExec(execId)).running ? undefined : true), { timeoutMs: 30_000, intervalMs: 100 });
    assert.equal(await isRunningInTask(marker), false, 'the command and its children are gone');
    // A raw client that just drops its connection (no close frame) ends it too.
    const raw = rawSocket(`cmd=sh&cmd=-c&cmd=${encodeURIComponent('sleep 3218')}`);
    await once(raw, 'open');
    await pollUntil('the command to run', async () => ((await isRunningInTask('sleep 3218')) ? true : undefined), { timeoutMs: 30_000, intervalMs: 200 });
    raw.terminate();
    await pollUntil('the dropped command to end', async () => ((await isRunningInTask('sleep 3218')) ? undefined : true), { timeoutMs: 30_000, intervalMs: 200 });
  });

  test('a wrong token is refused with 401 before the upgrade, a bad query with 400 naming the fields, a task not running with 409', async () => {
    const refused = rawSocket('cmd=true', 'wrong');
    const [, response] = (await once(refused, 'unexpected-response')) as [unknown, { statusCode: number }];
    assert.equal(response.statusCode, 401);
    refused.terminate();
    const wrongClient = AgentClient.connect({ host: `unix://${agent.socketPath}`, token: 'wrong' });
    await assert.rejects(wrongClient.exec(taskId, { cmd: ['true'] }), (error: unknown) => isBerthError(error, 'BERTH_UNAUTHORIZED'));
    wrongClient.close();

    const bad = rawSocket('tty=maybe&rows=0&workdir=tmp&nope=1');
    const [, badResponse] = (await once(bad, 'unexpected-response')) as [unknown, NodeJS.ReadableStream & { statusCode: number }];
    let body = '';
    for await (const chunk of badResponse) body += chunk.toString();
    bad.terminate();
    assert.equal(badResponse.statusCode, 400);
    const fields = (JSON.parse(body) as { error: { issues: Array<{ field: string }> } }).error.issues.map((issue) => issue.field).sort();
    assert.deepEqual(fields, ['cmd', 'cols', 'nope', 'rows', 'rows', 'tty', 'workdir']);

    const endedId = `${run.id}-ended`;
    await client.submit({ id: endedId, spec: spec(['true']) });
    await waitForTaskState(client, endedId, ['exited']);
    await assert.rejects(client.exec(endedId, { cmd: ['true'] }), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE') && error.context.status === 409);
    await assert.rejects(client.execOnce(endedId, { cmd: ['true'] }), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE') && error.context.status === 409);
  });

  test('exec over wss:// with mutual TLS: a client certificate the CA signed gets the exec, none is refused before the upgrade', async () => {
    const address = String(agent.logLines().find((line) => line.msg === 'agent listening')?.tcp);
    assert.match(address, /^127\.0\.0\.1:\d+$/, agent.tail());
    const ca = await readFile(certs.ca.cert);
    const withCert = AgentClient.connect({ host: `https://${address}`, token, tls: { ca, cert: await readFile(certs.client.cert), key: await readFile(certs.client.key) } });
    try {
      const session = await withCert.exec(taskId, { cmd: ['sh', '-c', 'echo over-tls; echo err-tls >&2; exit 6'] });
      assert.deepEqual(await outputOf(session), { stdout: 'over-tls\n', stderr: 'err-tls\n' });
      assert.equal(await session.exitCode, 6);
      assert.equal((await withCert.execOnce(taskId, { cmd: ['echo', 'plain-tls'] })).stdout, 'plain-tls\n');
    } finally {
      withCert.close();
    }
    const noCert = AgentClient.connect({ host: `https://${address}`, token, tls: { ca } });
    await assert.rejects(noCert.exec(taskId, { cmd: ['true'] }), (error: unknown) => isBerthError(error, 'BERTH_AGENT_TLS') && error.context.status === 403);
    noCert.close();
    // The CLI, remote as a user would run it.
    const cli = await berth(await dirs.make('berth-exec-remote-'), ['exec', '-H', `https://${address}`, '--token', token, '--tlscacert', certs.ca.cert, '--tlscert', certs.client.cert, '--tlskey', certs.client.key, taskId, 'echo', 'cli-tls']);
    assert.deepEqual([cli.code, cli.stdout], [0, 'cli-tls\n'], cli.stderr);
  });

  test('a plain exec answers with its output and exit code, takes stdin, and a timeout kills the command with BERTH_EXEC_TIMEOUT', async () => {
    const result = await client.execOnce(taskId, { cmd: ['sh', '-c', 'cat; echo oops >&2; exit 5'], stdin: 'given', env: ['X=1'] });
    assert.deepEqual(result, { exitCode: 5, stdout: 'given', stderr: 'oops\n' });
    assert.equal((await client.execOnce(taskId, { cmd: ['sh', '-c', 'echo $X'], env: ['X=42'], workdir: '/tmp' })).stdout, '42\n');
    const big = await client.execOnce(taskId, { cmd: ['sh', '-c', 'head -c 1100000 /dev/zero'] });
    assert.equal(big.stdout.length, 1024 * 1024);
    assert.equal(big.stdoutTruncated, true);
    await assert.rejects(client.execOnce(taskId, { cmd: ['sleep', '3219'], timeout: '1s' }), (error: unknown) => isBerthError(error, 'BERTH_EXEC_TIMEOUT') && error.context.status === 504);
    assert.equal(await isRunningInTask('sleep 3219'), false, 'the timed-out command is gone');
    // A client that gives up on a plain exec ends its command too.
    const abort = new AbortController();
    const givenUp = client.execOnce(taskId, { cmd: ['sleep', '3220'] }, { signal: abort.signal });
    await pollUntil('the command to run', async () => ((await isRunningInTask('sleep 3220')) ? true : undefined), { timeoutMs: 30_000, intervalMs: 200 });
    abort.abort();
    await assert.rejects(givenUp, (error: unknown) => isBerthError(error, 'BERTH_CANCELLED'));
    await pollUntil('the abandoned command to end', async () => ((await isRunningInTask('sleep 3220')) ? undefined : true), { timeoutMs: 30_000, intervalMs: 200 });
    await assert.rejects(client.execOnce(taskId, { cmd: [] }), (error: unknown) => isBerthError(error, 'BERTH_VALIDATION') && /cmd/.test(error.message));
  });

  test('berth exec goes through the agent: separate streams, exit codes 3 and 127, -H with --token, and a wrong token refused', async () => {
    const out = await berth(agent.dataDir, ['exec', taskId, 'sh', '-c', 'echo a; echo b >&2; exit 3']);
    assert.deepEqual(out, { code: 3, stdout: 'a\n', stderr: 'b\n' });
    const missing = await berth(agent.dataDir, ['exec', taskId, 'no-such-command']);
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /command not found in the container.*exiting 127/);
    // Another data directory: only the address and the token given find the agent.
    const elsewhere = await dirs.make('berth-exec-cli-');
    const viaHost = await berth(elsewhere, ['exec', '-H', `unix://${agent.socketPath}`, '--token', token, taskId, 'echo', 'via-host']);
    assert.deepEqual([viaHost.code, viaHost.stdout], [0, 'via-host\n'], viaHost.stderr);
    const wrong = await berth(elsewhere, ['exec', '-H', `unix://${agent.socketPath}`, '--token', 'wrong', taskId, 'true']);
    assert.equal(wrong.code, 125);
    assert.match(wrong.stderr, /BERTH_UNAUTHORIZED|token/);
    // -i with piped stdin: the input reaches the command, and its end closes the command's stdin.
    const piped = spawn(process.execPath, [...BERTH_CLI, 'exec', '-i', taskId, 'sh', '-c', 'wc -c; exit 2'], { cwd: REPO, env: cleanEnv({ BERTH_DATA_DIR: agent.dataDir }) });
    let pipedOut = '';
    piped.stdout.setEncoding('utf8').on('data', (d: string) => (pipedOut += d));
    piped.stdin.end('twelve bytes');
    const [pipedCode] = (await once(piped, 'close')) as [number | null];
    assert.deepEqual([pipedCode, pipedOut.trim()], [2, '12']);
    const notRunning = await berth(agent.dataDir, ['exec', `${run.id}-ended`, 'true']);
    assert.equal(notRunning.code, 125);
    assert.match(notRunning.stderr, /not running/);
  });

  test('berth exec -it on a terminal goes over the WebSocket in raw mode and follows the terminal\'s size', async () => {
    const session = startOnPty(process.execPath, [...BERTH_CLI, 'exec', '-it', taskId, 'sh'], { rows: 30, columns: 90, cwd: REPO, env: cleanEnv({ BERTH_DATA_DIR: agent.dataDir }) });
    try {
      const from = await session.waitFor('/ # ', { deadlineMs: 30_000 });
      const settings = await session.settings();
      assert.deepEqual([settings.icanon, settings.echo, settings.isig], [false, false, false], 'raw mode during the session');
      session.write('stty size\r');
      await session.waitFor(/30 90/, { from, deadlineMs: 30_000 });
      session.resize(35, 95);
      await pollUntil('the remote TTY to follow the resize', async () => {
        const at = session.screen.length;
        session.write('stty size\r');
        try {
          await session.waitFor(/35 95/, { from: at, deadlineMs: 1000 });
          return true;
        } catch {
          return undefined;
        }
      }, { timeoutMs: 30_000, intervalMs: 100 });
      session.write('exit 4\r');
      const exit = await session.exited(30_000);
      assert.equal(exit.code, 4);
      assert.deepEqual([exit.settings.icanon, exit.settings.echo, exit.settings.isig], [true, true, true], 'the terminal is restored');
    } finally {
      session.kill();
    }
  });
});
