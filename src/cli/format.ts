import { ValidationError } from '../common/errors.js';
import { ago, displayTaskId, formatCommand, formatTaskPorts, renderTable, shortId, taskStatus, toMs, truncate, type ImageRowInput, type TaskRowInput } from './output.js';

/**
 * `--format` of ps, inspect, images, events and stats, as the docker CLI spells it:
 *
 * - `table` (the default): the command's own table;
 * - `json`: one JSON object per line, per row (docker's `--format json`);
 * - `table TEMPLATE`: a table whose columns are the template's `\t`-separated cells, under headers
 *   named for the fields (`table {{.ID}}\t{{.Image}}` → `TASK ID   IMAGE`);
 * - `TEMPLATE`: one line per row from a Go-template subset.
 *
 * No well-kept Go-template library exists on npm, so this is the documented subset of Go's
 * text/template that docker users type: `{{.Field}}`, nested `{{.A.B}}`, `{{json .X}}` (`{{json .}}`
 * for the whole row), `{{index .Map "key"}}`, `{{.Label "key"}}` (ps), `{{upper .X}}`, `{{lower .X}}`,
 * `{{truncate .X 12}}`, and the escapes `\t`, `\n` and `\\` in the text. An unknown field is a
 * usage error naming it and the known ones, before anything is asked of the agent or the engine.
 */

/** What a row offers a template: values, nested objects, or methods taking string arguments (`.Label "k"`). */
export type FormatRow = Readonly<Record<string, unknown>>;

/** The fields a command's rows have, with the header each gets in a `table` template. */
export interface FormatFields {
  /** Field name (as in the template, e.g. `ID`) → column header (e.g. `TASK ID`). */
  readonly [field: string]: string;
}

export type Arg = { kind: 'path'; path: readonly string[] } | { kind: 'string'; value: string } | { kind: 'number'; value: number };
export type Node = { kind: 'text'; text: string } | { kind: 'action'; fn?: string; args: readonly Arg[]; source: string };

export type OutputFormat =
  | { readonly kind: 'table' }
  | { readonly kind: 'json' }
  | { readonly kind: 'template'; readonly nodes: readonly Node[]; readonly table: boolean; readonly headers: readonly string[] };

const FUNCTIONS = new Set(['json', 'index', 'upper', 'lower', 'truncate']);

/** The help text of every `--format` option. */
export const FORMAT_HELP = 'output format: table (default), json (one object per line), \'table {{.Field}}\\t…\' or a Go template \'{{.Field}}\' (see README)';

function usage(rule: string): ValidationError {
  return new ValidationError([{ field: '--format', rule }]);
}

/** `\t`, `\n` and `\\` as typed in a shell's single quotes, to the characters. */
function unescape(text: string): string {
  return text.replace(/\\([tn\\])/g, (_, c: string) => (c === 't' ? '\t' : c === 'n' ? '\n' : '\\'));
}

/** Splits an action's words, keeping quoted strings whole. */
function words(source: string): string[] {
  const result: string[] = [];
  const pattern = /"((?:[^"\\]|\\.)*)"|`([^`]*)`|(\S+)/g;
  for (let match = pattern.exec(source); match; match = pattern.exec(source)) {
    if (match[1] !== undefined) result.push(JSON.stringify(JSON.parse(`"${match[1]}"`)));
    else if (match[2] !== undefined) result.push(JSON.stringify(match[2]));
    else result.push(match[3]!);
  }
  return result;
}

function parseArg(word: string, fields: FormatFields, source: string): Arg {
  if (word.startsWith('"')) return { kind: 'string', value: JSON.parse(word) as string };
  if (/^-?\d+$/.test(word)) return { kind: 'number', value: Number(word) };
  if (word === '.') return { kind: 'path', path: [] };
  if (/^(\.[A-Za-z_][A-Za-z0-9_]*)+$/.test(word)) {
    const path = word.slice(1).split('.');
    const known = Object.keys(fields);
    if (!known.includes(path[0]!)) throw usage(`unknown field "${path[0]}" in {{${source}}} (known: ${known.join(', ')})`);
    return { kind: 'path', path };
  }
  throw usage(`cannot read "${word}" in {{${source}}}: use .Field, "text" or a number`);
}

