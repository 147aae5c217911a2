import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { ValidationError } from '../../src/common/errors.js';
import { LABELS } from '../../src/common/labels.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver, type TaskDriverOptions } from '../../src/tasks/driver.js';
import type { TaskHandle } from '../../src/tasks/handle.js';
import { runToEnd } from '../../src/tasks/run.js';
import { cleanEnv, runBerth } from '../support/agent.js';
import { pollUntil, readAll, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

const engine = testEngine();
const run = testRun(engine);
const spec = (overrides: Partial<TaskSpec>): TaskSpec => ({ image: TEST_IMAGE, labels: { ...run.labels }, stopGracePeriod: '1s', ...overrides });
const driverWith = (policy: TaskDriverOptions['policy'] = {}): TaskDriver => new TaskDriver({ engine, ownerId: `test-${run.id}`, policy });
const driver = driverWith();

/**
 * A static x86-64 program (136 bytes) that exits with its effective uid: a setuid-root copy run by
 * nobody exits 0 when the setuid bit raised it to root, 254 (65534 & 0xff) when it did not.
 * busybox cannot prove this: it drops setuid privileges itself.
 */
const EUID_ELF_BASE64 =
  'f0VMRgIBAQAAAAAAAAAAAAIAPgABAAAAeABAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAEAAOAABAAAAAAAAAAEAAAAFAAAAAAAAAAAAAAAAAEAAAAAAAAAAQAAAAAAAiAAAAAAAAACIAAAAAAAAAAAQAAAAAAAAuGsAAAAPBYnHuDwAAAAPBQ==';

/** Runs a shell script in a task to its end: its exit code and what it printed. */
async function runScript(overrides: Partial<TaskSpec>, script: string, taskDriver = driver): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out = readAll(stdout);
  const err = readAll(stderr);
  const result = await runToEnd(taskDriver, spec({ command: ['sh', '-c', script], ...overrides }), { stdout, stderr });
  stdout.end();
  stderr.end();
  const exitCode = result.end.kind === 'success' ? 0 : result.end.kind === 'failed' ? result.end.exitCode : -1;
  assert.notEqual(exitCode, -1, `the task ended ${JSON.stringify(result.end)}`);
  return { exitCode, stdout: await out, stderr: await err };
}

/** Runs a command in a running task. */
async function execIn(handle: TaskHandle, script: string): Promise<string> {
  const exec = await handle.exec({ cmd: ['sh', '-c', script] });
  const [out, code] = await Promise.all([readAll(exec.stdout), exec.exitCode()]);
  assert.equal(code, 0, out);
  return out;
}

