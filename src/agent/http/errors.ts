import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { isBerthError, messageOf, type ErrorCode, type FieldIssue } from '../../common/errors.js';
import { RFC3339_PATTERN, TASK_ID_PATTERN } from './schemas.js';

/** The body of every error response. */
export interface ErrorBody {
  error: { code: string; message: string; issues?: FieldIssue[] };
}

export interface ErrorResponse {
  status: number;
  body: ErrorBody;
}

/**
 * The HTTP status of every error code, in this one table (README, "The agent", lists it). It is
 * exhaustive: a new code without a status here fails to compile, rather than silently answering 500.
 *
 * A 4xx says the request, or what it names, is at fault: sending it again unchanged will not help.
 * A 5xx says the agent, its engine or a registry is: 500 is a bug, 502 an engine or registry that
 * failed or that the agent cannot work with, 503 one that does not answer (or an agent that is not
 * taking work), 504 one that made no progress in time, 507 a full data directory.
 */
const STATUS_BY_CODE: Readonly<Record<ErrorCode, number>> = Object.freeze({
  BERTH_VALIDATION: 400,
  // The uploaded archive was past the agent's limit (files.uploadMaxSize).
  BERTH_UPLOAD_TOO_LARGE: 413,
  // The engine refused what the request (its spec) asked of it as malformed or impossible.
  BERTH_ENGINE_BAD_REQUEST: 400,
  BERTH_UNAUTHORIZED: 401,
  // The engine or a registry refused the agent access: the credentials it was given are wrong or
  // missing. Not 401: the agent's own token was right.
  BERTH_ENGINE_FORBIDDEN: 403,
  BERTH_IMAGE_ACCESS_DENIED: 403,
  BERTH_TASK_NOT_FOUND: 404,
  BERTH_ENGINE_NOT_FOUND: 404,
  BERTH_IMAGE_NOT_FOUND: 404,
  BERTH_TASK_EXISTS: 409,
  BERTH_TASK_STATE: 409,
  BERTH_TASK_AMBIGUOUS: 409,
  BERTH_NAME_CONFLICT: 409,
  // The host port is someone else's (or the range is used up): a conflict with what the host holds now.
  BERTH_PORT_UNAVAILABLE: 409,
  BERTH_ENGINE_CONFLICT: 409,
  // The object is already as the request would have left it (started, stopped): a conflict with
  // its state, as BERTH_TASK_STATE is, where the operation could not treat it as done.
  BERTH_ENGINE_NOT_MODIFIED: 409,
  // The task is not in the state (healthy) the operation needed.
  BERTH_TASK_UNHEALTHY: 409,
  BERTH_PRUNE_RUNNING: 409,
  BERTH_EVENTS_EXPIRED: 410,
  BERTH_INTERNAL: 500,
  BERTH_ENGINE_SERVER_ERROR: 502,
  BERTH_IMAGE_PULL_FAILED: 502,
  // An engine older than berth supports: nothing the request can change, and not a bug.
  BERTH_ENGINE_VERSION: 502,
  // The agent's engine (Podman, say) lacks a feature the request needs: the engine is at fault, not the request's form.
  BERTH_ENGINE_UNSUPPORTED: 502,
  // The agent's remote engine's TLS failed: the agent's engine configuration is at fault.
  BERTH_ENGINE_TLS: 502,
  BERTH_ENGINE_SSH: 502,
  // The infrastructure image does not run on the engine, or a group object's name is held: the agent's engine or configuration is at fault.
  BERTH_GROUP_INFRA: 502,
  BERTH_GROUP_NOT_FOUND: 404,
  BERTH_GROUP_EXISTS: 409,
  BERTH_ENGINE_UNAVAILABLE: 503,
  BERTH_ENGINE_TIMEOUT: 503,
  BERTH_AGENT_UNAVAILABLE: 503,
  // The agent aborted the work itself (it is shutting down); a client that went away reads no answer.
  BERTH_CANCELLED: 503,
  BERTH_IMAGE_PULL_STALLED: 504,
  BERTH_EXEC_TIMEOUT: 504,
  // Raised by the client (an agent past the call's deadline), not by the agent: 504 is what a
  // gateway in front of an agent that does not answer says.
  BERTH_AGENT_TIMEOUT: 504,
  // Answered by the TLS listener itself (serve.ts), before any route, to a client without a
  // certificate signed by tls.clientCa; the client raises it too when a handshake fails.
  BERTH_AGENT_TLS: 403,
  // Insufficient Storage: the request was fine and may succeed once space is freed.
  BERTH_DISK_FULL: 507,
  // The cluster's PostgreSQL does not answer: like an engine that does not answer.
  BERTH_CLUSTER_UNAVAILABLE: 503,
  BERTH_STORE_UNAVAILABLE: 503,
  BERTH_NODE_UNREACHABLE: 503,
  BERTH_FORWARD_LOOP: 409,
  // A node's report or lease is stale: a conflict with the task's (or node's) state in the cluster.
  BERTH_CLUSTER_FENCED: 409,
  BERTH_CLUSTER_LEASE_LOST: 409,
  // The cluster database's schema is newer than this agent: the agent cannot work with it.
  BERTH_CLUSTER_SCHEMA: 502,
});

