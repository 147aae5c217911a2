import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { Command } from 'commander';
import { CONFIG_BOUNDS, CONFIG_KEY_KINDS, envVarForKey, loadAgentConfig, type HostFacts } from '../../../src/agent/config.js';
import { ValidationError } from '../../../src/common/errors.js';
import { readTypedDuration, readTypedSize } from '../../../src/common/units.js';
import { flagForSpecField, stopTimeoutFlag, withFlagNames } from '../../../src/cli/flags.js';
import { NO_INTERRUPTS } from '../../../src/cli/interrupts.js';
import { addRunCommand, specFromRunFlags, type FlagTarget } from '../../../src/cli/run.js';
import { addSubmitCommand } from '../../../src/cli/submit.js';
import { resolveTaskSpec } from '../../../src/spec/schema.js';

/**
 * The one rule for durations and sizes (common/units.ts), checked on every flag of berth run (and
 * submit, which takes the same flags) and every duration and size key of the agent's
 * configuration: a unit is required; the flags docker defines in seconds read a bare number as
 * seconds; 0 is "no limit" where docker means that and refused, naming the bound, where it has no
 * meaning. Errors name the flag as typed and use human units.
 */

const io = { env: {}, stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, interrupts: NO_INTERRUPTS };

/** The run command as the CLI builds it, for its own list of options. */
function runCommand(): Command {
  const program = new Command('berth').enablePositionalOptions().exitOverride();
  addRunCommand(program, io, () => undefined);
  return program.commands.find((c) => c.name() === 'run')!;
}

/** The options of berth run that take a duration or a size: by the name of their argument. */
const QUANTITY_OPTIONS = runCommand().options.filter((o) => /<(duration|size|seconds)>/.test(o.flags));

/** How each of them is named in errors, and what its bare number and its 0 mean. */
const RULES: Readonly<Record<string, { name: string; bare: 'refused' | 'seconds'; zero: 'no-limit' | 'refused' | 'zero' }>> = {
  '--memory': { name: '-m/--memory', bare: 'refused', zero: 'no-limit' },
  '--timeout': { name: '--timeout', bare: 'refused', zero: 'no-limit' },
  '--stop-timeout': { name: '--stop-timeout', bare: 'seconds', zero: 'zero' },
  '--log-max-size': { name: '--log-max-size', bare: 'refused', zero: 'refused' },
  '--shm-size': { name: '--shm-size', bare: 'refused', zero: 'refused' },
  '--health-interval': { name: '--health-interval', bare: 'refused', zero: 'refused' },
  '--health-timeout': { name: '--health-timeout', bare: 'refused', zero: 'refused' },
  '--health-start-period': { name: '--health-start-period', bare: 'refused', zero: 'refused' },
};

async function parseRun(args: string[]): Promise<Parameters<typeof specFromRunFlags>[2]> {
  const program = new Command('berth').enablePositionalOptions().exitOverride().configureOutput({ writeOut: () => undefined, writeErr: () => undefined });
  let captured: Parameters<typeof specFromRunFlags>[2] | undefined;
  addRunCommand(program, io, () => undefined);
  program.commands.find((c) => c.name() === 'run')!.action((_image: string, _command: string[], flags: Parameters<typeof specFromRunFlags>[2]) => {
    captured = flags;
  });
  await program.parseAsync(['run', ...args, 'busybox'], { from: 'user' });
  return captured!;
}

/** The spec of a command line, or the one issue it was refused with. */
async function specOrIssue(args: string[], target: FlagTarget = 'engine'): Promise<{ spec: ReturnType<typeof specFromRunFlags> } | { field: string; rule: string }> {
  const flags = await parseRun(args);
  try {
    return { spec: specFromRunFlags('busybox', [], flags, io, target) };
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    assert.equal(error.issues.length, 1, error.message);
    return error.issues[0]!;
  }
}

/** A health flag needs --health-cmd beside it to be a complete check; the rule is the flag's own either way. */
const withCompanions = (long: string, value: string): string[] => (long.startsWith('--health-') ? ['--health-cmd', 'true', long, value] : [long, value]);

