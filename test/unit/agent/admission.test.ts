import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isBerthError, ValidationError } from '../../../src/common/errors.js';
import { AdmissionController, resolveDemand, type ResourceDemand } from '../../../src/agent/admission.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const demand = (memoryMiB: number, cpuMilli = 100): ResourceDemand => ({ memoryBytes: memoryMiB * MiB, cpuMilli });

describe('AdmissionController', () => {
  it('admits tasks while they fit and queues the rest', () => {
    const admission = new AdmissionController({ memoryBytes: 1 * GiB, cpuMilli: 4000 });
    assert.equal(admission.submit('a', demand(512)), 'admitted');
    assert.equal(admission.submit('b', demand(512)), 'admitted');
    assert.equal(admission.submit('c', demand(256)), 'queued');
    const snapshot = admission.snapshot();
    assert.deepEqual(snapshot.used, { memoryBytes: GiB, cpuMilli: 200, tasks: 2 });
    assert.deepEqual(snapshot.admitted.map((e) => e.taskId), ['a', 'b']);
    assert.deepEqual(snapshot.queued.map((e) => e.taskId), ['c']);
  });

  it('counts CPU as well as memory', () => {
    const admission = new AdmissionController({ memoryBytes: 8 * GiB, cpuMilli: 1000 });
    assert.equal(admission.submit('a', demand(64, 600)), 'admitted');
    assert.equal(admission.submit('b', demand(64, 600)), 'queued');
    assert.deepEqual(admission.release('a').admitted, ['b']);
  });

  it('on release admits the waiting tasks in submission order', () => {
    const admission = new AdmissionController({ memoryBytes: 1 * GiB, cpuMilli: 4000 });
    admission.submit('running', demand(1024));
    for (const id of ['q1', 'q2', 'q3', 'q4']) assert.equal(admission.submit(id, demand(256)), 'queued');
    const change = admission.release('running');
    assert.deepEqual(change.admitted, ['q1', 'q2', 'q3', 'q4']);
    assert.deepEqual(change.refused, []);
    assert.deepEqual(admission.snapshot().queued, []);
  });

  it('is strictly FIFO: a big task at the head blocks smaller ones behind it', () => {
    const admission = new AdmissionController({ memoryBytes: 1 * GiB, cpuMilli: 4000 });
    admission.submit('a', demand(512));
    admission.submit('b', demand(256));
    assert.equal(admission.submit('big', demand(768)), 'queued');
    // 256 MiB is free and 'small' would fit, but it may not overtake 'big'.
    assert.equal(admission.submit('small', demand(128)), 'queued');
    assert.deepEqual(admission.release('b').admitted, [], 'still not room for big (768 > 512 free)');
    assert.deepEqual(admission.release('a').admitted, ['big', 'small']);
  });

  it('lets a queued task leave without disturbing the order, and moves on when the head leaves', () => {
    const admission = new AdmissionController({ memoryBytes: 1 * GiB, cpuMilli: 4000 });
    admission.submit('a', demand(768));
    admission.submit('head', demand(512));
    admission.submit('middle', demand(128));
    admission.submit('tail', demand(128));
    assert.deepEqual(admission.release('middle').admitted, []);
    assert.deepEqual(admission.positionOf('tail'), { state: 'queued', index: 1 });
    // The head is cancelled while pending: the next in line fits now.
    assert.deepEqual(admission.release('head').admitted, ['tail']);
    assert.deepEqual(admission.positionOf('tail'), { state: 'admitted' });
    assert.equal(admission.positionOf('head'), undefined);
  });

  it('releasing an unknown task does nothing', () => {
    const admission = new AdmissionController({ memoryBytes: GiB, cpuMilli: 1000 });
    assert.deepEqual(admission.release('ghost'), { admitted: [], refused: [] });
    admission.submit('a', demand(10));
    admission.release('a');
    assert.deepEqual(admission.release('a'), { admitted: [], refused: [] }, 'a second release is harmless');
    assert.deepEqual(admission.snapshot().used, { memoryBytes: 0, cpuMilli: 0, tasks: 0 });
  });

  it('refuses a task larger than the whole budget, naming the field and the budget', () => {
    const admission = new AdmissionController({ memoryBytes: 2 * GiB, cpuMilli: 2000 });
    assert.throws(() => admission.submit('huge', demand(3 * 1024)), (error: unknown) => {
      assert.ok(error instanceof ValidationError && isBerthError(error, 'BERTH_VALIDATION'));
      assert.deepEqual(error.issues.map((i) => i.field), ['resources.memory']);
      assert.match(error.message, /^resources\.memory: 3 GiB is more than the agent's whole memory budget of 2 GiB: the task could never start$/);
      return true;
    });
    assert.throws(
      () => admission.submit('greedy', demand(1, 2500)),
      (error: unknown) => error instanceof ValidationError && error.issues[0]!.field === 'resources.cpuMilli' && /2500 milli-CPUs .* budget of 2000/.test(error.message),
    );
    assert.throws(
      () => admission.submit('both', demand(4096, 4000)),
      (error: unknown) => error instanceof ValidationError && error.issues.length === 2,
    );
    assert.equal(admission.positionOf('huge'), undefined, 'a refused task is not queued');
    assert.equal(admission.submit('exact', demand(2048, 2000)), 'admitted', 'a task of exactly the budget fits');
  });

  it('caps the number of tasks admitted at once', () => {
    const admission = new AdmissionController({ memoryBytes: 8 * GiB, cpuMilli: 8000, maxConcurrent: 2 });
    assert.equal(admission.submit('a', demand(1)), 'admitted');
    assert.equal(admission.submit('b', demand(1)), 'admitted');
    assert.equal(admission.submit('c', demand(1)), 'queued');
    assert.equal(admission.submit('d', demand(1)), 'queued');
    assert.deepEqual(admission.release('b').admitted, ['c']);
    assert.deepEqual(admission.snapshot().admitted.map((e) => e.taskId), ['a', 'c']);
  });

  it('refuses a task id it already knows as a bug', () => {
    const admission = new AdmissionController({ memoryBytes: GiB, cpuMilli: 1000 });
    admission.submit('a', demand(1));
    assert.throws(() => admission.submit('a', demand(1)), (error: unknown) => isBerthError(error, 'BERTH_INTERNAL'));
  });

  it('on a larger budget admits waiting tasks; on a smaller one refuses queued tasks that could never fit and keeps running ones', () => {
    const admission = new AdmissionController({ memoryBytes: 1 * GiB, cpuMilli: 4000 });
    admission.submit('a', demand(1024));
    admission.submit('b', demand(512));
    assert.deepEqual(admission.setBudget({ memoryBytes: 2 * GiB, cpuMilli: 4000 }).admitted, ['b']);
    admission.submit('c', demand(1536));
    admission.submit('d', demand(64));
    const change = admission.setBudget({ memoryBytes: 1 * GiB, cpuMilli: 4000 });
    assert.deepEqual(change.refused.map((r) => r.taskId), ['c']);
    assert.match(change.refused[0]!.error.message, /^resources\.memory: 1\.5 GiB is more than .* 1 GiB/);
    assert.deepEqual(change.admitted, [], 'a and b still hold 1.5 GiB of a 1 GiB budget');
    assert.deepEqual(admission.snapshot().used, { memoryBytes: 1536 * MiB, cpuMilli: 200, tasks: 2 });
    assert.deepEqual(admission.release('a').admitted, ['d']);
  });

  it('restores admitted and pending tasks after a restart, admitting what fits in order', () => {
    const admission = new AdmissionController({ memoryBytes: 1 * GiB, cpuMilli: 4000 });
    const change = admission.restore({
      admitted: [{ taskId: 'r1', demand: demand(512) }, { taskId: 'r2', demand: demand(256) }],
      queued: [
        { taskId: 'p1', demand: demand(256) },
        { taskId: 'p2', demand: demand(256) },
        { taskId: 'p3', demand: demand(2048) },
        { taskId: 'p4', demand: demand(1) },
      ],
    });
    assert.deepEqual(change.admitted, ['p1']);
    assert.deepEqual(change.refused.map((r) => r.taskId), ['p3']);
    assert.deepEqual(admission.snapshot().queued.map((e) => e.taskId), ['p2', 'p4']);
    assert.deepEqual(admission.release('r1').admitted, ['p2', 'p4']);
  });

  it('restores running tasks beyond a budget that has shrunk, and admits nothing until they end', () => {
    const admission = new AdmissionController({ memoryBytes: 512 * MiB, cpuMilli: 4000 });
    const change = admission.restore({ admitted: [{ taskId: 'r', demand: demand(1024) }], queued: [{ taskId: 'p', demand: demand(64) }] });
    assert.deepEqual(change, { admitted: [], refused: [] });
    assert.deepEqual(admission.release('r').admitted, ['p']);
  });

  it('restores only into an empty controller, each task once', () => {
    const admission = new AdmissionController({ memoryBytes: GiB, cpuMilli: 1000 });
    assert.throws(
      () => admission.restore({ admitted: [{ taskId: 'x', demand: demand(1) }], queued: [{ taskId: 'x', demand: demand(1) }] }),
      (error: unknown) => isBerthError(error, 'BERTH_INTERNAL'),
    );
    admission.submit('a', demand(1));
    assert.throws(() => admission.restore({ admitted: [], queued: [] }), (error: unknown) => isBerthError(error, 'BERTH_INTERNAL'));
  });

  it('refuses a malformed budget, naming its key', () => {
    assert.throws(
      () => new AdmissionController({ memoryBytes: -1, cpuMilli: 1000, maxConcurrent: 0 }),
      (error: unknown) => error instanceof ValidationError && error.issues.map((i) => i.field).join() === 'admission.memory,admission.maxConcurrent',
    );
  });

  it('returns frozen snapshots that later changes do not alter', () => {
    const admission = new AdmissionController({ memoryBytes: GiB, cpuMilli: 1000 });
    admission.submit('a', demand(1));
    const before = admission.snapshot();
    admission.release('a');
    assert.equal(before.admitted.length, 1);
    assert.ok(Object.isFrozen(before) && Object.isFrozen(before.admitted) && Object.isFrozen(before.used));
  });
});

describe('resolveDemand', () => {
  it('uses the task\'s own limits, and the defaults where it sets none', () => {
    const defaults = { memoryBytes: 256 * MiB, cpuMilli: 1000 };
    assert.deepEqual(resolveDemand({ memoryBytes: 64 * MiB, cpuMilli: 250 }, defaults), { memoryBytes: 64 * MiB, cpuMilli: 250 });
    assert.deepEqual(resolveDemand({ cpuMilli: 250 }, defaults), { memoryBytes: 256 * MiB, cpuMilli: 250 });
    assert.deepEqual(resolveDemand({}, defaults), defaults);
  });
});
