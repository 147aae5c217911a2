import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import type { AgentClient } from '../../src/agent/client.js';
import type { StoredTaskSpec } from '../../src/state/tasks.js';
import { isBerthError } from '../../src/common/errors.js';
import { LABELS } from '../../src/common/labels.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { tarArchive, tarEnd, tarHeader, tarPadding } from '../../src/tasks/tar.js';
import { agentClientOf, agentTestFile, berth, taskOutput, waitForTaskState, writeAgentConfig, type RunningAgent } from '../support/agent.js';
import { pollUntil, readAll, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

const engine = testEngine();
const run = testRun(engine);
const driver = new TaskDriver({ engine, ownerId: `test-${run.id}` });
const spec = (overrides: Partial<TaskSpec>): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, ...overrides });

describe('files placed in a task (library, real engine)', { skip: await requireEngine() }, () => {
  after(() => run.cleanup());

  test('inline files are in place before the task starts, with their owner and mode, text and base64 alike', async () => {
    const handle = await driver.start(
      spec({
        user: '1000:1000',
        command: ['sh', '-c', 'stat -c "%a %u %g %n" /work/conf/app.conf /work/bin.dat; cat /work/conf/app.conf; od -An -tx1 /work/bin.dat'],
        files: [
          { path: '/work/conf/app.conf', content: 'key=value\n', mode: '0640', uid: 1000, gid: 1000 },
          { path: '/work/bin.dat', content: Buffer.from([0, 1, 254, 255]).toString('base64'), encoding: 'base64', mode: 0o600, uid: 1000, gid: 2000 },
        ],
      }),
    );
    const [stdout, end] = await Promise.all([readAll(handle.stdout), handle.wait()]);
    await handle.destroy();
    assert.equal(end.kind, 'success', stdout);
    assert.equal(stdout, '640 1000 1000 /work/conf/app.conf\n600 1000 2000 /work/bin.dat\nkey=value\n 00 01 fe ff\n');
  });

  test('a spec past the files bounds is refused with the field named, and nothing is created', async () => {
    const limited = new TaskDriver({ engine, ownerId: `test-${run.id}`, policy: { filesMaxCount: 1, filesMaxBytes: 4 } });
    const taskId = `${run.id}-refused`;
    await assert.rejects(
      limited.start(spec({ command: ['true'], files: [{ path: '/a', content: 'hello' }, { path: '/b', content: '' }] }), { taskId }),
      (error: unknown) => isBerthError(error, 'BERTH_VALIDATION') && /files: must hold at most 1 files/.test(error.message) && /files\.maxBytes/.test(error.message),
    );
    assert.deepEqual(await engine.listContainers({ labels: [`${LABELS.taskId}=${taskId}`] }), []);
  });

  test('handle.copyIn extracts an archive into a running task, owner and mode kept', async () => {
    const handle = await driver.start(spec({ command: ['sh', '-c', 'while [ ! -f /tmp/in/done ]; do sleep 0.05; done; stat -c "%a %u" /tmp/in/x; cat /tmp/in/x'] }));
    try {
      const archive = tarArchive([
        { header: { name: 'in/', type: 'directory', mode: 0o755 } },
        { header: { name: 'in/x', type: 'file', mode: 0o604, uid: 42, gid: 42 }, body: Buffer.from('copied\n') },
        { header: { name: 'in/done', type: 'file', mode: 0o644 }, body: Buffer.alloc(0) },
      ]);
      const output = readAll(handle.stdout);
      await handle.copyIn(Readable.from([archive]), '/tmp');
      assert.equal((await handle.wait()).kind, 'success');
      assert.equal(await output, '604 42\ncopied\n');
    } finally {
      await handle.destroy();
    }
  });
});

/** A tar stream of one file of `size` zero bytes, made as it is read (never held whole). */
function zeroFileTar(name: string, size: number): Readable {
  const chunk = Buffer.alloc(1024 * 1024);
  async function* blocks(): AsyncGenerator<Buffer> {
    yield tarHeader({ name, type: 'file', mode: 0o644, size });
    for (let left = size; left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
    yield Buffer.alloc(tarPadding(size));
    yield tarEnd();
  }
  return Readable.from(blocks(), { objectMode: false });
}

/** The peak resident memory of a process so far (VmHWM), in bytes. */
async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  assert.ok(match, status);
  return Number(match[1]) * 1024;
}

