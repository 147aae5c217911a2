import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { LABELS } from '../../src/common/labels.js';
import { Engine } from '../../src/engine/engine.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { tarArchive } from '../../src/tasks/tar.js';
import { readAll, requireEngine, TEST_IMAGE, testRun } from '../support/engine.js';

const engine = new Engine();
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
