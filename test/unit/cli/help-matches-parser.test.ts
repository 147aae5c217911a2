import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import type { Command } from 'commander';
import { NO_INTERRUPTS } from '../../../src/cli/interrupts.js';
import { buildProgram } from '../../../src/cli/main.js';
import { parseDetachedRun } from '../../../src/cli/submit.js';

/**
 * `--help` against the parser, for every command of the program the binary runs (buildProgram):
 * each flag the help lists is accepted (no "unknown option"), and each option the parser accepts
 * is listed. Options hidden on purpose would be named here with the reason; there are none.
 */

const HIDDEN_ON_PURPOSE: ReadonlySet<string> = new Set();

const io = () => ({ stdin: new PassThrough(), stdout: new PassThrough(), stderr: new PassThrough(), env: {}, interrupts: NO_INTERRUPTS });

export interface HelpFlag {
  /** `-m` and `--memory`, as the help lists them. */
  names: string[];
  /** Whether the help shows a value (`<size>`). */
  takesValue: boolean;
}

/** The flags an "Options:" section of commander's help lists. */
export function helpFlags(help: string): HelpFlag[] {
  const section = help.split('\nOptions:\n')[1]?.split(/\n\S/)[0] ?? '';
  const flags: HelpFlag[] = [];
  for (const line of section.split('\n')) {
    if (!/^ {2}-/.test(line)) continue;
    const term = line.trim().split(/\s{2,}/)[0]!;
    const match = /^((?:-{1,2}[\w-]+)(?:, -{1,2}[\w-]+)*)(?: ([<[].*[>\]]))?$/.exec(term);
    assert.ok(match, `cannot read the help line "${line}"`);
    flags.push({ names: match[1]!.split(', '), takesValue: match[2] !== undefined });
  }
  return flags;
}

function allCommands(program: Command): Command[] {
  return program.commands.flatMap((command) => [command, ...allCommands(command)]);
}

/** A command's path below the program, e.g. `group run` (two commands may share a name). */
function pathOf(command: Command): string {
  const names: string[] = [];
  for (let at: Command | null = command; at?.parent; at = at.parent) names.unshift(at.name());
  return names.join(' ');
}

const isHelpOrVersion = (flag: HelpFlag): boolean => flag.names.includes('--help') || flag.names.includes('--version');

describe('every command\'s --help against its parser', () => {
  const program = buildProgram(io(), () => undefined);
  const commands = allCommands(program);

  test('the program has the commands the README documents', () => {
    assert.deepEqual(commands.map(pathOf).sort(), ['agent', 'attach', 'context', 'context ls', 'cp', 'events', 'exec', 'group', 'group inspect', 'group logs', 'group ps', 'group rm', 'group run', 'group stop', 'images', 'inspect', 'kill', 'logs', 'nodes', 'pause', 'prune', 'ps', 'rm', 'run', 'stats', 'stop', 'submit', 'unpause', 'wait'].sort());
  });

  // A command that only holds subcommands (`group`) has no options of its own: its subcommands are checked.
  for (const command of commands.filter((c) => c.commands.length === 0)) {
    test(`${pathOf(command)}: each flag in its help is accepted by its parser`, () => {
      const flags = helpFlags(command.helpInformation()).filter((flag) => !isHelpOrVersion(flag));
      // A command that only holds subcommands (`group`) has none of its own.
      assert.ok(flags.length > 0 || command.commands.length > 0, 'every command has options');
      for (const flag of flags) {
        for (const name of flag.names) {
          // parseOptions runs no action: only the parser says whether it knows the flag.
          const fresh = allCommands(buildProgram(io(), () => undefined)).find((c) => pathOf(c) === pathOf(command))!;
          const choice = fresh.options.find((o) => o.short === name || o.long === name)?.argChoices?.[0] ?? '1';
          const parsed = fresh.parseOptions([name, ...(flag.takesValue ? [choice] : [])]);
          assert.deepEqual(parsed.unknown, [], `${command.name()} ${name}: listed in --help but refused as an unknown option`);
        }
      }
    });

    test(`${pathOf(command)}: each option its parser accepts is in its help`, () => {
      const listed = new Set(helpFlags(command.helpInformation()).flatMap((flag) => flag.names));
      for (const option of command.options) {
        const names = [option.short, option.long].filter((name): name is string => name !== undefined);
        if (option.hidden) {
          assert.ok(HIDDEN_ON_PURPOSE.has(option.long ?? ''), `${command.name()} ${option.flags} is hidden without a reason`);
          continue;
        }
        for (const name of names) assert.ok(listed.has(name), `${command.name()} accepts ${name}, which its --help does not list`);
      }
    });
  }

  test('run -d/--detach, handled before the program parses (runDetached), accepts every flag run\'s help lists', async () => {
    const run = commands.find((c) => c.name() === 'run')!;
    const flags = helpFlags(run.helpInformation()).filter((flag) => !isHelpOrVersion(flag));
    assert.ok(flags.some((flag) => flag.names.includes('-d') && flag.names.includes('--detach')), 'run --help lists -d, --detach');
    for (const flag of flags) {
      for (const name of flag.names) {
        for (const detach of ['-d', '--detach']) {
          const argv = ['run', detach, name, ...(flag.takesValue ? ['1'] : []), 'busybox', 'true'];
          const parsed = await parseDetachedRun(argv, io());
          assert.ok(parsed, `berth ${argv.join(' ')} is not taken as a detached run`);
          assert.equal(parsed.image, 'busybox');
        }
      }
    }
  });

  test('a flag no help lists is refused as an unknown option, by the program and by run -d', async () => {
    for (const command of commands) {
      const fresh = allCommands(buildProgram(io(), () => undefined)).find((c) => pathOf(c) === pathOf(command))!;
      assert.deepEqual(fresh.parseOptions(['--no-such-flag']).unknown, ['--no-such-flag'], command.name());
    }
    assert.equal(await parseDetachedRun(['run', '-d', '--no-such-flag', 'busybox'], io()), undefined);
  });
});
