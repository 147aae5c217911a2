import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Agent, request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { homedir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { BerthError, cancelledError, ERROR_CODES, messageOf, ValidationError, type ErrorCode, type FieldIssue } from '../common/errors.js';
import type { TaskSpec } from '../spec/schema.js';
import type { StoredTaskSpec, TaskState } from '../state/tasks.js';
import type { EndKind } from '../tasks/end-state.js';
import { TOKEN_FILE_NAME } from './agent.js';
import { defaultDataDir, type HostFacts } from './config.js';
import type { AgentEvent } from './events.js';
import type { ErrorBody } from './http/errors.js';
import type { GroupView, HealthView, ImageView, NodeListView, PruneView, TaskView } from './http/views.js';
import type { GroupState } from '../state/groups.js';
import type { LogRecord } from './task-logs.js';
import type { StatsRecord } from '../tasks/stats-figures.js';
import { readCertificateFile, readKeyPair } from './tls.js';
import { openExecSession, type AgentExecOptions, type AgentExecSession } from './exec-client.js';
import { attachSession, openAgentSocket, type AgentSocketTarget, type AttachOptions, type AttachSession } from './attach-client.js';
import { CERT_UNTRUSTED_CODES } from '../common/tls-codes.js';

export type { HealthView, ImageView, TaskHealthView, TaskView } from './http/views.js';
export type { LogRecord } from './task-logs.js';
export type { StatsRecord } from '../tasks/stats-figures.js';
export type { AgentEvent } from './events.js';
export type { AgentExecExit, AgentExecOptions, AgentExecSession } from './exec-client.js';

/** A plain exec's request (`execOnce`). */
export interface PlainExecInput {
  cmd: readonly string[];
  /** `KEY=VALUE` each. */
  env?: readonly string[];
  workdir?: string;
  user?: string;
  /** Text given to the command's stdin, which is then closed. */
  stdin?: string;
  /** How long it may run before the agent kills it: `30s`, `5m`. Default 10m, at most 24h. */
  timeout?: string;
}

/** A plain exec's answer. */
export interface PlainExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  stdoutTruncated?: boolean;
  stderrTruncated?: boolean;
}
export type { AttachEnd, AttachOptions, AttachSession } from './attach-client.js';

/** Where a client finds the agent. */
export interface AgentClientOptions {
  /**
   * `unix:///path/to/agent.sock`, `http://host:port`, `https://host:port`, or `tcp://host:port`
   * (HTTPS when `tls` is given, else plain HTTP, as docker reads it). Default: the agent's default
   * socket for this user, `unix://<default dataDir>/agent.sock` (see `resolveAgentAddress` for the
   * full search).
   */
  host?: string;
  /**
   * TLS for an `https://` (or `tcp://`) host: the CA that signed the agent's certificate (default:
   * the system's CAs), and the client's certificate and key when the agent asks for one (mutual
   * TLS). The agent's certificate is always verified, its name (or IP address) included.
   */
  tls?: AgentTlsOptions;
  /** The agent's bearer token (`<dataDir>/token`). */
  token: string;
  /** Deadline of each call but stop, followed logs and events, which may take as long as they take. Default 30 s. */
  deadlineMs?: number;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface ListFilter {
  /** Tasks in any of these states. Default every state but `removed`. */
  state?: TaskState | readonly TaskState[];
  /** Spec labels that must all match: `key` or `key=value`. */
  label?: string | readonly string[];
  /** Only ended tasks that ended so: `oom`, `timed-out`, `failed`, `success`, `cancelled`, `lost`. */
  end?: EndKind | readonly EndKind[];
  /** Submission order. Default `oldest-first`; `limit` keeps the first tasks of it. */
  order?: 'oldest-first' | 'newest-first';
  limit?: number;
}

export interface LogsOptions extends CallOptions {
  /** Keep reading new lines until the task's output ends. Default false. */
  follow?: boolean;
  /** Only lines after this time (exclusive): RFC 3339, e.g. a record's `timestamp`. */
  since?: string;
  /** Only lines up to this time (inclusive): RFC 3339. A follow ends when it comes. */
  until?: string;
  /** Only the last N lines of the stored output (then, with follow, the new ones). Default all. */
  tail?: number;
  /** Only this stream. Default both. */
  stream?: 'stdout' | 'stderr';
}

/** A live event stream: iterate it (once) for events; `close` ends it. */
export interface EventSubscription extends AsyncIterable<AgentEvent> {
  close(): void;
}

/** The PEM texts of a client's TLS (see AgentClientOptions.tls). */
export interface AgentTlsOptions {
  /** CA certificates the agent's certificate must be signed by. Default: the system's CAs. */
  ca?: string | Buffer;
  /** The client's certificate, for an agent that requires one (`tls.clientCa`); with `key`. */
  cert?: string | Buffer;
  key?: string | Buffer;
}

type Target = Pick<RequestOptions, 'socketPath' | 'host' | 'port'>;

/** How an agent address is spoken to: `tcp` is HTTPS when TLS material is given, else plain HTTP. */
export type AgentScheme = 'unix' | 'http' | 'https' | 'tcp';

const HOST_RULE = 'must be unix:///absolute/path, http://host:port, https://host:port or tcp://host:port';

/** The scheme of an agent address (`unix://`, `http://`, `https://`, `tcp://`); throws for any other. */
export function agentScheme(host: string): AgentScheme {
  const scheme = /^(unix|http|https|tcp):\/\//.exec(host)?.[1];
  if (scheme === undefined) throw new ValidationError([{ field: 'host', rule: `${HOST_RULE}, not ${JSON.stringify(host)}` }]);
  return scheme as AgentScheme;
}

/** Parses `unix:///path` or `http(s)://host:port` (or `tcp://host:port`) into node:http request options. */
export function parseAgentHost(host: string): Target {
  const scheme = /^(unix|http|https|tcp):\/\//.exec(host)?.[1];
  if (scheme === 'unix') {
    const socketPath = host.slice('unix://'.length);
    if (path.isAbsolute(socketPath)) return { socketPath };
  } else if (scheme !== undefined) {
    const url = new URL(host);
    // `tcp:` is not a special scheme to URL: its empty path is '', not '/'.
    if ((url.pathname === '/' || url.pathname === '') && url.search === '' && url.port !== '' && url.username === '' && url.hash === '') {
      return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port) };
    }
  }
  throw new ValidationError([{ field: 'host', rule: `${HOST_RULE}, not ${JSON.stringify(host)}` }]);
}

