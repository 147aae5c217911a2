/**
 * Remote engines as the docker CLI reaches them: a dockerd of the test's own listening on loopback
 * TLS with certificates the test makes (good client certificate, wrong CA, no client certificate),
 * chosen through DOCKER_HOST + DOCKER_TLS_VERIFY + DOCKER_CERT_PATH, through a Docker context and
 * through the agent's configuration; and the shared engine over SSH through a loopback sshd.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { engineOptionsFromEnv } from '../../src/engine/connect.js';
import { Engine } from '../../src/engine/engine.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { runToEnd } from '../../src/tasks/run.js';
import { cleanEnv, runBerth } from '../support/agent.js';
import { pollUntil, TEST_IMAGE, TEST_RUN_LABEL, testRun } from '../support/engine.js';
import { requireOwnEngine, startOwnEngine, type OwnEngine } from '../support/own-engine.js';
import { freePort } from '../support/registry.js';
import { makeTestCertificates, type TestCertificates } from '../support/tls.js';

/** A directory holding ca.pem, cert.pem and key.pem, as DOCKER_CERT_PATH (and a context's TLS directory) does. */
async function certDir(dir: string, files: { ca: string; cert?: string; key?: string }): Promise<string> {
  await mkdir(dir, { recursive: true });
  await copyFile(files.ca, path.join(dir, 'ca.pem'));
  if (files.cert !== undefined) await copyFile(files.cert, path.join(dir, 'cert.pem'));
  if (files.key !== undefined) await copyFile(files.key, path.join(dir, 'key.pem'));
  return dir;
}

