import { ValidationError, type FieldIssue } from '../../common/errors.js';
import { parseDurationMs } from '../../common/units.js';
import type { ExecOptions } from '../../engine/engine.js';

/**
 * The pure parts of exec through the agent: the WebSocket exec's query string read into exec
 * options (every problem named at once, before the upgrade), the plain exec's body likewise, and
 * the capped capture of a plain exec's output. The I/O is in exec-route.ts.
 */

/** The largest terminal side (the engine takes 16-bit sizes). */
const MAX_TERMINAL_SIDE = 65_535;

/** The most of each stream (stdout, stderr) a plain exec answers with; the rest is read and dropped, and `…Truncated` says so. */
export const PLAIN_EXEC_OUTPUT_LIMIT_BYTES = 1024 * 1024;

/** A plain exec's timeout when the request gives none, and the longest it may give. */
export const PLAIN_EXEC_DEFAULT_TIMEOUT_MS = 10 * 60_000;
export const PLAIN_EXEC_MAX_TIMEOUT_MS = 24 * 60 * 60_000;

/** The query parameters of `GET /v1/tasks/:id/exec` (each may come once, but `cmd` and `env`). */
const QUERY_FIELDS = new Set(['cmd', 'tty', 'stdin', 'env', 'workdir', 'user', 'rows', 'cols']);

/** A WebSocket exec, as its query asks for it: what the engine runs, and the TTY's first size. */
export interface ExecRequest {
  options: ExecOptions;
  /** The TTY's size at the start (with `tty`), when the query gives `rows` and `cols`. */
  size?: { rows: number; columns: number };
}

type QueryValue = string | string[] | undefined;

/**
 * Reads the exec's query: `cmd` repeated (`cmd=ls&cmd=-l`) or one JSON array (`cmd=["ls","-l"]`),
 * `tty` and `stdin` (`true`/`false`, `1`/`0`), `env` repeated (`KEY=VALUE`), `workdir` (absolute),
 * `user`, and `rows` with `cols` (the TTY's first size, both or neither). Throws a ValidationError
 * naming every field at fault.
 */
export function parseExecQuery(query: Readonly<Record<string, QueryValue>>): ExecRequest {
  const issues: FieldIssue[] = [];
  for (const name of Object.keys(query)) if (!QUERY_FIELDS.has(name)) issues.push({ field: name, rule: 'is not a parameter of exec' });
  const single = (name: string): string | undefined => {
    const value = query[name];
    if (Array.isArray(value)) {
      issues.push({ field: name, rule: 'must be given once' });
      return undefined;
    }
    return value;
  };
  const flag = (name: string): boolean => {
    const value = single(name);
    if (value === undefined) return false;
    if (value === 'true' || value === '1' || value === '') return true;
    if (value === 'false' || value === '0') return false;
    issues.push({ field: name, rule: 'must be true or false' });
    return false;
  };
  const cmd = commandOf(query.cmd, issues);
  const tty = flag('tty');
  const stdin = flag('stdin');
  const env = listOf(query.env);
  for (const entry of env) if (!/^[^=]+=/.test(entry)) issues.push({ field: 'env', rule: `"${entry}" must be KEY=VALUE` });
  const options: ExecOptions = { cmd, tty, stdin, env };
  const workdir = single('workdir');
  if (workdir !== undefined) {
    if (!workdir.startsWith('/')) issues.push({ field: 'workdir', rule: `"${workdir}" must be an absolute path` });
    options.workdir = workdir;
  }
  const user = single('user');
  if (user !== undefined) {
    if (user.trim() === '') issues.push({ field: 'user', rule: 'must be a user, uid, user:group or uid:gid' });
    options.user = user;
  }
  const side = (name: 'rows' | 'cols'): number | undefined => {
    const value = single(name);
    if (value === undefined) return undefined;
    const n = /^[1-9][0-9]*$/.test(value) ? Number(value) : NaN;
    if (!(n >= 1 && n <= MAX_TERMINAL_SIDE)) {
      issues.push({ field: name, rule: `must be an integer from 1 to ${MAX_TERMINAL_SIDE}` });
      return undefined;
    }
    return n;
  };
  const rows = side('rows');
  const cols = side('cols');
  if ((query.rows === undefined) !== (query.cols === undefined)) issues.push({ field: query.rows === undefined ? 'rows' : 'cols', rule: 'is needed with the other side (rows and cols go together)' });
  if (query.rows !== undefined && !tty) issues.push({ field: 'rows', rule: 'applies with tty=true only' });
  if (issues.length > 0) throw new ValidationError(issues);
  return rows !== undefined && cols !== undefined ? { options, size: { rows, columns: cols } } : { options };
}