describe('files placed in a task through a real agent process', { skip: await requireEngine() }, () => {
  const { run: agentRun, dirs, agents } = agentTestFile(engine);
  const agentSpec = (overrides: Partial<StoredTaskSpec>): StoredTaskSpec => ({ image: TEST_IMAGE, labels: { ...agentRun.labels }, stopGracePeriod: '1s', ...overrides });
  let agent: RunningAgent;
  let client: AgentClient;
  let dataDir: string;
  const runningId = `${agentRun.id}-running`;

  before(async () => {
    dataDir = await dirs.make('berth-files-in-');
    const config = await writeAgentConfig(dataDir, 'files:\n  maxCount: 3\n  maxBytes: 64k\n  uploadMaxSize: 200m\n');
    agent = await agents.start(dataDir, ['--config', config]);
    client = await agentClientOf(agent);
    await client.submit({ id: runningId, spec: agentSpec({ command: ['sleep', '3600'] }) });
    await waitForTaskState(client, runningId, ['running']);
  });

  test('inline files in a submitted spec are in place, with owner and mode, when the task starts', async () => {
    const id = `${agentRun.id}-inline`;
    await client.submit({ id, spec: agentSpec({ command: ['sh', '-c', 'stat -c "%a %u %g" /etc/app/conf; cat /etc/app/conf'], files: [{ path: '/etc/app/conf', content: 'from the spec\n', mode: '0600', uid: 7, gid: 8 }] }) });
    const ended = await client.wait(id);
    assert.equal(ended.exitCode, 0, JSON.stringify(ended));
    assert.deepEqual(await taskOutput(client, id), ['600 7 8\n', 'from the spec\n']);
  });

  test('an upload named by a spec is extracted (directory made) before the task starts, then removed', async () => {
    const archive = tarArchive([
      { header: { name: 'src/', type: 'directory', mode: 0o755, uid: 1000, gid: 1000 } },
      { header: { name: 'src/main.sh', type: 'file', mode: 0o755, uid: 1000, gid: 1000 }, body: Buffer.from('#!/bin/sh\necho uploaded program ran\n') },
    ]);
    const { id: upload, sizeBytes } = await client.upload(Readable.from([archive]));
    assert.equal(sizeBytes, archive.length);
    const id = `${agentRun.id}-upload`;
    await client.submit({ id, spec: agentSpec({ command: ['sh', '-c', 'stat -c "%a %u" /work/src/main.sh && /work/src/main.sh'], files: [{ upload, path: '/work' }] }) });
    const ended = await client.wait(id);
    assert.equal(ended.exitCode, 0, JSON.stringify(ended));
    assert.deepEqual(await taskOutput(client, id), ['755 1000\n', 'uploaded program ran\n']);
    await pollUntil('the used upload to be removed', async () => ((await readdir(path.join(dataDir, 'uploads'))).length === 0 ? true : undefined));
  });

  test('past files.maxCount, files.maxBytes, or naming no held upload, a submit is refused with the field named and no task is made', async () => {
    const cases: Array<{ files: NonNullable<StoredTaskSpec['files']>; field: string; rule: RegExp }> = [
      { files: [1, 2, 3, 4].map((n) => ({ path: `/f${n}`, content: '' })), field: 'spec.files', rule: /files\.maxCount/ },
      { files: [{ path: '/big', content: 'x'.repeat(65 * 1024) }], field: 'spec.files', rule: /files\.maxBytes/ },
      { files: [{ upload: 'nosuchupload', path: '/work' }], field: 'spec.files[0].upload', rule: /no upload nosuchupload/ },
    ];
    for (const [index, { files, field, rule }] of cases.entries()) {
      const id = `${agentRun.id}-refused-${index}`;
      await assert.rejects(client.submit({ id, spec: agentSpec({ command: ['true'], files }) }), (error: unknown) => {
        assert.ok(isBerthError(error, 'BERTH_VALIDATION'), String(error));
        const issues = (error.context.issues ?? []) as Array<{ field: string; rule: string }>;
        assert.ok(issues.some((issue) => issue.field === field && rule.test(issue.rule)), JSON.stringify(issues));
        return true;
      });
      await assert.rejects(client.get(id), (error: unknown) => isBerthError(error, 'BERTH_TASK_NOT_FOUND'));
    }
    assert.deepEqual(await engine.listContainers({ labels: [`${LABELS.taskId}=${agentRun.id}-refused-0`] }), []);
  });

  test('an upload past files.uploadMaxSize is refused with 413 BERTH_UPLOAD_TOO_LARGE and nothing is kept', async () => {
    await assert.rejects(client.upload(zeroFileTar('big', 201 * 1024 * 1024)), (error: unknown) => isBerthError(error, 'BERTH_UPLOAD_TOO_LARGE'));
    await pollUntil('the partial upload to be removed', async () => ((await readdir(path.join(dataDir, 'uploads'))).length === 0 ? true : undefined));
  });

  test('100 MiB uploaded and 100 MiB copied into a running task go through the agent with its peak memory growing by under 8 MiB', async () => {
    const size = 100 * 1024 * 1024;
    const before = await peakRss(agent.pid);
    const { sizeBytes } = await client.upload(zeroFileTar('payload', size));
    assert.ok(sizeBytes > size);
    await client.copyIn(runningId, '/tmp', zeroFileTar('copied', size));
    const grown = (await peakRss(agent.pid)) - before;
    const seen = await client.execOnce(runningId, { cmd: ['sh', '-c', 'wc -c < /tmp/copied'] });
    assert.equal(seen.stdout.trim(), String(size));
    assert.ok(grown < 8 * 1024 * 1024, `the agent's peak RSS grew by ${grown} bytes`);
  });

  test('berth run --copy puts a local directory and file in place before the task starts, plain and detached', async () => {
    const local = await dirs.make('berth-copy-src-');
    await mkdir(path.join(local, 'tree', 'sub'), { recursive: true });
    await writeFile(path.join(local, 'tree', 'sub', 'a.txt'), 'tree file\n');
    await writeFile(path.join(local, 'run.sh'), '#!/bin/sh\necho script ran\n', { mode: 0o755 });
    const label = Object.entries(agentRun.labels).map(([k, v]) => `${k}=${v}`)[0]!;
    const plain = await berth(dataDir, ['run', '-l', label, '--copy', `${path.join(local, 'tree')}:/work/tree`, '--copy', `${path.join(local, 'run.sh')}:/usr/local/bin/run.sh`, TEST_IMAGE, 'sh', '-c', 'cat /work/tree/sub/a.txt && /usr/local/bin/run.sh']);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout, 'tree file\nscript ran\n');
    const id = `${agentRun.id}-copy-detached`;
    const detached = await berth(dataDir, ['run', '-d', '--name', id, '-l', label, '--copy', `${path.join(local, 'tree')}:/work/tree`, TEST_IMAGE, 'cat', '/work/tree/sub/a.txt']);
    assert.equal(detached.code, 0, detached.stderr);
    assert.equal((await client.wait(id)).exitCode, 0);
    assert.deepEqual(await taskOutput(client, id), ['tree file\n']);
  });

  test('berth cp LOCAL TASK:PATH copies into a running task: into an existing directory under its own name, or as a new path', async () => {
    const local = await dirs.make('berth-cp-src-');
    await writeFile(path.join(local, 'notes.txt'), 'copied by berth cp\n', { mode: 0o640 });
    const into = await berth(dataDir, ['cp', path.join(local, 'notes.txt'), `${runningId}:/tmp`]);
    assert.equal(into.code, 0, into.stderr);
    const asPath = await berth(dataDir, ['cp', local, `${runningId}:/srv/fresh`]);
    assert.equal(asPath.code, 0, asPath.stderr);
    const seen = await client.execOnce(runningId, { cmd: ['sh', '-c', 'cat /tmp/notes.txt /srv/fresh/notes.txt; stat -c "%a %u" /tmp/notes.txt'] });
    assert.equal(seen.stdout, 'copied by berth cp\ncopied by berth cp\n640 0\n');
    const missing = await berth(dataDir, ['cp', path.join(local, 'nope'), `${runningId}:/tmp`]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /does not exist/);
  });

  test('a copy into a task that is not running is refused with BERTH_TASK_STATE', async () => {
    const id = `${agentRun.id}-ended`;
    await client.submit({ id, spec: agentSpec({ command: ['true'] }) });
    await client.wait(id);
    await assert.rejects(client.copyIn(id, '/tmp', Readable.from([tarArchive([])])), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
  });
});
