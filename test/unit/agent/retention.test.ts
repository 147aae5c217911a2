import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { silentLogger } from '../../../src/common/logger.js';
import type { DiskUsage } from '../../../src/agent/disk-space.js';
import { AgentEvents, type AgentEvent } from '../../../src/agent/events.js';
import { bytesOverWatermark, chooseVictims, TaskRetention, type RetentionCandidate, type RetentionLimits } from '../../../src/agent/retention.js';
import { TaskLogStore } from '../../../src/agent/task-logs.js';
import { openStore, type Store } from '../../../src/state/index.js';
import { pollUntil } from '../../support/engine.js';
import { recordingLogger } from '../../support/logger.js';

const DAY = 86_400_000;
const NOW = 100 * DAY;

/** Candidates ended `agesDays` ago (oldest first), each with `bytes` of output. */
const candidates = (agesDays: number[], bytes = 0): RetentionCandidate[] => agesDays.map((age, i) => ({ id: `t${i}`, endedAtMs: NOW - age * DAY, bytes }));
const disk = (usedFraction: number, totalBytes = 1000): DiskUsage => ({ usedBytes: Math.round(usedFraction * totalBytes), totalBytes });

describe('chooseVictims: which ended tasks retention removes (pure)', () => {
  it('removes the tasks older than maxAge, and stops at the first younger one', () => {
    const victims = chooseVictims({ nowMs: NOW, endedCount: 4, candidates: candidates([9, 8, 3, 1]) }, { maxAgeMs: 7 * DAY });
    assert.deepEqual(victims, [
      { id: 't0', reason: 'age' },
      { id: 't1', reason: 'age' },
    ]);
  });

  it('keeps a task exactly maxAge old (older than, not as old as)', () => {
    assert.deepEqual(chooseVictims({ nowMs: NOW, endedCount: 1, candidates: candidates([7]) }, { maxAgeMs: 7 * DAY }), []);
  });

  it('removes the oldest beyond maxCount, counting every ended task, not only the candidates', () => {
    // 10 ended in all, 4 candidates in this batch, 7 may stay: the 3 oldest go.
    const victims = chooseVictims({ nowMs: NOW, endedCount: 10, candidates: candidates([5, 4, 3, 2]) }, { maxCount: 7 });
    assert.deepEqual(victims.map((v) => [v.id, v.reason]), [['t0', 'count'], ['t1', 'count'], ['t2', 'count']]);
  });

  it('names age before count when a task passes both limits', () => {
    const victims = chooseVictims({ nowMs: NOW, endedCount: 5, candidates: candidates([30, 20, 2, 1]) }, { maxAgeMs: 10 * DAY, maxCount: 2 });
    assert.deepEqual(victims.map((v) => v.reason), ['age', 'age', 'count']);
  });

  it('above the watermark, removes the oldest until their bytes cover the excess, counting what age and count removals free', () => {
    // 95% of 1000 used, watermark 90%: 50 bytes to free; each task frees 20.
    const limits: RetentionLimits = { diskWatermark: 0.9 };
    const onlyDisk = chooseVictims({ nowMs: NOW, endedCount: 5, candidates: candidates([5, 4, 3, 2, 1], 20), disk: disk(0.95) }, limits);
    assert.deepEqual(onlyDisk.map((v) => [v.id, v.reason]), [['t0', 'disk'], ['t1', 'disk'], ['t2', 'disk']]);
    const withAge = chooseVictims({ nowMs: NOW, endedCount: 5, candidates: candidates([5, 4, 3, 2, 1], 20), disk: disk(0.95) }, { ...limits, maxAgeMs: 4.5 * DAY });
    assert.deepEqual(withAge.map((v) => [v.id, v.reason]), [['t0', 'age'], ['t1', 'disk'], ['t2', 'disk']]);
  });

  it('above the watermark with tasks that free nothing measurable, removes the whole batch (the pass measures again after it)', () => {
    const victims = chooseVictims({ nowMs: NOW, endedCount: 3, candidates: candidates([3, 2, 1], 0), disk: disk(0.99) }, { diskWatermark: 0.9 });
    assert.deepEqual(victims.map((v) => v.reason), ['disk', 'disk', 'disk']);
  });

  it('removes nothing at or below the watermark, without a disk figure, or with every limit off', () => {
    const some = candidates([3, 2, 1], 100);
    assert.deepEqual(chooseVictims({ nowMs: NOW, endedCount: 3, candidates: some, disk: disk(0.9) }, { diskWatermark: 0.9 }), []);
    assert.deepEqual(chooseVictims({ nowMs: NOW, endedCount: 3, candidates: some }, { diskWatermark: 0.5 }), []);
    assert.deepEqual(chooseVictims({ nowMs: NOW, endedCount: 3, candidates: some, disk: disk(0.99) }, {}), []);
    assert.deepEqual(chooseVictims({ nowMs: NOW, endedCount: 0, candidates: [] }, { maxAgeMs: 1, maxCount: 1, diskWatermark: 0.01 }), []);
  });

  it('computes the excess over the watermark in bytes', () => {
    assert.equal(bytesOverWatermark(disk(0.95), 0.9), 50);
    assert.equal(bytesOverWatermark(disk(0.85), 0.9), 0);
    assert.equal(bytesOverWatermark(undefined, 0.9), 0);
    assert.equal(bytesOverWatermark(disk(0.95), undefined), 0);
    assert.equal(bytesOverWatermark({ usedBytes: 0, totalBytes: 0 }, 0.9), 0);
  });
});

