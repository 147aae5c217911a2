import { existsSync } from 'node:fs';
import { posix } from 'node:path';
import path from 'node:path';
import { isBerthError, ValidationError } from '../common/errors.js';
import type { AgentClient } from '../agent/client.js';
import { packLocalPath } from '../tasks/files-in.js';

/** One `--copy LOCAL:PATH`: a local file or directory, and where it goes in the container. */
export interface CopyIn {
  readonly local: string;
  readonly path: string;
}

/**
 * `--copy LOCAL:PATH` (repeatable): PATH is absolute, and the value splits at the last ":/", so a
 * local name may hold colons. The local file or directory must exist.
 */
export function parseCopyFlag(value: string, index: number, flag = '--copy'): CopyIn {
  const at = value.lastIndexOf(':/');
  const field = `${flag}[${index}]`;
  if (at <= 0) throw new ValidationError([{ field, rule: `must be LOCAL:PATH with PATH absolute, e.g. ./src:/work (got ${JSON.stringify(value)})` }]);
  const local = value.slice(0, at);
  const target = posix.normalize(value.slice(at + 1));
  if (target === '/') throw new ValidationError([{ field, rule: 'PATH must name a file or directory in the container, not /' }]);
  if (!existsSync(local)) throw new ValidationError([{ field, rule: `${local} does not exist` }]);
  return { local: path.resolve(local), path: target };
}

/** The upload id a plain `berth run` gives its n-th `--copy` (its driver opens them from disk). */
export function copyUploadId(index: number): string {
  return `copy-${index}`;
}

/**
 * `berth cp LOCAL TASK:PATH` into a running task of the agent's, as `docker cp` does: when PATH
 * is a directory in the container, LOCAL goes into it under its own name; when PATH does not
 * exist, LOCAL is written as PATH (a directory's contents under it; its parent must exist for
 * docker, berth makes it). Streamed from disk to the agent to the engine.
 */
export async function copyIntoTask(client: AgentClient, local: string, taskId: string, target: string): Promise<void> {
  if (!existsSync(local)) throw new ValidationError([{ field: 'LOCAL', rule: `${local} does not exist` }]);
  if (!target.startsWith('/')) throw new ValidationError([{ field: 'TASK:PATH', rule: `PATH must be absolute (got ${JSON.stringify(target)})` }]);
  const normalized = posix.normalize(target);
  try {
    await client.copyIn(taskId, normalized, packLocalPath(local, path.basename(path.resolve(local))));
  } catch (error) {
    // No such directory in the container: LOCAL becomes PATH itself.
    if (!isBerthError(error, 'BERTH_ENGINE_NOT_FOUND') || normalized === '/') throw error;
    await client.copyIn(taskId, '/', packLocalPath(local, normalized));
  }
}