function listOf(value: QueryValue): string[] {
  return value === undefined ? [] : Array.isArray(value) ? value : [value];
}

/** `cmd`: repeated parameters, or one JSON array of strings; at least one word, the first not empty. */
function commandOf(value: QueryValue, issues: FieldIssue[]): string[] {
  let cmd = listOf(value);
  if (cmd.length === 1 && cmd[0]!.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(cmd[0]!);
    } catch {
      parsed = undefined;
    }
    if (!Array.isArray(parsed) || !parsed.every((word): word is string => typeof word === 'string')) {
      issues.push({ field: 'cmd', rule: 'a cmd starting with [ must be a JSON array of strings' });
      return [];
    }
    cmd = parsed;
  }
  if (cmd.length === 0 || cmd[0] === '') issues.push({ field: 'cmd', rule: 'is required: the command and its arguments (cmd repeated, or one JSON array)' });
  return cmd;
}

/** The body of `POST /v1/tasks/:id/exec` (checked by its JSON schema first). */
export interface PlainExecBody {
  cmd: string[];
  env?: string[];
  workdir?: string;
  user?: string;
  /** Text given to the command's stdin, which is then closed. */
  stdin?: string;
  /** A duration (`30s`, `5m`); default 10 minutes, at most 24 hours. */
  timeout?: string;
}

/** A plain exec's options and its timeout, from its (schema-checked) body; a ValidationError names what is wrong. */
export function plainExecOptions(body: PlainExecBody): { options: ExecOptions; timeoutMs: number; stdin?: string } {
  const issues: FieldIssue[] = [];
  if (body.cmd.length === 0 || body.cmd[0] === '') issues.push({ field: 'cmd', rule: 'is required: the command and its arguments' });
  for (const entry of body.env ?? []) if (!/^[^=]+=/.test(entry)) issues.push({ field: 'env', rule: `"${entry}" must be KEY=VALUE` });
  if (body.workdir !== undefined && !body.workdir.startsWith('/')) issues.push({ field: 'workdir', rule: `"${body.workdir}" must be an absolute path` });
  if (body.user !== undefined && body.user.trim() === '') issues.push({ field: 'user', rule: 'must be a user, uid, user:group or uid:gid' });
  const timeoutMs = body.timeout === undefined ? PLAIN_EXEC_DEFAULT_TIMEOUT_MS : parseDurationMs(body.timeout);
  if (timeoutMs === undefined || timeoutMs <= 0 || timeoutMs > PLAIN_EXEC_MAX_TIMEOUT_MS) issues.push({ field: 'timeout', rule: 'must be a duration above 0 and at most 24h, e.g. 30s' });
  if (issues.length > 0) throw new ValidationError(issues);
  const options: ExecOptions = { cmd: body.cmd, tty: false, stdin: body.stdin !== undefined, env: body.env ?? [] };
  if (body.workdir !== undefined) options.workdir = body.workdir;
  if (body.user !== undefined) options.user = body.user;
  return { options, timeoutMs: timeoutMs!, ...(body.stdin !== undefined ? { stdin: body.stdin } : {}) };
}

/** Keeps the first `limitBytes` of a stream's chunks and counts the rest. */
export class CappedOutput {
  readonly #chunks: Buffer[] = [];
  #kept = 0;
  #isTruncated = false;

  constructor(readonly limitBytes: number = PLAIN_EXEC_OUTPUT_LIMIT_BYTES) {}

  add(chunk: Buffer): void {
    const room = this.limitBytes - this.#kept;
    if (chunk.length > room) this.#isTruncated = true;
    if (room <= 0) return;
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.#chunks.push(kept);
    this.#kept += kept.length;
  }

  get isTruncated(): boolean {
    return this.#isTruncated;
  }

  /** The kept bytes as UTF-8 (a character cut at the limit becomes U+FFFD). */
  text(): string {
    return Buffer.concat(this.#chunks).toString('utf8');
  }
}
