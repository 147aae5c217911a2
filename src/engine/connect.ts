import { ValidationError } from '../common/errors.js';
import type { EngineOptions } from './engine.js';

/**
 * Engine options from DOCKER_HOST, as the docker CLI reads it: unix:///path or tcp://host:port.
 * Called at the edge (CLI, agent start-up); nothing deeper reads the environment.
 */
export function engineOptionsFromEnv(env: Readonly<Record<string, string | undefined>>): EngineOptions {
  const host = env.DOCKER_HOST?.trim();
  if (!host) return { socketPath: '/var/run/docker.sock' };
  if (host.startsWith('unix://')) return { socketPath: host.slice('unix://'.length) };
  const tcp = /^(?:tcp|http):\/\/([^:/]+)(?::(\d+))?\/?$/.exec(host);
  if (tcp) return { host: tcp[1], port: tcp[2] ? Number(tcp[2]) : 2375 };
  throw new ValidationError([{ field: 'DOCKER_HOST', rule: 'must be unix:///path/to/socket or tcp://host:port' }]);
}
