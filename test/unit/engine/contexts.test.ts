import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { endpointFromDockerHost, engineOptionsFromEnv, engineOptionsOf, formatEndpoint, parseDockerHost, rootlessSockets } from '../../../src/engine/connect.js';
import { chosenContext, contextDirName, listContexts, readContext, resolveEngine } from '../../../src/engine/contexts.js';

const homes: string[] = [];
after(() => {
  for (const home of homes) rmSync(home, { recursive: true, force: true });
});

/** A temporary HOME with a docker CLI configuration: contexts (meta.json, TLS files) and config.json. */
function dockerHome(options: { current?: string; contexts?: Array<{ name: string; host: string; description?: string; skipTlsVerify?: boolean; tls?: Record<string, string> }> } = {}): string {
  const home = mkdtempSync(path.join(tmpdir(), 'berth-home-'));
  homes.push(home);
  const config = path.join(home, '.docker');
  mkdirSync(config, { recursive: true });
  if (options.current !== undefined) writeFileSync(path.join(config, 'config.json'), JSON.stringify({ auths: {}, currentContext: options.current }));
  for (const context of options.contexts ?? []) {
    const dir = contextDirName(context.name);
    mkdirSync(path.join(config, 'contexts', 'meta', dir), { recursive: true });
    const meta = { Name: context.name, Metadata: { Description: context.description ?? '' }, Endpoints: { docker: { Host: context.host, SkipTLSVerify: context.skipTlsVerify ?? false } } };
    writeFileSync(path.join(config, 'contexts', 'meta', dir, 'meta.json'), JSON.stringify(meta));
    if (context.tls) {
      const tlsDir = path.join(config, 'contexts', 'tls', dir, 'docker');
      mkdirSync(tlsDir, { recursive: true });
      for (const [file, text] of Object.entries(context.tls)) writeFileSync(path.join(tlsDir, file), text);
    }
  }
  return home;
}

const answersNothing = async (): Promise<boolean> => false;

describe('DOCKER_HOST with TLS and SSH', () => {
  it('reads https:// and ssh:// addresses, and tcp:// as TLS when TLS is asked for, with the docker CLI\'s default ports', () => {
    assert.deepEqual(parseDockerHost('https://engine'), { host: 'engine', port: 2376, protocol: 'https' });
    assert.deepEqual(parseDockerHost('tcp://engine', { tls: true }), { host: 'engine', port: 2376, protocol: 'https' });
    assert.deepEqual(parseDockerHost('tcp://engine:3000', { tls: true }), { host: 'engine', port: 3000, protocol: 'https' });
    assert.deepEqual(parseDockerHost('ssh://alice@build-host'), { host: 'build-host', port: 22, protocol: 'ssh', username: 'alice' });
    assert.deepEqual(parseDockerHost('ssh://build-host:2222'), { host: 'build-host', port: 2222, protocol: 'ssh' });
    assert.equal(formatEndpoint(parseDockerHost('ssh://alice@build-host:2222')!), 'ssh://alice@build-host:2222');
    assert.equal(formatEndpoint(parseDockerHost('tcp://engine', { tls: true })!), 'https://engine:2376');
  });

  it('DOCKER_TLS_VERIFY takes ca.pem, cert.pem and key.pem from DOCKER_CERT_PATH (default ~/.docker) and verifies', () => {
    const home = dockerHome();
    const certs = path.join(home, 'certs');
    mkdirSync(certs);
    writeFileSync(path.join(certs, 'ca.pem'), 'CA');
    writeFileSync(path.join(certs, 'cert.pem'), 'CERT');
    writeFileSync(path.join(certs, 'key.pem'), 'KEY');
    const endpoint = endpointFromDockerHost({ DOCKER_HOST: 'tcp://10.0.0.5:2376', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: certs }, home);
    assert.deepEqual(endpoint, { host: '10.0.0.5', port: 2376, protocol: 'https', tls: { ca: 'CA', cert: 'CERT', key: 'KEY', verify: true } });
    writeFileSync(path.join(home, '.docker', 'ca.pem'), 'HOME-CA');
    assert.deepEqual(engineOptionsFromEnv({ DOCKER_HOST: 'tcp://engine', DOCKER_TLS_VERIFY: '1', HOME: home }), { host: 'engine', port: 2376, protocol: 'https', tls: { ca: 'HOME-CA', verify: true } });
  });

  it('refuses DOCKER_TLS_VERIFY without a CA, and a certificate without its key, naming DOCKER_CERT_PATH', () => {
    const home = dockerHome();
    const isCertPathIssue = (error: unknown) => error instanceof ValidationError && error.issues[0]?.field === 'DOCKER_CERT_PATH';
    assert.throws(() => endpointFromDockerHost({ DOCKER_HOST: 'tcp://engine', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: path.join(home, 'none') }, home), isCertPathIssue);
    const certs = path.join(home, 'half');
    mkdirSync(certs);
    writeFileSync(path.join(certs, 'ca.pem'), 'CA');
    writeFileSync(path.join(certs, 'cert.pem'), 'CERT');
    assert.throws(() => endpointFromDockerHost({ DOCKER_HOST: 'tcp://engine', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: certs }, home), isCertPathIssue);
  });

  it('DOCKER_TLS alone encrypts without verifying the engine, and a plain tcp:// stays plain', () => {
    const home = dockerHome();
    assert.deepEqual(endpointFromDockerHost({ DOCKER_HOST: 'tcp://engine', DOCKER_TLS: '1' }, home), { host: 'engine', port: 2376, protocol: 'https', tls: { verify: false } });
    assert.deepEqual(endpointFromDockerHost({ DOCKER_HOST: 'tcp://engine' }, home), { host: 'engine', port: 2375 });
  });

  it('an SSH engine authenticates through SSH_AUTH_SOCK and the first default key, as the URL\'s user or the local one', () => {
    const home = dockerHome();
    mkdirSync(path.join(home, '.ssh'));
    writeFileSync(path.join(home, '.ssh', 'id_rsa'), 'RSA KEY');
    writeFileSync(path.join(home, '.ssh', 'id_ecdsa'), 'ECDSA KEY');
    const env = { HOME: home, USER: 'bob', SSH_AUTH_SOCK: '/tmp/agent.sock' };
    assert.deepEqual(engineOptionsOf(parseDockerHost('ssh://alice@build-host')!, env), { host: 'build-host', port: 22, protocol: 'ssh', username: 'alice', ssh: { agent: '/tmp/agent.sock', privateKey: 'ECDSA KEY' } });
    assert.equal(engineOptionsOf(parseDockerHost('ssh://build-host')!, env).username, 'bob');
  });
});

