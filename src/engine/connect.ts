import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ValidationError } from '../common/errors.js';
import type { EngineOptions } from './engine.js';

/** TLS material for an engine reached over TCP, as PEM text. */
export interface EngineTls {
  /** The CA the engine's certificate must chain to; Node's own CAs when unset. */
  readonly ca?: string;
  /** The client certificate and its key, for an engine that verifies its clients (dockerd --tlsverify). */
  readonly cert?: string;
  readonly key?: string;
  /** False: the engine's certificate is not verified (DOCKER_TLS without DOCKER_TLS_VERIFY, a context's SkipTLSVerify). Default true. */
  readonly verify?: boolean;
}

/**
 * Where the engine listens: a unix socket; a TCP host and port, in the clear or over TLS; or a host
 * reached over SSH (the remote side runs `docker system dial-stdio`, as the docker CLI does).
 */
export type EngineEndpoint =
  | { readonly socketPath: string }
  | { readonly host: string; readonly port: number; readonly protocol?: 'http' }
  | { readonly host: string; readonly port: number; readonly protocol: 'https'; readonly tls?: EngineTls }
  | { readonly host: string; readonly port: number; readonly protocol: 'ssh'; readonly username?: string };

/** The rule an engine address breaks, in words. */
export const DOCKER_HOST_RULE = 'must be unix:///path/to/socket, tcp://host[:port], https://host[:port] or ssh://[user@]host[:port]';

/** The default unix socket of a root engine. */
export const DEFAULT_ENGINE_SOCKET = '/var/run/docker.sock';

/**
 * Reads an engine address as the docker CLI spells it in DOCKER_HOST: `unix:///path` (an absolute
 * path), `tcp://host[:port]` (`http://` too; port 2375 when left out, 2376 with `tls`),
 * `https://host[:port]` (TLS, 2376) or `ssh://[user@]host[:port]` (port 22). `tcp://` with `tls`
 * (DOCKER_TLS_VERIFY, a context with TLS material) is TLS. Undefined for anything else, so the
 * caller names the field it came from (DOCKER_HOST, or the agent's `engine.host`).
 */
export function parseDockerHost(text: string, options: { tls?: boolean } = {}): EngineEndpoint | undefined {
  const value = text.trim();
  if (value.startsWith('unix:///')) return { socketPath: value.slice('unix://'.length) };
  const ssh = /^ssh:\/\/(?:([^@/\s:]+)@)?([^:/@\s]+|\[[0-9a-fA-F:]+\])(?::(\d{1,5}))?\/?$/.exec(value);
  if (ssh) {
    const port = ssh[3] === undefined ? 22 : Number(ssh[3]);
    if (port < 1 || port > 65_535) return undefined;
    return { host: ssh[2]!, port, protocol: 'ssh', ...(ssh[1] === undefined ? {} : { username: ssh[1] }) };
  }
  const tcp = /^(tcp|http|https):\/\/([^:/\s]+)(?::(\d{1,5}))?\/?$/.exec(value);
  if (!tcp) return undefined;
  const secure = tcp[1] === 'https' || (tcp[1] === 'tcp' && options.tls === true);
  const port = tcp[3] === undefined ? (secure ? 2376 : 2375) : Number(tcp[3]);
  if (port > 65_535) return undefined;
  return secure ? { host: tcp[2]!, port, protocol: 'https' } : { host: tcp[2]!, port };
}

/** How an endpoint reads in messages and `berth context ls`: as DOCKER_HOST spells it. */
export function formatEndpoint(endpoint: EngineEndpoint): string {
  if ('socketPath' in endpoint) return `unix://${endpoint.socketPath}`;
  if (endpoint.protocol === 'ssh') return `ssh://${endpoint.username === undefined ? '' : `${endpoint.username}@`}${endpoint.host}${endpoint.port === 22 ? '' : `:${endpoint.port}`}`;
  return `${endpoint.protocol === 'https' ? 'https' : 'tcp'}://${endpoint.host}:${endpoint.port}`;
}

/** Reads a TLS file of DOCKER_CERT_PATH or a context; a missing one is named with where it was looked for. */
function readPem(file: string, field: string, required: boolean): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    if (!required && (error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ValidationError([{ field, rule: `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}` }]);
  }
}

/**
 * TLS material from a directory holding `ca.pem`, `cert.pem` and `key.pem` (DOCKER_CERT_PATH, a
 * context's TLS directory). With `verify`, the CA is required, as the docker CLI requires it for
 * DOCKER_TLS_VERIFY; the client pair is taken when both files exist.
 */
export function tlsFromDirectory(dir: string, verify: boolean, field: string): EngineTls {
  const ca = readPem(path.join(dir, 'ca.pem'), field, verify);
  const cert = readPem(path.join(dir, 'cert.pem'), field, false);
  const key = readPem(path.join(dir, 'key.pem'), field, false);
  if ((cert === undefined) !== (key === undefined)) {
    throw new ValidationError([{ field, rule: `${dir} holds ${cert === undefined ? 'key.pem without cert.pem' : 'cert.pem without key.pem'}` }]);
  }
  return { ...(ca === undefined ? {} : { ca }), ...(cert === undefined ? {} : { cert, key }), verify };
}

