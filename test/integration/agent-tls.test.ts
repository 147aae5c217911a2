import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { connect as netConnect } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { AgentClient, type AgentEvent } from '../../src/agent/client.js';
import { agentProcesses, berth, httpGet, tempDirs, writeAgentConfig, type RunningAgent } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { makeTestCertificates, type TestCertificates } from '../support/tls.js';

/**
 * TLS on the agent's TCP listener, as a user runs it: a real `berth agent` process serving HTTPS
 * (and mutual TLS) from certificates the test makes with openssl, the real CLI as the client
 * (`--host https://… --tlscacert …`), and a token rotated with SIGHUP under an open event stream.
 */

const engine = testEngine();
const run = testRun(engine);
const agents = agentProcesses();
const dirs = tempDirs();
let certs: TestCertificates;

before(async () => {
  certs = await makeTestCertificates(await dirs.make('berth-certs-'));
});

after(async () => {
  await agents.killAll();
  await run.cleanup();
  await dirs.removeAll();
});

const skip = await requireEngine();

/** The agent's TCP address as it logged it (`listen` asks for port 0). */
function tcpAddress(agent: RunningAgent): string {
  const listening = agent.logLines().find((line) => line.msg === 'agent listening');
  assert.match(String(listening?.tcp), /^127\.0\.0\.1:\d+$/, agent.tail());
  return String(listening!.tcp);
}

/** Waits (bounded) for a log line of the agent that matches. */
function waitForLog(agent: RunningAgent, what: string, match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  return pollUntil(what, () => agent.logLines().find(match), { timeoutMs: 20_000, intervalMs: 25 });
}

/** An agent configuration with `listen` on a free loopback port and the given `tls` keys. */
function tlsYaml(tls: Record<string, string | boolean>): string {
  return `listen: 127.0.0.1:0\ntls:\n${Object.entries(tls)
    .map(([key, value]) => `  ${key}: ${JSON.stringify(value)}\n`)
    .join('')}`;
}

/** One request with node:http(s), resolving with the status and body, or the connection's error code. */
function rawRequest(send: typeof httpRequest | typeof httpsRequest, options: RequestOptions): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const req = send({ ...options, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.once('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
    });
    req.once('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
    req.end();
  });
}

