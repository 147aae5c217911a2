import { BerthError, cancelledError, type ErrorCode } from '../common/errors.js';
import type { ContainerStatus } from './types.js';
import { CERT_UNTRUSTED_CODES } from '../common/tls-codes.js';

/** What a failed engine call is classified by: its HTTP status, or its socket error. Never message text. */
interface EngineFailure {
  statusCode?: number;
  code?: string;
  name?: string;
  message?: string;
  json?: unknown;
  /** dockerode's words for the status ("container already started"). */
  reason?: string;
  /** ssh2's stage of a failed SSH connection (`handshake`, `client-authentication`, `client-socket`…). */
  level?: string;
}

const UNAVAILABLE_SOCKET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ENOENT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
]);

/**
 * Socket errors raised before a request could be sent: the connection was never established, so
 * the engine cannot have acted on it. (A reset or a hang-up may come after the engine acted.)
 */
const NOT_SENT_SOCKET_CODES = new Set(['ECONNREFUSED', 'ENOENT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/**
 * Statuses with which the engine (or a proxy in front of it) refuses a request it did not act on:
 * 503 Service Unavailable is the engine saying it cannot serve the request now.
 */
const NOT_ACTED_STATUSES = new Set([503]);

/**
 * Whether a classified engine failure certainly left the engine untouched: the request was never
 * sent (connection refused, no socket), or the engine refused it as unavailable (503). A call that
 * must not run twice (an exec's start) may be sent again only then. Read from the classification's
 * `engineActed: false` context, never from message text.
 */
export function engineCertainlyDidNotAct(error: unknown): boolean {
  return error instanceof BerthError && error.context.engineActed === false;
}

function codeForStatus(status: number): ErrorCode {
  if (status === 304) return 'BERTH_ENGINE_NOT_MODIFIED';
  if (status === 400) return 'BERTH_ENGINE_BAD_REQUEST';
  if (status === 401 || status === 403) return 'BERTH_ENGINE_FORBIDDEN';
  if (status === 404) return 'BERTH_ENGINE_NOT_FOUND';
  if (status === 409) return 'BERTH_ENGINE_CONFLICT';
  return 'BERTH_ENGINE_SERVER_ERROR';
}

/** The engine's own message, without dockerode's "(HTTP code 404) no such container - " wrapping. */
export function engineMessage(failure: EngineFailure): string {
  const json = failure.json;
  if (json && typeof json === 'object' && 'message' in json && typeof json.message === 'string') {
    return json.message.trim();
  }
  if (typeof json === 'string' && json.trim() !== '') {
    try {
      const parsed: unknown = JSON.parse(json);
      if (parsed && typeof parsed === 'object' && 'message' in parsed && typeof parsed.message === 'string') {
        return parsed.message.trim();
      }
    } catch {
      return json.trim();
    }
  }
  if (Buffer.isBuffer(json) && json.length > 0) return json.toString('utf8').trim();
  const cleaned = (failure.message ?? '').replace(/^\(HTTP code \d+\)[^-]*- /, '').trim();
  // A 304 has no body: the cleaned message is empty and dockerode's reason is all there is.
  if (cleaned !== '') return cleaned;
  if (typeof failure.reason === 'string' && failure.reason !== '') return failure.reason;
  return failure.statusCode === undefined ? 'unknown engine failure' : `HTTP ${failure.statusCode}`;
}

export interface ClassifyContext {
  /** The operation, for the message: "create container". */
  operation: string;
  /** The caller's own signal: its abort means cancelled, not timed out. */
  callerSignal?: AbortSignal;
  deadlineMs?: number;
  context?: Record<string, unknown>;
}

/**
 * Codes of a TLS failure with the engine as Node reports them: OpenSSL's (ERR_SSL_…, the
 * verification codes) and Node's own (ERR_TLS_…). The engine refused the client's certificate, or
 * its absence, when it sent an alert about it; berth refused the engine's when verification failed.
 */
const ENGINE_REFUSED_CLIENT = /^ERR_SSL_(TLSV13_ALERT_CERTIFICATE_REQUIRED|TLSV1_ALERT_UNKNOWN_CA|SSLV3_ALERT_BAD_CERTIFICATE|SSLV3_ALERT_CERTIFICATE_UNKNOWN|SSLV3_ALERT_HANDSHAKE_FAILURE|TLSV1_ALERT_ACCESS_DENIED|TLSV1_ALERT_DECRYPT_ERROR|SSLV3_ALERT_UNSUPPORTED_CERTIFICATE|SSLV3_ALERT_CERTIFICATE_EXPIRED)$/;
const NOT_TLS = /^(ERR_SSL_WRONG_VERSION_NUMBER|ERR_SSL_PACKET_LENGTH_TOO_LONG|ERR_SSL_RECORD_LAYER_FAILURE)$/;

/** Why TLS with the engine failed, for a person, when `code` is a TLS failure's; else undefined. */
export function engineTlsHint(code: string): string | undefined {
  if (CERT_UNTRUSTED_CODES.has(code)) return 'the engine\'s certificate is not signed by the CA berth was given (ca.pem in DOCKER_CERT_PATH or the context\'s TLS directory)';
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return 'the engine\'s certificate has expired or is not valid yet';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return 'the engine\'s certificate is not for this address (its subjectAltName names other hosts or IPs)';
  if (ENGINE_REFUSED_CLIENT.test(code)) return 'the engine refused the client certificate, or its absence: give one signed by the engine\'s --tlscacert (cert.pem and key.pem in DOCKER_CERT_PATH)';
  if (NOT_TLS.test(code)) return 'the address does not speak TLS: is the engine listening in the clear (tcp:// without DOCKER_TLS_VERIFY)?';
  if (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) return 'the TLS handshake failed';
  return undefined;
}

/** Turns whatever dockerode threw into a BerthError with a stable code. The one place this happens. */
export function classifyEngineError(error: unknown, ctx: ClassifyContext): BerthError {
  if (error instanceof BerthError) return error;
  const failure: EngineFailure = typeof error === 'object' && error !== null ? (error as EngineFailure) : { message: String(error) };
  const context = { operation: ctx.operation, ...(ctx.context ?? {}) };
  if (ctx.callerSignal?.aborted) return cancelledError(ctx.operation, error);
  if (failure.name === 'AbortError' || failure.name === 'TimeoutError' || failure.code === 'ABORT_ERR') {
    return new BerthError('BERTH_ENGINE_TIMEOUT', `${ctx.operation}: the engine did not answer within ${ctx.deadlineMs ?? '?'} ms`, {
      cause: error,
      context: { ...context, deadlineMs: ctx.deadlineMs },
    });
  }
  if (typeof failure.statusCode === 'number') {
    const code = codeForStatus(failure.statusCode);
    const message = engineMessage(failure);
    // A container whose command cannot be run fails its start with the runtime's words and no status of its own.
    const commandFailure = code === 'BERTH_ENGINE_BAD_REQUEST' || code === 'BERTH_ENGINE_SERVER_ERROR' ? commandFailureIn(message) : undefined;
    return new BerthError(code, `${ctx.operation}: ${message}`, {
      cause: error,
      context: {
        ...context,
        statusCode: failure.statusCode,
        ...(NOT_ACTED_STATUSES.has(failure.statusCode) ? { engineActed: false } : {}),
        ...(commandFailure ? { commandFailure } : {}),
      },
    });
  }
  // ssh2 marks its failures by level: the server's host key refused (handshake) or berth's key refused.
  if (failure.level === 'handshake' || failure.level === 'client-authentication') {
    const why = failure.level === 'handshake' ? 'the SSH handshake failed (the server\'s host key was not accepted)' : 'the SSH server refused every key berth offered (the SSH agent\'s, ~/.ssh/id_ed25519, id_ecdsa, id_rsa)';
    return new BerthError('BERTH_ENGINE_SSH', `${ctx.operation}: ${why}`, { cause: error, context: { ...context, sshLevel: failure.level, engineActed: false } });
  }
  const tlsHint = failure.code === undefined ? undefined : engineTlsHint(failure.code);
  if (tlsHint !== undefined) {
    return new BerthError('BERTH_ENGINE_TLS', `${ctx.operation}: TLS with the engine failed (${failure.code}): ${tlsHint}`, {
      cause: error,
      context: { ...context, tlsError: failure.code, engineActed: false },
    });
  }
  if ((failure.code && UNAVAILABLE_SOCKET_CODES.has(failure.code)) || failure.message === 'socket hang up') {
    return new BerthError('BERTH_ENGINE_UNAVAILABLE', `${ctx.operation}: the engine is unreachable (${failure.code ?? failure.message})`, {
      cause: error,
      context: { ...context, socketError: failure.code, ...(failure.code && NOT_SENT_SOCKET_CODES.has(failure.code) ? { engineActed: false } : {}) },
    });
  }
  return new BerthError('BERTH_ENGINE_UNAVAILABLE', `${ctx.operation}: ${failure.message ?? 'engine call failed'}`, {
    cause: error,
    context,
  });
}

/**
 * What a 409 to a forced container removal means, told by the container's state after it (undefined:
 * it is gone), never by the message. The engine answers 409 to a forced removal when it is removing
 * the container already (its state is `removing`, or still `running` while that removal kills it),
 * and, rarely, when its kill raced the container's own exit (the container is `exited` or `created`,
 * and nobody removes it). `removed`: the engine is finishing an earlier removal; `ask-again`: a new
 * removal will do it.
 */
export function forcedRemovalConflict(statusAfter: ContainerStatus | undefined): 'removed' | 'ask-again' {
  return statusAfter === 'exited' || statusAfter === 'created' ? 'ask-again' : 'removed';
}

/**
 * A command the container runtime could not start: `not-found` (no such file, or not on $PATH; a
 * shell's 127) or `not-executable` (no permission to run it; a shell's 126). `detail` is the
 * runtime's own words, e.g. `exec: "nosuch": executable file not found in $PATH`.
 */
export interface CommandFailure {
  kind: 'not-found' | 'not-executable';
  /** The command as the runtime named it. */
  command: string;
  detail: string;
  /** The exit code a shell (and the docker CLI) gives it: 127 or 126. */
  exitCode: 127 | 126;
}

/**
 * Reads a command-start failure out of the runtime's message, for the engine reports it with no
 * status of its own (a 400 to a container start; for an exec, a line on the output and exit code
 * 126). The words are runc's (`exec: "<cmd>": executable file not found in $PATH`, `stat <cmd>: no
 * such file or directory`, `permission denied`), the ones the docker CLI maps to 127 and 126: this
 * is the one place berth reads them, because there is nothing else to read.
 */
export function commandFailureIn(message: string): CommandFailure | undefined {
  const match = /exec: "((?:[^"\\]|\\.)*)": ([^\r\n]*)/.exec(message);
  if (!match) return undefined;
  const command = match[1]!;
  const reason = match[2]!.replace(/: unknown\s*$/, '').trim();
  const detail = `exec: "${command}": ${reason}`;
  if (/executable file not found|no such file or directory/.test(reason)) return { kind: 'not-found', command, detail, exitCode: 127 };
  if (/permission denied/.test(reason)) return { kind: 'not-executable', command, detail, exitCode: 126 };
  return undefined;
}

/** The command-start failure an engine error carries (see {@link classifyEngineError}), if any. */
export function commandFailureOf(error: unknown): CommandFailure | undefined {
  if (!(error instanceof BerthError)) return undefined;
  const failure = error.context.commandFailure as Partial<CommandFailure> | undefined;
  if (!failure || typeof failure !== 'object' || (failure.kind !== 'not-found' && failure.kind !== 'not-executable')) return undefined;
  return failure as CommandFailure;
}
