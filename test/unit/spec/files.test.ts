import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isBerthError } from '../../../src/common/errors.js';
import { resolveTaskSpec } from '../../../src/spec/schema.js';
import { inlineFilesArchive } from '../../../src/tasks/files-in.js';

const image = 'busybox:latest';

function issuesOf(run: () => unknown): Array<{ field: string; rule: string }> {
  try {
    run();
  } catch (error) {
    assert.ok(isBerthError(error, 'BERTH_VALIDATION'));
    return error.context.issues as Array<{ field: string; rule: string }>;
  }
  assert.fail('no ValidationError');
}

test('inline files resolve to bytes with mode (number or octal string), owner and root defaults', () => {
  const spec = resolveTaskSpec({
    image,
    files: [
      { path: '/etc/a', content: 'text' },
      { path: '/bin/b', content: Buffer.from([1, 2, 3]).toString('base64'), encoding: 'base64', mode: '0755', uid: 5, gid: 6 },
      { upload: 'abc-123', path: '/work' },
    ],
  });
  assert.deepEqual(spec.files.map((f) => (f.kind === 'inline' ? [f.path, Buffer.from(f.content).toString('hex'), f.mode, f.uid, f.gid] : [f.upload, f.path])), [
    ['/etc/a', Buffer.from('text').toString('hex'), 0o644, 0, 0],
    ['/bin/b', '010203', 0o755, 5, 6],
    ['abc-123', '/work'],
  ]);
});

test('bad files are named by field: relative or dot-dot paths, bad modes, bad base64, unknown fields', () => {
  const issues = issuesOf(() =>
    resolveTaskSpec({
      image,
      files: [
        { path: 'rel', content: '' },
        { path: '/a/../b', content: '' },
        { path: '/c', content: '', mode: '0999' },
        { path: '/d', content: '***', encoding: 'base64' },
      ],
    }),
  );
  const fields = issues.map((i) => i.field);
  for (const field of ['files[0]', 'files[1]', 'files[2]', 'files[3]']) assert.ok(fields.some((f) => f.startsWith(field)), `${field} in ${JSON.stringify(issues)}`);
});

test('a driver policy bounds the count and inline bytes of files, naming files and the agent key', () => {
  const issues = issuesOf(() => resolveTaskSpec({ image, files: [{ path: '/a', content: 'abcdef' }, { path: '/b', content: '' }] }, { allowPrivileged: false, filesMaxCount: 1, filesMaxBytes: 5 }));
  assert.deepEqual(issues.map((i) => i.field), ['files', 'files']);
  assert.match(issues[0]!.rule, /files\.maxCount/);
  assert.match(issues[1]!.rule, /6 given; the limit is files\.maxBytes/);
});

test('inline files make one archive of entries relative to the root; uploads make none', () => {
  const spec = resolveTaskSpec({ image, files: [{ path: '/etc/app/conf', content: 'x', mode: 0o600 }, { upload: 'u1', path: '/work' }] });
  const archive = inlineFilesArchive(spec.files)!;
  assert.equal(archive.subarray(0, 13).toString('utf8'), 'etc/app/conf\0');
  assert.equal(archive.length, 512 * 2 + 1024);
  assert.equal(inlineFilesArchive(resolveTaskSpec({ image, files: [{ upload: 'u1', path: '/work' }] }).files), undefined);
});
