import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import type { AgentClient } from '../../src/agent/client.js';
import { ValidationError } from '../../src/common/errors.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { agentClientOf, agentTestFile, berth, taskOutput, waitForTaskState, writeAgentConfig, type RunningAgent } from '../support/agent.js';
import { requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';

const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);

/** What a task prints about its own sandbox, one `key=value` line each. */
const PROBE = [
  'if touch /rootfile 2>/dev/null; then echo root=writable; else echo root=read-only; fi',
  'echo tmp=$(grep " /tmp " /proc/mounts | grep -o "size=[0-9]*k")',
  'echo capeff=$(grep CapEff /proc/self/status | cut -f2)',
  'echo nnp=$(grep NoNewPrivs /proc/self/status | cut -f2)',
  'echo net=$(ls /sys/class/net | tr "\\n" " ")',
  'echo pids=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max)',
  'echo nofile=$(ulimit -n)',
  'if mkdir /tmp/made 2>/dev/null; then echo mkdir=ok; else echo mkdir=refused; fi',
].join('\n');

/** Submits a spec, waits for its end, and reads the probe's lines into a map. */
async function probe(client: AgentClient, spec: Omit<TaskSpec, 'image'>): Promise<Record<string, string>> {
  const task = await client.submit({ spec: { image: TEST_IMAGE, labels: { ...run.labels }, command: ['sh', '-c', PROBE], ...spec } });
  const ended = await waitForTaskState(client, task.id, ['exited', 'lost']);
  const text = (await taskOutput(client, task.id)).join('');
  assert.equal(ended.exitCode, 0, `${JSON.stringify(ended.endState)} ${text}`);
  return Object.fromEntries(text.trim().split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1).trim()]));
}

/** The agent's refusal of a spec: the fields it names (without the `spec.` prefix) and their rules. */
async function refusal(client: AgentClient, spec: Record<string, unknown>): Promise<Map<string, string>> {
  try {
    await client.submit({ spec: { image: TEST_IMAGE, labels: { ...run.labels }, command: ['true'], ...spec } as TaskSpec });
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    return new Map(error.issues.map((issue) => [issue.field.replace(/^spec\./, ''), issue.rule]));
  }
  assert.fail('the agent accepted the spec');
}

