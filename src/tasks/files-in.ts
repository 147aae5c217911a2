import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { BerthError, isBerthError, ValidationError } from '../common/errors.js';
import type { Engine } from '../engine/engine.js';
import type { ResolvedFile } from '../spec/files.js';
import { tarArchive, tarEnd, tarHeader, tarPadding } from './tar.js';

/** Opens an upload's archive afresh each time it is called; undefined: no upload by that id. */
export type UploadOpener = (id: string) => Readable | undefined;

type ArchiveEngine = Pick<Engine, 'putArchive'>;

/** The archive of a spec's inline files, entry names relative to "/" (the engine makes missing parents, root-owned, 0755). Pure. */
export function inlineFilesArchive(files: readonly ResolvedFile[]): Buffer | undefined {
  const inline = files.filter((f): f is Extract<ResolvedFile, { kind: 'inline' }> => f.kind === 'inline');
  if (inline.length === 0) return undefined;
  return tarArchive(
    inline.map((f) => ({
      header: { name: posix.normalize(f.path).replace(/^\/+/, ''), type: 'file' as const, mode: f.mode, uid: f.uid, gid: f.gid, mtime: Math.floor(Date.now() / 1000) },
      body: f.content,
    })),
  );
}

/** The archive of one directory entry (a missing extraction target): root-owned, 0755. Pure. */
export function directoryArchive(path: string): Buffer {
  return tarArchive([{ header: { name: posix.normalize(path).replace(/^\/+/, ''), type: 'directory', mode: 0o755, mtime: Math.floor(Date.now() / 1000) } }]);
}

/**
 * Writes a spec's files into a created container that has not started: its inline files in one
 * archive, then each upload's archive extracted at its directory (made when missing).
 */
export async function placeFiles(
  engine: ArchiveEngine,
  containerId: string,
  files: readonly ResolvedFile[],
  openUpload: UploadOpener | undefined,
  signal?: AbortSignal,
): Promise<void> {
  const inline = inlineFilesArchive(files);
  if (inline) await engine.putArchive(containerId, '/', Readable.from([inline]), { signal });
  for (const [index, file] of files.entries()) {
    if (file.kind !== 'upload') continue;
    const open = (): Readable => {
      const stream = openUpload?.(file.upload);
      if (stream === undefined) {
        throw new ValidationError([{ field: `files[${index}].upload`, rule: `no upload ${file.upload} is held (an unused upload is removed after an hour)` }]);
      }
      return stream;
    };
    const first = open();
    try {
      await engine.putArchive(containerId, file.path, first, { signal });
    } catch (error) {
      first.destroy();
      // The target directory is missing (the container exists: it was just created): make it, then extract again.
      if (!isBerthError(error, 'BERTH_ENGINE_NOT_FOUND') || file.path === '/') throw error;
      await engine.putArchive(containerId, '/', Readable.from([directoryArchive(file.path)]), { signal });
      await engine.putArchive(containerId, file.path, open(), { signal });
    }
  }
}

/**
 * A tar stream of a local file or directory (its whole tree), read as the stream is read, never
 * held whole: `local` becomes the entry `name` (a directory's contents under it), with its mode
 * and no owner (root in the container, as `docker cp` gives). Symlinks are kept as links; other
 * special files are skipped.
 */
export function packLocalPath(local: string, name: string): Readable {
  const entryName = posix.normalize(name).replace(/^\/+/, '').replace(/\/+$/, '');
  async function* entries(): AsyncGenerator<Buffer> {
    yield* packEntry(local, entryName);
    yield tarEnd();
  }
  return Readable.from(entries(), { objectMode: false });
}

async function* packEntry(local: string, name: string): AsyncGenerator<Buffer> {
  const info = await lstat(local);
  const mtime = Math.floor(info.mtimeMs / 1000);
  const mode = info.mode & 0o7777;
  if (info.isDirectory()) {
    if (name !== '') yield tarHeader({ name, type: 'directory', mode, mtime });
    for (const child of (await readdir(local)).sort()) yield* packEntry(join(local, child), name === '' ? child : `${name}/${child}`);
  } else if (info.isSymbolicLink()) {
    yield tarHeader({ name, type: 'symlink', mode, mtime, linkname: await readlink(local) });
  } else if (info.isFile()) {
    yield tarHeader({ name, type: 'file', mode, mtime, size: info.size });
    let sent = 0;
    if (info.size > 0) {
      for await (const chunk of createReadStream(local, { end: info.size - 1 }) as AsyncIterable<Buffer>) {
        sent += chunk.length;
        yield chunk;
      }
    }
    if (sent !== info.size) throw new BerthError('BERTH_VALIDATION', `${local} changed size while it was copied (${info.size} bytes, then ${sent})`, { context: { path: local } });
    yield Buffer.alloc(tarPadding(info.size));
  }
}