describe('typed durations and sizes: one rule (common/units.ts)', () => {
  test('a duration needs a unit; the units are named when it has none', () => {
    assert.deepEqual(readTypedDuration('1m30s'), { ok: true, value: 90_000 });
    assert.deepEqual(readTypedDuration('500ms'), { ok: true, value: 500 });
    assert.deepEqual(readTypedDuration('1.5h'), { ok: true, value: 5_400_000 });
    assert.deepEqual(readTypedDuration('30'), { ok: false, problem: '"30" has no unit; use e.g. 30s or 30ms (units: ms, s, m, h, d)' });
    assert.deepEqual(readTypedDuration('soon'), { ok: false, problem: '"soon" is not a duration; use e.g. 30s, 1m30s or 500ms (units: ms, s, m, h, d)' });
    assert.deepEqual(readTypedDuration(''), { ok: false, problem: '"" is not a duration; use e.g. 30s, 1m30s or 500ms (units: ms, s, m, h, d)' });
  });

  test('0 is zero in any unit and needs none', () => {
    assert.deepEqual(readTypedDuration('0'), { ok: true, value: 0 });
    assert.deepEqual(readTypedSize('0'), { ok: true, value: 0 });
  });

  test('docker\'s seconds flags read a bare whole number as seconds, and a unit as written', () => {
    assert.deepEqual(readTypedDuration('10', 'seconds'), { ok: true, value: 10_000 });
    assert.deepEqual(readTypedDuration('1m', 'seconds'), { ok: true, value: 60_000 });
    assert.equal(readTypedDuration('1.5', 'seconds').ok, false);
  });

  test('a size needs a binary unit; the units are named when it has none', () => {
    assert.deepEqual(readTypedSize('512m'), { ok: true, value: 512 * 1024 ** 2 });
    assert.deepEqual(readTypedSize('100b'), { ok: true, value: 100 });
    assert.deepEqual(readTypedSize('1073741824'), { ok: false, problem: '"1073741824" has no unit; use e.g. 1073741824m or 1073741824k (units: b, k, m, g, t, p; 1k = 1024 bytes)' });
    assert.deepEqual(readTypedSize('32x'), { ok: false, problem: '"32x" is not a size; use e.g. 512m or 1g (units: b, k, m, g, t, p)' });
  });
});

describe('every duration and size flag of berth run follows the rule, and its error names the flag as typed', () => {
  test('the flags checked here are all of run\'s duration and size flags', () => {
    assert.deepEqual(QUANTITY_OPTIONS.map((o) => o.long).sort(), Object.keys(RULES).sort());
  });

  for (const option of QUANTITY_OPTIONS) {
    const long = option.long!;
    const rule = RULES[long]!;
    const isSize = /<size>/.test(option.flags);

    test(`${long}: a bare number is ${rule.bare === 'seconds' ? 'seconds, as docker reads it' : 'refused, naming the flag and the units'}`, async () => {
      const result = await specOrIssue(withCompanions(long, '5'));
      if (rule.bare === 'seconds') {
        assert.ok('spec' in result, JSON.stringify(result));
        assert.equal(resolveTaskSpec(result.spec).stopGraceMs, 5000);
      } else {
        assert.deepEqual(result, { field: rule.name, rule: isSize ? '"5" has no unit; use e.g. 5m or 5k (units: b, k, m, g, t, p; 1k = 1024 bytes)' : '"5" has no unit; use e.g. 5s or 5ms (units: ms, s, m, h, d)' });
      }
    });

    test(`${long}: a value with a unit is accepted`, async () => {
      const result = await specOrIssue(withCompanions(long, isSize ? '64m' : '2s'));
      assert.ok('spec' in result, JSON.stringify(result));
      assert.doesNotThrow(() => resolveTaskSpec(result.spec));
    });

    test(`${long}: nonsense is refused with an example of the form`, async () => {
      const result = await specOrIssue(withCompanions(long, '32x'));
      assert.ok(!('spec' in result));
      assert.equal(result.field, rule.name);
      assert.match(result.rule, isSize ? /^"32x" is not a size; use e\.g\. 512m or 1g/ : /^"32x" is not a duration; use e\.g\. 30s, 1m30s or 500ms/);
    });

    test(`${long}: 0 ${rule.zero === 'no-limit' ? 'is no limit' : rule.zero === 'zero' ? 'is zero' : 'is refused, naming the smallest value'}`, async () => {
      const result = await specOrIssue(withCompanions(long, '0'));
      if (rule.zero === 'refused') {
        assert.ok(!('spec' in result));
        assert.equal(result.field, rule.name);
        assert.match(result.rule, /^must be at least \S+; 0 is not allowed here$/);
        return;
      }
      assert.ok('spec' in result, JSON.stringify(result));
      const resolved = resolveTaskSpec(result.spec);
      if (long === '--memory') assert.equal(resolved.resources.memoryBytes, undefined);
      if (long === '--timeout') assert.equal(resolved.timeoutMs, undefined);
      if (long === '--stop-timeout') assert.equal(resolved.stopGraceMs, 0);
    });
  }
});

