import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { agentProcesses, BERTH_CLI, berth, cleanEnv, httpGet, runBerth, tempDirs, type RunningAgent } from '../support/agent.js';
import { requireEngine, TEST_ENGINE_SOCKET, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

/**
 * Issue 12's units, errors and getting-started items through the real CLI (`node … src/cli/entry.ts`,
 * as bin/berth.js runs it unbuilt) and a real agent, against the real engine: the one rule for
 * durations and sizes and its error lines, `--version`, `submit --help`, the token error, the
 * agent's pretty log on a terminal, the API's pattern errors, and spec errors named by flag.
 */

const engine = testEngine();
const run = testRun(engine);
const agents = agentProcesses();
const dirs = tempDirs();
const runArgs = (...rest: string[]): string[] => ['run', '-l', `berth-test.run=${run.id}`, ...rest];
const cli = (args: string[]) => runBerth(args, cleanEnv());

/** GET on the engine's API, for a field berth's engine port does not expose. */
function engineGet(urlPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: TEST_ENGINE_SOCKET, path: urlPath }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.once('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${urlPath}: ${res.statusCode} ${body}`))));
    });
    req.once('error', reject);
    req.end();
  });
}

after(async () => {
  await agents.killAll();
  await run.cleanup();
  await dirs.removeAll();
});

