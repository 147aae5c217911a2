import Dockerode from 'dockerode';
import https from 'node:https';
import { pipeline as streamPipeline, Readable, Transform, type Duplex } from 'node:stream';
import { BerthError, ValidationError, type FieldIssue } from '../common/errors.js';
import { LABELS } from '../common/labels.js';
import { DURATION_LIMITS, durationBoundRule } from '../common/units.js';
import { retry } from '../common/retry.js';
import { classifyEngineError, commandFailureIn, engineCertainlyDidNotAct, forcedRemovalConflict, type CommandFailure } from './classify.js';
import {
  containerEventFromRaw,
  containerInspectFromRaw,
  containerSummaryFromRaw,
  imageInspectFromRaw,
  imageRemovedFromRaw,
  imageSummaryFromRaw,
  isZeroTime,
  networkFromRaw,
  statsFromRaw,
  versionFromRaw,
  volumeFromRaw,
  waitResultFromRaw,
  type RawEvent,
  type RawInspect,
  type RawStats,
  storageDriverFromRaw,
} from './decode.js';
import type { EngineTls } from './connect.js';
import { hostKeyVerifier } from './known-hosts.js';
import { engineFactsFromRaw, engineKindOf, engineLimitation, engineUnsupported, type EngineKind, engineLogDriver, engineStatusFilter, familiarImageName, matchesLabelFilters, podmanImageRemoval, podmanLeavesHealthToCaller, PODMAN_DEFAULT_HEALTH_INTERVAL_MS, type EngineFacts, type RawInfoBody, type RawVersionBody } from './detect.js';
import { demultiplex, type DemuxedStreams } from './demux.js';
import { compareLogTimestamps, parseLogFrames, sinceParameter, type LogEntry } from './log-entries.js';
import type {
  ContainerCreateBody,
  ContainerInspect,
  ContainerListFilter,
  ContainerStatus,
  ContainerSummary,
  ContainerEvent,
  EngineVersion,
  ImageDeleteOutcome,
  ImageInspect,
  ImageSummary,
  NetworkInspect,
  NetworkSummary,
  RegistryAuth,
  RemovalOutcome,
  StatsSample,
  VolumeSummary,
  WaitResult,
  StorageDriverInfo,
  HealthcheckBody,
} from './types.js';

/** Default deadlines per kind of call, in milliseconds (each 1 ms to 24 h). Wait, stop and followed streams have none of their own. */
export interface EngineDeadlines {
  /** inspect, list, ping, version. Default 10 s. */
  readMs: number;
  /** create, start, kill, remove, pause, exec create. Default 30 s. */
  writeMs: number;
  /** Added to a stop's grace period. Default 30 s. */
  stopExtraMs: number;
}

export const DEFAULT_DEADLINES: Readonly<EngineDeadlines> = Object.freeze({ readMs: 10_000, writeMs: 30_000, stopExtraMs: 30_000 });

/**
 * The bounds of the engine's options. A deadline is held by AbortSignal.timeout (a Node timer), a
 * write deadline twice over by the driver's late-create guard, and a stop's by its grace period (up
 * to a day) plus `stopExtraMs`: a day each keeps all of them under the timer's 24.8-day limit.
 */
export const ENGINE_OPTION_BOUNDS = Object.freeze({
  deadlineMs: { minMs: 1, maxMs: DURATION_LIMITS.operationMs },
  readAttempts: { min: 1, max: 100 },
});

function engineOptionIssues(deadlines: EngineDeadlines, readAttempts: number): FieldIssue[] {
  const issues: FieldIssue[] = [];
  for (const key of ['readMs', 'writeMs', 'stopExtraMs'] as const) {
    const value = deadlines[key];
    const rule = typeof value === 'number' && Number.isFinite(value) ? durationBoundRule(value, ENGINE_OPTION_BOUNDS.deadlineMs) : 'must be a number of milliseconds';
    if (rule !== undefined) issues.push({ field: `deadlines.${key}`, rule });
  }
  const { min, max } = ENGINE_OPTION_BOUNDS.readAttempts;
  if (!Number.isInteger(readAttempts) || readAttempts < min || readAttempts > max) issues.push({ field: 'readAttempts', rule: `must be a whole number from ${min} to ${max}` });
  return issues;
}

/** The oldest engine API berth supports. */
export const MINIMUM_API_VERSION = '1.40';

export interface EngineOptions {
  /** Unix socket of the engine. Default /var/run/docker.sock. */
  socketPath?: string;
  /** TCP or SSH engine, e.g. from DOCKER_HOST=tcp://host:2375. */
  host?: string;
  port?: number;
  /** How `host` is reached: `http` (default), `https` (TLS, with `tls`) or `ssh` (docker-modem's ssh2 runs `docker system dial-stdio` there). */
  protocol?: 'http' | 'https' | 'ssh';
  /** TLS material (PEM text) for `https`: the CA the engine's certificate must chain to, the client certificate and key; `verify: false` skips the engine's certificate check. */
  tls?: EngineTls;
  /** The SSH user for `ssh`; default the local user. The SSH agent at SSH_AUTH_SOCK authenticates. */
  username?: string;
  /**
   * For `ssh`: the SSH agent's socket and a private key (PEM text), passed to ssh2, and the text of
   * `~/.ssh/known_hosts`: the server is accepted only with a host key it lists for the host.
   */
  ssh?: { agent?: string; privateKey?: string; knownHosts?: string };
  deadlines?: Partial<EngineDeadlines>;
  /** Attempts for idempotent reads on unavailable/timeout. Default 3; 1 to 100. */
  readAttempts?: number;
  /** The oldest engine API version checkCompatible accepts. Default MINIMUM_API_VERSION. */
  minimumApiVersion?: string;
}

export interface CallOptions {
  signal?: AbortSignal;
  /** Overrides the default deadline of this kind of call. */
  deadlineMs?: number;
}

/** Retries of an exec: attempts in all, and the backoff between them. */
export interface ExecCallOptions extends CallOptions {
  retry?: { attempts?: number; initialDelayMs?: number; maxDelayMs?: number };
}

export interface PingOptions extends CallOptions {
  /**
   * Attempts in all. Default: the engine's readAttempts (3). A health probe passes 1, so that it
   * answers within its own deadline instead of retrying inside it.
   */
  attempts?: number;
}

export type StartOutcome = 'started' | 'already-running';

export interface AttachedStreams extends DemuxedStreams {
  /** Present when stdin was requested; end it to close the task's stdin. */
  stdin?: NodeJS.WritableStream;
  /** Closes the attach connection. */
  close(): void;
  /** Resolves when the attach connection has ended, for whatever reason (the container stopped, the engine went away). */
  closed?: Promise<void>;
}

export interface ExecOptions {
  cmd: string[];
  tty?: boolean;
  stdin?: boolean;
  env?: string[];
  workdir?: string;
  user?: string;
}

export interface ExecSession extends AttachedStreams {
  id: string;
  resize(size: { rows: number; columns: number }): Promise<void>;
  /**
   * Resolves with the exec's exit code once its output has ended: the command's own, or, when the
   * command could not be started, 127 (not found) or 126 (not executable, or another start failure),
   * as a shell and the docker CLI give them.
   */
  exitCode(): Promise<number>;
  /** The exit code and, when the command could not be started, why (see `exitCode`). */
  exitStatus(): Promise<ExecExitStatus>;
}

/** What `inspectExec` tells of an exec instance. */
export interface ExecInspect {
  id: string;
  /** Whether its process is running now. */
  running: boolean;
  /** Its process id on the engine's host; 0 when it never started. */
  pid: number;
  /** Its exit code once it ended; null while it runs (or before it started). */
  exitCode: number | null;
  containerId: string;
}

export interface ExecExitStatus {
  exitCode: number;
  /** Set when the runtime could not start the command (not found, not executable). */
  commandFailure?: CommandFailure;
}

/** A followed stream of a container's events; `close()` ends it (so does the call's signal). */
export interface ContainerEventStream extends AsyncIterable<ContainerEvent> {
  close(): void;
}

export interface LogsOptions extends CallOptions {
  follow?: boolean;
  /** Unix seconds (fractional allowed). */
  since?: number;
  timestamps?: boolean;
  tty?: boolean;
}

/**
 * The complete, non-blank lines of a newline-delimited JSON stream (stats, events), one batch per
 * chunk that completes at least one line, so a reader may take only the newest of a batch.
 */
async function* jsonLineBatches(stream: Readable): AsyncGenerator<string[]> {
  let partial = '';
  for await (const chunk of stream) {
    partial += (chunk as Buffer).toString('utf8');
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    const complete = lines.filter((line) => line.trim() !== '');
    if (complete.length > 0) yield complete;
  }
}

/** Thrown when a followed response's connection ends before its body did; classified as unavailable. */
function connectionLost(what: string): Error {
  return Object.assign(new Error(`${what}: the connection to the engine closed before the answer was complete`), { code: 'ECONNRESET' });
}

