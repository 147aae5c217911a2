import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { inspect } from 'node:util';
import { loadAgentConfig, type HostFacts } from '../../../src/agent/config.js';
import { createAgentLogger } from '../../../src/agent/daemon.js';
import { agentSpecPolicy, configuredRegistryCredentials } from '../../../src/agent/registry-credentials.js';
import { SECRET_KEY_FILE_NAME, SecretBox, sameSecret } from '../../../src/agent/secret-box.js';
import { isBerthError, ValidationError } from '../../../src/common/errors.js';

const host: HostFacts = { uid: 1000, homedir: '/home/ada', totalMemoryBytes: 8 * 1024 ** 3, cpuCount: 4 };
const SECRET = 'pw-0a1b2c3d4e5f';

let dir: string;
let counter = 0;
function yamlFile(text: string): string {
  const file = path.join(dir, `config-${++counter}.yaml`);
  writeFileSync(file, text);
  return file;
}

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'berth-regcreds-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** The configuration's issues; the error must never carry a password. */
function configIssues(yaml: string): Array<{ field: string; rule: string }> {
  try {
    loadAgentConfig({ file: yamlFile(yaml), host });
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    assert.ok(!inspect(error, { depth: 10 }).includes(SECRET), 'the password appears in the error');
    return error.issues.map((i) => ({ field: i.field, rule: i.rule.replace(/ \(from .*\)$/, '') }));
  }
  assert.fail('the configuration was accepted');
}

describe('agent configuration: registries', () => {
  it('compiles entries with a password, a password file or an identity token, the server normalised as image references are', () => {
    const config = loadAgentConfig({
      file: yamlFile(
        [
          'registries:',
          '  ci: { server: "registry.example.com:5000", username: ci, password: "' + SECRET + '" }',
          '  files: { server: "https://Registry.Example.com/v2/", username: ci, passwordFile: /etc/berth/pw }',
          '  hub: { server: index.docker.io, identityToken: tok }',
        ].join('\n'),
      ),
      host,
    });
    assert.deepEqual(config.registries, {
      ci: { host: 'registry.example.com:5000', username: 'ci', password: SECRET },
      files: { host: 'registry.example.com', username: 'ci', passwordFile: '/etc/berth/pw' },
      hub: { host: 'docker.io', identityToken: 'tok' },
    });
    assert.deepEqual(agentSpecPolicy(config).registries, { ci: 'registry.example.com:5000', files: 'registry.example.com', hub: 'docker.io' });
    assert.equal(agentSpecPolicy(config).allowInlineRegistryAuth, false);
  });

  it('refuses bad entries naming the key, never quoting a password', () => {
    assert.deepEqual(configIssues(`registries:\n  ci: { username: ci, password: "${SECRET}" }`), [
      { field: 'registries.ci.server', rule: 'must be set: the registry host the credentials are for, as image references name it (registry.example.com:5000, docker.io)' },
    ]);
    assert.deepEqual(configIssues(`registries:\n  ci: { server: r.example.com, password: "${SECRET}" }`), [{ field: 'registries.ci.username', rule: 'must be set with password or passwordFile' }]);
    assert.deepEqual(configIssues(`registries:\n  ci: { server: r.example.com, username: ci, password: "${SECRET}", identityToken: "${SECRET}" }`), [
      { field: 'registries.ci', rule: 'must have exactly one of password, passwordFile and identityToken (has password, identityToken)' },
    ]);
    assert.deepEqual(configIssues('registries:\n  ci: { server: r.example.com, username: ci }'), [{ field: 'registries.ci', rule: 'must have exactly one of password, passwordFile and identityToken' }]);
    assert.deepEqual(configIssues(`registries:\n  ci: { server: r.example.com, username: ci, passwordFile: relative/pw }`), [
      { field: 'registries.ci.passwordFile', rule: 'must be an absolute path to a file holding the password (or start with ~/)' },
    ]);
    assert.deepEqual(configIssues(`registries:\n  ci: { server: r.example.com, username: ci, password: "${SECRET}", pasword: "${SECRET}" }`), [
      { field: 'registries.ci.pasword', rule: 'is not a configuration key' },
    ]);
    assert.deepEqual(configIssues(`registries:\n  "a b": { server: r.example.com, username: ci, password: "${SECRET}" }`), [
      { field: 'registries.a b', rule: 'is not a registry credentials name: must be 1 to 64 characters of [a-zA-Z0-9_.-], starting with a letter or digit' },
    ]);
    assert.deepEqual(configIssues(`registries:\n  ci: { server: r.example.com, username: ci, password: 12345 }`), [{ field: 'registries.ci.password', rule: 'must be a non-empty string' }]);
    assert.deepEqual(configIssues('registries: [a]'), [{ field: 'registries', rule: 'must be a mapping of names to { server, username, password | passwordFile | identityToken }' }]);
  });

  it('policy.allowInlineRegistryAuth is off by default and read from the file and BERTH_POLICY_ALLOW_INLINE_REGISTRY_AUTH', () => {
    assert.equal(loadAgentConfig({ host }).policy.allowInlineRegistryAuth, false);
    assert.equal(loadAgentConfig({ file: yamlFile('policy: { allowInlineRegistryAuth: true }'), host }).policy.allowInlineRegistryAuth, true);
    assert.equal(loadAgentConfig({ env: { BERTH_POLICY_ALLOW_INLINE_REGISTRY_AUTH: 'true' }, host }).policy.allowInlineRegistryAuth, true);
  });
});

