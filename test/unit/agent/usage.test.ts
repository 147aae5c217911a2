import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { AgentEvents } from '../../../src/agent/events.js';
import { AgentMetrics } from '../../../src/agent/metrics.js';
import { addReading, parseFlatKeyed, parseSingleValue, readingFromV1, readingFromV2, UsageSampler, usageOf, type CgroupReading } from '../../../src/agent/usage.js';
import { toTaskView } from '../../../src/agent/http/views.js';
import { Events } from '../../../src/common/events.js';
import type { Logger } from '../../../src/common/logger.js';
import type { ImageCoordinatorEvents } from '../../../src/images/index.js';
import { endTransition, openStore, TASK_STATES, type TaskRecord, type TaskState } from '../../../src/state/index.js';
import { pollUntil } from '../../support/engine.js';

const quiet: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'berth-usage-'));
  dirs.push(dir);
  return dir;
}

const V1_CPU_STAT = 'nr_periods 40\nnr_throttled 12\nthrottled_time 830000000\nnr_bursts 0\nburst_time 0\n';

describe('cgroup file parsing', () => {
  it('reads flat keyed files and single values, ignoring blank and non-numeric lines', () => {
    assert.deepEqual([...parseFlatKeyed(V1_CPU_STAT)], [['nr_periods', 40], ['nr_throttled', 12], ['throttled_time', 830000000], ['nr_bursts', 0], ['burst_time', 0]]);
    assert.deepEqual([...parseFlatKeyed('user 10\n\nsystem x\n')], [['user', 10]]);
    assert.equal(parseSingleValue('1257667109821\n'), 1257667109821);
    assert.equal(parseSingleValue('max\n'), undefined);
    assert.equal(parseSingleValue(''), undefined);
  });

  it('takes a v1 reading from cpuacct.usage, cpu.stat and the memory high-water mark', () => {
    const reading = readingFromV1({ cpuacctUsage: '2500000000\n', cpuStat: V1_CPU_STAT, memoryMaxUsage: '52428800\n', memoryUsage: '1048576\n' });
    assert.deepEqual(reading, { cpuNanos: 2_500_000_000, peakMemoryBytes: 52_428_800, memoryBytes: 1_048_576, throttledPeriods: 12, throttledNanos: 830_000_000 });
  });

  it('takes a v2 reading in microseconds, with memory.peak when the kernel has it', () => {
    const cpuStat = 'usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 3\nthrottled_usec 20000\n';
    assert.deepEqual(readingFromV2({ cpuStat, memoryCurrent: '4096\n', memoryPeak: '8192\n' }), { cpuNanos: 1_500_000_000, peakMemoryBytes: 8192, memoryBytes: 4096, throttledPeriods: 3, throttledNanos: 20_000_000 });
    assert.equal(readingFromV2({ cpuStat, memoryCurrent: '4096\n' }).peakMemoryBytes, undefined);
  });
});

describe('usage computation', () => {
  const reading = (over: Partial<CgroupReading>): CgroupReading => ({ cpuNanos: 0, memoryBytes: 0, throttledPeriods: 0, throttledNanos: 0, ...over });

  it('keeps the latest cumulative counters and the highest memory seen, high-water mark or reading', () => {
    let tally = addReading(undefined, reading({ cpuNanos: 1e9, memoryBytes: 30e6 }), 1000);
    tally = addReading(tally, reading({ cpuNanos: 2e9, memoryBytes: 10e6 }), 2000);
    // A reading that arrives late, with older counters, does not move them back.
    tally = addReading(tally, reading({ cpuNanos: 1.5e9, memoryBytes: 5e6 }), 1500);
    assert.equal(tally.samples, 3);
    assert.equal(tally.last.cpuNanos, 2e9);
    assert.equal(tally.peakMemoryBytes, 30e6);
    tally = addReading(tally, reading({ cpuNanos: 3e9, memoryBytes: 1e6, peakMemoryBytes: 64e6, throttledPeriods: 2, throttledNanos: 15e6 }), 3000);
    assert.deepEqual(usageOf(tally, { oomKilled: false }), {
      cpuTimeMs: 3000,
      peakMemoryBytes: 64e6,
      throttled: true,
      throttledPeriods: 2,
      throttledTimeMs: 15,
      oomKilled: false,
      samples: 4,
      sampledAt: new Date(3000).toISOString(),
    });
  });

  it('says throttled for a task that ran out of memory, and not for one the quota never held back', () => {
    const tally = addReading(undefined, reading({ cpuNanos: 1e6 }), 0);
    assert.equal(usageOf(tally, { oomKilled: false }).throttled, false);
    assert.deepEqual([usageOf(tally, { oomKilled: true }).throttled, usageOf(tally, { oomKilled: true }).oomKilled], [true, true]);
  });
});

