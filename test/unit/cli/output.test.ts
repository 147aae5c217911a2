import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError, ValidationError } from '../../../src/common/errors.js';
import {
  ago,
  errorLine,
  formatCommand,
  formatEventLine,
  humanDuration,
  renderImageTable,
  renderTable,
  renderTaskTable,
  shortId,
  taskStatus,
  truncate,
  type TaskRowInput,
} from '../../../src/cli/output.js';

const NOW = Date.parse('2026-01-01T12:00:00.000Z');
const at = (secondsAgo: number): string => new Date(NOW - secondsAgo * 1000).toISOString();

describe('renderTable', () => {
  test('aligns every column to its widest cell and leaves no trailing spaces', () => {
    const table = renderTable(['A', 'LONG HEADER', 'Z'], [['wide cell', 'x', 'last'], ['b', 'yy', '']]);
    assert.equal(table, ['A           LONG HEADER   Z', 'wide cell   x             last', 'b           yy'].join('\n') + '\n');
  });

  test('renders the header line alone when there are no rows', () => {
    assert.equal(renderTable(['ID', 'STATE'], []), 'ID   STATE\n');
  });
});

describe('durations and times', () => {
  test('humanDuration rounds down to the largest unit and pluralises', () => {
    assert.equal(humanDuration(200), 'Less than a second');
    assert.equal(humanDuration(1000), '1 second');
    assert.equal(humanDuration(59_999), '59 seconds');
    assert.equal(humanDuration(60_000), '1 minute');
    assert.equal(humanDuration(3 * 3600_000), '3 hours');
    assert.equal(humanDuration(72 * 3600_000), '3 days');
  });

  test('ago reads ISO strings and milliseconds, and is empty for an unknown time', () => {
    assert.equal(ago(at(5), NOW), '5 seconds ago');
    assert.equal(ago(NOW - 120_000, NOW), '2 minutes ago');
    assert.equal(ago(undefined, NOW), '');
    assert.equal(ago('not a time', NOW), '');
  });

  test('a clock slightly behind the agent does not print a negative age', () => {
    assert.equal(ago(NOW + 500, NOW), 'Less than a second ago');
  });
});

describe('small formats', () => {
  test('shortId keeps 12 characters and drops the sha256: prefix', () => {
    assert.equal(shortId('sha256:0123456789abcdef0123'), '0123456789ab');
    assert.equal(shortId('abc'), 'abc');
    assert.equal(shortId(undefined), '');
  });

  test('formatCommand quotes words a shell would split', () => {
    assert.equal(formatCommand(['sh', '-c', 'echo hi; exit 3']), 'sh -c "echo hi; exit 3"');
    assert.equal(formatCommand(['echo', 'say "x"']), 'echo "say \\"x\\""');
    assert.equal(formatCommand(undefined), '');
  });

  test('truncate cuts long text with an ellipsis at the limit', () => {
    assert.equal(truncate('abcdef', 4), 'abc…');
    assert.equal(truncate('abc', 4), 'abc');
  });
});

const task = (overrides: Partial<TaskRowInput>): TaskRowInput => ({
  id: 't1',
  state: 'running',
  spec: { image: 'busybox', command: ['sleep', '30'] },
  submittedAt: at(10),
  ...overrides,
});

describe('taskStatus', () => {
  test('says how long a running task has been up', () => {
    assert.equal(taskStatus(task({ startedAt: at(7) }), NOW), 'Up 7 seconds');
  });

  test('names waiting and transitional states', () => {
    assert.equal(taskStatus(task({ state: 'pending' }), NOW), 'Pending');
    assert.equal(taskStatus(task({ state: 'starting' }), NOW), 'Starting');
    assert.equal(taskStatus(task({ state: 'stopping' }), NOW), 'Stopping');
    assert.equal(taskStatus(task({ state: 'removed' }), NOW), 'Removed');
  });

  test('gives an ended task its exit code and when it ended', () => {
    assert.equal(taskStatus(task({ state: 'exited', endState: { kind: 'failed', exitCode: 3 }, exitCode: 3, finishedAt: at(2) }), NOW), 'Exited (3) 2 seconds ago');
    assert.equal(taskStatus(task({ state: 'exited', endState: { kind: 'success', exitCode: 0 }, exitCode: 0, finishedAt: at(1) }), NOW), 'Exited (0) 1 second ago');
    assert.equal(taskStatus(task({ state: 'exited', endState: { kind: 'oom', exitCode: 137 }, exitCode: 137, finishedAt: at(1) }), NOW), 'Out of memory (137) 1 second ago');
    assert.equal(taskStatus(task({ state: 'lost', endState: { kind: 'lost', reason: 'gone' }, finishedAt: at(60) }), NOW), 'Lost 1 minute ago');
  });
});

