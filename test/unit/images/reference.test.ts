import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { normalizeRegistryHost, parseImageReference, pullArguments } from '../../../src/images/reference.js';

const DIGEST = `sha256:${'a1'.repeat(32)}`;

describe('parseImageReference', () => {
  it('reads a bare name as docker.io/library/<name>:latest', () => {
    const ref = parseImageReference('busybox');
    assert.equal(ref.registry, 'docker.io');
    assert.equal(ref.repository, 'library/busybox');
    assert.equal(ref.tag, 'latest');
    assert.equal(ref.digest, undefined);
    assert.equal(ref.canonical, 'docker.io/library/busybox:latest');
    assert.equal(ref.familiarName, 'busybox');
    assert.equal(ref.localName, 'busybox:latest');
  });

  it('reads user/repo as a docker.io repository, not a registry', () => {
    const ref = parseImageReference('user/repo:1.2');
    assert.equal(ref.registry, 'docker.io');
    assert.equal(ref.repository, 'user/repo');
    assert.equal(ref.tag, '1.2');
    assert.equal(ref.canonical, 'docker.io/user/repo:1.2');
    assert.equal(ref.localName, 'user/repo:1.2');
  });

  it('reads a registry with a port and tells its colon from the tag', () => {
    const ref = parseImageReference('127.0.0.1:5000/busybox:1');
    assert.equal(ref.registry, '127.0.0.1:5000');
    assert.equal(ref.repository, 'busybox');
    assert.equal(ref.tag, '1');
    assert.equal(ref.canonical, '127.0.0.1:5000/busybox:1');
    assert.equal(ref.familiarName, '127.0.0.1:5000/busybox');

    const untagged = parseImageReference('127.0.0.1:5000/team/app');
    assert.equal(untagged.registry, '127.0.0.1:5000');
    assert.equal(untagged.repository, 'team/app');
    assert.equal(untagged.tag, 'latest');
  });

  it('reads localhost and dotted hosts as registries', () => {
    assert.equal(parseImageReference('localhost/app').registry, 'localhost');
    assert.equal(parseImageReference('localhost:5000/app:2').registry, 'localhost:5000');
    const ref = parseImageReference('registry.example.com/a/b/c:v1');
    assert.equal(ref.registry, 'registry.example.com');
    assert.equal(ref.repository, 'a/b/c');
  });

  it('keeps a digest, with no default tag, and pulls and names it by digest', () => {
    const ref = parseImageReference(`busybox@${DIGEST}`);
    assert.equal(ref.tag, undefined);
    assert.equal(ref.digest, DIGEST);
    assert.equal(ref.canonical, `docker.io/library/busybox@${DIGEST}`);
    assert.equal(ref.localName, `busybox@${DIGEST}`);
    assert.deepEqual(pullArguments(ref), { fromImage: 'busybox', tag: DIGEST });
  });

  it('keeps both tag and digest, and lets the digest win for pulling', () => {
    const ref = parseImageReference(`127.0.0.1:5000/app:1@${DIGEST}`);
    assert.equal(ref.tag, '1');
    assert.equal(ref.digest, DIGEST);
    assert.equal(ref.canonical, `127.0.0.1:5000/app:1@${DIGEST}`);
    assert.equal(ref.localName, `127.0.0.1:5000/app@${DIGEST}`);
    assert.deepEqual(pullArguments(ref), { fromImage: '127.0.0.1:5000/app', tag: DIGEST });
  });

  it('normalises docker.io aliases and keeps library/ for official images', () => {
    assert.equal(parseImageReference('index.docker.io/busybox').canonical, 'docker.io/library/busybox:latest');
    assert.equal(parseImageReference('docker.io/library/busybox:1').familiarName, 'busybox');
    assert.equal(parseImageReference('registry-1.docker.io/user/app').canonical, 'docker.io/user/app:latest');
  });

  it('accepts the separators the engine accepts', () => {
    for (const text of ['a_b', 'a__b', 'a.b', 'a-b', 'a---b', 'a/b-c_d.e', 'x:Tag_1.2-rc']) {
      assert.doesNotThrow(() => parseImageReference(text), text);
    }
  });

  const invalid: Array<[string, string]> = [
    ['', 'empty'],
    [' busybox', 'leading white space'],
    ['Busybox', 'upper case repository'],
    ['user/Repo', 'upper case path'],
    ['busybox:', 'empty tag'],
    ['busybox:-x', 'tag starting with -'],
    [`busybox:${'t'.repeat(129)}`, 'tag too long'],
    ['busybox@sha256:abc', 'short digest'],
    [`busybox@md5:${'a'.repeat(32)}`, 'unsupported algorithm'],
    [`busybox@sha256:${'A'.repeat(64)}`, 'upper case digest'],
    ['a//b', 'empty path component'],
    ['-a', 'leading separator'],
    ['a_', 'trailing separator'],
    ['a...b', 'repeated dots'],
    ['127.0.0.1:5000/', 'missing repository'],
    [':tag', 'missing name'],
    ['host_name.com/app', 'underscore in host'],
    [`a/${'b'.repeat(260)}`, 'name too long'],
  ];
  for (const [text, why] of invalid) {
    it(`rejects ${why} with a ValidationError naming the field image`, () => {
      assert.throws(
        () => parseImageReference(text),
        (error: unknown) => error instanceof ValidationError && error.issues[0]?.field === 'image' && error.code === 'BERTH_VALIDATION',
      );
    });
  }

  it('names the field it was told to', () => {
    assert.throws(() => parseImageReference('UPPER', 'spec.image'), (error: unknown) => error instanceof ValidationError && error.issues[0]?.field === 'spec.image');
  });
});

describe('normalizeRegistryHost', () => {
  it('reduces config keys and URLs to hosts, and every docker.io alias to docker.io', () => {
    assert.equal(normalizeRegistryHost('https://index.docker.io/v1/'), 'docker.io');
    assert.equal(normalizeRegistryHost('index.docker.io'), 'docker.io');
    assert.equal(normalizeRegistryHost('registry-1.docker.io'), 'docker.io');
    assert.equal(normalizeRegistryHost('http://127.0.0.1:5000'), '127.0.0.1:5000');
    assert.equal(normalizeRegistryHost('https://Registry.Example.com/v2/'), 'registry.example.com');
    assert.equal(normalizeRegistryHost('127.0.0.1:5000'), '127.0.0.1:5000');
  });
});
