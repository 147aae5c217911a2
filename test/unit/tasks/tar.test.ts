import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tarArchive, tarHeader, TAR_BLOCK } from '../../../src/tasks/tar.js';

function listWithTar(archive: Buffer): string {
  const dir = mkdtempSync(join(tmpdir(), 'berth-tar-'));
  try {
    writeFileSync(join(dir, 'a.tar'), archive);
    return execFileSync('tar', ['-tvf', join(dir, 'a.tar'), '--numeric-owner'], { encoding: 'utf8' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('an archive of files and directories is read by GNU tar with names, modes, owners and bodies intact', () => {
  const archive = tarArchive([
    { header: { name: 'etc/app/', type: 'directory', mode: 0o750, uid: 1000, gid: 1001 } },
    { header: { name: 'etc/app/conf', type: 'file', mode: 0o640, uid: 1000, gid: 1001 }, body: Buffer.from('hello\n') },
    { header: { name: 'bin/run', type: 'file', mode: 0o4755 }, body: Buffer.alloc(1000, 7) },
  ]);
  assert.equal(archive.length % TAR_BLOCK, 0);
  const listing = listWithTar(archive);
  assert.match(listing, /^drwxr-x--- 1000\/1001\s+0 .* etc\/app\/$/m);
  assert.match(listing, /^-rw-r----- 1000\/1001\s+6 .* etc\/app\/conf$/m);
  assert.match(listing, /^-rwsr-xr-x 0\/0\s+1000 .* bin\/run$/m);
  const dir = mkdtempSync(join(tmpdir(), 'berth-tar-'));
  try {
    writeFileSync(join(dir, 'a.tar'), archive);
    execFileSync('tar', ['-xf', join(dir, 'a.tar'), '-C', dir, '--no-same-owner']);
    assert.equal(readFileSync(join(dir, 'etc/app/conf'), 'utf8'), 'hello\n');
    assert.equal(statSync(join(dir, 'bin/run')).size, 1000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a name too long for ustar travels in a pax header and is read back whole', () => {
  const name = `${'d'.repeat(120)}/${'f'.repeat(150)}`;
  const listing = listWithTar(tarArchive([{ header: { name, type: 'file', mode: 0o644 }, body: Buffer.from('x') }]));
  assert.ok(listing.trim().endsWith(name), listing);
});

test('a name over 100 bytes that splits at a slash uses the ustar prefix, with no pax header', () => {
  const name = `${'p'.repeat(80)}/${'n'.repeat(60)}`;
  const header = tarHeader({ name, type: 'file', mode: 0o644, size: 0 });
  assert.equal(header.length, TAR_BLOCK);
  assert.ok(listWithTar(Buffer.concat([header, Buffer.alloc(1024)])).trim().endsWith(name));
});
