import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { eventMatches, parseEventFilters } from '../../../src/cli/events.js';
import { parseEnvFiles, parseVolumeFlag, pullFlag } from '../../../src/cli/flags.js';
import { parseLogTime, parseTail } from '../../../src/cli/log-times.js';
import { specFromRunFlags } from '../../../src/cli/run.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';

function assertUsage(fn: () => unknown, field: string, rule: RegExp): void {
  assert.throws(fn, (error: unknown) => error instanceof ValidationError && error.issues[0]!.field === field && rule.test(error.issues[0]!.rule));
}

const BASE = { env: [], label: [], mount: [], capAdd: [], capDrop: [] };
const IO = { env: { HOME_DIR: '/home/me' }, stdin: new PassThrough() };

describe('run: docker\'s -v/--volume, --env-file, --pull and --rm', () => {
  test('-v gives the mounts --mount gives: a bind for a host path, a named volume for a name, an anonymous volume for a path alone', () => {
    assert.deepEqual(parseVolumeFlag('/srv/data:/data', 0), { type: 'bind', source: '/srv/data', target: '/data', readOnly: false, propagation: 'private' });
    assert.deepEqual(parseVolumeFlag('/srv/data:/data:ro,rslave', 0), { type: 'bind', source: '/srv/data', target: '/data', readOnly: true, propagation: 'host-to-task' });
    assert.deepEqual(parseVolumeFlag('/srv:/srv:rw,rshared', 0), { type: 'bind', source: '/srv', target: '/srv', readOnly: false, propagation: 'bidirectional' });
    assert.deepEqual(parseVolumeFlag('cache:/cache:ro', 1), { type: 'volume', source: 'cache', target: '/cache', readOnly: true });
    assert.deepEqual(parseVolumeFlag('/scratch', 2), { type: 'volume', target: '/scratch', readOnly: false });
  });

  test('a bad -v names the flag and its index', () => {
    assertUsage(() => parseVolumeFlag('./rel:/data', 0), '-v/--volume[0]', /neither an absolute host path nor a volume name/);
    assertUsage(() => parseVolumeFlag('/a:rel', 1), '-v/--volume[1]', /"rel" must be an absolute container path/);
    assertUsage(() => parseVolumeFlag('cache:/c:rslave', 0), '-v/--volume[0]', /propagation "rslave" applies to a bind mount/);
    assertUsage(() => parseVolumeFlag('/a:/b:ro,rw', 0), '-v/--volume[0]', /both ro and rw/);
    assertUsage(() => parseVolumeFlag('/a:/b:z', 0), '-v/--volume[0]', /unknown option "z"/);
    assertUsage(() => parseVolumeFlag('/a:/b:ro:x', 0), '-v/--volume[0]', /is not/);
    assertUsage(() => parseVolumeFlag('data', 0), '-v/--volume[0]', /absolute container path/);
  });

  test('-v mounts follow --mount\'s in the spec', () => {
    const spec = specFromRunFlags('busybox', [], { ...BASE, mount: ['type=tmpfs,target=/t'], volume: ['/srv:/srv:ro'] }, IO);
    assert.deepEqual(spec.mounts?.map((m) => m.target), ['/t', '/srv']);
  });

  test('--env-file reads KEY=VALUE lines, skips comments and blank lines, passes KEY alone from berth\'s environment; -e overrides', () => {
    const files: Record<string, string> = { '/a.env': '# a comment\n\nA=1\n  B=two words \nQUOTED="kept"\nHOME_DIR\nUNSET\nEMPTY=\r\n', '/b.env': 'A=from-b\n' };
    const env = parseEnvFiles(['/a.env', '/b.env'], { HOME_DIR: '/home/me' }, (path) => files[path]!);
    assert.deepEqual(env, { A: 'from-b', B: 'two words ', QUOTED: '"kept"', HOME_DIR: '/home/me', EMPTY: '' });
    const dir = mkdtempSync(path.join(tmpdir(), 'berth-env-'));
    try {
      writeFileSync(path.join(dir, 'x.env'), 'A=file\nB=file\n');
      const spec = specFromRunFlags('busybox', [], { ...BASE, env: ['B=flag'], envFile: [path.join(dir, 'x.env')] }, IO);
      assert.deepEqual(spec.env, { A: 'file', B: 'flag' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a bad --env-file line names the file and the line; an unreadable file names the file', () => {
    assertUsage(() => parseEnvFiles(['/x.env'], {}, () => 'OK=1\nBAD KEY=2\n'), '--env-file', /^\/x\.env:2: variable name "BAD KEY" contains whitespace/);
    assertUsage(() => parseEnvFiles(['/x.env'], {}, () => '\n\n=value\n'), '--env-file', /^\/x\.env:3: .* has no variable name/);
    assertUsage(() => parseEnvFiles(['/nonexistent/berth.env'], {}), '--env-file', /cannot read \/nonexistent\/berth\.env \(ENOENT\)/);
  });

  test('--pull takes docker\'s words and refuses anything else naming them', () => {
    assert.equal(pullFlag('missing'), 'if-not-present');
    assert.equal(pullFlag('always'), 'always');
    assert.equal(pullFlag('never'), 'never');
    assertUsage(() => pullFlag('if-not-present'), '--pull', /use missing \(the default\), always or never/);
  });

  test('--rm is accepted (the default) and refused with --keep', () => {
    assert.equal(specFromRunFlags('busybox', [], { ...BASE, rm: true }, IO).image, 'busybox');
    assertUsage(() => specFromRunFlags('busybox', [], { ...BASE, rm: true, keep: true }, IO), '--rm', /cannot be combined with --keep/);
  });
});

describe('logs: --since/--until in docker\'s forms, --tail', () => {
  const NOW = Date.UTC(2024, 4, 1, 10, 0, 0);
  test('an RFC 3339 time is passed as written; Unix seconds and a duration before now become UTC times', () => {
    assert.equal(parseLogTime('2024-05-01T09:00:00.123456789Z', '--since', NOW), '2024-05-01T09:00:00.123456789Z');
    assert.equal(parseLogTime('2024-05-01T11:00:00+02:00', '--since', NOW), '2024-05-01T11:00:00+02:00');
    assert.equal(parseLogTime('1714557600', '--since', NOW), '2024-05-01T10:00:00.000000000Z');
    assert.equal(parseLogTime('1714557600.25', '--until', NOW), '2024-05-01T10:00:00.250000000Z');
    assert.equal(parseLogTime('10s', '--since', NOW), '2024-05-01T09:59:50.000Z');
    assert.equal(parseLogTime('1h30m', '--since', NOW), '2024-05-01T08:30:00.000Z');
  });

  test('anything else is a usage error naming the flag and the forms, never a pattern', () => {
    for (const bad of ['yesterday', '10x', '2024-05-01', '-5m', '']) {
      assertUsage(() => parseLogTime(bad, '--since', NOW), '--since', /is not a time: use an RFC 3339 timestamp \(2024-05-01T10:00:00Z\), Unix seconds \(1714557600\) or a duration before now \(10s, 10m, 1h30m\)$/);
    }
    assertUsage(() => parseLogTime('soon', '--until', NOW), '--until', /is not a time/);
  });

  test('--tail takes a number of lines or all', () => {
    assert.equal(parseTail('0'), 0);
    assert.equal(parseTail('20'), 20);
    assert.equal(parseTail('all'), undefined);
    for (const bad of ['-1', 'some', '1.5', '1000001']) assertUsage(() => parseTail(bad), '-n/--tail', /must be a number of lines from 0 to 1000000, or all/);
  });
});

describe('events --filter', () => {
  const stateEvent = { type: 'task.state', taskId: 'job-42', state: 'exited', endState: { kind: 'failed', exitCode: 1 }, at: 'x' };
  const pullEvent = { type: 'image.pull', phase: 'finished', image: 'busybox:1.36', imageId: 'sha256:abcdef', at: 'x' };

  test('docker\'s keys: type (short or full), event, task, image, container; one key\'s values are alternatives, keys all match', () => {
    const match = (filters: string[], event: Record<string, unknown>): boolean => eventMatches(event, parseEventFilters(filters));
    assert.equal(match(['type=task'], stateEvent), true);
    assert.equal(match(['type=task'], pullEvent), false);
    assert.equal(match(['type=image.pull'], pullEvent), true);
    assert.equal(match(['task.state'], stateEvent), true, 'the bare type, berth\'s earlier spelling');
    assert.equal(match(['event=exited'], stateEvent), true);
    assert.equal(match(['event=failed'], stateEvent), true, 'an end kind is an event too');
    assert.equal(match(['event=running'], stateEvent), false);
    assert.equal(match(['task=job'], stateEvent), true, 'a task id prefix');
    assert.equal(match(['task=other', 'task=job-42'], stateEvent), true);
    assert.equal(match(['type=task', 'task=other'], stateEvent), false);
    assert.equal(match(['image=busybox:1.36'], pullEvent), true);
    assert.equal(match(['image=abcd'], pullEvent), true);
    assert.equal(match(['container=abc'], { type: 'container.reconciled', containerId: 'abc123', dryRun: false, at: 'x' }), true);
    assert.equal(match([], pullEvent), true);
  });

  test('an unknown key, an unknown type or an empty value is a usage error naming what is allowed', () => {
    assertUsage(() => parseEventFilters(['colour=red']), '--filter[0]', /unknown key "colour" \(known: type=, event=, task=, image=, container=\)/);
    assertUsage(
      () => parseEventFilters(['type=task', 'type=plugin']),
      '--filter[1]',
      /type must be one of task, task\.state, task\.health, image, image\.pull, image\.removed, container, container\.reconciled, network, network\.reconciled, volume, volume\.reconciled, prune/,
    );
    // Groups' networks and volumes the reconciler removes have types of their own, as docker's events do.
    assert.equal(parseEventFilters(['type=network', 'type=volume']).get('type')?.length, 2);
    assertUsage(() => parseEventFilters(['task=']), '--filter[0]', /task= needs a value/);
  });
});
