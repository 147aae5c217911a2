import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { hostKeyVerifier, knownHostKeys, knownHostName } from '../../../src/engine/known-hosts.js';

const keyA = Buffer.from('host key A');
const keyB = Buffer.from('host key B');
const b64 = (key: Buffer): string => key.toString('base64');

/** A hashed host field as `ssh-keygen -H` writes it. */
function hashed(name: string): string {
  const salt = randomBytes(20);
  return `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(name).digest('base64')}`;
}

describe('known_hosts', () => {
  it('names a host as OpenSSH does: bare on port 22, [host]:port otherwise', () => {
    assert.equal(knownHostName('builder', 22), 'builder');
    assert.equal(knownHostName('127.0.0.1', 2222), '[127.0.0.1]:2222');
  });

  it('finds a host\'s keys by plain names, patterns, negations and hashed names, and tells revoked ones apart', () => {
    const text = [
      '# comment',
      `builder,10.0.0.5 ssh-ed25519 ${b64(keyA)}`,
      `[127.0.0.1]:2222 ssh-ed25519 ${b64(keyB)} comment`,
      `*.example.com,!bad.example.com ssh-rsa ${b64(keyA)}`,
      `${hashed('hashed-host')} ssh-ed25519 ${b64(keyB)}`,
      `@revoked builder ssh-rsa ${b64(keyB)}`,
      `@cert-authority * ssh-rsa ${b64(keyB)}`,
      '',
    ].join('\n');
    assert.deepEqual(knownHostKeys(text, 'builder', 22), { trusted: [keyA], revoked: [keyB] });
    assert.deepEqual(knownHostKeys(text, '127.0.0.1', 2222).trusted, [keyB]);
    assert.deepEqual(knownHostKeys(text, '127.0.0.1', 22).trusted, [], 'another port is another host');
    assert.deepEqual(knownHostKeys(text, 'ci.example.com', 22).trusted, [keyA]);
    assert.deepEqual(knownHostKeys(text, 'bad.example.com', 22).trusted, []);
    assert.deepEqual(knownHostKeys(text, 'hashed-host', 22).trusted, [keyB]);
  });

  it('accepts only a listed key, and says why it refused one', () => {
    const text = `builder ssh-ed25519 ${b64(keyA)}\n@revoked builder ssh-ed25519 ${b64(keyB)}\n`;
    const reasons: string[] = [];
    const verify = hostKeyVerifier(text, 'builder', 22, (reason) => reasons.push(reason));
    assert.equal(verify(keyA), true);
    assert.equal(verify(keyB), false);
    assert.equal(verify(Buffer.from('other')), false);
    assert.match(reasons[0]!, /revoked/);
    assert.match(reasons[1]!, /does not match the one in known_hosts/);
    const unknown = hostKeyVerifier(undefined, 'stranger', 2200, (reason) => reasons.push(reason));
    assert.equal(unknown(keyA), false);
    assert.match(reasons[2]!, /\[stranger\]:2200 is not in ~\/\.ssh\/known_hosts/);
  });
});