describe('tables of tasks and images', () => {
  test('ps shows id, image, command, status and age, one line per task', () => {
    const table = renderTaskTable([task({ startedAt: at(3) }), task({ id: 't2', state: 'pending', spec: { image: 'alpine' } })], NOW);
    const lines = table.trimEnd().split('\n');
    assert.equal(lines.length, 3);
    assert.match(lines[0]!, /^TASK ID\s+IMAGE\s+COMMAND\s+STATUS\s+CREATED\s+PORTS$/);
    assert.match(lines[1]!, /^t1\s+busybox\s+sleep 30\s+Up 3 seconds\s+10 seconds ago$/);
    assert.match(lines[2]!, /^t2\s+alpine\s+Pending\s+10 seconds ago$/);
  });

  test('images shows the short id, references, holder count and when an unheld image goes', () => {
    const table = renderImageTable(
      [
        { imageId: 'sha256:aaaaaaaaaaaabbbb', refs: ['busybox:latest'], holders: ['t1', 't2'] },
        { imageId: 'sha256:cccccccccccc', refs: ['alpine:3'], holders: [], removalDueAt: new Date(NOW + 90_000).toISOString() },
      ],
      NOW,
    );
    const lines = table.trimEnd().split('\n');
    assert.match(lines[1]!, /^aaaaaaaaaaaa\s+busybox:latest\s+2 \(t1, t2\)$/);
    assert.match(lines[2]!, /^cccccccccccc\s+alpine:3\s+0\s+in 1 minute$/);
  });
});

describe('formatEventLine', () => {
  test('a task state change names the task, its state and how it ended', () => {
    assert.equal(
      formatEventLine({ type: 'task.state', taskId: 't1', state: 'exited', endState: { kind: 'failed', exitCode: 3 }, at: '2026-01-01T12:00:00.000Z' }),
      '2026-01-01T12:00:00.000Z  task.state  t1 exited (failed 3)',
    );
  });

  test('an event of a type it does not know is still printed, key by key, without its id', () => {
    assert.equal(formatEventLine({ id: 7, type: 'new.kind', n: 1, at: 'T' }), 'T  new.kind  n=1');
  });

  test('an orphan the reconciler removed says whose it was; a task retention removed says why', () => {
    assert.equal(
      formatEventLine({ type: 'container.reconciled', containerId: 'abcdef0123456789', taskId: 't1', reason: 'orphaned', ownerId: 'cli', ownerPid: 42, dryRun: false, at: 'T' }),
      'T  container.reconciled  abcdef012345 (task t1) orphaned (owner cli, pid 42 gone)',
    );
    assert.equal(formatEventLine({ type: 'container.reconciled', containerId: 'abcdef0123456789', reason: 'dangling', dryRun: true, at: 'T' }), 'T  container.reconciled  abcdef012345 dangling dry run');
    assert.equal(formatEventLine({ type: 'task.expired', taskId: 't2', reason: 'age', endedAt: 'E', at: 'T' }), 'T  task.expired  t2 removed by retention (age; ended E)');
  });
});

describe('errorLine', () => {
  test('prints the message and the stable code', () => {
    assert.equal(errorLine(new BerthError('BERTH_TASK_NOT_FOUND', 'no task x')), 'berth: no task x [BERTH_TASK_NOT_FOUND]');
    assert.equal(errorLine(new ValidationError([{ field: 'mounts[0].source', rule: 'not allowed' }])), 'berth: mounts[0].source: not allowed [BERTH_VALIDATION]');
  });

  test('an error without a code prints its message alone', () => {
    assert.equal(errorLine(new Error('boom')), 'berth: boom');
  });
});
