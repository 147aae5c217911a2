import assert from 'node:assert/strict';
import { linkSync, mkdirSync, mkdtempSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { resolveTaskSpec, type MountSpec } from '../../../src/spec/schema.js';
import {
  confirmBindSources,
  DEFAULT_ENGINE_SOCKET,
  engineSocketGuards,
  resolveBindSources,
  withResolvedSources,
  type BindSourcePolicy,
} from '../../../src/tasks/bind-sources.js';

/**
 * A temporary tree:
 *   allowed/            the allowed root
 *     data/file         an ordinary bind source
 *     out -> outside    a symlink leaving the root
 *     chain1 -> chain2 -> outside/deep
 *     inner -> data     a symlink that stays inside
 *     deeplink -> outside/deep  (so deeplink/.. is outside, though it reads as allowed/)
 *     sock -> run/engine.sock
 *     gone -> nowhere   (dangling)
 *   outside/deep/
 *   run/engine.sock     stands in for the engine's socket
 *   rootlink -> allowed (an allowed root given as a symlink)
 */
let tree: string;
const at = (...parts: string[]): string => path.join(tree, ...parts);
const bind = (source: string, target = '/data'): MountSpec => ({ type: 'bind', source, target, readOnly: false, propagation: 'private' });

before(() => {
  // Resolved itself: the system's temporary directory may be a symlink (macOS).
  tree = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'berth-binds-')));
  mkdirSync(at('allowed', 'data'), { recursive: true });
  writeFileSync(at('allowed', 'data', 'file'), 'x');
  mkdirSync(at('outside', 'deep'), { recursive: true });
  mkdirSync(at('run'));
  writeFileSync(at('run', 'engine.sock'), '');
  symlinkSync(at('outside'), at('allowed', 'out'));
  symlinkSync(at('allowed', 'chain2'), at('allowed', 'chain1'));
  symlinkSync(at('outside', 'deep'), at('allowed', 'chain2'));
  symlinkSync('data', at('allowed', 'inner'));
  symlinkSync(at('outside', 'deep'), at('allowed', 'deeplink'));
  symlinkSync(at('run', 'engine.sock'), at('allowed', 'sock'));
  symlinkSync(at('nowhere'), at('allowed', 'gone'));
  symlinkSync(at('allowed'), at('rootlink'));
});

after(() => rmSync(tree, { recursive: true, force: true }));