describe('configuredRegistryCredentials', () => {
  it('resolves a name to its credentials and registry; an unknown name (or an inherited property) to undefined', async () => {
    const config = { registries: { ci: { host: 'r.example.com', username: 'ci', password: SECRET }, hub: { host: 'docker.io', identityToken: 'tok' } } };
    assert.deepEqual(await configuredRegistryCredentials(config, 'ci'), { host: 'r.example.com', credentials: { username: 'ci', password: SECRET } });
    assert.deepEqual(await configuredRegistryCredentials(config, 'hub'), { host: 'docker.io', credentials: { identityToken: 'tok' } });
    assert.equal(await configuredRegistryCredentials(config, 'nope'), undefined);
    assert.equal(await configuredRegistryCredentials(config, 'toString'), undefined);
  });

  it('reads a password file at each call, without its trailing newline; an unreadable or empty one fails naming the file, not its content', async () => {
    const file = path.join(dir, 'pw');
    writeFileSync(file, `${SECRET}\n`);
    const config = { registries: { ci: { host: 'r.example.com', username: 'ci', passwordFile: file } } };
    assert.deepEqual((await configuredRegistryCredentials(config, 'ci'))?.credentials, { username: 'ci', password: SECRET });
    writeFileSync(file, 'rotated');
    assert.deepEqual((await configuredRegistryCredentials(config, 'ci'))?.credentials, { username: 'ci', password: 'rotated' });
    writeFileSync(file, '');
    await assert.rejects(configuredRegistryCredentials(config, 'ci'), (error: unknown) => isBerthError(error, 'BERTH_IMAGE_ACCESS_DENIED') && /is empty/.test((error as Error).message));
    rmSync(file);
    await assert.rejects(configuredRegistryCredentials(config, 'ci'), (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_IMAGE_ACCESS_DENIED'));
      assert.match(error.message, new RegExp(`the password file of registries\\.ci \\(${file.replace(/[.]/g, '\\.')}\\) cannot be read: ENOENT`));
      return true;
    });
  });
});

describe('SecretBox', () => {
  it('seals and opens text; every seal differs (a fresh nonce) and none holds the text', async () => {
    const dataDir = mkdtempSync(path.join(dir, 'data-'));
    const box = await SecretBox.openIn(dataDir);
    const a = box.seal(SECRET);
    const b = box.seal(SECRET);
    assert.notEqual(a, b);
    assert.ok(!a.includes(SECRET) && !Buffer.from(a).includes(Buffer.from(SECRET).toString('base64')));
    assert.match(a, /^v1:[A-Za-z0-9_-]+$/);
    assert.equal(box.open(a), SECRET);
    assert.equal(box.open(b), SECRET);
  });

  it('keeps its key in the data directory, mode 0600, and a second opening uses the same key', async () => {
    const dataDir = mkdtempSync(path.join(dir, 'data-'));
    const first = await SecretBox.openIn(dataDir);
    const keyFile = path.join(dataDir, SECRET_KEY_FILE_NAME);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    assert.equal(readFileSync(keyFile).length, 32);
    const sealed = first.seal(SECRET);
    chmodSync(keyFile, 0o644);
    const second = await SecretBox.openIn(dataDir);
    assert.equal(second.open(sealed), SECRET);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600, 'a key readable by others is made private again');
  });

  it('refuses to open what another key sealed, or what was tampered with, and a key file of the wrong size', async () => {
    const one = await SecretBox.openIn(mkdtempSync(path.join(dir, 'data-')));
    const other = await SecretBox.openIn(mkdtempSync(path.join(dir, 'data-')));
    const sealed = one.seal(SECRET);
    assert.throws(() => other.open(sealed), /cannot be opened with this agent's key/);
    const tampered = `${sealed.slice(0, -2)}${sealed.endsWith('AA') ? 'BB' : 'AA'}`;
    assert.throws(() => one.open(tampered), /cannot be opened/);
    assert.throws(() => one.open('plain text'), /cannot be opened/);
    const broken = mkdtempSync(path.join(dir, 'data-'));
    writeFileSync(path.join(broken, SECRET_KEY_FILE_NAME), 'short');
    await assert.rejects(SecretBox.openIn(broken), /is 5 bytes, not 32/);
  });

  it('sameSecret compares whole texts', () => {
    assert.equal(sameSecret(SECRET, SECRET), true);
    assert.equal(sameSecret(SECRET, `${SECRET}x`), false);
    assert.equal(sameSecret(SECRET, SECRET.replace('0', '1')), false);
  });
});

describe('the agent log', () => {
  it('redacts password and identity token fields, however deep in a line\'s fields', () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (chunk: Buffer) => (text += chunk.toString()));
    const logger = createAgentLogger(out, 'debug');
    logger.info({ password: SECRET, spec: { registryAuth: { username: 'ci', password: SECRET, identityToken: SECRET } }, task: { spec: { registryAuth: { password: SECRET } } } }, 'x');
    assert.ok(!text.includes(SECRET), text);
    const line = JSON.parse(text) as { password: string; spec: { registryAuth: Record<string, string> } };
    assert.equal(line.password, '<redacted>');
    assert.deepEqual(line.spec.registryAuth, { username: 'ci', password: '<redacted>', identityToken: '<redacted>' });
  });
});
