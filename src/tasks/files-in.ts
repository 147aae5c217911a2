import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { isBerthError, ValidationError } from '../common/errors.js';
import type { Engine } from '../engine/engine.js';
import type { ResolvedFile } from '../spec/files.js';
import { tarArchive } from './tar.js';

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