function refusal(mounts: MountSpec[], policy: BindSourcePolicy, engineSocket = at('run', 'engine.sock')): ValidationError {
  try {
    resolveBindSources(mounts, policy, engineSocketGuards(engineSocket));
  } catch (error) {
    assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${String(error)}`);
    return error;
  }
  assert.fail('the bind sources were accepted');
}

function accepted(mounts: MountSpec[], policy: BindSourcePolicy, engineSocket = at('run', 'engine.sock')): string[] {
  return resolveBindSources(mounts, policy, engineSocketGuards(engineSocket)).map((b) => b.resolvedPath);
}

describe('bind sources are resolved on the host before they are checked', () => {
  test('accepts a source inside the allowed root and resolves it to its real path', () => {
    assert.deepEqual(accepted([bind(at('allowed', 'data'))], { allowedBindSources: [at('allowed')] }), [at('allowed', 'data')]);
  });

  test('accepts a symlink that stays inside the root, giving its target as the path to mount', () => {
    assert.deepEqual(accepted([bind(at('allowed', 'inner'))], { allowedBindSources: [at('allowed')] }), [at('allowed', 'data')]);
  });

  test('refuses a symlink inside the allowed root that points outside, naming mounts[i].source and the resolved path', () => {
    const error = refusal([bind(at('allowed', 'data')), bind(at('allowed', 'out'), '/o')], { allowedBindSources: [at('allowed')] });
    assert.equal(error.issues.length, 1);
    assert.equal(error.issues[0]!.field, 'mounts[1].source');
    assert.match(error.issues[0]!.rule, /allow-list/);
    assert.ok(error.issues[0]!.rule.includes(at('outside')), error.issues[0]!.rule);
  });

  test('refuses a path through such a symlink, not only the symlink itself', () => {
    assert.equal(refusal([bind(at('allowed', 'out', 'deep'))], { allowedBindSources: [at('allowed')] }).issues[0]!.field, 'mounts[0].source');
  });

  test('refuses a chain of symlinks that ends outside the root', () => {
    const error = refusal([bind(at('allowed', 'chain1'))], { allowedBindSources: [at('allowed')] });
    assert.ok(error.issues[0]!.rule.includes(at('outside', 'deep')), error.issues[0]!.rule);
  });

  test('refuses .. after a symlink, which normalisation alone reads as inside the root', () => {
    const source = `${at('allowed', 'deeplink')}/..`;
    // The spec's own (lexical) check lets it through: the escape is only visible on the host.
    const spec = resolveTaskSpec({ image: 'a', mounts: [{ type: 'bind', source, target: '/d' }] }, { allowPrivileged: false, allowedBindSources: [at('allowed')] });
    const error = refusal([...spec.mounts], { allowedBindSources: [at('allowed')] });
    assert.ok(error.issues[0]!.rule.includes(`resolved: ${at('outside')}`), error.issues[0]!.rule);
  });

  test('refuses a source that only shares a string prefix with the root once resolved', () => {
    mkdirSync(at('allowed-not'), { recursive: true });
    assert.equal(refusal([bind(at('allowed-not'))], { allowedBindSources: [at('allowed')] }).issues.length, 1);
  });

  test('resolves an allowed root that is itself a symlink, and gives the engine the real path', () => {
    assert.deepEqual(accepted([bind(at('rootlink', 'data'))], { allowedBindSources: [at('rootlink')] }), [at('allowed', 'data')]);
    assert.deepEqual(accepted([bind(at('allowed', 'data'))], { allowedBindSources: [at('rootlink')] }), [at('allowed', 'data')]);
  });

  test('an allowed root that does not exist allows nothing', () => {
    assert.equal(refusal([bind(at('allowed', 'data'))], { allowedBindSources: [at('missing-root')] }).issues.length, 1);
  });

  test('an empty allow-list refuses every bind source', () => {
    assert.match(refusal([bind(at('allowed', 'data'))], { allowedBindSources: [] }).issues[0]!.rule, /allow-list/);
  });

  test('without an allow-list any existing source that does not expose the socket is accepted', () => {
    assert.deepEqual(accepted([bind(at('outside', 'deep'))], {}), [at('outside', 'deep')]);
  });

  test('refuses a source that does not exist, saying that berth does not create host paths', () => {
    const error = refusal([bind(at('allowed', 'missing'))], { allowedBindSources: [at('allowed')] });
    assert.equal(error.issues[0]!.field, 'mounts[0].source');
    assert.match(error.issues[0]!.rule, /does not exist.*does not create/);
  });

  test('refuses a dangling symlink as a source that does not exist', () => {
    assert.match(refusal([bind(at('allowed', 'gone'))], {}).issues[0]!.rule, /does not exist/);
  });

  test('refuses a symlink loop, saying the source cannot be resolved', () => {
    symlinkSync(at('allowed', 'loop-b'), at('allowed', 'loop-a'));
    symlinkSync(at('allowed', 'loop-a'), at('allowed', 'loop-b'));
    const error = refusal([bind(at('allowed', 'loop-a'))], { allowedBindSources: [at('allowed')] });
    assert.equal(error.issues[0]!.field, 'mounts[0].source');
    assert.match(error.issues[0]!.rule, /cannot be resolved on the host \(ELOOP\)/);
  });

  test('names every bad source at once and ignores volumes and tmpfs', () => {
    const error = refusal(
      [{ type: 'volume', source: 'v', target: '/v', readOnly: false }, bind(at('allowed', 'out')), { type: 'tmpfs', target: '/t' }, bind(at('allowed', 'missing'), '/m')],
      { allowedBindSources: [at('allowed')] },
    );
    assert.deepEqual(error.issues.map((i) => i.field), ['mounts[1].source', 'mounts[3].source']);
  });
});

describe("the engine's socket is refused unless the policy names it", () => {
  test('refuses a symlink to the socket even with no allow-list at all', () => {
    const error = refusal([bind(at('allowed', 'sock'), '/sock')], {});
    assert.equal(error.issues[0]!.field, 'mounts[0].source');
    assert.match(error.issues[0]!.rule, /exposes the engine's socket/);
  });

  test("refuses the socket's directory and every directory above it, up to /", () => {
    for (const source of [at('run'), tree, '/']) {
      assert.match(refusal([bind(source)], {}).issues[0]!.rule, /exposes the engine's socket/, source);
    }
  });

  test('refuses a hard link to the socket, which no path comparison would catch', () => {
    linkSync(at('run', 'engine.sock'), at('allowed', 'hardlink'));
    try {
      assert.match(refusal([bind(at('allowed', 'hardlink'))], { allowedBindSources: [at('allowed')] }).issues[0]!.rule, /exposes the engine's socket/);
    } finally {
      rmSync(at('allowed', 'hardlink'));
    }
  });

  test('an allowed root above the socket does not name the socket: the root stays allowed, the socket is refused', () => {
    assert.match(refusal([bind(at('run', 'engine.sock'))], { allowedBindSources: [tree] }).issues[0]!.rule, /exposes the engine's socket/);
    assert.deepEqual(accepted([bind(at('allowed', 'data'))], { allowedBindSources: [tree] }), [at('allowed', 'data')]);
  });

  test('accepts the socket when the allow-list names that very path (through a symlink too)', () => {
    assert.deepEqual(accepted([bind(at('allowed', 'sock'))], { allowedBindSources: [at('allowed', 'sock')] }), [at('run', 'engine.sock')]);
    assert.deepEqual(accepted([bind(at('run'))], { allowedBindSources: [at('run')] }), [at('run')]);
  });

  test('accepts the socket, its directory and / with allowEngineSocket', () => {
    assert.deepEqual(accepted([bind(at('allowed', 'sock')), bind('/', '/host')], { allowEngineSocket: true }), [at('run', 'engine.sock'), '/']);
  });

  test('always refuses the default socket, whichever socket the engine was reached through', () => {
    const guards = engineSocketGuards(at('run', 'engine.sock'));
    assert.ok(guards.some((g) => g.socketPath === DEFAULT_ENGINE_SOCKET));
    assert.throws(() => resolveBindSources([bind(DEFAULT_ENGINE_SOCKET)], {}, engineSocketGuards(undefined)), ValidationError);
    assert.throws(() => resolveBindSources([bind(path.dirname(realpathSync(DEFAULT_ENGINE_SOCKET)))], {}, guards), ValidationError);
  });
});

describe('a resolved source is confirmed before the engine mounts it', () => {
  test('passes while nothing changed', () => {
    const binds = resolveBindSources([bind(at('allowed', 'data'))], { allowedBindSources: [at('allowed')] }, engineSocketGuards(undefined));
    assert.doesNotThrow(() => confirmBindSources(binds));
  });

  test('refuses a source whose directory was swapped for a symlink after the check', () => {
    mkdirSync(at('allowed', 'swap'));
    const binds = resolveBindSources([bind(at('allowed', 'swap'))], { allowedBindSources: [at('allowed')] }, engineSocketGuards(undefined));
    renameSync(at('allowed', 'swap'), at('allowed', 'swap-old'));
    symlinkSync(at('outside'), at('allowed', 'swap'));
    assert.throws(() => confirmBindSources(binds), (error: unknown) => error instanceof ValidationError && error.issues[0]!.field === 'mounts[0].source' && /changed/.test(error.issues[0]!.rule));
  });

  test('refuses a source replaced by another directory of the same name', () => {
    mkdirSync(at('allowed', 'replaced'));
    const binds = resolveBindSources([bind(at('allowed', 'replaced'))], {}, engineSocketGuards(undefined));
    renameSync(at('allowed', 'replaced'), at('allowed', 'replaced-old'));
    mkdirSync(at('allowed', 'replaced'));
    assert.throws(() => confirmBindSources(binds), ValidationError);
  });
});

describe('the engine is given the resolved paths', () => {
  test('replaces bind sources by their resolved paths and leaves other mounts alone', () => {
    const spec = resolveTaskSpec({
      image: 'a',
      mounts: [
        { type: 'tmpfs', target: '/t' },
        { type: 'bind', source: at('rootlink', 'inner'), target: '/d', readOnly: true },
      ],
    });
    const binds = resolveBindSources(spec.mounts, {}, engineSocketGuards(undefined));
    const mounted = withResolvedSources(spec, binds);
    assert.deepEqual(mounted.mounts, [
      { type: 'tmpfs', target: '/t', sizeBytes: undefined },
      { type: 'bind', source: at('allowed', 'data'), target: '/d', readOnly: true, propagation: 'private' },
    ]);
    assert.ok(Object.isFrozen(mounted.mounts[1]));
    const original = spec.mounts[1];
    assert.equal(original?.type === 'bind' ? original.source : undefined, at('rootlink', 'inner'));
  });
});

describe('protected host paths (the agent passes its data directory)', () => {
  const guardsWith = (protectedPath: string) => engineSocketGuards(at('run', 'engine.sock'), [protectedPath]);
  const refusedRule = (mounts: MountSpec[], policy: BindSourcePolicy, protectedPath: string): string => {
    try {
      resolveBindSources(mounts, policy, guardsWith(protectedPath));
    } catch (error) {
      assert.ok(error instanceof ValidationError);
      return error.issues[0]!.rule;
    }
    assert.fail('the bind source was accepted');
  };

  test('refuses the protected directory, anything under it and anything above it, even when the allow-list holds it', () => {
    const state = at('allowed', 'data');
    const policy = { allowedBindSources: [at('allowed')], allowEngineSocket: true };
    for (const source of [state, at('allowed', 'data', 'file'), at('allowed'), at('allowed', 'inner')]) {
      assert.match(refusedRule([bind(source)], policy, state), /berth protects/, source);
    }
  });

  test('naming the protected path itself in the allow-list does not allow it', () => {
    const state = at('allowed', 'data');
    assert.match(refusedRule([bind(state)], { allowedBindSources: [state] }, state), /no policy allows it/);
  });

  test('a sibling of the protected directory is still allowed', () => {
    const binds = resolveBindSources([bind(at('outside', 'deep'))], { allowedBindSources: [at('outside')] }, guardsWith(at('allowed', 'data')));
    assert.deepEqual(binds.map((b) => b.resolvedPath), [at('outside', 'deep')]);
  });
});