describe('rootless sockets', () => {
  it('are looked for under XDG_RUNTIME_DIR: rootless Docker\'s, then rootless Podman\'s', () => {
    assert.deepEqual(rootlessSockets({ XDG_RUNTIME_DIR: '/run/user/1000' }), [
      { socketPath: '/run/user/1000/docker.sock', engine: 'docker' },
      { socketPath: '/run/user/1000/podman/podman.sock', engine: 'podman' },
    ]);
    assert.deepEqual(rootlessSockets({}), []);
    assert.deepEqual(rootlessSockets({ XDG_RUNTIME_DIR: 'relative' }), []);
  });

  it('are used only when DOCKER_HOST is unset and /var/run/docker.sock does not answer, the first that answers', async () => {
    const env = { XDG_RUNTIME_DIR: '/run/user/1000', HOME: dockerHome() };
    const asked: string[] = [];
    const podmanOnly = async (socketPath: string): Promise<boolean> => {
      asked.push(socketPath);
      return socketPath === '/run/user/1000/podman/podman.sock';
    };
    const chosen = await resolveEngine({ env, probe: podmanOnly });
    assert.deepEqual(chosen.endpoint, { socketPath: '/run/user/1000/podman/podman.sock' });
    assert.equal(chosen.source, 'rootless-podman');
    assert.match(chosen.reason, /\/var\/run\/docker\.sock does not answer; rootless Podman answers at \/run\/user\/1000\/podman\/podman\.sock/);
    assert.deepEqual(asked, ['/var/run/docker.sock', '/run/user/1000/docker.sock', '/run/user/1000/podman/podman.sock']);

    const rootlessDocker = await resolveEngine({ env, probe: async (socketPath) => socketPath === '/run/user/1000/docker.sock' });
    assert.equal(rootlessDocker.source, 'rootless-docker');

    const root = await resolveEngine({ env, probe: async () => true });
    assert.deepEqual(root.endpoint, { socketPath: '/var/run/docker.sock' });
    assert.equal(root.source, 'default-socket');

    const none = await resolveEngine({ env, probe: answersNothing });
    assert.deepEqual(none.endpoint, { socketPath: '/var/run/docker.sock' }, 'nothing answers: the default socket, so that the error names it');

    asked.length = 0;
    const fromHost = await resolveEngine({ env: { ...env, DOCKER_HOST: 'unix:///srv/engine.sock' }, probe: podmanOnly });
    assert.deepEqual(fromHost.endpoint, { socketPath: '/srv/engine.sock' });
    assert.equal(fromHost.source, 'DOCKER_HOST');
    assert.deepEqual(asked, [], 'DOCKER_HOST set: no socket is probed');
  });
});