/** Parses a template's text into literal text and actions, checking every field against `fields`. */
function parseTemplate(text: string, fields: FormatFields): Node[] {
  const nodes: Node[] = [];
  let rest = text;
  while (rest !== '') {
    const open = rest.indexOf('{{');
    if (open === -1) {
      if (rest.includes('}}')) throw usage('has "}}" without "{{"');
      nodes.push({ kind: 'text', text: unescape(rest) });
      break;
    }
    if (open > 0) nodes.push({ kind: 'text', text: unescape(rest.slice(0, open)) });
    const close = rest.indexOf('}}', open + 2);
    if (close === -1) throw usage(`has "{{" without "}}" (at "${rest.slice(open, open + 20)}")`);
    // Go's `{{- x -}}` trims the text around; here the markers are accepted and the text kept.
    const source = rest.slice(open + 2, close).replace(/^-\s/, '').replace(/\s-$/, '').trim();
    const parts = words(source);
    if (parts.length === 0) throw usage('has an empty {{}}');
    const [head, ...tail] = parts as [string, ...string[]];
    if (FUNCTIONS.has(head)) {
      if (tail.length === 0) throw usage(`{{${source}}}: ${head} needs an argument`);
      nodes.push({ kind: 'action', fn: head, args: tail.map((w) => parseArg(w, fields, source)), source });
    } else if (head.startsWith('.')) {
      nodes.push({ kind: 'action', args: parts.map((w) => parseArg(w, fields, source)), source });
    } else {
      throw usage(`unknown function "${head}" in {{${source}}} (known: ${[...FUNCTIONS].join(', ')})`);
    }
    rest = rest.slice(close + 2);
  }
  return nodes;
}

/** The header of a `table` template's column: its fields' headers (`{{.ID}}` → `TASK ID`). */
function columnHeader(cell: readonly Node[], fields: FormatFields): string {
  return cell
    .map((node) => {
      if (node.kind === 'text') return node.text.trim().toUpperCase();
      const path = node.args.find((arg): arg is Extract<Arg, { kind: 'path' }> => arg.kind === 'path')?.path;
      if (!path || path.length === 0) return node.fn?.toUpperCase() ?? '';
      return path.length === 1 ? (fields[path[0]!] ?? path[0]!.toUpperCase()) : path[path.length - 1]!.toUpperCase();
    })
    .filter((part) => part !== '')
    .join(' ');
}

/**
 * Parses a `--format` value for a command whose rows have `fields`; undefined (no flag) is the
 * table. A usage error names an unknown field or function, and the known ones.
 */
export function parseFormat(value: string | undefined, fields: FormatFields): OutputFormat {
  if (value === undefined || value.trim() === 'table') return { kind: 'table' };
  if (value.trim() === 'json') return { kind: 'json' };
  const isTable = /^table\s/.test(value);
  const body = isTable ? value.replace(/^table\s+/, '') : value;
  if (!isTable && !body.includes('{{')) throw usage(`"${value}" is not a format: use table, json, or a template such as '{{.ID}}'`);
  const nodes = parseTemplate(body, fields);
  const headers = isTable ? splitCells(nodes).map((cell) => columnHeader(cell, fields)) : [];
  return { kind: 'template', nodes, table: isTable, headers };
}

/** A table template's nodes split into columns at each tab of its text. */
function splitCells(nodes: readonly Node[]): Node[][] {
  const cells: Node[][] = [[]];
  for (const node of nodes) {
    if (node.kind !== 'text') {
      cells[cells.length - 1]!.push(node);
      continue;
    }
    node.text.split('\t').forEach((piece, index) => {
      if (index > 0) cells.push([]);
      if (piece !== '') cells[cells.length - 1]!.push({ kind: 'text', text: piece });
    });
  }
  return cells;
}

function lookup(row: unknown, path: readonly string[], args: readonly unknown[]): unknown {
  let value: unknown = row;
  path.forEach((key, index) => {
    if (value === null || typeof value !== 'object') {
      value = undefined;
      return;
    }
    value = (value as Record<string, unknown>)[key];
    // A method (`.Label "key"`) takes the action's other arguments.
    if (typeof value === 'function' && index === path.length - 1) value = (value as (...a: unknown[]) => unknown)(...args);
  });
  return value;
}

/** A value as Go's template prints it: text as is, nothing as empty, anything else as JSON. */
function print(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  return JSON.stringify(value);
}

function argValue(row: FormatRow, arg: Arg, rest: readonly unknown[] = []): unknown {
  if (arg.kind === 'path') return arg.path.length === 0 ? row : lookup(row, arg.path, rest);
  return arg.value;
}

