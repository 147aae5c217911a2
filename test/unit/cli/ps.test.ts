import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isBerthError } from '../../../src/common/errors.js';
import { displayTaskId, renderTaskTable, startFailureReason, taskStatus, type TaskRowInput } from '../../../src/cli/output.js';
import { matchesHealth, parsePsFilters, psListFilter } from '../../../src/cli/ps.js';
import { stopGraceFlagMs } from '../../../src/cli/stop-remove.js';
import { UNENDED_STATES } from '../../../src/state/tasks.js';

const NOW = Date.parse('2026-01-01T12:00:00.000Z');
const at = (secondsAgo: number): string => new Date(NOW - secondsAgo * 1000).toISOString();
const UUID = '8cd09326-5f0e-4c36-9a53-2f1c0d6e7b41';

const task = (overrides: Partial<TaskRowInput>): TaskRowInput => ({
  id: UUID,
  state: 'running',
  spec: { image: 'busybox', command: ['sleep', '30'] },
  submittedAt: at(10),
  ...overrides,
});

const failedStart = (reason: string): Partial<TaskRowInput> => ({ state: 'exited', exitCode: 125, endState: { kind: 'failed', exitCode: 125, reason }, finishedAt: at(2) });

function refusedWith(rule: RegExp, field?: string): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(isBerthError(error, 'BERTH_VALIDATION'), String(error));
    const issue = (error.context.issues as Array<{ field: string; rule: string }>)[0]!;
    if (field !== undefined) assert.equal(issue.field, field);
    assert.match(issue.rule, rule);
    return true;
  };
}

describe('ps --filter', () => {
  test('takes state (or status), end, label and health; each key may repeat', () => {
    assert.deepEqual(parsePsFilters(['state=running', 'status=exited', 'end=oom', 'end=timed-out', 'label=team=a', 'label=gpu', 'health=healthy', 'health=none']), {
      state: ['running', 'exited'],
      end: ['oom', 'timed-out'],
      label: ['team=a', 'gpu'],
      health: ['healthy', 'none'],
    });
  });

  test('health= selects by the last health status; none is a task without a health check; an unknown one is refused', () => {
    const healthy = { health: { status: 'healthy' } };
    const none = {};
    assert.equal(matchesHealth(healthy, ['healthy']), true);
    assert.equal(matchesHealth(healthy, ['unhealthy', 'starting']), false);
    assert.equal(matchesHealth(none, ['none']), true);
    assert.equal(matchesHealth(none, ['healthy']), false);
    assert.equal(matchesHealth(none, []), true);
    assert.throws(() => parsePsFilters(['health=sick']), refusedWith(/^health must be one of starting, healthy, unhealthy, none; got "sick"$/));
  });

  test('an unknown key is refused naming the keys allowed', () => {
    assert.throws(() => parsePsFilters(['label=a', 'colour=red']), refusedWith(/^unknown filter key "colour"; the keys are state, status, end, label, health /, '--filter[1]'));
  });

  test('an unknown end kind or state is refused naming the values allowed', () => {
    assert.throws(() => parsePsFilters(['end=crashed']), refusedWith(/^end must be one of success, failed, oom, timed-out, cancelled, lost; got "crashed"$/));
    assert.throws(() => parsePsFilters(['state=dead']), refusedWith(/^state must be one of pending, .*; got "dead"$/));
    assert.throws(() => parsePsFilters(['label=']), refusedWith(/label needs a key/));
  });
});

describe('ps: what is asked of the agent', () => {
  test('always newest first; without -a only tasks that have not ended', () => {
    assert.deepEqual(psListFilter({ filter: [] }), { state: UNENDED_STATES, label: [], order: 'newest-first' });
    assert.deepEqual(psListFilter({ filter: [], all: true }), { label: [], order: 'newest-first' });
  });

  test('-n N is the newest N in any state, as docker ps -n; -l the newest one', () => {
    assert.deepEqual(psListFilter({ filter: [], last: '2' }), { label: [], order: 'newest-first', limit: 2 });
    assert.deepEqual(psListFilter({ filter: [], latest: true }), { label: [], order: 'newest-first', limit: 1 });
    assert.deepEqual(psListFilter({ filter: ['state=running'], last: '3' }), { state: ['running'], label: [], order: 'newest-first', limit: 3 });
    for (const bad of ['-1', 'two', '1.5', '']) assert.throws(() => psListFilter({ filter: [], last: bad }), refusedWith(/must be a whole number/, '-n/--last'));
  });

  test('an end filter looks at ended tasks without -a', () => {
    assert.deepEqual(psListFilter({ filter: ['end=oom', 'end=failed'] }), { end: ['oom', 'failed'], label: [], order: 'newest-first' });
  });
});

