import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { containerNameForTask, parseContainerName } from '../../../src/common/labels.js';
import { TASK_ID } from '../../../src/tasks/driver.js';

/** What the engine accepts as a container name (moby's restrictedNamePattern). */
const DOCKER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

/** Ids as berth accepts them (TASK_ID), built mostly from the characters that could fool a parser. */
const id = fc
  .tuple(
    fc.constantFrom(...'ab09Z'),
    fc.array(fc.constantFrom('.', '-', '_', '1', '2', '3', '0', 'a', 'b', 'Z', '.1', '-a'), { maxLength: 40 }),
  )
  .map(([first, rest]) => (first + rest.join('')).slice(0, 128));

/** Pairs that a naive join (`<task>-<owner>`, `<task>.<owner>`) or a wrong parse would mix up. */
const TRICKY: Array<[string, string]> = [
  ['a-b', 'c'],
  ['a', 'b-c'],
  ['a.b', 'c'],
  ['a', 'b.c'],
  ['a.b.1', 'c'],
  ['a', 'b.1.c'],
  ['x.cli.3', 'cli'],
  ['x', 'cli.3.cli'],
  ['t.1', 'o'],
  ['t', '1.o'],
  ['1', '1'],
  ['11', '1'],
  ['1', '11'],
  ['a.10', 'b'],
  ['a', 'aaaaaaaaaa'],
  ['a.aaaaaaaaaa.10', 'b'],
  ['A', 'a'],
  ['a', 'A'],
  ['berth-x', 'y'],
  ['x'.repeat(128), 'o'.repeat(128)],
];

describe('container names', () => {
  test('show the task id first, then the owner id and its length: berth-<task id>.<owner id>.<length>', () => {
    assert.equal(containerNameForTask({ taskId: 'build-42', ownerId: 'cli' }), 'berth-build-42.cli.3');
    assert.equal(containerNameForTask({ taskId: 'a.b', ownerId: 'agent-1f2e3d4c' }), 'berth-a.b.agent-1f2e3d4c.14');
  });

  test('tricky pairs (separators inside ids) each get a name of their own, which parses back to them', () => {
    const names = new Map<string, [string, string]>();
    for (const [taskId, ownerId] of TRICKY) {
      const name = containerNameForTask({ taskId, ownerId });
      const earlier = names.get(name);
      assert.equal(earlier, undefined, `${name} is the name of both ${JSON.stringify(earlier)} and ${JSON.stringify([taskId, ownerId])}`);
      names.set(name, [taskId, ownerId]);
      assert.deepEqual(parseContainerName(name), { taskId, ownerId });
      assert.match(name, DOCKER_NAME);
    }
  });

  test('parse back to their pair for any ids berth accepts, so no two pairs share a name (property)', () => {
    fc.assert(
      fc.property(id, id, (taskId, ownerId) => {
        assert.match(taskId, TASK_ID);
        assert.match(ownerId, TASK_ID);
        const name = containerNameForTask({ taskId, ownerId });
        assert.match(name, DOCKER_NAME);
        assert.ok(name.startsWith(`berth-${taskId}.`), 'the task id is visible right after the prefix');
        assert.deepEqual(parseContainerName(name), { taskId, ownerId });
        assert.deepEqual(parseContainerName(`/${name}`), { taskId, ownerId }, 'the engine\'s /name form too');
      }),
      { numRuns: 5000 },
    );
  });

  test('two different pairs never give one name (property, pairs drawn apart)', () => {
    fc.assert(
      fc.property(id, id, id, id, (t1, o1, t2, o2) => {
        fc.pre(t1 !== t2 || o1 !== o2);
        assert.notEqual(containerNameForTask({ taskId: t1, ownerId: o1 }), containerNameForTask({ taskId: t2, ownerId: o2 }));
      }),
      { numRuns: 5000 },
    );
  });

  test('a name not of that form (an earlier berth\'s berth-<task id>, anyone else\'s) parses to nothing', () => {
    for (const name of ['berth-task', 'berth-task.1', 'berth-.o.1', 'berth-t.o.01', 'berth-t.o.2', 'berth-t.o.0', 'other-t.o.1', 'berth-t.o.x', 'berth-', '']) {
      assert.equal(parseContainerName(name), undefined, name);
    }
  });
});
