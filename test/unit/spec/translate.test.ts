import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { resolveTaskSpec, type ResolvedTaskSpec, type TaskSpec } from '../../../src/spec/schema.js';
import { CPU_PERIOD_US, toCreatePlan } from '../../../src/spec/translate.js';

const MiB = 1024 * 1024;
const identity = { taskId: 'task-42', ownerId: 'runner-a', startAttempt: 'attempt-1' };

/** Resolves a spec (privileged allowed) and translates it for `identity`. */
function plan(spec: TaskSpec) {
  return toCreatePlan(resolveTaskSpec(spec, { allowPrivileged: true }), identity);
}

describe('toCreatePlan naming and labels', () => {
  test('names the container for its task and owner: berth-<taskId>.<ownerId>.<owner id length>', () => {
    assert.equal(plan({ image: 'a' }).name, 'berth-task-42.runner-a.8');
    assert.equal(toCreatePlan(resolveTaskSpec({ image: 'a' }), { taskId: 'other', ownerId: 'o', startAttempt: 'a' }).name, 'berth-other.o.1');
  });

  test('labels the container with the user labels plus io.berth.managed, task-id, owner-id and start-attempt', () => {
    const { body } = plan({ image: 'a', labels: { team: 'infra', 'com.example.tier': 'gold' } });
    assert.deepEqual(body.Labels, {
      team: 'infra',
      'com.example.tier': 'gold',
      'io.berth.managed': 'true',
      'io.berth.task-id': 'task-42',
      'io.berth.owner-id': 'runner-a',
      'io.berth.start-attempt': 'attempt-1',
    });
  });

  test('labels a container without user labels with berth’s labels only', () => {
    assert.deepEqual(plan({ image: 'a' }).body.Labels, {
      'io.berth.managed': 'true',
      'io.berth.task-id': 'task-42',
      'io.berth.owner-id': 'runner-a',
      'io.berth.start-attempt': 'attempt-1',
    });
  });

  test('labels the container with its owner process when the owner is short-lived, and not otherwise', () => {
    const ownerProcess = { hostId: 'm0123', bootId: 'boot-1', pidNamespace: '4026531836', pid: 4242, startTime: '987654' };
    const { body } = toCreatePlan(resolveTaskSpec({ image: 'a', labels: { team: 'infra' } }), { ...identity, ownerProcess });
    assert.deepEqual(body.Labels, {
      team: 'infra',
      'io.berth.managed': 'true',
      'io.berth.task-id': 'task-42',
      'io.berth.owner-id': 'runner-a',
      'io.berth.start-attempt': 'attempt-1',
      'io.berth.owner-host': 'm0123',
      'io.berth.owner-boot-id': 'boot-1',
      'io.berth.owner-pid-ns': '4026531836',
      'io.berth.owner-pid': '4242',
      'io.berth.owner-start-time': '987654',
    });
    assert.equal(Object.keys(plan({ image: 'a' }).body.Labels ?? {}).filter((key) => key.startsWith('io.berth.owner-') && key !== 'io.berth.owner-id').length, 0);
  });

  test('sets the image', () => {
    assert.equal(plan({ image: 'registry.local/app:1.2' }).body.Image, 'registry.local/app:1.2');
  });
});