describe('ps table', () => {
  test('shows a generated id by its first 12 characters and a given one (a name) whole; --no-trunc shows every id whole', () => {
    assert.equal(displayTaskId(UUID), '8cd09326-5f0');
    assert.equal(displayTaskId(UUID, true), UUID);
    assert.equal(displayTaskId('nightly-backup-eu-west-1'), 'nightly-backup-eu-west-1');
    assert.match(renderTaskTable([task({ id: 'nightly-backup-eu-west-1' })], NOW).split('\n')[1]!, /^nightly-backup-eu-west-1\s+busybox/);
    const short = renderTaskTable([task({ startedAt: at(3) })], NOW).split('\n')[1]!;
    assert.match(short, /^8cd09326-5f0\s+busybox\s+sleep 30\s+Up 3 seconds\s+10 seconds ago$/);
    const whole = renderTaskTable([task({ startedAt: at(3) })], NOW, { noTrunc: true }).split('\n')[1]!;
    assert.match(whole, new RegExp(`^${UUID}\\s+busybox`));
  });

  test('a task that could not start says why in its status, not "Exited (125)"', () => {
    const status = taskStatus(task(failedStart('BERTH_IMAGE_NOT_FOUND: image nope:latest was not found in the registry')), NOW);
    assert.equal(status, 'Failed to start: image nope:latest was not found in the registry');
    const long = `BERTH_ENGINE: ${'x'.repeat(200)}`;
    assert.equal(taskStatus(task(failedStart(long)), NOW), `Failed to start: ${'x'.repeat(59)}…`);
    assert.equal(taskStatus(task(failedStart(long)), NOW, Number.POSITIVE_INFINITY), `Failed to start: ${'x'.repeat(200)}`);
    // A task that ran and failed keeps docker's words.
    assert.equal(taskStatus(task({ state: 'exited', exitCode: 3, endState: { kind: 'failed', exitCode: 3 }, finishedAt: at(2) }), NOW), 'Exited (3) 2 seconds ago');
  });

  test('a task with a health check shows it in STATUS as docker ps does; one without shows nothing more', () => {
    assert.equal(taskStatus(task({ startedAt: at(3), health: { status: 'healthy' } }), NOW), 'Up 3 seconds (healthy)');
    assert.equal(taskStatus(task({ startedAt: at(3), health: { status: 'unhealthy' } }), NOW), 'Up 3 seconds (unhealthy)');
    assert.equal(taskStatus(task({ startedAt: at(3), health: { status: 'starting' } }), NOW), 'Up 3 seconds (health: starting)');
    assert.equal(taskStatus(task({ startedAt: at(3) }), NOW), 'Up 3 seconds');
    // A waitHealthy task is starting until healthy.
    assert.equal(taskStatus(task({ state: 'starting', health: { status: 'starting' } }), NOW), 'Starting (health: starting)');
    // An ended task says how it ended, not how healthy it last was.
    assert.equal(taskStatus(task({ state: 'exited', exitCode: 0, endState: { kind: 'success', exitCode: 0 }, finishedAt: at(2), health: { status: 'healthy' } }), NOW), 'Exited (0) 2 seconds ago');
    assert.match(renderTaskTable([task({ startedAt: at(3), health: { status: 'healthy' } })], NOW).split('\n')[1]!, /\sUp 3 seconds \(healthy\)\s+10 seconds ago$/);
  });

  test('the reason of a failed start is one line without its error code', () => {
    assert.equal(startFailureReason(task(failedStart('BERTH_VALIDATION: bad\nbind\tsource'))), 'bad bind source');
    assert.equal(startFailureReason(task({ state: 'exited', endState: { kind: 'oom', exitCode: 137 } })), undefined);
  });
});

describe('stop -t', () => {
  test('a bare number is seconds, as docker\'s; a duration keeps its unit', () => {
    assert.equal(stopGraceFlagMs('5', '-t/--time'), 5000);
    assert.equal(stopGraceFlagMs('0', '-t/--time'), 0);
    assert.equal(stopGraceFlagMs('1m30s', '-t/--time'), 90_000);
  });

  test('a value that is not a duration, or past 24 h, is refused naming the flag', () => {
    assert.throws(() => stopGraceFlagMs('soon', '-t/--time'), refusedWith(/soon/, '-t/--time'));
    // A decimal has no unit: refused, as --stop-timeout refuses it, never read as 1.5 ms.
    assert.throws(() => stopGraceFlagMs('1.5', '-t/--time'), refusedWith(/unit/, '-t/--time'));
    assert.throws(() => stopGraceFlagMs('-1', '-t/--time'), refusedWith(/./, '-t/--time'));
    assert.throws(() => stopGraceFlagMs('86401', '--timeout'), refusedWith(/./, '--timeout'));
  });
});