describe('HTTPS on the TCP listener', { skip }, () => {
  test('the CLI reaches an HTTPS agent with its CA from --tlscacert or BERTH_CERT_PATH; without the CA it is refused saying so; a plain-HTTP client is answered 400 telling it to use https', async () => {
    const dataDir = await dirs.make('berth-https-');
    const config = await writeAgentConfig(dataDir, tlsYaml({ cert: certs.server.cert, key: certs.server.key }));
    const agent = await agents.start(dataDir, ['--config', config]);
    const address = tcpAddress(agent);
    assert.equal(agent.logLines().find((line) => line.msg === 'the API is listening')?.tls, 'server');

    const withCa = await berth(dataDir, ['ps', '-a', '--json', '--host', `https://${address}`, '--tlscacert', certs.ca.cert]);
    assert.equal(withCa.code, 0, withCa.stderr);
    assert.deepEqual(JSON.parse(withCa.stdout), []);

    // As DOCKER_CERT_PATH: a directory with ca.pem; tcp:// speaks TLS because it is set.
    const certPath = await dirs.make('berth-certpath-');
    await copyFile(certs.ca.cert, path.join(certPath, 'ca.pem'));
    const fromEnv = await berth(dataDir, ['ps', '-a', '--host', `tcp://${address}`], { BERTH_CERT_PATH: certPath });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    const fromHostEnv = await berth(dataDir, ['ps', '-a'], { BERTH_HOST: `https://${address}`, BERTH_CERT_PATH: certPath });
    assert.equal(fromHostEnv.code, 0, fromHostEnv.stderr);

    // The system's CAs do not know the test's CA.
    const withoutCa = await berth(dataDir, ['ps', '--host', `https://${address}`]);
    assert.equal(withoutCa.code, 1);
    assert.match(withoutCa.stderr, /TLS with the agent at https:\/\/127\.0\.0\.1:\d+ failed \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\): the agent's certificate is not signed by a trusted CA: give the CA that signed it \(--tlscacert/);
    assert.match(withoutCa.stderr, /\[BERTH_AGENT_TLS\]$/m);
    const wrongCa = await berth(dataDir, ['ps', '--host', `https://${address}`, '--tlscacert', certs.otherCa.cert]);
    assert.equal(wrongCa.code, 1);
    assert.match(wrongCa.stderr, /\[BERTH_AGENT_TLS\]$/m);

    // Plain HTTP to the HTTPS port: an HTTP answer that says what to do, not a reset.
    const [host, port] = address.split(':') as [string, string];
    const plain = await rawRequest(httpRequest, { host, port: Number(port), path: '/v1/tasks', headers: { authorization: `Bearer ${(await readFile(path.join(dataDir, 'token'), 'utf8')).trim()}` } });
    assert.ok('status' in plain, JSON.stringify(plain));
    assert.equal(plain.status, 400);
    assert.deepEqual(JSON.parse(plain.body), { error: { code: 'BERTH_VALIDATION', message: 'this address serves HTTPS: connect with https://host:port (and the CA of the agent\'s certificate, --tlscacert)' } });
    for (const scheme of ['http', 'tcp']) {
      const plainCli = await berth(dataDir, ['ps', '--host', `${scheme}://${address}`]);
      assert.equal(plainCli.code, 2, plainCli.stderr);
      assert.match(plainCli.stderr, /^berth: this address serves HTTPS: connect with https:\/\/host:port/m);
    }
    // TLS flags with a plain address are a usage error, caught before anything is sent.
    const mixed = await berth(dataDir, ['ps', '--host', `http://${address}`, '--tlscacert', certs.ca.cert]);
    assert.equal(mixed.code, 2);
    assert.match(mixed.stderr, /--tlscacert: applies to https:\/\/ and tcp:\/\/ addresses, not http:\/\/127\.0\.0\.1:\d+ \(use https:\/\/\)/);

    // The unix socket stays plain HTTP.
    assert.equal((await httpGet(agent.socketPath, '/healthz')).status, 200);
  });

  test('with tls.clientCa, a client certificate the CA signed is accepted; none, or one another CA signed, is refused with 403 and the request never reaches the API', async () => {
    const dataDir = await dirs.make('berth-mtls-');
    const config = await writeAgentConfig(dataDir, tlsYaml({ cert: certs.server.cert, key: certs.server.key, clientCa: certs.ca.cert }));
    const agent = await agents.start(dataDir, ['--config', config]);
    const address = tcpAddress(agent);
    assert.equal(agent.logLines().find((line) => line.msg === 'the API is listening')?.tls, 'mutual');
    const host = ['--host', `https://${address}`, '--tlscacert', certs.ca.cert];
    /** A submit with the given TLS flags (before the image: what follows it is the task's command). */
    const submit = (flags: string[]): string[] => ['submit', '-l', run.labelFilter, ...flags, TEST_IMAGE, 'true'];

    const noCert = await berth(dataDir, submit(host));
    assert.equal(noCert.code, 1);
    assert.match(noCert.stderr, /^berth: no client certificate was given: the agent requires one signed by its tls\.clientCa \(--tlscert and --tlskey\) \[BERTH_AGENT_TLS\]$/m);
    const otherCert = await berth(dataDir, submit([...host, '--tlscert', certs.otherClient.cert, '--tlskey', certs.otherClient.key]));
    assert.equal(otherCert.code, 1);
    assert.match(otherCert.stderr, /^berth: the client certificate was refused \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\): the agent requires one signed by its tls\.clientCa/m);
    await waitForLog(agent, 'the refusal to be logged', (line) => line.msg === 'a client was refused: the client certificate was refused (UNABLE_TO_VERIFY_LEAF_SIGNATURE)');

    // As a raw HTTPS client: 403 in berth's shape, even for /healthz, and the connection closed.
    const [hostname, port] = address.split(':') as [string, string];
    const raw = await rawRequest(httpsRequest, { host: hostname, port: Number(port), path: '/healthz', ca: await readFile(certs.ca.cert) });
    assert.ok('status' in raw, JSON.stringify(raw));
    assert.equal(raw.status, 403);
    assert.equal((JSON.parse(raw.body) as { error: { code: string } }).error.code, 'BERTH_AGENT_TLS');

    // Neither refused submit reached the API: the client with the CA's certificate sees no task.
    const withCert = [...host, '--tlscert', certs.client.cert, '--tlskey', certs.client.key];
    const listed = await berth(dataDir, ['ps', '-a', '--json', ...withCert]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(JSON.parse(listed.stdout), []);
    const accepted = await berth(dataDir, submit(withCert));
    assert.equal(accepted.code, 0, accepted.stderr);
    const afterSubmit = await berth(dataDir, ['ps', '-a', '-q', ...withCert]);
    assert.equal(afterSubmit.stdout.trim().split('\n').length, 1, afterSubmit.stdout);
  });
});

