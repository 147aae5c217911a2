import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatBytes, formatBytesForEngine, parseBytes, parseDurationMs } from '../../../src/common/units.js';

describe('parseDurationMs', () => {
  const valid: Array<[string | number, number]> = [
    ['30s', 30_000],
    ['250ms', 250],
    ['1.5s', 1500],
    ['2m', 120_000],
    ['1h30m', 5_400_000],
    ['1d', 86_400_000],
    ['1m30s500ms', 90_500],
    [' 10s ', 10_000],
    ['1500', 1500],
    ['0s', 0],
    [0, 0],
    [42, 42],
  ];
  for (const [input, expected] of valid) {
    it(`parses ${JSON.stringify(input)} as ${expected} ms`, () => {
      assert.equal(parseDurationMs(input), expected);
    });
  }

  for (const input of ['', '   ', 'abc', '-5s', '5x', '5 s', 's', '1h junk', '10sm', -1, Number.NaN, Number.POSITIVE_INFINITY]) {
    it(`rejects ${JSON.stringify(String(input))} with undefined`, () => {
      assert.equal(parseDurationMs(input), undefined);
    });
  }
});

describe('parseBytes', () => {
  const valid: Array<[string | number, number]> = [
    ['128m', 128 * 1024 ** 2],
    ['1g', 1024 ** 3],
    ['512k', 512 * 1024],
    ['1.5g', 1.5 * 1024 ** 3],
    ['64MiB', 64 * 1024 ** 2],
    ['64MB', 64 * 1024 ** 2],
    ['2 kb', 2048],
    ['100', 100],
    ['100b', 100],
    ['1t', 1024 ** 4],
    [4096, 4096],
    [0, 0],
  ];
  for (const [input, expected] of valid) {
    it(`parses ${JSON.stringify(input)} as ${expected} bytes`, () => {
      assert.equal(parseBytes(input), expected);
    });
  }

  for (const input of ['', 'lots', '12q', '-1m', 'm', 1.5, -1, Number.MAX_SAFE_INTEGER + 2, '99999999999t']) {
    it(`rejects ${JSON.stringify(String(input))} with undefined`, () => {
      assert.equal(parseBytes(input), undefined);
    });
  }
});

describe('formatBytesForEngine', () => {
  const cases: Array<[number, string]> = [
    [1024 ** 3, '1g'],
    [3 * 1024 ** 3, '3g'],
    [10 * 1024 ** 2, '10m'],
    [1536 * 1024 ** 2, '1536m'],
    [4096, '4k'],
    [1000, '1000'],
    [0, '0g'],
  ];
  for (const [bytes, expected] of cases) {
    it(`formats ${bytes} bytes as "${expected}"`, () => {
      assert.equal(formatBytesForEngine(bytes), expected);
    });
  }

  it('round-trips through parseBytes', () => {
    for (const bytes of [1, 1023, 1024, 5 * 1024 ** 2 + 1024, 7 * 1024 ** 3]) {
      assert.equal(parseBytes(formatBytesForEngine(bytes)), bytes);
    }
  });
});

describe('formatBytes', () => {
  it('prints sizes in binary units with at most one decimal', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(256 * 1024 * 1024), '256 MiB');
    assert.equal(formatBytes(2 * 1024 ** 3), '2 GiB');
    assert.equal(formatBytes(3 * 1024 ** 4), '3 TiB');
  });
});
