import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { parse as parseYaml } from 'yaml';
import { isBerthError, messageOf, ValidationError } from '../common/errors.js';
import { cliEngine } from './engine-choice.js';
import { GroupRunner, type GroupHandle } from '../groups/runner.js';
import type { GroupEnd } from '../groups/lifecycle.js';
import type { ResolvedGroupSpec } from '../spec/group.js';
import { TaskDriver } from '../tasks/driver.js';
import { commandFailureOf } from '../engine/classify.js';
import { commandFailureLine, EXIT, exitCodeForGroupEnd } from './exit-codes.js';
import { parseLabelFlags } from './flags.js';
import { exitCodeForSignal } from './interrupts.js';
import { errorLine, formatPublishedPort } from './output.js';
import { linePrefixes, PrefixedLines } from './prefixed-output.js';
import { oneShotImages } from './progress.js';
import type { CliIo } from './run.js';

/** `berth group run`'s flags; more modes (e.g. detached, through an agent) add theirs here. */
export interface GroupRunFlags {
  /** The group file: YAML or JSON; `-` reads stdin. */
  file: string;
  /** `-l KEY=VALUE`: labels on every container, volume and network of the group. */
  label: string[];
}

/** Reads a group file (or stdin for `-`) and parses it as YAML, of which JSON is a part. */
export async function readGroupFile(file: string, stdin: Readable): Promise<unknown> {
  let text: string;
  try {
    text = file === '-' ? await readStream(stdin) : await readFile(file, 'utf8');
  } catch (error) {
    throw new ValidationError([{ field: '-f/--file', rule: `cannot be read: ${messageOf(error)}` }]);
  }
  try {
    return parseYaml(text) as unknown;
  } catch (error) {
    throw new ValidationError([{ field: '-f/--file', rule: `is not YAML or JSON: ${messageOf(error)}` }]);
  }
}

async function readStream(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Runs a group in the foreground on the engine: its tasks' output on stdout and stderr, each line
 * prefixed by its task's name; the published ports on stderr once it runs. The first Ctrl-C (or
 * SIGTERM) stops the group and removes everything; exits with the group's end (the deciding main
 * task's exit code), 125 when it could not start, or the signal's code after a signal.
 */
export async function groupRunForeground(flags: GroupRunFlags, io: CliIo): Promise<number> {
  const document = await readGroupFile(flags.file, io.stdin);
  const labels = parseLabelFlags(flags.label);
  const engine = await cliEngine(io);
  const images = oneShotImages(engine, io);
  // The person at the terminal is the caller, as for berth run: what they ask for explicitly is allowed.
  const driver = new TaskDriver({ engine, ownerId: 'cli', ownerProcess: 'self', policy: { allowPrivileged: true, allowEngineSocket: true }, images });
  const runner = new GroupRunner({ driver, engine, labels });
  const spec: ResolvedGroupSpec = driver.resolveGroup(document);
  await engine.checkCompatible();

  const names = spec.tasks.map((t) => t.name);
  const prefixes = linePrefixes(names, (io.stdout as Partial<NodeJS.WriteStream>).isTTY === true);
  const output = (task: string) => ({ stdout: new PrefixedLines(io.stdout, prefixes.get(task) ?? ''), stderr: new PrefixedLines(io.stderr, prefixes.get(task) ?? '') });
  const abort = new AbortController();
  let group: GroupHandle | undefined;
  let removed = false;
  io.interrupts.extendBound(Math.max(...spec.tasks.map((t) => t.spec.stopGraceMs)));
  const removeInterrupt = io.interrupts.onInterrupt((signal) => {
    if (signal === 'SIGINT') io.stderr.write(`berth: ${group ? 'stopping the group' : 'cancelling the start'}; press Ctrl-C again to exit now and leave its containers to berth prune or an agent\n`);
    if (group) void group.stop();
    abort.abort();
  });
  const removeLeaving = io.interrupts.leaving(() => {
    if (removed) return undefined;
    return group ? `the containers, volume and network of group ${group.id}, for berth prune or an agent's reconciler to remove` : 'what the group\'s start made, for berth prune or an agent\'s reconciler to remove';
  });
  try {
    group = await runner.start(document, { signal: abort.signal, output });
    const ports = await group.ports().catch(() => []);
    if (ports.length > 0) io.stderr.write(`berth: group ${group.id} publishes ${ports.map(formatPublishedPort).join(', ')}\n`);
    const end = await group.wait();
    removed = true;
    const signal = io.interrupts.received;
    const exitCode = end.kind === 'cancelled' && signal !== undefined ? exitCodeForSignal(signal) : exitCodeForGroupEnd(end);
    // A main task's own exit code needs no words; any other end says what happened.
    if (end.kind !== 'success' && !(end.kind === 'failed' && end.reason === undefined)) {
      io.stderr.write(`berth: group ${group.id} ${describeGroupEnd(end)}; exiting ${exitCode}\n`);
    }
    return exitCode;
  } catch (error) {
    const signal = io.interrupts.received;
    if (signal !== undefined) {
      io.stderr.write(isBerthError(error, 'BERTH_CANCELLED') ? 'berth: cancelled\n' : `${errorLine(error)}\n`);
      return exitCodeForSignal(signal);
    }
    if (error instanceof ValidationError) throw error;
    const commandFailure = commandFailureOf(error);
    if (commandFailure) {
      io.stderr.write(`${commandFailureLine(commandFailure)}\n`);
      return commandFailure.exitCode;
    }
    io.stderr.write(`${errorLine(error)}\n`);
    return EXIT.berthFailure;
  } finally {
    try {
      await group?.wait();
      removed = true;
      await driver.settled();
      await images.close();
    } finally {
      removeLeaving();
      removeInterrupt();
    }
  }
}

/** A group's end in words. */
export function describeGroupEnd(end: GroupEnd): string {
  const by = end.task === undefined ? '' : ` (task ${end.task})`;
  switch (end.kind) {
    case 'success':
      return 'succeeded';
    case 'failed':
      return end.reason !== undefined ? `failed: ${end.reason}` : `failed with exit code ${end.exitCode ?? 'unknown'}${by}`;
    case 'cancelled':
      return 'was stopped';
    case 'lost':
      return `lost${by}: ${end.reason ?? 'the engine could not say how it ended'}`;
    default:
      return `ended ${end.kind}${end.exitCode === undefined ? '' : ` with exit code ${end.exitCode}`}${by}`;
  }
}
