import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { inspect } from 'node:util';
import { ValidationError } from '../../../src/common/errors.js';
import { REDACTED, registryMismatch, restoreRegistrySecrets, separateRegistrySecrets } from '../../../src/spec/registry-auth.js';
import { resolveTaskSpec } from '../../../src/spec/schema.js';

const SECRET = 'pw-9f8e7d6c5b4a';
const image = 'registry.example.com:5000/team/app:1';

function issuesOf(spec: unknown, policy?: Parameters<typeof resolveTaskSpec>[1]): Array<{ field: string; rule: string }> {
  try {
    resolveTaskSpec(spec, policy);
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    // A refused spec never echoes a secret back, in its message or anywhere in the error.
    assert.ok(!inspect(error, { depth: 10 }).includes(SECRET), 'the secret appears in the error');
    return [...error.issues];
  }
  assert.fail('the spec was accepted');
}

describe('registryAuth in the task spec', () => {
  it('accepts a reference to configured credentials', () => {
    assert.deepEqual(resolveTaskSpec({ image, registryAuth: { ref: 'ci-registry' } }).registryAuth, { ref: 'ci-registry' });
  });

  it('accepts inline credentials: a username and password, or an identity token, with a server address', () => {
    assert.deepEqual(resolveTaskSpec({ image, registryAuth: { username: 'ci', password: SECRET } }).registryAuth, { username: 'ci', password: SECRET });
    assert.deepEqual(resolveTaskSpec({ image, registryAuth: { identityToken: SECRET, serverAddress: 'registry.example.com:5000' } }).registryAuth, {
      identityToken: SECRET,
      serverAddress: 'registry.example.com:5000',
    });
  });

  it('leaves it out when the spec has none', () => {
    assert.equal(resolveTaskSpec({ image }).registryAuth, undefined);
  });

  it('refuses each malformed form naming the field, never the value', () => {
    assert.deepEqual(issuesOf({ image, registryAuth: { ref: 'ci', password: SECRET } }), [
      { field: 'registryAuth', rule: 'ref cannot be combined with password: name configured credentials, or give them inline' },
    ]);
    assert.deepEqual(issuesOf({ image, registryAuth: { ref: 'a b' } }), [{ field: 'registryAuth.ref', rule: 'must be 1 to 64 characters of [a-zA-Z0-9_.-], starting with a letter or digit' }]);
    assert.deepEqual(issuesOf({ image, registryAuth: { password: SECRET } }), [{ field: 'registryAuth.username', rule: 'must be set with password' }]);
    assert.deepEqual(issuesOf({ image, registryAuth: { username: 'ci', password: SECRET, identityToken: SECRET } }), [
      { field: 'registryAuth.identityToken', rule: 'cannot be combined with password: give one secret' },
    ]);
    assert.deepEqual(issuesOf({ image, registryAuth: { username: 'ci', password: 7 } }), [{ field: 'registryAuth.password', rule: 'must be a non-empty string' }]);
    assert.deepEqual(issuesOf({ image, registryAuth: { username: 'ci', passwd: SECRET } }), [{ field: 'registryAuth', rule: 'unknown field(s): passwd' }]);
    assert.match(issuesOf({ image, registryAuth: { username: 'ci' } })[0]!.rule, /must be \{ ref: .* \} or inline \{ username, password \}/);
    assert.match(issuesOf({ image, registryAuth: SECRET })[0]!.rule, /must be \{ ref/);
  });

  it('a policy without inline credentials refuses them and points to a ref; a ref stays accepted', () => {
    assert.deepEqual(issuesOf({ image, registryAuth: { username: 'ci', password: SECRET } }, { allowPrivileged: false, allowInlineRegistryAuth: false }), [
      {
        field: 'registryAuth',
        rule: 'inline registry credentials are not allowed by this driver (allowInlineRegistryAuth is off): name credentials configured in the agent with { "ref": "<name>" }',
      },
    ]);
    assert.deepEqual(resolveTaskSpec({ image, registryAuth: { ref: 'ci' } }, { allowPrivileged: false, allowInlineRegistryAuth: false }).registryAuth, { ref: 'ci' });
  });

  it('a policy listing registries refuses an unknown name, naming the configured ones, and credentials for another registry', () => {
    const policy = { allowPrivileged: false, registries: { ci: 'registry.example.com:5000', hub: 'docker.io' } };
    assert.deepEqual(issuesOf({ image, registryAuth: { ref: 'nope' } }, policy), [
      { field: 'registryAuth.ref', rule: 'no registry credentials named "nope" are configured (registries: ci, hub)' },
    ]);
    assert.deepEqual(issuesOf({ image, registryAuth: { ref: 'hub' } }, policy), [
      { field: 'registryAuth.ref', rule: 'the credentials are for registry docker.io, and the image is on registry.example.com:5000: they are never sent to another registry' },
    ]);
    assert.deepEqual(resolveTaskSpec({ image, registryAuth: { ref: 'ci' } }, policy).registryAuth, { ref: 'ci' });
    // docker.io's aliases are one registry.
    assert.deepEqual(resolveTaskSpec({ image: 'busybox:1.36', registryAuth: { ref: 'hub' } }, policy).registryAuth, { ref: 'hub' });
  });
});

describe('registryMismatch', () => {
  it('matches hosts exactly, never by suffix or prefix', () => {
    assert.equal(registryMismatch('example.com/app:1', 'example.com'), undefined);
    assert.match(registryMismatch('evil-example.com/app:1', 'example.com') ?? '', /never sent to another registry/);
    assert.match(registryMismatch('registry.example.com/app:1', 'example.com') ?? '', /never sent to another registry/);
    assert.match(registryMismatch('example.com:5000/app:1', 'example.com') ?? '', /never sent to another registry/);
    assert.equal(registryMismatch('index.docker.io/library/busybox', 'docker.io'), undefined);
  });
});

describe('separateRegistrySecrets and restoreRegistrySecrets', () => {
  it('takes the password (or identity token) out and leaves "<redacted>" in its place', () => {
    const spec = { image, labels: { a: 'b' }, registryAuth: { username: 'ci', password: SECRET } };
    const { redacted, secrets } = separateRegistrySecrets(spec);
    assert.deepEqual(redacted, { image, labels: { a: 'b' }, registryAuth: { username: 'ci', password: REDACTED } });
    assert.deepEqual(secrets, { password: SECRET });
    assert.ok(!JSON.stringify(redacted).includes(SECRET));
    assert.deepEqual(spec.registryAuth.password, SECRET, 'the input is not changed');
    assert.deepEqual(restoreRegistrySecrets(redacted, secrets!), spec);

    const token = separateRegistrySecrets({ image, registryAuth: { identityToken: SECRET } });
    assert.deepEqual(token.redacted.registryAuth, { identityToken: REDACTED });
    assert.deepEqual(token.secrets, { identityToken: SECRET });
  });

  it('leaves a spec without secrets as it is: none, or a ref', () => {
    const none = { image };
    assert.equal(separateRegistrySecrets(none).redacted, none);
    assert.equal(separateRegistrySecrets(none).secrets, undefined);
    const ref = { image, registryAuth: { ref: 'ci' } };
    assert.equal(separateRegistrySecrets(ref).redacted, ref);
    assert.equal(separateRegistrySecrets(ref).secrets, undefined);
  });

  it('redacts a secret field of the wrong type too, so nothing given as a secret is ever stored', () => {
    const { redacted } = separateRegistrySecrets({ image, registryAuth: { username: 'ci', password: { nested: SECRET } } });
    assert.deepEqual(redacted.registryAuth, { username: 'ci', password: REDACTED });
  });
});