describe('the TLS listener bounds its clients as the plain one does', { skip }, () => {
  test('a client that sends nothing is dropped, and one that sends its headers too slowly over TLS is answered 408', async () => {
    const dataDir = await dirs.make('berth-tlsslow-');
    const config = await writeAgentConfig(dataDir, `${tlsYaml({ cert: certs.server.cert, key: certs.server.key })}http:\n  headersTimeout: 1s\n`);
    const agent = await agents.start(dataDir, ['--config', config]);
    const [host, port] = tcpAddress(agent).split(':') as [string, string];

    const silent = netConnect({ host, port: Number(port) });
    silent.on('error', () => undefined);
    await once(silent, 'connect');
    await pollUntil('the silent connection to be closed by the agent', () => (silent.destroyed || silent.readableEnded ? true : undefined), { timeoutMs: 30_000, intervalMs: 50 });
    silent.destroy();

    const slow = tlsConnect({ host, port: Number(port), ca: await readFile(certs.ca.cert) });
    slow.on('error', () => undefined);
    await once(slow, 'secureConnect');
    slow.write('GET /healthz HTTP/1.1\r\nhost: x\r\n');
    let answer = '';
    slow.setEncoding('utf8').on('data', (d: string) => (answer += d));
    await once(slow, 'close');
    assert.match(answer, /^HTTP\/1\.1 408 /);
  });
});

describe('SIGHUP rotates the token and the certificate without dropping connections', { skip }, () => {
  test('an events stream opened with the old token stays open and keeps delivering; the old token then gets 401 and the new one works; new connections get the new certificate', async () => {
    const dataDir = await dirs.make('berth-rotate-');
    // The agent reads its certificate from files the operator replaces before the SIGHUP.
    const cert = path.join(dataDir, 'agent-cert.pem');
    const key = path.join(dataDir, 'agent-key.pem');
    await copyFile(certs.server.cert, cert);
    await copyFile(certs.server.key, key);
    const config = await writeAgentConfig(dataDir, tlsYaml({ cert, key, clientCa: certs.ca.cert }));
    const agent = await agents.start(dataDir, ['--config', config]);
    const address = tcpAddress(agent);
    const tls = { ca: await readFile(certs.ca.cert), cert: await readFile(certs.client.cert), key: await readFile(certs.client.key) };
    const tokenFile = path.join(dataDir, 'token');
    const oldToken = (await readFile(tokenFile, 'utf8')).trim();

    const client = AgentClient.connect({ host: `https://${address}`, token: oldToken, tls });
    const events = await client.events();
    const received: AgentEvent[] = [];
    const reading = (async () => {
      for await (const event of events) received.push(event);
    })();
    try {
      const newToken = 'rotated-token-' + oldToken.slice(0, 16);
      const replacement = await certs.issueServer('server-rotated');
      await writeFile(tokenFile, `${newToken}\n`);
      await copyFile(replacement.cert, cert);
      await copyFile(replacement.key, key);
      agent.child.kill('SIGHUP');
      await waitForLog(agent, 'the rotation to be logged', (line) => line.msg === 'API token rotated: new requests need the new token; open connections and streams stay open');
      await waitForLog(agent, 'the certificate reload to be logged', (line) => line.msg === 'TLS certificate and key reloaded: new connections use them');
      assert.equal(agent.logLines().filter((line) => typeof line.msg === 'string' && line.msg.startsWith('API token rotated')).length, 1, 'announced once');

      const tlsFlags = ['--host', `https://${address}`, '--tlscacert', certs.ca.cert, '--tlscert', certs.client.cert, '--tlskey', certs.client.key];
      const old = await berth(dataDir, ['ps', '--token', oldToken, ...tlsFlags]);
      assert.equal(old.code, 1);
      assert.match(old.stderr, /\[BERTH_UNAUTHORIZED\]$/m);
      assert.equal((await httpGet(agent.socketPath, '/v1/tasks', oldToken)).status, 401, 'the unix socket too');
      assert.equal((await httpGet(agent.socketPath, '/v1/tasks', newToken)).status, 200);

      // The CLI reads the new token from the data directory, as always.
      const submitted = await berth(dataDir, ['submit', '-l', run.labelFilter, ...tlsFlags, TEST_IMAGE, 'true']);
      assert.equal(submitted.code, 0, submitted.stderr);
      const taskId = submitted.stdout.trim();
      // The stream opened with the old token, before the rotation, sees the new task to its end.
      await pollUntil(
        'the open event stream to deliver the task\'s end',
        () => (received.some((event) => event.type === 'task.state' && event.taskId === taskId && event.state === 'exited') ? true : undefined),
        { timeoutMs: 60_000, intervalMs: 50 },
      );

      // A new TLS connection is served with the replacement certificate.
      const served = await new Promise<string>((resolve, reject) => {
        const [host, port] = address.split(':') as [string, string];
        const socket = tlsConnect({ host, port: Number(port), ...tls }, () => {
          resolve(socket.getPeerCertificate().serialNumber);
          socket.destroy();
        });
        socket.once('error', reject);
      });
      assert.equal(served.toUpperCase(), new X509Certificate(await readFile(replacement.cert)).serialNumber.toUpperCase());
    } finally {
      events.close();
      await reading.catch(() => undefined);
      client.close();
    }
  });

  test('a token file that is empty is refused at SIGHUP and the old token stays', async () => {
    const dataDir = await dirs.make('berth-badtoken-');
    const agent = await agents.start(dataDir, []);
    const tokenFile = path.join(dataDir, 'token');
    const oldToken = (await readFile(tokenFile, 'utf8')).trim();
    await writeFile(tokenFile, '\n');
    agent.child.kill('SIGHUP');
    const refused = await waitForLog(agent, 'the refusal to be logged', (line) => typeof line.msg === 'string' && line.msg.startsWith('API token not rotated'));
    assert.equal(refused.level, 50);
    assert.match(String(refused.msg), /token: .*\/token must hold one token: a line without spaces/);
    assert.equal((await httpGet(agent.socketPath, '/v1/tasks', oldToken)).status, 200);
  });
});