/**
 * A followed response (logs, stats, events) whose connection dies before its body ended fails with
 * a connection error (classified as BERTH_ENGINE_UNAVAILABLE) rather than ending as if complete or
 * never settling: Node reports the cut as 'aborted' on the response, which docker-modem ignores.
 */
function failWhenCut(response: Readable, what: string): Readable {
  response.once('aborted', () => {
    if (!response.destroyed) response.destroy(connectionLost(what));
  });
  return response;
}

/**
 * Reads a wait's JSON body to its end. Settles on every way the response can finish: its end, an
 * error, the connection's abort or close (which docker-modem leaves unheard), or the caller's signal.
 */
function readWaitBody(response: Readable, signal: AbortSignal | undefined): Promise<{ StatusCode: number; Error?: { Message?: string } | null }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const settle = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      outcome();
    };
    const onAbort = (): void => {
      settle(() => reject(signal?.reason));
      response.destroy();
    };
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    response.on('data', (chunk: Buffer) => chunks.push(chunk));
    response.once('end', () => {
      const body = Buffer.concat(chunks).toString('utf8').trim();
      try {
        const parsed = JSON.parse(body) as { StatusCode?: unknown; Error?: { Message?: string } | null };
        if (typeof parsed.StatusCode !== 'number') throw new Error('no StatusCode');
        settle(() => resolve({ StatusCode: parsed.StatusCode as number, Error: parsed.Error }));
      } catch {
        // An empty or cut body: the engine went away while the container ran.
        settle(() => reject(connectionLost('wait container')));
      }
    });
    response.once('error', (error) => settle(() => reject(error)));
    response.once('aborted', () => settle(() => reject(connectionLost('wait container'))));
    response.once('close', () => settle(() => reject(connectionLost('wait container'))));
  });
}

/**
 * The create body as the engine takes it: a `local` log driver (berth's default) becomes `json-file`
 * on Podman, which has no `local` (see detect.ts `engineLogDriver`).
 */
function adaptCreateBody(kind: EngineKind, body: ContainerCreateBody): ContainerCreateBody {
  const log = body.HostConfig?.LogConfig;
  if (log === undefined) return body;
  const driver = engineLogDriver(kind, log.Type);
  if (driver === log.Type) return body;
  // `compress` is the local driver's own option.
  const config = Object.fromEntries(Object.entries(log.Config).filter(([key]) => key !== 'compress'));
  return { ...body, HostConfig: { ...body.HostConfig, LogConfig: { Type: driver, Config: config } } };
}

/** dockerode's connection options for an engine's address (unix socket, TCP, TLS or SSH). */
function dockerodeOptions(options: EngineOptions, onHostKeyRefused: (reason: string) => void): Dockerode.DockerOptions {
  if (!options.host) return { socketPath: options.socketPath ?? '/var/run/docker.sock' };
  const protocol = options.protocol ?? 'http';
  if (protocol === 'ssh') {
    const port = options.port ?? 22;
    return {
      host: options.host,
      port,
      protocol: 'ssh',
      ...(options.username === undefined ? {} : { username: options.username }),
      sshOptions: {
        ...(options.ssh?.agent === undefined ? {} : { agent: options.ssh.agent }),
        ...(options.ssh?.privateKey === undefined ? {} : { privateKey: options.ssh.privateKey }),
        // As ssh does for the docker CLI: a server whose host key known_hosts does not list for it is refused.
        hostVerifier: hostKeyVerifier(options.ssh?.knownHosts, options.host, port, onHostKeyRefused),
      } as Dockerode.DockerOptions['sshOptions'],
    };
  }
  if (protocol === 'http') return { host: options.host, port: options.port ?? 2375, protocol: 'http' };
  const tls = options.tls ?? {};
  return {
    host: options.host,
    port: options.port ?? 2376,
    protocol: 'https',
    ...(tls.ca === undefined ? {} : { ca: tls.ca }),
    ...(tls.cert === undefined ? {} : { cert: tls.cert }),
    ...(tls.key === undefined ? {} : { key: tls.key }),
    // Without verification (DOCKER_TLS alone, a context's SkipTLSVerify) the engine's certificate is not checked.
    ...(tls.verify === false ? { agent: new https.Agent({ rejectUnauthorized: false }) } : {}),
  };
}

/**
 * Lets a call pass whose "failure" is a success status docker-modem did not expect: Podman answers
 * a resize with 201 where Docker answers 200. Anything else is thrown on.
 */
function unlessSuccessStatus(error: unknown): void {
  const status = error instanceof BerthError ? error.context.statusCode : undefined;
  if (typeof status === 'number' && status >= 200 && status < 300) return;
  throw error;
}

/** The fields of `value` that are not undefined. */
function definedOnly<T extends Record<string, number | undefined>>(value: T): Partial<Record<keyof T, number>> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<Record<keyof T, number>>;
}

/** docker-modem's dial, as far as berth uses it directly. */
interface ModemDial {
  dial(options: Record<string, unknown>, callback: (error: unknown, stream: Duplex) => void): void;
}

/**
 * Removes a container at once, running or not, on Podman. Docker's forced removal kills with
 * SIGKILL; Podman's compatible one stops the container first and waits its stop timeout (10 s for
 * a task that ignores SIGTERM, as a shell as PID 1 does), which its own endpoint skips with
 * `timeout=0`. The kind is known by then: berth learns it at its first create.
 */
function podmanRemoveNow(docker: Dockerode, id: string, abortSignal: AbortSignal | undefined): Promise<unknown> {
  const modem = (docker as unknown as { modem: ModemDial }).modem;
  return new Promise((resolve, reject) => {
    modem.dial(
      {
        path: `/v4.0.0/libpod/containers/${encodeURIComponent(id)}?`,
        method: 'DELETE',
        options: { force: true, v: true, timeout: 0 },
        abortSignal,
        statusCodes: { 200: true, 204: true, 404: 'no such container', 409: 'conflict', 500: 'server error' },
      },
      (error, data) => (error ? reject(error instanceof Error ? error : new Error(String(error))) : resolve(data)),
    );
  });
}

/**
 * A hijacked POST (attach) with an empty body (Content-Length: 0) and its parameters in the query
 * only: docker-modem's own requests carry them as a JSON body too (or a chunked one), which Podman
 * reads as the container's stdin (or waits on). An empty Buffer as the request's "file" is the one
 * way docker-modem sends no body with a length.
 */
function dialHijacked(docker: Dockerode, path: string, query: Record<string, boolean>, signal: AbortSignal): Promise<Duplex> {
  const modem = (docker as unknown as { modem: ModemDial }).modem;
  return new Promise((resolve, reject) => {
    modem.dial(
      {
        path,
        method: 'POST',
        isStream: true,
        hijack: true,
        openStdin: query.stdin,
        abortSignal: signal,
        file: Buffer.alloc(0),
        headers: { 'Content-Type': 'application/vnd.docker.raw-stream' },
        statusCodes: { 200: true, 101: true, 404: 'no such container', 409: 'container is not running', 500: 'server error' },
        options: { _query: query, abortSignal: signal },
      },
      (error, stream) => (error ? reject(error instanceof Error ? error : new Error(String(error))) : resolve(stream)),
    );
  });
}

function compareVersions(a: string, b: string): number {
  const [aMajor = 0, aMinor = 0] = a.split('.').map(Number);
  const [bMajor = 0, bMinor = 0] = b.split('.').map(Number);
  return aMajor - bMajor || aMinor - bMinor;
}

/**
 * The Docker Engine port: the only code in berth that speaks the engine's API. Every call has a
 * deadline and takes an AbortSignal; every failure is a BerthError classified by status or socket error.
 */
export class Engine {
  readonly #docker: Dockerode;
  readonly #deadlines: EngineDeadlines;
  readonly #readAttempts: number;
  readonly #minimumApiVersion: string;
  readonly #socketPath: string | undefined;
  #facts: EngineFacts | undefined;
  /** Which engine it is, from /version alone (checkCompatible, or the first need): cheaper than the facts (Podman's /info takes a second). */
  #kind: EngineKind | undefined;
  /** Why the SSH server's host key was last refused (known_hosts), for the error that follows. */
  #sshRefusal: string | undefined;
  /** Podman containers this engine created with a health check, until their start (see #pumpHealth). */
  readonly #createdWithCheck = new Set<string>();
  /** The containers whose health checks this process runs (see #pumpHealth). */
  readonly #healthPumps = new Set<string>();
  #detecting: Promise<EngineFacts> | undefined;

