import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import { promisify } from 'node:util';
import { before, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import type { AgentClient, TaskView } from '../../src/agent/client.js';
import type { StoredTaskSpec } from '../../src/state/tasks.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { pollUntil, requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';
import { agentClientOf, agentTestFile, berth, writeAgentConfig, waitForTaskState, type RunningAgent } from '../support/agent.js';

/**
 * Files out of tasks on the real engine: the library's copyOut and collectArtifacts on a handle;
 * through a real agent process, artifacts collected at every kind of end (success, failure, OOM,
 * timeout), the size cut recorded, the tar download's contents, copying out of a running task,
 * `berth cp` both from a running task and from an ended task's artifacts, and the artifacts' file
 * gone with `berth rm`.
 */
const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);
const exec = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;

const spec = (command: string, extra: Partial<StoredTaskSpec> = {}): StoredTaskSpec => ({ image: TEST_IMAGE, command: ['sh', '-c', command], labels: { ...run.labels }, stopGracePeriod: '1s', ...extra });

/** `tar -tv` of an archive: name and size of each entry. */
async function listing(archive: Buffer, dir: string): Promise<Map<string, number>> {
  const file = path.join(dir, `listing-${Math.random().toString(36).slice(2)}.tar`);
  await writeFile(file, archive);
  const { stdout } = await exec('tar', ['-tvf', file]);
  const entries = new Map<string, number>();
  for (const line of stdout.split('\n').filter((l) => l.trim() !== '')) {
    const fields = line.trim().split(/\s+/);
    entries.set(fields[fields.length - 1]!.replace(/\/$/, ''), Number(fields[2]));
  }
  return entries;
}

/** The content of one entry of an archive. */
async function entryText(archive: Buffer, dir: string, name: string): Promise<string> {
  const file = path.join(dir, `entry-${Math.random().toString(36).slice(2)}.tar`);
  await writeFile(file, archive);
  return (await exec('tar', ['-xOf', file, name])).stdout;
}

let agent: RunningAgent;
let client: AgentClient;
let scratch: string;

async function ended(id: string): Promise<TaskView> {
  return waitForTaskState(client, id, ['exited', 'lost']);
}

