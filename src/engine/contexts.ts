/**
 * Which engine berth uses, chosen as the docker CLI chooses it, plus the rootless sockets users
 * have. In order:
 *
 * 1. `--context <name>` (the CLI's flag; the agent's `engine.context`);
 * 2. DOCKER_HOST (with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH): the `default` context;
 * 3. DOCKER_CONTEXT;
 * 4. `currentContext` in the docker CLI's config.json (`$DOCKER_CONFIG`, else `~/.docker`);
 * 5. the `default` context: /var/run/docker.sock, or, when it does not answer, a rootless engine's
 *    socket that does: `$XDG_RUNTIME_DIR/docker.sock`, then `$XDG_RUNTIME_DIR/podman/podman.sock`.
 *
 * A context is the docker CLI's: `<config>/contexts/meta/<sha256 of its name>/meta.json` names its
 * endpoint (`Endpoints.docker.Host`, `SkipTLSVerify`), and `<config>/contexts/tls/<sha256>/docker/`
 * holds its ca.pem, cert.pem and key.pem. The file reads are the edge's (CLI, agent start-up).
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ValidationError } from '../common/errors.js';
import { DEFAULT_ENGINE_SOCKET, DOCKER_HOST_RULE, endpointFromDockerHost, formatEndpoint, parseDockerHost, rootlessSockets, tlsFromDirectory, type DockerEnv, type EngineEndpoint } from './connect.js';

/** Why berth uses the engine it uses, for `berth context ls` and messages. */
export type EngineSource =
  | 'flag'
  | 'DOCKER_HOST'
  | 'DOCKER_CONTEXT'
  | 'config'
  | 'default-socket'
  | 'rootless-docker'
  | 'rootless-podman';

/** The engine berth chose, and why. */
export interface EngineSelection {
  /** The context's name; `default` for DOCKER_HOST and the sockets. */
  context: string;
  endpoint: EngineEndpoint;
  source: EngineSource;
  /** In words: `--context remote`, `DOCKER_HOST is set`, `current context in ~/.docker/config.json`… */
  reason: string;
}

/** One context as `berth context ls` lists it. */
export interface ContextEntry {
  name: string;
  description: string;
  /** The endpoint as DOCKER_HOST spells it; the error in words when the context cannot be read. */
  endpoint: string;
  /** Whether it holds TLS material. */
  tls: boolean;
}

/** The docker CLI's configuration directory: DOCKER_CONFIG, else `<home>/.docker`. */
export function dockerConfigDir(env: DockerEnv): string | undefined {
  const configured = env.DOCKER_CONFIG?.trim();
  if (configured) return configured;
  const home = env.HOME?.trim();
  return home ? path.join(home, '.docker') : undefined;
}

/** A context's directory name under contexts/meta and contexts/tls: the sha256 of its name, in hex. */
export function contextDirName(name: string): string {
  return createHash('sha256').update(name).digest('hex');
}

/** The parts of a context's meta.json read here. */
interface ContextMeta {
  Name?: unknown;
  Metadata?: { Description?: unknown } | null;
  Endpoints?: { docker?: { Host?: unknown; SkipTLSVerify?: unknown } | null } | null;
}

function contextError(name: string, rule: string): ValidationError {
  return new ValidationError([{ field: 'context', rule: `the Docker context "${name}" ${rule}` }]);
}

function readMeta(file: string, name: string): ContextMeta {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw contextError(name, `does not exist (no ${file}); \`berth context ls\` lists the contexts`);
    throw contextError(name, `cannot be read (${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed === null || typeof parsed !== 'object') throw new Error('not an object');
    return parsed as ContextMeta;
  } catch {
    throw contextError(name, `has a meta.json that is not JSON (${file})`);
  }
}

/** A named context's endpoint and TLS material, read from `configDir`. `default` is the environment's (DOCKER_HOST or the default socket). */
export function readContext(configDir: string, name: string): { endpoint: EngineEndpoint; description: string } {
  const dirName = contextDirName(name);
  const metaFile = path.join(configDir, 'contexts', 'meta', dirName, 'meta.json');
  const meta = readMeta(metaFile, name);
  const docker = meta.Endpoints?.docker;
  const host = typeof docker?.Host === 'string' ? docker.Host : undefined;
  if (host === undefined) throw contextError(name, `names no docker endpoint (${metaFile})`);
  const tlsDir = path.join(configDir, 'contexts', 'tls', dirName, 'docker');
  const hasTls = existsSync(tlsDir);
  const verify = docker?.SkipTLSVerify !== true;
  // A context whose host is tcp:// speaks TLS when it has TLS material, as the docker CLI does.
  const endpoint = parseDockerHost(host, { tls: hasTls });
  if (endpoint === undefined) throw contextError(name, `has the endpoint "${host}", which ${DOCKER_HOST_RULE}`);
  const description = typeof meta.Metadata?.Description === 'string' ? meta.Metadata.Description : '';
  if (!('protocol' in endpoint) || endpoint.protocol !== 'https') return { endpoint, description };
  return { endpoint: { ...endpoint, tls: hasTls ? tlsFromDirectory(tlsDir, verify && existsSync(path.join(tlsDir, 'ca.pem')), `context ${name}`) : { verify } }, description };
}

/** The current context of the docker CLI's config.json, if it names one. */
export function currentContextOf(configDir: string): string | undefined {
  const file = path.join(configDir, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const parsed = JSON.parse(text) as { currentContext?: unknown };
    return typeof parsed.currentContext === 'string' && parsed.currentContext !== '' ? parsed.currentContext : undefined;
  } catch {
    throw new ValidationError([{ field: 'config.json', rule: `${file} is not JSON` }]);
  }
}

/** Every context of `configDir` (the `default` one first), as `berth context ls` lists them. */
export function listContexts(env: DockerEnv): ContextEntry[] {
  const configDir = dockerConfigDir(env);
  const defaultEndpoint = (() => {
    try {
      const endpoint = endpointFromDockerHost(env, env.HOME);
      return endpoint === undefined ? `unix://${DEFAULT_ENGINE_SOCKET}` : formatEndpoint(endpoint);
    } catch (error) {
      return error instanceof Error ? error.message : String(error);
    }
  })();
  const entries: ContextEntry[] = [{ name: 'default', description: 'DOCKER_HOST, else the local engine', endpoint: defaultEndpoint, tls: false }];
  if (configDir === undefined) return entries;
  const metaDir = path.join(configDir, 'contexts', 'meta');
  let dirs: string[] = [];
  try {
    dirs = readdirSync(metaDir);
  } catch {
    return entries;
  }
  const named: ContextEntry[] = [];
  for (const dir of dirs) {
    let meta: ContextMeta;
    try {
      meta = JSON.parse(readFileSync(path.join(metaDir, dir, 'meta.json'), 'utf8')) as ContextMeta;
    } catch {
      continue;
    }
    if (typeof meta.Name !== 'string') continue;
    try {
      const { endpoint, description } = readContext(configDir, meta.Name);
      named.push({ name: meta.Name, description, endpoint: formatEndpoint(endpoint), tls: 'tls' in endpoint && endpoint.tls !== undefined && (endpoint.tls.ca !== undefined || endpoint.tls.cert !== undefined) });
    } catch (error) {
      named.push({ name: meta.Name, description: '', endpoint: error instanceof Error ? error.message : String(error), tls: false });
    }
  }
  return [...entries, ...named.sort((a, b) => a.name.localeCompare(b.name))];
}

