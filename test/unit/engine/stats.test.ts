import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { statsFromRaw } from '../../../src/engine/decode.js';

const READ = '2026-01-01T12:00:01.5Z';
const PREREAD = '2026-01-01T12:00:00.5Z';
const ZERO_TIME = '0001-01-01T00:00:00Z';

describe('statsFromRaw', () => {
  test('carries the cpu and system deltas, the CPUs online and the previous reading\'s time', () => {
    const sample = statsFromRaw({
      read: READ,
      preread: PREREAD,
      cpu_stats: { cpu_usage: { total_usage: 1_700_000_000 }, system_cpu_usage: 12_000_000_000, online_cpus: 2 },
      precpu_stats: { cpu_usage: { total_usage: 1_200_000_000 }, system_cpu_usage: 10_000_000_000 },
    });
    assert.equal(sample.cpuDeltaNanos, 500_000_000);
    assert.equal(sample.systemCpuDeltaNanos, 2_000_000_000);
    assert.equal(sample.onlineCpus, 2);
    assert.equal(sample.cpuMilli, 500);
    assert.deepEqual(sample.at, new Date(READ));
    assert.deepEqual(sample.previousAt, new Date(PREREAD));
  });

  test('the first sample of a stream has no previous reading', () => {
    const sample = statsFromRaw({ read: READ, preread: ZERO_TIME, cpu_stats: { cpu_usage: { total_usage: 5 }, system_cpu_usage: 100, online_cpus: 1 }, precpu_stats: {} });
    assert.equal(sample.previousAt, undefined);
    assert.equal('previousAt' in sample, false);
  });

  test('counts CPUs from the per-CPU usage when the engine does not say how many are online', () => {
    assert.equal(statsFromRaw({ read: READ, cpu_stats: { cpu_usage: { total_usage: 1, percpu_usage: [1, 0, 0, 0] } } }).onlineCpus, 4);
    assert.equal(statsFromRaw({ read: READ, cpu_stats: { cpu_usage: { total_usage: 1, percpu_usage: null } } }).onlineCpus, 1);
  });

  test('sums block reads and writes over every device, in cgroup v1 and v2 spellings, ignoring other operations', () => {
    const sample = statsFromRaw({
      read: READ,
      blkio_stats: {
        io_service_bytes_recursive: [
          { op: 'Read', value: 4096 },
          { op: 'Write', value: 100 },
          { op: 'Sync', value: 7 },
          { op: 'Total', value: 4196 },
          { op: 'read', value: 1000 },
          { op: 'write', value: 20 },
        ],
      },
    });
    assert.equal(sample.blockReadBytes, 5096);
    assert.equal(sample.blockWriteBytes, 120);
  });

  test('block I/O is 0 when the engine reports none (null on cgroup v2 without io accounting)', () => {
    const sample = statsFromRaw({ read: READ, blkio_stats: { io_service_bytes_recursive: null } });
    assert.equal(sample.blockReadBytes, 0);
    assert.equal(sample.blockWriteBytes, 0);
  });

  test('memory is the working set as docker computes it: usage less the inactive page cache', () => {
    // cgroup v1: total_inactive_file counts the container's whole hierarchy.
    const v1 = statsFromRaw({ read: READ, memory_stats: { usage: 10_000, limit: 64_000, stats: { total_inactive_file: 3000, inactive_file: 1000 } } });
    assert.equal(v1.memoryBytes, 7000);
    assert.equal(v1.memoryLimitBytes, 64_000);
    // cgroup v2: inactive_file.
    assert.equal(statsFromRaw({ read: READ, memory_stats: { usage: 10_000, stats: { inactive_file: 4000 } } }).memoryBytes, 6000);
    // A page cache figure above usage is not subtracted.
    assert.equal(statsFromRaw({ read: READ, memory_stats: { usage: 10_000, stats: { total_inactive_file: 20_000 } } }).memoryBytes, 10_000);
  });

  test('sums network bytes over every interface', () => {
    const sample = statsFromRaw({ read: READ, networks: { eth0: { rx_bytes: 100, tx_bytes: 10 }, eth1: { rx_bytes: 5, tx_bytes: 1 } } });
    assert.equal(sample.networkRxBytes, 105);
    assert.equal(sample.networkTxBytes, 11);
  });
});
