import type { Command } from 'commander';
import type { Writable } from 'node:stream';
import { BerthError, ValidationError } from '../common/errors.js';
import { engineOptionsFromEnv } from '../engine/connect.js';
import { Engine } from '../engine/engine.js';
import type { StatsSample } from '../engine/types.js';
import { LABELS } from '../common/labels.js';
import { TASK_ID } from '../tasks/driver.js';
import { findRunningTaskContainer } from '../tasks/exec.js';
import { exitCodeForError } from './exit-codes.js';
import { endedByUser } from './interrupts.js';
import { errorLine } from './output.js';
import type { CliIo } from './run.js';
import { formatStatsLine, redrawFrame, renderStatsTable, STATS_HEADERS, statsCells, statsLineWidths, statsRecord } from './stats-format.js';

/**
 * `berth stats [options] <task-id...>`: the resource use of tasks' running containers, as
 * `docker stats` shows it, straight from the engine (each container is found by its task id label,
 * so it works for tasks of `berth run --name`, of an agent and of the library alike; `--owner` picks
 * the owner when several have a task of that id).
 *
 * It streams until every task's container has stopped; on a terminal it redraws one table in place,
 * otherwise it prints a line per sample (`--json`: one JSON object per line). `--no-stream` prints
 * one sample per task. Exit codes: 0 when the streams ended, and on Ctrl-C — as current docker
 * stats does, since ending the display is how one leaves it, not a failure; 143 on SIGTERM; 125 when berth refuses
 * a task (not berth's container, no container, not running: the same refusals as `berth exec`) or
 * the engine fails; 2 for a usage error.
 */

export interface StatsFlags {
  /** False with `--no-stream`. */
  stream: boolean;
  json?: boolean;
  /** The owner whose tasks these are (`cli` for `berth run`, an agent's id), when several owners use one task id. */
  owner?: string;
}

/** The action named when a task is refused for not running: "cannot read the stats of task …". */
const STATS_ACTION = 'read the stats of';

interface StatsTask {
  taskId: string;
  ownerId?: string;
  containerId: string;
}

/** Where samples go while streaming. */
interface StatsView {
  start(): void;
  show(task: StatsTask, sample: StatsSample): void;
}

export function addStatsCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  program
    .command('stats')
    .description('Display a live stream of the resource use of tasks\' running containers')
    .argument('<task-id...>', 'the tasks (found by their io.berth.task-id label)')
    .option('--owner <owner-id>', 'the owner of the tasks (cli for berth run, an agent\'s id), when several owners have a task of that id')
    .option('--no-stream', 'print one sample per task and exit')
    .option('--json', 'print one JSON object per sample per line, for scripts')
    .action(async (taskIds: string[], flags: StatsFlags) => {
      setExitCode(await statsCommand(taskIds, flags, io));
    });
}

async function statsCommand(taskIds: string[], flags: StatsFlags, io: CliIo): Promise<number> {
  // Once each, in the order given (docker stats does the same with a repeated name).
  const ids = [...new Set(taskIds)];
  // A usage error is reported before the engine is asked anything.
  const malformed = ids.filter((id) => !TASK_ID.test(id));
  if (malformed.length > 0) throw new ValidationError(malformed.map((id) => ({ field: 'task-id', rule: `"${id}" must match ${TASK_ID.source}` })));
  const engine = new Engine(engineOptionsFromEnv(io.env));
  const interrupt = new AbortController();
  const interrupted = new Promise<'interrupted'>((resolve) => interrupt.signal.addEventListener('abort', () => resolve('interrupted'), { once: true }));
  const removeInterrupt = io.interrupts.onInterrupt(() => interrupt.abort());
  // A reader that went away (`berth stats --json t | head -1`) ends the display as Ctrl-C does.
  const onOutputError = (): void => interrupt.abort();
  io.stdout.once('error', onOutputError);
  try {
    await engine.checkCompatible({ signal: interrupt.signal });
    const found = await Promise.allSettled(ids.map((taskId) => findRunningTaskContainer(engine, { taskId, ownerId: flags.owner }, interrupt.signal, STATS_ACTION)));
    if (interrupt.signal.aborted) return endedByUser(io);
    const tasks: StatsTask[] = [];
    const refusals: unknown[] = [];
    found.forEach((result, index) => {
      // The task's whole id (what was typed may be a prefix of it), as its container's label gives it.
      if (result.status === 'fulfilled') tasks.push({ taskId: result.value.labels[LABELS.taskId] ?? ids[index]!, ownerId: flags.owner, containerId: result.value.id });
      else refusals.push(result.reason);
    });
    if (refusals.length > 0) {
      // Every refused task gets its line, so that one run names all that is wrong.
      for (const refusal of refusals) io.stderr.write(`${errorLine(refusal)}\n`);
      return exitCodeForError(refusals[0]);
    }
    const work = flags.stream ? streamStats(engine, tasks, pickView(io.stdout, tasks, flags.json ?? false), interrupt.signal) : printOneSample(engine, tasks, io.stdout, flags.json ?? false, interrupt.signal);
    // After Ctrl-C nobody awaits it; its failure then is no news.
    work.catch(() => undefined);
    await Promise.race([work, interrupted]);
    return endedByUser(io);
  } catch (error) {
    if (interrupt.signal.aborted) return endedByUser(io);
    throw error;
  } finally {
    removeInterrupt();
    io.stdout.off('error', onOutputError);
  }
}