describe('the agent\'s sandbox policy and preset (a real agent process, the real engine)', { skip: await requireEngine() }, () => {
  let agent: RunningAgent;
  let client: AgentClient;
  let dataDir: string;

  before(async () => {
    const configDir = await dirs.make('berth-sandbox-config-');
    dataDir = await dirs.make('berth-sandbox-agent-');
    const profile = path.join(configDir, 'no-mkdir.json');
    await writeFile(profile, JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO' }] }));
    const config = await writeAgentConfig(
      configDir,
      [
        'policy:',
        '  allowedCapabilities: [CHOWN, NET_BIND_SERVICE]',
        '  allowedSysctls: ["net.ipv4.ping_group_range"]',
        `  allowedBindSources: ["${configDir}"]`,
        '  allowedSeccompProfiles:',
        `    no-mkdir: ${profile}`,
        `    missing: ${path.join(configDir, 'missing.json')}`,
        'defaults:',
        '  sandbox: true',
        '  sandboxTmpSize: 1m',
        '  sandboxCapabilities: [CHOWN]',
        '  resources:',
        '    pidsLimit: 64',
      ].join('\n'),
    );
    agent = await agents.start(dataDir, ['--config', config]);
    client = await agentClientOf(agent);
  });

  test('every powerful knob outside the policy is refused at submit, each field named, in one answer', async () => {
    const issues = await refusal(client, {
      devices: [{ source: '/dev/null' }],
      runtime: 'runsc',
      sysctls: { 'net.ipv4.ip_unprivileged_port_start': '0' },
      seccomp: 'unconfined',
      apparmor: 'unconfined',
      privileged: true,
      capAdd: ['SYS_ADMIN'],
      mounts: [{ type: 'bind', source: '/etc', target: '/host-etc' }],
      oomScoreAdj: -1000,
    });
    assert.match(issues.get('devices[0].source') ?? '', /device \/dev\/null is not in the device allow-list/);
    assert.match(issues.get('runtime') ?? '', /runsc is not in the runtime allow-list \(allowedRuntimes: runc\)/);
    assert.match(issues.get('sysctls.net.ipv4.ip_unprivileged_port_start') ?? '', /not in the sysctl allow-list/);
    assert.match(issues.get('seccomp') ?? '', /allowUnconfinedSeccomp is off/);
    assert.match(issues.get('apparmor') ?? '', /allowUnconfinedApparmor is off/);
    assert.match(issues.get('privileged') ?? '', /allowPrivileged is off/);
    assert.match(issues.get('capAdd[0]') ?? '', /SYS_ADMIN is not in the allowed list/);
    assert.match(issues.get('mounts[0].source') ?? '', /not in the bind-mount allow-list/);
    assert.match(issues.get('oomScoreAdj') ?? '', /allowNegativeOomScoreAdj is off/);
    // A profile of the task's own, or a name the operator did not list, is refused too.
    assert.match((await refusal(client, { seccomp: { defaultAction: 'SCMP_ACT_ALLOW' } })).get('seccomp') ?? '', /name one from its allow-list/);
    assert.match((await refusal(client, { seccomp: 'other' })).get('seccomp') ?? '', /seccomp profile other is not in the allow-list \(allowedSeccompProfiles: no-mkdir, missing\)/);
    // A listed profile whose file cannot be read is refused at submit, not at the start.
    assert.match((await refusal(client, { seccomp: 'missing' })).get('seccomp') ?? '', /seccomp profile missing: its file .*missing\.json cannot be read \(ENOENT\)/);
    // Nothing was recorded for the refused submissions.
    assert.deepEqual(await client.list(), []);
  });

  test('the CLI names the flag of a refused knob', async () => {
    const device = await berth(dataDir, ['submit', '-l', `berth-test.run=${run.id}`, '--device', '/dev/null', TEST_IMAGE, 'true']);
    assert.equal(device.code, 2, device.stderr);
    assert.match(device.stderr, /--device: device \/dev\/null is not in the device allow-list/);
    const path = await berth(dataDir, ['submit', '-l', `berth-test.run=${run.id}`, '--security-opt', 'seccomp=/etc/p.json', TEST_IMAGE, 'true']);
    assert.equal(path.code, 2, path.stderr);
    assert.match(path.stderr, /--security-opt: seccomp=\/etc\/p\.json: a profile file is read by berth run itself/);
  });

  test('the sandbox preset gives a task that asks for nothing the safe floor', async () => {
    const seen = await probe(client, {});
    assert.deepEqual(seen, {
      root: 'read-only',
      tmp: 'size=1024k',
      // Every capability dropped but the operator's few: CAP_CHOWN.
      capeff: '0000000000000001',
      nnp: '1',
      net: 'lo',
      pids: '64',
      nofile: '1024',
      mkdir: 'ok',
    });
  });

  test('a task overrides the preset within the policy: a writable root, an allowed capability, a network, a larger /tmp, a named seccomp profile', async () => {
    const seen = await probe(client, {
      readOnlyRootfs: false,
      capAdd: ['NET_BIND_SERVICE'],
      network: 'bridge',
      mounts: [{ type: 'tmpfs', target: '/tmp', size: '2m' }],
      ulimits: [{ name: 'nofile', soft: 512 }],
      seccomp: 'no-mkdir',
      sysctls: { 'net.ipv4.ping_group_range': '0 0' },
    });
    assert.deepEqual(seen, {
      root: 'writable',
      tmp: 'size=2048k',
      // CAP_NET_BIND_SERVICE alone (the task's capAdd replaces the preset's few): every other capability stays dropped.
      capeff: '0000000000000400',
      nnp: '1',
      net: 'eth0 lo',
      pids: '64',
      nofile: '512',
      mkdir: 'refused',
    });
  });

  test('storageSize where the storage driver has no quota ends the task as failed (125), naming the driver', async () => {
    const info = await engine.storageDriver();
    const task = await client.submit({ spec: { image: TEST_IMAGE, labels: { ...run.labels }, command: ['true'], storageSize: '16m' } });
    const ended = await waitForTaskState(client, task.id, ['exited', 'lost']);
    if (info.supportsSizeQuota) {
      assert.equal(ended.exitCode, 0, JSON.stringify(ended.endState));
      return;
    }
    assert.equal(ended.exitCode, 125);
    const reason = JSON.stringify(ended.endState);
    assert.ok(reason.includes('storageSize') && reason.includes(`storage driver ${info.driver}`), reason);
  });
});