/** The HTTP status the API answers an error code with. */
export function httpStatusFor(code: ErrorCode): number {
  return STATUS_BY_CODE[code];
}

/** What fastify attaches to a request that failed its schema (ajv's errors). */
interface SchemaFailure {
  validation: ReadonlyArray<{ instancePath?: string; keyword?: string; params?: Record<string, unknown>; message?: string }>;
  validationContext?: string;
}

function isSchemaFailure(error: unknown): error is SchemaFailure {
  return typeof error === 'object' && error !== null && Array.isArray((error as { validation?: unknown }).validation);
}

/**
 * The field an ajv error is about, as users name it: `spec`, `id`, `state`. Array indices are
 * kept in a body (`mounts[0]`) and dropped in a query string, where a repeated parameter is one name.
 */
function fieldOf(failure: SchemaFailure['validation'][number], context: string | undefined): string {
  const segments = (failure.instancePath ?? '').split('/').filter((s) => s !== '').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  const extra = failure.params?.missingProperty ?? failure.params?.additionalProperty;
  if (typeof extra === 'string') segments.push(extra);
  let field = '';
  for (const segment of segments) {
    if (/^\d+$/.test(segment)) {
      if (context !== 'querystring') field += `[${segment}]`;
    } else {
      field += field === '' ? segment : `.${segment}`;
    }
  }
  return field === '' ? (context ?? 'body') : field;
}

/**
 * The forms the API's patterns stand for, in words: a pattern failure names the form (`since: must
 * be an RFC 3339 time, such as …`), never the regular expression itself.
 */
const PATTERN_FORMS: ReadonlyMap<string, string> = new Map([
  [RFC3339_PATTERN, 'must be an RFC 3339 time, such as 2024-05-01T10:00:00Z or 2024-05-01T12:00:00.123+02:00'],
  [TASK_ID_PATTERN, 'must be a task id: letters, digits, "_", "." and "-", starting with a letter or digit'],
]);

function ruleOf(failure: SchemaFailure['validation'][number]): string {
  switch (failure.keyword) {
    case 'pattern':
      return PATTERN_FORMS.get(String(failure.params?.pattern)) ?? 'is not in the form this field takes (see /v1/openapi.json)';
    case 'required':
      return 'is required';
    case 'additionalProperties':
      return 'is not a known field';
    case 'enum': {
      const allowed = failure.params?.allowedValues;
      return Array.isArray(allowed) ? `must be one of ${allowed.join(', ')}` : (failure.message ?? 'is not an allowed value');
    }
    default:
      return failure.message ?? `breaks the ${failure.keyword ?? 'schema'} rule`;
  }
}

/** The issues of a request that failed its schema, one per field. */
export function schemaIssues(failure: SchemaFailure): FieldIssue[] {
  return failure.validation.map((f) => ({ field: fieldOf(f, failure.validationContext), rule: ruleOf(f) }));
}

