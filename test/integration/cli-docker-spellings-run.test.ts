import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PassThrough } from 'node:stream';
import { after, describe, test } from 'node:test';
import type { Command } from 'commander';
import { NO_INTERRUPTS } from '../../src/cli/interrupts.js';
import { buildProgram } from '../../src/cli/main.js';
import { cleanEnv, runBerth, tempDirs } from '../support/agent.js';
import { requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

/**
 * Docker's spellings of issue 12 in `berth run`, through the real binary against the real engine:
 * --rm, -v/--volume, --env-file and --pull; and every command's --help as the binary prints it,
 * which is the command tree test/unit/cli/help-matches-parser.test.ts checks against the parser.
 */

const engine = testEngine();
const run = testRun(engine);
const RUN_LABEL = run.labelFilter;
const dirs = tempDirs();
const volumes: string[] = [];

after(async () => {
  await run.cleanup();
  await Promise.all(volumes.map((name) => engine.removeVolume(name).catch(() => undefined)));
  await dirs.removeAll();
});

/** `berth run` with this run's label, no agent involved. */
const berthRun = (args: string[]): ReturnType<typeof runBerth> => runBerth(['run', '-l', RUN_LABEL, ...args], cleanEnv());

const skip = await requireEngine();

describe('every command\'s --help as the binary prints it', () => {
  test('is the help of the command tree the help test walks, for every command', async () => {
    const io = { stdin: new PassThrough(), stdout: new PassThrough(), stderr: new PassThrough(), env: {}, interrupts: NO_INTERRUPTS };
    // Subcommands (berth group ps) by their whole path.
    const walk = (command: Command, path: readonly string[] = []): Array<{ command: Command; path: string[] }> =>
      command.commands.flatMap((c) => [{ command: c, path: [...path, c.name()] }, ...walk(c, [...path, c.name()])]);
    const commands = walk(buildProgram(io, () => undefined));
    const results = await Promise.all(commands.map(({ path }) => runBerth([...path, '--help'], cleanEnv())));
    commands.forEach(({ command, path }, index) => {
      assert.equal(results[index]!.code, 0, results[index]!.stderr);
      assert.equal(results[index]!.stdout, command.helpInformation(), `berth ${path.join(' ')} --help`);
    });
    const detached = await runBerth(['run', '-d', '--help'], cleanEnv());
    assert.equal(detached.code, 0);
    assert.match(detached.stdout, /^ {2}-d, --detach +submit the task to the agent/m);
  });
});

describe('berth run: docker\'s --rm, -v, --env-file and --pull', { skip }, () => {
  test('--rm is accepted (the container is removed, as by default); with --keep it is a usage error naming both', async () => {
    const ok = await berthRun(['--rm', TEST_IMAGE, 'echo', 'hi']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, 'hi\n');
    assert.deepEqual(await run.leftovers(), []);
    const both = await berthRun(['--rm', '--keep', TEST_IMAGE, 'true']);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /^berth: --rm: cannot be combined with --keep .*\[BERTH_VALIDATION\]$/m);
  });

  test('-v binds a host directory (read-only with :ro), mounts a named volume and an anonymous one', async () => {
    const dir = await dirs.make('berth-v-');
    await writeFile(path.join(dir, 'greeting'), 'hello from the host\n');
    const bind = await berthRun(['-v', `${dir}:/mnt:ro`, TEST_IMAGE, 'sh', '-c', 'cat /mnt/greeting; touch /mnt/x 2>/dev/null && echo writable || echo read-only']);
    assert.equal(bind.code, 0, bind.stderr);
    assert.equal(bind.stdout, 'hello from the host\nread-only\n');
    const rw = await berthRun(['--volume', `${dir}:/mnt`, TEST_IMAGE, 'sh', '-c', 'echo written > /mnt/out']);
    assert.equal(rw.code, 0, rw.stderr);

    const name = `berth-test-${run.id}-vol`;
    volumes.push(name);
    const first = await berthRun(['-v', `${name}:/data`, TEST_IMAGE, 'sh', '-c', 'echo kept > /data/f']);
    assert.equal(first.code, 0, first.stderr);
    const second = await berthRun(['-v', `${name}:/data:ro`, TEST_IMAGE, 'cat', '/data/f']);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout, 'kept\n');

    const anonymous = await berthRun(['-v', '/scratch', TEST_IMAGE, 'sh', '-c', 'grep -q " /scratch " /proc/mounts && echo mounted']);
    assert.equal(anonymous.code, 0, anonymous.stderr);
    assert.equal(anonymous.stdout, 'mounted\n');

    const bad = await berthRun(['-v', 'relative/dir:/data', TEST_IMAGE, 'true']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^berth: -v\/--volume\[0\]: "relative\/dir" is neither an absolute host path nor a volume name/m);
  });

  test('--env-file sets variables from a file, -e overrides it, and a bad line names the file and line', async () => {
    const dir = await dirs.make('berth-env-');
    const file = path.join(dir, 'task.env');
    await writeFile(file, '# settings\n\nA=from file\nB=from file\nINHERITED\n');
    const ok = await runBerth(['run', '-l', RUN_LABEL, '--env-file', file, '-e', 'B=from flag', TEST_IMAGE, 'sh', '-c', 'echo "$A|$B|$INHERITED"'], cleanEnv({ INHERITED: 'from berth' }));
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, 'from file|from flag|from berth\n');
    await writeFile(file, 'A=1\nNOT VALID=2\n');
    const bad = await berthRun(['--env-file', file, TEST_IMAGE, 'true']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr, `berth: --env-file: ${file}:2: variable name "NOT VALID" contains whitespace [BERTH_VALIDATION]\n`);
    // Through bin/berth.js, the command users run: node must leave a missing --env-file to berth (nodejs/node#54232).
    const bin = spawn(fileURLToPath(new URL('../../bin/berth.js', import.meta.url)), ['run', '--env-file', path.join(dir, 'nope.env'), TEST_IMAGE, 'true'], { stdio: ['ignore', 'ignore', 'pipe'], env: cleanEnv() });
    let binErr = '';
    bin.stderr.setEncoding('utf8').on('data', (d: string) => (binErr += d));
    const [binCode] = (await once(bin, 'close')) as [number | null];
    assert.equal(binCode, 2, binErr);
    assert.match(binErr, /^berth: --env-file: cannot read .*nope\.env \(ENOENT\) \[BERTH_VALIDATION\]$/m);
  });

  test('--pull takes missing, always or never; anything else is refused naming those three', async () => {
    const missing = await berthRun(['--pull', 'missing', TEST_IMAGE, 'true']);
    assert.equal(missing.code, 0, missing.stderr);
    const never = await berthRun(['--pull', 'never', `berth-test/no-such-image-${run.id}:1`, 'true']);
    assert.notEqual(never.code, 0);
    const old = await berthRun(['--pull', 'if-not-present', TEST_IMAGE, 'true']);
    assert.equal(old.code, 2);
    assert.equal(old.stderr, 'berth: --pull: "if-not-present" is not a pull policy: use missing (the default), always or never [BERTH_VALIDATION]\n');
    const help = await runBerth(['run', '--help'], cleanEnv());
    assert.match(help.stdout, /--pull <policy> +pull the image: missing/);
  });
});

