import { readFile } from 'node:fs/promises';
import { BerthError, messageOf } from '../common/errors.js';
import type { InlineRegistryAuth } from '../spec/registry-auth.js';
import type { SpecPolicy } from '../spec/schema.js';
import type { AgentConfig } from './config.js';

/**
 * The agent's side of `registryAuth: { ref }`: the credentials configured under `registries.<name>`,
 * read when a task that names them pulls (a `passwordFile` is read then, so a rotated password is
 * used without a reload), and the names the submit policy knows.
 */

/** The SpecPolicy the agent checks submitted specs against: its `policy` keys and the names of its `registries`. */
export function agentSpecPolicy(config: Pick<AgentConfig, 'policy' | 'registries'> & Partial<Pick<AgentConfig, 'files'>>): SpecPolicy {
  return {
    ...config.policy,
    ...(config.files ? { filesMaxCount: config.files.maxCount, filesMaxBytes: config.files.maxBytes } : {}),
    registries: Object.fromEntries(Object.entries(config.registries).map(([name, entry]) => [name, entry.host])),
  };
}

/**
 * The credentials configured under `name`, with the registry they are for; undefined when there
 * are none by that name. A password file that cannot be read fails the pull (BERTH_IMAGE_ACCESS_DENIED,
 * naming the file, never its content).
 */
export async function configuredRegistryCredentials(
  config: Pick<AgentConfig, 'registries'>,
  name: string,
): Promise<{ host: string; credentials: InlineRegistryAuth } | undefined> {
  const entry = Object.hasOwn(config.registries, name) ? config.registries[name] : undefined;
  if (entry === undefined) return undefined;
  let password = entry.password;
  if (entry.passwordFile !== undefined) {
    try {
      // One trailing newline (as `echo` writes it) is not part of the password.
      password = (await readFile(entry.passwordFile, 'utf8')).replace(/\r?\n$/, '');
    } catch (error) {
      throw new BerthError('BERTH_IMAGE_ACCESS_DENIED', `the password file of registries.${name} (${entry.passwordFile}) cannot be read: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}`, {
        retryable: false,
        context: { registry: entry.host, file: entry.passwordFile },
      });
    }
    if (password === '') {
      throw new BerthError('BERTH_IMAGE_ACCESS_DENIED', `the password file of registries.${name} (${entry.passwordFile}) is empty`, {
        retryable: false,
        context: { registry: entry.host, file: entry.passwordFile },
      });
    }
  }
  const credentials: InlineRegistryAuth = {
    ...(entry.username !== undefined ? { username: entry.username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(entry.identityToken !== undefined ? { identityToken: entry.identityToken } : {}),
  };
  return { host: entry.host, credentials };
}
