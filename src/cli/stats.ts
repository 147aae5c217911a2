import type { Command } from 'commander';
import type { Writable } from 'node:stream';
import { BerthError, ValidationError } from '../common/errors.js';
import { cliEngine } from './engine-choice.js';
import { Engine } from '../engine/engine.js';
import type { AgentClient, TaskView } from '../agent/client.js';
import { LABELS } from '../common/labels.js';
import { TASK_ID } from '../tasks/driver.js';
import { findRunningTaskContainer } from '../tasks/exec.js';
import { exitCodeForError } from './exit-codes.js';
import { endedByUser } from './interrupts.js';
import { displayTaskId, errorLine, renderTable } from './output.js';
import type { CliIo } from './run.js';
import { formatStatsLine, recordCells, redrawFrame, STATS_HEADERS, statsLineWidths, statsRecord, type StatsRecord } from './stats-format.js';
import { withAgentOptions, type AgentFlags } from './client.js';
import { routeAllTasks, routeTask } from './task-route.js';
import { FORMAT_HELP, parseFormat, renderFormatted, STATS_FIELDS, statsFormatRow, type OutputFormat } from './format.js';

/**
 * `berth stats [options] [task-id...]`: the resource use of tasks' running containers (with no ids, of
 * every task running now), as `docker stats` shows it. A task of the agent (the one `-H`/BERTH_HOST
 * names, else the default one when it answers) is read through the agent's API
 * (`GET /v1/tasks/:id/stats`), so that it works from another host and behind its token; with no
 * ids and an agent answering, the agent's running tasks are shown. Any other task is read straight
 * from the engine (its container is found by its task id label, so it works for tasks of `berth run
 * --name` and of the library; `--owner` picks the owner when several have a task of that id).
 *
 * It streams until every task's container has stopped; on a terminal it redraws one table in place,
 * otherwise it prints a line per sample (`--json`: one JSON object per line). `--no-stream` prints
 * one sample per task. Exit codes: 0 when the streams ended, and on Ctrl-C — as current docker
 * stats does, since ending the display is how one leaves it, not a failure; 143 on SIGTERM; 125 when berth refuses
 * a task (not berth's container, no container, not running: the same refusals as `berth exec`) or
 * the engine fails; 2 for a usage error.
 */

export interface StatsFlags extends AgentFlags {
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
  containerId: string;
  /** The task's samples, from the engine or through the agent; `stream` false: one. */
  samples(stream: boolean, signal: AbortSignal): AsyncIterable<StatsRecord>;
}

/** Where samples go while streaming. */
interface StatsView {
  start(): void;
  show(task: StatsTask, record: StatsRecord): void;
}

export function addStatsCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  withAgentOptions(program.command('stats'))
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
  const interrupt = new AbortController();
  const interrupted = new Promise<'interrupted'>((resolve) => interrupt.signal.addEventListener('abort', () => resolve('interrupted'), { once: true }));
  const removeInterrupt = io.interrupts.onInterrupt(() => interrupt.abort());
  // A reader that went away (`berth stats --json t | head -1`) ends the display as Ctrl-C does.
  const onOutputError = (): void => interrupt.abort();
  io.stdout.once('error', onOutputError);
  const clients: AgentClient[] = [];
  // The engine is asked only when a task is not the agent's: checked once, when first needed.
  let engineReady: Promise<Engine> | undefined;
  const engine = (): Promise<Engine> => {
    engineReady ??= (async () => {
      const created = await cliEngine(io);
      await created.checkCompatible({ signal: interrupt.signal });
      return created;
    })();
    return engineReady;
  };
  try {
    if (ids.length === 0) {
      // As docker stats with no names: every task running now (not those that start later).
      const route = await routeAllTasks(io, flags);
      let running: StatsTask[];
      if (route.via === 'agent') {
        clients.push(route.client);
        running = route.running.filter((task) => task.containerId !== undefined).map((task) => agentTask(route.client, task));
      } else {
        running = await runningTasks(await engine(), flags.owner, interrupt.signal);
      }
      const work = flags.stream ? streamStats(running, pickView(io.stdout, running, output), interrupt.signal) : printOneSample(running, io.stdout, output, interrupt.signal, true);
      work.catch(() => undefined);
      await Promise.race([work, interrupted]);
      return endedByUser(io);
    }
    const found = await Promise.allSettled(
      ids.map(async (taskId): Promise<StatsTask> => {
        const route = await routeTask(io, flags, taskId);
        if (route.via === 'agent') {
          clients.push(route.client);
          return agentTask(route.client, runningAgentTask(route.task));
        }
        const container = await findRunningTaskContainer(await engine(), { taskId, ownerId: flags.owner }, interrupt.signal, STATS_ACTION);
        // The task's whole id (what was typed may be a prefix of it), as its container's label gives it.
        return engineTask(await engine(), { taskId: container.labels[LABELS.taskId] ?? taskId, ownerId: flags.owner, containerId: container.id });
      }),
    );
    if (interrupt.signal.aborted) return endedByUser(io);
    const tasks: StatsTask[] = [];
    const refusals: unknown[] = [];
    for (const result of found) {
      if (result.status === 'fulfilled') tasks.push(result.value);
      else refusals.push(result.reason);
    }
    if (refusals.length > 0) {
      // Every refused task gets its line, so that one run names all that is wrong.
      for (const refusal of refusals) io.stderr.write(`${errorLine(refusal)}\n`);
      return exitCodeForError(refusals[0]);
    }
    const work = flags.stream ? streamStats(tasks, pickView(io.stdout, tasks, output), interrupt.signal) : printOneSample(tasks, io.stdout, output, interrupt.signal);
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
    for (const client of clients) client.close();
  }
}