/**
 * Codes of a TLS failure as Node reports them: OpenSSL's (ERR_SSL_…, the verification codes) and
 * Node's own (ERR_TLS_…). The agent refused the client's certificate, or its absence, when it sent an
 * alert about it; the client refused the agent's certificate when verification failed.
 */
const CLIENT_CERT_REFUSED = /^ERR_SSL_(TLSV13_ALERT_CERTIFICATE_REQUIRED|TLSV1_ALERT_UNKNOWN_CA|SSLV3_ALERT_BAD_CERTIFICATE|SSLV3_ALERT_CERTIFICATE_UNKNOWN|TLSV1_ALERT_ACCESS_DENIED|TLSV1_ALERT_DECRYPT_ERROR|SSLV3_ALERT_UNSUPPORTED_CERTIFICATE|SSLV3_ALERT_CERTIFICATE_EXPIRED)$/;
const NOT_TLS = /^(ERR_SSL_WRONG_VERSION_NUMBER|ERR_SSL_PACKET_LENGTH_TOO_LONG|ERR_SSL_RECORD_LAYER_FAILURE|EPROTO)$/;
const AGENT_CERT_DATES = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID']);

/** Why TLS with the agent failed, for a person, when `code` is a TLS failure's; else undefined. */
function tlsFailureHint(code: string): string | undefined {
  if (CERT_UNTRUSTED_CODES.has(code)) return 'the agent\'s certificate is not signed by a trusted CA: give the CA that signed it (--tlscacert, or ca.pem in $BERTH_CERT_PATH)';
  if (AGENT_CERT_DATES.has(code)) return 'the agent\'s certificate has expired or is not valid yet';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return 'the agent\'s certificate is not for this address (its subjectAltName names other hosts or IPs)';
  if (CLIENT_CERT_REFUSED.test(code)) return 'the agent refused the client\'s certificate, or its absence: give one signed by the agent\'s tls.clientCa (--tlscert and --tlskey, or cert.pem and key.pem in $BERTH_CERT_PATH)';
  if (NOT_TLS.test(code)) return 'the address does not speak TLS: does the agent serve plain HTTP there (http://)?';
  if (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) return 'the TLS handshake failed';
  return undefined;
}

/** Requests that change nothing, or change it the same way however often they are sent: reads, removals and stops. */
/**
 * Whether a request may be sent again after its connection failed: reads, removals, stops, and a
 * submit that names its task id (the same id with the same spec is the same task, so a second send
 * answers 200 with it; a submit without an id would make a second task).
 */
function isRepeatable(method: string, pathAndQuery: string, body: unknown): boolean {
  if (method === 'GET' || method === 'DELETE') return true;
  if (method !== 'POST') return false;
  if (/^\/v1\/tasks\/[^/?]+\/stop$/.test(pathAndQuery)) return true;
  return pathAndQuery === '/v1/tasks' && typeof body === 'object' && body !== null && typeof (body as { id?: unknown }).id === 'string';
}

function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}

/** Splits a byte stream into lines (without their newline), as they arrive. */
async function* lines(source: AsyncIterable<Buffer | string>): AsyncGenerator<string> {
  let buffered = '';
  for await (const chunk of source) {
    buffered += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
    let newline: number;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      yield buffered.slice(0, newline).replace(/\r$/, '');
      buffered = buffered.slice(newline + 1);
    }
  }
  if (buffered !== '') yield buffered;
}

/** The events of a `text/event-stream`: comments (heartbeats) are skipped; each `data` is one AgentEvent as JSON. */
async function* serverSentEvents(source: AsyncIterable<Buffer | string>): AsyncGenerator<AgentEvent> {
  let data: string[] = [];
  let name: string | undefined;
  for await (const line of lines(source)) {
    if (line === '') {
      if (data.length > 0 && name === 'error') throw streamError(JSON.parse(data.join('\n')) as Partial<ErrorBody>);
      if (data.length > 0) yield JSON.parse(data.join('\n')) as AgentEvent;
      data = [];
      name = undefined;
    } else if (line.startsWith('data:')) {
      data.push(line.slice(5).replace(/^ /, ''));
    } else if (line.startsWith('event:')) {
      name = line.slice(6).trim();
    }
    // `event:` otherwise repeats the data's type; comments and other fields carry nothing berth needs.
  }
}

/** The error an event stream ended with (`event: error`), as the client's error of its code. */
function streamError(body: Partial<ErrorBody>): BerthError {
  const code = body.error?.code;
  const known = code !== undefined && (ERROR_CODES as Readonly<Record<string, unknown>>)[code] !== undefined;
  return new BerthError(known ? (code as ErrorCode) : 'BERTH_INTERNAL', body.error?.message ?? 'the event stream ended with an error', { context: { inStream: true } });
}

/**
 * A client of the agent's HTTP API, over its unix socket or TCP. Every method maps an error the
 * API answers with to a BerthError with the code of the response body (a ValidationError, with
 * its issues, for BERTH_VALIDATION), with `context.status` the HTTP status (401 and
 * BERTH_UNAUTHORIZED for a wrong token). An agent that does not answer is BERTH_AGENT_UNAVAILABLE
 * and a call past its deadline BERTH_AGENT_TIMEOUT, with `context.agent` set to the address.
 */
