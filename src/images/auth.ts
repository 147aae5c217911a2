import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { BerthError, cancelledError, messageOf, throwIfAborted, ValidationError } from '../common/errors.js';
import type { RegistryAuth } from '../engine/types.js';
import { DOCKER_HUB, normalizeRegistryHost } from './reference.js';

/**
 * Registry credentials for pulls, resolved in order: the task's own credentials; then the Docker
 * client configuration (a credential helper for the registry, the credentials store, an `auths`
 * entry); then none. Registries are matched by exact host, never by suffix: credentials for
 * `example.com` are not sent to `evil-example.com` nor to `registry.example.com`.
 *
 * Credentials never appear in errors or logs: errors name the registry and the source only.
 */

/** Credentials a task carries for its image's registry. */
export interface RegistryCredentials {
  username?: string;
  password?: string;
  /** An OAuth identity token, used instead of a password. */
  identityToken?: string;
  /** Default: the registry of the image. */
  serverAddress?: string;
}

/** Where credentials came from: safe to log. */
export type AuthSource = 'task' | 'credential-helper' | 'credentials-store' | 'config-auths';

export interface ResolvedRegistryAuth {
  /** What the engine takes in X-Registry-Auth. */
  auth: RegistryAuth;
  source: AuthSource;
}

export interface RegistryAuthResolverOptions {
  /** The directory holding config.json; undefined: no Docker configuration is read. */
  dockerConfigDir?: string;
  /** Environment of `docker-credential-*` helpers, PATH included. Default: inherited. */
  credentialHelperEnv?: Readonly<Record<string, string>>;
  /** A helper that has not answered in this time is killed. Default 10 s. */
  credentialHelperTimeoutMs?: number;
}

/** The server address docker.io credentials are stored under, by the docker CLI and credential helpers. */
export const DOCKER_HUB_SERVER_ADDRESS = 'https://index.docker.io/v1/';

/**
 * The Docker client configuration directory for an environment: `$DOCKER_CONFIG`, else
 * `~/.docker`. For the edge (agent, CLI) only; nothing inside berth reads the environment.
 */
export function dockerConfigDirFromEnv(env: Readonly<Record<string, string | undefined>>, homeDir?: string): string {
  const configured = env.DOCKER_CONFIG;
  if (configured !== undefined && configured !== '') return configured;
  return join(env.HOME || homeDir || homedir(), '.docker');
}

/** The address a registry's credentials are stored and sent under. */
export function serverAddressFor(registry: string): string {
  return normalizeRegistryHost(registry) === DOCKER_HUB ? DOCKER_HUB_SERVER_ADDRESS : registry;
}

interface ConfigAuthEntry {
  auth?: unknown;
  username?: unknown;
  password?: unknown;
  identitytoken?: unknown;
}