describe('toCreatePlan resources', () => {
  test('sets Memory and an equal MemorySwap so swap is disabled', () => {
    const host = plan({ image: 'a', resources: { memory: '64m' } }).body.HostConfig;
    assert.equal(host.Memory, 64 * MiB);
    assert.equal(host.MemorySwap, 64 * MiB);
  });

  test('sets no memory limit or swap when memory is not given', () => {
    const host = plan({ image: 'a' }).body.HostConfig;
    assert.equal(Object.hasOwn(host, 'Memory'), false);
    assert.equal(Object.hasOwn(host, 'MemorySwap'), false);
    assert.equal(Object.hasOwn(host, 'MemoryReservation'), false);
  });

  test('sets MemoryReservation', () => {
    const host = plan({ image: 'a', resources: { memory: '1g', memoryReservation: '256m' } }).body.HostConfig;
    assert.equal(host.MemoryReservation, 256 * MiB);
    assert.equal(host.Memory, 1024 * MiB);
  });

  test('maps cpuMilli 500 to CpuQuota 50000 over CpuPeriod 100000', () => {
    const host = plan({ image: 'a', resources: { cpuMilli: 500 } }).body.HostConfig;
    assert.equal(host.CpuQuota, 50_000);
    assert.equal(host.CpuPeriod, 100_000);
    assert.equal(CPU_PERIOD_US, 100_000);
  });

  test('maps cpuMilli 2500 to CpuQuota 250000', () => {
    assert.equal(plan({ image: 'a', resources: { cpuMilli: 2500 } }).body.HostConfig.CpuQuota, 250_000);
  });

  test('sets no CPU quota or period when cpuMilli is not given', () => {
    const host = plan({ image: 'a' }).body.HostConfig;
    assert.equal(Object.hasOwn(host, 'CpuQuota'), false);
    assert.equal(Object.hasOwn(host, 'CpuPeriod'), false);
  });

  test('sets CpuShares and PidsLimit', () => {
    const host = plan({ image: 'a', resources: { cpuShares: 512, pidsLimit: 64 } }).body.HostConfig;
    assert.equal(host.CpuShares, 512);
    assert.equal(host.PidsLimit, 64);
  });

  test('sets no CpuShares or PidsLimit when not given', () => {
    const host = plan({ image: 'a' }).body.HostConfig;
    assert.equal(Object.hasOwn(host, 'CpuShares'), false);
    assert.equal(Object.hasOwn(host, 'PidsLimit'), false);
  });
});

describe('toCreatePlan mounts', () => {
  test('maps propagation private, host-to-task and bidirectional to rprivate, rslave and rshared', () => {
    const mounts = plan({
      image: 'a',
      mounts: [
        { type: 'bind', source: '/p', target: '/tp', propagation: 'private' },
        { type: 'bind', source: '/h', target: '/th', propagation: 'host-to-task', readOnly: true },
        { type: 'bind', source: '/b', target: '/tb', propagation: 'bidirectional' },
      ],
    }).body.HostConfig.Mounts;
    assert.deepEqual(mounts, [
      { Type: 'bind', Source: '/p', Target: '/tp', ReadOnly: false, BindOptions: { Propagation: 'rprivate' } },
      { Type: 'bind', Source: '/h', Target: '/th', ReadOnly: true, BindOptions: { Propagation: 'rslave' } },
      { Type: 'bind', Source: '/b', Target: '/tb', ReadOnly: false, BindOptions: { Propagation: 'rshared' } },
    ]);
  });

  test('gives a bind mount without propagation rprivate', () => {
    const mounts = plan({ image: 'a', mounts: [{ type: 'bind', source: '/s', target: '/t' }] }).body.HostConfig.Mounts;
    assert.equal(mounts?.[0]?.BindOptions?.Propagation, 'rprivate');
  });

  test('translates a named volume and an anonymous volume', () => {
    const mounts = plan({
      image: 'a',
      mounts: [
        { type: 'volume', source: 'cache', target: '/cache', readOnly: true },
        { type: 'volume', target: '/anon' },
      ],
    }).body.HostConfig.Mounts;
    assert.equal(mounts?.length, 2);
    assert.deepEqual(mounts[0], { Type: 'volume', Source: 'cache', Target: '/cache', ReadOnly: true });
    assert.equal(mounts[1]?.Type, 'volume');
    assert.equal(mounts[1]?.Target, '/anon');
    assert.equal(mounts[1]?.Source, undefined);
    assert.equal(mounts[1]?.ReadOnly, false);
    assert.equal(mounts[1]?.BindOptions, undefined);
  });

  test('translates a tmpfs size to TmpfsOptions.SizeBytes', () => {
    const mounts = plan({ image: 'a', mounts: [{ type: 'tmpfs', target: '/scratch', size: '64m' }] }).body.HostConfig.Mounts;
    assert.deepEqual(mounts, [{ Type: 'tmpfs', Target: '/scratch', TmpfsOptions: { SizeBytes: 64 * MiB } }]);
  });

  test('translates a tmpfs without size to empty TmpfsOptions', () => {
    const mounts = plan({ image: 'a', mounts: [{ type: 'tmpfs', target: '/scratch' }] }).body.HostConfig.Mounts;
    assert.deepEqual(mounts, [{ Type: 'tmpfs', Target: '/scratch', TmpfsOptions: {} }]);
  });

  test('keeps the order of mounts', () => {
    const mounts = plan({
      image: 'a',
      mounts: [
        { type: 'tmpfs', target: '/1' },
        { type: 'volume', target: '/2' },
        { type: 'bind', source: '/s', target: '/3' },
      ],
    }).body.HostConfig.Mounts;
    assert.deepEqual(mounts?.map((m) => m.Target), ['/1', '/2', '/3']);
  });

  test('sends an empty mount list when there are no mounts', () => {
    assert.deepEqual(plan({ image: 'a' }).body.HostConfig.Mounts, []);
  });
});

