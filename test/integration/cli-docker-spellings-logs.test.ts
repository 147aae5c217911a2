import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { agentProcesses, berth, spawnBerth, tempDirs } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

/**
 * Docker's spellings of issue 12 in the agent's commands, through the real binary against a real
 * agent and the real engine: logs --tail/-n, -t, --since and --until (RFC 3339, Unix seconds, a
 * duration before now), with and without -f.
 */

const engine = testEngine();
const run = testRun(engine);
const RUN_LABEL = run.labelFilter;
const agents = agentProcesses();
const dirs = tempDirs();

after(async () => {
  await agents.killAll();
  await run.cleanup();
  await dirs.removeAll();
});

const skip = await requireEngine();

describe('berth logs in docker\'s spellings', { skip }, () => {
  let dataDir: string;

  before(async () => {
    dataDir = await dirs.make('berth-spell-');
    await agents.start(dataDir);
  });

  async function submit(args: string[]): Promise<string> {
    const result = await berth(dataDir, ['submit', '-l', RUN_LABEL, ...args]);
    assert.equal(result.code, 0, result.stderr);
    return result.stdout.trim();
  }

  async function waitForState(id: string, state: string): Promise<void> {
    await pollUntil(`task ${id} to be ${state}`, async () => ((await berth(dataDir, ['inspect', id, '--format', '{{.state}}'])).stdout === `${state}\n` ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
  }

  test('logs --tail, -n, -t, --since and --until in docker\'s forms; a bad time names the flag and the forms', async () => {
    const id = await submit([TEST_IMAGE, 'sh', '-c', 'echo one; echo two; echo three; echo four']);
    await waitForState(id, 'exited');
    const records = (await berth(dataDir, ['logs', id, '--json'])).stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { stream: string; timestamp: string; text: string });
    assert.deepEqual(records.map((r) => r.text), ['one\n', 'two\n', 'three\n', 'four\n']);
    const logs = (...args: string[]) => berth(dataDir, ['logs', id, ...args]);

    const tail = await logs('--tail', '2');
    assert.deepEqual([tail.code, tail.stdout, tail.stderr], [0, 'three\nfour\n', '']);

    const stamped = await logs('-t', '--tail', '1');
    assert.equal(stamped.stdout, `${records[3]!.timestamp} four\n`);
    assert.match(records[3]!.timestamp, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$/);

    assert.equal((await logs('--since', records[0]!.timestamp, '--until', records[2]!.timestamp, '--tail', '1')).stdout, 'three\n');
    const unixBefore = String(Math.floor(Date.parse(records[0]!.timestamp) / 1000) - 60);
    assert.equal((await logs('--since', unixBefore)).stdout, 'one\ntwo\nthree\nfour\n');
    assert.equal((await logs('--until', '1h')).stdout, '');

    const bad = await logs('--since', '10x');
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr, 'berth: --since: "10x" is not a time: use an RFC 3339 timestamp (2024-05-01T10:00:00Z), Unix seconds (1714557600) or a duration before now (10s, 10m, 1h30m) [BERTH_VALIDATION]\n');
  });

  test('logs -f --tail 1 prints the last stored line, then the new ones until the output ends', async () => {
    const id = await submit([TEST_IMAGE, 'sh', '-c', 'echo a; echo b; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo c']);
    await pollUntil('the first lines to be stored', async () => ((await berth(dataDir, ['logs', id])).stdout === 'a\nb\n' ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
    const follow = spawnBerth(dataDir, ['logs', '-f', '--tail', '1', id]);
    try {
      await pollUntil('the tail to be printed', () => (follow.stdout() === 'b\n' ? true : undefined), { timeoutMs: 30_000 });
      const exec = await berth(dataDir, ['exec', id, 'sh', '-c', ': > /tmp/go']);
      assert.equal(exec.code, 0, exec.stderr);
      assert.equal(await follow.closed, 0, follow.stderr());
      assert.equal(follow.stdout(), 'b\nc\n');
    } finally {
      // A failed step leaves no follower behind (it would hold the test file open).
      follow.interrupt();
    }
  });

  test('logs -f --until a time to come ends when it comes, though the task runs on', async () => {
    const id = await submit([TEST_IMAGE, 'sh', '-c', 'echo a; sleep 300']);
    try {
      await pollUntil('the line to be stored', async () => ((await berth(dataDir, ['logs', id])).stdout === 'a\n' ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
      // Far enough ahead that the CLI, slow to start on a loaded host, asks before it comes: the follow is then open when it comes.
      const follow = await berth(dataDir, ['logs', '-f', '--until', new Date(Date.now() + 8000).toISOString(), id]);
      assert.deepEqual([follow.code, follow.stdout, follow.stderr], [0, 'a\n', '']);
    } finally {
      await berth(dataDir, ['stop', id]);
    }
  });
});