interface DockerConfigFile {
  auths?: Record<string, ConfigAuthEntry>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/** The helper protocol's answer to `get` when it has nothing for the server (docker-credential-helpers). */
const CREDENTIALS_NOT_FOUND = 'credentials not found';
/** The helper protocol marks an identity token by this user name. */
const TOKEN_USERNAME = '<token>';
const HELPER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export class RegistryAuthResolver {
  readonly #configDir: string | undefined;
  readonly #helperEnv: Readonly<Record<string, string>> | undefined;
  readonly #helperTimeoutMs: number;

  constructor(options: RegistryAuthResolverOptions = {}) {
    this.#configDir = options.dockerConfigDir;
    this.#helperEnv = options.credentialHelperEnv;
    this.#helperTimeoutMs = options.credentialHelperTimeoutMs ?? 10_000;
  }

  /** Credentials for `registry` (a host, as in an image reference), or undefined for an anonymous pull. */
  async resolve(registry: string, taskCredentials?: RegistryCredentials, signal?: AbortSignal): Promise<ResolvedRegistryAuth | undefined> {
    const host = normalizeRegistryHost(registry);
    if (taskCredentials && hasSecret(taskCredentials)) {
      return {
        source: 'task',
        auth: withoutUndefined({
          username: taskCredentials.username,
          password: taskCredentials.password,
          identitytoken: taskCredentials.identityToken,
          serveraddress: taskCredentials.serverAddress ?? serverAddressFor(host),
        }),
      };
    }
    if (this.#configDir === undefined) return undefined;
    const config = await this.#readConfig();
    if (!config) return undefined;

    const helper = entryForHost(config.credHelpers, host);
    if (helper !== undefined) {
      const auth = await this.#askHelper(helper, host, signal);
      if (auth) return { source: 'credential-helper', auth };
    } else if (typeof config.credsStore === 'string' && config.credsStore !== '') {
      const auth = await this.#askHelper(config.credsStore, host, signal);
      if (auth) return { source: 'credentials-store', auth };
    }

    const entry = entryForHost(config.auths, host);
    if (entry) {
      const auth = authFromConfigEntry(entry, host, this.#configPath());
      if (auth) return { source: 'config-auths', auth };
    }
    return undefined;
  }

  #configPath(): string {
    return join(this.#configDir!, 'config.json');
  }

  async #readConfig(): Promise<DockerConfigFile | undefined> {
    const path = this.#configPath();
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new BerthError('BERTH_VALIDATION', `cannot read the Docker configuration ${path}: ${messageOf(error)}`, { cause: error, context: { path } });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      // The parser's message quotes the file's text, which may hold credentials: leave it out.
      throw new ValidationError([{ field: 'dockerConfig', rule: `${path} is not valid JSON` }]);
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new ValidationError([{ field: 'dockerConfig', rule: `${path} must hold a JSON object` }]);
    }
    const raw = parsed as Record<string, unknown>;
    return {
      auths: isRecord(raw.auths) ? (raw.auths as Record<string, ConfigAuthEntry>) : undefined,
      credHelpers: isRecord(raw.credHelpers) ? stringValues(raw.credHelpers) : undefined,
      credsStore: typeof raw.credsStore === 'string' ? raw.credsStore : undefined,
    };
  }

  /** Runs `docker-credential-<name> get` with the server address on stdin, as the docker CLI does. */
  async #askHelper(name: string, host: string, signal: AbortSignal | undefined): Promise<RegistryAuth | undefined> {
    const program = `docker-credential-${name}`;
    if (!HELPER_NAME.test(name)) throw new ValidationError([{ field: 'dockerConfig', rule: `${JSON.stringify(name)} is not a credential helper name` }]);
    throwIfAborted(signal, 'credential helper');
    const serverAddress = serverAddressFor(host);
    const { exitCode, stdout, stderr, timedOut } = await runHelper(program, serverAddress, this.#helperEnv, this.#helperTimeoutMs, signal);
    if (signal?.aborted) throw cancelledError('credential helper', signal.reason);
    if (timedOut) {
      throw new BerthError('BERTH_IMAGE_PULL_FAILED', `credential helper ${program} did not answer for ${host} within ${this.#helperTimeoutMs} ms`, {
        context: { registry: host, helper: program },
      });
    }
    if (exitCode !== 0) {
      if (stdout.includes(CREDENTIALS_NOT_FOUND) || stderr.includes(CREDENTIALS_NOT_FOUND)) return undefined;
      // Only the exit status is reported: a failing helper's output is not known to be free of secrets.
      throw new BerthError('BERTH_IMAGE_ACCESS_DENIED', `credential helper ${program} failed for ${host} (${exitCode === null ? 'could not be run' : `exit status ${exitCode}`})`, {
        retryable: false,
        context: { registry: host, helper: program, exitCode },
      });
    }
    let answer: unknown;
    try {
      answer = JSON.parse(stdout);
    } catch {
      throw new BerthError('BERTH_IMAGE_ACCESS_DENIED', `credential helper ${program} answered for ${host} with something other than JSON`, {
        retryable: false,
        context: { registry: host, helper: program },
      });
    }
    const record = isRecord(answer) ? answer : {};
    const username = typeof record.Username === 'string' ? record.Username : undefined;
    const secret = typeof record.Secret === 'string' ? record.Secret : undefined;
    if (!secret) return undefined;
    if (username === TOKEN_USERNAME) return { identitytoken: secret, serveraddress: serverAddress };
    return withoutUndefined({ username, password: secret, serveraddress: serverAddress });
  }
}

function hasSecret(credentials: RegistryCredentials): boolean {
  return Boolean(credentials.password || credentials.identityToken || credentials.username);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function stringValues(record: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(Object.entries(record).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

/** The entry whose key, normalised, is exactly `host`. */
function entryForHost<T>(entries: Record<string, T> | undefined, host: string): T | undefined {
  if (!entries) return undefined;
  for (const [key, value] of Object.entries(entries)) {
    if (normalizeRegistryHost(key) === host) return value;
  }
  return undefined;
}

function authFromConfigEntry(entry: ConfigAuthEntry, host: string, path: string): RegistryAuth | undefined {
  if (!isRecord(entry)) return undefined;
  const serveraddress = serverAddressFor(host);
  const identitytoken = typeof entry.identitytoken === 'string' && entry.identitytoken !== '' ? entry.identitytoken : undefined;
  if (typeof entry.auth === 'string' && entry.auth !== '') {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon === -1) {
      throw new ValidationError([{ field: 'dockerConfig', rule: `the auths entry for ${host} in ${path} is not base64 of "username:password"` }]);
    }
    return withoutUndefined({ username: decoded.slice(0, colon), password: decoded.slice(colon + 1), identitytoken, serveraddress });
  }
  const username = typeof entry.username === 'string' && entry.username !== '' ? entry.username : undefined;
  const password = typeof entry.password === 'string' && entry.password !== '' ? entry.password : undefined;
  if (username === undefined && password === undefined && identitytoken === undefined) return undefined;
  return withoutUndefined({ username, password, identitytoken, serveraddress });
}

function withoutUndefined(auth: RegistryAuth): RegistryAuth {
  return Object.fromEntries(Object.entries(auth).filter(([, v]) => v !== undefined)) as unknown as RegistryAuth;
}

interface HelperResult {
  exitCode: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

function runHelper(
  program: string,
  serverAddress: string,
  env: Readonly<Record<string, string>> | undefined,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<HelperResult> {
  return new Promise((resolve) => {
    const child = spawn(program, ['get'], { env: env === undefined ? undefined : { ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let settled = false;
    const finish = (exitCode: number | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve({ exitCode, stdout: stdout.trim(), stderr: stderr.trim(), timedOut });
    };
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const onAbort = (): void => void child.kill('SIGKILL');
    signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    // A helper that exits without reading its input makes this write fail with EPIPE: its exit status tells.
    child.stdin.on('error', () => undefined);
    child.stdin.end(serverAddress);
    child.once('error', () => finish(null));
    child.once('close', (code) => finish(code));
  });
}