/** What a submit did: `created` false when the same task (same id, same spec) was submitted before. */
export interface SubmitOutcome {
  task: TaskView;
  created: boolean;
}

export class AgentClient {
  readonly host: string;
  readonly #target: Target;
  readonly #token: string;
  readonly #deadlineMs: number;
  /** Whether the client speaks HTTPS to the agent. */
  readonly secure: boolean;
  readonly #agent: Agent;
  readonly #tls: AgentTlsOptions | undefined;
  readonly #request: (options: RequestOptions, onResponse: (response: IncomingMessage) => void) => ClientRequest;

  private constructor(options: AgentClientOptions & { host: string }) {
    this.host = options.host;
    const scheme = agentScheme(options.host);
    this.#target = parseAgentHost(options.host);
    if (options.tls && (scheme === 'unix' || scheme === 'http')) {
      throw new ValidationError([{ field: 'tls', rule: `applies to https:// and tcp:// addresses, not ${options.host}` }]);
    }
    this.secure = scheme === 'https' || (scheme === 'tcp' && options.tls !== undefined);
    this.#token = options.token;
    this.#deadlineMs = options.deadlineMs ?? 30_000;
    this.#tls = options.tls;
    this.#agent = this.secure ? new HttpsAgent({ keepAlive: true, ...options.tls }) : new Agent({ keepAlive: true });
    this.#request = this.secure ? httpsRequest : httpRequest;
  }

  static connect(options: AgentClientOptions): AgentClient {
    const host = options.host ?? `unix://${path.join(defaultDataDir({ uid: process.getuid?.() ?? -1, homedir: homedir() }), 'agent.sock')}`;
    return new AgentClient({ ...options, host });
  }

  /**
   * Submits a task; resolves with it as recorded (pending, or starting when it fits the budget now).
   * Idempotent by id: submitting the same id with the same spec again resolves with the existing
   * task (see `submitTask` to tell the two apart); another spec under that id is BERTH_TASK_EXISTS.
   */
  async submit(input: { id?: string; spec: TaskSpec | StoredTaskSpec }, options: CallOptions = {}): Promise<TaskView> {
    return (await this.submitTask(input, options)).task;
  }

