import { spawn } from 'node:child_process';
import { cp, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BerthError } from '../common/errors.js';

async function isDirectory(target: string): Promise<boolean> {
  return stat(target).then((s) => s.isDirectory(), () => false);
}

async function exists(target: string): Promise<boolean> {
  return stat(target).then(() => true, () => false);
}

/**
 * Extracts a tar stream of the container path `source` (its entries named from the path's base
 * name, as the engine's archive endpoint names them) to `local` as `docker cp` does: into
 * `local/<basename>` when `local` is a directory that exists, else as `local` itself (a directory's
 * contents into a new directory `local`, a file as the file `local`). Owners are not kept; modes are.
 */
export async function extractArchive(archive: Readable, source: string, local: string): Promise<string> {
  const base = path.posix.basename(source.replace(/\/+$/, '')) || '.';
  const localAbs = path.resolve(local);
  const target = (await isDirectory(localAbs)) ? path.join(localAbs, base) : localAbs;
  const staging = await mkdtemp(path.join(path.dirname(target), '.berth-cp-'));
  try {
    const tar = spawn('tar', ['-x', '--no-same-owner', '-f', '-', '-C', staging], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    tar.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const exited = new Promise<number | null>((resolve, reject) => {
      tar.once('error', reject);
      tar.once('close', resolve);
    });
    await pipeline(archive, tar.stdin);
    const code = await exited;
    if (code !== 0) throw new BerthError('BERTH_VALIDATION', `could not extract ${source} to ${local}: tar exited ${code}: ${stderr.trim()}`, { context: { source, local } });
    const extracted = path.join(staging, base);
    if (!(await exists(extracted))) throw new BerthError('BERTH_INTERNAL', `the archive of ${source} holds no ${base}`, { context: { source } });
    if (await exists(target)) await cp(extracted, target, { recursive: true, force: true });
    else await rename(extracted, target);
    return target;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