  constructor(options: EngineOptions = {}) {
    this.#socketPath = options.host ? undefined : (options.socketPath ?? '/var/run/docker.sock');
    this.#docker = new Dockerode(dockerodeOptions(options, (reason) => (this.#sshRefusal = reason)));
    this.#deadlines = { ...DEFAULT_DEADLINES, ...(options.deadlines ?? {}) };
    this.#readAttempts = options.readAttempts ?? 3;
    const issues = engineOptionIssues(this.#deadlines, this.#readAttempts);
    if (issues.length > 0) throw new ValidationError(issues);
    this.#minimumApiVersion = options.minimumApiVersion ?? MINIMUM_API_VERSION;
  }

  /** The unix socket the engine is reached through; undefined when it is reached over TCP. Binds must not expose it. */
  get socketPath(): string | undefined {
    return this.#socketPath;
  }

  get deadlines(): Readonly<EngineDeadlines> {
    return this.#deadlines;
  }

  /** Runs one engine call with a deadline joined to the caller's signal, classifying its failure. */
  async #call<T>(
    operation: string,
    deadlineMs: number | undefined,
    options: CallOptions,
    run: (signal: AbortSignal | undefined) => Promise<T>,
    context?: Record<string, unknown>,
  ): Promise<T> {
    const deadline = options.deadlineMs ?? deadlineMs;
    const signals = [options.signal, deadline === undefined ? undefined : AbortSignal.timeout(deadline)].filter(
      (s): s is AbortSignal => s !== undefined,
    );
    const signal = signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
    try {
      // Racing the signal keeps the deadline even for the few dockerode calls that ignore abortSignal.
      return await (signal ? raceAbort(run(signal), signal) : run(signal));
    } catch (error) {
      const classified = classifyEngineError(error, { operation, callerSignal: options.signal, deadlineMs: deadline, context });
      const refusal = this.#sshRefusal;
      if (classified.code === 'BERTH_ENGINE_SSH' && refusal !== undefined) {
        this.#sshRefusal = undefined;
        throw new BerthError('BERTH_ENGINE_SSH', `${operation}: ${refusal}`, { cause: error, context: classified.context });
      }
      throw classified;
    }
  }

