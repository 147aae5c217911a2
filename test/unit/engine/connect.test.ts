import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { engineOptionsFromEnv, parseDockerHost } from '../../../src/engine/connect.js';

describe('DOCKER_HOST', () => {
  it('reads a unix socket path and a TCP host with or without its port, as the docker CLI does', () => {
    assert.deepEqual(parseDockerHost('unix:///run/user/1000/docker.sock'), { socketPath: '/run/user/1000/docker.sock' });
    assert.deepEqual(parseDockerHost(' tcp://10.0.0.5:2376 '), { host: '10.0.0.5', port: 2376 });
    assert.deepEqual(parseDockerHost('http://engine/'), { host: 'engine', port: 2375 });
  });

  it('refuses a relative socket path, a port past 65535 and other schemes', () => {
    for (const text of ['unix://docker.sock', 'tcp://engine:65536', 'ssh://me@engine:0', 'ftp://engine', 'engine:2375', '']) assert.equal(parseDockerHost(text), undefined, text);
  });

  it('engine options default to the engine\'s socket, and a bad DOCKER_HOST is refused naming it', () => {
    assert.deepEqual(engineOptionsFromEnv({}), { socketPath: '/var/run/docker.sock' });
    assert.deepEqual(engineOptionsFromEnv({ DOCKER_HOST: 'tcp://engine:2375' }), { host: 'engine', port: 2375 });
    assert.throws(() => engineOptionsFromEnv({ DOCKER_HOST: 'ftp://engine' }), (error: unknown) => error instanceof ValidationError && error.issues[0]?.field === 'DOCKER_HOST');
  });
});
