import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { LABELS } from '../../src/common/labels.js';
import { BERTH_CLI } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

const engine = testEngine();
const run = testRun(engine);

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function berth(args: string[], options: { input?: string; onSpawn?: (pid: number) => void } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [...BERTH_CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  if (options.input !== undefined) child.stdin.end(options.input);
  else child.stdin.end();
  options.onSpawn?.(child.pid!);
  return once(child, 'close').then(([code]) => ({ code: code as number | null, stdout, stderr }));
}

const runArgs = (...rest: string[]): string[] => ['run', '-l', `berth-test.run=${run.id}`, ...rest];

async function leftovers(): Promise<number> {
  return (await engine.listContainers({ all: true, labels: [run.labelFilter] })).length;
}

describe('berth run (the CLI, as a user runs it)', { skip: await requireEngine() }, () => {
  after(() => run.cleanup());

  test('streams stdout and stderr and exits with the task exit code', async () => {
    const result = await berth(runArgs(TEST_IMAGE, 'sh', '-c', 'echo out; echo err >&2; exit 5'));
    assert.equal(result.code, 5);
    assert.equal(result.stdout, 'out\n');
    assert.equal(result.stderr, 'err\n');
    assert.equal(await leftovers(), 0);
  });

  test('-i forwards stdin to the task', async () => {
    const result = await berth(runArgs('-i', TEST_IMAGE, 'tr', 'a-z', 'A-Z'), { input: 'shout\n' });
    assert.equal(result.code, 0);
    assert.equal(result.stdout, 'SHOUT\n');
  });

  test('flags reach the container: env, workdir, user, memory', async () => {
    const result = await berth(runArgs('-e', 'GREETING=hi', '-w', '/tmp', '-u', '65534', '-m', '64m', TEST_IMAGE, 'sh', '-c', 'echo $GREETING $(pwd) $(id -u) $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)'));
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), `hi /tmp 65534 ${64 * 1024 * 1024}`);
  });

  test('out of memory exits 137 with a one-line reason', async () => {
    const result = await berth(runArgs('-m', '32m', TEST_IMAGE, 'dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1'));
    assert.equal(result.code, 137);
    assert.match(result.stderr, /^berth: task out of memory .*memory limit/m);
  });

  test('a timeout exits 124', async () => {
    const result = await berth(runArgs('--timeout', '300ms', '--stop-timeout', '1', TEST_IMAGE, 'sleep', '30'));
    assert.equal(result.code, 124);
    assert.match(result.stderr, /timed out/);
  });

  test('a validation error exits 2 and names the field', async () => {
    const result = await berth(runArgs('-m', 'lots', TEST_IMAGE, 'true'));
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^berth: -m\/--memory: "lots" is not a size; use e\.g\. 512m or 1g/);
    const bad = await berth(runArgs('--mount', 'type=bind,source=/tmp,target=/x,readonly,propagation=bidirectional', TEST_IMAGE, 'true'));
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^berth: --mount\[0\] propagation: .*read-write/);
    assert.equal(await leftovers(), 0);
  });

  test('an unknown flag is a usage error (exit 2)', async () => {
    const result = await berth(['run', '--no-such-flag', TEST_IMAGE]);
    assert.equal(result.code, 2);
  });

  test('an unreachable engine exits 125', async () => {
    const child = spawn(process.execPath, [...BERTH_CLI, ...runArgs(TEST_IMAGE, 'true')], { env: { ...process.env, DOCKER_HOST: 'unix:///nonexistent/docker.sock' } });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const [code] = await once(child, 'close');
    assert.equal(code, 125);
    assert.match(stderr, /BERTH_ENGINE_UNAVAILABLE/);
  });

  test('Ctrl-C cancels the task and removes its container', async () => {
    const taskId = `${run.id}-ctrlc`;
    let pid = 0;
    const finished = berth(runArgs('--name', taskId, '--stop-timeout', '1', TEST_IMAGE, 'sh', '-c', 'echo started; sleep 30'), { onSpawn: (p) => (pid = p) });
    await pollUntil('the task to run', async () => {
      const found = await engine.listContainers({ labels: [`${LABELS.taskId}=${taskId}`], status: ['running'] });
      return found.length > 0 ? true : undefined;
    });
    process.kill(pid, 'SIGINT');
    const result = await finished;
    assert.equal(result.code, 130);
    assert.deepEqual(await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${taskId}`] }), []);
  });

  test('--keep keeps the container', async () => {
    const taskId = `${run.id}-keep`;
    const result = await berth(runArgs('--keep', '--name', taskId, TEST_IMAGE, 'true'));
    assert.equal(result.code, 0);
    const kept = await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${taskId}`] });
    assert.equal(kept.length, 1);
    await engine.removeContainer(kept[0]!.id);
  });
});

describe('bin/berth.js', () => {
  test('runs the CLI (the build when there is one, else the source) and prints the package version', async () => {
    const bin = new URL('../../bin/berth.js', import.meta.url);
    const { version } = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    const child = spawn(process.execPath, [fileURLToPath(bin), '--version'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    const [code] = await once(child, 'close');
    assert.equal(code, 0);
    assert.equal(stdout.trim(), version);
  });
});