function evaluate(node: Extract<Node, { kind: 'action' }>, row: FormatRow): string {
  const [first, ...others] = node.args as [Arg, ...Arg[]];
  if (node.fn === undefined) {
    // `.Label "key"`: a method and its arguments.
    return print(argValue(row, first, others.map((arg) => argValue(row, arg))));
  }
  const values = node.args.map((arg) => argValue(row, arg));
  switch (node.fn) {
    case 'json':
      return JSON.stringify(values[0] ?? null);
    case 'upper':
      return print(values[0]).toUpperCase();
    case 'lower':
      return print(values[0]).toLowerCase();
    case 'truncate': {
      const length = typeof values[1] === 'number' ? values[1] : Number.POSITIVE_INFINITY;
      return print(values[0]).slice(0, length);
    }
    case 'index': {
      let value: unknown = values[0];
      for (const key of values.slice(1)) value = value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[String(key)] : undefined;
      return print(value);
    }
    default:
      return '';
  }
}

function renderNodes(nodes: readonly Node[], row: FormatRow): string {
  return nodes.map((node) => (node.kind === 'text' ? node.text : evaluate(node, row))).join('');
}

/**
 * Renders rows in a parsed format other than the default table: JSON lines, a template's line per
 * row, or a template's table (headers from the fields, columns aligned as the default table's).
 * `json` prints `jsonRow(row)` (default: the row itself without its methods).
 */
export function renderFormatted(format: Exclude<OutputFormat, { kind: 'table' }>, rows: readonly FormatRow[], jsonRow: (row: FormatRow) => unknown = withoutMethods): string {
  if (format.kind === 'json') return rows.map((row) => `${JSON.stringify(jsonRow(row))}\n`).join('');
  if (format.table) {
    const cells = splitCells(format.nodes);
    return renderTable(format.headers, rows.map((row) => cells.map((cell) => renderNodes(cell, row))));
  }
  return rows.map((row) => `${renderNodes(format.nodes, row)}\n`).join('');
}

function withoutMethods(row: FormatRow): Record<string, unknown> {
  return Object.fromEntries(Object.entries(row).filter(([, value]) => typeof value !== 'function'));
}

/** The fields of a plain object (inspect's task, events' event), for `parseFormat`: each key with its upper-cased name as header. */
export function fieldsOf(keys: readonly string[]): FormatFields {
  return Object.fromEntries(keys.map((key) => [key, key.replace(/([a-z])([A-Z])/g, '$1 $2').toUpperCase()]));
}

// ---- The rows of each command, with docker's field names ----

/** `ps`'s fields, as docker ps names them (`Names` is the task id too: a task's name is its id). */
export const TASK_FIELDS: FormatFields = Object.freeze({
  ID: 'TASK ID',
  Image: 'IMAGE',
  Command: 'COMMAND',
  CreatedAt: 'CREATED AT',
  RunningFor: 'CREATED',
  Status: 'STATUS',
  State: 'STATE',
  Labels: 'LABELS',
  Label: 'LABEL',
  Names: 'NAMES',
  ContainerID: 'CONTAINER ID',
  ExitCode: 'EXIT CODE',
  Health: 'HEALTH',
  Ports: 'PORTS',
  Start: 'START',
  Node: 'NODE',
});

/** `images`' fields: docker's Repository, Tag, ID, Digest, plus berth's References, Holders and Removal. */
export const IMAGE_FIELDS: FormatFields = Object.freeze({
  ID: 'IMAGE ID',
  Repository: 'REPOSITORY',
  Tag: 'TAG',
  Digest: 'DIGEST',
  References: 'REFERENCES',
  Holders: 'HOLDERS',
  Removal: 'REMOVAL',
});

/** `events`' fields: docker's Type, Action, Time, plus what berth's events are about. */
export const EVENT_FIELDS: FormatFields = Object.freeze({
  Time: 'TIME',
  Type: 'TYPE',
  Action: 'ACTION',
  TaskID: 'TASK ID',
  Image: 'IMAGE',
  ImageID: 'IMAGE ID',
  ContainerID: 'CONTAINER ID',
  EndKind: 'END',
  ExitCode: 'EXIT CODE',
  Error: 'ERROR',
});

/** `stats`' fields: docker stats' own (ID is the task id, Container the container id). */
export const STATS_FIELDS: FormatFields = Object.freeze({
  ID: 'TASK ID',
  Name: 'NAME',
  Container: 'CONTAINER',
  CPUPerc: 'CPU %',
  MemUsage: 'MEM USAGE / LIMIT',
  MemPerc: 'MEM %',
  NetIO: 'NET I/O',
  BlockIO: 'BLOCK I/O',
  PIDs: 'PIDS',
});