/** An agent's task, if it is running (the same refusal as the engine path's for one that is not). */
function runningAgentTask(task: TaskView): TaskView & { containerId: string } {
  if (task.state !== 'running' || task.containerId === undefined) {
    throw new BerthError('BERTH_TASK_STATE', `cannot ${STATS_ACTION} task ${task.id}: it is ${task.state}`, { context: { taskId: task.id, state: task.state } });
  }
  return task as TaskView & { containerId: string };
}

/** A task of the agent: its samples come through the agent's API, which takes the one sample of --no-stream itself. */
function agentTask(client: AgentClient, task: TaskView): StatsTask {
  return { taskId: task.id, containerId: task.containerId ?? '', samples: (stream, signal) => client.stats(task.id, { stream, signal }) };
}

/** A task read straight from the engine. */
function engineTask(engine: Engine, task: { taskId: string; ownerId?: string; containerId: string }): StatsTask {
  return {
    taskId: task.taskId,
    containerId: task.containerId,
    samples: async function* (stream, signal) {
      if (!stream) {
        const sample = await oneSample(engine, task, signal);
        if (sample !== undefined) yield sample;
        return;
      }
      for await (const sample of engine.streamStats(task.containerId, { signal })) yield statsRecord(task.taskId, task.containerId, sample);
    },
  };
}

/** The running containers of berth's tasks (of one owner with --owner), oldest first. */
async function runningTasks(engine: Engine, ownerId: string | undefined, signal: AbortSignal): Promise<StatsTask[]> {
  const labels = [`${LABELS.managed}=true`, LABELS.taskId, ...(ownerId === undefined ? [] : [`${LABELS.ownerId}=${ownerId}`])];
  const rows = await engine.listContainers({ all: false, labels }, { signal });
  return rows
    .filter((row) => row.state === 'running' && row.labels[LABELS.taskId] !== undefined)
    .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime())
    .map((row) => engineTask(engine, { taskId: row.labels[LABELS.taskId]!, ownerId: row.labels[LABELS.ownerId], containerId: row.id }));
}

/** A sample (or none yet) as the output asks: a table row's cells, or a `--format` row. */
function cellsOf(task: StatsTask, record: StatsRecord | undefined, output: StatsOutput): string[] {
  const cells = recordCells(task.taskId, record);
  cells[0] = displayTaskId(task.taskId, output.noTrunc);
  return cells;
}

function formattedLine(task: StatsTask, record: StatsRecord, output: StatsOutput): string {
  const format = output.format as Exclude<OutputFormat, { kind: 'table' }>;
  const row = statsFormatRow(task.taskId, task.containerId, recordCells(task.taskId, record), output.noTrunc);
  return renderFormatted(format.kind === 'template' ? { ...format, table: false } : format, [row]);
}

