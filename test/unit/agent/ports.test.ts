import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError, ValidationError } from '../../../src/common/errors.js';
import { hostPortInUse, parseProcNet, PortAllocator, type HostPortProbe } from '../../../src/agent/ports.js';
import { openStore, type Store } from '../../../src/state/index.js';
import { toTaskView } from '../../../src/agent/http/views.js';
import { openTestStore } from '../../support/store.js';

const RANGE = { from: 20000, to: 20009 };
const nothingListens: HostPortProbe = () => false;

function allocatorOn(store: Store, options: { isHostPortInUse?: HostPortProbe; random?: (n: number) => number; range?: { from: number; to: number } } = {}): PortAllocator {
  return new PortAllocator(store.ports, { range: options.range ?? RANGE, hostIp: '127.0.0.1', isHostPortInUse: options.isHostPortInUse ?? nothingListens, ...(options.random ? { random: options.random } : {}) });
}

function unavailable(fn: () => unknown, field: RegExp): BerthError {
  let caught: BerthError | undefined;
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof BerthError);
    assert.equal(error.code, 'BERTH_PORT_UNAVAILABLE');
    assert.match(error.message, field);
    caught = error;
    return true;
  });
  return caught!;
}

describe('PortAllocator', () => {
  test('fills in dynamic ports from the range and the configured address, static ones as asked', () => {
    using store = openTestStore();
    const ports = allocatorOn(store).allocate('t1', [{ container: 80, protocol: 'tcp' }, { container: 53, protocol: 'udp', host: 5353 }], 'ports', { ownerKind: 'task' });
    assert.equal(ports.length, 2);
    assert.ok(ports[0]!.host! >= RANGE.from && ports[0]!.host! <= RANGE.to);
    assert.deepEqual(ports[1], { container: 53, protocol: 'udp', host: 5353, hostIp: '127.0.0.1' });
    assert.equal(ports[0]!.hostIp, '127.0.0.1');
  });

  test('never hands out a port twice: the range runs out rather than repeat one', () => {
    using store = openTestStore();
    const allocator = allocatorOn(store);
    const seen = new Set<number>();
    for (let i = 0; i < 10; i++) seen.add(allocator.allocate(`t${i}`, [{ container: 80, protocol: 'tcp' }], 'ports')[0]!.host!);
    assert.equal(seen.size, 10);
    const error = unavailable(() => allocator.allocate('t10', [{ container: 80, protocol: 'tcp' }], 'ports'), /^ports\[0\]\.host: no tcp port is free in the dynamic range 20000-20009/);
    assert.equal(error.context.field, 'ports[0].host');
    // The same port number of the other protocol is another port.
    assert.ok(allocator.allocate('u1', [{ container: 53, protocol: 'udp' }], 'ports')[0]!.host! >= RANGE.from);
  });

  test('is idempotent: an owner that holds ports gets the same ones back', () => {
    using store = openTestStore();
    const allocator = allocatorOn(store);
    const first = allocator.allocate('t1', [{ container: 80, protocol: 'tcp' }, { container: 81, protocol: 'tcp' }], 'ports');
    assert.deepEqual(allocator.allocate('t1', [{ container: 80, protocol: 'tcp' }, { container: 81, protocol: 'tcp' }], 'ports'), first);
    assert.deepEqual(allocator.held('t1'), first);
    assert.equal(store.ports.all().length, 2);
  });

  test('refuses a static port another owner holds, naming the field and the holder, and takes none of the rest', () => {
    using store = openTestStore();
    const allocator = allocatorOn(store);
    allocator.allocate('holder', [{ container: 80, protocol: 'tcp', host: 8080 }], 'ports', { ownerKind: 'task' });
    const error = unavailable(
      () => allocator.allocate('late', [{ container: 81, protocol: 'tcp' }, { container: 80, protocol: 'tcp', host: 8080 }], 'network.ports'),
      /^network\.ports\[1\]\.host: host port 8080\/tcp is held by task holder/,
    );
    assert.equal(error.context.port, 8080);
    assert.deepEqual(allocator.held('late'), []);
    assert.equal(store.ports.all().length, 1);
  });

  test('refuses a static port something else on the host listens on', () => {
    using store = openTestStore();
    const allocator = allocatorOn(store, { isHostPortInUse: (port) => port === 9000 });
    unavailable(() => allocator.allocate('t', [{ container: 80, protocol: 'tcp', host: 9000 }], 'ports'), /ports\[0\]\.host: something else on the host listens on tcp port 9000/);
  });

  test('skips dynamic candidates something else listens on', () => {
    using store = openTestStore();
    // Every port but the last of the range is taken by another program; the random pick starts at the first.
    const allocator = allocatorOn(store, { isHostPortInUse: (port) => port !== RANGE.to, random: () => 0 });
    assert.equal(allocator.allocate('t', [{ container: 80, protocol: 'tcp' }], 'ports')[0]!.host, RANGE.to);
  });

  test('a dynamic pick never takes a static port of the same allocation', () => {
    using store = openTestStore();
    const allocator = allocatorOn(store, { random: () => 0 });
    const ports = allocator.allocate('t', [{ container: 80, protocol: 'tcp' }, { container: 81, protocol: 'tcp', host: RANGE.from }], 'ports');
    assert.deepEqual(ports.map((p) => p.host), [RANGE.from + 1, RANGE.from]);
  });

  test('release frees the ports for others; it returns how many', () => {
    using store = openTestStore();
    const allocator = allocatorOn(store);
    allocator.allocate('a', [{ container: 80, protocol: 'tcp', host: 8080 }, { container: 81, protocol: 'tcp' }], 'ports');
    assert.equal(allocator.release('a'), 2);
    assert.equal(allocator.release('a'), 0);
    assert.equal(allocator.allocate('b', [{ container: 80, protocol: 'tcp', host: 8080 }], 'ports')[0]!.host, 8080);
  });

  test('sweep frees only owners of its kind that are no longer needed', () => {
    using store = openTestStore();
    const allocator = allocatorOn(store);
    allocator.allocate('live', [{ container: 80, protocol: 'tcp' }], 'ports', { ownerKind: 'task' });
    allocator.allocate('gone', [{ container: 80, protocol: 'tcp' }], 'ports', { ownerKind: 'task' });
    allocator.allocate('group-1', [{ container: 80, protocol: 'tcp' }], 'network.ports');
    assert.deepEqual(allocator.sweep('task', (owner) => owner === 'live'), ['gone']);
    assert.deepEqual(store.ports.all().map((h) => h.owner).sort(), ['group-1', 'live']);
  });

  test('a port\'s own address must be loopback or the configured one: only the operator publishes beyond the host', () => {
    using store = openTestStore();
    const allocator = allocatorOn(store);
    assert.throws(() => allocator.allocate('t', [{ container: 80, protocol: 'tcp', hostIp: '0.0.0.0' }], 'ports'), (error: unknown) => {
      assert.ok(error instanceof ValidationError);
      assert.equal(error.issues[0]!.field, 'ports[0].hostIp');
      return true;
    });
    assert.equal(allocator.allocate('t', [{ container: 80, protocol: 'tcp', hostIp: '127.0.0.2' }], 'ports')[0]!.hostIp, '127.0.0.2');
    const open = new PortAllocator(store.ports, { range: RANGE, hostIp: '0.0.0.0', isHostPortInUse: nothingListens });
    assert.equal(open.allocate('u', [{ container: 80, protocol: 'tcp' }], 'ports')[0]!.hostIp, '0.0.0.0');
  });

  test('holds survive a reopen of the store: the table is the truth', () => {
    const file = `/tmp/berth-ports-${process.pid}-${Date.now()}.db`;
    const first = openStore(file);
    const taken = allocatorOn(first).allocate('t', [{ container: 80, protocol: 'tcp' }], 'ports')[0]!.host!;
    first.close();
    using second = openStore(file);
    const allocator = allocatorOn(second, { range: { from: taken, to: taken + 9 }, random: () => 0 });
    assert.notEqual(allocator.allocate('u', [{ container: 80, protocol: 'tcp' }], 'ports')[0]!.host, taken);
    assert.deepEqual(allocator.held('t').map((p) => p.host), [taken]);
  });

  test('refuses a bad range or address', () => {
    using store = openTestStore();
    assert.throws(() => new PortAllocator(store.ports, { range: { from: 3000, to: 2000 }, hostIp: '127.0.0.1' }), ValidationError);
    assert.throws(() => new PortAllocator(store.ports, { range: RANGE, hostIp: 'localhost' }), ValidationError);
  });
});

