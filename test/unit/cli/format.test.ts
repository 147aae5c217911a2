import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { EVENT_FIELDS, eventFormatRow, fieldsOf, IMAGE_FIELDS, imageFormatRow, parseFormat, renderFormatted, TASK_FIELDS, taskFormatRow, type OutputFormat } from '../../../src/cli/format.js';

const NOW = Date.UTC(2024, 4, 1, 10, 0, 0);
const TASK = {
  id: '8cd09326-1111-4222-8333-444455556666',
  state: 'running',
  spec: { image: 'busybox:1.36', command: ['sleep', '60'], labels: { team: 'infra', tier: 'batch' } },
  submittedAt: new Date(NOW - 5000).toISOString(),
  startedAt: new Date(NOW - 4000).toISOString(),
  containerId: 'f'.repeat(64),
};

function render(format: string, rows = [taskFormatRow(TASK, NOW)]): string {
  const parsed = parseFormat(format, TASK_FIELDS);
  assert.notEqual(parsed.kind, 'table');
  return renderFormatted(parsed as Exclude<OutputFormat, { kind: 'table' }>, rows);
}

function assertFormatError(format: string, rule: RegExp): void {
  assert.throws(
    () => parseFormat(format, TASK_FIELDS),
    (error: unknown) => error instanceof ValidationError && error.issues.length === 1 && error.issues[0]!.field === '--format' && rule.test(error.issues[0]!.rule),
  );
}

describe('--format: json, table and the Go-template subset', () => {
  test('no flag and "table" are the command\'s own table; "json" is one object per line', () => {
    assert.equal(parseFormat(undefined, TASK_FIELDS).kind, 'table');
    assert.equal(parseFormat('table', TASK_FIELDS).kind, 'table');
    const lines = render('json', [taskFormatRow(TASK, NOW), taskFormatRow({ ...TASK, id: 'named' }, NOW)]).split('\n');
    assert.equal(lines.length, 3);
    assert.equal(lines[2], '');
    const first = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.equal(first.ID, '8cd09326-111');
    assert.equal(first.Image, 'busybox:1.36');
    assert.equal(first.Labels, 'team=infra,tier=batch');
    assert.equal(first.Label, undefined, 'methods are not printed');
    assert.equal((JSON.parse(lines[1]!) as { ID: string }).ID, 'named');
  });

  test('fields, nested fields, json, index, a method with an argument, upper and lower', () => {
    assert.equal(render('{{.ID}} {{.Image}} {{.State}}'), '8cd09326-111 busybox:1.36 running\n');
    assert.equal(render('{{.Label "team"}}|{{.Label "nope"}}'), 'infra|\n');
    assert.equal(render('{{upper .State}} {{lower .Image}}'), 'RUNNING busybox:1.36\n');
    assert.equal(render('{{json .Command}}'), '"sleep 60"\n');
    const inspect = parseFormat('{{.spec.image}} {{index .spec.labels "team"}} {{json .spec.command}} {{.spec.missing}}', fieldsOf(['id', 'spec']));
    assert.equal(renderFormatted(inspect as Exclude<OutputFormat, { kind: 'table' }>, [TASK]), 'busybox:1.36 infra ["sleep","60"] \n');
    const whole = parseFormat('{{json .}}', fieldsOf(['id']));
    assert.deepEqual(JSON.parse(renderFormatted(whole as Exclude<OutputFormat, { kind: 'table' }>, [{ id: 'x' }])), { id: 'x' });
  });

  test('\\t and \\n as typed in a shell become a tab and a newline', () => {
    assert.equal(render('{{.ID}}\\t{{.State}}\\n'), '8cd09326-111\trunning\n\n');
  });

  test('a table template has headers named for its fields and aligned columns', () => {
    const out = render('table {{.ID}}\\t{{.Image}}\\t{{.Label "team"}}', [taskFormatRow(TASK, NOW), taskFormatRow({ ...TASK, id: 'a-much-longer-task-name' }, NOW)]);
    assert.deepEqual(out.split('\n'), [
      'TASK ID                   IMAGE          LABEL',
      '8cd09326-111              busybox:1.36   infra',
      'a-much-longer-task-name   busybox:1.36   infra',
      '',
    ]);
  });

  test('an unknown field is a usage error naming it and the known fields', () => {
    assertFormatError('{{.Nope}}', /unknown field "Nope" in \{\{\.Nope\}\} \(known: ID, Image, Command, CreatedAt, RunningFor, Status, State, Labels, Label, Names/);
    assertFormatError('table {{.ID}}\\t{{.Size}}', /unknown field "Size"/);
  });

  test('an unknown function, an unclosed action and text without a placeholder are usage errors', () => {
    assertFormatError('{{printf "%s" .ID}}', /unknown function "printf".*known: json, index, upper, lower/);
    assertFormatError('{{.ID', /has "\{\{" without "\}\}"/);
    assertFormatError('yaml', /"yaml" is not a format: use table, json, or a template/);
    assertFormatError('{{}}', /empty/);
  });

  test('images split their first reference into Repository and Tag, ids short unless --no-trunc', () => {
    const image = { imageId: `sha256:${'a'.repeat(64)}`, refs: ['registry:5000/team/app:1.2', 'app:latest'], holders: ['t1', 't2'] };
    const row = imageFormatRow(image, NOW);
    assert.equal(row.Repository, 'registry:5000/team/app');
    assert.equal(row.Tag, '1.2');
    assert.equal(row.ID, 'a'.repeat(12));
    assert.equal(imageFormatRow(image, NOW, true).ID, image.imageId);
    assert.equal(imageFormatRow({ ...image, refs: ['registry:5000/app'] }, NOW).Tag, 'latest');
    assert.equal(imageFormatRow({ ...image, refs: [] }, NOW).Repository, '<none>');
    assert.ok(Object.keys(IMAGE_FIELDS).every((field) => field in row));
  });

  test('an event\'s Action is its task state, its pull phase, or its type\'s verb', () => {
    const state = eventFormatRow({ type: 'task.state', taskId: 't1', state: 'exited', endState: { kind: 'failed', exitCode: 3 }, at: 'x' });
    assert.deepEqual([state.Type, state.Action, state.TaskID, state.EndKind, state.ExitCode], ['task.state', 'exited', 't1', 'failed', 3]);
    assert.equal(eventFormatRow({ type: 'image.pull', phase: 'finished', image: 'busybox', at: 'x' }).Action, 'finished');
    assert.equal(eventFormatRow({ type: 'image.removed', imageId: 'sha256:1', at: 'x' }).Action, 'removed');
    assert.ok(Object.keys(EVENT_FIELDS).every((field) => field in state));
  });

  test('every ps field is in the row', () => {
    const row = taskFormatRow(TASK, NOW);
    assert.ok(Object.keys(TASK_FIELDS).every((field) => field in row));
    assert.equal(row.RunningFor, '5 seconds ago');
    assert.equal(row.Status, 'Up 4 seconds');
    assert.equal(taskFormatRow(TASK, NOW, true).ID, TASK.id);
  });
});