describe('UsageSampler over a cgroup tree', () => {
  async function v1Container(root: string, id: string, cpuNanos: number, peakBytes: number): Promise<void> {
    for (const controller of ['cpu', 'cpuacct', 'memory']) await mkdir(path.join(root, controller, 'docker', id), { recursive: true });
    await writeFile(path.join(root, 'cpuacct', 'docker', id, 'cpuacct.usage'), `${cpuNanos}\n`);
    await writeFile(path.join(root, 'cpu', 'docker', id, 'cpu.stat'), 'nr_periods 0\nnr_throttled 0\nthrottled_time 0\n');
    await writeFile(path.join(root, 'memory', 'docker', id, 'memory.max_usage_in_bytes'), `${peakBytes}\n`);
    await writeFile(path.join(root, 'memory', 'docker', id, 'memory.usage_in_bytes'), '4096\n');
  }

  it('reads a cgroup v1 container at track and on each interval, and gives the last figures once its cgroup is gone', async () => {
    const root = await tempDir();
    await v1Container(root, 'c1', 1e9, 10e6);
    const sampler = new UsageSampler({ cgroupRoot: root, intervalMs: 20, logger: quiet });
    sampler.track('t1', 'c1');
    await v1Container(root, 'c1', 2e9, 20e6);
    // The counters grow; the timer reads them (both: a tick may fall between the two files' writes).
    await pollUntil(
      'a reading of the new counters',
      async () => {
        const now = sampler.current('t1');
        return now?.cpuTimeMs === 2000 && now.peakMemoryBytes === 20e6 ? true : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 10 },
    );
    await rm(path.join(root, 'cpuacct', 'docker', 'c1'), { recursive: true });
    const outcome = await sampler.end('t1', { oomKilled: false });
    assert.ok(outcome && 'usage' in outcome, JSON.stringify(outcome));
    assert.equal(outcome.usage.cpuTimeMs, 2000);
    assert.equal(outcome.usage.peakMemoryBytes, 20e6);
    assert.ok(outcome.usage.samples >= 2);
    assert.equal(await sampler.end('t1', { oomKilled: false }), undefined, 'a task is ended once');
    sampler.close();
  });

  it('reads a cgroup v2 container under the systemd driver\'s path', async () => {
    const root = await tempDir();
    await writeFile(path.join(root, 'cgroup.controllers'), 'cpu memory\n');
    const dir = path.join(root, 'system.slice', 'docker-c2.scope');
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'cpu.stat'), 'usage_usec 250000\nnr_throttled 5\nthrottled_usec 1000\n');
    await writeFile(path.join(dir, 'memory.current'), '1000\n');
    await writeFile(path.join(dir, 'memory.peak'), '5000\n');
    const sampler = new UsageSampler({ cgroupRoot: root, intervalMs: 60_000, logger: quiet });
    sampler.track('t2', 'c2');
    const outcome = await sampler.end('t2', { oomKilled: false });
    assert.deepEqual(outcome && 'usage' in outcome ? [outcome.usage.cpuTimeMs, outcome.usage.peakMemoryBytes, outcome.usage.throttled, outcome.usage.samples] : outcome, [250, 5000, true, 1]);
    sampler.close();
  });

  it('says why there is no usage: no readable cgroups, or a container gone before the first reading', async () => {
    const empty = await tempDir();
    const none = new UsageSampler({ cgroupRoot: empty, logger: quiet });
    none.track('t', 'c');
    const unreadable = await none.end('t', { oomKilled: false });
    assert.match(unreadable && 'missing' in unreadable ? unreadable.missing : '', /not readable/);
    const root = await tempDir();
    await v1Container(root, 'other', 1, 1);
    const sampler = new UsageSampler({ cgroupRoot: root, logger: quiet });
    sampler.track('t', 'gone');
    const gone = await sampler.end('t', { oomKilled: false });
    assert.match(gone && 'missing' in gone ? gone.missing : '', /ended before the agent's first reading/);
    assert.equal(await sampler.end('never-tracked', { oomKilled: false }), undefined);
    none.close();
    sampler.close();
  });
});

describe('usage in the record, the view and the metrics', () => {
  it('is stored once at the end, shown in the view, and counted by the metrics when the end is announced', async () => {
    const store = openStore(path.join(await tempDir(), 'berth.db'));
    const spec = { image: 'busybox:latest', command: ['true'] };
    for (const id of ['a', 'b']) {
      store.tasks.insert({ id, spec });
      store.tasks.update(id, { to: 'starting' });
      store.tasks.update(id, { to: 'running', containerId: `c-${id}` });
    }
    const usage = { cpuTimeMs: 1500, peakMemoryBytes: 50 * 1024 * 1024, throttled: true, throttledPeriods: 7, throttledTimeMs: 300, oomKilled: false, samples: 3, sampledAt: new Date(0).toISOString() };
    store.tasks.setUsage('a', { usage });
    // The first record stands.
    store.tasks.setUsage('a', { missing: 'late' });
    store.tasks.setUsage('b', { missing: 'the container ended before the agent\'s first reading' });

    const events = new AgentEvents();
    const metrics = new AgentMetrics({
      taskCounts: () => Object.fromEntries(TASK_STATES.map((s) => [s, 0])) as Record<TaskState, number>,
      task: (id) => store.tasks.get(id),
      events,
      images: new Events<ImageCoordinatorEvents>(),
      processMetrics: false,
    });
    for (const id of ['a', 'b']) {
      const record: TaskRecord = store.tasks.update(id, endTransition({ kind: 'success', exitCode: 0 }));
      events.emit({ type: 'task.state', taskId: id, state: record.state });
    }
    const a = toTaskView(store.tasks.get('a')!);
    assert.deepEqual(a.usage, usage);
    assert.equal(a.usageMissing, undefined);
    const b = toTaskView(store.tasks.get('b')!);
    assert.deepEqual([b.usage, b.usageMissing], [undefined, 'the container ended before the agent\'s first reading']);
    const text = await metrics.render();
    assert.match(text, /^berth_task_cpu_seconds_total 1\.5$/m);
    assert.match(text, /^berth_tasks_throttled_total 1$/m);
    assert.match(text, /^berth_task_peak_memory_bytes_count 1$/m);
    assert.match(text, /^berth_task_peak_memory_bytes_bucket\{le="67108864"\} 1$/m);
    assert.match(text, /^berth_task_peak_memory_bytes_bucket\{le="16777216"\} 0$/m);
    assert.match(text, /^berth_task_usage_missing_total 1$/m);
    metrics.close();
    store.close();
  });
});