describe('the host\'s listeners (/proc/net)', () => {
  const TCP = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0',
    '   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0',
    '   2: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0',
  ].join('\n');

  test('lists listening sockets with their address and port, not connected ones', () => {
    assert.deepEqual(parseProcNet(TCP, 'tcp'), [
      { protocol: 'tcp', address: '127.0.0.1', port: 8080 },
      { protocol: 'tcp', address: '0.0.0.0', port: 22 },
    ]);
  });

  test('decodes IPv6 addresses', () => {
    const tcp6 = '  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 0';
    assert.deepEqual(parseProcNet(tcp6, 'tcp'), [{ protocol: 'tcp', address: '0:0:0:0:0:0:0:1', port: 8081 }]);
  });

  test('a listener conflicts on its address or the wildcard, per protocol', () => {
    const listeners = parseProcNet(TCP, 'tcp');
    assert.equal(hostPortInUse(8080, 'tcp', '127.0.0.1', listeners), true);
    assert.equal(hostPortInUse(8080, 'tcp', '127.0.0.2', listeners), false);
    assert.equal(hostPortInUse(8080, 'tcp', '0.0.0.0', listeners), true);
    assert.equal(hostPortInUse(22, 'tcp', '127.0.0.1', listeners), true);
    assert.equal(hostPortInUse(8080, 'udp', '127.0.0.1', listeners), false);
    assert.equal(hostPortInUse(40000, 'tcp', '127.0.0.1', listeners), false);
  });
});

describe('the task view\'s ports and networks', () => {
  test('shows the ports the agent filled in, and the networks with their aliases', () => {
    using store = openTestStore();
    const { task } = store.tasks.insert({
      id: 'web',
      spec: { image: 'busybox', network: 'bridge', ports: [{ container: 80, protocol: 'tcp', host: 20001, hostIp: '127.0.0.1' }], networks: [{ name: 'backend', aliases: ['web'] }] },
    });
    const view = toTaskView(task);
    assert.deepEqual(view.ports, [{ container: 80, protocol: 'tcp', hostIp: '127.0.0.1', host: 20001 }]);
    assert.deepEqual(view.networks, [{ name: 'backend', aliases: ['web'] }]);
  });

  test('a task without ports or networks has neither field', () => {
    using store = openTestStore();
    const view = toTaskView(store.tasks.insert({ id: 'plain', spec: { image: 'busybox' } }).task);
    assert.equal('ports' in view, false);
    assert.equal('networks' in view, false);
  });
});
