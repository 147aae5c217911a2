import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CHANNEL_NAMES, GROUPS_CHANNEL, IMAGES_CHANNEL, PRUNE_CHANNEL, RECONCILE_CHANNEL, TASK_PHASE_CHANNEL } from '../../../src/common/diagnostics.js';
import { GROUP_EVENTS_CHANNEL, IMAGE_EVENTS_CHANNEL, TASK_PHASE_CHANNEL as PUBLIC_TASK_PHASE_CHANNEL } from '../../../src/index.js';
import { PRUNE_EVENTS_CHANNEL } from '../../../src/prune/index.js';
import { RECONCILE_EVENTS_CHANNEL } from '../../../src/reconcile/index.js';

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((entry) => entry.isFile() && entry.name.endsWith('.ts')).map((entry) => path.join(entry.parentPath, entry.name));
}

describe('diagnostics channels', () => {
  it('are created in common/diagnostics.ts alone: no other source file opens a channel', async () => {
    const offenders: string[] = [];
    for (const file of await sourceFiles(path.resolve('src'))) {
      if (file.endsWith(path.join('common', 'diagnostics.ts'))) continue;
      if (/from 'node:diagnostics_channel'|\.channel\(['"]/.test(await readFile(file, 'utf8'))) offenders.push(path.relative(process.cwd(), file));
    }
    assert.deepEqual(offenders, []);
  });

  it('the public channel exports are the channels named there', () => {
    assert.equal(IMAGE_EVENTS_CHANNEL, IMAGES_CHANNEL);
    assert.equal(RECONCILE_EVENTS_CHANNEL, RECONCILE_CHANNEL);
    assert.equal(PRUNE_EVENTS_CHANNEL, PRUNE_CHANNEL);
    assert.equal(PUBLIC_TASK_PHASE_CHANNEL, TASK_PHASE_CHANNEL);
    assert.equal(GROUP_EVENTS_CHANNEL, GROUPS_CHANNEL);
    assert.deepEqual(
      [IMAGES_CHANNEL.name, RECONCILE_CHANNEL.name, PRUNE_CHANNEL.name, TASK_PHASE_CHANNEL.name, GROUPS_CHANNEL.name],
      [CHANNEL_NAMES.images, CHANNEL_NAMES.reconcile, CHANNEL_NAMES.prune, CHANNEL_NAMES.taskPhase, CHANNEL_NAMES.groups],
    );
  });
});
