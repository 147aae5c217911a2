import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { ValidationError, type FieldIssue } from '../../../src/common/errors.js';
import { resolveAcceptedTaskSpec, resolveTaskSpec, type SpecPolicy } from '../../../src/spec/schema.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** Resolves `input` expecting a ValidationError; returns it so the caller can inspect its issues. */
function rejectionOf(input: unknown, policy?: SpecPolicy): ValidationError {
  try {
    resolveTaskSpec(input, policy);
  } catch (error) {
    assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${String(error)}`);
    assert.equal(error.code, 'BERTH_VALIDATION');
    return error;
  }
  assert.fail(`expected ${JSON.stringify(input)} to be rejected`);
}

/**
 * Asserts that `input` is rejected with exactly one issue, on `field`, whose rule matches `rule`,
 * and that the error's message names both the field and the rule.
 */
function assertRejectsField(input: unknown, field: string, rule: RegExp, policy?: SpecPolicy): FieldIssue {
  const error = rejectionOf(input, policy);
  assert.deepEqual(
    error.issues.map((i) => i.field),
    [field],
    `expected one issue on ${field}, got ${JSON.stringify(error.issues)}`,
  );
  const issue = error.issues[0]!;
  assert.match(issue.rule, rule);
  assert.ok(error.message.includes(field), `message ${JSON.stringify(error.message)} should name ${field}`);
  assert.ok(error.message.includes(issue.rule), `message ${JSON.stringify(error.message)} should name the rule`);
  return issue;
}

describe('resolveTaskSpec defaults', () => {
  const resolved = resolveTaskSpec({ image: 'busybox:latest' });

  test('keeps the image reference as given', () => {
    assert.equal(resolved.image, 'busybox:latest');
  });

  test('defaults the network to none', () => {
    assert.equal(resolved.network, 'none');
  });

  test('defaults the engine log to the local driver bounded at 1 MiB in one file', () => {
    assert.deepEqual(resolved.log, { driver: 'local', maxSizeBytes: MiB, maxFiles: 1 });
  });

  test('defaults the stop signal to SIGTERM and the grace period to 10000 ms', () => {
    assert.equal(resolved.stopSignal, 'SIGTERM');
    assert.equal(resolved.stopGraceMs, 10_000);
  });

  test('defaults the pull policy to if-not-present', () => {
    assert.equal(resolved.pull, 'if-not-present');
  });

  test('defaults maps and lists to empty, tty and privileged to false, and leaves optional fields unset', () => {
    assert.deepEqual(resolved.env, {});
    assert.deepEqual(resolved.labels, {});
    assert.deepEqual(resolved.mounts, []);
    assert.deepEqual(resolved.capAdd, []);
    assert.deepEqual(resolved.capDrop, []);
    assert.equal(resolved.tty, false);
    assert.equal(resolved.privileged, false);
    assert.equal(resolved.command, undefined);
    assert.equal(resolved.entrypoint, undefined);
    assert.equal(resolved.workdir, undefined);
    assert.equal(resolved.user, undefined);
    assert.equal(resolved.stdin, undefined);
    assert.equal(resolved.timeoutMs, undefined);
    assert.deepEqual(resolved.resources, {
      memoryBytes: undefined,
      memoryReservationBytes: undefined,
      cpuMilli: undefined,
      cpuShares: undefined,
      pidsLimit: undefined,
    });
  });

  test('keeps explicitly given values over the defaults', () => {
    const custom = resolveTaskSpec({
      image: 'alpine',
      network: 'bridge',
      log: { driver: 'json-file', maxSize: '5m', maxFiles: 3 },
      stopSignal: 'SIGINT',
      stopGracePeriod: '2s',
      pull: 'always',
      tty: true,
    });
    assert.equal(custom.network, 'bridge');
    assert.deepEqual(custom.log, { driver: 'json-file', maxSizeBytes: 5 * MiB, maxFiles: 3 });
    assert.equal(custom.stopSignal, 'SIGINT');
    assert.equal(custom.stopGraceMs, 2000);
    assert.equal(custom.pull, 'always');
    assert.equal(custom.tty, true);
  });
});

describe('resolveTaskSpec sizes', () => {
  const cases: Array<[string | number, number]> = [
    ['128m', 128 * MiB],
    ['1g', GiB],
    ['6m', 6 * MiB],
    [64 * MiB, 64 * MiB],
    [String(10 * MiB), 10 * MiB],
  ];
  for (const [memory, bytes] of cases) {
    test(`resolves memory ${JSON.stringify(memory)} to ${bytes} bytes`, () => {
      assert.equal(resolveTaskSpec({ image: 'a', resources: { memory } }).resources.memoryBytes, bytes);
    });
  }

  test('resolves the memory reservation, tmpfs size and log max size to bytes', () => {
    const resolved = resolveTaskSpec({
      image: 'a',
      resources: { memory: '1g', memoryReservation: '8m' },
      mounts: [{ type: 'tmpfs', target: '/scratch', size: '64m' }],
      log: { maxSize: '2m' },
    });
    assert.equal(resolved.resources.memoryReservationBytes, 8 * MiB);
    assert.deepEqual(resolved.mounts, [{ type: 'tmpfs', target: '/scratch', sizeBytes: 64 * MiB }]);
    assert.equal(resolved.log.maxSizeBytes, 2 * MiB);
  });

  test('accepts a memory reservation equal to the memory limit', () => {
    const resolved = resolveTaskSpec({ image: 'a', resources: { memory: '64m', memoryReservation: 64 * MiB } });
    assert.equal(resolved.resources.memoryReservationBytes, 64 * MiB);
  });
});

describe('resolveTaskSpec durations', () => {
  const cases: Array<[string | number, number]> = [
    ['30s', 30_000],
    ['1m30s', 90_000],
    ['250ms', 250],
    ['1h', 3_600_000],
    [2500, 2500],
  ];
  for (const [timeout, ms] of cases) {
    test(`resolves timeout ${JSON.stringify(timeout)} to ${ms} ms`, () => {
      assert.equal(resolveTaskSpec({ image: 'a', timeout }).timeoutMs, ms);
    });
  }

  test('resolves the stop grace period to milliseconds', () => {
    assert.equal(resolveTaskSpec({ image: 'a', stopGracePeriod: '1m30s' }).stopGraceMs, 90_000);
    assert.equal(resolveTaskSpec({ image: 'a', stopGracePeriod: 1500 }).stopGraceMs, 1500);
  });
});

describe('resolveTaskSpec normalisation', () => {
  test('upper-cases capabilities and strips the CAP_ prefix', () => {
    const resolved = resolveTaskSpec({ image: 'a', capAdd: ['net_admin', 'CAP_SYS_TIME'], capDrop: ['cap_chown', 'ALL'] });
    assert.deepEqual(resolved.capAdd, ['NET_ADMIN', 'SYS_TIME']);
    assert.deepEqual(resolved.capDrop, ['CHOWN', 'ALL']);
  });

  test('defaults a bind mount to read-write with private propagation', () => {
    const resolved = resolveTaskSpec({ image: 'a', mounts: [{ type: 'bind', source: '/srv', target: '/data' }] });
    assert.deepEqual(resolved.mounts, [{ type: 'bind', source: '/srv', target: '/data', readOnly: false, propagation: 'private' }]);
  });

  test('accepts bidirectional propagation on a read-write bind mount', () => {
    const resolved = resolveTaskSpec({
      image: 'a',
      mounts: [{ type: 'bind', source: '/srv', target: '/data', propagation: 'bidirectional' }],
    });
    assert.equal(resolved.mounts[0]?.type === 'bind' && resolved.mounts[0].propagation, 'bidirectional');
  });

  test('accepts a named and an anonymous volume', () => {
    const resolved = resolveTaskSpec({
      image: 'a',
      mounts: [
        { type: 'volume', source: 'cache', target: '/cache', readOnly: true },
        { type: 'volume', target: '/anon' },
      ],
    });
    assert.deepEqual(resolved.mounts[0], { type: 'volume', source: 'cache', target: '/cache', readOnly: true });
    assert.equal(resolved.mounts[1]?.type, 'volume');
    assert.equal(resolved.mounts[1]?.target, '/anon');
    assert.equal(resolved.mounts[1]?.type === 'volume' ? resolved.mounts[1].source : 'not a volume', undefined);
  });

  test('passes stdin given as a string, bytes or a stream through unchanged', () => {
    const bytes = new Uint8Array([1, 2, 3]);
    const stream = new PassThrough();
    assert.equal(resolveTaskSpec({ image: 'a', stdin: 'input' }).stdin, 'input');
    assert.equal(resolveTaskSpec({ image: 'a', stdin: bytes }).stdin, bytes);
    assert.equal(resolveTaskSpec({ image: 'a', stdin: stream }).stdin, stream);
  });

  test('accepts user, uid, user:group and uid:gid', () => {
    for (const user of ['nobody', '65534', 'app:staff', '1000:1000']) {
      assert.equal(resolveTaskSpec({ image: 'a', user }).user, user);
    }
  });

  test('accepts a numeric stop signal', () => {
    assert.equal(resolveTaskSpec({ image: 'a', stopSignal: '15' }).stopSignal, '15');
  });
});

describe('resolveTaskSpec freezing', () => {
  test('deeply freezes the resolved spec', () => {
    const resolved = resolveTaskSpec({
      image: 'a',
      command: ['echo', 'hi'],
      entrypoint: ['/bin/sh', '-c'],
      env: { A: '1' },
      labels: { team: 'x' },
      resources: { memory: '64m' },
      mounts: [{ type: 'bind', source: '/srv', target: '/data' }],
      capAdd: ['NET_ADMIN'],
      capDrop: ['CHOWN'],
    });
    for (const [name, value] of Object.entries({
      spec: resolved,
      command: resolved.command,
      entrypoint: resolved.entrypoint,
      env: resolved.env,
      labels: resolved.labels,
      resources: resolved.resources,
      mounts: resolved.mounts,
      'mounts[0]': resolved.mounts[0],
      capAdd: resolved.capAdd,
      capDrop: resolved.capDrop,
      log: resolved.log,
    })) {
      assert.ok(Object.isFrozen(value), `${name} should be frozen`);
    }
  });

  test('throws on an attempt to change the resolved spec', () => {
    const resolved = resolveTaskSpec({ image: 'a', env: { A: '1' }, command: ['x'] });
    assert.throws(() => {
      (resolved as { image: string }).image = 'b';
    }, TypeError);
    assert.throws(() => {
      (resolved.env as Record<string, string>).B = '2';
    }, TypeError);
    assert.throws(() => {
      (resolved.command as string[]).push('y');
    }, TypeError);
    assert.throws(() => {
      (resolved.resources as { memoryBytes?: number }).memoryBytes = 1;
    }, TypeError);
    assert.equal(resolved.image, 'a');
    assert.deepEqual(resolved.env, { A: '1' });
    assert.deepEqual(resolved.command, ['x']);
  });

  test('leaves the caller’s input unfrozen and unchanged', () => {
    const input = { image: 'a', command: ['echo'], env: { A: '1' }, mounts: [{ type: 'bind' as const, source: '/srv', target: '/data' }] };
    const before = structuredClone(input);
    resolveTaskSpec(input);
    assert.equal(Object.isFrozen(input), false);
    assert.equal(Object.isFrozen(input.command), false);
    assert.equal(Object.isFrozen(input.env), false);
    assert.equal(Object.isFrozen(input.mounts[0]), false);
    assert.deepEqual(input, before);
  });

  test('does not freeze a stdin stream or byte array', () => {
    const bytes = new Uint8Array([1]);
    const stream = new PassThrough();
    resolveTaskSpec({ image: 'a', stdin: bytes });
    resolveTaskSpec({ image: 'a', stdin: stream });
    assert.equal(Object.isFrozen(stream), false);
    bytes[0] = 9;
    assert.equal(bytes[0], 9);
  });
});

describe('resolveTaskSpec rejects each invalid field with a ValidationError naming field and rule', () => {
  test('rejects a missing image', () => {
    assertRejectsField({}, 'image', /must be an image reference/);
  });

  test('rejects an empty image', () => {
    assertRejectsField({ image: '' }, 'image', /not a valid image reference: it is empty/);
  });

  test('rejects a whitespace-only image', () => {
    assertRejectsField({ image: '   ' }, 'image', /not a valid image reference: it contains whitespace/);
  });

  test('rejects an image containing white space', () => {
    assertRejectsField({ image: 'busybox latest' }, 'image', /not a valid image reference: it contains whitespace/);
  });

  test('rejects a command that is not an array', () => {
    assertRejectsField({ image: 'a', command: 'echo hi' }, 'command', /expected array/);
  });

  test('rejects a command containing a non-string', () => {
    assertRejectsField({ image: 'a', command: ['echo', 1] }, 'command[1]', /expected string/);
  });

  test('rejects an entrypoint that is not an array', () => {
    assertRejectsField({ image: 'a', entrypoint: '/bin/sh' }, 'entrypoint', /expected array/);
  });

  test('rejects an environment variable name starting with a digit', () => {
    assertRejectsField({ image: 'a', env: { '1ABC': 'x' } }, 'env.1ABC', /environment variable name/);
  });

  test('rejects an environment variable name containing a dash, reporting each bad key', () => {
    const error = rejectionOf({ image: 'a', env: { 'A-B': 'x', OK: 'y', 'C D': 'z' } });
    assert.deepEqual(error.issues.map((i) => i.field).sort(), ['env.A-B', 'env.C D']);
    for (const issue of error.issues) assert.match(issue.rule, /environment variable name/);
  });

  test('rejects a non-string environment value', () => {
    assertRejectsField({ image: 'a', env: { A: 1 } }, 'env.A', /expected string/);
  });

  test('rejects a relative workdir', () => {
    assertRejectsField({ image: 'a', workdir: 'tmp' }, 'workdir', /absolute path/);
  });

  test('rejects a user with white space', () => {
    assertRejectsField({ image: 'a', user: 'no body' }, 'user', /user, uid, user:group or uid:gid/);
  });

  test('rejects a user with more than one colon', () => {
    assertRejectsField({ image: 'a', user: 'a:b:c' }, 'user', /user, uid, user:group or uid:gid/);
  });

  test('rejects a label key with berth’s own io.berth. prefix', () => {
    assertRejectsField({ image: 'a', labels: { 'io.berth.task-id': 'forged' } }, 'labels.io.berth.task-id', /io\.berth\./);
  });

  test('rejects an empty label key', () => {
    const error = rejectionOf({ image: 'a', labels: { '': 'v' } });
    assert.equal(error.issues.length, 1);
    assert.match(error.issues[0]!.field, /^labels/);
    assert.match(error.issues[0]!.rule, /non-empty label key/);
  });

  test('rejects memory below 6 MiB', () => {
    assertRejectsField({ image: 'a', resources: { memory: '5m' } }, 'resources.memory', new RegExp(`at least 6m \\(${6 * MiB} bytes\\)`));
  });

  test('rejects memory one byte below 6 MiB', () => {
    assertRejectsField({ image: 'a', resources: { memory: 6 * MiB - 1 } }, 'resources.memory', /at least/);
  });

  test('rejects unparseable memory', () => {
    assertRejectsField({ image: 'a', resources: { memory: 'lots' } }, 'resources.memory', /must be a size/);
  });

  test('rejects a negative or fractional number of bytes of memory', () => {
    assertRejectsField({ image: 'a', resources: { memory: -1 } }, 'resources.memory', /must be a size/);
    assertRejectsField({ image: 'a', resources: { memory: 7_000_000.5 } }, 'resources.memory', /must be a size/);
  });

  test('rejects a memory reservation above the memory limit', () => {
    assertRejectsField(
      { image: 'a', resources: { memory: '64m', memoryReservation: '128m' } },
      'resources.memoryReservation',
      /must not exceed resources\.memory/,
    );
  });

  test('rejects cpuMilli 0', () => {
    assertRejectsField({ image: 'a', resources: { cpuMilli: 0 } }, 'resources.cpuMilli', /^must be at least 10$/);
  });

  test('rejects a fractional cpuMilli', () => {
    assertRejectsField({ image: 'a', resources: { cpuMilli: 1.5 } }, 'resources.cpuMilli', /whole number of milli-CPUs/);
  });

  test('rejects cpuShares below 2', () => {
    assertRejectsField({ image: 'a', resources: { cpuShares: 1 } }, 'resources.cpuShares', /at least 2/);
  });

  test('rejects pidsLimit 0', () => {
    assertRejectsField({ image: 'a', resources: { pidsLimit: 0 } }, 'resources.pidsLimit', /at least 1/);
  });

  test('rejects an unknown resource field', () => {
    assertRejectsField({ image: 'a', resources: { gpus: 1 } }, 'resources', /unknown field.*gpus/);
  });

  test('rejects a relative bind mount source', () => {
    assertRejectsField(
      { image: 'a', mounts: [{ type: 'bind', source: 'data', target: '/data' }] },
      'mounts[0].source',
      /absolute path/,
    );
  });

  test('rejects a relative mount target', () => {
    assertRejectsField({ image: 'a', mounts: [{ type: 'volume', target: 'data' }] }, 'mounts[0].target', /absolute path/);
  });

  test('names the index of the faulty mount', () => {
    assertRejectsField(
      { image: 'a', mounts: [{ type: 'tmpfs', target: '/ok' }, { type: 'tmpfs', target: 'bad' }] },
      'mounts[1].target',
      /absolute path/,
    );
  });

  test('rejects an unknown mount type', () => {
    assertRejectsField({ image: 'a', mounts: [{ type: 'npipe', target: '/x' }] }, 'mounts[0].type', /bind.*volume.*tmpfs/);
  });

  test('rejects an invalid volume name', () => {
    assertRejectsField({ image: 'a', mounts: [{ type: 'volume', source: '/abs', target: '/x' }] }, 'mounts[0].source', /volume name/);
  });

  test('rejects an unknown propagation', () => {
    assertRejectsField(
      { image: 'a', mounts: [{ type: 'bind', source: '/s', target: '/t', propagation: 'rshared' }] },
      'mounts[0].propagation',
      /private.*host-to-task.*bidirectional/,
    );
  });

  test('rejects bidirectional propagation on a read-only bind mount', () => {
    assertRejectsField(
      { image: 'a', mounts: [{ type: 'bind', source: '/s', target: '/t', readOnly: true, propagation: 'bidirectional' }] },
      'mounts[0].propagation',
      /requires a read-write mount/,
    );
  });

  test('rejects an unparseable tmpfs size', () => {
    assertRejectsField({ image: 'a', mounts: [{ type: 'tmpfs', target: '/t', size: 'huge' }] }, 'mounts[0].size', /must be a size/);
  });

  test('rejects a zero tmpfs size', () => {
    assertRejectsField({ image: 'a', mounts: [{ type: 'tmpfs', target: '/t', size: 0 }] }, 'mounts[0].size', /^must be at least 1 byte$/);
  });

  test('rejects a field that does not belong to the mount type', () => {
    assertRejectsField({ image: 'a', mounts: [{ type: 'tmpfs', source: '/s', target: '/t' }] }, 'mounts[0]', /unknown field.*source/);
  });

  test('rejects an unknown network', () => {
    assertRejectsField({ image: 'a', network: 'overlay' }, 'network', /none.*bridge.*host/);
  });

  test('rejects a capability name with a dash', () => {
    assertRejectsField({ image: 'a', capAdd: ['net-admin'] }, 'capAdd[0]', /capability name/);
  });

  test('rejects a capability name with digits in capDrop', () => {
    assertRejectsField({ image: 'a', capDrop: ['CHOWN', 'SYS9'] }, 'capDrop[1]', /capability name/);
  });

  test('rejects privileged without policy.allowPrivileged', () => {
    assertRejectsField({ image: 'a', privileged: true }, 'privileged', /allowPrivileged/);
  });

  test('rejects privileged when the policy explicitly disallows it', () => {
    assertRejectsField({ image: 'a', privileged: true }, 'privileged', /not allowed/, { allowPrivileged: false });
  });

  test('rejects the host network when the policy turns allowHostNetwork off, and accepts it otherwise', () => {
    assertRejectsField({ image: 'a', network: 'host' }, 'network', /allowHostNetwork is off/, { allowPrivileged: false, allowHostNetwork: false });
    assert.equal(resolveTaskSpec({ image: 'a', network: 'host' }, { allowPrivileged: false }).network, 'host');
    assert.equal(resolveTaskSpec({ image: 'a', network: 'bridge' }, { allowPrivileged: false, allowHostNetwork: false }).network, 'bridge');
  });

  test('rejects a bad timeout', () => {
    assertRejectsField({ image: 'a', timeout: 'soon' }, 'timeout', /must be a duration/);
  });

  test('rejects a negative timeout', () => {
    assertRejectsField({ image: 'a', timeout: -5 }, 'timeout', /must be a duration/);
  });

  test('rejects a bad stop grace period', () => {
    assertRejectsField({ image: 'a', stopGracePeriod: '10 seconds' }, 'stopGracePeriod', /must be a duration/);
  });

  test('rejects a lower-case stop signal', () => {
    assertRejectsField({ image: 'a', stopSignal: 'term' }, 'stopSignal', /signal such as SIGTERM/);
  });

  test('rejects a stop signal with white space', () => {
    assertRejectsField({ image: 'a', stopSignal: 'SIG TERM' }, 'stopSignal', /signal such as SIGTERM/);
  });

  test('rejects an unknown top-level field, naming it', () => {
    const error = rejectionOf({ image: 'a', memory: '64m' });
    assert.equal(error.issues.length, 1);
    assert.match(error.issues[0]!.rule, /unknown field\(s\): memory/);
    assert.match(error.message, /memory/);
  });

  test('names every unknown top-level field', () => {
    const error = rejectionOf({ image: 'a', foo: 1, bar: 2 });
    assert.match(error.message, /foo/);
    assert.match(error.message, /bar/);
  });

  test('rejects an unknown log driver', () => {
    assertRejectsField({ image: 'a', log: { driver: 'syslog' } }, 'log.driver', /local.*json-file.*none/);
  });

  test('rejects a log max size below 1 KiB', () => {
    assertRejectsField({ image: 'a', log: { maxSize: 100 } }, 'log.maxSize', /at least 1k \(1024 bytes\)/);
  });

  test('rejects an unknown pull policy', () => {
    assertRejectsField({ image: 'a', pull: 'sometimes' }, 'pull', /if-not-present.*always.*never/);
  });

  test('rejects stdin that is neither a string, bytes nor a stream', () => {
    const error = rejectionOf({ image: 'a', stdin: 42 });
    assert.deepEqual(error.issues.map((i) => i.field), ['stdin']);
  });

  test('rejects input that is not an object', () => {
    const error = rejectionOf('busybox');
    assert.equal(error.issues.length, 1);
    assert.equal(error.issues[0]!.field, '(spec)');
  });
});

describe('resolveTaskSpec policy', () => {
  test('accepts privileged when policy.allowPrivileged is on', () => {
    assert.equal(resolveTaskSpec({ image: 'a', privileged: true }, { allowPrivileged: true }).privileged, true);
  });

  test('rejects a bind source outside policy.allowedBindSources, naming mounts[i].source', () => {
    const issue = assertRejectsField(
      { image: 'a', mounts: [{ type: 'bind', source: '/etc', target: '/host-etc' }] },
      'mounts[0].source',
      /allow-list/,
      { allowPrivileged: false, allowedBindSources: ['/srv'] },
    );
    assert.match(issue.rule, /\/etc/);
  });

  test('accepts a bind source equal to or below an allowed prefix', () => {
    const policy = { allowPrivileged: false, allowedBindSources: ['/srv/data/', '/tmp'] };
    const resolved = resolveTaskSpec(
      {
        image: 'a',
        mounts: [
          { type: 'bind', source: '/srv/data', target: '/a' },
          { type: 'bind', source: '/srv/data/sub/dir', target: '/b' },
          { type: 'bind', source: '/tmp', target: '/c' },
        ],
      },
      policy,
    );
    assert.equal(resolved.mounts.length, 3);
  });

  test('rejects a bind source that only shares a string prefix with an allowed path', () => {
    assertRejectsField(
      { image: 'a', mounts: [{ type: 'bind', source: '/srv/database', target: '/db' }] },
      'mounts[0].source',
      /allow-list/,
      { allowPrivileged: false, allowedBindSources: ['/srv/data'] },
    );
  });

  test('rejects a bind source that escapes an allowed prefix through ..', () => {
    assertRejectsField(
      { image: 'a', mounts: [{ type: 'bind', source: '/srv/data/../../etc', target: '/host-etc' }] },
      'mounts[0].source',
      /allow-list/,
      { allowPrivileged: false, allowedBindSources: ['/srv/data'] },
    );
  });

  test('does not apply the bind allow-list to volumes and tmpfs', () => {
    const resolved = resolveTaskSpec(
      { image: 'a', mounts: [{ type: 'volume', source: 'cache', target: '/cache' }, { type: 'tmpfs', target: '/tmp' }] },
      { allowPrivileged: false, allowedBindSources: [] },
    );
    assert.equal(resolved.mounts.length, 2);
  });

  test('names the index of the bind mount outside the allow-list', () => {
    assertRejectsField(
      {
        image: 'a',
        mounts: [
          { type: 'bind', source: '/srv/ok', target: '/ok' },
          { type: 'bind', source: '/root', target: '/root' },
        ],
      },
      'mounts[1].source',
      /allow-list/,
      { allowPrivileged: false, allowedBindSources: ['/srv'] },
    );
  });

  test('rejects capAdd outside policy.allowedCapabilities, naming capAdd[i]', () => {
    const issue = assertRejectsField(
      { image: 'a', capAdd: ['NET_ADMIN', 'SYS_ADMIN'] },
      'capAdd[1]',
      /not in the allowed list/,
      { allowPrivileged: false, allowedCapabilities: ['NET_ADMIN'] },
    );
    assert.match(issue.rule, /SYS_ADMIN/);
  });

  test('compares capabilities with the allow-list regardless of case and CAP_ prefix', () => {
    const resolved = resolveTaskSpec(
      { image: 'a', capAdd: ['cap_net_admin', 'sys_time'] },
      { allowPrivileged: false, allowedCapabilities: ['NET_ADMIN', 'CAP_SYS_TIME'] },
    );
    assert.deepEqual(resolved.capAdd, ['NET_ADMIN', 'SYS_TIME']);
  });

  test('does not apply the capability allow-list to capDrop', () => {
    const resolved = resolveTaskSpec({ image: 'a', capDrop: ['ALL'] }, { allowPrivileged: false, allowedCapabilities: [] });
    assert.deepEqual(resolved.capDrop, ['ALL']);
  });
});

describe('resolveTaskSpec reports several errors at once', () => {
  test('reports every schema error in one ValidationError', () => {
    const error = rejectionOf({
      image: '',
      workdir: 'relative',
      network: 'overlay',
      resources: { memory: '1m', cpuMilli: 0 },
    });
    assert.deepEqual(error.issues.map((i) => i.field).sort(), [
      'image',
      'network',
      'resources.cpuMilli',
      'resources.memory',
      'workdir',
    ]);
    for (const field of ['image', 'workdir', 'network', 'resources.memory', 'resources.cpuMilli']) {
      assert.ok(error.message.includes(`${field}: `), `message should name ${field}`);
    }
  });

  test('reports every policy error in one ValidationError', () => {
    const error = rejectionOf(
      {
        image: 'a',
        privileged: true,
        mounts: [{ type: 'bind', source: '/etc', target: '/etc' }],
        capAdd: ['SYS_ADMIN'],
      },
      { allowPrivileged: false, allowedBindSources: ['/srv'], allowedCapabilities: [] },
    );
    assert.deepEqual(error.issues.map((i) => i.field).sort(), ['capAdd[0]', 'mounts[0].source', 'privileged']);
  });

  test('reports schema errors and policy errors together', () => {
    const error = rejectionOf({ image: '', privileged: true });
    assert.deepEqual(error.issues.map((i) => i.field).sort(), ['image', 'privileged']);
  });
});

describe('resolveTaskSpec health check', () => {
  test('leaves the health check unset when the spec has none: the image decides', () => {
    assert.equal(resolveTaskSpec({ image: 'a' }).healthcheck, undefined);
  });

  test('resolves a command with the documented defaults: 1 s interval, 5 s timeout, 3 retries, no start period', () => {
    assert.deepEqual(resolveTaskSpec({ image: 'a', healthcheck: { command: ['cat', '/tmp/ready'] } }).healthcheck, {
      disabled: false,
      test: { kind: 'exec', command: ['cat', '/tmp/ready'] },
      intervalMs: 1000,
      timeoutMs: 5000,
      startPeriodMs: undefined,
      retries: 3,
    });
  });

  test('parses every duration once, as the spec’s other durations are', () => {
    const check = resolveTaskSpec({
      image: 'a',
      healthcheck: { shell: 'test -e /tmp/ready', interval: '500ms', timeout: '2s', startPeriod: '1m30s', retries: 5 },
    }).healthcheck;
    assert.deepEqual(check, {
      disabled: false,
      test: { kind: 'shell', shell: 'test -e /tmp/ready' },
      intervalMs: 500,
      timeoutMs: 2000,
      startPeriodMs: 90_000,
      retries: 5,
    });
  });

  test('takes durations as numbers of milliseconds', () => {
    const check = resolveTaskSpec({ image: 'a', healthcheck: { command: ['true'], interval: 250, timeout: 1, startPeriod: 86_400_000 } }).healthcheck;
    assert.ok(check && !check.disabled);
    assert.equal(check.intervalMs, 250);
    assert.equal(check.timeoutMs, 1);
    assert.equal(check.startPeriodMs, 86_400_000);
  });

  test('without a command or shell line, keeps the image’s own command and leaves unset settings to the image', () => {
    assert.deepEqual(resolveTaskSpec({ image: 'a', healthcheck: { retries: 7 } }).healthcheck, {
      disabled: false,
      test: { kind: 'image' },
      intervalMs: undefined,
      timeoutMs: undefined,
      startPeriodMs: undefined,
      retries: 7,
    });
  });

  test('resolves disabled: true to a disabled check, and disabled: false like no disabled field', () => {
    assert.deepEqual(resolveTaskSpec({ image: 'a', healthcheck: { disabled: true } }).healthcheck, { disabled: true });
    const enabled = resolveTaskSpec({ image: 'a', healthcheck: { disabled: false, command: ['true'] } }).healthcheck;
    assert.equal(enabled?.disabled, false);
  });

  test('waitHealthy defaults to false, is kept, and is refused with a disabled health check', () => {
    assert.equal(resolveTaskSpec({ image: 'a' }).waitHealthy, false);
    assert.equal(resolveTaskSpec({ image: 'a', waitHealthy: true }).waitHealthy, true);
    assert.equal(resolveTaskSpec({ image: 'a', waitHealthy: true, healthcheck: { shell: 'true' } }).waitHealthy, true);
    assertRejectsField({ image: 'a', waitHealthy: true, healthcheck: { disabled: true } }, 'waitHealthy', /needs a health check, and healthcheck\.disabled switches it off/);
    assertRejectsField({ image: 'a', waitHealthy: 'yes' }, 'waitHealthy', /expected boolean/);
  });

  test('freezes the resolved health check', () => {
    const check = resolveTaskSpec({ image: 'a', healthcheck: { command: ['true'] } }).healthcheck;
    assert.ok(check && !check.disabled && Object.isFrozen(check) && Object.isFrozen(check.test));
    assert.ok(check.test.kind === 'exec' && Object.isFrozen(check.test.command));
  });

  for (const field of ['interval', 'timeout', 'startPeriod'] as const) {
    test(`rejects a ${field} below the engine’s 1ms minimum`, () => {
      assertRejectsField({ image: 'a', healthcheck: { command: ['true'], [field]: 0 } }, `healthcheck.${field}`, /^must be at least 1ms$/);
      assertRejectsField({ image: 'a', healthcheck: { command: ['true'], [field]: 0.5 } }, `healthcheck.${field}`, /^must be at least 1ms$/);
      assertRejectsField({ image: 'a', healthcheck: { command: ['true'], [field]: '0s' } }, `healthcheck.${field}`, /^must be at least 1ms$/);
    });

    test(`rejects a ${field} above a day`, () => {
      assertRejectsField({ image: 'a', healthcheck: { command: ['true'], [field]: '25h' } }, `healthcheck.${field}`, /^must be at most 24h \(86400000 ms\)$/);
    });

    test(`rejects a ${field} that is not a duration`, () => {
      assertRejectsField({ image: 'a', healthcheck: { command: ['true'], [field]: 'soon' } }, `healthcheck.${field}`, /must be a duration/);
      assertRejectsField({ image: 'a', healthcheck: { command: ['true'], [field]: -5 } }, `healthcheck.${field}`, /must be a duration/);
    });
  }

  test('rejects retries below 1 or not whole', () => {
    assertRejectsField({ image: 'a', healthcheck: { command: ['true'], retries: 0 } }, 'healthcheck.retries', /^must be at least 1$/);
    assertRejectsField({ image: 'a', healthcheck: { command: ['true'], retries: 1.5 } }, 'healthcheck.retries', /^must be a whole number$/);
    assertRejectsField({ image: 'a', healthcheck: { command: ['true'], retries: '3' } }, 'healthcheck.retries', /^must be a whole number$/);
  });

  test('rejects an empty command, or one whose program is empty', () => {
    assertRejectsField({ image: 'a', healthcheck: { command: [] } }, 'healthcheck.command', /non-empty argv array/);
    assertRejectsField({ image: 'a', healthcheck: { command: [' ', 'x'] } }, 'healthcheck.command', /non-empty argv array/);
  });

  test('rejects a command given as a string', () => {
    assertRejectsField({ image: 'a', healthcheck: { command: 'cat /tmp/ready' } }, 'healthcheck.command', /expected array/);
  });

  test('rejects a blank shell line', () => {
    assertRejectsField({ image: 'a', healthcheck: { shell: '  ' } }, 'healthcheck.shell', /non-empty shell command/);
  });

  test('rejects a command and a shell line together', () => {
    assertRejectsField({ image: 'a', healthcheck: { command: ['true'], shell: 'true' } }, 'healthcheck.shell', /cannot be combined with command/);
  });

  test('rejects disabled: true together with settings, naming them', () => {
    assertRejectsField({ image: 'a', healthcheck: { disabled: true, shell: 'true', retries: 2 } }, 'healthcheck.disabled', /cannot be combined with shell, retries/);
  });

  test('rejects an unknown health check field, naming it', () => {
    assertRejectsField({ image: 'a', healthcheck: { command: ['true'], test: ['CMD', 'true'] } }, 'healthcheck', /unknown field\(s\): test/);
  });

  test('names every bad health check field in one error', () => {
    const error = rejectionOf({ image: 'a', healthcheck: { command: ['true'], interval: 0, retries: 0 } });
    assert.deepEqual(error.issues.map((i) => i.field).sort(), ['healthcheck.interval', 'healthcheck.retries']);
  });
});

describe('resolveAcceptedTaskSpec', () => {
  const accepted = { image: 'a', privileged: true, network: 'host', capAdd: ['NET_ADMIN'], mounts: [{ type: 'bind', source: '/srv/data', target: '/data' }] };
  const refusing: SpecPolicy = { allowPrivileged: false, allowHostNetwork: false, allowedCapabilities: [], allowedBindSources: [] };

  test('re-reads a spec accepted under a policy into what resolveTaskSpec made of it, whatever the policy says now', () => {
    const atSubmit = resolveTaskSpec(accepted, { allowPrivileged: true });
    assert.throws(() => resolveTaskSpec(accepted, refusing), ValidationError);
    assert.deepEqual(resolveAcceptedTaskSpec(accepted), atSubmit);
  });

  test('still applies the schema, naming the field', () => {
    assert.throws(
      () => resolveAcceptedTaskSpec({ ...accepted, timeout: 'soon' }),
      (error: unknown) => error instanceof ValidationError && error.issues.some((i) => i.field === 'timeout'),
    );
  });
});
