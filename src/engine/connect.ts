import { ValidationError } from '../common/errors.js';
import type { EngineOptions } from './engine.js';

/** Where the engine listens: a unix socket, or a TCP host and port. */
export type EngineEndpoint = { readonly socketPath: string } | { readonly host: string; readonly port: number };

/** The rule an engine address breaks, in words. */
export const DOCKER_HOST_RULE = 'must be unix:///path/to/socket or tcp://host:port';

/**
 * Reads an engine address as the docker CLI spells it in DOCKER_HOST: `unix:///path` (an absolute
 * path) or `tcp://host[:port]` (`http://` too; port 2375 when left out). Undefined for anything
 * else, so the caller names the field it came from (DOCKER_HOST, or the agent's `engine.host`).
 */
export function parseDockerHost(text: string): EngineEndpoint | undefined {
  const value = text.trim();
  if (value.startsWith('unix:///')) return { socketPath: value.slice('unix://'.length) };
  const tcp = /^(?:tcp|http):\/\/([^:/\s]+)(?::(\d{1,5}))?\/?$/.exec(value);
  if (!tcp) return undefined;
  const port = tcp[2] === undefined ? 2375 : Number(tcp[2]);
  return port <= 65_535 ? { host: tcp[1]!, port } : undefined;
}

/**
 * Engine options from DOCKER_HOST, read with `parseDockerHost`; the default socket when it is unset.
 * Called at the edge (CLI, agent start-up); nothing deeper reads the environment.
 */
export function engineOptionsFromEnv(env: Readonly<Record<string, string | undefined>>): EngineOptions {
  const host = env.DOCKER_HOST?.trim();
  if (!host) return { socketPath: '/var/run/docker.sock' };
  const endpoint = parseDockerHost(host);
  if (endpoint === undefined) throw new ValidationError([{ field: 'DOCKER_HOST', rule: DOCKER_HOST_RULE }]);
  return { ...endpoint };
}