describe('the units rule and its errors, as a user types them', { skip: await requireEngine() }, () => {
  const refusals: Array<[string[], string]> = [
    [['-m', '32x'], 'berth: -m/--memory: "32x" is not a size; use e.g. 512m or 1g (units: b, k, m, g, t, p) [BERTH_VALIDATION]'],
    [['-m', '1k'], 'berth: -m/--memory: must be at least 6m, or 0 for no limit [BERTH_VALIDATION]'],
    [['--memory', '512'], 'berth: -m/--memory: "512" has no unit; use e.g. 512m or 512k (units: b, k, m, g, t, p; 1k = 1024 bytes) [BERTH_VALIDATION]'],
    [['--pids-limit', 'abc'], 'berth: --pids-limit: "abc" is not a whole number; use one from 1 to 4194304, or 0 for no limit [BERTH_VALIDATION]'],
    [['--timeout', '30'], 'berth: --timeout: "30" has no unit; use e.g. 30s or 30ms (units: ms, s, m, h, d) [BERTH_VALIDATION]'],
    [['--health-cmd', 'true', '--health-interval', '5'], 'berth: --health-interval: "5" has no unit; use e.g. 5s or 5ms (units: ms, s, m, h, d) [BERTH_VALIDATION]'],
    [['--log-max-size', '0'], 'berth: --log-max-size: must be at least 1k; 0 is not allowed here [BERTH_VALIDATION]'],
    [['--stop-timeout', '10x'], 'berth: --stop-timeout: "10x" is not a duration; use e.g. 30s, 1m30s or 500ms (units: ms, s, m, h, d) [BERTH_VALIDATION]'],
    [['--network', 'not/a-name'], 'berth: --network: must be a network name: a letter or digit, then letters, digits, _ . or -, at most 64 characters [BERTH_VALIDATION]'],
    [['--network', 'no-such-network-for-berth'], 'berth: --network: network no-such-network-for-berth does not exist in the engine; create it first (docker network create no-such-network-for-berth) [BERTH_VALIDATION]'],
  ];
  for (const [flags, line] of refusals) {
    test(`berth run ${flags.join(' ')} exits 2 with one line naming the flag`, async () => {
      const result = await cli(runArgs(...flags, TEST_IMAGE, 'true'));
      assert.equal(result.code, 2, result.stderr);
      assert.equal(result.stderr, `${line}\n`);
      assert.doesNotMatch(result.stderr, /NaN|spec\.|resources\.|6291456/);
    });
  }

  test('-m 0, --pids-limit 0 and --cpus 0 are no limit and --timeout 0 no run time limit, as in docker', async () => {
    const result = await cli(runArgs('-m', '0', '--pids-limit', '0', '--cpus', '0', '--timeout', '0', TEST_IMAGE, 'sh', '-c', 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us; sleep 1; echo ran'));
    assert.equal(result.code, 0, result.stderr);
    const [memory, pids, quota, ran] = result.stdout.trim().split('\n');
    // cgroup v1's "no limit" is the largest page-aligned value; any real limit would be far below 1p.
    assert.ok(BigInt(memory!) > 1024n ** 5n, memory);
    assert.equal(pids, 'max');
    assert.equal(quota, '-1');
    assert.equal(ran, 'ran', 'a --timeout 0 task runs to its end instead of timing out at once');
  });

  test('--stop-timeout takes a bare number of seconds, as docker does', async () => {
    const name = `units-${run.id}`;
    const result = await cli(runArgs('--keep', '--name', name, '--stop-timeout', '7', TEST_IMAGE, 'true'));
    assert.equal(result.code, 0, result.stderr);
    // The engine's own record of the grace period, in seconds (7 ms would have been sent as 1).
    const inspect = await engineGet(`/containers/berth-${name}.cli.3/json`);
    assert.equal((JSON.parse(inspect) as { Config: { StopTimeout?: number } }).Config.StopTimeout, 7);
  });

  test('--version prints package.json\'s version', async () => {
    const manifest = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    const result = await cli(['--version']);
    assert.equal(result.code, 0);
    assert.equal(result.stdout, `${manifest.version}\n`);
  });

  test('submit --help words what differs for the agent; it never says berth exits 124', async () => {
    const submit = await cli(['submit', '--help']);
    assert.equal(submit.code, 0);
    assert.doesNotMatch(submit.stdout, /exits 124/);
    assert.match(submit.stdout.replace(/\s+/g, ' '), /the agent stops the task, which ends as timed-out/);
    const runHelp = await cli(['run', '--help']);
    assert.match(runHelp.stdout.replace(/\s+/g, ' '), /berth exits 124/);
  });
});

describe('the agent as a user meets it first', { skip: await requireEngine() }, () => {
  let agent: RunningAgent;
  let dataDir: string;

  before(async () => {
    dataDir = await dirs.make('berth-units-');
    agent = await agents.start(dataDir);
  });

  test('its log is JSON lines when stdout is not a terminal', () => {
    assert.ok(agent.logLines().some((line) => line.msg === 'agent listening'));
  });

  test('BERTH_HOST alone finds an agent with another data directory (its token is beside its socket)', async () => {
    const result = await runBerth(['ps'], cleanEnv({ BERTH_HOST: `unix://${agent.socketPath}` }));
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^TASK ID/);
  });

  test('a token that cannot be read: the error names the file, BERTH_DATA_DIR and --token', async () => {
    const elsewhere = await dirs.make('berth-units-empty-');
    const result = await runBerth(['ps'], cleanEnv({ BERTH_HOST: `unix://${agent.socketPath}`, BERTH_DATA_DIR: elsewhere }));
    assert.equal(result.code, 2);
    assert.ok(result.stderr.includes(`${path.join(elsewhere, 'token')} (ENOENT)`), result.stderr);
    assert.match(result.stderr, /set BERTH_DATA_DIR=DIR, or pass --token TOKEN/);
  });

  test('submit names the flags in the agent\'s refusals and refuses a "no limit" the agent has not got', async () => {
    const privileged = await berth(dataDir, ['submit', '-l', `berth-test.run=${run.id}`, '--privileged', TEST_IMAGE, 'true']);
    assert.equal(privileged.code, 2, privileged.stderr);
    assert.match(privileged.stderr, /^berth: --privileged: privileged tasks are not allowed/);
    const unlimited = await berth(dataDir, ['submit', '-l', `berth-test.run=${run.id}`, '-m', '0', TEST_IMAGE, 'true']);
    assert.equal(unlimited.code, 2);
    assert.match(unlimited.stderr, /^berth: -m\/--memory: 0 \(no limit\) is not available for a task the agent runs: .*defaults\.resources\.memory/);
  });

  test('a since that is not a time is refused in words, not with a regular expression', async () => {
    const token = (await readFile(path.join(dataDir, 'token'), 'utf8')).trim();
    const response = await httpGet(agent.socketPath, '/v1/tasks/some-task/logs?since=10s', token);
    assert.equal(response.status, 400);
    const body = JSON.parse(response.body) as { error: { issues: Array<{ field: string; rule: string }> } };
    assert.deepEqual(body.error.issues, [{ field: 'since', rule: 'must be an RFC 3339 time, such as 2024-05-01T10:00:00Z or 2024-05-01T12:00:00.123+02:00' }]);
  });

  test('on a terminal it logs lines for people (pino-pretty), in colour', async () => {
    const ptyDir = await dirs.make('berth-units-pty-');
    // python3's pty module gives the agent a real terminal as stdout; it reads until the agent has
    // started (bounded), then stops it with SIGTERM and prints everything the terminal showed.
    const script = [
      'import os, pty, select, signal, sys, time',
      'pid, fd = pty.fork()',
      'if pid == 0: os.execvp(sys.argv[1], sys.argv[1:])',
      'out = b""',
      'deadline = time.time() + 60',
      'while time.time() < deadline and b"agent started" not in out:',
      '    ready, _, _ = select.select([fd], [], [], 0.5)',
      '    if ready:',
      '        try: out += os.read(fd, 65536)',
      '        except OSError: break',
      'os.kill(pid, signal.SIGTERM)',
      'while True:',
      '    try: chunk = os.read(fd, 65536)',
      '    except OSError: break',
      '    if not chunk: break',
      '    out += chunk',
      'os.waitpid(pid, 0)',
      'sys.stdout.write(out.decode("utf-8", "replace"))',
    ].join('\n');
    const env = cleanEnv();
    delete env.NO_COLOR;
    const child = spawn('python3', ['-c', script, process.execPath, ...BERTH_CLI, 'agent', '--data-dir', ptyDir], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    const [code] = (await once(child, 'close')) as [number | null];
    assert.equal(code, 0);
    const escape = String.fromCharCode(0x1b);
    const plain = output.split(escape).map((part, i) => (i === 0 ? part : part.replace(/^\[[0-9;]*m/, ''))).join('');
    assert.ok(output.includes(`${escape}[`), 'colours on a terminal');
    assert.match(plain, /^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}\] INFO: agent listening \{"agentId":"[^"]+","socketPath":"[^"]+","dataDir":"[^"]+"\}\r?$/m);
    assert.match(plain, /INFO: agent started/);
    assert.doesNotMatch(plain, /^\{"level"/m, 'no JSON lines on a terminal');
  });
});
