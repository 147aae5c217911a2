import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { AgentClient, resolveAgentTls } from '../../../src/agent/client.js';
import { isLoopbackHost, loadAgentConfig, RESTART_ONLY_KEYS, type AgentConfigInput, type HostFacts } from '../../../src/agent/config.js';
import { ValidationError, type FieldIssue } from '../../../src/common/errors.js';

const host: HostFacts = { uid: 1000, homedir: '/home/ada', totalMemoryBytes: 8 * 1024 ** 3, cpuCount: 4 };
const dir = mkdtempSync(path.join(tmpdir(), 'berth-tls-unit-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function issuesOf(run: () => unknown): readonly FieldIssue[] {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    return error.issues;
  }
  assert.fail('expected a ValidationError');
}

const load = (flags: AgentConfigInput) => loadAgentConfig({ flags: { dataDir: '/srv/berth', ...flags }, host });

describe('the agent\'s tls.* keys', () => {
  it('knows loopback hosts: localhost, 127.0.0.0/8 and ::1; anything else reaches the network', () => {
    for (const loopback of ['localhost', 'LOCALHOST', '127.0.0.1', '127.1.2.3', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) assert.equal(isLoopbackHost(loopback), true, loopback);
    for (const remote of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', '127.0.0.256', 'agent.example', 'localhost.example', '::ffff:10.0.0.1', '1::1']) assert.equal(isLoopbackHost(remote), false, remote);
  });

  it('refuses a non-loopback listen without TLS, naming listen, the way out, and where the value came from', () => {
    const issues = issuesOf(() => load({ listen: '0.0.0.0:7070' }));
    assert.deepEqual(issues, [
      { field: 'listen', rule: '0.0.0.0 is not a loopback address: set tls.cert and tls.key to serve HTTPS, or tls.allowInsecure: true to serve plain HTTP (the token crosses the network in clear) (from flags)' },
    ]);
    const fromEnv = issuesOf(() => loadAgentConfig({ env: { BERTH_LISTEN: '10.1.2.3:7070' }, flags: { dataDir: '/srv/berth' }, host }));
    assert.match(fromEnv[0]!.rule, /\(from BERTH_LISTEN\)$/);
  });

  it('lets a non-loopback listen serve plain HTTP with tls.allowInsecure, or HTTPS with tls.cert and tls.key', () => {
    const insecure = load({ listen: '0.0.0.0:7070', tls: { allowInsecure: true } });
    assert.deepEqual(insecure.listen, { host: '0.0.0.0', port: 7070 });
    assert.equal(insecure.tls, undefined);
    const secure = load({ listen: '[::]:7443', tls: { cert: '/etc/berth/cert.pem', key: '~/key.pem' } });
    assert.deepEqual(secure.tls, { certFile: '/etc/berth/cert.pem', keyFile: '/home/ada/key.pem' });
    const mutual = load({ listen: '10.0.0.1:7443', tls: { cert: '/c.pem', key: '/k.pem', clientCa: '/ca.pem' } });
    assert.deepEqual(mutual.tls, { certFile: '/c.pem', keyFile: '/k.pem', clientCaFile: '/ca.pem' });
    assert.equal(load({ listen: '127.0.0.1:7070' }).tls, undefined, 'loopback needs no TLS');
  });

  it('wants tls.cert and tls.key together, tls.clientCa only with them, absolute paths and a boolean opt-out', () => {
    assert.deepEqual(issuesOf(() => load({ tls: { cert: '/c.pem' } })).map((i) => i.field), ['tls.key']);
    assert.deepEqual(issuesOf(() => load({ tls: { key: '/k.pem' } })).map((i) => i.field), ['tls.cert']);
    assert.deepEqual(issuesOf(() => load({ tls: { clientCa: '/ca.pem' } })).map((i) => i.field), ['tls.clientCa']);
    assert.deepEqual(issuesOf(() => load({ tls: { cert: 'cert.pem', key: '/k.pem' } })).map((i) => i.field), ['tls.cert']);
    assert.deepEqual(issuesOf(() => load({ tls: { allowInsecure: 'yes' as unknown as boolean } })).map((i) => i.field), ['tls.allowInsecure']);
    assert.deepEqual(issuesOf(() => load({ tls: { certificate: '/c.pem' } as unknown as AgentConfigInput['tls'] })).map((i) => i.field), ['tls.certificate']);
  });

  it('keeps the TLS keys for a restart (their files are re-read on SIGHUP)', () => {
    assert.ok(RESTART_ONLY_KEYS.includes('tls'));
  });
});

describe('a client\'s TLS (resolveAgentTls)', () => {
  const caFile = path.join(dir, 'not-a-ca.pem');
  writeFileSync(caFile, 'hello\n');

  it('speaks TLS to https:// always, to tcp:// only with a TLS flag, BERTH_TLS_VERIFY or BERTH_CERT_PATH, never to unix:// or http://', () => {
    assert.deepEqual(resolveAgentTls('https://a:1', {}, {}), {});
    assert.equal(resolveAgentTls('tcp://a:1', {}, {}), undefined);
    assert.deepEqual(resolveAgentTls('tcp://a:1', {}, { tlsverify: true }), {});
    assert.deepEqual(resolveAgentTls('tcp://a:1', { BERTH_TLS_VERIFY: '1' }, {}), {});
    assert.deepEqual(resolveAgentTls('tcp://a:1', { BERTH_CERT_PATH: dir }, {}), {}, 'a directory without ca.pem, cert.pem or key.pem: the system\'s CAs');
    assert.equal(resolveAgentTls('unix:///s.sock', { BERTH_CERT_PATH: dir, BERTH_TLS_VERIFY: '1' }, {}), undefined, 'the environment is ignored for a unix socket');
    assert.equal(resolveAgentTls('http://a:1', { BERTH_CERT_PATH: dir }, {}), undefined);
  });

  it('refuses TLS flags with a unix:// or http:// address, naming each flag', () => {
    assert.deepEqual(issuesOf(() => resolveAgentTls('unix:///s.sock', {}, { tlscacert: '/ca.pem', tlsverify: true })), [
      { field: '--tlscacert', rule: 'applies to https:// and tcp:// addresses, not unix:///s.sock' },
      { field: '--tlsverify', rule: 'applies to https:// and tcp:// addresses, not unix:///s.sock' },
    ]);
    assert.deepEqual(issuesOf(() => resolveAgentTls('http://a:1', {}, { tlscert: '/c.pem' })), [{ field: '--tlscert', rule: 'applies to https:// and tcp:// addresses, not http://a:1 (use https://)' }]);
  });

  it('wants a client certificate with its key, and names the flag and file of a file it cannot use', () => {
    assert.deepEqual(issuesOf(() => resolveAgentTls('https://a:1', {}, { tlscert: '/c.pem' })), [{ field: '--tlskey', rule: 'is needed with --tlscert (/c.pem): a client certificate goes with its key' }]);
    assert.deepEqual(issuesOf(() => resolveAgentTls('https://a:1', {}, { tlskey: '/k.pem' })), [{ field: '--tlscert', rule: 'is needed with --tlskey (/k.pem): a client certificate goes with its key' }]);
    const missing = path.join(dir, 'missing.pem');
    assert.deepEqual(issuesOf(() => resolveAgentTls('https://a:1', {}, { tlscacert: missing })), [{ field: '--tlscacert', rule: `${missing}: cannot be read (ENOENT)` }]);
    assert.deepEqual(issuesOf(() => resolveAgentTls('https://a:1', {}, { tlscacert: caFile })), [{ field: '--tlscacert', rule: `${caFile}: is not PEM (no "-----BEGIN" line)` }]);
  });

  it('takes ca.pem, cert.pem and key.pem from BERTH_CERT_PATH when they exist, naming the variable for a bad one', () => {
    const certPath = mkdtempSync(path.join(dir, 'certs-'));
    writeFileSync(path.join(certPath, 'ca.pem'), '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n');
    const issues = issuesOf(() => resolveAgentTls('tcp://a:1', { BERTH_CERT_PATH: certPath }, {}));
    assert.equal(issues[0]?.field, 'BERTH_CERT_PATH');
    assert.match(issues[0]!.rule, new RegExp(`^${path.join(certPath, 'ca.pem').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: is not a PEM certificate`));
    writeFileSync(path.join(certPath, 'cert.pem'), '');
    assert.deepEqual(issuesOf(() => resolveAgentTls('tcp://a:1', { BERTH_CERT_PATH: certPath }, { tlscacert: caFile })).map((i) => i.field), ['--tlskey'], 'cert.pem without key.pem');
  });

  it('refuses TLS material for a unix:// or http:// client', () => {
    assert.throws(() => AgentClient.connect({ host: 'http://a:1', token: 't', tls: {} }), ValidationError);
    assert.throws(() => AgentClient.connect({ host: 'unix:///s.sock', token: 't', tls: {} }), ValidationError);
    const client = AgentClient.connect({ host: 'tcp://a:1', token: 't', tls: {} });
    assert.equal(client.secure, true);
    client.close();
    const plain = AgentClient.connect({ host: 'tcp://a:1', token: 't' });
    assert.equal(plain.secure, false);
    plain.close();
  });
});
