import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { NO_INTERRUPTS } from '../../../src/cli/interrupts.js';
import { main } from '../../../src/cli/main.js';
import { parseDetachedRun } from '../../../src/cli/submit.js';
import { EXIT } from '../../../src/cli/exit-codes.js';

const io = () => {
  const stderr = new PassThrough();
  let errors = '';
  stderr.on('data', (chunk: Buffer) => (errors += chunk.toString()));
  return { io: { stdin: new PassThrough(), stdout: new PassThrough(), stderr, env: {}, interrupts: NO_INTERRUPTS }, errors: () => errors };
};

describe('the global --context before run -d', () => {
  test('a detached run is still recognised after the program\'s global options', async () => {
    const parsed = await parseDetachedRun(['run', '-d', 'busybox', 'true'], io().io);
    assert.equal(parsed?.image, 'busybox');
    assert.equal(await parseDetachedRun(['--context', 'default', 'run', 'busybox', 'true'], io().io), undefined, 'not detached');
  });

  for (const argv of [['--context', 'remote', 'run', '-d', 'busybox', 'true'], ['--context=remote', 'run', '--detach', 'busybox', 'true']]) {
    test(`berth ${argv.join(' ')} is refused (exit 2) naming --context and where the agent's engine is set, and submits nothing`, async () => {
      const { io: cliIo, errors } = io();
      assert.equal(await main(argv, cliIo), EXIT.usage);
      assert.match(errors(), /--context: .*--detach.*engine\.host/);
    });
  }
});