describe('files out of tasks', { skip: await requireEngine() }, () => {
  before(async () => {
    if (await requireEngine()) return;
    const dataDir = await dirs.make('berth-fout-');
    scratch = await dirs.make('berth-fout-scratch-');
    const config = await writeAgentConfig(dataDir, 'artifacts:\n  maxBytes: 256k\n');
    agent = await agents.start(dataDir, ['--config', config]);
    client = await agentClientOf(agent);
  });

  test('the library: copyOut reads a path of a running task and of an ended one, a missing path is a typed not-found, collectArtifacts keeps what fits', async () => {
    const driver = new TaskDriver({ engine });
    const handle = await driver.start({ image: TEST_IMAGE, command: ['sh', '-c', 'mkdir -p /out && echo one > /out/a.txt && sleep 0.3 && echo two > /out/b.txt'], labels: { ...run.labels } });
    try {
      const live = await buffer(await handle.copyOut('/etc/hostname'));
      assert.ok((await listing(live, scratch)).has('hostname'));
      assert.equal((await handle.wait()).kind, 'success');
      const archive = await buffer(await handle.copyOut('/out'));
      assert.equal(await entryText(archive, scratch, 'out/b.txt'), 'two\n');
      await assert.rejects(handle.copyOut('/absent'), (error: unknown) => isBerthError(error) && error.code === 'BERTH_ENGINE_NOT_FOUND' && error.context.missing === 'path');
      const kept: Buffer[] = [];
      const record = await handle.collectArtifacts({
        paths: ['/out', '/absent'],
        maxBytes: MiB,
        open: () => ({ write: async (chunk) => void kept.push(Buffer.from(chunk)), end: async () => undefined, discard: async () => undefined }),
      });
      assert.deepEqual(record.paths, ['/out']);
      assert.deepEqual(record.missing, ['/absent']);
      assert.equal(await entryText(Buffer.concat(kept), scratch, 'out/a.txt'), 'one\n');
    } finally {
      await handle.destroy();
    }
  });

  test('artifacts are collected after success, failure, OOM and timeout, listed in the view and downloadable as a tar', async () => {
    const write = 'mkdir -p /out && echo "<report/>" > /out/report.xml';
    const cases = [
      { id: `${run.id}-ok`, spec: spec(`${write} && exit 0`), kind: 'success' },
      { id: `${run.id}-fail`, spec: spec(`${write} && exit 3`), kind: 'failed' },
      { id: `${run.id}-oom`, spec: spec(`${write} && dd if=/dev/zero of=/dev/null bs=64M count=1`, { resources: { memory: '16m' } }), kind: 'oom' },
      { id: `${run.id}-slow`, spec: spec(`${write} && sleep 600`, { timeout: '1s' }), kind: 'timed-out' },
    ];
    for (const c of cases) await client.submit({ id: c.id, spec: { ...c.spec, collect: ['/out', '/nowhere'] } as StoredTaskSpec });
    for (const c of cases) {
      const task = await ended(c.id);
      assert.equal(task.endState?.kind, c.kind, `${c.id}: ${JSON.stringify(task.endState)}`);
      assert.deepEqual(task.artifacts?.paths, ['/out'], `${c.id}: ${JSON.stringify(task.artifacts)}`);
      assert.deepEqual(task.artifacts?.missing, ['/nowhere']);
      assert.equal(task.artifacts?.truncated, undefined);
      const archive = await buffer(await client.artifacts(c.id));
      assert.ok(archive.length > 0 && archive.length % 512 === 0);
      assert.equal(await entryText(archive, scratch, 'out/report.xml'), '<report/>\n', c.id);
      assert.equal(task.artifacts?.bytes, archive.length - 1024);
    }
  });

  test('past artifacts.maxBytes a path is cut at a file boundary, recorded in the view, and later paths get what is left', async () => {
    const id = `${run.id}-cut`;
    const command = 'mkdir -p /big /small && head -c 102400 /dev/zero > /big/1.bin && head -c 204800 /dev/zero > /big/2.bin && echo tiny > /small/t.txt';
    await client.submit({ id, spec: { ...spec(command), collect: ['/big', '/small'] } as StoredTaskSpec });
    const task = await ended(id);
    assert.equal(task.endState?.kind, 'success');
    assert.deepEqual(task.artifacts?.paths, ['/big', '/small']);
    assert.deepEqual(task.artifacts?.truncated, [{ path: '/big', cutAt: 'big/2.bin' }]);
    assert.ok(task.artifacts!.bytes <= 256 * KiB);
    const entries = await listing(await buffer(await client.artifacts(id)), scratch);
    assert.equal(entries.get('big/1.bin'), 102400);
    assert.equal(entries.has('big/2.bin'), false);
    assert.ok(entries.has('small/t.txt'));
    // One collected path alone.
    const small = await listing(await buffer(await client.artifacts(id, { path: '/small' })), scratch);
    assert.deepEqual([...small.keys()].sort(), ['small', 'small/t.txt']);
    await assert.rejects(client.artifacts(id, { path: '/nope' }), (error: unknown) => isBerthError(error) && error.code === 'BERTH_ENGINE_NOT_FOUND');
  });

  test('a running task: its files are read through the agent (GET /v1/tasks/:id/archive); a missing path is a 404; an ended task refuses', async () => {
    const id = `${run.id}-live`;
    await client.submit({ id, spec: spec('mkdir -p /out && echo live > /out/now.txt && sleep 600') });
    await waitForTaskState(client, id, ['running']);
    const archive = await pollUntil('the file to be written', async () => {
      const got = await buffer(await client.archive(id, '/out'));
      return (await listing(got, scratch)).has('out/now.txt') ? got : undefined;
    }, { timeoutMs: 30_000, intervalMs: 100 });
    assert.equal(await entryText(archive, scratch, 'out/now.txt'), 'live\n');
    await assert.rejects(client.archive(id, '/none'), (error: unknown) => isBerthError(error) && error.code === 'BERTH_ENGINE_NOT_FOUND');
    await client.stop(id, { graceMs: 0 });
    await ended(id);
    await assert.rejects(client.archive(id, '/out'), (error: unknown) => isBerthError(error) && error.code === 'BERTH_TASK_STATE');
  });

  test('berth rm removes a task with its artifacts: the file under the data directory is gone', async () => {
    const id = `${run.id}-rm`;
    await client.submit({ id, spec: { ...spec('mkdir -p /out && echo x > /out/x'), collect: ['/out'] } as StoredTaskSpec });
    await ended(id);
    const dir = path.join(agent.dataDir, 'artifacts', id);
    assert.equal(existsSync(dir), true);
    const removed = await berth(agent.dataDir, ['rm', id]);
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal(existsSync(dir), false);
  });

  test('berth cp TASK:/out LOCAL copies from a running task, and from an ended task\'s artifacts; - writes the tar to stdout; LOCAL TASK:PATH into an ended task is refused', async () => {
    const id = `${run.id}-cp`;
    const label = Object.entries(run.labels).map(([k, v]) => `${k}=${v}`)[0]!;
    const submitted = await berth(agent.dataDir, ['submit', '-l', label, '--name', id, '--collect', '/out', TEST_IMAGE, 'sh', '-c', 'mkdir -p /out/sub && echo a > /out/sub/a.txt && touch /tmp/ready; trap "exit 0" TERM; while :; do sleep 0.1; done']);
    assert.equal(submitted.code, 0, submitted.stderr);
    await waitForTaskState(client, id, ['running']);
    await pollUntil('the file to be written', async () => {
      const probe = await client.archive(id, '/tmp/ready').then((s) => buffer(s), () => undefined);
      return probe;
    }, { timeoutMs: 30_000, intervalMs: 100 });
    const live = path.join(scratch, 'live-out');
    const copied = await berth(agent.dataDir, ['cp', `${id}:/out`, live]);
    assert.equal(copied.code, 0, copied.stderr);
    assert.equal(await readFile(path.join(live, 'sub', 'a.txt'), 'utf8'), 'a\n');
    // Into an existing directory: as docker cp, the path goes in under its base name.
    const into = await berth(agent.dataDir, ['cp', `${id}:/out/sub/a.txt`, scratch]);
    assert.equal(into.code, 0, into.stderr);
    assert.equal(await readFile(path.join(scratch, 'a.txt'), 'utf8'), 'a\n');
    const stopped = await berth(agent.dataDir, ['stop', id]);
    assert.equal(stopped.code, 0, stopped.stderr);
    const task = await ended(id);
    assert.deepEqual(task.artifacts?.paths, ['/out']);
    const kept = path.join(scratch, 'kept-out');
    const fromArtifacts = await berth(agent.dataDir, ['cp', `${id}:/out`, kept]);
    assert.equal(fromArtifacts.code, 0, fromArtifacts.stderr);
    assert.equal(await readFile(path.join(kept, 'sub', 'a.txt'), 'utf8'), 'a\n');
    const notCollected = await berth(agent.dataDir, ['cp', `${id}:/etc`, path.join(scratch, 'etc')]);
    assert.notEqual(notCollected.code, 0);
    assert.match(notCollected.stderr, /no artifact \/etc/);
    const intoTask = await berth(agent.dataDir, ['cp', live, `${id}:/in`]);
    assert.notEqual(intoTask.code, 0);
    // The other direction (cp-in.ts) reaches the agent, which refuses an ended task.
    assert.match(intoTask.stderr, /cannot copy into task .*: it is exited, not running \[BERTH_TASK_STATE\]/);
  });

  test('berth run --collect PATH:LOCAL extracts the path after the task ends, a failed one included, and the container is removed', async () => {
    const label = Object.entries(run.labels).map(([k, v]) => `${k}=${v}`)[0]!;
    const local = path.join(scratch, 'run-reports');
    const result = await berth(agent.dataDir, ['run', '-l', label, '--collect', `/reports:${local}`, '--collect', '/missing', TEST_IMAGE, 'sh', '-c', 'mkdir -p /reports && echo "<failures/>" > /reports/junit.xml; exit 4']);
    assert.equal(result.code, 4, result.stderr);
    assert.equal(await readFile(path.join(local, 'junit.xml'), 'utf8'), '<failures/>\n');
    assert.match(result.stderr, /no such path in the container: \/missing/);
    const left = await engine.listContainers({ labels: Object.entries(run.labels).map(([k, v]) => `${k}=${v}`) });
    assert.equal(left.filter((c) => c.state !== 'removing').length, 0);
  });
});