describe('toCreatePlan host settings', () => {
  for (const network of ['none', 'bridge', 'host'] as const) {
    test(`sets NetworkMode ${network}`, () => {
      assert.equal(plan({ image: 'a', network }).body.HostConfig.NetworkMode, network);
    });
  }

  test('defaults NetworkMode to none', () => {
    assert.equal(plan({ image: 'a' }).body.HostConfig.NetworkMode, 'none');
  });

  test('upper-cases added and dropped capabilities without the CAP_ prefix', () => {
    const host = plan({ image: 'a', capAdd: ['net_admin', 'CAP_SYS_TIME'], capDrop: ['cap_chown', 'all'] }).body.HostConfig;
    assert.deepEqual(host.CapAdd, ['NET_ADMIN', 'SYS_TIME']);
    assert.deepEqual(host.CapDrop, ['CHOWN', 'ALL']);
  });

  test('sets Privileged as resolved', () => {
    assert.equal(plan({ image: 'a', privileged: true }).body.HostConfig.Privileged, true);
    assert.equal(plan({ image: 'a' }).body.HostConfig.Privileged, false);
  });

  test('sets AutoRemove false so berth removes the container itself', () => {
    assert.equal(plan({ image: 'a' }).body.HostConfig.AutoRemove, false);
  });
});

describe('toCreatePlan log config', () => {
  test('defaults to the local driver with max-size 1m, max-file 1 and compression off', () => {
    assert.deepEqual(plan({ image: 'a' }).body.HostConfig.LogConfig, {
      Type: 'local',
      Config: { 'max-size': '1m', 'max-file': '1', compress: 'false' },
    });
  });

  test('leaves compression to the local driver when it keeps more than one file', () => {
    assert.deepEqual(plan({ image: 'a', log: { maxSize: '2m', maxFiles: 3 } }).body.HostConfig.LogConfig, {
      Type: 'local',
      Config: { 'max-size': '2m', 'max-file': '3' },
    });
  });

  test('translates json-file with its size and file count and no compress option', () => {
    assert.deepEqual(plan({ image: 'a', log: { driver: 'json-file', maxSize: '10m', maxFiles: 2 } }).body.HostConfig.LogConfig, {
      Type: 'json-file',
      Config: { 'max-size': '10m', 'max-file': '2' },
    });
  });

  test('formats a max size in kibibytes as k', () => {
    assert.equal(plan({ image: 'a', log: { maxSize: '512k' } }).body.HostConfig.LogConfig?.Config['max-size'], '512k');
  });

  test('translates the none driver with an empty config', () => {
    assert.deepEqual(plan({ image: 'a', log: { driver: 'none' } }).body.HostConfig.LogConfig, { Type: 'none', Config: {} });
  });
});