describe('Docker contexts', () => {
  const caText = 'CA PEM';
  const contexts = [
    { name: 'remote', host: 'tcp://10.1.2.3:2376', description: 'build host', tls: { 'ca.pem': caText, 'cert.pem': 'CERT PEM', 'key.pem': 'KEY PEM' } },
    { name: 'plain', host: 'tcp://10.1.2.4:2375' },
    { name: 'over-ssh', host: 'ssh://ci@builder' },
    { name: 'rootless', host: 'unix:///run/user/1000/docker.sock', description: 'Rootless mode' },
  ];

  it('live where the docker CLI keeps them: meta/<sha256 of the name>/meta.json', () => {
    assert.equal(contextDirName('remote'), createHash('sha256').update('remote').digest('hex'));
  });

  it('give their endpoint with the TLS material of contexts/tls/<sha256>/docker, verified unless SkipTLSVerify', () => {
    const home = dockerHome({ contexts: [...contexts, { name: 'skip', host: 'tcp://10.1.2.5:2376', skipTlsVerify: true, tls: { 'cert.pem': 'C', 'key.pem': 'K' } }] });
    const config = path.join(home, '.docker');
    assert.deepEqual(readContext(config, 'remote'), { endpoint: { host: '10.1.2.3', port: 2376, protocol: 'https', tls: { ca: caText, cert: 'CERT PEM', key: 'KEY PEM', verify: true } }, description: 'build host' });
    assert.deepEqual(readContext(config, 'plain').endpoint, { host: '10.1.2.4', port: 2375 });
    assert.deepEqual(readContext(config, 'over-ssh').endpoint, { host: 'builder', port: 22, protocol: 'ssh', username: 'ci' });
    assert.deepEqual(readContext(config, 'skip').endpoint, { host: '10.1.2.5', port: 2376, protocol: 'https', tls: { cert: 'C', key: 'K', verify: false } });
  });

  it('are chosen as the docker CLI chooses: --context, then DOCKER_HOST, then DOCKER_CONTEXT, then config.json\'s currentContext', async () => {
    const home = dockerHome({ current: 'plain', contexts });
    const env = { HOME: home };
    assert.deepEqual(chosenContext({ env }), { name: 'plain', source: 'config', reason: `currentContext in ${path.join(home, '.docker', 'config.json')}` });
    assert.equal(chosenContext({ env: { ...env, DOCKER_CONTEXT: 'rootless' } })?.name, 'rootless');
    assert.equal(chosenContext({ env: { ...env, DOCKER_CONTEXT: 'rootless', DOCKER_HOST: 'tcp://x:1' } }), undefined, 'DOCKER_HOST wins over DOCKER_CONTEXT and config.json: the default context');
    assert.equal(chosenContext({ env: { ...env, DOCKER_HOST: 'tcp://x:1' }, context: 'remote' })?.source, 'flag', '--context wins over DOCKER_HOST');

    const byFlag = await resolveEngine({ env: { ...env, DOCKER_CONTEXT: 'rootless' }, context: 'remote', probe: answersNothing });
    assert.equal(byFlag.context, 'remote');
    assert.equal(byFlag.reason, '--context remote');
    assert.equal('protocol' in byFlag.endpoint && byFlag.endpoint.protocol, 'https');

    const byEnv = await resolveEngine({ env: { ...env, DOCKER_CONTEXT: 'rootless' }, probe: answersNothing });
    assert.deepEqual(byEnv.endpoint, { socketPath: '/run/user/1000/docker.sock' });
    assert.equal(byEnv.source, 'DOCKER_CONTEXT');

    const byConfig = await resolveEngine({ env, probe: answersNothing });
    assert.deepEqual(byConfig.endpoint, { host: '10.1.2.4', port: 2375 });
    assert.equal(byConfig.source, 'config');

    const defaultByName = await resolveEngine({ env: { ...env, DOCKER_CONTEXT: 'default' }, probe: async () => true });
    assert.equal(defaultByName.source, 'default-socket', 'the context named default is the environment\'s');

    const withConfigDir = await resolveEngine({ env: { DOCKER_CONFIG: path.join(home, '.docker') }, probe: answersNothing });
    assert.equal(withConfigDir.context, 'plain', 'DOCKER_CONFIG names the configuration directory');
  });

  it('a context that does not exist, or names no docker endpoint, is refused naming it', async () => {
    const home = dockerHome({ contexts: [{ name: 'k8s-only', host: 'unused' }] });
    await assert.rejects(resolveEngine({ env: { HOME: home }, context: 'nosuch', probe: answersNothing }), (error: unknown) => error instanceof ValidationError && /"nosuch" does not exist/.test(error.message));
    await assert.rejects(resolveEngine({ env: { HOME: home }, context: 'k8s-only', probe: answersNothing }), (error: unknown) => error instanceof ValidationError && /"k8s-only" has the endpoint "unused"/.test(error.message));
  });

  it('are listed with the default first, then by name, with their endpoints', () => {
    const home = dockerHome({ contexts });
    const listed = listContexts({ HOME: home });
    assert.deepEqual(
      listed.map((entry) => [entry.name, entry.endpoint, entry.tls]),
      [
        ['default', 'unix:///var/run/docker.sock', false],
        ['over-ssh', 'ssh://ci@builder', false],
        ['plain', 'tcp://10.1.2.4:2375', false],
        ['remote', 'https://10.1.2.3:2376', true],
        ['rootless', 'unix:///run/user/1000/docker.sock', false],
      ],
    );
    assert.equal(listContexts({ HOME: home, DOCKER_HOST: 'tcp://h:1' })[0]!.endpoint, 'tcp://h:1');
  });
});