function pickView(stdout: Writable, tasks: readonly StatsTask[], json: boolean): StatsView {
  if (json) return { start: () => undefined, show: (task, sample) => void stdout.write(`${JSON.stringify(statsRecord(task.taskId, task.containerId, sample))}\n`) };
  if ((stdout as Partial<NodeJS.WriteStream>).isTTY) {
    const latest = new Map<string, StatsSample | undefined>(tasks.map((task) => [task.taskId, undefined]));
    const redraw = (): void => void stdout.write(redrawFrame(renderStatsTable([...latest].map(([taskId, sample]) => ({ taskId, sample })))));
    return {
      start: redraw,
      show: (task, sample) => {
        latest.set(task.taskId, sample);
        redraw();
      },
    };
  }
  const widths = statsLineWidths(tasks.map((task) => task.taskId));
  return {
    start: () => void stdout.write(formatStatsLine(STATS_HEADERS, widths)),
    show: (task, sample) => void stdout.write(formatStatsLine(statsCells(task.taskId, sample), widths)),
  };
}

/**
 * Follows every task's samples until its container stops (the engine then ends its stream) or
 * `signal` aborts. One stream failing ends the others and rejects with its error.
 */
async function streamStats(engine: Engine, tasks: readonly StatsTask[], view: StatsView, signal: AbortSignal): Promise<void> {
  const streams = new AbortController();
  const endStreams = (): void => streams.abort();
  signal.addEventListener('abort', endStreams, { once: true });
  view.start();
  try {
    await Promise.all(
      tasks.map(async (task) => {
        try {
          for await (const sample of engine.streamStats(task.containerId, { signal: streams.signal })) view.show(task, sample);
        } catch (error) {
          streams.abort();
          throw error;
        }
      }),
    );
  } finally {
    signal.removeEventListener('abort', endStreams);
    streams.abort();
  }
}

/** `--no-stream`: one sample per task, printed together once every task has one. */
async function printOneSample(engine: Engine, tasks: readonly StatsTask[], stdout: Writable, json: boolean, signal: AbortSignal): Promise<void> {
  const samples = await Promise.all(tasks.map((task) => oneSample(engine, task, signal)));
  if (signal.aborted) return;
  if (json) {
    tasks.forEach((task, index) => stdout.write(`${JSON.stringify(statsRecord(task.taskId, task.containerId, samples[index]!))}\n`));
  } else {
    stdout.write(renderStatsTable(tasks.map((task, index) => ({ taskId: task.taskId, sample: samples[index] }))));
  }
}

/**
 * The first sample of a task that measures CPU over an interval. The engine's first reading of a
 * stream has no previous one (its CPU % would span the container's whole life), so this waits for
 * the second, as the engine itself does for docker's --no-stream; the first serves only when the
 * container stops before a second comes. Undefined once `signal` aborted.
 */
async function oneSample(engine: Engine, task: StatsTask, signal: AbortSignal): Promise<StatsSample | undefined> {
  let first: StatsSample | undefined;
  // Leaving the loop early closes the engine's stream.
  for await (const sample of engine.streamStats(task.containerId, { signal })) {
    if (sample.previousAt !== undefined) return sample;
    first ??= sample;
  }
  if (signal.aborted || first !== undefined) return first;
  // No sample at all: the container stopped between the check and the stream; say so as the check does.
  await findRunningTaskContainer(engine, task, signal, STATS_ACTION);
  throw new BerthError('BERTH_TASK_STATE', `the engine ended the stats of task ${task.taskId} without a sample (its container may have restarted)`, {
    context: { taskId: task.taskId, containerId: task.containerId },
  });
}