  /** An idempotent read: retried with backoff when the engine is unavailable or slow. */
  #read<T>(
    operation: string,
    options: CallOptions & { attempts?: number },
    run: (signal: AbortSignal | undefined) => Promise<T>,
    context?: Record<string, unknown>,
  ): Promise<T> {
    return retry(() => this.#call(operation, this.#deadlines.readMs, options, run, context), {
      attempts: options.attempts ?? this.#readAttempts,
      initialDelayMs: 100,
      maxDelayMs: 1000,
      signal: options.signal,
      shouldRetry: (error) =>
        error instanceof BerthError && (error.code === 'BERTH_ENGINE_UNAVAILABLE' || error.code === 'BERTH_ENGINE_TIMEOUT'),
    });
  }

  /**
   * Opens a call whose answer is a long-lived stream (attach, exec, stats, pull). The deadline covers
   * the opening only; the caller's signal closes the stream at any time. One controller owns the
   * connection, so a call that gave up (deadline passed, caller aborted) also hangs up its request,
   * and a stream that arrives after that is destroyed at once: no late connection outlives its call
   * or keeps the process alive.
   */
  async #openStream<T extends Readable | Duplex>(
    operation: string,
    deadlineMs: number,
    options: CallOptions,
    open: (connection: AbortSignal) => Promise<T>,
    context?: Record<string, unknown>,
  ): Promise<T> {
    const connection = new AbortController();
    let stream: T | undefined;
    let abandoned = false;
    const onCallerAbort = (): void => {
      connection.abort(options.signal?.reason);
      stream?.destroy();
    };
    const release = (): void => options.signal?.removeEventListener('abort', onCallerAbort);
    if (options.signal?.aborted) connection.abort(options.signal.reason);
    else options.signal?.addEventListener('abort', onCallerAbort, { once: true });
    const opening = open(connection.signal).then((opened) => {
      if (abandoned) opened.destroy();
      return opened;
    });
    try {
      stream = await this.#call(operation, deadlineMs, options, () => opening, context);
    } catch (error) {
      abandoned = true;
      connection.abort();
      release();
      throw error;
    }
    stream.once('close', release);
    return stream;
  }

  async ping(options: PingOptions = {}): Promise<void> {
    await this.#read('ping', options, (abortSignal) => (this.#docker as unknown as SignalledDocker).ping({ abortSignal }));
  }

  async version(options: CallOptions = {}): Promise<EngineVersion> {
    const raw = await this.#read('version', options, (abortSignal) => (this.#docker as unknown as SignalledDocker).version({ abortSignal }));
    return versionFromRaw(raw);
  }

  /** The engine's storage driver (GET /info), and whether it can bound a container's writable layer. */
  async storageDriver(options: CallOptions = {}): Promise<StorageDriverInfo> {
    const raw = await this.#read('info', options, (abortSignal) => (this.#docker as unknown as SignalledDocker).info({ abortSignal }));
    return storageDriverFromRaw(raw);
  }

  /**
   * What the engine is (Docker or Podman), its versions, cgroup version, storage driver and security
   * options, from GET /version and GET /info; learnt once and kept (`refresh` asks again). Berth
   * adapts to it where the engines differ (see detect.ts).
   */
  async detect(options: CallOptions & { refresh?: boolean } = {}): Promise<EngineFacts> {
    if (this.#facts !== undefined && options.refresh !== true) return this.#facts;
    if (this.#detecting !== undefined && options.refresh !== true) return this.#detecting;
    const detecting = (async () => {
      const docker = this.#docker as unknown as SignalledDocker;
      // One after the other: an engine that does not answer fails the first, as a version check alone would.
      const version = await this.#read('version', options, (abortSignal) => docker.version({ abortSignal }) as Promise<RawVersionBody>);
      const info = await this.#read('info', options, (abortSignal) => docker.info({ abortSignal }));
      return engineFactsFromRaw(version, info);
    })();
    this.#detecting = detecting;
    try {
      this.#facts = await detecting;
      this.#kind = this.#facts.kind;
      return this.#facts;
    } finally {
      if (this.#detecting === detecting) this.#detecting = undefined;
    }
  }

  /** The engine's facts once `detect` learnt them; undefined before. */
  get facts(): EngineFacts | undefined {
    return this.#facts;
  }

  /** Which engine it is (GET /version), learnt once. */
  async #learnKind(options: CallOptions): Promise<EngineKind> {
    if (this.#kind !== undefined) return this.#kind;
    const raw = await this.#read('version', options, (abortSignal) => (this.#docker as unknown as SignalledDocker).version({ abortSignal }) as Promise<RawVersionBody>);
    this.#kind = engineKindOf(raw);
    return this.#kind;
  }

  /**
   * Checks that the engine answers and speaks at least the minimum API version, and learns which
   * engine it is (GET /version, asked afresh: the engine behind an address may have been replaced).
   * The rest of the facts (`detect`, GET /info) are asked only where berth needs them.
   */
  async checkCompatible(options: CallOptions = {}): Promise<EngineVersion> {
    const raw = await this.#read('version', options, (abortSignal) => (this.#docker as unknown as SignalledDocker).version({ abortSignal }) as Promise<RawVersionBody>);
    const kind = engineKindOf(raw);
    if (this.#kind !== undefined && this.#kind !== kind) this.#facts = undefined;
    this.#kind = kind;
    const facts = engineFactsFromRaw(raw, {});
    const version: EngineVersion = { apiVersion: facts.apiVersion, version: facts.version, os: facts.os, arch: facts.arch, engine: kind };
    const minimum = this.#minimumApiVersion;
    if (compareVersions(version.apiVersion, minimum) < 0) {
      throw new BerthError(
        'BERTH_ENGINE_VERSION',
        `the engine speaks API ${version.apiVersion} (${facts.name} ${facts.version}); berth needs API ${minimum} or newer`,
        { context: { apiVersion: version.apiVersion, minimumApiVersion: minimum, engine: facts.name, engineVersion: facts.version } },
      );
    }
    return version;
  }

  async createContainer(name: string, requested: ContainerCreateBody, options: CallOptions = {}): Promise<string> {
    // The engine is learnt before the create only where the body needs it (a health check to merge
    // with its image's on Podman); otherwise on the create's failure, so that on Docker a create
    // costs no more requests than before. Podman refuses the `local` log driver: learnt then, the
    // create is made again as Podman takes it.
    let kind = this.#kind;
    const check = requested.Healthcheck;
    if (kind === undefined && check !== undefined && check.Test[0] !== 'NONE') kind = await this.#learnKind(options);
    const create = async (body: ContainerCreateBody): Promise<string> =>
      (
        await this.#call(
          'create container',
          this.#deadlines.writeMs,
          options,
          (abortSignal) => this.#docker.createContainer({ ...(body as unknown as Dockerode.ContainerCreateOptions), name, abortSignal }),
          { name },
        )
      ).id;
    const adapt = (known: EngineKind): Promise<ContainerCreateBody> => this.#withImageHealthcheck(known, adaptCreateBody(known, requested), options);
    try {
      const body = kind === undefined ? requested : await adapt(kind);
      const id = await create(body);
      // On Podman its start then begins the health pump (#pumpHealth); other containers get theirs at their first inspect.
      const test = body.Healthcheck?.Test[0];
      if (kind === 'podman' && (test === 'CMD' || test === 'CMD-SHELL')) this.#createdWithCheck.add(id);
      return id;
    } catch (error) {
      // Only a refusal that Podman's differences can explain (a `local` log driver) is worth asking the engine about.
      const refused = error instanceof BerthError && (error.code === 'BERTH_ENGINE_SERVER_ERROR' || error.code === 'BERTH_ENGINE_BAD_REQUEST');
      if (kind === undefined && refused && requested.HostConfig?.LogConfig?.Type === 'local') {
        kind = await this.#learnKind(options).catch(() => undefined);
        if (kind === 'podman') {
          const adapted = await adapt(kind);
          if (adapted !== requested) {
            try {
              return await create(adapted);
            } catch (again) {
              throw await this.#podmanCreateConflict(name, again, options);
            }
          }
        }
      }
      throw kind === 'podman' ? await this.#podmanCreateConflict(name, error, options) : error;
    }
  }

  /**
   * Docker merges a container's health check with its image's: a check without a command takes the
   * image's, and each setting left at 0 takes the image's. Podman takes the container's as it is
   * (its own defaults for the rest), so on Podman berth does the merge itself, from the image's check.
   */
  async #withImageHealthcheck(kind: EngineKind, body: ContainerCreateBody, options: CallOptions): Promise<ContainerCreateBody> {
    const check = body.Healthcheck;
    if (kind !== 'podman' || check === undefined || check.Test[0] === 'NONE') return body;
    // Podman's compatible image inspect leaves the check out; its own inspect has it.
    const modem = (this.#docker as unknown as { modem: ModemDial }).modem;
    const image = await this.#read('inspect image', options, (abortSignal) =>
      new Promise<{ Healthcheck?: Partial<HealthcheckBody> }>((resolve, reject) => {
        modem.dial(
          { path: `/v4.0.0/libpod/images/${encodeURIComponent(body.Image)}/json`, method: 'GET', abortSignal, statusCodes: { 200: true, 404: 'no such image', 500: 'server error' }, options: {} },
          (error, data) => (error ? reject(error instanceof Error ? error : new Error(String(error))) : resolve(data as unknown as { Healthcheck?: Partial<HealthcheckBody> })),
        );
      }), { image: body.Image }).catch(() => ({}) as { Healthcheck?: Partial<HealthcheckBody> });
    // (An image that cannot be read is the create's to report.)
    const own = image.Healthcheck ?? undefined;
    if (own === undefined) return body;
    const pick = (mine: number | undefined, theirs: number | undefined): number | undefined => (mine !== undefined && mine > 0 ? mine : theirs);
    const merged: HealthcheckBody = {
      Test: check.Test.length > 0 ? check.Test : (own.Test ?? []),
      ...definedOnly({ Interval: pick(check.Interval, own.Interval), Timeout: pick(check.Timeout, own.Timeout), StartPeriod: pick(check.StartPeriod, own.StartPeriod), Retries: pick(check.Retries, own.Retries) }),
    };
    return { ...body, Healthcheck: merged };
  }

  /**
   * Podman answers a create whose name is taken with a 500, where Docker answers 409. Told apart by
   * the engine's state, not its words: when a container holds the name after the failed create, the
   * failure is the conflict Docker would have reported (and the task driver's adoption rules apply).
   */
  async #podmanCreateConflict(name: string, error: unknown, options: CallOptions): Promise<unknown> {
    if (!(error instanceof BerthError) || error.code !== 'BERTH_ENGINE_SERVER_ERROR') return error;
    const holder = await this.inspectContainer(name, options).catch(() => undefined);
    if (holder === undefined) return error;
    return new BerthError('BERTH_ENGINE_CONFLICT', `create container: the name ${name} is already in use by container ${holder.id}`, {
      cause: error,
      context: { ...error.context, statusCode: 409, engineActed: false, holderId: holder.id },
    });
  }

  /** Starts a container; "already started" (304) is an outcome, not an error. */
  async startContainer(id: string, options: CallOptions = {}): Promise<StartOutcome> {
    try {
      await this.#call('start container', this.#deadlines.writeMs, options, (abortSignal) => this.#docker.getContainer(id).start({ abortSignal }), { id });
      // The inspect starts the health pump where the engine runs no checks of its own.
      if (this.#createdWithCheck.delete(id)) void this.inspectContainer(id).catch(() => undefined);
      return 'started';
    } catch (error) {
      if (error instanceof BerthError && error.code === 'BERTH_ENGINE_NOT_MODIFIED') return 'already-running';
      throw error;
    }
  }

  /**
   * Runs a berth container's health check at its interval, for an engine that runs none itself
   * (Podman without systemd: see detect.ts `podmanLeavesHealthToCaller`), through Podman's own
   * "run the health check now" endpoint, which records the result in the container's health state
   * as Podman's timer would. Started for a running berth container (io.berth.managed) with a check
   * when berth starts or inspects it, so a container an earlier process started (an agent before its
   * restart) is checked again from its first inspect. One pump a container; it ends when the
   * container stops or goes away, and its timers never keep the process alive.
   */
  #pumpHealth(inspect: ContainerInspect): void {
    if (this.#kind !== 'podman' || !inspect.running || inspect.labels[LABELS.managed] !== 'true') return;
    const test = inspect.healthcheck?.test[0];
    if ((test !== 'CMD' && test !== 'CMD-SHELL') || this.#healthPumps.has(inspect.id)) return;
    const facts = this.#facts;
    if (facts === undefined) {
      // Whether Podman runs the checks itself is told by its cgroup driver (GET /info): asked once, then decided.
      void this.detect().then(() => this.#pumpHealth(inspect), () => undefined);
      return;
    }
    if (!podmanLeavesHealthToCaller(facts)) return;
    this.#healthPumps.add(inspect.id);
    const modem = (this.#docker as unknown as { modem: ModemDial }).modem;
    const runOnce = (): Promise<'continue' | 'stop'> =>
      new Promise((resolve) => {
        modem.dial(
          {
            path: `/v4.0.0/libpod/containers/${encodeURIComponent(inspect.id)}/healthcheck`,
            method: 'GET',
            abortSignal: AbortSignal.timeout(this.#deadlines.writeMs),
            statusCodes: { 200: true, 404: 'no such container', 409: 'container not running', 500: 'server error' },
            options: {},
          },
          (error) => {
            const status = (error as { statusCode?: number } | null)?.statusCode;
            resolve(status === 404 || status === 409 ? 'stop' : 'continue');
          },
        );
      });
    const intervalMs = (inspect.healthcheck?.intervalNs ?? 0) > 0 ? inspect.healthcheck!.intervalNs / 1_000_000 : PODMAN_DEFAULT_HEALTH_INTERVAL_MS;
    void (async () => {
      try {
        for (;;) {
          await new Promise<void>((resolve) => setTimeout(resolve, intervalMs).unref());
          if ((await runOnce()) === 'stop') return;
        }
      } finally {
        this.#healthPumps.delete(inspect.id);
      }
    })();
  }

  /**
   * Extracts a tar archive into a container's filesystem at `path` (docker's PUT
   * /containers/{id}/archive, `docker cp` into a container): the archive is piped to the engine as
   * it arrives, never buffered. `path` must be an existing directory in the container. A documented
   * exception to the default deadline: an archive takes as long as its source takes to deliver it,
   * so only `options.deadlineMs` or the caller's signal bound it. Not retried (the source is consumed).
   */
  async putArchive(containerId: string, path: string, tar: Readable, options: CallOptions = {}): Promise<void> {
    await this.#call(
      'put archive',
      undefined,
      options,
      async (abortSignal) => {
        // The engine's answer must not outrun a source that failed: the source's error wins.
        let sourceError: unknown;
        const onSourceError = (error: unknown): void => {
          sourceError ??= error;
        };
        tar.once('error', onSourceError);
        try {
          await this.#docker.getContainer(containerId).putArchive(tar, { path, abortSignal });
        } catch (error) {
          throw sourceError ?? error;
        } finally {
          tar.off('error', onSourceError);
        }
        if (sourceError !== undefined) throw sourceError;
      },
      { id: containerId, path },
    );
  }

  async inspectContainer(idOrName: string, options: CallOptions = {}): Promise<ContainerInspect> {
    const raw = await this.#read(
      'inspect container',
      options,
      (abortSignal) => this.#docker.getContainer(idOrName).inspect({ abortSignal }) as unknown as Promise<RawInspect>,
      { id: idOrName },
    );
    const inspect = containerInspectFromRaw(raw);
    this.#pumpHealth(inspect);
    return inspect;
  }

  async listContainers(filter: ContainerListFilter = {}, options: CallOptions = {}): Promise<ContainerSummary[]> {
    const filters: Record<string, string[]> = {};
    if (filter.labels?.length) filters.label = filter.labels;
    if (filter.names?.length) filters.name = filter.names;
    if (filter.status?.length) filters.status = this.#kind === undefined ? [...filter.status] : engineStatusFilter(this.#kind, filter.status);
    // Only states the engine never has were asked for: nothing can match.
    if (filter.status?.length && filters.status?.length === 0) return [];
    const list = (): Promise<Dockerode.ContainerInfo[]> =>
      this.#read('list containers', options, (abortSignal) =>
        this.#docker.listContainers({ all: filter.all ?? true, filters: JSON.stringify(filters), abortSignal, ...(filter.withSize ? { size: true } : {}) }),
      );
    let rows: Dockerode.ContainerInfo[];
    try {
      rows = await list();
    } catch (error) {
      // Podman refuses a status it does not have (500): learnt here, on the error, so that Docker's lists cost no more requests.
      if (!(error instanceof BerthError) || error.code !== 'BERTH_ENGINE_SERVER_ERROR' || filter.status === undefined || this.#kind !== undefined) throw error;
      if (engineStatusFilter('podman', filter.status).length === filter.status.length) throw error;
      const statuses = engineStatusFilter(await this.#learnKind(options), filter.status);
      if (statuses.length === filter.status.length) throw error;
      if (statuses.length === 0) return [];
      filters.status = statuses;
      rows = await list();
    }
    return rows.map((row) => containerSummaryFromRaw(row, filter.withSize ?? false));
  }

  /**
   * Waits for the container to stop. No deadline of its own: a task may run for days. The condition
   * "next-exit" is not used because berth may wait on a container that has already exited.
   *
   * The engine answers the headers at once and the body when the container stops. Dialled as a
   * stream and read here, not through dockerode's wait(): docker-modem listens only for the body's
   * data and end, so a connection that dies in between (the engine killed) would never settle. Here
   * it rejects with a retryable BERTH_ENGINE_UNAVAILABLE, and the caller's signal closes it.
   */
  async waitContainer(id: string, options: CallOptions = {}): Promise<WaitResult> {
    const raw = await this.#call('wait container', options.deadlineMs, options, (abortSignal) =>
      new Promise<{ StatusCode: number; Error?: { Message?: string } | null }>((resolve, reject) => {
        this.#docker.modem.dial(
          {
            path: `/containers/${id}/wait?`,
            method: 'POST',
            isStream: true,
            abortSignal,
            statusCodes: { 200: true, 400: 'bad parameter', 404: 'no such container', 500: 'server error' },
            options: {},
          },
          (error, result) => {
            if (error) return reject(error);
            readWaitBody(result as Readable, abortSignal).then(resolve, reject);
          },
        );
      }),
    { id });
    return waitResultFromRaw(raw);
  }

  /**
   * Stops with the container's stop signal, then SIGKILL after graceSec. Not-modified and not-found
   * are success: `not-running`, the container had stopped (or gone) before the engine was asked.
   */
  async stopContainer(id: string, graceSec: number, options: CallOptions = {}): Promise<'stopped' | 'not-running'> {
    try {
      await this.#call('stop container', graceSec * 1000 + this.#deadlines.stopExtraMs, options, (abortSignal) =>
        this.#docker.getContainer(id).stop({ t: graceSec, abortSignal }),
      { id });
      return 'stopped';
    } catch (error) {
      if (error instanceof BerthError && (error.code === 'BERTH_ENGINE_NOT_MODIFIED' || error.code === 'BERTH_ENGINE_NOT_FOUND')) return 'not-running';
      throw error;
    }
  }

  /** Sends a signal. A container that is not running or gone counts as done. */
  async killContainer(id: string, signal = 'SIGKILL', options: CallOptions = {}): Promise<void> {
    try {
      await this.#call('kill container', this.#deadlines.writeMs, options, (abortSignal) =>
        this.#docker.getContainer(id).kill({ signal, abortSignal }),
      { id, signal });
    } catch (error) {
      if (error instanceof BerthError && (error.code === 'BERTH_ENGINE_NOT_FOUND' || error.code === 'BERTH_ENGINE_CONFLICT')) return;
      throw error;
    }
  }

  /**
   * Force-removes a container and its anonymous volumes. Not-found is success; so is a removal the
   * engine is finishing already (a 409 whose container state says so: `forcedRemovalConflict`).
   */
  async removeContainer(id: string, options: CallOptions = {}): Promise<'removed' | 'absent'> {
    this.#createdWithCheck.delete(id);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#call('remove container', this.#deadlines.writeMs, options, (abortSignal) =>
          this.#kind === 'podman' ? podmanRemoveNow(this.#docker, id, abortSignal) : this.#docker.getContainer(id).remove({ force: true, v: true, abortSignal }),
        { id });
        return 'removed';
      } catch (error) {
        if (error instanceof BerthError && error.code === 'BERTH_ENGINE_NOT_FOUND') return 'absent';
        if (!(error instanceof BerthError && error.code === 'BERTH_ENGINE_CONFLICT')) throw error;
        if (forcedRemovalConflict(await this.#statusAfterConflict(id, options, error)) === 'removed') return 'removed';
        if (attempt === 2) throw error;
      }
    }
  }

  /** The container's status after a conflict; undefined when it is gone. An inspect that fails throws the conflict itself. */
  async #statusAfterConflict(id: string, options: CallOptions, conflict: BerthError): Promise<ContainerStatus | undefined> {
    try {
      return (await this.inspectContainer(id, options)).status;
    } catch (error) {
      if (error instanceof BerthError && error.code === 'BERTH_ENGINE_NOT_FOUND') return undefined;
      throw conflict;
    }
  }

  /**
   * Freezes a container. Where the engine cannot (rootless Podman on cgroup v1: detect.ts
   * `engineLimitation`), BERTH_ENGINE_UNSUPPORTED names the engine and why, not the runtime's words;
   * the engine is asked what it is only then, so that Docker's pauses cost no more requests.
   */
  async pauseContainer(id: string, options: CallOptions = {}): Promise<void> {
    const refuse = (facts: EngineFacts | undefined): void => {
      const limitation = facts === undefined ? undefined : engineLimitation(facts, 'pause');
      if (facts !== undefined && limitation !== undefined) throw engineUnsupported(facts, 'pause', limitation);
    };
    refuse(this.#facts);
    try {
      await this.#call('pause container', this.#deadlines.writeMs, options, (abortSignal) => this.#docker.getContainer(id).pause({ abortSignal }), { id });
    } catch (error) {
      if (this.#facts === undefined && error instanceof BerthError && (error.code === 'BERTH_ENGINE_SERVER_ERROR' || error.code === 'BERTH_ENGINE_CONFLICT')) {
        refuse(await this.detect(options).catch(() => undefined));
      }
      throw error;
    }
  }

  async unpauseContainer(id: string, options: CallOptions = {}): Promise<void> {
    await this.#call('unpause container', this.#deadlines.writeMs, options, (abortSignal) => this.#docker.getContainer(id).unpause({ abortSignal }), { id });
  }

  /**
   * Sets the window size of a running container's TTY (`POST /containers/{id}/resize`); the engine
   * passes it on as SIGWINCH to the process. Refused (BERTH_ENGINE_SERVER_ERROR or NOT_FOUND) for a
   * container without a TTY or that is not running. Not retried: the next size change sends it again.
   */
  async resizeContainer(id: string, size: { rows: number; columns: number }, options: CallOptions = {}): Promise<void> {
    await this.#call('resize container', this.#deadlines.writeMs, options, (abortSignal) =>
      this.#docker.getContainer(id).resize({ h: size.rows, w: size.columns, ...signalOption(abortSignal) }),
    { id }).catch(unlessSuccessStatus);
  }

  /**
   * Attaches to stdout/stderr (and stdin when asked; `logs` replays the container's log first). The
   * task driver attaches before start, so that no output is lost; the agent's attach route attaches
   * to a running container, from then on. The connection has no deadline once established; the
   * signal closes it. A connection that arrives after the deadline is closed at once. Not retried here: the caller decides (an attach before
   * start is safe to repeat; see TaskDriver.start).
   */
  async attachContainer(id: string, options: CallOptions & { stdin?: boolean; tty?: boolean; logs?: boolean } = {}): Promise<AttachedStreams> {
    const query = {
      stream: true,
      stdout: true,
      stderr: true,
      stdin: options.stdin ?? false,
      // The engine's log first, then the live output (docker attach --logs): the engine replays, then attaches.
      ...(options.logs ? { logs: true } : {}),
    };
    // docker-modem sends the attach's options as a JSON body too. Docker ignores it; Podman hands
    // what follows the request's head to the container's stdin, body included (and waits for the
    // end of a chunked one), so on Podman the request says it has an empty body.
    const kind = options.stdin ? await this.#learnKind(options) : this.#kind;
    const stream = await this.#openStream('attach container', this.#deadlines.writeMs, options, (connection) =>
      kind === 'podman'
        ? dialHijacked(this.#docker, `/containers/${encodeURIComponent(id)}/attach?`, query, connection)
        : (this.#docker.getContainer(id).attach({
            ...query,
            // Hijacked, the output arrives on the raw socket: Node's HTTP parser would copy every byte.
            hijack: true,
            abortSignal: connection,
          }) as unknown as Promise<Duplex>),
    { id });
    return this.#splitOutput(stream, options.tty ?? false, options.stdin ?? false);
  }

  #splitOutput(stream: Duplex, tty: boolean, withStdin: boolean): AttachedStreams {
    const close = (): void => void stream.destroy();
    const closed = new Promise<void>((resolve) => {
      stream.once('end', resolve);
      stream.once('close', resolve);
    });
    if (tty) {
      // A TTY merges both streams into one raw byte stream with no frame headers.
      const { stdout, stderr } = passthroughTty(stream);
      return { stdout, stderr, stdin: withStdin ? stream : undefined, close, closed };
    }
    const { stdout, stderr } = demultiplex(stream);
    return { stdout, stderr, stdin: withStdin ? stream : undefined, close, closed };
  }

  /** The engine's log of a container: used to recover output written while nobody was attached. */
  async containerLogs(id: string, options: LogsOptions = {}): Promise<DemuxedStreams> {
    const stream = await this.#openLogs(id, options);
    return options.tty ? passthroughTty(stream) : demultiplex(stream);
  }

  /**
   * The container's log as entries with the engine's timestamps, after `since` (an engine
   * timestamp, exclusive at nanosecond precision), optionally following until the container stops.
   * Requires a log driver that can be read back (local, json-file) and a container without a TTY.
   */
  async *logEntries(id: string, options: CallOptions & { since?: string; follow?: boolean } = {}): AsyncGenerator<LogEntry> {
    // Podman reads a fractional `since` as nothing to send (and stamps its log to the second): the
    // engine is asked from the start of since's second, and the entries up to since itself are
    // skipped here, as they would be anyway. On Docker this re-reads at most a second of the log.
    const since = options.since === undefined ? 0 : sinceParameter(options.since).split('.')[0]!;
    const stream = await this.#openLogs(id, { ...options, since, timestamps: true });
    try {
      for await (const entry of parseLogFrames(stream)) {
        // The engine's since is inclusive; berth's is exclusive, so a resumed reader sees no line twice.
        if (options.since !== undefined && compareLogTimestamps(entry.timestamp, options.since) <= 0) continue;
        yield entry;
      }
    } catch (error) {
      if (options.signal?.aborted) return;
      throw classifyEngineError(error, { operation: 'container logs', callerSignal: options.signal, context: { id } });
    } finally {
      stream.destroy();
    }
  }

  #openLogs(id: string, options: Omit<LogsOptions, 'since'> & { since?: number | string }): Promise<Readable> {
    return this.#call('container logs', this.#deadlines.writeMs, options, (abortSignal) =>
      // Not dockerode's logs(): without follow it buffers the whole log and JSON-parses it (a TTY
      // log reading "42" comes back as the number 42). Dialling as a stream keeps the raw bytes.
      new Promise<Readable>((resolve, reject) => {
        this.#docker.modem.dial(
          {
            path: `/containers/${id}/logs?`,
            method: 'GET',
            isStream: true,
            abortSignal: options.follow ? options.signal : abortSignal,
            statusCodes: { 200: true, 404: 'no such container', 500: 'server error' },
            options: {
              follow: options.follow ?? false,
              stdout: true,
              stderr: true,
              since: options.since ?? 0,
              timestamps: options.timestamps ?? false,
            },
          },
          (error, result) => (error ? reject(error) : resolve(failWhenCut(result as Readable, 'container logs'))),
        );
      }),
    { id });
  }

  /**
   * A tar stream of `path` in the container (docker's GET /containers/{id}/archive, what `docker cp`
   * reads), on a running or a stopped container. The deadline covers the opening; the caller's
   * signal closes the stream. A missing path is BERTH_ENGINE_NOT_FOUND with context `missing: 'path'`
   * (a missing container: `missing: 'container'`), told apart by inspecting the container.
   */
  async getArchive(id: string, path: string, options: CallOptions = {}): Promise<Readable> {
    try {
      return await this.#openStream('container archive', this.#deadlines.writeMs, options, (connection) =>
        new Promise<Readable>((resolve, reject) => {
          this.#docker.modem.dial(
            {
              path: `/containers/${id}/archive?`,
              method: 'GET',
              isStream: true,
              abortSignal: connection,
              statusCodes: { 200: true, 400: 'bad parameter', 404: 'no such container or path', 500: 'server error' },
              options: { path },
            },
            (error, result) => (error ? reject(error) : resolve(failWhenCut(result as Readable, 'container archive'))),
          );
        }),
      { id, path });
    } catch (error) {
      if (!(error instanceof BerthError) || error.code !== 'BERTH_ENGINE_NOT_FOUND') throw error;
      const containerExists = await this.inspectContainer(id, { signal: options.signal }).then(() => true, () => false);
      throw new BerthError('BERTH_ENGINE_NOT_FOUND', containerExists ? `no such path in the container: ${path}` : `no such container: ${id}`, {
        cause: error,
        context: { id, path, missing: containerExists ? 'path' : 'container' },
      });
    }
  }

  /**
   * Streams resource samples. The engine sends one a second; a consumer that reads slowly gets the
   * newest sample, not a backlog (samples in between are dropped).
   */
  async *streamStats(id: string, options: CallOptions = {}): AsyncGenerator<StatsSample> {
    const stream = failWhenCut(await this.#openStream('container stats', this.#deadlines.writeMs, options, (connection) =>
      this.#docker.getContainer(id).stats({ stream: true, ...signalOption(connection) }) as unknown as Promise<Readable>,
    { id }), 'container stats');
    try {
      for await (const lines of jsonLineBatches(stream)) {
        const raw = JSON.parse(lines[lines.length - 1]!) as RawStats;
        // An exited container's stats have an empty read time; the stream is over.
        if (isZeroTime(raw.read)) return;
        yield statsFromRaw(raw);
      }
    } catch (error) {
      if (options.signal?.aborted) return;
      throw classifyEngineError(error, { operation: 'container stats', callerSignal: options.signal, context: { id } });
    } finally {
      stream.destroy();
    }
  }

  /**
   * Follows one container's events (`die`, `health_status`, …) from now on; `actions` filter them
   * engine-side (`health_status` matches every `health_status: <status>`). Resolves once the engine
   * has answered. The engine subscribes just after answering, and a stream can break: callers that
   * must not miss a change use events to wake up early and an inspect, on a timer too, as the truth.
   * The deadline covers connecting only; the stream lives until `close()`, the caller's signal, or
   * the engine ends it (a dropped connection ends it or fails it with a classified error).
   */
  async openContainerEvents(id: string, actions: readonly string[], options: CallOptions = {}): Promise<ContainerEventStream> {
    return this.#openEvents({ container: [id], event: [...actions] }, { id }, options);
  }

  /**
   * Follows the events (`die`, `destroy`, …) of every container carrying all of `labels` (`key` or
   * `key=value`), from now on: one connection for all of an owner's containers. Like
   * openContainerEvents, a wake-up, not the truth, and it ends or fails (classified, retryable) when
   * its connection dies, so the caller notices and opens it again once the engine answers.
   * `sinceMs` (epoch ms, by the engine's clock): the engine first replays the matching events it
   * still keeps from then on (dockerd keeps its last 256), so an event that happened before the
   * connection was made is not missed. Default: from now on.
   */
  async openLabelledContainerEvents(labels: readonly string[], actions: readonly string[], options: CallOptions & { sinceMs?: number } = {}): Promise<ContainerEventStream> {
    const since = options.sinceMs === undefined ? undefined : String(Math.max(0, Math.floor(options.sinceMs / 1000)));
    return this.#openEvents({ label: [...labels], event: [...actions] }, { labels }, options, since);
  }

  async #openEvents(filter: Record<string, string[]>, context: Record<string, unknown>, options: CallOptions, since?: string): Promise<ContainerEventStream> {
    // One controller for the connection: the deadline may abort it only until it is established.
    const connection = new AbortController();
    const onCallerAbort = (): void => connection.abort(options.signal?.reason);
    if (options.signal?.aborted) onCallerAbort();
    options.signal?.addEventListener('abort', onCallerAbort, { once: true });
    const release = (): void => options.signal?.removeEventListener('abort', onCallerAbort);
    let stream: Readable;
    try {
      stream = (await this.#call('container events', this.#deadlines.readMs, options, () =>
        this.#docker.getEvents({
          filters: JSON.stringify({ type: ['container'], ...filter }),
          ...(since === undefined ? {} : { since }),
          abortSignal: connection.signal,
        } as Dockerode.GetEventsOptions),
      context)) as unknown as Readable;
    } catch (error) {
      // A connection that arrives after the deadline must not stay open.
      connection.abort();
      release();
      throw error;
    }
    let closedByCaller = false;
    const close = (): void => {
      closedByCaller = true;
      release();
      stream.destroy();
    };
    failWhenCut(stream, 'container events');
    async function* events(): AsyncGenerator<ContainerEvent> {
      try {
        for await (const lines of jsonLineBatches(stream)) {
          for (const line of lines) {
            yield containerEventFromRaw(JSON.parse(line) as RawEvent);
          }
        }
      } catch (error) {
        if (options.signal?.aborted || closedByCaller) return;
        throw classifyEngineError(error, { operation: 'container events', callerSignal: options.signal, context });
      } finally {
        close();
      }
    }
    return Object.assign(events(), { close });
  }

  /**
   * Runs a command in a running container and attaches to it. Creating the exec instance is retried
   * on any retryable failure (an instance that never starts is harmless: the engine drops it with its
   * container). Starting it runs the command, so the start is sent again only when the engine
   * certainly did not act on it (refused before sending, or a 503: see engineCertainlyDidNotAct);
   * after a failure that may have followed the engine's action (a 500, a dropped connection, a
   * deadline) it rejects with the classified error rather than risk running the command twice.
   * `retry` defaults to the engine's read retries (readAttempts, from 100 ms up to 1 s).
   */
  async exec(containerId: string, exec: ExecOptions, options: ExecCallOptions = {}): Promise<ExecSession> {
    const policy = {
      attempts: options.retry?.attempts ?? this.#readAttempts,
      initialDelayMs: options.retry?.initialDelayMs ?? 100,
      maxDelayMs: options.retry?.maxDelayMs ?? 1000,
      signal: options.signal,
    };
    const created = await retry(() => this.#call('create exec', this.#deadlines.writeMs, options, (abortSignal) =>
      this.#docker.getContainer(containerId).exec({
        Cmd: exec.cmd,
        Tty: exec.tty ?? false,
        AttachStdin: exec.stdin ?? false,
        AttachStdout: true,
        AttachStderr: true,
        Env: exec.env,
        WorkingDir: exec.workdir,
        User: exec.user,
        abortSignal,
      }),
    { id: containerId }), policy);
    const stream = await retry(() => this.#openStream('start exec', this.#deadlines.writeMs, options, (connection) =>
      created.start({ hijack: true, stdin: exec.stdin ?? false, Tty: exec.tty ?? false, abortSignal: connection }) as unknown as Promise<Duplex>,
    { id: containerId, execId: created.id }), { ...policy, shouldRetry: engineCertainlyDidNotAct });
    // The exec is over when the engine closes its connection, whether or not anyone reads the output.
    const ended = new Promise<void>((resolve) => {
      stream.once('end', resolve);
      stream.once('close', resolve);
    });
    const split = this.#splitOutput(stream, exec.tty ?? false, exec.stdin ?? false);
    // A command the runtime cannot start gets one line of the runtime's words and an exit code of
    // the engine's: on stdout with 126 from Docker, on stderr with 127 (or 126) from Podman. The
    // first bytes of both are kept to tell not-found from not-executable.
    const head = recordHead(split.stdout, 1024);
    const errorHead = recordHead(split.stderr, 1024);
    const streams = { ...split, stdout: head.stream, stderr: errorHead.stream };
    let status: Promise<ExecExitStatus> | undefined;
    const exitStatus = (): Promise<ExecExitStatus> =>
      (status ??= (async () => {
        await ended;
        const info = await this.#read('inspect exec', {}, (abortSignal) => created.inspect({ abortSignal }), { execId: created.id });
        const exitCode = info.ExitCode ?? -1;
        // Pid 0: the process never started, so the exit code is the engine's, not the command's.
        const commandFailure = info.Pid === 0 && exitCode !== 0 ? (commandFailureIn(head.text()) ?? commandFailureIn(errorHead.text())) : undefined;
        return commandFailure ? { exitCode: commandFailure.exitCode, commandFailure } : { exitCode };
      })());
    return {
      ...streams,
      id: created.id,
      resize: async ({ rows, columns }) => {
        await this.#call('resize exec', this.#deadlines.writeMs, {}, (abortSignal) => created.resize({ h: rows, w: columns, ...signalOption(abortSignal) }), { execId: created.id }).catch(unlessSuccessStatus);
      },
      exitCode: async () => (await exitStatus()).exitCode,
      exitStatus,
    };
  }

  /**
   * An exec instance as the engine sees it: whether its process runs, its process id on the
   * engine's host (0 before it started), and its exit code once it ended. The engine has no way to
   * kill an exec; the agent signals this pid itself (see `endExecProcess` in tasks/exec.ts).
   */
  async inspectExec(execId: string, options: CallOptions = {}): Promise<ExecInspect> {
    const info = await this.#read('inspect exec', options, (abortSignal) => this.#docker.getExec(execId).inspect({ abortSignal }), { execId });
    return { id: execId, running: info.Running === true, pid: info.Pid ?? 0, exitCode: info.ExitCode ?? null, containerId: info.ContainerID ?? '' };
  }

  async inspectImage(ref: string, options: CallOptions = {}): Promise<ImageInspect> {
    const raw = await this.#read('inspect image', options, (abortSignal) => this.#docker.getImage(ref).inspect(signalOption(abortSignal)), { image: ref });
    const image = imageInspectFromRaw(raw);
    // Podman names images in full (docker.io/…); Docker's names never start so, and stay as they are.
    return { ...image, repoTags: image.repoTags.map(familiarImageName) };
  }

  async listImages(filter: { labels?: string[]; reference?: string[] } = {}, options: CallOptions = {}): Promise<ImageSummary[]> {
    const filters: Record<string, string[]> = {};
    if (filter.labels?.length) filters.label = filter.labels;
    if (filter.reference?.length) filters.reference = filter.reference;
    const rows = (await this.#read('list images', options, (abortSignal) => this.#docker.listImages({ filters: JSON.stringify(filters), abortSignal }))).map(imageSummaryFromRaw);
    // Checked again whatever the engine (Podman ORs label filters; Docker's rows pass unchanged), without asking which it is.
    return rows.filter((row) => matchesLabelFilters(row.labels, filter.labels ?? [])).map((row) => ({ ...row, repoTags: row.repoTags.map(familiarImageName) }));
  }

  /**
   * Removes an image or one of its names (`DELETE /images/{name}`) and reports what the engine did:
   * the names it untagged and the image ids it deleted (an image goes with its last name). Not-found
   * is `absent`; a conflict (a container uses it, or an id with several names and no `force`) is
   * `in-use`. Not forced unless `force` (default false): berth's own removals never force.
   */
  async removeImage(ref: string, options: CallOptions & { force?: boolean } = {}): Promise<ImageDeleteOutcome> {
    try {
      const raw: unknown = await this.#call('remove image', this.#deadlines.writeMs, options, (abortSignal) =>
        this.#docker.getImage(ref).remove({ force: options.force ?? false, abortSignal }),
      { image: ref });
      const outcome = imageRemovedFromRaw(raw);
      // Podman's removal names and ids read as Docker's; Docker's pass unchanged.
      return outcome.kind === 'removed' ? podmanImageRemoval(outcome) : outcome;
    } catch (error) {
      if (error instanceof BerthError && error.code === 'BERTH_ENGINE_NOT_FOUND') return { kind: 'absent' };
      if (error instanceof BerthError && error.code === 'BERTH_ENGINE_CONFLICT') return { kind: 'in-use' };
      throw error;
    }
  }

  /**
   * Creates a bridge network with `labels`; internal: no route out. Idempotent by name: a network
   * of that name that exists already (a retried create whose answer was lost) is returned as
   * `existing` with its labels, for the caller to check it is its own.
   */
  async createNetwork(name: string, body: { labels: Record<string, string>; internal?: boolean }, options: CallOptions = {}): Promise<{ id: string; created: boolean; labels: Record<string, string> }> {
    try {
      const network = await this.#call('create network', this.#deadlines.writeMs, options, (abortSignal) =>
        this.#docker.createNetwork({ Name: name, Driver: 'bridge', CheckDuplicate: true, Internal: body.internal ?? false, Labels: body.labels, abortSignal } as Dockerode.NetworkCreateOptions),
      { network: name });
      return { id: network.id, created: true, labels: body.labels };
    } catch (error) {
      if (!(error instanceof BerthError && error.code === 'BERTH_ENGINE_CONFLICT')) throw error;
      const existing = await this.inspectNetwork(name, options);
      return { id: existing.id, created: false, labels: existing.labels };
    }
  }

  /** Connects a container to a network with DNS aliases; already connected counts as done. */
  async connectNetwork(network: string, containerId: string, aliases: readonly string[], options: CallOptions = {}): Promise<void> {
    try {
      await this.#call('connect network', this.#deadlines.writeMs, options, (abortSignal) =>
        this.#docker.getNetwork(network).connect({ Container: containerId, EndpointConfig: { Aliases: [...aliases] }, abortSignal } as Dockerode.NetworkConnectOptions),
      { network, id: containerId });
    } catch (error) {
      // A retried connect whose first answer was lost: the endpoint exists (the engine says 403 "already exists").
      if (error instanceof BerthError && error.code === 'BERTH_ENGINE_FORBIDDEN' && /already exists/i.test(error.message)) return;
      throw error;
    }
  }

  /** Lists networks; `labels` (`key` or `key=value`, all must match) filter engine-side. */
  async listNetworks(filter: { labels?: string[] } = {}, options: CallOptions = {}): Promise<NetworkSummary[]> {
    const filters: Record<string, string[]> = {};
    if (filter.labels?.length) filters.label = filter.labels;
    const rows = (await this.#read('list networks', options, (abortSignal) => this.#docker.listNetworks({ filters: JSON.stringify(filters), abortSignal } as Dockerode.NetworkListOptions))).map(networkFromRaw);
    return rows.filter((row) => matchesLabelFilters(row.labels, filter.labels ?? []));
  }

  async inspectNetwork(id: string, options: CallOptions = {}): Promise<NetworkInspect> {
    // No options object: dockerode would put it in the query string. The deadline still holds (raceAbort).
    const raw = await this.#read('inspect network', options, () => this.#docker.getNetwork(id).inspect(), { network: id });
    return { ...networkFromRaw(raw), containerIds: Object.keys(raw.Containers ?? {}) };
  }

  /**
   * Removes a network. Not-found is `absent`; a refusal because endpoints are attached (or the
   * network is one of the engine's predefined ones), 403 or 409 by status, is `in-use`.
   */
  async removeNetwork(id: string, options: CallOptions = {}): Promise<RemovalOutcome> {
    try {
      await this.#call('remove network', this.#deadlines.writeMs, options, (abortSignal) => this.#docker.getNetwork(id).remove({ abortSignal }), { network: id });
      return 'removed';
    } catch (error) {
      if (error instanceof BerthError && error.code === 'BERTH_ENGINE_NOT_FOUND') return 'absent';
      if (error instanceof BerthError && (error.code === 'BERTH_ENGINE_CONFLICT' || error.code === 'BERTH_ENGINE_FORBIDDEN')) return 'in-use';
      throw error;
    }
  }

  /** Lists volumes; `labels` filter engine-side (all must match); `dangling` keeps those no container references. */
  async listVolumes(filter: { labels?: string[]; dangling?: boolean } = {}, options: CallOptions = {}): Promise<VolumeSummary[]> {
    const filters: Record<string, string[]> = {};
    if (filter.labels?.length) filters.label = filter.labels;
    if (filter.dangling !== undefined) filters.dangling = [String(filter.dangling)];
    const raw = await this.#read('list volumes', options, (abortSignal) => this.#docker.listVolumes({ filters: JSON.stringify(filters), abortSignal } as Dockerode.VolumeListOptions));
    const rows = (raw.Volumes ?? []).map(volumeFromRaw);
    return rows.filter((row) => matchesLabelFilters(row.labels, filter.labels ?? []));
  }

  /**
   * Creates a local volume with `labels`. The engine answers a create of an existing name with that
   * volume, so a retry is idempotent; its labels are returned for the caller to check it is its own.
   */
  async createVolume(name: string, labels: Record<string, string>, options: CallOptions = {}): Promise<VolumeSummary> {
    // Dialled directly: dockerode's createVolume resolves with a Volume object (a name), not the
    // engine's answer, and the answer's labels are how a caller tells its own volume from another's
    // of the same name (the engine answers an existing volume's create with that volume).
    const raw = await this.#call('create volume', this.#deadlines.writeMs, options, (abortSignal) =>
      new Promise<Dockerode.VolumeInspectInfo>((resolve, reject) => {
        this.#docker.modem.dial(
          {
            path: '/volumes/create?',
            method: 'POST',
            allowEmpty: true,
            abortSignal,
            options: { Name: name, Driver: 'local', Labels: labels },
            statusCodes: { 200: true, 201: true, 500: 'server error' },
          },
          (error, result) => (error ? reject(error) : resolve(result as Dockerode.VolumeInspectInfo)),
        );
      }),
    { volume: name });
    return volumeFromRaw(raw);
  }

  /**
   * Imports a root filesystem tarball as an image (`docker import`): `repo:tag`, with `changes`
   * (Dockerfile lines such as `LABEL k=v` or `CMD ["/pause"]`). Resolves once the engine has it.
   */
  async importImage(tar: Readable, ref: { repo: string; tag: string }, changes: readonly string[], options: CallOptions = {}): Promise<void> {
    const startedMs = Date.now();
    const stream = await this.#call('import image', this.#deadlines.writeMs, options, (abortSignal) =>
      this.#docker.importImage(tar as NodeJS.ReadableStream, { repo: ref.repo, tag: ref.tag, changes: [...changes], abortSignal } as Record<string, unknown>) as unknown as Promise<Readable>,
    { image: `${ref.repo}:${ref.tag}` });
    // The answer is a JSON progress stream; an error comes inside it. The call's deadline covers the
    // stream too: a stream the engine leaves open past it is cut, and that is its timeout.
    let text = '';
    try {
      for await (const chunk of stream) text += String(chunk);
    } catch (error) {
      const context = { image: `${ref.repo}:${ref.tag}`, deadlineMs: this.#deadlines.writeMs };
      if (Date.now() - startedMs < this.#deadlines.writeMs) throw new BerthError('BERTH_ENGINE_UNAVAILABLE', `import image: the connection broke before the engine ended its answer`, { retryable: true, cause: error, context });
      throw new BerthError('BERTH_ENGINE_TIMEOUT', `import image: the engine did not end its answer within ${this.#deadlines.writeMs} ms`, { retryable: true, cause: error, context });
    }
    const failed = text.split('\n').map((line) => line.trim()).filter(Boolean).map((line) => JSON.parse(line) as { error?: string }).find((line) => line.error !== undefined);
    if (failed) throw new BerthError('BERTH_ENGINE_SERVER_ERROR', `import of ${ref.repo}:${ref.tag} failed: ${failed.error}`, { context: { image: `${ref.repo}:${ref.tag}` } });
  }

  /** Removes a volume (not forced). Not-found is `absent`; in use by a container (409) is `in-use`. */
  async removeVolume(name: string, options: CallOptions = {}): Promise<RemovalOutcome> {
    try {
      await this.#call('remove volume', this.#deadlines.writeMs, options, (abortSignal) => this.#docker.getVolume(name).remove({ abortSignal } as Dockerode.VolumeRemoveOptions), { volume: name });
      return 'removed';
    } catch (error) {
      if (error instanceof BerthError && error.code === 'BERTH_ENGINE_NOT_FOUND') return 'absent';
      if (error instanceof BerthError && error.code === 'BERTH_ENGINE_CONFLICT') return 'in-use';
      throw error;
    }
  }

  /**
   * Starts a pull and returns the engine's raw JSON-lines progress stream. The caller owns the
   * stream (and its activity timeout); errors inside the stream are classified by images/.
   */
  async openPull(fromImage: string, tag: string, auth: RegistryAuth | undefined, options: CallOptions = {}): Promise<Readable> {
    return this.#openStream('pull image', this.#deadlines.writeMs, options, (connection) =>
      this.#docker.createImage(auth ?? {}, { fromImage, tag, abortSignal: connection }) as unknown as Promise<Readable>,
    { image: `${fromImage}:${tag}` });
  }
}