describe('the sandbox, against the real engine (library TaskDriver)', { skip: await requireEngine() }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'berth-sandbox-'));
  });
  after(async () => {
    await run.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  test('a read-only root refuses writes while a sized /tmp takes them up to its size, then fails with ENOSPC', async () => {
    const script = [
      'if touch /rootfile 2>/dev/null; then echo root-writable; else echo root-read-only; fi',
      'dd if=/dev/zero of=/tmp/a bs=1024 count=512 2>/dev/null && echo tmp-512k-ok',
      'dd if=/dev/zero of=/tmp/b bs=1024 count=4096 2>&1 | grep -o "No space left on device" | head -n 1',
      'df -k /tmp | tail -n 1',
      'grep " /tmp " /proc/mounts',
    ].join('\n');
    const { stdout } = await runScript({ readOnlyRootfs: true, mounts: [{ type: 'tmpfs', target: '/tmp', size: '1m', mode: '700' }] }, script);
    const lines = stdout.trim().split('\n');
    assert.equal(lines[0], 'root-read-only');
    assert.equal(lines[1], 'tmp-512k-ok');
    assert.equal(lines[2], 'No space left on device');
    // The tmpfs is the task's whole 1 MiB, full now: the host's disk was never written.
    assert.match(lines[3]!, /^tmpfs\s+1024\s+1024\s+0\s+100%/);
    assert.match(lines[4]!, /^tmpfs \/tmp tmpfs .*size=1024k,mode=700/);
    // The same write to a writable root succeeds: the refusal was the read-only root's.
    assert.equal((await runScript({}, 'touch /rootfile && echo root-writable')).stdout, 'root-writable\n');
  });

  test('no-new-privileges stops a setuid-root binary from raising a user to root', async () => {
    const script = `echo "${EUID_ELF_BASE64}" | base64 -d > /t/euid && chmod 4755 /t/euid && su -s /bin/sh nobody -c '/t/euid; echo euid=$?; grep NoNewPrivs /proc/self/status'`;
    // An anonymous volume (removed with the container): the engine mounts a tmpfs noexec and nosuid.
    const mounts: TaskSpec['mounts'] = [{ type: 'volume', target: '/t' }];
    const without = await runScript({ mounts }, script);
    assert.match(without.stdout, /^euid=0\nNoNewPrivs:\s+0\n$/, 'without no-new-privileges the setuid bit works (the proof is sound)');
    const withNnp = await runScript({ mounts, noNewPrivileges: true }, script);
    assert.match(withNnp.stdout, /^euid=254\nNoNewPrivs:\s+1\n$/);
  });

  test('a custom seccomp profile blocks mkdir, which the engine\'s default allows; by object and by allow-listed name', async () => {
    const profile = {
      defaultAction: 'SCMP_ACT_ALLOW',
      syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO' }],
    };
    const script = 'mkdir /tmp/made 2>&1 && echo made';
    assert.equal((await runScript({ seccomp: 'default' }, script)).stdout, 'made\n');
    const blocked = await runScript({ seccomp: profile }, script);
    assert.notEqual(blocked.exitCode, 0);
    assert.match(blocked.stdout, /Operation not permitted/);

    const file = path.join(dir, 'no-mkdir.json');
    await writeFile(file, JSON.stringify(profile));
    const named = await runScript({ seccomp: 'no-mkdir' }, script, driverWith({ allowedSeccompProfiles: { 'no-mkdir': file } }));
    assert.match(named.stdout, /Operation not permitted/);
    // A name the driver does not list is refused before anything is made.
    await assert.rejects(driver.start(spec({ seccomp: 'no-mkdir', command: ['true'] })), (error: unknown) => error instanceof ValidationError && error.issues[0]!.field === 'seccomp');
  });

  test('ulimits, hostname, dns, dnsSearch, extraHosts, sysctls, shmSize and oomScoreAdj are visible inside', async () => {
    const script = [
      'ulimit -n',
      'ulimit -Hn',
      'hostname',
      'cat /etc/resolv.conf',
      'grep db.local /etc/hosts',
      'cat /proc/sys/net/ipv4/ping_group_range',
      'df -k /dev/shm | tail -n 1',
      'cat /proc/self/oom_score_adj',
      'cat /sys/fs/cgroup/cpuset.cpus 2>/dev/null || cat /sys/fs/cgroup/cpuset/cpuset.cpus',
    ].join('\n');
    const { stdout } = await runScript(
      {
        ulimits: [{ name: 'nofile', soft: 256, hard: 512 }],
        hostname: 'sandbox-box',
        dns: ['10.0.0.53'],
        dnsSearch: ['example.com'],
        extraHosts: ['db.local:10.0.0.5'],
        sysctls: { 'net.ipv4.ping_group_range': '0 0' },
        shmSize: '8m',
        oomScoreAdj: 300,
        cpuset: '0',
      },
      script,
    );
    const lines = stdout.split('\n');
    assert.equal(lines[0], '256');
    assert.equal(lines[1], '512');
    assert.equal(lines[2], 'sandbox-box');
    assert.match(stdout, /^nameserver 10\.0\.0\.53$/m);
    assert.match(stdout, /^search example\.com$/m);
    assert.match(stdout, /^10\.0\.0\.5\s+db\.local$/m);
    assert.match(stdout, /^0\s+0$/m);
    assert.match(stdout, /^shm\s+8192\s/m);
    assert.match(stdout, /^300$/m);
    assert.match(stdout, /^0$/m);
  });

  test('init reaps a zombie that the task\'s own PID 1 leaves', async () => {
    // The subshell's child outlives it and is reparented to PID 1; `sleep` as PID 1 never waits for it.
    const command = ['sh', '-c', '(sleep 0.1 &); exec sleep 60'];
    const zombies = "grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l; grep -l '^Name:.*sleep' /proc/[0-9]*/status 2>/dev/null | wc -l";
    const bare = await driver.start(spec({ command }));
    try {
      // Without init the zombie appears and stays.
      await pollUntil('a zombie under a PID 1 that does not reap', async () => (await execIn(bare, zombies)).split('\n')[0] === '1' || undefined, { timeoutMs: 30_000, intervalMs: 200 });
    } finally {
      await bare.destroy();
    }
    const withInit = await driver.start(spec({ command, init: true }));
    try {
      assert.equal((await engine.inspectContainer(withInit.containerId)).id, withInit.containerId);
      // With init the short sleep exits and is reaped: one sleep left (the long one), no zombie.
      await pollUntil('the zombie reaped by init', async () => (await execIn(withInit, zombies)) === '0\n1\n' || undefined, { timeoutMs: 30_000, intervalMs: 200 });
      assert.match(await execIn(withInit, 'cat /proc/1/comm'), /^docker-init\n$/);
    } finally {
      await withInit.destroy();
    }
  });

  test('storageSize is refused before anything is made, naming the engine\'s storage driver, where the driver has no quota', async (t) => {
    const info = await engine.storageDriver();
    if (info.supportsSizeQuota) {
      // Then the quota is the engine's to enforce: the write past it fails inside the task.
      const { stdout } = await runScript({ storageSize: '16m' }, 'dd if=/dev/zero of=/big bs=1M count=64 2>&1 | grep -o "No space left on device" | head -n 1');
      assert.equal(stdout, 'No space left on device\n');
      return;
    }
    t.diagnostic(`storage driver ${info.driver} on ${info.backingFilesystem ?? '?'}: no size quota`);
    const taskId = `${run.id}-storage`;
    await assert.rejects(driver.start(spec({ storageSize: '16m', command: ['true'] }), { taskId }), (error: unknown) => {
      assert.ok(error instanceof ValidationError, String(error));
      assert.equal(error.issues[0]!.field, 'storageSize');
      assert.ok(error.issues[0]!.rule.includes(`storage driver ${info.driver}`), error.issues[0]!.rule);
      return true;
    });
    assert.deepEqual(await engine.listContainers({ all: true, labels: [`${LABELS.taskId}=${taskId}`] }), []);
  });

  test('berth run takes docker\'s sandbox flags, reading a seccomp profile file itself', async () => {
    const file = path.join(dir, 'cli-no-mkdir.json');
    await writeFile(file, JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO' }] }));
    const script = [
      'if touch /rootfile 2>/dev/null; then echo root=writable; else echo root=read-only; fi',
      'grep " /tmp " /proc/mounts | grep -o "size=[0-9]*k"',
      'if mkdir /tmp/d 2>/dev/null; then echo mkdir=ok; else echo mkdir=refused; fi',
      'grep NoNewPrivs /proc/self/status | cut -f2',
      'ulimit -n',
      'hostname',
      'grep db.local /etc/hosts | cut -f1',
      'cat /proc/1/comm',
    ].join('\n');
    const result = await runBerth(
      [
        'run', '-l', `berth-test.run=${run.id}`,
        '--read-only', '--tmpfs', '/tmp:size=1m', '--security-opt', 'no-new-privileges', '--security-opt', `seccomp=${file}`,
        '--ulimit', 'nofile=128:256', '--hostname', 'cli-box', '--add-host', 'db.local:10.0.0.7', '--init',
        TEST_IMAGE, 'sh', '-c', script,
      ],
      cleanEnv(),
    );
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'root=read-only\nsize=1024k\nmkdir=refused\n1\n128\ncli-box\n10.0.0.7\ndocker-init\n');
    const bad = await runBerth(['run', '--ulimit', 'nofile=many', TEST_IMAGE, 'true'], cleanEnv());
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--ulimit: "nofile=many" is not name=soft\[:hard\]/);
  });
});