describe('toCreatePlan container settings', () => {
  test('opens, attaches and closes-once stdin when stdin is given', () => {
    const { body } = plan({ image: 'a', stdin: 'input' });
    assert.equal(body.OpenStdin, true);
    assert.equal(body.StdinOnce, true);
    assert.equal(body.AttachStdin, true);
  });

  test('leaves stdin closed and unattached when stdin is absent', () => {
    const { body } = plan({ image: 'a' });
    assert.equal(body.OpenStdin, false);
    assert.equal(body.StdinOnce, false);
    assert.equal(body.AttachStdin, false);
  });

  test('keeps stdin open, not closing once, for a spec with openStdin (docker -i): attach clients write to it', () => {
    const { body } = plan({ image: 'a', openStdin: true });
    assert.deepEqual([body.OpenStdin, body.StdinOnce, body.AttachStdin], [true, false, true]);
  });

  test('with openStdin and stdin content, stdin is open and stays open after the content (no StdinOnce)', () => {
    const { body } = plan({ image: 'a', stdin: 'first line\n', openStdin: true });
    assert.deepEqual([body.OpenStdin, body.StdinOnce, body.AttachStdin], [true, false, true]);
  });

  test('openStdin defaults to false and must be a boolean', () => {
    assert.equal(resolveTaskSpec({ image: 'a' }).openStdin, false);
    assert.equal(resolveTaskSpec({ image: 'a', openStdin: true }).openStdin, true);
    assert.throws(() => resolveTaskSpec({ image: 'a', openStdin: 'yes' } as unknown as TaskSpec), (error: Error & { issues?: Array<{ field: string }> }) => error.issues?.[0]?.field === 'openStdin');
  });

  test('always attaches stdout and stderr', () => {
    const { body } = plan({ image: 'a' });
    assert.equal(body.AttachStdout, true);
    assert.equal(body.AttachStderr, true);
  });

  test('sets Tty as resolved', () => {
    assert.equal(plan({ image: 'a', tty: true }).body.Tty, true);
    assert.equal(plan({ image: 'a' }).body.Tty, false);
  });

  test('sets StopSignal', () => {
    assert.equal(plan({ image: 'a' }).body.StopSignal, 'SIGTERM');
    assert.equal(plan({ image: 'a', stopSignal: 'SIGQUIT' }).body.StopSignal, 'SIGQUIT');
  });

  const stopTimeouts: Array<[string | number, number]> = [
    ['10s', 10],
    ['2s', 2],
    ['1500ms', 2],
    ['1ms', 1],
    [0, 0],
    ['1m', 60],
  ];
  for (const [grace, seconds] of stopTimeouts) {
    test(`sets StopTimeout ${seconds} s for a grace period of ${JSON.stringify(grace)}, rounding up`, () => {
      assert.equal(plan({ image: 'a', stopGracePeriod: grace }).body.StopTimeout, seconds);
    });
  }

  test('defaults StopTimeout to 10 s', () => {
    assert.equal(plan({ image: 'a' }).body.StopTimeout, 10);
  });

  test('sets Cmd, Entrypoint, WorkingDir and User when given', () => {
    const { body } = plan({
      image: 'a',
      command: ['-c', 'echo hi'],
      entrypoint: ['/bin/sh'],
      workdir: '/work',
      user: '1000:1000',
    });
    assert.deepEqual(body.Cmd, ['-c', 'echo hi']);
    assert.deepEqual(body.Entrypoint, ['/bin/sh']);
    assert.equal(body.WorkingDir, '/work');
    assert.equal(body.User, '1000:1000');
  });

  test('sends an empty Entrypoint when an empty entrypoint is given, to reset the image’s', () => {
    assert.deepEqual(plan({ image: 'a', entrypoint: [] }).body.Entrypoint, []);
  });

  test('omits Cmd, Entrypoint, WorkingDir and User when not given, so the image’s apply', () => {
    const { body } = plan({ image: 'a' });
    for (const key of ['Cmd', 'Entrypoint', 'WorkingDir', 'User']) {
      assert.equal(Object.hasOwn(body, key), false, `${key} should be absent`);
    }
  });

  test('sets Env as KEY=VALUE in the given order, keeping = in values', () => {
    const { body } = plan({ image: 'a', env: { B: '2', A: 'x=y', EMPTY: '' } });
    assert.deepEqual(body.Env, ['B=2', 'A=x=y', 'EMPTY=']);
  });

  test('sends an empty Env when no environment is given', () => {
    assert.deepEqual(plan({ image: 'a' }).body.Env, []);
  });
});