/**
 * Maps anything a route or fastify threw to a status and body, in this one place: BerthErrors by
 * their code, schema failures as BERTH_VALIDATION naming the field, fastify's own client errors
 * (malformed JSON, a body too large, an unsupported media type) as BERTH_VALIDATION with their
 * status, and everything else as BERTH_INTERNAL.
 */
export function toErrorResponse(error: unknown): ErrorResponse {
  if (isBerthError(error)) {
    const issues = error.code === 'BERTH_VALIDATION' ? (error.context.issues as FieldIssue[] | undefined) : undefined;
    return { status: httpStatusFor(error.code), body: { error: { code: error.code, message: error.message, ...(issues ? { issues: [...issues] } : {}) } } };
  }
  if (isSchemaFailure(error)) {
    const issues = schemaIssues(error);
    return { status: 400, body: { error: { code: 'BERTH_VALIDATION', message: issues.map((i) => `${i.field}: ${i.rule}`).join('; '), issues } } };
  }
  const { statusCode, code } = (typeof error === 'object' && error !== null ? error : {}) as { statusCode?: unknown; code?: unknown };
  const message = messageOf(error);
  if (typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500) {
    return requestError(statusCode, (typeof code === 'string' ? FASTIFY_CLIENT_ERRORS[code] : undefined) ?? { field: 'body', rule: message });
  }
  return { status: 500, body: { error: { code: 'BERTH_INTERNAL', message } } };
}

/** A request the server refused before any route saw it: BERTH_VALIDATION with this status, naming the part at fault. */
export function requestError(status: number, issue: FieldIssue): ErrorResponse {
  return { status, body: { error: { code: 'BERTH_VALIDATION', message: `${issue.field}: ${issue.rule}`, issues: [issue] } } };
}

/**
 * fastify's own errors about a request (its parser's and router's), by their code: the part of
 * the request at fault and the rule it broke, in berth's words. Codes not listed keep fastify's
 * message, about the body.
 */
const FASTIFY_CLIENT_ERRORS: Readonly<Record<string, FieldIssue>> = Object.freeze({
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { field: 'content-type', rule: 'must be application/json' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { field: 'content-length', rule: 'must be the length of the body' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { field: 'body', rule: 'must not be empty when the content type is application/json' },
  FST_ERR_CTP_INVALID_JSON_BODY: { field: 'body', rule: 'must be valid JSON' },
  FST_ERR_BAD_URL: { field: 'url', rule: 'must be percent-encoded correctly' },
});

/**
 * What the server answers an error of Node's HTTP parser with, by the error's code, as Node's own
 * handler does (431, 413, 408, else 400), in berth's shape. `undefined` for a connection that is
 * gone (reset): there is no one to answer.
 */
export function clientErrorResponse(error: NodeJS.ErrnoException): ErrorResponse | undefined {
  switch (error.code) {
    case 'ECONNRESET':
    case 'EPIPE':
      return undefined;
    case 'HPE_HEADER_OVERFLOW':
      return requestError(431, { field: 'headers', rule: 'must be smaller: the request line and headers exceed the largest size the agent reads' });
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return requestError(413, { field: 'body', rule: 'has chunk extensions larger than the agent reads' });
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return requestError(408, { field: 'request', rule: 'must arrive within the agent\'s http.headersTimeout (headers) and http.requestTimeout (the whole request)' });
    default:
      return requestError(400, { field: 'request', rule: `is not a well-formed HTTP/1.1 request (${error.code ?? error.message})` });
  }
}

/**
 * The `clientError` listener of every server the API listens with: a request Node's parser
 * refuses (headers too large, malformed, too slow) is answered in berth's shape rather than with
 * Node's bare status line, and the connection is closed.
 */
export function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  const response = socket.destroyed ? undefined : clientErrorResponse(error);
  // As Node does: nothing is written where a response has begun already (its headers went out).
  const pending = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
  if (response && socket.writable && !pending?.headersSent) {
    const json = JSON.stringify(response.body);
    socket.write(
      `HTTP/1.1 ${response.status} ${STATUS_CODES[response.status] ?? 'Error'}\r\n` +
        `content-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(json)}\r\nconnection: close\r\n\r\n${json}`,
    );
  }
  socket.destroy();
}
