import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { flagForSpecField, networkFromFlags, parsePublishFlag } from '../../../src/cli/flags.js';
import { formatPublishedPort, formatTaskPorts } from '../../../src/cli/output.js';
import { resolveTaskSpec } from '../../../src/spec/schema.js';

function refused(fn: () => unknown, field: string, rule: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ValidationError);
    assert.equal(error.issues[0]!.field, field);
    assert.match(error.issues[0]!.rule, rule);
    return true;
  });
}

describe('parsePublishFlag (docker\'s -p spellings)', () => {
  test('CONTAINER is a dynamic tcp port', () => {
    assert.deepEqual(parsePublishFlag('80', 0), { container: 80, protocol: 'tcp' });
  });
  test('HOST:CONTAINER is a static port', () => {
    assert.deepEqual(parsePublishFlag('8080:80', 0), { container: 80, host: 8080, protocol: 'tcp' });
  });
  test('IP:HOST:CONTAINER binds the address', () => {
    assert.deepEqual(parsePublishFlag('127.0.0.1:8080:80', 0), { container: 80, host: 8080, hostIp: '127.0.0.1', protocol: 'tcp' });
  });
  test('IP::CONTAINER is a dynamic port on the address', () => {
    assert.deepEqual(parsePublishFlag('127.0.0.1::80', 0), { container: 80, hostIp: '127.0.0.1', protocol: 'tcp' });
  });
  test('a /udp suffix makes a udp port, /tcp a tcp one', () => {
    assert.deepEqual(parsePublishFlag('5353:53/udp', 0), { container: 53, host: 5353, protocol: 'udp' });
    assert.deepEqual(parsePublishFlag('53/tcp', 0), { container: 53, protocol: 'tcp' });
  });
  test('an IPv6 address is given in brackets', () => {
    assert.deepEqual(parsePublishFlag('[::1]:8080:80', 0), { container: 80, host: 8080, hostIp: '::1', protocol: 'tcp' });
    assert.deepEqual(parsePublishFlag('[::1]::80/udp', 0), { container: 80, hostIp: '::1', protocol: 'udp' });
  });
  test('refuses a bad protocol, port, address or a range, naming the flag and its index', () => {
    refused(() => parsePublishFlag('80/sctp', 2), '-p/--publish[2]', /tcp or udp/);
    refused(() => parsePublishFlag('0', 0), '-p/--publish[0]', /container port must be a port number/);
    refused(() => parsePublishFlag('70000:80', 0), '-p/--publish[0]', /host port must be a port number/);
    refused(() => parsePublishFlag('web:8080:80', 0), '-p/--publish[0]', /IPv4 or IPv6/);
    refused(() => parsePublishFlag('8000-8010:80-90', 0), '-p/--publish[0]', /ranges/);
    refused(() => parsePublishFlag('1:2:3:4', 0), '-p/--publish[0]', /must be CONTAINER/);
  });
});

describe('networkFromFlags', () => {
  test('-p without --network implies the bridge, as docker\'s default network is', () => {
    assert.deepEqual(networkFromFlags({ publish: ['80'] }), { network: 'bridge', ports: [{ container: 80, protocol: 'tcp' }] });
  });
  test('no flags leave the spec\'s default', () => {
    assert.deepEqual(networkFromFlags({}), {});
  });
  test('--network NAME joins the named network on the bridge, with the aliases', () => {
    assert.deepEqual(networkFromFlags({ network: 'backend', networkAlias: ['db', 'db.local'], publish: ['5432'] }), {
      network: 'bridge',
      networks: [{ name: 'backend', aliases: ['db', 'db.local'] }],
      ports: [{ container: 5432, protocol: 'tcp' }],
    });
  });
  test('--network default is the bridge', () => {
    assert.deepEqual(networkFromFlags({ network: 'default' }), { network: 'bridge' });
  });
  test('-p with --network host or none is refused, naming the mode', () => {
    refused(() => networkFromFlags({ network: 'host', publish: ['80'] }), '-p/--publish', /--network is host/);
    refused(() => networkFromFlags({ network: 'none', publish: ['80'] }), '-p/--publish', /--network is none/);
  });
  test('--network-alias needs a named network', () => {
    refused(() => networkFromFlags({ networkAlias: ['a'] }), '--network-alias', /named network/);
    refused(() => networkFromFlags({ network: 'bridge', networkAlias: ['a'] }), '--network-alias', /named network/);
  });
  test('what the flags make is a spec the schema accepts', () => {
    const resolved = resolveTaskSpec({ image: 'busybox', ...networkFromFlags({ network: 'backend', networkAlias: ['api'], publish: ['127.0.0.1::8080', '53/udp'] }) });
    assert.deepEqual(resolved.ports, [{ container: 8080, hostIp: '127.0.0.1', protocol: 'tcp' }, { container: 53, protocol: 'udp' }]);
    assert.deepEqual(resolved.networks, [{ name: 'backend', aliases: ['api'] }]);
  });
  test('spec fields of ports and networks are named by their flags', () => {
    assert.equal(flagForSpecField('ports[1].host'), '-p/--publish');
    assert.equal(flagForSpecField('spec.ports'), '-p/--publish');
    assert.equal(flagForSpecField('networks[0].name'), '--network');
    assert.equal(flagForSpecField('networks[0].aliases[1]'), '--network-alias');
  });
});

describe('published ports as docker ps writes them', () => {
  test('hostIp:host->container/protocol, IPv6 in brackets', () => {
    assert.equal(formatPublishedPort({ container: 80, protocol: 'tcp', hostIp: '127.0.0.1', host: 20001 }), '127.0.0.1:20001->80/tcp');
    assert.equal(formatPublishedPort({ container: 53, protocol: 'udp', hostIp: '::1', host: 20002 }), '[::1]:20002->53/udp');
  });
  test('a task shows its ports while it has not ended, none after', () => {
    const ports = [
      { container: 80, protocol: 'tcp', hostIp: '127.0.0.1', host: 20001 },
      { container: 53, protocol: 'udp', hostIp: '127.0.0.1', host: 20002 },
    ];
    assert.equal(formatTaskPorts({ state: 'running', ports }), '127.0.0.1:20001->80/tcp, 127.0.0.1:20002->53/udp');
    assert.equal(formatTaskPorts({ state: 'exited', ports }), '');
    assert.equal(formatTaskPorts({ state: 'running' }), '');
  });
});
