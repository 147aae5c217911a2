import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { Command } from 'commander';
import { collect, healthcheckFromFlags, parseCpus, parseEnvFlags, parseLabelFlags, parseMountFlag } from '../../../src/cli/flags.js';
import { NO_INTERRUPTS } from '../../../src/cli/interrupts.js';
import { addRunCommand, specFromRunFlags } from '../../../src/cli/run.js';
import { resolveTaskSpec } from '../../../src/spec/schema.js';

type RunFlags = Parameters<typeof specFromRunFlags>[2];

/** Asserts that `fn` throws a ValidationError with one issue on `field` whose rule matches `rule`. */
function assertValidationError(fn: () => unknown, field: string, rule: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${String(error)}`);
    assert.equal(error.code, 'BERTH_VALIDATION');
    assert.deepEqual(error.issues.map((i) => i.field), [field]);
    assert.match(error.issues[0]!.rule, rule);
    assert.ok(error.message.includes(field));
    return true;
  });
}

describe('collect', () => {
  test('appends each repeated flag value in order', () => {
    assert.deepEqual(collect('b', collect('a')), ['a', 'b']);
  });

  test('does not modify the previous list', () => {
    const previous = ['a'];
    collect('b', previous);
    assert.deepEqual(previous, ['a']);
  });
});

describe('parseEnvFlags', () => {
  test('parses KEY=VALUE', () => {
    assert.deepEqual(parseEnvFlags(['A=1', 'NAME=value'], {}), { A: '1', NAME: 'value' });
  });

  test('keeps everything after the first = as the value', () => {
    assert.deepEqual(parseEnvFlags(['URL=a=b=c', 'Q=?x=1&y=2'], {}), { URL: 'a=b=c', Q: '?x=1&y=2' });
  });

  test('parses KEY= as an empty value', () => {
    assert.deepEqual(parseEnvFlags(['EMPTY='], { EMPTY: 'from-env' }), { EMPTY: '' });
  });

  test('inherits a bare KEY from the given environment', () => {
    assert.deepEqual(parseEnvFlags(['HOME'], { HOME: '/home/me', OTHER: 'x' }), { HOME: '/home/me' });
  });

  test('inherits an empty value from the given environment', () => {
    assert.deepEqual(parseEnvFlags(['BLANK'], { BLANK: '' }), { BLANK: '' });
  });

  test('omits a bare KEY that is unset in the given environment', () => {
    const env = parseEnvFlags(['MISSING', 'A=1'], { OTHER: 'x' });
    assert.deepEqual(env, { A: '1' });
    assert.equal(Object.hasOwn(env, 'MISSING'), false);
  });

  test('omits a bare KEY whose value in the environment is undefined', () => {
    assert.deepEqual(parseEnvFlags(['UNDEF'], { UNDEF: undefined }), {});
  });

  test('lets a later value of the same key win', () => {
    assert.deepEqual(parseEnvFlags(['A=1', 'A=2'], {}), { A: '2' });
  });

  test('returns an empty map for no flags', () => {
    assert.deepEqual(parseEnvFlags([], { A: '1' }), {});
  });
});

describe('parseLabelFlags', () => {
  test('parses key=value', () => {
    assert.deepEqual(parseLabelFlags(['team=infra', 'com.example.tier=gold']), { team: 'infra', 'com.example.tier': 'gold' });
  });

  test('parses a bare key as an empty value', () => {
    assert.deepEqual(parseLabelFlags(['flag']), { flag: '' });
  });

  test('keeps everything after the first = as the value', () => {
    assert.deepEqual(parseLabelFlags(['expr=a=b']), { expr: 'a=b' });
  });

  test('lets a later value of the same key win', () => {
    assert.deepEqual(parseLabelFlags(['k=1', 'k=2']), { k: '2' });
  });
});

describe('parseCpus', () => {
  const valid: Array<[string, number]> = [
    ['0.5', 500],
    ['2', 2000],
    ['1.25', 1250],
    ['.5', 500],
    ['0.01', 10],
    ['16', 16_000],
  ];
  for (const [input, milli] of valid) {
    test(`parses --cpus ${JSON.stringify(input)} as ${milli} milli-CPUs`, () => {
      assert.equal(parseCpus(input), milli);
    });
  }

  for (const input of ['abc', '-1', '', '1e3', '1,5', '2 cpus', 'Infinity']) {
    test(`rejects --cpus ${JSON.stringify(input)} with a ValidationError naming --cpus and its forms`, () => {
      assertValidationError(() => parseCpus(input), '--cpus', /is not a number of CPUs; use e\.g\. 0\.5 or 2, or 0 for no limit$/);
    });
  }

  for (const input of ['0', '0.0']) {
    test(`reads --cpus ${JSON.stringify(input)} as no limit, as docker does`, () => {
      assert.equal(parseCpus(input), undefined);
    });
  }

  test('rejects --cpus too small to be one milli-CPU with a ValidationError naming --cpus', () => {
    assertValidationError(() => parseCpus('0.0001'), '--cpus', /.+/);
  });
});

describe('parseMountFlag', () => {
  test('parses a bind mount with type, source and target', () => {
    assert.deepEqual(parseMountFlag('type=bind,source=/srv/data,target=/data', 0), {
      type: 'bind',
      source: '/srv/data',
      target: '/data',
      readOnly: false,
      propagation: 'private',
    });
  });

  test('accepts src and dst as docker does', () => {
    assert.deepEqual(parseMountFlag('type=bind,src=/a,dst=/b', 0), {
      type: 'bind',
      source: '/a',
      target: '/b',
      readOnly: false,
      propagation: 'private',
    });
  });

  test('accepts destination for the target', () => {
    const mount = parseMountFlag('type=bind,source=/a,destination=/b', 0);
    assert.equal(mount.target, '/b');
  });

  test('makes the mount read-only with a bare readonly', () => {
    const mount = parseMountFlag('type=bind,source=/a,target=/b,readonly', 0);
    assert.equal(mount.type === 'bind' && mount.readOnly, true);
  });

  test('makes the mount read-only with a bare ro', () => {
    const mount = parseMountFlag('type=bind,source=/a,target=/b,ro', 0);
    assert.equal(mount.type === 'bind' && mount.readOnly, true);
  });

  test('makes the mount read-only with readonly=true and ro=1', () => {
    const first = parseMountFlag('type=bind,source=/a,target=/b,readonly=true', 0);
    const second = parseMountFlag('type=volume,target=/b,ro=1', 0);
    assert.equal(first.type === 'bind' && first.readOnly, true);
    assert.equal(second.type === 'volume' && second.readOnly, true);
  });

  test('keeps the mount read-write with readonly=false', () => {
    const mount = parseMountFlag('type=bind,source=/a,target=/b,readonly=false', 0);
    assert.equal(mount.type === 'bind' && mount.readOnly, false);
  });

  const propagations: Array<[string, string]> = [
    ['bind-propagation=rslave', 'host-to-task'],
    ['bind-propagation=rprivate', 'private'],
    ['bind-propagation=rshared', 'bidirectional'],
    ['propagation=bidirectional', 'bidirectional'],
    ['propagation=host-to-task', 'host-to-task'],
    ['propagation=private', 'private'],
    ['bind-propagation=slave', 'host-to-task'],
    ['bind-propagation=shared', 'bidirectional'],
  ];
  for (const [option, propagation] of propagations) {
    test(`maps ${option} to propagation ${propagation}`, () => {
      const mount = parseMountFlag(`type=bind,source=/a,target=/b,${option}`, 0);
      assert.equal(mount.type === 'bind' && mount.propagation, propagation);
    });
  }

  test('rejects an unknown propagation, naming --mount[i]', () => {
    assertValidationError(() => parseMountFlag('type=bind,source=/a,target=/b,propagation=sideways', 2), '--mount[2]', /propagation must be/);
  });

  test('rejects a bind mount without a source, naming --mount[i]', () => {
    assertValidationError(() => parseMountFlag('type=bind,target=/b', 1), '--mount[1]', /needs source/);
  });

  test('parses a named volume', () => {
    assert.deepEqual(parseMountFlag('type=volume,source=cache,target=/cache', 0), {
      type: 'volume',
      source: 'cache',
      target: '/cache',
      readOnly: false,
    });
  });

  test('defaults to an anonymous volume when type and source are omitted', () => {
    const mount = parseMountFlag('target=/anon', 0);
    assert.equal(mount.type, 'volume');
    assert.equal(mount.target, '/anon');
    assert.equal(mount.type === 'volume' ? mount.source : 'not a volume', undefined);
  });

  test('parses a tmpfs with tmpfs-size', () => {
    assert.deepEqual(parseMountFlag('type=tmpfs,target=/scratch,tmpfs-size=64m', 0), { type: 'tmpfs', target: '/scratch', size: '64m' });
  });

  test('parses a tmpfs with size', () => {
    const mount = parseMountFlag('type=tmpfs,dst=/scratch,size=1g', 0);
    assert.equal(mount.type === 'tmpfs' && mount.size, '1g');
  });

  test('parses a tmpfs without a size', () => {
    const mount = parseMountFlag('type=tmpfs,target=/scratch', 0);
    assert.equal(mount.type, 'tmpfs');
    assert.equal(mount.type === 'tmpfs' ? mount.size : 'not tmpfs', undefined);
  });

  test('accepts keys in any case and spaces around them', () => {
    const mount = parseMountFlag('Type=bind, Source=/a , TARGET=/b', 0);
    assert.deepEqual(mount, { type: 'bind', source: '/a', target: '/b', readOnly: false, propagation: 'private' });
  });

  test('keeps = inside a value', () => {
    const mount = parseMountFlag('type=bind,source=/a=b,target=/c', 0);
    assert.equal(mount.type === 'bind' && mount.source, '/a=b');
  });

  test('rejects a mount without a target, naming --mount[i]', () => {
    assertValidationError(() => parseMountFlag('type=bind,source=/a', 3), '--mount[3]', /needs target/);
  });

  test('rejects an unknown type, naming --mount[i]', () => {
    assertValidationError(() => parseMountFlag('type=npipe,source=/a,target=/b', 0), '--mount[0]', /type must be bind, volume or tmpfs/);
  });

  test('rejects an unknown key rather than ignoring it, naming --mount[i]', () => {
    // A misspelt "readonly" silently gave a read-write mount; docker refuses unknown keys.
    assertValidationError(() => parseMountFlag('type=bind,source=/a,target=/b,redonly', 0), '--mount[0]', /.+/);
  });

  test('rejects a readonly value that is not a boolean rather than mounting read-write, naming --mount[i]', () => {
    assertValidationError(() => parseMountFlag('type=bind,source=/a,target=/b,readonly=yes', 0), '--mount[0]', /.+/);
  });

  test('gives mounts that resolve into the spec as written', () => {
    const resolved = resolveTaskSpec({
      image: 'a',
      mounts: [
        parseMountFlag('type=bind,src=/srv,dst=/data,ro,bind-propagation=rslave', 0),
        parseMountFlag('type=tmpfs,target=/scratch,tmpfs-size=64m', 1),
        parseMountFlag('type=volume,source=cache,target=/cache', 2),
      ],
    });
    assert.deepEqual(resolved.mounts, [
      { type: 'bind', source: '/srv', target: '/data', readOnly: true, propagation: 'host-to-task' },
      { type: 'tmpfs', target: '/scratch', sizeBytes: 64 * 1024 * 1024 },
      { type: 'volume', source: 'cache', target: '/cache', readOnly: false },
    ]);
  });
});

describe('specFromRunFlags', () => {
  const noFlags = (): RunFlags => ({ env: [], label: [], mount: [], capAdd: [], capDrop: [] });
  const io = () => ({ env: {} as Record<string, string | undefined>, stdin: new PassThrough() });

  test('builds a minimal spec from the image alone', () => {
    assert.deepEqual(specFromRunFlags('busybox', [], noFlags(), io()), {
      image: 'busybox',
      env: {},
      labels: {},
      mounts: [],
      capAdd: [],
      capDrop: [],
      resources: {},
    });
  });

  test('passes the command and its arguments', () => {
    const command = ['sh', '-c', 'echo hi'];
    const spec = specFromRunFlags('busybox', command, noFlags(), io());
    assert.deepEqual(spec.command, ['sh', '-c', 'echo hi']);
    assert.notEqual(spec.command, command);
  });

  test('turns --stop-timeout 5 into a grace period of 5s', () => {
    const spec = specFromRunFlags('busybox', [], { ...noFlags(), stopTimeout: '5' }, io());
    assert.equal(spec.stopGracePeriod, '5s');
    assert.equal(resolveTaskSpec(spec).stopGraceMs, 5000);
  });

  test('passes a --stop-timeout with a unit through', () => {
    assert.equal(specFromRunFlags('busybox', [], { ...noFlags(), stopTimeout: '1m30s' }, io()).stopGracePeriod, '1m30s');
  });

  test('turns --cpus into milli-CPUs and -m into the memory limit', () => {
    const spec = specFromRunFlags('busybox', [], { ...noFlags(), cpus: '0.5', memory: '64m', pidsLimit: '64' }, io());
    assert.deepEqual(spec.resources, { memory: '64m', cpuMilli: 500, pidsLimit: 64 });
  });

  test('throws a ValidationError naming --cpus for a bad --cpus', () => {
    assertValidationError(() => specFromRunFlags('busybox', [], { ...noFlags(), cpus: 'abc' }, io()), '--cpus', /"abc" is not a number of CPUs/);
  });

  test('sets stdin to the CLI’s stdin with -i', () => {
    const cli = io();
    const spec = specFromRunFlags('busybox', ['cat'], { ...noFlags(), interactive: true }, cli);
    assert.equal(spec.stdin, cli.stdin);
  });

  test('leaves stdin unset without -i', () => {
    const spec = specFromRunFlags('busybox', ['cat'], noFlags(), io());
    assert.equal(Object.hasOwn(spec, 'stdin'), false);
  });

  test('passes env flags, inheriting bare keys from the CLI’s environment', () => {
    const spec = specFromRunFlags(
      'busybox',
      [],
      { ...noFlags(), env: ['A=1', 'HOME', 'UNSET'] },
      { env: { HOME: '/home/me' }, stdin: new PassThrough() },
    );
    assert.deepEqual(spec.env, { A: '1', HOME: '/home/me' });
  });

  test('passes labels, capabilities and mounts', () => {
    const spec = specFromRunFlags(
      'busybox',
      [],
      {
        ...noFlags(),
        label: ['team=infra'],
        capAdd: ['NET_ADMIN'],
        capDrop: ['ALL'],
        mount: ['type=tmpfs,target=/tmp', 'type=bind,source=/srv,target=/srv,readonly'],
      },
      io(),
    );
    assert.deepEqual(spec.labels, { team: 'infra' });
    assert.deepEqual(spec.capAdd, ['NET_ADMIN']);
    assert.deepEqual(spec.capDrop, ['ALL']);
    assert.deepEqual(spec.mounts, [
      { type: 'tmpfs', target: '/tmp', size: undefined },
      { type: 'bind', source: '/srv', target: '/srv', readOnly: true, propagation: 'private' },
    ]);
  });

  test('names the index of a bad --mount', () => {
    assertValidationError(
      () => specFromRunFlags('busybox', [], { ...noFlags(), mount: ['type=tmpfs,target=/ok', 'type=bind,source=/x'] }, io()),
      '--mount[1]',
      /needs target/,
    );
  });

  test('passes workdir, user, network, privileged, timeout, stop signal and tty', () => {
    const spec = specFromRunFlags(
      'busybox',
      [],
      {
        ...noFlags(),
        workdir: '/tmp',
        user: 'nobody',
        network: 'bridge',
        privileged: true,
        timeout: '30s',
        stopSignal: 'SIGINT',
        tty: true,
      },
      io(),
    );
    assert.equal(spec.workdir, '/tmp');
    assert.equal(spec.user, 'nobody');
    assert.equal(spec.network, 'bridge');
    assert.equal(spec.privileged, true);
    assert.equal(spec.timeout, '30s');
    assert.equal(spec.stopSignal, 'SIGINT');
    assert.equal(spec.tty, true);
  });

  test('turns --entrypoint into a one-element entrypoint, and an empty one into an empty entrypoint', () => {
    assert.deepEqual(specFromRunFlags('busybox', [], { ...noFlags(), entrypoint: '/bin/sh' }, io()).entrypoint, ['/bin/sh']);
    assert.deepEqual(specFromRunFlags('busybox', [], { ...noFlags(), entrypoint: '' }, io()).entrypoint, []);
  });

  test('defaults the log driver to local when only --log-max-size is given', () => {
    assert.deepEqual(specFromRunFlags('busybox', [], { ...noFlags(), logMaxSize: '5m' }, io()).log, { driver: 'local', maxSize: '5m' });
  });

  test('sets only the log driver when only --log-driver is given', () => {
    assert.deepEqual(specFromRunFlags('busybox', [], { ...noFlags(), logDriver: 'json-file' }, io()).log, { driver: 'json-file' });
  });

  test('leaves the log unset without log flags', () => {
    assert.equal(Object.hasOwn(specFromRunFlags('busybox', [], noFlags(), io()), 'log'), false);
  });

  test('builds a spec that resolves with every value in bytes and milliseconds', () => {
    const cli = io();
    const resolved = resolveTaskSpec(
      specFromRunFlags(
        'busybox',
        ['cat'],
        { ...noFlags(), memory: '32m', cpus: '1.5', stopTimeout: '5', timeout: '1m', interactive: true, logMaxSize: '2m' },
        cli,
      ),
    );
    assert.equal(resolved.resources.memoryBytes, 32 * 1024 * 1024);
    assert.equal(resolved.resources.cpuMilli, 1500);
    assert.equal(resolved.stopGraceMs, 5000);
    assert.equal(resolved.timeoutMs, 60_000);
    assert.equal(resolved.stdin, cli.stdin);
    assert.deepEqual(resolved.log, { driver: 'local', maxSizeBytes: 2 * 1024 * 1024, maxFiles: 1 });
  });
});

describe('health check flags', () => {
  const noFlags = (): RunFlags => ({ env: [], label: [], mount: [], capAdd: [], capDrop: [] });
  const io = () => ({ env: {} as Record<string, string | undefined>, stdin: new PassThrough() });

  /** Parses argv with the real run command's options (its action replaced), as commander hands them over. */
  async function parseRun(args: string[]): Promise<RunFlags> {
    const program = new Command('berth').enablePositionalOptions().exitOverride().configureOutput({ writeOut: () => undefined, writeErr: () => undefined });
    addRunCommand(program, { ...io(), stdout: new PassThrough(), stderr: new PassThrough(), interrupts: NO_INTERRUPTS }, () => undefined);
    let captured: RunFlags | undefined;
    program.commands.find((c) => c.name() === 'run')!.action((_image: string, _command: string[], flags: RunFlags) => {
      captured = flags;
    });
    await program.parseAsync(['run', ...args, 'busybox', 'true'], { from: 'user' });
    return captured!;
  }

  test('sets no health check without health flags, so the image’s own applies', async () => {
    assert.equal(Object.hasOwn(specFromRunFlags('busybox', [], await parseRun([]), io()), 'healthcheck'), false);
    assert.equal(healthcheckFromFlags({}), undefined);
  });

  test('--health-cmd is a shell line (the engine’s CMD-SHELL), with every setting passed on', async () => {
    const flags = await parseRun(['--health-cmd', 'curl -f http://localhost/ || exit 1', '--health-interval', '2s', '--health-timeout', '500ms', '--health-start-period', '1m', '--health-retries', '5']);
    const spec = specFromRunFlags('busybox', [], flags, io());
    assert.deepEqual(spec.healthcheck, { shell: 'curl -f http://localhost/ || exit 1', interval: '2s', timeout: '500ms', startPeriod: '1m', retries: 5 });
    assert.deepEqual(resolveTaskSpec(spec).healthcheck, {
      disabled: false,
      test: { kind: 'shell', shell: 'curl -f http://localhost/ || exit 1' },
      intervalMs: 2000,
      timeoutMs: 500,
      startPeriodMs: 60_000,
      retries: 5,
    });
  });

  test('--health-cmd alone gets the spec’s defaults', async () => {
    const spec = specFromRunFlags('busybox', [], await parseRun(['--health-cmd', 'true']), io());
    assert.deepEqual(spec.healthcheck, { shell: 'true' });
  });

  test('settings without --health-cmd tune the image’s own check', () => {
    assert.deepEqual(healthcheckFromFlags({ healthRetries: '2', healthInterval: '10s' }), { interval: '10s', retries: 2 });
  });

  test('--no-healthcheck disables the health check', async () => {
    const flags = await parseRun(['--no-healthcheck']);
    assert.equal(flags.healthcheck, false);
    assert.deepEqual(specFromRunFlags('busybox', [], flags, io()).healthcheck, { disabled: true });
  });

  test('--no-healthcheck with a --health-* flag is refused, naming both', async () => {
    const flags = await parseRun(['--no-healthcheck', '--health-cmd', 'true', '--health-retries', '2']);
    assertValidationError(() => specFromRunFlags('busybox', [], flags, io()), '--no-healthcheck', /cannot be combined with --health-cmd, --health-retries/);
  });

  for (const flag of ['healthInterval', 'healthTimeout', 'healthStartPeriod'] as const) {
    test(`a ${flag} without a unit is refused, naming the flag`, () => {
      const name = `--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
      assertValidationError(() => healthcheckFromFlags({ [flag]: '5' }), name, /^"5" has no unit; use e\.g\. 5s or 5ms \(units: ms, s, m, h, d\)$/);
    });
  }

  for (const retries of ['abc', '1.5', '-1', '']) {
    test(`--health-retries ${JSON.stringify(retries)} is refused, naming the flag`, () => {
      assertValidationError(() => healthcheckFromFlags({ healthRetries: retries }), '--health-retries', /whole number/);
    });
  }

  test('values out of the spec\'s bounds name the flag and the rule', () => {
    assertValidationError(() => specFromRunFlags('busybox', [], { ...noFlags(), healthCmd: 'true', healthInterval: '0s' }, io()), '--health-interval', /^must be at least 1ms; 0 is not allowed here$/);
    assertValidationError(() => specFromRunFlags('busybox', [], { ...noFlags(), healthCmd: 'true', healthRetries: '0' }, io()), '--health-retries', /from 1 to 1000000/);
  });

});