/** A task as `ps --format` sees it. */
export function taskFormatRow(task: TaskRowInput & { containerId?: string | undefined }, nowMs: number, noTrunc = false): FormatRow {
  const labels = task.spec.labels ?? {};
  const command = formatCommand([...(task.spec.entrypoint ?? []), ...(task.spec.command ?? [])]);
  const created = toMs(task.submittedAt);
  return {
    ID: displayTaskId(task.id, noTrunc),
    Image: task.spec.image ?? '',
    Command: noTrunc ? command : truncate(command, 30),
    CreatedAt: created === undefined ? '' : new Date(created).toISOString(),
    RunningFor: ago(task.submittedAt, nowMs),
    Status: taskStatus(task, nowMs),
    State: task.state,
    Labels: Object.entries(labels).map(([key, value]) => `${key}=${value}`).join(','),
    Label: (key: unknown) => labels[String(key)] ?? '',
    Names: task.id,
    ContainerID: task.containerId === undefined ? '' : noTrunc ? task.containerId : shortId(task.containerId),
    ExitCode: task.exitCode ?? '',
    Health: task.health?.status ?? '',
    Ports: formatTaskPorts(task),
    // `warm:<pool>` or `cold:<reason>`; empty before it started.
    Start: task.start === undefined ? '' : task.start.path === 'warm' ? `warm:${task.start.pool ?? ''}` : `cold:${task.start.reason ?? ''}`,
    // Cluster mode: the task's node; empty while queued and on a single agent.
    Node: task.node ?? '',
  };
}

/** `name:tag` (or `name@digest`) split as docker images does. */
function splitReference(ref: string | undefined): { repository: string; tag: string; digest: string } {
  if (ref === undefined) return { repository: '<none>', tag: '<none>', digest: '<none>' };
  const at = ref.indexOf('@');
  if (at !== -1) return { repository: ref.slice(0, at), tag: '<none>', digest: ref.slice(at + 1) };
  const colon = ref.lastIndexOf(':');
  return colon > ref.lastIndexOf('/') ? { repository: ref.slice(0, colon), tag: ref.slice(colon + 1), digest: '<none>' } : { repository: ref, tag: 'latest', digest: '<none>' };
}

/** An image as `images --format` sees it (Repository and Tag from its first reference). */
export function imageFormatRow(image: ImageRowInput, nowMs: number, noTrunc = false): FormatRow {
  const { repository, tag, digest } = splitReference(image.refs[0]);
  const due = toMs(image.removalDueAt);
  return {
    ID: noTrunc ? image.imageId : shortId(image.imageId),
    Repository: repository,
    Tag: tag,
    Digest: digest,
    References: image.refs.join(', '),
    Holders: image.holders.join(', '),
    Removal: due === undefined ? '' : due <= nowMs ? 'due now' : new Date(due).toISOString(),
  };
}

/** An agent event as `events --format` sees it (Action: a task's state, a pull's phase, or the type's verb). */
export function eventFormatRow(event: Readonly<Record<string, unknown>>): FormatRow {
  const text = (value: unknown): string => (typeof value === 'string' || typeof value === 'number' ? String(value) : '');
  const end = event.endState as { kind?: string; exitCode?: number } | undefined;
  const type = text(event.type);
  const action = type === 'task.state' || type === 'task.health' ? text(event.state ?? event.status) : type === 'image.pull' ? text(event.phase) : type.split('.').pop() ?? '';
  return {
    Time: text(event.at),
    Type: type,
    Action: action,
    TaskID: text(event.taskId),
    Image: text(event.image),
    ImageID: text(event.imageId),
    ContainerID: text(event.containerId),
    EndKind: end?.kind ?? '',
    ExitCode: end?.exitCode ?? '',
    Error: text(event.error),
  };
}

/** One stats row (the table's cells, in STATS_FIELDS' order after ID) as `stats --format` sees it. */
export function statsFormatRow(taskId: string, containerId: string, cells: readonly string[], noTrunc = false): FormatRow {
  const [, cpu, mem, memPerc, net, block, pids] = cells;
  return {
    ID: displayTaskId(taskId, noTrunc),
    Name: taskId,
    Container: noTrunc ? containerId : shortId(containerId),
    CPUPerc: cpu ?? '',
    MemUsage: mem ?? '',
    MemPerc: memPerc ?? '',
    NetIO: net ?? '',
    BlockIO: block ?? '',
    PIDs: pids ?? '',
  };
}
