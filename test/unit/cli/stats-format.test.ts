import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { StatsSample } from '../../../src/engine/types.js';
import {
  binarySize,
  cpuPercent,
  formatGoG,
  formatPercent,
  formatStatsLine,
  humanSize,
  memoryPercent,
  redrawFrame,
  renderStatsTable,
  STATS_HEADERS,
  statsCells,
  statsLineWidths,
  statsRecord,
} from '../../../src/cli/stats-format.js';

const MiB = 1024 * 1024;

function sample(overrides: Partial<StatsSample> = {}): StatsSample {
  return {
    at: new Date('2026-01-01T12:00:01.000Z'),
    previousAt: new Date('2026-01-01T12:00:00.000Z'),
    memoryBytes: 16 * MiB,
    memoryLimitBytes: 64 * MiB,
    cpuMilli: 500,
    pids: 3,
    networkRxBytes: 1234,
    networkTxBytes: 0,
    blockReadBytes: 5_242_880,
    blockWriteBytes: 4096,
    cpuDeltaNanos: 500_000_000,
    systemCpuDeltaNanos: 2_000_000_000,
    onlineCpus: 2,
    ...overrides,
  };
}

describe('cpuPercent', () => {
  test('is the container\'s share of the host\'s CPU time times the CPUs online, as docker computes it', () => {
    // Half a core on a two-CPU host: 0.5 s of the 2 s the host spent in one second.
    assert.equal(cpuPercent({ cpuDeltaNanos: 500_000_000, systemCpuDeltaNanos: 2_000_000_000, onlineCpus: 2 }), 50);
    // Two full cores on a four-CPU host is 200%.
    assert.equal(cpuPercent({ cpuDeltaNanos: 2_000_000_000, systemCpuDeltaNanos: 4_000_000_000, onlineCpus: 4 }), 200);
  });

  test('is 0 when either delta is not positive', () => {
    assert.equal(cpuPercent({ cpuDeltaNanos: 0, systemCpuDeltaNanos: 2_000_000_000, onlineCpus: 2 }), 0);
    assert.equal(cpuPercent({ cpuDeltaNanos: 10, systemCpuDeltaNanos: 0, onlineCpus: 2 }), 0);
    assert.equal(cpuPercent({ cpuDeltaNanos: -5, systemCpuDeltaNanos: 100, onlineCpus: 2 }), 0);
  });
});

describe('memoryPercent', () => {
  test('is usage over the limit', () => {
    assert.equal(memoryPercent({ memoryBytes: 16 * MiB, memoryLimitBytes: 64 * MiB }), 25);
  });

  test('is 0 without a limit', () => {
    assert.equal(memoryPercent({ memoryBytes: 16 * MiB, memoryLimitBytes: 0 }), 0);
  });
});

describe('formatGoG (Go\'s %g, as go-units prints sizes)', () => {
  test('drops trailing zeros and switches to an exponent at the precision, as Go does', () => {
    assert.equal(formatGoG(1.5, 3), '1.5');
    assert.equal(formatGoG(123.456, 3), '123');
    assert.equal(formatGoG(12.34, 3), '12.3');
    assert.equal(formatGoG(64, 4), '64');
    assert.equal(formatGoG(1.953125, 4), '1.953');
    assert.equal(formatGoG(0, 3), '0');
    assert.equal(formatGoG(1000, 3), '1e+03');
    assert.equal(formatGoG(999.6, 3), '1e+03');
    assert.equal(formatGoG(0.0001234, 3), '0.000123');
    assert.equal(formatGoG(0.00001234, 3), '1.23e-05');
  });

  test('rounds exact ties half to even, as Go does (JavaScript\'s toPrecision rounds them up)', () => {
    assert.equal(formatGoG(1.125, 3), '1.12');
    assert.equal(formatGoG(1.375, 3), '1.38');
    assert.equal(formatGoG(1.625, 3), '1.62');
    // Not a tie: 1.005 is stored as a little less than 1.005.
    assert.equal(formatGoG(1.005, 3), '1');
    assert.equal(formatGoG(9.995, 3), '9.99');
  });
});

describe('formatPercent (Go\'s %.2f)', () => {
  test('prints two decimals and a percent sign', () => {
    assert.equal(formatPercent(0), '0.00%');
    assert.equal(formatPercent(100), '100.00%');
    assert.equal(formatPercent(0.76904296875), '0.77%');
    assert.equal(formatPercent(51.283), '51.28%');
  });

  test('rounds exact ties half to even', () => {
    assert.equal(formatPercent(0.125), '0.12%');
    assert.equal(formatPercent(0.375), '0.38%');
  });
});

