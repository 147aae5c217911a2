import type { Command } from 'commander';
import { ValidationError } from '../common/errors.js';
import { TASK_STATES, UNENDED_STATES, type TaskState } from '../state/tasks.js';
import { agentCommand, withClient, type AgentFlags } from './client.js';
import { collect } from './flags.js';
import { renderTaskTable, writeJson } from './output.js';
import { FORMAT_HELP, parseFormat, renderFormatted, TASK_FIELDS, taskFormatRow } from './format.js';
import type { CliIo } from './run.js';

/** `--filter state=running`, `--filter label=k=v`, as docker ps spells them. */
function parseFilters(values: readonly string[]): { state: TaskState[]; label: string[] } {
  const state: TaskState[] = [];
  const label: string[] = [];
  values.forEach((value, index) => {
    const eq = value.indexOf('=');
    const key = eq < 0 ? value : value.slice(0, eq);
    const rest = eq < 0 ? '' : value.slice(eq + 1);
    if (key === 'state' || key === 'status') {
      if (!(TASK_STATES as readonly string[]).includes(rest)) {
        throw new ValidationError([{ field: `--filter[${index}]`, rule: `state must be one of ${TASK_STATES.join(', ')}` }]);
      }
      state.push(rest as TaskState);
    } else if (key === 'label') {
      if (rest === '') throw new ValidationError([{ field: `--filter[${index}]`, rule: 'label needs a key: label=key or label=key=value' }]);
      label.push(rest);
    } else {
      throw new ValidationError([{ field: `--filter[${index}]`, rule: 'must be state=<state> or label=<key>[=<value>]' }]);
    }
  });
  return { state, label };
}

/** `berth ps`: the agent's tasks as a table, ids or JSON. */
export function addPsCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
agentCommand(program, 'ps', 'List tasks that have not ended (-a: all)')
  .option('-a, --all', 'also tasks that ended')
  .option('-f, --filter <key=value>', 'state=<state> or label=<key>[=<value>] (repeatable; labels must all match)', collect, [])
  .option('-q, --quiet', 'print task ids only')
  .option('-n, --last <n>', 'at most this many tasks')
  .option('--format <format>', FORMAT_HELP)
  .action((flags: AgentFlags & { all?: boolean; filter: string[]; quiet?: boolean; last?: string; format?: string }) =>
    run(() =>
      withClient(io, flags, async (client) => {
        const format = parseFormat(flags.format, TASK_FIELDS);
        const filters = parseFilters(flags.filter);
        const limit = flags.last === undefined ? undefined : Number(flags.last);
        if (limit !== undefined && (!Number.isInteger(limit) || limit < 0)) throw new ValidationError([{ field: '--last', rule: 'must be a whole number, 0 or more' }]);
        const state = filters.state.length > 0 ? filters.state : flags.all ? undefined : UNENDED_STATES;
        const tasks = await client.list({ ...(state ? { state } : {}), label: filters.label, ...(limit !== undefined ? { limit } : {}) });
        if (format.kind !== 'table' && !flags.quiet) io.stdout.write(renderFormatted(format, tasks.map((t) => taskFormatRow(t, Date.now()))));
        else if (flags.json) writeJson(io.stdout, tasks);
        else if (flags.quiet) io.stdout.write(tasks.map((t) => `${t.id}\n`).join(''));
        else io.stdout.write(renderTaskTable(tasks, Date.now()));
        return 0;
      }),
    ),
  );
}