function pickView(stdout: Writable, tasks: readonly StatsTask[], output: StatsOutput): StatsView {
  if (output.json) return { start: () => undefined, show: (_task, record) => void stdout.write(`${JSON.stringify(record)}\n`) };
  const format = output.format;
  if (format.kind === 'json' || format.kind === 'template') {
    // A stream cannot align columns to rows yet to come: a table template prints its header once, then tab-separated lines.
    const header = format.kind === 'template' && format.table ? `${format.headers.join('\t')}\n` : '';
    return { start: () => void stdout.write(header), show: (task, record) => void stdout.write(formattedLine(task, record, output)) };
  }
  if ((stdout as Partial<NodeJS.WriteStream>).isTTY) {
    const latest = new Map<StatsTask, StatsRecord | undefined>(tasks.map((task) => [task, undefined]));
    const redraw = (): void => void stdout.write(redrawFrame(renderTable(STATS_HEADERS, [...latest].map(([task, record]) => cellsOf(task, record, output)))));
    return {
      start: redraw,
      show: (task, record) => {
        latest.set(task, record);
        redraw();
      },
    };
  }
  const widths = statsLineWidths(tasks.map((task) => displayTaskId(task.taskId, output.noTrunc)));
  return {
    start: () => void stdout.write(formatStatsLine(STATS_HEADERS, widths)),
    show: (task, record) => void stdout.write(formatStatsLine(cellsOf(task, record, output), widths)),
  };
}

/**
 * Follows every task's samples until its container stops (the engine, or the agent, then ends its
 * stream) or `signal` aborts. One stream failing ends the others and rejects with its error.
 */
async function streamStats(tasks: readonly StatsTask[], view: StatsView, signal: AbortSignal): Promise<void> {
  const streams = new AbortController();
  const endStreams = (): void => streams.abort();
  signal.addEventListener('abort', endStreams, { once: true });
  view.start();
  try {
    await Promise.all(
      tasks.map(async (task) => {
        try {
          for await (const record of task.samples(true, streams.signal)) view.show(task, record);
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

/** The one sample of a task for --no-stream; undefined when `signal` aborted first. */
async function firstRecord(task: StatsTask, signal: AbortSignal): Promise<StatsRecord | undefined> {
  for await (const record of task.samples(false, signal)) return record;
  if (signal.aborted) return undefined;
  throw new BerthError('BERTH_TASK_STATE', `the stats of task ${task.taskId} ended without a sample (its container stopped)`, { context: { taskId: task.taskId, containerId: task.containerId } });
}

/**
 * `--no-stream`: one sample per task, printed together once every task has one. `dropVanished` (stats
 * with no ids, of whatever runs): a task whose container stopped between the list and its sample is
 * left out, as docker stats leaves it out; a task named by the user fails the command instead.
 */
async function printOneSample(listed: readonly StatsTask[], stdout: Writable, output: StatsOutput, signal: AbortSignal, dropVanished = false): Promise<void> {
  let tasks = listed;
  let records: Array<StatsRecord | undefined>;
  if (dropVanished) {
    const settled = await Promise.allSettled(listed.map((task) => firstRecord(task, signal)));
    tasks = listed.filter((_, index) => settled[index]!.status === 'fulfilled');
    records = settled.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  } else {
    records = await Promise.all(listed.map((task) => firstRecord(task, signal)));
  }
  if (signal.aborted) return;
  if (output.json) {
    records.forEach((record) => stdout.write(`${JSON.stringify(record)}\n`));
  } else if (output.format.kind !== 'table') {
    const rows = tasks.map((task, index) => statsFormatRow(task.taskId, task.containerId, recordCells(task.taskId, records[index]), output.noTrunc));
    stdout.write(renderFormatted(output.format, rows));
  } else {
    stdout.write(renderTable(STATS_HEADERS, tasks.map((task, index) => cellsOf(task, records[index], output))));
  }
}

/**
 * The first sample of a task that measures CPU over an interval. The engine's first reading of a
 * stream has no previous one (its CPU % would span the container's whole life), so this waits for
 * the second, as the engine itself does for docker's --no-stream; the first serves only when the
 * container stops before a second comes. Undefined once `signal` aborted.
 */
async function oneSample(engine: Engine, task: { taskId: string; ownerId?: string; containerId: string }, signal: AbortSignal): Promise<StatsRecord | undefined> {
  let first: StatsRecord | undefined;
  // Leaving the loop early closes the engine's stream.
  for await (const sample of engine.streamStats(task.containerId, { signal })) {
    if (sample.previousAt !== undefined) return statsRecord(task.taskId, task.containerId, sample);
    first ??= statsRecord(task.taskId, task.containerId, sample);
  }
  if (signal.aborted || first !== undefined) return first;
  // No sample at all: the container stopped between the check and the stream; say so as the check does.
  await findRunningTaskContainer(engine, task, signal, STATS_ACTION);
  throw new BerthError('BERTH_TASK_STATE', `the engine ended the stats of task ${task.taskId} without a sample (its container may have restarted)`, {
    context: { taskId: task.taskId, containerId: task.containerId },
  });
}
