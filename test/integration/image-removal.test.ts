/**
 * The one image removal rule (images/removal.ts) against the real engine: the coordinator's delayed
 * removal, prune and the image budget all remove through it. Every image is built here with a
 * unique payload (so its own id) and the run's label, and removed at the end.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import Dockerode from 'dockerode';
import { isBerthError } from '../../src/common/errors.js';
import { removeBerthImage } from '../../src/images/removal.js';
import { createTestContainer, requireEngine, TEST_ENGINE_SOCKET, testRun, testEngine } from '../support/engine.js';
import { buildUniqueImage, removeRunImages } from '../support/registry.js';

const engine = testEngine();
const docker = new Dockerode({ socketPath: TEST_ENGINE_SOCKET });
const run = testRun(engine);

/** A name of this run: `berth-test-removal-<run>/<what>:1`. */
const nameFor = (what: string): string => `berth-test-removal-${run.id}/${what}:1`;

async function idOf(ref: string): Promise<string | undefined> {
  try {
    return (await engine.inspectImage(ref)).id;
  } catch (error) {
    if (isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) return undefined;
    throw error;
  }
}

/** Builds an image of its own under `name` and resolves with its id. */
async function build(name: string): Promise<string> {
  await buildUniqueImage(name, run.id, 16 * 1024);
  const id = await idOf(name);
  assert.ok(id, `${name} was built`);
  return id;
}

describe('the image removal rule against the real engine', { skip: await requireEngine() }, () => {
  after(async () => {
    await run.cleanup();
    await removeRunImages(engine, run.id);
  });

  test('untags berth\'s name and the image goes with it', async () => {
    const name = nameFor('plain');
    const imageId = await build(name);
    const removal = await removeBerthImage(engine, { imageId, refs: [name] });
    assert.equal(removal.kind, 'deleted');
    assert.deepEqual(removal.untagged, [name]);
    assert.equal(await idOf(imageId), undefined);
  });

  test('leaves a name that means another image now, and removes the old image, nameless, by id', async () => {
    const name = nameFor('moved');
    const oldId = await build(name);
    // Built again under the same name, as a re-pull of a moved tag: the name now means the new image.
    const newId = await build(name);
    assert.notEqual(newId, oldId);
    const removal = await removeBerthImage(engine, { imageId: oldId, refs: [name] });
    assert.equal(removal.kind, 'deleted');
    assert.equal(await idOf(oldId), undefined);
    assert.equal(await idOf(name), newId, 'the name still means the new image');
  });

  test('keeps an image someone else names, once berth\'s own name is gone', async () => {
    const name = nameFor('shared');
    const theirs = nameFor('theirs');
    const imageId = await build(name);
    const [repo, tag] = theirs.split(':') as [string, string];
    await docker.getImage(imageId).tag({ repo, tag });
    const removal = await removeBerthImage(engine, { imageId, refs: [name] });
    assert.equal(removal.kind, 'named');
    assert.equal(await idOf(name), undefined, 'berth\'s name is untagged');
    assert.equal(await idOf(theirs), imageId, 'their name, and the image, stay');
  });

  test('keeps an image a container uses, without forcing', async () => {
    const name = nameFor('used');
    const imageId = await build(name);
    await createTestContainer(engine, run, { image: name, cmd: ['true'], name: run.name('uses-image') });
    const removal = await removeBerthImage(engine, { imageId, refs: [name] });
    assert.equal(removal.kind, 'in-use');
    assert.equal(await idOf(name), imageId);
  });

  test('an image that is gone already is absent', async () => {
    const name = nameFor('gone');
    const imageId = await build(name);
    await engine.removeImage(imageId, { force: true });
    const removal = await removeBerthImage(engine, { imageId, refs: [name] });
    assert.equal(removal.kind, 'absent');
  });
});
