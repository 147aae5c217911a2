import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { BERTH_CLI } from '../support/agent.js';
import { requireEngine, testRun, testEngine } from '../support/engine.js';
import { pushImage, requireRegistryTools, startTestRegistries, untag, type TestRegistries } from '../support/registry.js';

const engine = testEngine();
const run = testRun(engine);

async function berth(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [...BERTH_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const [code] = await once(child, 'close');
  return { code: code as number | null, stdout, stderr };
}

describe('berth run pulls images', { skip: (await requireEngine()) || requireRegistryTools() }, () => {
  let registries: TestRegistries;
  let image: string;
  const repository = `berth-it/${run.id}/cli`;

  before(async () => {
    registries = await startTestRegistries();
    image = `${registries.plain.host}/${repository}:1`;
    await pushImage('berth-test/busybox:latest', [image]);
    await untag(engine, [image]);
  });
  after(async () => {
    await untag(engine, [image]).catch(() => undefined);
    await run.cleanup();
    await registries.stop();
  });

  test('--pull never refuses an image that is not present, without asking the registry', async () => {
    const result = await berth(['run', '--pull', 'never', '-l', `berth-test.run=${run.id}`, image, 'true']);
    assert.equal(result.code, 125);
    assert.match(result.stderr, /BERTH_IMAGE_NOT_FOUND/);
    assert.equal(registries.plain.manifestRequests(repository), 0);
  });

  test('a missing image is pulled once, with progress lines when stderr is not a terminal', async () => {
    const result = await berth(['run', '-l', `berth-test.run=${run.id}`, image, 'echo', 'ran']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'ran\n');
    assert.match(result.stderr, new RegExp(`^Pulling ${image.replace(/[.]/g, '\\.')}`, 'm'));
    assert.match(result.stderr, /^Pulled .* in \d+ ms$/m);
    assert.equal(registries.plain.manifestRequests(repository, '1'), 1);
  });

  test('--pull missing uses the present image; --pull always pulls again', async () => {
    const present = await berth(['run', '--pull', 'missing', '-l', `berth-test.run=${run.id}`, image, 'true']);
    assert.equal(present.code, 0);
    assert.equal(registries.plain.manifestRequests(repository, '1'), 1);
    const always = await berth(['run', '--pull', 'always', '-l', `berth-test.run=${run.id}`, image, 'true']);
    assert.equal(always.code, 0);
    assert.equal(registries.plain.manifestRequests(repository, '1'), 2);
  });
});
