import type { Command } from 'commander';
import { ValidationError } from '../common/errors.js';
import { TASK_STATES, UNENDED_STATES, type TaskState } from '../state/tasks.js';
import { END_KINDS, type EndKind } from '../tasks/end-state.js';
import type { ListFilter } from '../agent/client.js';
import { agentCommand, withClient, type AgentFlags } from './client.js';
import { collect } from './flags.js';
import { displayTaskId, renderTaskTable, writeJson } from './output.js';
import { FORMAT_HELP, parseFormat, renderFormatted, TASK_FIELDS, taskFormatRow } from './format.js';
import type { CliIo } from './run.js';

/** The keys `ps --filter` takes. */
export const PS_FILTER_KEYS = ['state', 'status', 'end', 'label', 'health'] as const;

/** The values of `ps --filter health=`: a health status, or `none` (no health check), as docker's. */
export const PS_HEALTH_VALUES = ['starting', 'healthy', 'unhealthy', 'none'] as const;
export type PsHealth = (typeof PS_HEALTH_VALUES)[number];

/** What `ps --filter` selects: states, end kinds, labels and health (each key ORs its values; the keys AND). */
export interface PsFilters {
  state: TaskState[];
  end: EndKind[];
  label: string[];
  health: PsHealth[];
}

/**
 * Whether a task passes `--filter health=`: the agent lists by state, end and label; health is
 * chosen here, from the listed tasks' views.
 */
export function matchesHealth(task: { health?: { status: string } | undefined }, wanted: readonly PsHealth[]): boolean {
  return wanted.length === 0 || wanted.includes((task.health?.status ?? 'none') as PsHealth);
}

/**
 * `--filter state=running`, `--filter end=oom`, `--filter label=k=v`, as docker ps spells them
 * (`status` is docker's name for state). An unknown key or value is refused, naming what is allowed.
 */
export function parsePsFilters(values: readonly string[]): PsFilters {
  const filters: PsFilters = { state: [], end: [], label: [], health: [] };
  values.forEach((value, index) => {
    const field = `--filter[${index}]`;
    const eq = value.indexOf('=');
    const key = eq < 0 ? value : value.slice(0, eq);
    const rest = eq < 0 ? '' : value.slice(eq + 1);
    if (key === 'state' || key === 'status') {
      if (!(TASK_STATES as readonly string[]).includes(rest)) throw new ValidationError([{ field, rule: `${key} must be one of ${TASK_STATES.join(', ')}; got "${rest}"` }]);
      filters.state.push(rest as TaskState);
    } else if (key === 'end') {
      if (!(END_KINDS as readonly string[]).includes(rest)) throw new ValidationError([{ field, rule: `end must be one of ${END_KINDS.join(', ')}; got "${rest}"` }]);
      filters.end.push(rest as EndKind);
    } else if (key === 'health') {
      if (!(PS_HEALTH_VALUES as readonly string[]).includes(rest)) throw new ValidationError([{ field, rule: `health must be one of ${PS_HEALTH_VALUES.join(', ')}; got "${rest}"` }]);
      filters.health.push(rest as PsHealth);
    } else if (key === 'label') {
      if (rest === '') throw new ValidationError([{ field, rule: 'label needs a key: label=key or label=key=value' }]);
      filters.label.push(rest);
    } else {
      throw new ValidationError([{ field, rule: `unknown filter key "${key}"; the keys are ${PS_FILTER_KEYS.join(', ')} (state=<state>, end=<${END_KINDS.join('|')}>, label=<key>[=<value>], health=<${PS_HEALTH_VALUES.join('|')}>)` }]);
    }
  });
  return filters;
}

/** The flags of `berth ps` that choose the tasks. */
export interface PsSelection {
  all?: boolean;
  filter: readonly string[];
  last?: string;
  latest?: boolean;
}

/**
 * What `berth ps` asks the agent for: newest first; without -a only tasks that have not ended,
 * unless a filter names states or end kinds, or -n/-l asks for the newest tasks (which, as
 * docker's, includes every state).
 */
export function psListFilter(flags: PsSelection): ListFilter {
  const filters = parsePsFilters(flags.filter);
  let limit: number | undefined;
  if (flags.last !== undefined) {
    if (!/^(0|[1-9][0-9]*)$/.test(flags.last.trim())) throw new ValidationError([{ field: '-n/--last', rule: `must be a whole number, 0 or more; got "${flags.last}"` }]);
    limit = Number(flags.last.trim());
  }
  if (flags.latest) limit = limit === undefined ? 1 : Math.min(limit, 1);
  const everyState = flags.all === true || limit !== undefined || filters.end.length > 0;
  const state = filters.state.length > 0 ? filters.state : everyState ? undefined : UNENDED_STATES;
  return {
    ...(state ? { state } : {}),
    ...(filters.end.length > 0 ? { end: filters.end } : {}),
    label: filters.label,
    order: 'newest-first',
    ...(limit !== undefined ? { limit } : {}),
  };
}

/** `berth ps`: the agent's tasks, newest first, as a table, ids or JSON. */
export function addPsCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
  agentCommand(program, 'ps', 'List tasks that have not ended, newest first (-a: all)')
    .option('-a, --all', 'also tasks that ended')
    .option('-f, --filter <key=value>', `state=<state>, end=<${END_KINDS.join('|')}> (how it ended), label=<key>[=<value>] or health=<${PS_HEALTH_VALUES.join('|')}> (repeatable; the values of one key are alternatives, different keys must all match)`, collect, [])
    .option('-q, --quiet', 'print task ids only')
    .option('-n, --last <n>', 'the newest n tasks, in any state')
    .option('-l, --latest', 'the newest task, in any state (as -n 1)')
    .option('--no-trunc', 'print whole task ids, commands and reasons')
    .option('--format <format>', FORMAT_HELP)
    .action((flags: AgentFlags & PsSelection & { quiet?: boolean; trunc: boolean; format?: string }) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const format = parseFormat(flags.format, TASK_FIELDS);
          const health = parsePsFilters(flags.filter).health;
          const tasks = (await client.list(psListFilter(flags))).filter((task) => matchesHealth(task, health));
          if (format.kind !== 'table' && !flags.quiet) io.stdout.write(renderFormatted(format, tasks.map((t) => taskFormatRow(t, Date.now(), !flags.trunc))));
          else if (flags.json) writeJson(io.stdout, tasks);
          else if (flags.quiet) io.stdout.write(tasks.map((t) => `${displayTaskId(t.id, !flags.trunc)}\n`).join(''));
          else io.stdout.write(renderTaskTable(tasks, Date.now(), { noTrunc: !flags.trunc }));
          return 0;
        }),
      ),
    );
}
