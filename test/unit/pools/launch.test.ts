/**
 * The warm start's launcher: the holder program's launch mode run on this host (it is a static
 * x86-64 Linux program), and launchThrough's reading of its acknowledgement against scripted streams.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import type { ExecSession } from '../../../src/engine/engine.js';
import { HOLDER_PROGRAM } from '../../../src/pools/holder.js';
import { LAUNCH_ACK, launchRequest } from '../../../src/pools/key.js';
import { launchThrough } from '../../../src/pools/launch.js';

const ACK = LAUNCH_ACK.toString('latin1');

describe('the holder\'s launch mode', { skip: process.arch !== 'x64' || process.platform !== 'linux' ? 'the holder is an x86-64 Linux program' : false }, () => {
  let dir = '';
  let holder = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-launch-test-'));
    holder = join(dir, 'holder');
    await writeFile(holder, HOLDER_PROGRAM);
    await chmod(holder, 0o755);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const launch = (request: Buffer, env: NodeJS.ProcessEnv = { PATH: '/usr/bin:/bin', KEPT: 'container', SET: 'container' }) =>
    spawnSync(holder, ['launch'], { input: request, env, cwd: '/' });

  test('acknowledges the request on stderr, then becomes the command with the task\'s env over the container\'s, in its working directory, stdin following', () => {
    const request = launchRequest(['sh', '-c', 'echo "$KEPT $SET $(pwd)"; cat; echo oops >&2; exit 3'], ['SET=task'], dir)!;
    const ran = launch(Buffer.concat([request, Buffer.from('from stdin\n')]));
    assert.deepEqual([ran.stdout.toString(), ran.stderr.toString(), ran.status], [`container task ${dir}\nfrom stdin\n`, `${LAUNCH_ACK.toString('latin1')}oops\n`, 3]);
  });

  test('a command not found ends 127 and one that cannot be executed 126, as a shell says, after the acknowledgement', () => {
    const missing = launch(launchRequest(['no-such-command-here'], [], undefined)!);
    assert.equal(missing.status, 127);
    assert.equal(missing.stderr.toString(), `${ACK}exec: "no-such-command-here": executable file not found in $PATH\n`);
    const notExecutable = launch(launchRequest(['/etc/hostname'], [], undefined)!);
    assert.equal(notExecutable.status, 126);
    assert.equal(notExecutable.stderr.toString(), `${ACK}exec: "/etc/hostname": permission denied\n`);
  });

  test('no request, or one cut short, ends 126 without an acknowledgement: nothing of a task ran', () => {
    const none = launch(Buffer.alloc(0));
    assert.equal(none.status, 126);
    assert.doesNotMatch(none.stderr.toString(), /BRTH/);
    const request = launchRequest(['echo', 'x'], [], undefined)!;
    const cut = launch(request.subarray(0, request.length - 2));
    assert.deepEqual([cut.status, cut.stdout.toString()], [126, '']);
    assert.doesNotMatch(cut.stderr.toString(), /BRTH/);
  });
});

/** A launcher's exec as launchThrough sees it: stdin it records, stderr and stdout the test feeds. */
function scriptedLauncher(options: { failWrite?: boolean } = {}): { session: ExecSession; written: Buffer[]; stdinEnded: () => boolean; stderr: PassThrough } {
  const written: Buffer[] = [];
  let ended = false;
  const stdin = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (options.failWrite) return callback(new Error('EPIPE'));
      written.push(chunk);
      callback();
    },
    final(callback) {
      ended = true;
      callback();
    },
  });
  // A failed write destroys the stream with its error; the engine's socket has a listener for it.
  stdin.on('error', () => undefined);
  const stderr = new PassThrough();
  const session: ExecSession = {
    id: 'exec-1',
    stdout: new PassThrough(),
    stderr,
    stdin,
    close: () => undefined,
    resize: () => Promise.resolve(),
    exitCode: () => Promise.resolve(0),
    exitStatus: () => Promise.resolve({ exitCode: 0 }),
  };
  return { session, written, stdinEnded: () => ended, stderr };
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  let text = '';
  for await (const chunk of stream) text += (chunk as Buffer).toString();
  return text;
}

describe('launchThrough', () => {
  const request = Buffer.from('BRTH-request');

  test('writes the request, ends stdin when the task has none, and starts once the acknowledgement arrives, even split across chunks', async () => {
    const { session, written, stdinEnded, stderr } = scriptedLauncher();
    const outcome = launchThrough(session, request, { endStdin: true });
    stderr.write(LAUNCH_ACK.subarray(0, 2));
    stderr.write(Buffer.concat([LAUNCH_ACK.subarray(2), Buffer.from('task says ')]));
    const started = await outcome;
    assert.equal(started.kind, 'started');
    assert.deepEqual(Buffer.concat(written), request);
    assert.equal(stdinEnded(), true);
    stderr.end('hello\n');
    assert.equal(await readAll(started.kind === 'started' ? started.session.stderr : new PassThrough()), 'task says hello\n', 'the task\'s stderr without the acknowledgement');
  });

  test('leaves stdin open for a task that has stdin', async () => {
    const { session, stdinEnded, stderr } = scriptedLauncher();
    const outcome = launchThrough(session, request, { endStdin: false });
    stderr.write(LAUNCH_ACK);
    assert.equal((await outcome).kind, 'started');
    assert.equal(stdinEnded(), false);
  });

  test('a launcher that ends before acknowledging did not start the task', async () => {
    const { session, stderr } = scriptedLauncher();
    const outcome = launchThrough(session, request, { endStdin: true });
    stderr.end();
    assert.deepEqual(await outcome, { kind: 'not-started', why: 'the launcher ended before it acknowledged the request' });
  });

  test('a write that fails, a connection that errs, or an answer that is not the acknowledgement: not started', async () => {
    const failing = scriptedLauncher({ failWrite: true });
    const outcome = await launchThrough(failing.session, request, { endStdin: true });
    assert.equal(outcome.kind, 'not-started');
    assert.match(outcome.kind === 'not-started' ? outcome.why : '', /could not be written: EPIPE/);

    const erring = scriptedLauncher();
    const erred = launchThrough(erring.session, request, { endStdin: true });
    erring.stderr.destroy(new Error('socket hang up'));
    assert.match(((await erred) as { why: string }).why, /connection failed: socket hang up/);

    const other = scriptedLauncher();
    const answered = launchThrough(other.session, request, { endStdin: true });
    other.stderr.write('exec: "launch": no request on stdin\n');
    assert.match(((await answered) as { why: string }).why, /answered "exec/);
  });

  test('a launcher whose stdin is already closed is not written to', async () => {
    const { session, written } = scriptedLauncher();
    (session.stdin as Writable).destroy();
    assert.deepEqual(await launchThrough(session, request, { endStdin: true }), { kind: 'not-started', why: 'the launcher\'s connection was closed' });
    assert.deepEqual(written, []);
  });

  test('no acknowledgement within the timeout, or an abort before it: not started', async () => {
    const silent = scriptedLauncher();
    assert.deepEqual(await launchThrough(silent.session, request, { endStdin: true, timeoutMs: 20 }), { kind: 'not-started', why: 'the launcher did not acknowledge the request within 20 ms' });
    const aborted = scriptedLauncher();
    const controller = new AbortController();
    const outcome = launchThrough(aborted.session, request, { endStdin: true, signal: controller.signal });
    controller.abort();
    assert.deepEqual(await outcome, { kind: 'not-started', why: 'the start was aborted' });
  });
});