describe('the error texts the issue names', () => {
  test('-m 32x: -m/--memory: "32x" is not a size; use e.g. 512m or 1g', async () => {
    assert.deepEqual(await specOrIssue(['-m', '32x']), { field: '-m/--memory', rule: '"32x" is not a size; use e.g. 512m or 1g (units: b, k, m, g, t, p)' });
  });

  test('a memory under the engine\'s floor says "at least 6m", not a number of bytes', async () => {
    assert.deepEqual(await specOrIssue(['-m', '1k']), { field: '-m/--memory', rule: 'must be at least 6m, or 0 for no limit' });
  });

  test('--pids-limit abc names the flag and the range, not NaN', async () => {
    const result = await specOrIssue(['--pids-limit', 'abc']);
    assert.deepEqual(result, { field: '--pids-limit', rule: '"abc" is not a whole number; use one from 1 to 4194304, or 0 for no limit' });
  });

  test('--pids-limit 0 and -1, -m 0 and --cpus 0 are no limit for berth run, as in docker', async () => {
    for (const args of [['--pids-limit', '0'], ['--pids-limit=-1'], ['-m', '0'], ['--cpus', '0'], ['--timeout', '0']]) {
      const result = await specOrIssue(args);
      assert.ok('spec' in result, `${args.join(' ')}: ${JSON.stringify(result)}`);
      const resolved = resolveTaskSpec(result.spec);
      assert.deepEqual(resolved.resources, { memoryBytes: undefined, memoryReservationBytes: undefined, cpuMilli: undefined, cpuShares: undefined, pidsLimit: undefined });
      assert.equal(resolved.timeoutMs, undefined);
    }
  });

  test('for a task the agent runs, 0 (no limit) is refused with the key whose default applies instead', async () => {
    for (const [args, flag, key] of [[['-m', '0'], '-m/--memory', 'defaults.resources.memory'], [['--cpus', '0'], '--cpus', 'defaults.resources.cpuMilli'], [['--pids-limit', '0'], '--pids-limit', 'defaults.resources.pidsLimit']] as const) {
      const result = await specOrIssue([...args], 'agent');
      assert.ok(!('spec' in result));
      assert.equal(result.field, flag);
      assert.match(result.rule, new RegExp(`^0 \\(no limit\\) is not available for a task the agent runs: .*${key.replace(/\./g, '\\.')}`));
    }
    // --timeout 0 is no run time limit for the agent too: it has no default run time limit.
    assert.ok('spec' in (await specOrIssue(['--timeout', '0'], 'agent')));
  });

  test('--timeout 30 is refused (a unit is required) rather than read as 30 ms', async () => {
    assert.deepEqual(await specOrIssue(['--timeout', '30']), { field: '--timeout', rule: '"30" has no unit; use e.g. 30s or 30ms (units: ms, s, m, h, d)' });
  });

  test('stop -t and --stop-timeout share the seconds rule, each named as typed', () => {
    assert.equal(stopTimeoutFlag('10', '-t/--time'), '10s');
    assert.throws(() => stopTimeoutFlag('ten', '-t/--time'), (e: unknown) => e instanceof ValidationError && e.issues[0]!.field === '-t/--time' && /"ten" is not a duration/.test(e.issues[0]!.rule));
  });

  test('spec fields in a validation error are restated as the flags that set them', () => {
    assert.equal(flagForSpecField('spec.resources.memory'), '-m/--memory');
    assert.equal(flagForSpecField('resources.pidsLimit'), '--pids-limit');
    assert.equal(flagForSpecField('spec.mounts[2].source'), '--mount[2] source');
    assert.equal(flagForSpecField('mounts[0]'), '--mount[0]');
    assert.equal(flagForSpecField('capAdd[0]'), '--cap-add');
    assert.equal(flagForSpecField('stopGracePeriod'), '--stop-timeout');
    assert.equal(flagForSpecField('healthcheck.interval'), '--health-interval');
    assert.equal(flagForSpecField('id', { id: '--name' }), '--name');
    const restated = withFlagNames(new ValidationError([{ field: 'spec.privileged', rule: 'privileged tasks are not allowed' }], { context: { status: 400 } }));
    assert.ok(restated instanceof ValidationError);
    assert.equal(restated.message, '--privileged: privileged tasks are not allowed');
    assert.equal(restated.context.status, 400);
  });

  test('berth run names the flag when the spec\'s own validation refuses a value', async () => {
    const program = new Command('berth').enablePositionalOptions().exitOverride();
    addRunCommand(program, io, () => undefined);
    await assert.rejects(program.parseAsync(['run', '--network', 'not/a-name', 'busybox'], { from: 'user' }), (e: unknown) => e instanceof ValidationError && e.issues[0]!.field === '--network');
    await assert.rejects(program.parseAsync(['run', '-u', 'bad user', 'busybox'], { from: 'user' }), (e: unknown) => e instanceof ValidationError && e.issues[0]!.field === '-u/--user');
  });

  test('submit --help has its own wording where run\'s says something of run only (no "berth exits 124")', () => {
    const program = new Command('berth').enablePositionalOptions();
    let help = '';
    program.configureOutput({ writeOut: (text) => (help += text) });
    addSubmitCommand(program, io, () => undefined);
    const submit = program.commands.find((c) => c.name() === 'submit')!;
    help = submit.helpInformation();
    assert.doesNotMatch(help, /exits 124/);
    assert.match(help.replace(/\s+/g, ' '), /the agent stops the task, which ends as timed-out/);
    assert.match(runCommand().helpInformation().replace(/\s+/g, ' '), /berth exits 124/);
  });
});