describe('TLS configuration errors stop the agent before it listens', () => {
  test('a non-loopback listen without TLS exits 2 naming listen and the opt-out', async () => {
    const dataDir = await dirs.make('berth-insecure-');
    const result = await berth(dataDir, ['agent', '--data-dir', dataDir, '--listen', '0.0.0.0:0']);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /listen: 0\.0\.0\.0 is not a loopback address: set tls\.cert and tls\.key to serve HTTPS, or tls\.allowInsecure: true to serve plain HTTP \(the token crosses the network in clear\) \(from flags\)/);
  });

  test('a missing file, a file that is not PEM, and a key that is not the certificate\'s exit 2 naming the key and the file', async () => {
    const dataDir = await dirs.make('berth-tlsfiles-');
    const missing = path.join(dataDir, 'missing.pem');
    const cases: Array<{ tls: Record<string, string>; expected: RegExp }> = [
      { tls: { cert: missing, key: certs.server.key }, expected: new RegExp(`tls\\.cert: ${escape(missing)}: cannot be read \\(ENOENT\\)`) },
      { tls: { cert: certs.server.cert, key: path.join(dataDir, 'config.yaml') }, expected: new RegExp(`tls\\.key: ${escape(path.join(dataDir, 'config.yaml'))}: is not PEM`) },
      { tls: { cert: certs.server.cert, key: certs.client.key }, expected: new RegExp(`tls\\.key: ${escape(certs.client.key)}: is not the private key of the certificate ${escape(certs.server.cert)} \\(tls\\.cert\\)`) },
      { tls: { cert: certs.server.cert, key: certs.server.key, clientCa: certs.server.key }, expected: new RegExp(`tls\\.clientCa: ${escape(certs.server.key)}: is not a PEM certificate`) },
      { tls: { cert: certs.server.cert }, expected: /tls\.key: must be set with tls\.cert/ },
    ];
    for (const { tls, expected } of cases) {
      const config = await writeAgentConfig(dataDir, tlsYaml(tls));
      const result = await berth(dataDir, ['agent', '--data-dir', dataDir, '--config', config]);
      assert.equal(result.code, 2, `${JSON.stringify(tls)}: ${result.stderr}`);
      assert.match(result.stderr, expected);
      assert.doesNotMatch(result.stdout, /"the API is listening"/, 'nothing listened');
    }
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
