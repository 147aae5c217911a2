import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AdmissionController } from '../../../src/agent/admission.js';

const MiB = 1024 * 1024;
const demand = (mib: number, cpuMilli = 100) => ({ memoryBytes: mib * MiB, cpuMilli });

/** A controller with `budgetMib` of memory (and plenty of CPU), recording every allowance change. */
function controller(budgetMib: number, maxConcurrent?: number) {
  const admission = new AdmissionController({ memoryBytes: budgetMib * MiB, cpuMilli: 100_000, ...(maxConcurrent !== undefined ? { maxConcurrent } : {}) });
  const changes: Array<[string, number]> = [];
  admission.onAllowance((pool, containers) => changes.push([pool, containers]));
  const allowances = (): Record<string, number> => Object.fromEntries(admission.snapshot().pools.map((p) => [p.name, p.allowance]));
  return { admission, changes, allowances };
}

describe('AdmissionController: warm pools', () => {
  it('gives each pool its size when the budget holds it, and counts its idle containers against the budget', () => {
    const { admission, allowances } = controller(1024);
    admission.setPools([{ name: 'a', size: 2, demand: demand(256) }]);
    assert.deepEqual(allowances(), { a: 2 });
    // 512 MiB held by the pool: a 512 MiB task fits, a second does not without the pool giving way.
    assert.equal(admission.submit('t1', demand(512)), 'admitted');
    assert.deepEqual(allowances(), { a: 2 });
  });

  it('gives a pool only what fits beside what is admitted', () => {
    const { admission, allowances } = controller(1024);
    admission.submit('t1', demand(700));
    admission.setPools([{ name: 'a', size: 4, demand: demand(100) }]);
    assert.deepEqual(allowances(), { a: 3 });
  });

  it('shrinks the pools as far as a task needs to fit, the last declared first, and admits it at once', () => {
    const { admission, changes, allowances } = controller(1024);
    admission.setPools([
      { name: 'first', size: 2, demand: demand(128) },
      { name: 'last', size: 2, demand: demand(128) },
    ]);
    assert.deepEqual(allowances(), { first: 2, last: 2 });
    changes.length = 0;
    // 512 held by the pools, 512 free: a 768 MiB task needs two pool containers gone.
    assert.equal(admission.submit('cold', demand(768)), 'admitted');
    assert.deepEqual(allowances(), { first: 2, last: 0 });
    assert.deepEqual(changes, [['last', 0]]);
    assert.equal(admission.submit('cold2', demand(200)), 'admitted');
    assert.deepEqual(allowances(), { first: 0, last: 0 });
  });

  it('grows the pools back to their size once the budget frees and no task waits', () => {
    const { admission, allowances } = controller(1024);
    admission.setPools([{ name: 'a', size: 2, demand: demand(256) }]);
    admission.submit('big', demand(1024));
    assert.deepEqual(allowances(), { a: 0 });
    assert.equal(admission.submit('waiting', demand(512)), 'queued');
    // The big task ends: the waiting one goes first, and the pool takes what is left.
    assert.deepEqual(admission.release('big').admitted, ['waiting']);
    assert.deepEqual(allowances(), { a: 2 });
    admission.release('waiting');
    assert.deepEqual(allowances(), { a: 2 });
  });

  it('keeps the pools shrunk while a task waits that does not fit even without them', () => {
    const { admission, allowances } = controller(1024);
    admission.setPools([{ name: 'a', size: 1, demand: demand(256) }]);
    admission.submit('t1', demand(600));
    admission.submit('t2', demand(168));
    assert.deepEqual(allowances(), { a: 1 });
    assert.equal(admission.submit('t3', demand(600)), 'queued');
    admission.release('t2');
    // t3 still cannot fit (t1 holds 600): the pool is not grown back over the waiting task's head.
    assert.equal(admission.positionOf('t3')?.state, 'queued');
    admission.release('t1');
    assert.equal(admission.positionOf('t3')?.state, 'admitted');
    assert.deepEqual(allowances(), { a: 1 });
  });

  it('does not count pool containers against maxConcurrent', () => {
    const { admission, allowances } = controller(1024, 1);
    admission.setPools([{ name: 'a', size: 2, demand: demand(64) }]);
    assert.equal(admission.submit('t1', demand(64)), 'admitted');
    assert.deepEqual(allowances(), { a: 2 });
  });

  it('shrinks the pools when a reload shrinks the budget below them', () => {
    const { admission, allowances } = controller(1024);
    admission.setPools([{ name: 'a', size: 4, demand: demand(256) }]);
    assert.deepEqual(allowances(), { a: 4 });
    admission.setBudget({ memoryBytes: 512 * MiB, cpuMilli: 100_000 });
    assert.deepEqual(allowances(), { a: 2 });
  });
});