/** Whether an engine answers at a unix socket; the caller's probe (a ping with a short deadline). */
export type SocketProbe = (socketPath: string) => Promise<boolean>;

export interface ResolveEngineInput {
  env: DockerEnv;
  /** `--context` (CLI) or `engine.context` (agent). */
  context?: string;
  /** Asked of the default socket, then of each rootless one, only when nothing names an engine. */
  probe: SocketProbe;
}

/** The context name the docker CLI would use, and why (steps 1-4 of the module comment); undefined: the `default` context. */
export function chosenContext(input: Pick<ResolveEngineInput, 'env' | 'context'>): { name: string; source: 'flag' | 'DOCKER_CONTEXT' | 'config'; reason: string } | undefined {
  const { env } = input;
  if (input.context !== undefined && input.context !== '') return { name: input.context, source: 'flag', reason: `--context ${input.context}` };
  if (env.DOCKER_HOST?.trim()) return undefined;
  const fromEnv = env.DOCKER_CONTEXT?.trim();
  if (fromEnv) return { name: fromEnv, source: 'DOCKER_CONTEXT', reason: `DOCKER_CONTEXT=${fromEnv}` };
  const configDir = dockerConfigDir(env);
  const current = configDir === undefined ? undefined : currentContextOf(configDir);
  if (current !== undefined) return { name: current, source: 'config', reason: `currentContext in ${path.join(configDir!, 'config.json')}` };
  return undefined;
}

/** The engine berth uses, and why (see the module comment). */
export async function resolveEngine(input: ResolveEngineInput): Promise<EngineSelection> {
  const { env } = input;
  const chosen = chosenContext(input);
  if (chosen !== undefined && chosen.name !== 'default') {
    const configDir = dockerConfigDir(env);
    if (configDir === undefined) throw contextError(chosen.name, 'cannot be found: neither DOCKER_CONFIG nor HOME is set');
    const { endpoint } = readContext(configDir, chosen.name);
    return { context: chosen.name, endpoint, source: chosen.source, reason: chosen.reason };
  }
  const fromHost = endpointFromDockerHost(env, env.HOME);
  if (fromHost !== undefined) return { context: 'default', endpoint: fromHost, source: 'DOCKER_HOST', reason: 'DOCKER_HOST is set' };
  if (await input.probe(DEFAULT_ENGINE_SOCKET)) {
    return { context: 'default', endpoint: { socketPath: DEFAULT_ENGINE_SOCKET }, source: 'default-socket', reason: `${DEFAULT_ENGINE_SOCKET} answers` };
  }
  for (const candidate of rootlessSockets(env)) {
    if (await input.probe(candidate.socketPath)) {
      return {
        context: 'default',
        endpoint: { socketPath: candidate.socketPath },
        source: candidate.engine === 'docker' ? 'rootless-docker' : 'rootless-podman',
        reason: `${DEFAULT_ENGINE_SOCKET} does not answer; rootless ${candidate.engine === 'docker' ? 'Docker' : 'Podman'} answers at ${candidate.socketPath}`,
      };
    }
  }
  // Nothing answers: the default socket, so that the error names where the engine was expected.
  return { context: 'default', endpoint: { socketPath: DEFAULT_ENGINE_SOCKET }, source: 'default-socket', reason: `nothing answers; ${DEFAULT_ENGINE_SOCKET} is the default` };
}