/** The dockerode calls whose typings omit the options object they accept. */
interface SignalledDocker {
  ping(options: { abortSignal?: AbortSignal }): Promise<unknown>;
  version(options: { abortSignal?: AbortSignal }): Promise<Dockerode.DockerVersion>;
  info(options: { abortSignal?: AbortSignal }): Promise<RawInfoBody>;
}

/** @types/dockerode omits the abortSignal option that these dockerode calls accept. */
function signalOption(abortSignal: AbortSignal | undefined): Record<string, never> {
  return { abortSignal } as unknown as Record<string, never>;
}

function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/**
 * Passes `source` through unchanged and keeps its first `limit` bytes, for reading a message the
 * engine wrote there. Errors of the source reach the returned stream.
 */
function recordHead(source: Readable, limit: number): { stream: Readable; text(): string } {
  const kept: Buffer[] = [];
  let keptBytes = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      if (keptBytes < limit) {
        const part = chunk.subarray(0, limit - keptBytes);
        kept.push(Buffer.from(part));
        keptBytes += part.length;
      }
      callback(null, chunk);
    },
  });
  streamPipeline(source, tap, () => undefined);
  return { stream: tap, text: () => Buffer.concat(kept).toString('utf8') };
}

/** For TTY sessions: everything arrives on stdout; stderr is an ended stream. */
function passthroughTty(stream: Readable): DemuxedStreams {
  return { stdout: stream, stderr: Readable.from([]) };
}
