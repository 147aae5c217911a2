import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isBerthError, ValidationError } from '../../../src/common/errors.js';
import { engineLabelFilters, formatPruneFilters, matchesPruneFilters, parsePruneFilters, parseUntil } from '../../../src/prune/filters.js';

const NOW = Date.UTC(2024, 4, 2, 12, 0, 0);

function rules(fn: () => unknown): string[] {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ValidationError);
    return error.issues.map((i) => `${i.field}: ${i.rule}`);
  }
  assert.fail('expected a ValidationError');
}

describe('parseUntil', () => {
  it('reads a duration back from now', () => {
    assert.equal(parseUntil('24h', NOW), NOW - 86_400_000);
    assert.equal(parseUntil('1h30m', NOW), NOW - 5_400_000);
    assert.equal(parseUntil('10m', NOW), NOW - 600_000);
    assert.equal(parseUntil('1.5s', NOW), NOW - 1500);
  });

  it('reads an RFC 3339 time, with a fraction and an offset', () => {
    assert.equal(parseUntil('2024-05-01T12:00:00Z', NOW), Date.UTC(2024, 4, 1, 12));
    assert.equal(parseUntil('2024-05-01T12:00:00.250Z', NOW), Date.UTC(2024, 4, 1, 12) + 250);
    assert.equal(parseUntil('2024-05-01T14:00:00+02:00', NOW), Date.UTC(2024, 4, 1, 12));
    assert.ok(Math.abs(parseUntil('2024-05-01T12:00:00.123456789Z', NOW)! - (Date.UTC(2024, 4, 1, 12) + 123.456789)) < 1e-3);
  });

  it('reads a Unix timestamp in seconds, with an optional fraction', () => {
    assert.equal(parseUntil('1714564800', NOW), 1_714_564_800_000);
    assert.equal(parseUntil('1714564800.5', NOW), 1_714_564_800_500);
    assert.ok(Math.abs(parseUntil('1714564800.000000001', NOW)! - 1_714_564_800_000) < 1e-3);
  });

  it('takes a bare number as a timestamp, never as a duration', () => {
    assert.equal(parseUntil('60', NOW), 60_000);
  });

  it('refuses what is none of the three', () => {
    for (const bad of ['', 'yesterday', '24x', '2024-05-01', '2024-05-01T12:00:00', '2024-02-30T00:00:00Z', '2024-05-01T25:00:00Z', '-1h', '1h garbage']) {
      assert.equal(parseUntil(bad, NOW), undefined, bad);
    }
  });
});

describe('parsePruneFilters', () => {
  it('parses every form the CLI writes', () => {
    const filters = parsePruneFilters(['label=team', 'label=env=prod', 'label!=keep', 'label!=tier=db', 'until=24h'], NOW);
    assert.deepEqual(filters.labels, [{ key: 'team' }, { key: 'env', value: 'prod' }]);
    assert.deepEqual(filters.notLabels, [{ key: 'keep' }, { key: 'tier', value: 'db' }]);
    assert.equal(filters.untilMs, NOW - 86_400_000);
  });

  it('keeps "=" inside a label value', () => {
    assert.deepEqual(parsePruneFilters(['label=k=a=b'], NOW).labels, [{ key: 'k', value: 'a=b' }]);
  });

  it('parses the engine API map, in its current and older forms', () => {
    const current = parsePruneFilters({ label: ['env=prod'], 'label!': ['keep'], until: ['1714564800'] }, NOW);
    assert.deepEqual(current.labels, [{ key: 'env', value: 'prod' }]);
    assert.deepEqual(current.notLabels, [{ key: 'keep' }]);
    assert.equal(current.untilMs, 1_714_564_800_000);
    const older = parsePruneFilters({ label: { 'env=prod': true, off: false } }, NOW);
    assert.deepEqual(older.labels, [{ key: 'env', value: 'prod' }]);
  });

  it('treats no filters as matching everything', () => {
    const none = parsePruneFilters(undefined, NOW);
    assert.equal(matchesPruneFilters(none, { labels: {}, createdAtMs: undefined }), true);
    assert.equal(matchesPruneFilters(parsePruneFilters([], NOW), { labels: {}, createdAtMs: NOW }), true);
  });

  it('refuses an unknown filter, listing the accepted ones', () => {
    assert.throws(
      () => parsePruneFilters(['dangling=true'], NOW),
      (error: unknown) => {
        assert.ok(isBerthError(error, 'BERTH_VALIDATION'));
        assert.match(error.message, /unknown filter "dangling"; accepted filters: label, label!, until/);
        return true;
      },
    );
    assert.match(rules(() => parsePruneFilters({ before: ['x'] }, NOW)).join(), /unknown filter "before"/);
  });

  it('names every bad filter at once', () => {
    const issues = rules(() => parsePruneFilters(['label=', 'until=soon', 'noequals', 'label!==v'], NOW));
    assert.equal(issues.length, 4);
    for (const expected of [/^filters\.label: "" has no label key/, /^filters\.until: "soon" is not a time/, /^filters\[2\]: "noequals" is not a filter/, /^filters\.label!: "=v" has no label key/]) {
      assert.ok(issues.some((issue) => expected.test(issue)), `${expected} in ${issues.join(' | ')}`);
    }
  });

  it('refuses more than one until, as the engine does', () => {
    assert.match(rules(() => parsePruneFilters(['until=1h', 'until=2h'], NOW)).join(), /more than one until filter/);
  });

  it('refuses input that is neither a list nor a map', () => {
    assert.throws(() => parsePruneFilters('label=a' as never, NOW), ValidationError);
    assert.throws(() => parsePruneFilters([42] as never, NOW), /filters\[0\]: must be a string/);
  });
});

