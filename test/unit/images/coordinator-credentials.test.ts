/**
 * Acquires with task credentials against the scripted engine: a pull is shared only by acquires
 * with the very same credentials, so an acquire never rides on (nor fails with) a pull made with
 * someone else's; a refused pull says where its credentials came from.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isBerthError } from '../../../src/common/errors.js';
import { ImageCoordinator } from '../../../src/images/coordinator.js';
import { ManualClock } from '../../support/time.js';
import { FakeImageEngine } from './fakes.js';

const NAME = '127.0.0.1:5000/app:1';
const ID = 'sha256:app1';
const alice = { username: 'alice', password: 'alice-pw' };
const bob = { username: 'bob', password: 'bob-pw' };

function setup() {
  const engine = new FakeImageEngine();
  const coordinator = new ImageCoordinator({ engine, clock: new ManualClock(), options: { pullRetryDelay: 1, pullAttempts: 1 } });
  return { engine, coordinator };
}

describe('ImageCoordinator: task credentials and shared pulls', () => {
  it('acquires with the same credentials share one pull, which carries them', async () => {
    const { engine, coordinator } = setup();
    const acquires = [coordinator.acquire(NAME, 'a', { auth: alice }), coordinator.acquire(NAME, 'b', { auth: { ...alice } })];
    await engine.pullsOpened(1);
    engine.pulls[0]!.complete(NAME, ID);
    await Promise.all(acquires);
    assert.equal(engine.pulls.length, 1);
    assert.deepEqual(engine.pulls[0]!.auth, { username: 'alice', password: 'alice-pw', serveraddress: '127.0.0.1:5000' });
  });

  it('an acquire without credentials does not join a pull made with a task\'s credentials: it pulls on its own, and its refusal is its own', async () => {
    const { engine, coordinator } = setup();
    const withCredentials = coordinator.acquire(NAME, 'a', { policy: 'always', auth: alice });
    const anonymous = coordinator.acquire(NAME, 'b', { policy: 'always' });
    await engine.pullsOpened(2);
    const byAuth = (user: string | undefined) => engine.pulls.find((p) => p.auth?.username === user)!;
    assert.equal(byAuth(undefined).auth, undefined);
    byAuth(undefined).failInStream('Head "http://127.0.0.1:5000/v2/app/manifests/1": no basic auth credentials');
    byAuth('alice').complete(NAME, ID);
    assert.equal((await withCredentials).imageId, ID);
    await assert.rejects(anonymous, (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_IMAGE_ACCESS_DENIED'), String(error));
      assert.match(error.message, /^registry 127\.0\.0\.1:5000 refused the pull of 127\.0\.0\.1:5000\/app:1: .*; no credentials were sent \(an anonymous pull\)/);
      assert.equal(error.context.authSource, 'none');
      return true;
    });
  });

  it('acquires with different credentials pull separately; wrong ones fail only their own acquire, naming the task\'s credentials, never quoting them', async () => {
    const { engine, coordinator } = setup();
    const first = coordinator.acquire(NAME, 'a', { auth: alice });
    const second = coordinator.acquire(NAME, 'b', { auth: bob });
    await engine.pullsOpened(2);
    engine.pulls.find((p) => p.auth?.username === 'bob')!.failInStream('unauthorized: authentication required');
    engine.pulls.find((p) => p.auth?.username === 'alice')!.complete(NAME, ID);
    assert.equal((await first).imageId, ID);
    await assert.rejects(second, (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_IMAGE_ACCESS_DENIED'));
      assert.match(error.message, /the task's own credentials \(registryAuth\) were sent$/);
      assert.ok(!JSON.stringify(error).includes('bob-pw') && !error.message.includes('bob-pw'));
      return true;
    });
  });
});