describe('a remote engine over TLS (a dockerd of the test\'s own on loopback)', { skip: requireOwnEngine() }, () => {
  let dir: string;
  let certs: TestCertificates;
  let own: OwnEngine;
  let port: number;
  let good: string;
  let wrongCa: string;
  let noClient: string;
  const run = testRun(new Engine({ socketPath: '/var/run/berth-engine-t1.sock' }));
  const spec = (command: string[]): TaskSpec => ({ image: TEST_IMAGE, command, labels: { ...run.labels } });

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'berth-remote-'));
    certs = await makeTestCertificates(dir);
    port = await freePort();
    own = await startOwnEngine('t1', {
      args: ['-H', `tcp://127.0.0.1:${port}`, '--tlsverify', '--tlscacert', certs.ca.cert, '--tlscert', certs.server.cert, '--tlskey', certs.server.key],
    });
    good = await certDir(path.join(dir, 'good'), { ca: certs.ca.cert, cert: certs.client.cert, key: certs.client.key });
    wrongCa = await certDir(path.join(dir, 'wrong-ca'), { ca: certs.otherCa.cert, cert: certs.client.cert, key: certs.client.key });
    noClient = await certDir(path.join(dir, 'no-client'), { ca: certs.ca.cert });
  });

  after(async () => {
    await run.cleanup();
    await own?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  const tlsEnv = (certPath: string) => ({ DOCKER_HOST: `tcp://127.0.0.1:${port}`, DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: certPath });

  test('DOCKER_HOST=tcp:// with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH: berth verifies the engine, presents its client certificate, and runs a task', async () => {
    const engine = new Engine(engineOptionsFromEnv(tlsEnv(good)));
    assert.equal((await engine.checkCompatible()).engine, 'docker');
    const driver = new TaskDriver({ engine, ownerId: `test-${run.id}` });
    const result = await runToEnd(driver, spec(['sh', '-c', 'exit 5']));
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 5 });
  });

  test('berth run over TLS gives the task\'s output and exit code', async () => {
    const result = await runBerth(['run', '--label', `${TEST_RUN_LABEL}=${run.id}`, TEST_IMAGE, 'sh', '-c', 'echo over-tls; exit 3'], cleanEnv(tlsEnv(good)));
    assert.equal(result.code, 3, result.stderr);
    assert.equal(result.stdout, 'over-tls\n');
  });

  test('an engine certificate of another CA is refused: BERTH_ENGINE_TLS saying it is not signed by the CA given, not retried', async () => {
    const engine = new Engine(engineOptionsFromEnv(tlsEnv(wrongCa)));
    await assert.rejects(engine.checkCompatible(), (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_ENGINE_TLS'), String(error));
      assert.match(error.message, /not signed by the CA berth was given/);
      assert.equal(error.retryable, false);
      return true;
    });
    const cli = await runBerth(['run', TEST_IMAGE, 'true'], cleanEnv(tlsEnv(wrongCa)));
    assert.equal(cli.code, 125);
    assert.match(cli.stderr, /TLS with the engine failed.*\[BERTH_ENGINE_TLS\]/);
  });

  test('without a client certificate the engine refuses berth: BERTH_ENGINE_TLS saying so', async () => {
    const engine = new Engine(engineOptionsFromEnv(tlsEnv(noClient)));
    await assert.rejects(engine.checkCompatible(), (error: unknown) => {
      assert.ok(isBerthError(error, 'BERTH_ENGINE_TLS') || isBerthError(error, 'BERTH_ENGINE_UNAVAILABLE'), String(error));
      assert.match(error.message, /refused the client certificate|connection/);
      return true;
    });
  });

  test('a Docker context with the TLS material selects the engine: --context, DOCKER_CONTEXT, and berth context ls says which and why', async () => {
    const home = path.join(dir, 'home');
    const name = 'tls-engine';
    const hash = createHash('sha256').update(name).digest('hex');
    await mkdir(path.join(home, '.docker', 'contexts', 'meta', hash), { recursive: true });
    await writeFile(
      path.join(home, '.docker', 'contexts', 'meta', hash, 'meta.json'),
      JSON.stringify({ Name: name, Metadata: { Description: 'own engine over TLS' }, Endpoints: { docker: { Host: `tcp://127.0.0.1:${port}`, SkipTLSVerify: false } } }),
    );
    await certDir(path.join(home, '.docker', 'contexts', 'tls', hash, 'docker'), { ca: certs.ca.cert, cert: certs.client.cert, key: certs.client.key });
    const env = cleanEnv({ HOME: home });
    delete env.DOCKER_HOST;
    const byFlag = await runBerth(['--context', name, 'run', '--label', `${TEST_RUN_LABEL}=${run.id}`, TEST_IMAGE, 'sh', '-c', 'echo by-context'], env);
    assert.equal(byFlag.code, 0, byFlag.stderr);
    assert.equal(byFlag.stdout, 'by-context\n');
    const byEnv = await runBerth(['run', '--label', `${TEST_RUN_LABEL}=${run.id}`, TEST_IMAGE, 'sh', '-c', 'exit 7'], { ...env, DOCKER_CONTEXT: name });
    assert.equal(byEnv.code, 7, byEnv.stderr);
    const listed = await runBerth(['context', 'ls'], { ...env, DOCKER_CONTEXT: name });
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, new RegExp(`${name} \\*\\s+https://127\\.0\\.0\\.1:${port}\\s+own engine over TLS`));
    assert.match(listed.stdout, new RegExp(`berth uses ${name} \\(https://127\\.0\\.0\\.1:${port}\\): DOCKER_CONTEXT=${name}`));
  });

  test('the agent\'s configuration names the same engine: engine.host with engine.tlsVerify and engine.certPath', async () => {
    const config = loadAgentConfig({ host: { uid: 0, homedir: dir, totalMemoryBytes: 2 ** 30, cpuCount: 2 }, flags: { dataDir: path.join(dir, 'agent'), engine: { host: `tcp://127.0.0.1:${port}`, tlsVerify: true, certPath: good } } });
    const engine = new Engine(config.engine);
    assert.equal((await engine.checkCompatible()).engine, 'docker');
  });
});