describe('matchesPruneFilters', () => {
  const subject = (labels: Record<string, string>, createdAtMs: number | undefined = NOW - 1000) => ({ labels, createdAtMs });

  it('label=k needs the key, label=k=v the value too; all must hold', () => {
    const filters = parsePruneFilters(['label=a', 'label=b=2'], NOW);
    assert.equal(matchesPruneFilters(filters, subject({ a: 'x', b: '2' })), true);
    assert.equal(matchesPruneFilters(filters, subject({ a: '', b: '2' })), true);
    assert.equal(matchesPruneFilters(filters, subject({ a: 'x', b: '3' })), false);
    assert.equal(matchesPruneFilters(filters, subject({ b: '2' })), false);
  });

  it('label!=k excludes objects with the key, label!=k=v only those with that value; each must hold', () => {
    const filters = parsePruneFilters(['label!=keep', 'label!=tier=db'], NOW);
    assert.equal(matchesPruneFilters(filters, subject({})), true);
    assert.equal(matchesPruneFilters(filters, subject({ tier: 'web' })), true);
    assert.equal(matchesPruneFilters(filters, subject({ tier: 'db' })), false);
    assert.equal(matchesPruneFilters(filters, subject({ keep: '' })), false);
  });

  it('until keeps what was created at or after the cut-off, and what has no creation time', () => {
    const filters = parsePruneFilters(['until=1h'], NOW);
    assert.equal(matchesPruneFilters(filters, subject({}, NOW - 3_600_001)), true);
    assert.equal(matchesPruneFilters(filters, subject({}, NOW - 3_600_000)), false);
    assert.equal(matchesPruneFilters(filters, subject({}, NOW)), false);
    assert.equal(matchesPruneFilters(filters, subject({}, undefined)), false);
  });

  it('does not take inherited properties for labels', () => {
    assert.equal(matchesPruneFilters(parsePruneFilters(['label=toString'], NOW), subject({})), false);
  });
});

describe('engineLabelFilters and formatPruneFilters', () => {
  it('passes only the positive label filters to the engine, in its syntax', () => {
    const filters = parsePruneFilters(['label=a', 'label=b=2', 'label!=c', 'until=1714564800'], NOW);
    assert.deepEqual(engineLabelFilters(filters), ['a', 'b=2']);
    assert.deepEqual(formatPruneFilters(filters), ['label=a', 'label=b=2', 'label!=c', 'until=2024-05-01T12:00:00.000Z']);
  });
});

describe('the until filter\'s duration is bounded by the Unix epoch', () => {
  it('accepts a duration reaching back exactly to 1970, and refuses one a millisecond longer, naming the filter', () => {
    assert.equal(parsePruneFilters([`until=${NOW}ms`], NOW).untilMs, 0);
    assert.throws(
      () => parsePruneFilters([`until=${NOW + 1}ms`], NOW),
      (error: unknown) =>
        error instanceof ValidationError &&
        error.issues.length === 1 &&
        error.issues[0]!.field.endsWith('until') &&
        /reaches back before 1970-01-01/.test(error.issues[0]!.rule),
    );
  });
});