describe('sizes as docker stats prints them', () => {
  test('humanSize: decimal units, three significant digits, no space (NET I/O, BLOCK I/O)', () => {
    assert.equal(humanSize(0), '0B');
    assert.equal(humanSize(736), '736B');
    assert.equal(humanSize(1234), '1.23kB');
    assert.equal(humanSize(1125), '1.12kB');
    assert.equal(humanSize(1_000_000), '1MB');
    assert.equal(humanSize(5_242_880), '5.24MB');
    // go-units' own quirk, kept so that berth and docker print the same.
    assert.equal(humanSize(999_999), '1e+03kB');
  });

  test('binarySize: binary units, four significant digits (MEM USAGE / LIMIT)', () => {
    assert.equal(binarySize(0), '0B');
    assert.equal(binarySize(1023), '1023B');
    assert.equal(binarySize(516_096), '504KiB');
    assert.equal(binarySize(64 * MiB), '64MiB');
    assert.equal(binarySize(2_048_000), '1.953MiB');
    assert.equal(binarySize(25_276_063_744), '23.54GiB');
  });
});

describe('the table', () => {
  test('a row has docker stats\' columns for a sample', () => {
    assert.deepEqual(statsCells('t1', sample()), ['t1', '50.00%', '16MiB / 64MiB', '25.00%', '1.23kB / 0B', '5.24MB / 4.1kB', '3']);
  });

  test('a task without a sample yet shows -- in every column but its id', () => {
    assert.deepEqual(statsCells('t2', undefined), ['t2', '--', '--', '--', '--', '--', '--']);
  });

  test('renders the tasks in the order given under docker\'s headers', () => {
    const table = renderStatsTable([
      { taskId: 'first', sample: sample() },
      { taskId: 'second', sample: undefined },
    ]);
    assert.equal(
      table,
      [
        'TASK ID   CPU %    MEM USAGE / LIMIT   MEM %    NET I/O       BLOCK I/O        PIDS',
        'first     50.00%   16MiB / 64MiB       25.00%   1.23kB / 0B   5.24MB / 4.1kB   3',
        'second    --       --                  --       --            --               --',
      ].join('\n') + '\n',
    );
  });

  test('a redraw goes home, erases the end of every line and everything below', () => {
    assert.equal(redrawFrame('A   B\nx   y\n'), '\x1b[HA   B\x1b[K\nx   y\x1b[K\n\x1b[J');
  });
});

describe('lines for a stream', () => {
  test('the header and every line share the widths fixed at the start', () => {
    const widths = statsLineWidths(['a-rather-long-task-id', 'b']);
    const header = formatStatsLine(STATS_HEADERS, widths);
    const line = formatStatsLine(statsCells('b', sample()), widths);
    assert.equal(header.indexOf('CPU %'), line.indexOf('50.00%'));
    assert.equal(header.indexOf('PIDS'), line.lastIndexOf('3'));
    assert.ok(header.indexOf('CPU %') > 'a-rather-long-task-id'.length);
    assert.ok(line.endsWith('3\n') && header.endsWith('PIDS\n'));
  });

  test('a cell wider than its column pushes the rest right rather than being cut', () => {
    const widths = statsLineWidths(['t']);
    const line = formatStatsLine(['t', '1234.56%', 'x', 'y', 'z', 'w', '9'], widths);
    assert.match(line, /1234\.56% +x/);
  });
});

describe('statsRecord (--json)', () => {
  test('carries raw numbers and the unrounded percentages', () => {
    assert.deepEqual(statsRecord('t1', 'c0ffee', sample()), {
      taskId: 't1',
      containerId: 'c0ffee',
      at: '2026-01-01T12:00:01.000Z',
      previousAt: '2026-01-01T12:00:00.000Z',
      cpuPercent: 50,
      onlineCpus: 2,
      memoryBytes: 16 * MiB,
      memoryLimitBytes: 64 * MiB,
      memoryPercent: 25,
      pids: 3,
      networkRxBytes: 1234,
      networkTxBytes: 0,
      blockReadBytes: 5_242_880,
      blockWriteBytes: 4096,
    });
  });

  test('previousAt is null on the first sample of a stream', () => {
    const first = sample();
    delete first.previousAt;
    assert.equal(statsRecord('t1', 'c0ffee', first).previousAt, null);
  });
});
