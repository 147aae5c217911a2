import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { isBerthError, ValidationError } from '../../../src/common/errors.js';
import { dockerConfigDirFromEnv, RegistryAuthResolver } from '../../../src/images/auth.js';

const b64 = (text: string): string => Buffer.from(text).toString('base64');

describe('RegistryAuthResolver', () => {
  let dir: string;
  let helperEnv: Record<string, string>;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-auth-'));
    await writeFile(
      join(dir, 'docker-credential-unittest'),
      [
        '#!/bin/sh',
        '[ "$1" = get ] || exit 2',
        'read -r server',
        'case "$server" in',
        '  helper.example.com) echo "{\\"ServerURL\\":\\"$server\\",\\"Username\\":\\"hal\\",\\"Secret\\":\\"helper-secret\\"}" ;;',
        '  https://index.docker.io/v1/) echo "{\\"ServerURL\\":\\"$server\\",\\"Username\\":\\"<token>\\",\\"Secret\\":\\"hub-token\\"}" ;;',
        '  broken.example.com) echo "oops helper-leaked-secret" >&2; exit 3 ;;',
        '  garbage.example.com) echo "not json" ;;',
        '  *) echo "credentials not found in native keychain"; exit 1 ;;',
        'esac',
      ].join('\n'),
    );
    await chmod(join(dir, 'docker-credential-unittest'), 0o755);
    helperEnv = { PATH: `${dir}:/usr/bin:/bin` };
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function withConfig(config: unknown): Promise<RegistryAuthResolver> {
    const configDir = await mkdtemp(join(dir, 'cfg-'));
    await writeFile(join(configDir, 'config.json'), typeof config === 'string' ? config : JSON.stringify(config));
    return new RegistryAuthResolver({ dockerConfigDir: configDir, credentialHelperEnv: helperEnv, credentialHelperTimeoutMs: 5000 });
  }

  it('prefers the task credentials over everything in the configuration', async () => {
    const resolver = await withConfig({ auths: { 'r.example.com': { auth: b64('cfg:cfgpass') } } });
    const resolved = await resolver.resolve('r.example.com', { username: 'task', password: 'taskpass' });
    assert.deepEqual(resolved, { source: 'task', auth: { username: 'task', password: 'taskpass', serveraddress: 'r.example.com' } });
  });

  it('decodes base64 auths entries and plain username/password entries', async () => {
    const resolver = await withConfig({
      auths: {
        'https://r.example.com/v2/': { auth: b64('alice:pa:ss') },
        '127.0.0.1:5000': { username: 'bob', password: 'bobpass' },
      },
    });
    assert.deepEqual(await resolver.resolve('r.example.com'), {
      source: 'config-auths',
      auth: { username: 'alice', password: 'pa:ss', serveraddress: 'r.example.com' },
    });
    assert.deepEqual(await resolver.resolve('127.0.0.1:5000'), {
      source: 'config-auths',
      auth: { username: 'bob', password: 'bobpass', serveraddress: '127.0.0.1:5000' },
    });
  });

  it('matches registries by exact host, never by suffix or prefix', async () => {
    const resolver = await withConfig({ auths: { 'example.com': { auth: b64('a:b') }, '127.0.0.1:5000': { auth: b64('c:d') } } });
    assert.equal(await resolver.resolve('evil-example.com'), undefined);
    assert.equal(await resolver.resolve('registry.example.com'), undefined);
    assert.equal(await resolver.resolve('127.0.0.1:50001'), undefined);
    assert.equal(await resolver.resolve('127.0.0.1'), undefined);
    assert.equal((await resolver.resolve('example.com'))?.auth.username, 'a');
  });

  it('treats docker.io aliases as one registry', async () => {
    const resolver = await withConfig({ auths: { 'https://index.docker.io/v1/': { auth: b64('hubuser:hubpass') } } });
    for (const registry of ['docker.io', 'index.docker.io', 'registry-1.docker.io']) {
      const resolved = await resolver.resolve(registry);
      assert.equal(resolved?.auth.username, 'hubuser', registry);
      assert.equal(resolved?.auth.serveraddress, 'https://index.docker.io/v1/');
    }
  });

  it('asks the credential helper configured for the registry, through the helper protocol', async () => {
    const resolver = await withConfig({ credHelpers: { 'helper.example.com': 'unittest' }, auths: { 'helper.example.com': { auth: b64('file:filepass') } } });
    assert.deepEqual(await resolver.resolve('helper.example.com'), {
      source: 'credential-helper',
      auth: { username: 'hal', password: 'helper-secret', serveraddress: 'helper.example.com' },
    });
  });

  it('asks the credentials store for every registry, and reads an identity token', async () => {
    const resolver = await withConfig({ credsStore: 'unittest' });
    assert.deepEqual(await resolver.resolve('docker.io'), {
      source: 'credentials-store',
      auth: { identitytoken: 'hub-token', serveraddress: 'https://index.docker.io/v1/' },
    });
  });

  it('falls back to the auths entry, then to none, when the helper has no credentials', async () => {
    const resolver = await withConfig({ credsStore: 'unittest', auths: { 'other.example.com': { auth: b64('o:opass') } } });
    assert.equal((await resolver.resolve('other.example.com'))?.source, 'config-auths');
    assert.equal(await resolver.resolve('nothing.example.com'), undefined);
  });

  it('reports a failing helper without its output', async () => {
    const resolver = await withConfig({ credHelpers: { 'broken.example.com': 'unittest', 'garbage.example.com': 'unittest', 'missing.example.com': 'nosuchhelper' } });
    for (const registry of ['broken.example.com', 'garbage.example.com', 'missing.example.com']) {
      await assert.rejects(resolver.resolve(registry), (error: unknown) => {
        assert.ok(isBerthError(error, 'BERTH_IMAGE_ACCESS_DENIED'), registry);
        assert.match(error.message, new RegExp(registry.replace(/\./g, '\\.')));
        assert.doesNotMatch(inspect(error, { depth: 10 }), /helper-leaked-secret/);
        return true;
      });
    }
  });

  it('resolves nothing without a configuration directory, or when config.json is missing', async () => {
    assert.equal(await new RegistryAuthResolver().resolve('r.example.com'), undefined);
    assert.equal(await new RegistryAuthResolver({ dockerConfigDir: join(dir, 'absent') }).resolve('r.example.com'), undefined);
  });

  it('rejects a config.json that is not JSON without quoting it', async () => {
    const resolver = await withConfig('{"auths": {"r.example.com": {"auth": "c2VjcmV0LXBhc3M="}');
    await assert.rejects(resolver.resolve('r.example.com'), (error: unknown) => {
      assert.ok(error instanceof ValidationError);
      assert.doesNotMatch(error.message, /c2VjcmV0/);
      return true;
    });
  });
});

describe('dockerConfigDirFromEnv', () => {
  it('takes DOCKER_CONFIG, else ~/.docker', () => {
    assert.equal(dockerConfigDirFromEnv({ DOCKER_CONFIG: '/etc/dc', HOME: '/home/u' }), '/etc/dc');
    assert.equal(dockerConfigDirFromEnv({ HOME: '/home/u' }), '/home/u/.docker');
    assert.equal(dockerConfigDirFromEnv({ DOCKER_CONFIG: '' }, '/root'), '/root/.docker');
  });
});