describe('toCreatePlan is pure', () => {
  const spec: TaskSpec = {
    image: 'a',
    command: ['run'],
    entrypoint: ['/entry'],
    env: { A: '1' },
    labels: { team: 'x' },
    resources: { memory: '64m', cpuMilli: 250, pidsLimit: 10 },
    mounts: [
      { type: 'bind', source: '/s', target: '/t', propagation: 'host-to-task' },
      { type: 'tmpfs', target: '/tmp', size: '1m' },
    ],
    capAdd: ['NET_ADMIN'],
    capDrop: ['ALL'],
    timeout: '30s',
  };

  test('gives deep-equal plans for the same input', () => {
    const resolved = resolveTaskSpec(spec);
    assert.deepEqual(toCreatePlan(resolved, identity), toCreatePlan(resolved, identity));
  });

  test('does not mutate its input', () => {
    const resolved = structuredClone(resolveTaskSpec(spec)) as ResolvedTaskSpec;
    const before = structuredClone(resolved);
    const identityBefore = { ...identity };
    toCreatePlan(resolved, identity);
    assert.deepEqual(resolved, before);
    assert.deepEqual(identity, identityBefore);
  });

  test('translates a frozen resolved spec without throwing', () => {
    const resolved = resolveTaskSpec(spec);
    assert.ok(Object.isFrozen(resolved));
    assert.equal(toCreatePlan(resolved, identity).body.Image, 'a');
  });

  test('returns a plan that shares no arrays with the spec or with another plan', () => {
    const resolved = resolveTaskSpec(spec);
    const first = toCreatePlan(resolved, identity);
    first.body.Cmd?.push('mutated');
    first.body.Entrypoint?.push('mutated');
    first.body.HostConfig.CapAdd?.push('SYS_ADMIN');
    first.body.HostConfig.CapDrop?.push('CHOWN');
    first.body.Labels.extra = 'mutated';
    const second = toCreatePlan(resolved, identity);
    assert.deepEqual(second.body.Cmd, ['run']);
    assert.deepEqual(second.body.Entrypoint, ['/entry']);
    assert.deepEqual(second.body.HostConfig.CapAdd, ['NET_ADMIN']);
    assert.deepEqual(second.body.HostConfig.CapDrop, ['ALL']);
    assert.equal(Object.hasOwn(second.body.Labels, 'extra'), false);
    assert.deepEqual(resolved.command, ['run']);
  });
});

describe('toCreatePlan health check', () => {
  test('sets no Healthcheck when the spec has none, so the image’s own applies', () => {
    assert.equal(Object.hasOwn(plan({ image: 'a' }).body, 'Healthcheck'), false);
  });

  test('runs a command in the engine’s CMD form (exec, no shell), durations in nanoseconds', () => {
    assert.deepEqual(plan({ image: 'a', healthcheck: { command: ['cat', '/tmp/ready'], interval: '500ms', timeout: '2s', startPeriod: '30s', retries: 4 } }).body.Healthcheck, {
      Test: ['CMD', 'cat', '/tmp/ready'],
      Interval: 500_000_000,
      Timeout: 2_000_000_000,
      StartPeriod: 30_000_000_000,
      Retries: 4,
    });
  });

  test('runs a shell line in the CMD-SHELL form', () => {
    assert.deepEqual(plan({ image: 'a', healthcheck: { shell: 'test -e /tmp/ready || exit 1' } }).body.Healthcheck, {
      Test: ['CMD-SHELL', 'test -e /tmp/ready || exit 1'],
      Interval: 1_000_000_000,
      Timeout: 5_000_000_000,
      Retries: 3,
    });
  });

  test('translates disabled to Test ["NONE"] and nothing else', () => {
    assert.deepEqual(plan({ image: 'a', healthcheck: { disabled: true } }).body.Healthcheck, { Test: ['NONE'] });
  });

  test('keeps the image’s command (Test []) and sends only the settings given, the rest inherited', () => {
    assert.deepEqual(plan({ image: 'a', healthcheck: { interval: '2s' } }).body.Healthcheck, { Test: [], Interval: 2_000_000_000 });
  });

  test('rounds fractional milliseconds to whole nanoseconds, never below the engine’s 1 ms', () => {
    const check = plan({ image: 'a', healthcheck: { command: ['true'], interval: 1.0000004, timeout: 1.5 } }).body.Healthcheck!;
    assert.equal(check.Interval, 1_000_000);
    assert.equal(check.Timeout, 1_500_000);
    assert.ok(Number.isSafeInteger(check.Interval) && Number.isSafeInteger(check.Timeout));
  });

  test('sends a day, the longest duration accepted, as an integer number of nanoseconds', () => {
    const check = plan({ image: 'a', healthcheck: { command: ['true'], startPeriod: '24h' } }).body.Healthcheck!;
    assert.equal(check.StartPeriod, 86_400_000_000_000);
    assert.equal(JSON.stringify(check.StartPeriod), '86400000000000');
  });
});
