/**
 * The holder: the program every pool container runs as PID 1 while it waits for a task, and, as
 * `holder launch`, the launcher a warm task becomes (src/pools/holder-program/holder.c, built by
 * scripts/build-holder.sh into holder-binary.ts). It is written once to a file on the host and
 * bind-mounted read-only into each pool container as its entrypoint, so images without a shell or
 * `sleep` (distroless, scratch with one static binary) can be pooled too. As PID 1 it sleeps in
 * `pause()` until a signal ends it; it has no handlers, so it ignores SIGTERM: pool containers are
 * stopped with SIGKILL (their StopSignal). x86-64 Linux only, as the groups' pause image.
 */
import { createHash, randomUUID } from 'node:crypto';
import { chmod, lstat, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { messageOf, ValidationError } from '../common/errors.js';
import { HOLDER_BINARY_BASE64 } from './holder-binary.js';

/** The holder program's bytes (x86-64 Linux). */
export const HOLDER_PROGRAM: Buffer = Buffer.from(HOLDER_BINARY_BASE64, 'base64');

/** The program's digest: its file is named by it, so a changed program is a new file. */
export const HOLDER_DIGEST = createHash('sha256').update(HOLDER_PROGRAM).digest('hex').slice(0, 16);

/** Default TaskDriverOptions.holderDir: a directory of berth's under the system's temporary directory. */
export function defaultHolderDir(): string {
  return join(tmpdir(), 'berth-holder');
}

/**
 * Writes the holder program to `dir` (once: a file that already holds the program is kept) and
 * returns its path. The directory is made if missing, and must be this process's user's and
 * writable by no other (a shared temporary directory's subdirectory made by someone else is refused).
 * The write is atomic (a temporary file renamed into place) with mode 0555, so
 * that a container never mounts a half-written program and nobody can change the one mounted.
 * Throws BERTH_VALIDATION (field holderDir) when the directory cannot be written.
 */
export async function ensureHolder(dir: string = defaultHolderDir()): Promise<string> {
  const path = join(dir, `holder-${HOLDER_DIGEST}`);
  try {
    await mkdir(dir, { recursive: true, mode: 0o755 });
    // Whoever may write the directory may swap the program every pool container runs: it must be
    // this process's own, a real directory, and writable by nobody else.
    const info = await lstat(dir);
    const uid = process.getuid?.();
    if (!info.isDirectory() || (uid !== undefined && info.uid !== uid) || (info.mode & 0o022) !== 0) {
      throw new Error(`it must be a directory of this process's user (uid ${uid ?? '?'}) that no other user may write, and is ${info.isDirectory() ? `owned by uid ${info.uid} with mode ${(info.mode & 0o777).toString(8)}` : 'not a directory'}`);
    }
    const existing = await readFile(path).catch(() => undefined);
    if (existing !== undefined && existing.equals(HOLDER_PROGRAM)) return path;
    const temporary = join(dir, `.holder-${randomUUID()}`);
    try {
      await writeFile(temporary, HOLDER_PROGRAM, { mode: 0o555 });
      // The umask may have narrowed the mode; containers running as any user must execute it.
      await chmod(temporary, 0o555);
      await rename(temporary, path);
    } finally {
      await rm(temporary, { force: true });
    }
    return path;
  } catch (error) {
    // The directory is the owner's choice (holderDir): one berth cannot write is an option at fault.
    throw new ValidationError([{ field: 'holderDir', rule: `must be a directory berth can write the warm pools' holder program to (${dir}: ${messageOf(error)})` }]);
  }
}