  /**
   * Submits a task, and says whether this call created it (`created`, the API's 201) or found it
   * submitted before with the same spec (the API's 200): a client that retries a submit whose answer
   * it lost gets the task it made, not a second one.
   */
  async submitTask(input: { id?: string; spec: TaskSpec | StoredTaskSpec }, options: CallOptions = {}): Promise<SubmitOutcome> {
    const response = await this.#send('POST', '/v1/tasks', { ...options, body: input, deadlineMs: this.#deadlineMs });
    await this.#throwIfFailed(response);
    const { task } = JSON.parse(await this.#read(response, options.signal)) as { task: TaskView };
    return { task, created: response.statusCode === 201 };
  }

  async list(filter: ListFilter = {}, options: CallOptions = {}): Promise<TaskView[]> {
    const query = new URLSearchParams();
    for (const state of typeof filter.state === 'string' ? [filter.state] : (filter.state ?? [])) query.append('state', state);
    for (const label of typeof filter.label === 'string' ? [filter.label] : (filter.label ?? [])) query.append('label', label);
    for (const kind of typeof filter.end === 'string' ? [filter.end] : (filter.end ?? [])) query.append('end', kind);
    if (filter.order !== undefined) query.set('order', filter.order);
    if (filter.limit !== undefined) query.set('limit', String(filter.limit));
    const search = query.size > 0 ? `?${query}` : '';
    return (await this.#json<{ tasks: TaskView[] }>('GET', `/v1/tasks${search}`, options)).tasks;
  }

  async get(taskId: string, options: CallOptions = {}): Promise<TaskView> {
    return (await this.#json<{ task: TaskView }>('GET', `/v1/tasks/${encodeURIComponent(taskId)}`, options)).task;
  }

  /**
   * Stops a task. No deadline: a running task is given its stop grace period, `graceMs` when given
   * (0 to 24 h), else its spec's stopGracePeriod.
   */
  async stop(taskId: string, options: CallOptions & { graceMs?: number } = {}): Promise<TaskView> {
    const { graceMs, ...call } = options;
    const search = graceMs === undefined ? '' : `?graceMs=${graceMs}`;
    return (await this.#json<{ task: TaskView }>('POST', `/v1/tasks/${encodeURIComponent(taskId)}/stop${search}`, { ...call, deadlineMs: 0 })).task;
  }

  /** Pauses a running task; its run time limit stands still until `unpause`. */
  async pause(taskId: string, options: CallOptions = {}): Promise<TaskView> {
    return (await this.#json<{ task: TaskView }>('POST', `/v1/tasks/${encodeURIComponent(taskId)}/pause`, options)).task;
  }

  /** Resumes a paused task. */
  async unpause(taskId: string, options: CallOptions = {}): Promise<TaskView> {
    return (await this.#json<{ task: TaskView }>('POST', `/v1/tasks/${encodeURIComponent(taskId)}/unpause`, options)).task;
  }

  /** Sends `signal` (default SIGKILL) to a running task's main process, as `docker kill -s`. */
  async kill(taskId: string, signal = 'SIGKILL', options: CallOptions = {}): Promise<TaskView> {
    return (await this.#json<{ task: TaskView }>('POST', `/v1/tasks/${encodeURIComponent(taskId)}/kill`, { ...options, body: { signal } })).task;
  }

  /**
   * One long poll: resolves as soon as the task has ended, or with `ended: false` once `timeoutMs`
   * (whole seconds, at most 10 minutes) has passed.
   */
  async waitOnce(taskId: string, timeoutMs: number, options: CallOptions = {}): Promise<{ task: TaskView; ended: boolean }> {
    const seconds = Math.max(0, Math.min(600, Math.round(timeoutMs / 1000)));
    return this.#json<{ task: TaskView; ended: boolean }>('GET', `/v1/tasks/${encodeURIComponent(taskId)}/wait?timeout=${seconds}s`, {
      ...options,
      // The poll's own length, plus the usual deadline for the answer to arrive.
      deadlineMs: seconds * 1000 + this.#deadlineMs,
    });
  }

  /** Waits for a task to end and resolves with it: long polls of `pollMs` (default 30 s), asked again until it ends or `signal` aborts. */
  async wait(taskId: string, options: CallOptions & { pollMs?: number } = {}): Promise<TaskView> {
    for (;;) {
      const answer = await this.waitOnce(taskId, options.pollMs ?? 30_000, options);
      if (answer.ended) return answer.task;
    }
  }

  /**
   * Attaches to a running task, as `docker attach`: its live output on `stdout` and `stderr` (with
   * `logs`, what it printed before first), its stdin on `stdin` when its spec has `openStdin`, and
   * `end` with its exit code and end state when it ends. Resolves once the agent has upgraded the
   * connection; a task that is not running is refused (BERTH_TASK_STATE). `detach()` (or the
   * signal) leaves the task running. The attach itself has no deadline.
   */
  async attach(taskId: string, options: AttachOptions = {}): Promise<AttachSession> {
    const query = options.logs ? '?logs=true' : '';
    const socket = await openAgentSocket(this.#socketTarget(), `/v1/tasks/${encodeURIComponent(taskId)}/attach${query}`, {
      ...(options.signal ? { signal: options.signal } : {}),
      deadlineMs: options.deadlineMs ?? this.#deadlineMs,
    });
    return attachSession(socket, this.host, options.signal);
  }

  /** How a WebSocket reaches the agent: this client's address, token and TLS, and its error mapping. */
  #socketTarget(): AgentSocketTarget {
    return {
      host: this.host,
      ...(this.#target.socketPath !== undefined ? { socketPath: this.#target.socketPath } : { hostname: this.#target.host ?? 'localhost', port: Number(this.#target.port) }),
      secure: this.secure,
      ...(this.#tls ? { tls: this.#tls } : {}),
      token: this.#token,
      refusal: (status, error, text) => agentError(status, error, text, this.host),
      transportError: (error, what, signal, deadline, deadlineMs) => this.#transportError(error, what, signal, deadline, deadlineMs),
    };
  }

  /** Removes an ended task and its output; a task that has not ended is refused (BERTH_TASK_STATE). */
  async remove(taskId: string, options: CallOptions = {}): Promise<void> {
    await this.#json<undefined>('DELETE', `/v1/tasks/${encodeURIComponent(taskId)}`, options);
  }

  /**
   * A task's output records, oldest first; with `follow`, new ones as they come until the task's
   * output ends. Breaking out of the loop, or the signal, ends the request.
   */
  async *logs(taskId: string, options: LogsOptions = {}): AsyncGenerator<LogRecord> {
    yield* this.#logRecords(`/v1/tasks/${encodeURIComponent(taskId)}`, options);
  }

  /** The output records of a group's task, by its name in the group, as `logs` gives a task's. */
  async *groupTaskLogs(groupId: string, taskName: string, options: LogsOptions = {}): AsyncGenerator<LogRecord> {
    yield* this.#logRecords(`/v1/groups/${encodeURIComponent(groupId)}/tasks/${encodeURIComponent(taskName)}`, options);
  }

  /**
   * Submits a task group (the document `berth group run -f` reads), and says whether this call
   * created it (201) or found it submitted before under `id` with the same document (200).
   * Another document under that id is BERTH_GROUP_EXISTS; bad input is BERTH_VALIDATION with
   * fields such as `tasks[1].resources.memory`.
   */
  async submitGroup(input: { id?: string; spec: Record<string, unknown> }, options: CallOptions = {}): Promise<{ group: GroupView; created: boolean }> {
    const search = input.id === undefined ? '' : `?${new URLSearchParams({ id: input.id })}`;
    const response = await this.#send('POST', `/v1/groups${search}`, { ...options, body: input.spec, deadlineMs: this.#deadlineMs });
    await this.#throwIfFailed(response);
    const { group } = JSON.parse(await this.#read(response, options.signal)) as { group: GroupView };
    return { group, created: response.statusCode === 201 };
  }

  async listGroups(filter: { state?: GroupState | readonly GroupState[] } = {}, options: CallOptions = {}): Promise<GroupView[]> {
    const query = new URLSearchParams();
    for (const state of typeof filter.state === 'string' ? [filter.state] : (filter.state ?? [])) query.append('state', state);
    const search = query.size > 0 ? `?${query}` : '';
    return (await this.#json<{ groups: GroupView[] }>('GET', `/v1/groups${search}`, options)).groups;
  }

  async getGroup(groupId: string, options: CallOptions = {}): Promise<GroupView> {
    return (await this.#json<{ group: GroupView }>('GET', `/v1/groups/${encodeURIComponent(groupId)}`, options)).group;
  }

  /** Asks a group to stop; resolves with it as it is then (its end comes later: `getGroup`, or `group.state` events). */
  async stopGroup(groupId: string, options: CallOptions = {}): Promise<GroupView> {
    return (await this.#json<{ group: GroupView }>('POST', `/v1/groups/${encodeURIComponent(groupId)}/stop`, options)).group;
  }

  /** Removes an ended group with its tasks; `force`: stop it first. Resolves once its engine objects are removed too. */
  async removeGroup(groupId: string, options: CallOptions & { force?: boolean } = {}): Promise<void> {
    const { force, ...call } = options;
    await this.#json<undefined>('DELETE', `/v1/groups/${encodeURIComponent(groupId)}${force ? '?force=true' : ''}`, { ...call, deadlineMs: 0 });
  }

  async *#logRecords(base: string, options: LogsOptions): AsyncGenerator<LogRecord> {
    const query = new URLSearchParams();
    if (options.follow) query.set('follow', 'true');
    if (options.since !== undefined) query.set('since', options.since);
    if (options.until !== undefined) query.set('until', options.until);
    if (options.tail !== undefined) query.set('tail', String(options.tail));
    if (options.stream !== undefined) query.set('stream', options.stream);
    const search = query.size > 0 ? `?${query}` : '';
    const response = await this.#send('GET', `${base}/logs${search}`, {
      signal: options.signal,
      deadlineMs: options.follow ? 0 : this.#deadlineMs,
    });
    await this.#throwIfFailed(response);
    try {
      for await (const line of this.#guard(lines(response), options.signal)) {
        if (line !== '') yield JSON.parse(line) as LogRecord;
      }
    } finally {
      response.destroy();
    }
  }

  /**
   * A running task's resource use, one record per engine sample (about one a second) until the task
   * ends, as `berth stats --json` prints them; `stream: false` gives one sample (docker's
   * --no-stream). A task that is not running is refused (BERTH_TASK_STATE). Breaking out of the
   * loop, or the signal, ends the request.
   */
  async *stats(taskId: string, options: CallOptions & { stream?: boolean } = {}): AsyncGenerator<StatsRecord> {
    const stream = options.stream ?? true;
    const response = await this.#send('GET', `/v1/tasks/${encodeURIComponent(taskId)}/stats${stream ? '' : '?stream=false'}`, {
      signal: options.signal,
      deadlineMs: stream ? 0 : this.#deadlineMs,
    });
    await this.#throwIfFailed(response);
    try {
      for await (const line of this.#guard(lines(response), options.signal)) {
        if (line !== '') yield JSON.parse(line) as StatsRecord;
      }
    } finally {
      response.destroy();
    }
  }

  /**
   * A tar stream of `path` in a running task's container (GET /v1/tasks/:id/archive, docker cp's
   * read side). Errors before the stream starts (no such path: BERTH_ENGINE_NOT_FOUND; not running:
   * BERTH_TASK_STATE) reject; the signal ends the download.
   */
  async archive(taskId: string, path: string, options: CallOptions = {}): Promise<Readable> {
    return this.#tarStream(`/v1/tasks/${encodeURIComponent(taskId)}/archive?${new URLSearchParams({ path })}`, options);
  }

  /** An ended task's kept artifacts as one tar stream (GET /v1/tasks/:id/artifacts), or one collected `path`'s. */
  async artifacts(taskId: string, options: CallOptions & { path?: string } = {}): Promise<Readable> {
    const search = options.path === undefined ? '' : `?${new URLSearchParams({ path: options.path })}`;
    return this.#tarStream(`/v1/tasks/${encodeURIComponent(taskId)}/artifacts${search}`, options);
  }

  async #tarStream(pathAndQuery: string, options: CallOptions): Promise<Readable> {
    // No deadline: a request's deadline would cut a large download; the signal ends it.
    const response = await this.#send('GET', pathAndQuery, { signal: options.signal, deadlineMs: 0 });
    await this.#throwIfFailed(response);
    // The response itself, unwrapped (an async-iterator wrapper costs a large download a third of its
    // throughput); a dropped connection errors it as 'aborted' (ECONNRESET), the signal destroys it.
    return response;
  }

  /** Removes what berth created and nobody uses; only one prune runs at a time (409 otherwise). */
  async prune(input: { filters?: string[]; dryRun?: boolean } = {}, options: CallOptions = {}): Promise<PruneView> {
    // A prune may take a while; it has no deadline of its own, and aborting cancels it at the next object.
    return this.#json<PruneView>('POST', '/v1/prune', { ...options, body: input, deadlineMs: 0 });
  }

  /** `GET /v1/nodes`: the cluster's nodes (the answering one `self`), or this agent alone (mode `single`). */
  async listNodes(options: CallOptions = {}): Promise<NodeListView> {
    return this.#json<NodeListView>('GET', '/v1/nodes', options);
  }

  async images(options: CallOptions = {}): Promise<ImageView[]> {
    return (await this.#json<{ images: ImageView[] }>('GET', '/v1/images', options)).images;
  }

  /**
   * Subscribes to the agent's events. Resolves once the agent has subscribed, so that every event
   * after that is delivered: subscribe, then act, then read. With `since` (an event id, or an RFC 3339
   * time), the logged events after it come first; BERTH_EVENTS_EXPIRED when they are no longer kept.
   */
  async events(options: CallOptions & { since?: string | number; scope?: 'node' | 'cluster' } = {}): Promise<EventSubscription> {
    // scope=cluster: the cluster's event log (cluster mode), ClusterEventView objects.
    const params = [...(options.since === undefined ? [] : [`since=${encodeURIComponent(String(options.since))}`]), ...(options.scope === 'cluster' ? ['scope=cluster'] : [])];
    const query = params.length === 0 ? '' : `?${params.join('&')}`;
    const response = await this.#send('GET', `/v1/events${query}`, { signal: options.signal, deadlineMs: 0 });
    await this.#throwIfFailed(response);
    const guard = this.#guard.bind(this);
    return {
      close: () => response.destroy(),
      async *[Symbol.asyncIterator]() {
        try {
          yield* guard(serverSentEvents(response), options.signal, response);
        } finally {
          response.destroy();
        }
      },
    };
  }

  /**
   * Runs a command in a running task over the agent's WebSocket, as `docker exec` does: resolves
   * once it runs, with its stdout and stderr (apart without a TTY), its stdin (with `stdin`), its
   * TTY's `resize`, and its `exit`. Closing the session (or aborting `signal`) before the exit ends
   * the command. A task that is not running is BERTH_TASK_STATE.
   */
  async exec(taskId: string, options: AgentExecOptions): Promise<AgentExecSession> {
    return openExecSession(this.#socketTarget(), taskId, { ...options, deadlineMs: this.#deadlineMs });
  }

  /**
   * Runs a command in a running task to its end, without a TTY (`POST /v1/tasks/:id/exec`), and
   * resolves with its exit code and output (each stream at most 1 MiB; `…Truncated` when cut).
   * Past `timeout` (default 10m) the agent kills it: BERTH_EXEC_TIMEOUT.
   */
  async execOnce(taskId: string, input: PlainExecInput, options: CallOptions = {}): Promise<PlainExecResult> {
    return this.#json<PlainExecResult>('POST', `/v1/tasks/${encodeURIComponent(taskId)}/exec`, { ...options, body: input, deadlineMs: 0 });
  }

  /** The agent's health; an unavailable engine or a starting agent is a result, not an error. */
  async health(options: CallOptions = {}): Promise<HealthView> {
    const response = await this.#send('GET', '/healthz', { ...options, deadlineMs: this.#deadlineMs });
    if (response.statusCode === 503) {
      const body = JSON.parse(await this.#read(response, options.signal)) as Partial<HealthView>;
      if (body.engine === 'unavailable' || body.agent === 'starting') return body as HealthView;
    }
    await this.#throwIfFailed(response);
    return JSON.parse(await this.#read(response, options.signal)) as HealthView;
  }

  /** The Prometheus text of `/metrics`. */
  async metrics(options: CallOptions = {}): Promise<string> {
    const response = await this.#send('GET', '/metrics', { ...options, deadlineMs: this.#deadlineMs });
    await this.#throwIfFailed(response);
    return this.#read(response, options.signal);
  }

  /** The API's OpenAPI document. */
  async openapi(options: CallOptions = {}): Promise<Record<string, unknown>> {
    return this.#json<Record<string, unknown>>('GET', '/v1/openapi.json', options);
  }

  /**
   * Uploads a tar archive for a spec's `files: [{ upload: id, path }]` (POST /v1/uploads): streamed,
   * never buffered. No deadline unless given: an archive takes as long as it takes to send.
   */
  async upload(tar: Readable, options: CallOptions & { deadlineMs?: number } = {}): Promise<{ id: string; sizeBytes: number }> {
    const response = await this.#send('POST', '/v1/uploads', { signal: options.signal, deadlineMs: options.deadlineMs ?? 0, stream: { body: tar, contentType: 'application/x-tar' } });
    await this.#throwIfFailed(response);
    return JSON.parse(await this.#read(response, options.signal)) as { id: string; sizeBytes: number };
  }

  /** Extracts a tar archive into a running task at `path`, an existing directory (PUT /v1/tasks/:id/archive), streamed. */
  async copyIn(taskId: string, path: string, tar: Readable, options: CallOptions & { deadlineMs?: number } = {}): Promise<void> {
    const url = `/v1/tasks/${encodeURIComponent(taskId)}/archive?path=${encodeURIComponent(path)}`;
    const response = await this.#send('PUT', url, { signal: options.signal, deadlineMs: options.deadlineMs ?? 0, stream: { body: tar, contentType: 'application/x-tar' } });
    await this.#throwIfFailed(response);
    await this.#read(response, options.signal);
  }

  /** Closes the idle connections the client keeps for reuse. */
  close(): void {
    this.#agent.destroy();
  }

  async #json<T>(method: string, pathAndQuery: string, options: CallOptions & { body?: unknown; deadlineMs?: number }): Promise<T> {
    const response = await this.#send(method, pathAndQuery, { ...options, deadlineMs: options.deadlineMs ?? this.#deadlineMs });
    await this.#throwIfFailed(response);
    const text = await this.#read(response, options.signal);
    return (text === '' ? undefined : JSON.parse(text)) as T;
  }

  /** Sends a request; resolves with the response once its headers arrive. A deadline of 0 means none. */
  #send(
    method: string,
    pathAndQuery: string,
    options: { body?: unknown; signal?: AbortSignal | undefined; deadlineMs: number; stream?: { body: Readable; contentType: string } },
  ): Promise<IncomingMessage> {
    if (options.signal?.aborted) return Promise.reject(cancelledError(`${method} ${pathAndQuery}`, options.signal.reason));
    const deadline = options.deadlineMs > 0 ? AbortSignal.timeout(options.deadlineMs) : undefined;
    const signals = [options.signal, deadline].filter((s): s is AbortSignal => s !== undefined);
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
    const headers: Record<string, string> = { authorization: `Bearer ${this.#token}`, accept: 'application/json' };
    if (options.stream) headers['content-type'] = options.stream.contentType;
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    const attempt = (isRetry: boolean): Promise<IncomingMessage> =>
      new Promise((resolve, reject) => {
        const request = this.#request(
          { ...this.#target, method, path: pathAndQuery, headers, agent: this.#agent, ...(signals.length > 0 ? { signal: AbortSignal.any(signals) } : {}) },
          resolve,
        );
        request.once('error', (error: NodeJS.ErrnoException) => {
          // A kept-alive connection the agent closed as idle (http.keepAliveTimeout) just as this
          // request went out on it (a reset, or EPIPE when the close came before the write): the
          // agent never read the request, so one that is safe to repeat is sent again, once, on a
          // new connection.
          if (!isRetry && !options.stream && request.reusedSocket && (error.code === 'ECONNRESET' || error.code === 'EPIPE') && isRepeatable(method, pathAndQuery, options.body) && !signals.some((s) => s.aborted)) {
            attempt(true).then(resolve, reject);
            return;
          }
          reject(this.#transportError(error, `${method} ${pathAndQuery}`, options.signal, deadline, options.deadlineMs));
        });
        if (options.stream) {
          const source = options.stream.body;
          source.once('error', (error) => request.destroy(error));
          request.once('close', () => source.destroy());
          source.pipe(request);
        } else {
          request.end(payload);
        }
      });
    return attempt(false);
  }

  #transportError(error: unknown, what: string, signal: AbortSignal | undefined, deadline: AbortSignal | undefined, deadlineMs: number): BerthError {
    if (error instanceof BerthError) return error;
    if (signal?.aborted) return cancelledError(what, signal.reason);
    const context = { agent: this.host };
    if (deadline?.aborted) return new BerthError('BERTH_AGENT_TIMEOUT', `the agent at ${this.host} did not answer ${what} within ${deadlineMs} ms`, { cause: error, context });
    const code = (error as NodeJS.ErrnoException).code ?? messageOf(error);
    const tlsHint = this.secure ? tlsFailureHint(code) : undefined;
    if (tlsHint !== undefined) return new BerthError('BERTH_AGENT_TLS', `TLS with the agent at ${this.host} failed (${code}): ${tlsHint}`, { cause: error, context });
    // A reset connection reached an agent: one at its connection limit closes new connections at once.
    const hint = code === 'ECONNRESET' || code === 'EPIPE' ? 'is `berth agent` running, and below its connection limit (http.maxConnections)?' : 'is `berth agent` running?';
    return new BerthError('BERTH_AGENT_UNAVAILABLE', `the agent at ${this.host} does not answer (${code}); ${hint}`, { cause: error, context });
  }

  /** Reads a response body to the end. */
  async #read(response: IncomingMessage, signal: AbortSignal | undefined): Promise<string> {
    const chunks: Buffer[] = [];
    for await (const chunk of this.#guard(response as AsyncIterable<Buffer>, signal, response)) chunks.push(chunk);
    return Buffer.concat(chunks).toString('utf8');
  }

  /** Turns a response's error status into the BerthError of its body. */
  async #throwIfFailed(response: IncomingMessage): Promise<void> {
    const status = response.statusCode ?? 0;
    if (status >= 200 && status < 300) return;
    const text = await this.#read(response, undefined).catch(() => '');
    let body: Partial<ErrorBody> | undefined;
    try {
      body = JSON.parse(text) as Partial<ErrorBody>;
    } catch {
      body = undefined;
    }
    throw agentError(status, body?.error, text, this.host);
  }

  /** Maps the errors of reading a response (the signal, a dropped connection) to BerthErrors. */
  async *#guard<T>(source: AsyncIterable<T>, signal: AbortSignal | undefined, response?: IncomingMessage): AsyncGenerator<T> {
    try {
      yield* source;
    } catch (error) {
      if (signal?.aborted) throw cancelledError('reading from the agent', signal.reason);
      throw this.#transportError(error, 'reading the response', undefined, undefined, 0);
    } finally {
      if (response && !response.complete) response.destroy();
    }
  }
}

/**
 * The BerthError of an error response. The agent answers every error as `{error: {code, message}}`
 * with one of berth's codes; an answer without one (a proxy's page, a newer agent's code) is
 * classified by its status, never as berth's own failure unless it is a 5xx: 401
 * BERTH_UNAUTHORIZED, 408 and 502 to 504 BERTH_AGENT_UNAVAILABLE (it may pass), any other 4xx
 * BERTH_VALIDATION (the request was refused), and a 5xx BERTH_INTERNAL. `context.agentCode`
 * keeps a code this client does not know.
 */
export function agentError(status: number, error: Partial<ErrorBody['error']> | undefined, text: string, host: string): BerthError {
  const context: Record<string, unknown> = { status, agent: host };
  const message = typeof error?.message === 'string' && error.message !== '' ? error.message : `the agent answered ${status}${text.trim() === '' ? '' : `: ${text.trim().slice(0, 200)}`}`;
  if (error && isErrorCode(error.code)) {
    if (error.code === 'BERTH_VALIDATION' && Array.isArray(error.issues) && error.issues.length > 0) {
      return new ValidationError(error.issues as FieldIssue[], { context });
    }
    return new BerthError(error.code, message, { context });
  }
  if (typeof error?.code === 'string') context.agentCode = error.code;
  const code: ErrorCode =
    status === 401 ? 'BERTH_UNAUTHORIZED' : status === 408 || (status >= 502 && status <= 504) ? 'BERTH_AGENT_UNAVAILABLE' : status >= 400 && status < 500 ? 'BERTH_VALIDATION' : 'BERTH_INTERNAL';
  return new BerthError(code, message, { context });
}

/** The agent's address and token, as every command finds them. */
export interface AgentAddress {
  /** `unix:///path` or `http://host:port`. */
  host: string;
  token: string;
  /** The data directory the default socket and token were looked for in. */
  dataDir: string;
}

/**
 * Finds the agent the way every command does. The host: flag `--host`, else `BERTH_HOST`, else
 * `unix://` and the agent's socket (`BERTH_SOCKET_PATH`, else `<dataDir>/agent.sock`). The token:
 * flag `--token`, else `BERTH_TOKEN`, else the file `<dataDir>/token` (without BERTH_DATA_DIR, the
 * token beside a unix socket host is tried first). The data directory: `BERTH_DATA_DIR`, else the
 * agent's default for this user.
 */
export async function resolveAgentAddress(
  env: Readonly<Record<string, string | undefined>>,
  flags: { host?: string; token?: string },
  user: Pick<HostFacts, 'uid' | 'homedir'>,
): Promise<AgentAddress> {
  const dataDir = env.BERTH_DATA_DIR?.trim() || defaultDataDir(user, env);
  // The agent's default socket path (AgentConfig.socketPath).
  const host = flags.host ?? (env.BERTH_HOST?.trim() || `unix://${env.BERTH_SOCKET_PATH?.trim() || path.join(dataDir, 'agent.sock')}`);
  parseAgentHost(host);
  const token = flags.token ?? (env.BERTH_TOKEN?.trim() || undefined) ?? (await readTokenFile(tokenFiles(host, dataDir, Boolean(env.BERTH_DATA_DIR?.trim()))));
  return { host, token, dataDir };
}

/**
 * Where the token is looked for, in order: `<dataDir>/token`, and, when no BERTH_DATA_DIR is set
 * and the host is a unix socket elsewhere, first the socket's own directory (the agent keeps its
 * socket and its token in its data directory by default, so BERTH_HOST alone finds an agent with
 * another data directory).
 */
function tokenFiles(host: string, dataDir: string, isDataDirGiven: boolean): string[] {
  const own = path.join(dataDir, TOKEN_FILE_NAME);
  if (isDataDirGiven || !host.startsWith('unix://')) return [own];
  const besideSocket = path.join(path.dirname(host.slice('unix://'.length)), TOKEN_FILE_NAME);
  return besideSocket === own ? [own] : [besideSocket, own];
}

/** The first token file that reads; else a ValidationError naming the files and the ways to give the token. */
async function readTokenFile(files: readonly string[]): Promise<string> {
  const failures: string[] = [];
  let cause: unknown;
  for (const file of files) {
    try {
      return (await readFile(file, 'utf8')).trim();
    } catch (error) {
      cause = error;
      failures.push(`${file} (${(error as NodeJS.ErrnoException).code ?? messageOf(error)})`);
    }
  }
  const rule =
    `cannot read the agent's token from ${failures.join(' or ')}. An agent started with another data directory ` +
    '(berth agent --data-dir DIR) keeps its token in DIR/token: set BERTH_DATA_DIR=DIR, or pass --token TOKEN (or set BERTH_TOKEN)';
  throw new ValidationError([{ field: 'token', rule }], { cause });
}

/** The TLS flags of a client command, as docker spells them. */
export interface AgentTlsFlags {
  /** The CA that signed the agent's certificate (PEM file). */
  tlscacert?: string;
  /** The client's certificate (PEM file), for an agent that requires one. */
  tlscert?: string;
  /** The client certificate's private key (PEM file). */
  tlskey?: string;
  /** Use TLS for a `tcp://` address (the agent's certificate is always verified). */
  tlsverify?: boolean;
}

/** The files `BERTH_CERT_PATH` may hold, as DOCKER_CERT_PATH does. */
const CERT_PATH_FILES = Object.freeze({ ca: 'ca.pem', cert: 'cert.pem', key: 'key.pem' });

/**
 * The TLS material of a client command, read from its files, or undefined when the address is spoken
 * to without TLS. As docker: `https://` always speaks TLS; `tcp://` does when a TLS flag is given
 * or `BERTH_TLS_VERIFY` is set (non-empty) or `BERTH_CERT_PATH` is; each file comes from its flag
 * (`--tlscacert`, `--tlscert`, `--tlskey`), else from `BERTH_CERT_PATH` (`ca.pem`, `cert.pem`,
 * `key.pem`, each when it exists). Without a CA the system's CAs verify the agent. TLS flags with a
 * `unix://` or `http://` address are refused (the environment is ignored there). Every file problem
 * is a ValidationError naming the flag (or BERTH_CERT_PATH) and the file.
 */
export function resolveAgentTls(host: string, env: Readonly<Record<string, string | undefined>>, flags: AgentTlsFlags): AgentTlsOptions | undefined {
  const scheme = agentScheme(host);
  const given = (['tlscacert', 'tlscert', 'tlskey', 'tlsverify'] as const).filter((flag) => flags[flag] !== undefined && flags[flag] !== false);
  if (scheme === 'unix' || scheme === 'http') {
    if (given.length > 0) {
      throw new ValidationError(given.map((flag) => ({ field: `--${flag}`, rule: `applies to https:// and tcp:// addresses, not ${host}${scheme === 'http' ? ' (use https://)' : ''}` })));
    }
    return undefined;
  }
  const certPath = env.BERTH_CERT_PATH?.trim() || undefined;
  const verifyEnv = (env.BERTH_TLS_VERIFY ?? '') !== '';
  if (scheme === 'tcp' && given.length === 0 && !verifyEnv && certPath === undefined) return undefined;
  const fromCertPath = (name: keyof typeof CERT_PATH_FILES): { field: string; file: string } | undefined => {
    if (certPath === undefined) return undefined;
    const file = path.join(certPath, CERT_PATH_FILES[name]);
    return existsSync(file) ? { field: 'BERTH_CERT_PATH', file } : undefined;
  };
  const ca = flags.tlscacert !== undefined ? { field: '--tlscacert', file: flags.tlscacert } : fromCertPath('ca');
  const cert = flags.tlscert !== undefined ? { field: '--tlscert', file: flags.tlscert } : fromCertPath('cert');
  const key = flags.tlskey !== undefined ? { field: '--tlskey', file: flags.tlskey } : fromCertPath('key');
  if ((cert === undefined) !== (key === undefined)) {
    const [present, missing] = cert ? [cert, '--tlskey'] : [key!, '--tlscert'];
    throw new ValidationError([{ field: missing, rule: `is needed with ${present.field} (${present.file}): a client certificate goes with its key` }]);
  }
  return {
    ...(ca ? { ca: readCertificateFile(ca.field, ca.file).pem } : {}),
    ...(cert && key ? readKeyPair(cert.field, cert.file, key.field, key.file) : {}),
  };
}