describe('TaskRetention: passes over a real store and real output files', () => {
  let dir: string;
  let counter = 0;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'berth-retention-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  interface Fixture {
    store: Store;
    logs: TaskLogStore;
    events: AgentEvent[];
    retention: TaskRetention;
    dbFile: string;
    logDir: string;
  }

  /** A store and output files in a fresh directory, and a retention over them whose forget removes output then records. */
  function fixture(settings: RetentionLimits & { intervalMs?: number }, options: { diskUsage?: () => Promise<DiskUsage>; batchSize?: number } = {}): Fixture {
    const root = path.join(dir, `case-${++counter}`);
    const dbFile = path.join(root, 'berth.db');
    const logDir = path.join(root, 'logs');
    const store = openStore(dbFile);
    const logs = new TaskLogStore(logDir, { maxFileBytes: 1024 * 1024, maxFiles: 2 });
    const agentEvents = new AgentEvents();
    const events: AgentEvent[] = [];
    agentEvents.subscribe((event) => events.push(event));
    const retention = new TaskRetention({
      store,
      forget: async (taskIds) => {
        for (const id of taskIds) await logs.remove(id);
        return store.tasks.deleteEnded(taskIds);
      },
      outputBytes: (taskId) => logs.outputBytes(taskId),
      diskUsage: options.diskUsage ?? (async () => ({ usedBytes: 0, totalBytes: 1 })),
      events: agentEvents,
      logger: silentLogger,
      settings: () => ({ intervalMs: 60_000, ...settings }),
      nowMs: () => NOW,
      batchSize: options.batchSize ?? 500,
    });
    return { store, logs, events, retention, dbFile, logDir };
  }

  async function endedWithOutput(f: Fixture, id: string, endedAtMs: number, lines = 1): Promise<void> {
    f.store.tasks.insert({ id, spec: { image: 'busybox', command: ['true'], env: { PAD: 'p'.repeat(300) } } });
    f.store.tasks.update(id, { to: 'starting' });
    f.store.tasks.update(id, { to: 'running', containerId: 'c'.repeat(64) });
    for (let i = 0; i < lines; i++) {
      await f.logs.append(id, { stream: 'stdout', timestamp: `2024-05-01T10:00:${String(i % 60).padStart(2, '0')}.000000000Z`, data: Buffer.from(`line ${i} ${'x'.repeat(100)}\n`) });
    }
    await f.logs.end(id);
    f.store.tasks.update(id, { to: 'exited', endState: { kind: 'success', exitCode: 0 }, finishedAtMs: endedAtMs });
  }

  const exists = (file: string): boolean => {
    try {
      statSync(file);
      return true;
    } catch {
      return false;
    }
  };

  it('removes, in batches, every task past maxAge and beyond maxCount, records and output files both, with one event each, and leaves unended tasks alone', async () => {
    const f = fixture({ maxAgeMs: 7 * DAY, maxCount: 3 }, { batchSize: 2 });
    for (let i = 0; i < 4; i++) await endedWithOutput(f, `old${i}`, NOW - (11 - i) * DAY);
    for (let i = 0; i < 5; i++) await endedWithOutput(f, `young${i}`, NOW - (5 - i) * DAY);
    f.store.tasks.insert({ id: 'pending', spec: { image: 'busybox' } });
    f.store.tasks.insert({ id: 'running', spec: { image: 'busybox' } });
    f.store.tasks.update('running', { to: 'starting' });

    const report = await f.retention.runNow();
    assert.deepEqual(report.removed, { age: 4, count: 2, disk: 0 });
    assert.deepEqual(
      f.store.tasks.list().map((t) => t.id),
      ['young2', 'young3', 'young4', 'pending', 'running'],
    );
    for (const gone of ['old0', 'old3', 'young0', 'young1']) assert.equal(exists(path.join(f.logDir, gone)), false, gone);
    assert.equal(exists(path.join(f.logDir, 'young2', 'output.log')), true);
    const expired = f.events.filter((e) => e.type === 'task.expired');
    assert.deepEqual(
      expired.map((e) => [e.taskId, e.reason]),
      [['old0', 'age'], ['old1', 'age'], ['old2', 'age'], ['old3', 'age'], ['young0', 'count'], ['young1', 'count']],
    );
    assert.equal((expired[0] as Extract<AgentEvent, { type: 'task.expired' }>).endedAt, new Date(NOW - 11 * DAY).toISOString());

    // A second pass finds nothing more to do.
    assert.deepEqual((await f.retention.runNow()).removed, { age: 0, count: 0, disk: 0 });
    await f.retention.close();
    f.store.close();
  });

  it('above the watermark removes the oldest until the disk, measured again after each batch, is below it', async () => {
    // The file system as the reader sees it: others' bytes, plus the output files the store still has.
    const totalBytes = 10_000_000;
    let othersBytes = 0;
    let measures = 0;
    const f: Fixture = fixture({ diskWatermark: 0.9 }, {
      batchSize: 2,
      diskUsage: async () => {
        measures++;
        let outputBytes = 0;
        for (const task of f.store.tasks.list()) outputBytes += await f.logs.outputBytes(task.id);
        return { usedBytes: othersBytes + outputBytes, totalBytes };
      },
    });
    for (let i = 0; i < 6; i++) await endedWithOutput(f, `t${i}`, NOW - (6 - i) * DAY, 10);
    const perTask = await f.logs.outputBytes('t0');
    assert.ok(perTask > 1000, `${perTask} bytes of output per task`);
    // Over the watermark by two and a half tasks' output: the three oldest must go.
    othersBytes = Math.ceil(0.9 * totalBytes + 2.5 * perTask) - 6 * perTask;
    const report = await f.retention.runNow();
    assert.deepEqual(report.removed, { age: 0, count: 0, disk: 3 });
    assert.deepEqual(f.store.tasks.list().map((t) => t.id), ['t3', 't4', 't5']);
    assert.ok(measures >= 2, 'measured again after the first batch of two');
    assert.deepEqual(f.events.filter((e) => e.type === 'task.expired').map((e) => e.reason), ['disk', 'disk', 'disk']);
    await f.retention.close();
    f.store.close();
  });

  it('runs on its schedule after start and stops on close', async () => {
    const f = fixture({ maxCount: 1, intervalMs: 1000 });
    await endedWithOutput(f, 'a', NOW - 3 * DAY);
    await endedWithOutput(f, 'b', NOW - 2 * DAY);
    f.retention.start();
    await pollUntil('the first pass to remove a', () => (f.store.tasks.get('a') === undefined ? true : undefined));
    await endedWithOutput(f, 'c', NOW - DAY);
    // The next round (a second later) removes b.
    await pollUntil('the next round to remove b', () => (f.store.tasks.get('b') === undefined ? true : undefined));
    await f.retention.close();
    await endedWithOutput(f, 'd', NOW);
    assert.equal(f.store.tasks.countEnded(), 2, 'nothing runs after close');
    f.store.close();
  });

  it('a pass asked for while one is under way runs after it and reports only its own removals, shared by every ask meanwhile (the watermark test raced the pass it joined)', async () => {
    // The disk is over its watermark until the first pass's removals are done; the first pass is held after measuring.
    let usedBytes = 2000;
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let measures = 0;
    const f = fixture({ diskWatermark: 0.5 }, {
      diskUsage: async () => {
        const measured = { usedBytes, totalBytes: 2000 };
        measures++;
        if (measures === 1) await held;
        return measured;
      },
    });
    for (let i = 0; i < 3; i++) await endedWithOutput(f, `t${i}`, NOW - (3 - i) * DAY, 20);
    const first = f.retention.runNow();
    while (measures === 0) await new Promise((resolve) => setImmediate(resolve));
    const [second, third] = [f.retention.runNow(), f.retention.runNow()];
    assert.equal(second, third, 'asks made while a pass waits share it');
    usedBytes = 500;
    release();
    assert.deepEqual((await first).removed, { age: 0, count: 0, disk: 1 });
    // The later pass measured after the first one's removals: below the watermark, it removes nothing and says so.
    assert.deepEqual((await second).removed, { age: 0, count: 0, disk: 0 });
    assert.deepEqual(f.events.flatMap((e) => (e.type === 'task.expired' ? [e.taskId] : [])), ['t0']);
    await f.retention.close();
    f.store.close();
  });

  it('a pass that fails is logged once while the failure repeats, counted each time, and the next pass that works says so', async () => {
    const store = openStore(path.join(dir, `case-${++counter}`, 'berth.db'));
    store.tasks.insert({ id: 'a', spec: { image: 'busybox' } });
    store.tasks.update('a', { to: 'exited', endState: { kind: 'cancelled' }, finishedAtMs: NOW - 10 * DAY });
    const logger = recordingLogger();
    const codes: string[] = [];
    let failing = true;
    const retention = new TaskRetention({
      store,
      forget: async (taskIds) => {
        if (failing) throw new BerthError('BERTH_DISK_FULL', 'no space left');
        return store.tasks.deleteEnded(taskIds);
      },
      outputBytes: async () => 0,
      diskUsage: async () => {
        throw new Error('statfs failed');
      },
      events: new AgentEvents(),
      logger,
      onError: (code) => codes.push(code),
      settings: () => ({ intervalMs: 60_000, maxAgeMs: DAY, diskWatermark: 0.9 }),
      nowMs: () => NOW,
    });
    assert.deepEqual((await retention.runNow()).removed, { age: 0, count: 0, disk: 0 });
    assert.deepEqual((await retention.runNow()).removed, { age: 0, count: 0, disk: 0 });
    assert.deepEqual(codes, ['BERTH_DISK_FULL', 'BERTH_DISK_FULL']);
    assert.deepEqual(logger.lines.filter((l) => l.level === 'warn').map((l) => l.message), [
      'could not measure the data directory\'s disk; retention by watermark waits until it can',
      'retention pass failed; the next one tries again',
    ]);
    failing = false;
    assert.deepEqual((await retention.runNow()).removed, { age: 1, count: 0, disk: 0 });
    assert.ok(logger.lines.some((l) => l.level === 'info' && l.message === 'retention passes work again'));
    await retention.close();
    store.close();
  });

  it('gives the space of many removed records back: the database file shrinks', async () => {
    const f = fixture({ maxCount: 10 });
    f.store.transaction(() => {
      for (let i = 0; i < 3000; i++) {
        const id = `bulk${i}`;
        f.store.tasks.insert({ id, spec: { image: 'busybox', command: ['true'], env: { PAD: 'p'.repeat(300) } } });
        f.store.tasks.update(id, { to: 'exited', endState: { kind: 'cancelled' }, finishedAtMs: NOW - 3000 + i });
      }
    });
    f.store.checkpoint();
    const before = statSync(f.dbFile).size;
    const report = await f.retention.runNow();
    assert.equal(report.removed.count, 2990);
    assert.ok(report.reclaimedPages > 0);
    const afterBytes = statSync(f.dbFile).size;
    assert.ok(afterBytes < before / 4, `the database file went from ${before} to ${afterBytes} bytes`);
    await f.retention.close();
    f.store.close();
  });
});
