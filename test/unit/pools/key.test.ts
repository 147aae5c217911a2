import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LABELS, ROLES } from '../../../src/common/labels.js';
import { envFits, execArgv, execEnv, HOLDER_TARGET, matchesPool, notPoolableReason, poolContainerPlan, poolKeyOf } from '../../../src/pools/key.js';
import { resolveTaskSpec, type TaskSpec } from '../../../src/spec/schema.js';

const resolved = (spec: Partial<TaskSpec> = {}) => resolveTaskSpec({ image: 'img:1', ...spec });
const key = (spec: Partial<TaskSpec> = {}): string => poolKeyOf(resolved(spec));

describe('poolKeyOf', () => {
  test('ignores what a task may choose: command, entrypoint, working dir, env, stdin, stop signal and grace', () => {
    const base = key({ resources: { memory: '64m' } });
    assert.equal(key({ resources: { memory: '64m' }, command: ['echo', 'hi'], entrypoint: ['/bin/sh', '-c'], workdir: '/w', env: { A: '1' }, stdin: 'x', stopSignal: 'SIGINT', stopGracePeriod: '3s' }), base);
  });

  test('differs for every create-time part: image, resources, mounts, network, user, security options, hostname, user labels', () => {
    const base = key();
    const different: Array<Partial<TaskSpec>> = [
      { image: 'img:2' },
      { resources: { memory: '64m' } },
      { resources: { cpuMilli: 500 } },
      { mounts: [{ type: 'tmpfs', target: '/scratch' }] },
      { network: 'bridge' },
      { user: '1000' },
      { readOnlyRootfs: true },
      { capDrop: ['ALL'] },
      { hostname: 'h' },
      { labels: { team: 'a' } },
      { init: true },
    ];
    for (const spec of different) assert.notEqual(key(spec), base, JSON.stringify(spec));
  });

  test('is the same text whatever the order of keys in the spec', () => {
    assert.equal(key({ labels: { a: '1', b: '2' }, sysctls: { 'net.core.somaxconn': '1', 'kernel.msgmax': '2' } }), key({ sysctls: { 'kernel.msgmax': '2', 'net.core.somaxconn': '1' }, labels: { b: '2', a: '1' } }));
  });
});

describe('matching a pool', () => {
  test('the pool\'s env must be within the task\'s, each value equal; the task may add its own', () => {
    assert.equal(envFits({}, { A: '1' }), true);
    assert.equal(envFits({ A: '1' }, { A: '1', B: '2' }), true);
    assert.equal(envFits({ A: '1' }, { A: '2' }), false);
    assert.equal(envFits({ A: '1' }, {}), false);
    assert.equal(envFits({ A: '' }, { A: '' }), true);
  });

  test('a task matches a pool of the same key whose env fits', () => {
    const pool = { key: key(), env: { A: '1' } };
    assert.equal(matchesPool(pool, key({ command: ['x'] }), { A: '1', B: '2' }), true);
    assert.equal(matchesPool(pool, key({ resources: { memory: '32m' } }), { A: '1' }), false);
    assert.equal(matchesPool(pool, key(), { B: '2' }), false);
  });
});

describe('notPoolableReason', () => {
  test('names what an exec in a started container cannot give as a cold start does', () => {
    assert.equal(notPoolableReason(resolved()), undefined);
    assert.equal(notPoolableReason(resolved({ files: [{ path: '/f', content: 'x' }] })), 'files');
    assert.equal(notPoolableReason(resolved({ healthcheck: { command: ['true'] } })), 'healthcheck');
    assert.equal(notPoolableReason(resolved({ healthcheck: { disabled: true } })), undefined);
    assert.equal(notPoolableReason(resolved(), { waitHealthy: true }), 'waitHealthy');
    assert.equal(notPoolableReason(resolved({ network: 'bridge', ports: [{ container: 80 }] })), 'ports');
    assert.equal(notPoolableReason(resolved(), { inGroup: true }), 'group');
    assert.equal(notPoolableReason(resolved({ tty: true })), 'tty');
    assert.equal(notPoolableReason(resolved({ openStdin: true })), 'openStdin');
    assert.equal(notPoolableReason(resolved({ pull: 'always' })), 'pull: always');
  });
});

describe('execArgv: the task\'s command merged with the image\'s as the engine merges them', () => {
  const image = { entrypoint: ['/entry'], cmd: ['default'] };
  test('nothing of its own: the image\'s entrypoint and command', () => {
    assert.deepEqual(execArgv({}, image), ['/entry', 'default']);
  });
  test('a command of its own replaces the image\'s command and keeps its entrypoint', () => {
    assert.deepEqual(execArgv({ command: ['mine'] }, image), ['/entry', 'mine']);
  });
  test('an entrypoint of its own drops the image\'s command', () => {
    assert.deepEqual(execArgv({ entrypoint: ['/own'] }, image), ['/own']);
    assert.deepEqual(execArgv({ entrypoint: ['/own'], command: ['arg'] }, image), ['/own', 'arg']);
  });
  test('an empty entrypoint clears the image\'s, keeping its command unless the task gives one', () => {
    assert.deepEqual(execArgv({ entrypoint: [] }, image), ['default']);
    assert.deepEqual(execArgv({ entrypoint: [], command: ['x'] }, image), ['x']);
  });
  test('an image with neither and a task with neither: nothing to run', () => {
    assert.equal(execArgv({}, {}), undefined);
    assert.deepEqual(execArgv({ command: ['ls'] }, {}), ['ls']);
  });
  test('the exec\'s env is all of the task\'s', () => {
    assert.deepEqual(execEnv(resolved({ env: { A: '1', B: 'x=y' } })), ['A=1', 'B=x=y']);
  });
});

describe('poolContainerPlan', () => {
  const identity = { poolName: 'small', ownerId: 'agent', slotId: 'ab12', startAttempt: 'att-1', holderPath: '/tmp/berth-holder/holder-x' };

  test('runs the holder, mounted read-only, as the entrypoint; no task command, working dir, stdin or health check; SIGKILL to stop', () => {
    const { body, name } = poolContainerPlan(resolved({ command: ['ignored'], workdir: '/w', env: { FIXED: '1' }, mounts: [{ type: 'tmpfs', target: '/t' }] }), identity);
    assert.equal(name, 'berth-small-ab12.agent-pool.10');
    assert.deepEqual([body.Entrypoint, body.Cmd, body.WorkingDir], [[HOLDER_TARGET], [], undefined]);
    assert.deepEqual([body.Tty, body.OpenStdin, body.AttachStdin, body.StopSignal], [false, false, false, 'SIGKILL']);
    assert.deepEqual(body.Healthcheck, { Test: ['NONE'] });
    assert.deepEqual(body.Env, ['FIXED=1']);
    assert.deepEqual(body.HostConfig.Mounts?.at(-1), { Type: 'bind', Source: identity.holderPath, Target: HOLDER_TARGET, ReadOnly: true });
    assert.equal(body.HostConfig.Mounts?.length, 2);
  });

  test('carries the pool\'s labels and no task id', () => {
    const { body } = poolContainerPlan(resolved({ labels: { team: 'a' } }), identity);
    assert.deepEqual(body.Labels, {
      team: 'a',
      [LABELS.managed]: 'true',
      [LABELS.ownerId]: 'agent',
      [LABELS.role]: ROLES.pool,
      [LABELS.pool]: 'small',
      [LABELS.startAttempt]: 'att-1',
    });
  });
});