/** Whether sshd and ssh-keygen are installed (scripts/test-engine.sh installs openssh-server). */
function requireSshd(): false | string {
  const missing = ['/usr/sbin/sshd', 'ssh-keygen'].filter((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0);
  if (missing.length === 0 && process.getuid?.() === 0) return false;
  const why = missing.length > 0 ? `${missing.join(' and ')} not installed (Debian package openssh-server)` : 'the loopback sshd needs root';
  if (process.env.CI === 'true') throw new Error(`CI=true and ${why}`);
  return why;
}

describe('a remote engine over SSH (a loopback sshd; the remote side runs docker system dial-stdio)', { skip: requireSshd() }, () => {
  let dir: string;
  let sshd: ChildProcess;
  let port: number;
  let home: string;
  const run = testRun(new Engine({ socketPath: '/var/run/docker.sock' }));

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'berth-ssh-'));
    home = path.join(dir, 'home');
    await mkdir(path.join(home, '.ssh'), { recursive: true });
    await mkdir('/run/sshd', { recursive: true });
    for (const [file, out] of [['host', path.join(dir, 'host_key')], ['client', path.join(home, '.ssh', 'id_ed25519')]] as const) {
      const made = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `berth-test-${file}`, '-f', out], { encoding: 'utf8' });
      assert.equal(made.status, 0, made.stderr);
    }
    await writeFile(path.join(dir, 'authorized_keys'), await readFile(path.join(home, '.ssh', 'id_ed25519.pub')));
    port = await freePort();
    const config = [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${path.join(dir, 'host_key')}`,
      `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
    ].join('\n');
    await writeFile(path.join(dir, 'sshd_config'), `${config}\n`);
    // The user trusts the server as ssh would after a first connection: its host key in known_hosts.
    const hostKey = (await readFile(path.join(dir, 'host_key.pub'), 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ');
    await writeFile(path.join(home, '.ssh', 'known_hosts'), `[127.0.0.1]:${port} ${hostKey}\n`);
    sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', path.join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    sshd.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d));
    await pollUntil(`sshd on 127.0.0.1:${port} (${log})`, async () => {
      if (sshd.exitCode !== null) throw new Error(`sshd exited with ${sshd.exitCode}: ${log}`);
      const socket = net.connect(port, '127.0.0.1');
      const connected = await new Promise<boolean>((resolve) => {
        socket.once('connect', () => resolve(true));
        socket.once('error', () => resolve(false));
      });
      socket.destroy();
      return connected ? true : undefined;
    }, { timeoutMs: 20_000, intervalMs: 100 });
  });

  after(async () => {
    await run.cleanup();
    sshd?.kill('SIGTERM');
    if (sshd && sshd.exitCode === null) await once(sshd, 'exit');
    await rm(dir, { recursive: true, force: true });
  });

  test('DOCKER_HOST=ssh://root@127.0.0.1:<port> reaches the engine with the user\'s key, and berth run gives the task\'s output and exit code', async () => {
    const env = { DOCKER_HOST: `ssh://root@127.0.0.1:${port}`, HOME: home };
    const engine = new Engine(engineOptionsFromEnv(env));
    assert.equal((await engine.checkCompatible()).engine, 'docker');
    const result = await runBerth(['run', '--label', `${TEST_RUN_LABEL}=${run.id}`, TEST_IMAGE, 'sh', '-c', 'echo over-ssh; exit 4'], { ...cleanEnv(env), SSH_AUTH_SOCK: '' });
    assert.equal(result.code, 4, result.stderr);
    assert.equal(result.stdout, 'over-ssh\n');
  });

  test('a key the server does not know is refused: BERTH_ENGINE_SSH saying the server refused berth\'s keys', async () => {
    const stranger = path.join(dir, 'stranger');
    await mkdir(path.join(stranger, '.ssh'), { recursive: true });
    const made = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(stranger, '.ssh', 'id_ed25519')], { encoding: 'utf8' });
    assert.equal(made.status, 0, made.stderr);
    await copyFile(path.join(home, '.ssh', 'known_hosts'), path.join(stranger, '.ssh', 'known_hosts'));
    const engine = new Engine({ ...engineOptionsFromEnv({ DOCKER_HOST: `ssh://root@127.0.0.1:${port}`, HOME: stranger }), readAttempts: 1 });
    await assert.rejects(engine.ping(), (error: unknown) => isBerthError(error, 'BERTH_ENGINE_SSH') && /refused every key/.test(error.message));
  });

  test('a server whose host key known_hosts does not list is refused before berth authenticates: BERTH_ENGINE_SSH naming known_hosts', async () => {
    const unknown = path.join(dir, 'unknown-host');
    await mkdir(path.join(unknown, '.ssh'), { recursive: true });
    await copyFile(path.join(home, '.ssh', 'id_ed25519'), path.join(unknown, '.ssh', 'id_ed25519'));
    const engine = new Engine({ ...engineOptionsFromEnv({ DOCKER_HOST: `ssh://root@127.0.0.1:${port}`, HOME: unknown }), readAttempts: 1 });
    await assert.rejects(engine.ping(), (error: unknown) => isBerthError(error, 'BERTH_ENGINE_SSH') && new RegExp(`\\[127\\.0\\.0\\.1\\]:${port} is not in ~/\\.ssh/known_hosts`).test(error.message));
    // A different key under the server's name: another server, or its key changed.
    await writeFile(path.join(unknown, '.ssh', 'known_hosts'), `[127.0.0.1]:${port} ${(await readFile(path.join(home, '.ssh', 'id_ed25519.pub'), 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ')}\n`);
    const changed = new Engine({ ...engineOptionsFromEnv({ DOCKER_HOST: `ssh://root@127.0.0.1:${port}`, HOME: unknown }), readAttempts: 1 });
    await assert.rejects(changed.ping(), (error: unknown) => isBerthError(error, 'BERTH_ENGINE_SSH') && /does not match the one in known_hosts/.test(error.message));
  });
});
