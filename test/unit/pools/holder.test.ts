import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { isBerthError } from '../../../src/common/errors.js';
import { ensureHolder, HOLDER_DIGEST, HOLDER_PROGRAM } from '../../../src/pools/holder.js';

describe('ensureHolder', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-holder-test-'));
  after(() => rm(dir, { recursive: true, force: true }));

  test('writes the holder program (a static x86-64 ELF under 16 KiB) once, named by its digest, executable by anyone and writable by none', async () => {
    const path = await ensureHolder(join(dir, 'a'));
    assert.equal(path, join(dir, 'a', `holder-${HOLDER_DIGEST}`));
    assert.ok(HOLDER_PROGRAM.length < 16 * 1024, `${HOLDER_PROGRAM.length} bytes`);
    assert.deepEqual([...HOLDER_PROGRAM.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
    assert.equal(HOLDER_PROGRAM.readUInt16LE(18), 62, 'e_machine x86-64');
    assert.deepEqual(await readFile(path), HOLDER_PROGRAM);
    assert.equal((await stat(path)).mode & 0o777, 0o555);
    const again = await ensureHolder(join(dir, 'a'));
    assert.equal(again, path);
    assert.deepEqual(await readdir(join(dir, 'a')), [`holder-${HOLDER_DIGEST}`], 'no temporary file is left');
  });

  test('replaces a file under the name that does not hold the program', async () => {
    const path = join(dir, 'b', `holder-${HOLDER_DIGEST}`);
    await ensureHolder(join(dir, 'b'));
    await chmod(path, 0o644);
    await writeFile(path, 'not the program');
    await ensureHolder(join(dir, 'b'));
    assert.deepEqual(await readFile(path), HOLDER_PROGRAM);
  });

  test('a holder directory another user could write is refused, for it could swap the program', async () => {
    const open = join(dir, 'open');
    await ensureHolder(open);
    await chmod(open, 0o777);
    await assert.rejects(ensureHolder(open), (error) => isBerthError(error, 'BERTH_VALIDATION') && /no other user may write/.test(error.message));
  });

  test('a directory that cannot be made is the holderDir option at fault', async () => {
    const file = join(dir, 'plain-file');
    await writeFile(file, 'x');
    await assert.rejects(ensureHolder(join(file, 'sub')), (error) => isBerthError(error, 'BERTH_VALIDATION') && /holderDir/.test(error.message));
  });
});
