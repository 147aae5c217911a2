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
import { displayTaskId, errorLine, renderTable } from './output.js';
import type { CliIo } from './run.js';
import { formatStatsLine, redrawFrame, STATS_HEADERS, statsCells, statsLineWidths, statsRecord } from './stats-format.js';
import { FORMAT_HELP, parseFormat, renderFormatted, STATS_FIELDS, statsFormatRow, type OutputFormat } from './format.js';

/**
 * `berth stats [options] [task-id...]`: the resource use of tasks' running containers (with no ids, of
 * every task running now), as
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
  /** False with `--no-trunc`: ids in full. */
  trunc?: boolean;
  format?: string;
}

/** How samples are printed: `--json` (berth's numbers), or `--format` (table, json or a template), ids cut or not. */
interface StatsOutput {
  json: boolean;
  format: OutputFormat;
  noTrunc: boolean;
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
    .argument('[task-id...]', 'the tasks (found by their io.berth.task-id label); none: every task running now')
    .option('--owner <owner-id>', 'the owner of the tasks (cli for berth run, an agent\'s id), when several owners have a task of that id')
    .option('--no-stream', 'print one sample per task and exit')
    .option('--no-trunc', 'print task and container ids in full')
    .option('--format <format>', FORMAT_HELP)
    .option('--json', 'print one JSON object per sample per line, with berth\'s numbers, for scripts')
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
  const output: StatsOutput = { json: flags.json ?? false, format: parseFormat(flags.format, STATS_FIELDS), noTrunc: flags.trunc === false };
  const engine = new Engine(engineOptionsFromEnv(io.env));
  const interrupt = new AbortController();
  const interrupted = new Promise<'interrupted'>((resolve) => interrupt.signal.addEventListener('abort', () => resolve('interrupted'), { once: true }));
  const removeInterrupt = io.interrupts.onInterrupt(() => interrupt.abort());
  // A reader that went away (`berth stats --json t | head -1`) ends the display as Ctrl-C does.
  const onOutputError = (): void => interrupt.abort();
  io.stdout.once('error', onOutputError);
  try {
    await engine.checkCompatible({ signal: interrupt.signal });
    if (ids.length === 0) {
      // As docker stats with no names: every task running now (not those that start later).
      const running = await runningTasks(engine, flags.owner, interrupt.signal);
      const work = flags.stream ? streamStats(engine, running, pickView(io.stdout, running, output), interrupt.signal) : printOneSample(engine, running, io.stdout, output, interrupt.signal, true);
      work.catch(() => undefined);
      await Promise.race([work, interrupted]);
      return endedByUser(io);
    }
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
    const work = flags.stream ? streamStats(engine, tasks, pickView(io.stdout, tasks, output), interrupt.signal) : printOneSample(engine, tasks, io.stdout, output, interrupt.signal);
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

/** The running containers of berth's tasks (of one owner with --owner), oldest first. */
async function runningTasks(engine: Engine, ownerId: string | undefined, signal: AbortSignal): Promise<StatsTask[]> {
  const labels = [`${LABELS.managed}=true`, LABELS.taskId, ...(ownerId === undefined ? [] : [`${LABELS.ownerId}=${ownerId}`])];
  const rows = await engine.listContainers({ all: false, labels }, { signal });
  return rows
    .filter((row) => row.state === 'running' && row.labels[LABELS.taskId] !== undefined)
    .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime())
    .map((row) => ({ taskId: row.labels[LABELS.taskId]!, ownerId: row.labels[LABELS.ownerId], containerId: row.id }));
}

/** A sample (or none yet) as the output asks: a table row's cells, or a `--format` row. */
function cellsOf(task: StatsTask, sample: StatsSample | undefined, output: StatsOutput): string[] {
  const cells = statsCells(task.taskId, sample);
  cells[0] = displayTaskId(task.taskId, output.noTrunc);
  return cells;
}

function formattedLine(task: StatsTask, sample: StatsSample, output: StatsOutput): string {
  const format = output.format as Exclude<OutputFormat, { kind: 'table' }>;
  const row = statsFormatRow(task.taskId, task.containerId, statsCells(task.taskId, sample), output.noTrunc);
  return renderFormatted(format.kind === 'template' ? { ...format, table: false } : format, [row]);
}

function pickView(stdout: Writable, tasks: readonly StatsTask[], output: StatsOutput): StatsView {
  if (output.json) return { start: () => undefined, show: (task, sample) => void stdout.write(`${JSON.stringify(statsRecord(task.taskId, task.containerId, sample))}\n`) };
  const format = output.format;
  if (format.kind === 'json' || format.kind === 'template') {
    // A stream cannot align columns to rows yet to come: a table template prints its header once, then tab-separated lines.
    const header = format.kind === 'template' && format.table ? `${format.headers.join('\t')}\n` : '';
    return { start: () => void stdout.write(header), show: (task, sample) => void stdout.write(formattedLine(task, sample, output)) };
  }
  if ((stdout as Partial<NodeJS.WriteStream>).isTTY) {
    const latest = new Map<StatsTask, StatsSample | undefined>(tasks.map((task) => [task, undefined]));
    const redraw = (): void => void stdout.write(redrawFrame(renderTable(STATS_HEADERS, [...latest].map(([task, sample]) => cellsOf(task, sample, output)))));
    return {
      start: redraw,
      show: (task, sample) => {
        latest.set(task, sample);
        redraw();
      },
    };
  }
  const widths = statsLineWidths(tasks.map((task) => displayTaskId(task.taskId, output.noTrunc)));
  return {
    start: () => void stdout.write(formatStatsLine(STATS_HEADERS, widths)),
    show: (task, sample) => void stdout.write(formatStatsLine(cellsOf(task, sample, output), widths)),
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

/**
 * `--no-stream`: one sample per task, printed together once every task has one. `dropVanished` (stats
 * with no ids, of whatever runs): a task whose container stopped between the list and its sample is
 * left out, as docker stats leaves it out; a task named by the user fails the command instead.
 */
async function printOneSample(engine: Engine, listed: readonly StatsTask[], stdout: Writable, output: StatsOutput, signal: AbortSignal, dropVanished = false): Promise<void> {
  let tasks = listed;
  let samples: Array<StatsSample | undefined>;
  if (dropVanished) {
    const settled = await Promise.allSettled(listed.map((task) => oneSample(engine, task, signal)));
    tasks = listed.filter((_, index) => settled[index]!.status === 'fulfilled');
    samples = settled.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  } else {
    samples = await Promise.all(listed.map((task) => oneSample(engine, task, signal)));
  }
  if (signal.aborted) return;
  if (output.json) {
    tasks.forEach((task, index) => stdout.write(`${JSON.stringify(statsRecord(task.taskId, task.containerId, samples[index]!))}\n`));
  } else if (output.format.kind !== 'table') {
    const rows = tasks.map((task, index) => statsFormatRow(task.taskId, task.containerId, statsCells(task.taskId, samples[index]), output.noTrunc));
    stdout.write(renderFormatted(output.format, rows));
  } else {
    stdout.write(renderTable(STATS_HEADERS, tasks.map((task, index) => cellsOf(task, samples[index], output))));
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