/** The environment variables the docker CLI reads for its engine. */
export type DockerEnv = Readonly<Record<string, string | undefined>>;

/** Whether an environment variable is set to something (the docker CLI's test: non-empty). */
function isSet(value: string | undefined): boolean {
  return value !== undefined && value.trim() !== '';
}

/**
 * The endpoint of DOCKER_HOST with the TLS the docker CLI applies to it: DOCKER_TLS_VERIFY (any
 * non-empty value) verifies the engine's certificate against DOCKER_CERT_PATH's ca.pem and presents
 * its cert.pem/key.pem; DOCKER_TLS alone encrypts without verifying. DOCKER_CERT_PATH defaults to
 * `<home>/.docker`. Undefined when DOCKER_HOST is unset.
 */
export function endpointFromDockerHost(env: DockerEnv, home: string | undefined): EngineEndpoint | undefined {
  const host = env.DOCKER_HOST?.trim();
  if (!host) return undefined;
  const verify = isSet(env.DOCKER_TLS_VERIFY);
  const tls = verify || isSet(env.DOCKER_TLS);
  const endpoint = parseDockerHost(host, { tls });
  if (endpoint === undefined) throw new ValidationError([{ field: 'DOCKER_HOST', rule: DOCKER_HOST_RULE }]);
  // https:// without the TLS variables: verified against Node's own CAs, no client certificate.
  if (!('protocol' in endpoint) || endpoint.protocol !== 'https' || !tls) return endpoint;
  const certPath = env.DOCKER_CERT_PATH?.trim() || (home === undefined ? undefined : path.join(home, '.docker'));
  if (certPath === undefined) return { ...endpoint, tls: { verify } };
  return { ...endpoint, tls: tlsFromDirectory(certPath, verify, 'DOCKER_CERT_PATH') };
}

/** The private keys an SSH client tries when no agent holds one, as OpenSSH does (in its order). */
const DEFAULT_SSH_KEYS = ['id_ed25519', 'id_ecdsa', 'id_rsa'];

/**
 * Engine options for an endpoint. An SSH endpoint authenticates as OpenSSH would without a config
 * file: through the agent at SSH_AUTH_SOCK, else with the first of `~/.ssh/id_ed25519`, `id_ecdsa`,
 * `id_rsa`; the user is the URL's, else the local one (USER); the server must have a host key
 * `~/.ssh/known_hosts` lists for it (known-hosts.ts).
 */
export function engineOptionsOf(endpoint: EngineEndpoint, env: DockerEnv = {}): EngineOptions {
  if (!('protocol' in endpoint) || endpoint.protocol !== 'ssh') return { ...endpoint };
  const agent = env.SSH_AUTH_SOCK?.trim() || undefined;
  const home = env.HOME?.trim();
  let privateKey: string | undefined;
  if (home) {
    for (const name of DEFAULT_SSH_KEYS) {
      try {
        privateKey = readFileSync(path.join(home, '.ssh', name), 'utf8');
        break;
      } catch {
        // OpenSSH tries the next key.
      }
    }
  }
  let knownHosts: string | undefined;
  if (home) {
    try {
      knownHosts = readFileSync(path.join(home, '.ssh', 'known_hosts'), 'utf8');
    } catch {
      // No known_hosts: no server is trusted (the error says how to trust one).
    }
  }
  const username = endpoint.username ?? (env.USER?.trim() || env.LOGNAME?.trim() || undefined);
  return {
    host: endpoint.host,
    port: endpoint.port,
    protocol: 'ssh',
    ...(username === undefined ? {} : { username }),
    ssh: { ...(agent === undefined ? {} : { agent }), ...(privateKey === undefined ? {} : { privateKey }), ...(knownHosts === undefined ? {} : { knownHosts }) },
  };
}

/**
 * Engine options from DOCKER_HOST (with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, see
 * `endpointFromDockerHost`); the default socket when it is unset. Contexts and rootless sockets
 * are `resolveEngine`'s (see contexts.ts). Called at the edge (CLI, agent start-up); nothing
 * deeper reads the environment.
 */
export function engineOptionsFromEnv(env: DockerEnv): EngineOptions {
  const endpoint = endpointFromDockerHost(env, env.HOME);
  return endpoint === undefined ? { socketPath: DEFAULT_ENGINE_SOCKET } : engineOptionsOf(endpoint, env);
}

/**
 * The sockets a rootless engine listens on, where users have them: rootless Docker's
 * `$XDG_RUNTIME_DIR/docker.sock`, then rootless Podman's `$XDG_RUNTIME_DIR/podman/podman.sock`
 * (the docker CLI and testcontainers look there too). Empty without XDG_RUNTIME_DIR.
 */
export function rootlessSockets(env: DockerEnv): Array<{ socketPath: string; engine: 'docker' | 'podman' }> {
  const runtimeDir = env.XDG_RUNTIME_DIR?.trim();
  if (!runtimeDir || !path.isAbsolute(runtimeDir)) return [];
  return [
    { socketPath: path.join(runtimeDir, 'docker.sock'), engine: 'docker' },
    { socketPath: path.join(runtimeDir, 'podman', 'podman.sock'), engine: 'podman' },
  ];
}