describe('every duration and size key of the agent configuration follows the rule', () => {
  const host: HostFacts = { uid: 1000, homedir: '/home/ada', totalMemoryBytes: 8 * 1024 ** 3, cpuCount: 4 };
  const dir = mkdtempSync(path.join(tmpdir(), 'berth-units-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const keys = Object.entries(CONFIG_KEY_KINDS).filter(([, kind]) => kind === 'duration' || kind === 'size');
  /** A valid value with a unit for each key: within every key's bounds (prune.schedule's and events.window's floor is 1m; http.headersTimeout's ceiling the request timeout, 30s). */
  const VALID: Readonly<Record<string, string>> = { duration: '20s', size: '64m', 'prune.schedule': '2m', 'events.window': '2m', 'cluster.heartbeat': '2s' };

  function issues(load: () => unknown): Array<{ field: string; rule: string }> {
    try {
      load();
      return [];
    } catch (error) {
      assert.ok(error instanceof ValidationError, String(error));
      return error.issues.map((i) => ({ field: i.field, rule: i.rule }));
    }
  }
  const yaml = (key: string, value: string): string => {
    const parts = key.split('.');
    const lines = parts.map((part, i) => `${'  '.repeat(i)}${part}:${i === parts.length - 1 ? ` ${value}` : ''}`);
    // A cluster key needs the cluster's database and an address other nodes reach.
    if (parts[0] === 'cluster') lines.splice(0, 1, 'listen: 127.0.0.1:7070', 'cluster:', '  postgres: postgres://db.example/berth');
    return lines.join('\n') + '\n';
  };

  test('the keys checked are every key with duration or size bounds', () => {
    const bounded = Object.entries(CONFIG_BOUNDS).filter(([, b]) => 'minMs' in b || 'minBytes' in b).map(([k]) => k);
    assert.deepEqual(keys.map(([k]) => k).sort(), bounded.sort());
  });

  for (const [key, kind] of keys) {
    const variable = envVarForKey(key);
    test(`${key}: a bare number in ${variable} is refused, naming the variable and the units`, () => {
      // (Another key may object as well: 5000 would be under http.headersTimeout, say.)
      const found = issues(() => loadAgentConfig({ env: { [variable]: '5000' }, host })).filter((i) => i.field === key);
      assert.equal(found.length, 1);
      assert.match(found[0]!.rule, new RegExp(`^"5000" has no unit; use e\\.g\\. 5000${kind === 'duration' ? 's' : 'm'} .*\\(from ${variable}\\)$`));
    });

    test(`${key}: a bare number in the file is refused, and a value with a unit loads`, () => {
      const file = path.join(dir, `${key}.yaml`);
      writeFileSync(file, yaml(key, '5000'));
      const found = issues(() => loadAgentConfig({ file, host })).filter((i) => i.field === key);
      assert.equal(found.length, 1);
      assert.match(found[0]!.rule, /^"5000" has no unit; .*\(from .*\.yaml\)$/);
      writeFileSync(file, yaml(key, VALID[key] ?? VALID[kind]!));
      assert.deepEqual(issues(() => loadAgentConfig({ file, host })), []);
    });
  }
});
