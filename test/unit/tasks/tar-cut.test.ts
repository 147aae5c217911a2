import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { resolveTaskSpec } from '../../../src/spec/schema.js';
import { copyTarEntries, TAR_TRAILER } from '../../../src/tasks/tar-cut.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-tarcut-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A tar of out/ holding a.bin (1000 bytes), b.bin (3000 bytes) and a file with a 150-character name, in that order. */
function archive(): Buffer {
  mkdirSync(path.join(dir, 'out'), { recursive: true });
  writeFileSync(path.join(dir, 'out', 'a.bin'), Buffer.alloc(1000, 1));
  writeFileSync(path.join(dir, 'out', 'b.bin'), Buffer.alloc(3000, 2));
  writeFileSync(path.join(dir, 'out', `${'c'.repeat(150)}.txt`), 'long\n');
  return execFileSync('tar', ['--format=pax', '-cf', '-', '-C', dir, 'out/a.bin', 'out/b.bin', `out/${'c'.repeat(150)}.txt`]);
}

async function copy(source: Buffer, budget: number, chunkSize = 700): Promise<{ out: Buffer; outcome: Awaited<ReturnType<typeof copyTarEntries>> }> {
  const chunks: Buffer[] = [];
  for (let i = 0; i < source.length; i += chunkSize) chunks.push(source.subarray(i, i + chunkSize));
  const kept: Buffer[] = [];
  const outcome = await copyTarEntries(Readable.from(chunks), budget, async (chunk) => void kept.push(Buffer.from(chunk)));
  return { out: Buffer.concat(kept), outcome };
}

function names(tar: Buffer): string[] {
  const file = path.join(dir, `t-${Math.random().toString(36).slice(2)}.tar`);
  writeFileSync(file, Buffer.concat([tar, TAR_TRAILER]));
  return execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).split('\n').filter((l) => l !== '');
}

describe('copyTarEntries', () => {
  test('copies every entry, without the trailer, when all fit, whatever the chunking', async () => {
    const source = archive();
    for (const size of [1, 511, 512, 700, 100_000]) {
      const { out, outcome } = await copy(source, 1 << 20, size);
      assert.equal(outcome.cutAt, undefined);
      assert.equal(outcome.entries, 3);
      assert.equal(outcome.bytes, out.length);
      assert.deepEqual(names(out), ['out/a.bin', 'out/b.bin', `out/${'c'.repeat(150)}.txt`]);
    }
  });

  test('cuts at a file boundary: the entry that does not fit and every one after it are left out, and named', async () => {
    // a.bin takes a header and two blocks (1536 bytes, with any pax header before it); b.bin does not fit in 3000.
    const { out, outcome } = await copy(archive(), 3000);
    assert.equal(outcome.cutAt, 'out/b.bin');
    assert.equal(outcome.entries, 1);
    assert.ok(out.length <= 3000 && out.length % 512 === 0);
    assert.deepEqual(names(out), ['out/a.bin']);
  });

  test('a long name carried by a pax header is kept with its entry and named when cut', async () => {
    const source = archive();
    const full = (await copy(source, 1 << 20)).out.length;
    const { outcome } = await copy(source, full - 1);
    assert.equal(outcome.cutAt, `out/${'c'.repeat(150)}.txt`);
    assert.equal(outcome.entries, 2);
  });

  test('a budget of nothing keeps nothing', async () => {
    const { out, outcome } = await copy(archive(), 0);
    assert.equal(out.length, 0);
    assert.equal(outcome.cutAt, 'out/a.bin');
  });
});

describe('spec collect', () => {
  test('takes distinct absolute paths, at most 32, and defaults to none', () => {
    assert.deepEqual(resolveTaskSpec({ image: 'busybox' }).collect, []);
    assert.deepEqual(resolveTaskSpec({ image: 'busybox', collect: ['/out', '/reports'] }).collect, ['/out', '/reports']);
    for (const [collect, rule] of [[['out'], /absolute/], [['/a', '/a'], /twice/], [Array.from({ length: 33 }, (_, i) => `/p${i}`), /at most 32/]] as const) {
      assert.throws(() => resolveTaskSpec({ image: 'busybox', collect }), (error: Error & { issues?: Array<{ field: string; rule: string }> }) => {
        assert.ok(error.issues?.some((issue) => issue.field.startsWith('collect') && rule.test(issue.rule)), JSON.stringify(error.issues));
        return true;
      });
    }
  });
});
