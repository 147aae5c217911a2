import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import type { Logger } from '../../../src/common/logger.js';
import { oomKillCounterReader, oomKillsFromV1, oomKillsFromV2 } from '../../../src/tasks/cgroup.js';
import { oomKilledContainerOf, oomKilledContainersInLog, OomWatch, type OomEvidence } from '../../../src/tasks/oom-watch.js';
import { ScriptedEngine, scriptedHandle } from './scripted-engine.js';

const quiet: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'berth-oom-'));
  dirs.push(dir);
  return dir;
}

const ID_A = 'a'.repeat(64);
const ID_B = '0123456789abcdef'.repeat(4);
const v1OomControl = (kills: number): string => `oom_kill_disable 0\nunder_oom 0\noom_kill ${kills}\n`;
const v2MemoryEvents = (kills: number): string => `low 0\nhigh 0\nmax 12\noom 1\noom_kill ${kills}\noom_group_kill 0\n`;

/** A v1 hierarchy with a memory controller, the container's cgroup under the cgroupfs driver's path. */
async function v1Tree(containerId: string, oomControl: string): Promise<{ root: string; file: string }> {
  const root = await tempDir();
  const dir = path.join(root, 'memory', 'docker', containerId);
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, 'memory.oom_control');
  await writeFile(file, oomControl);
  return { root, file };
}

/** A v2 hierarchy, the container's cgroup under the systemd driver's path. */
async function v2Tree(containerId: string, memoryEvents: string): Promise<{ root: string; dir: string }> {
  const root = await tempDir();
  await writeFile(path.join(root, 'cgroup.controllers'), 'cpu memory pids\n');
  const dir = path.join(root, 'system.slice', `docker-${containerId}.scope`);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'memory.events'), memoryEvents);
  return { root, dir };
}

describe('OOM kill counters of a container\'s memory cgroup', () => {
  it('reads oom_kill from v1 memory.oom_control and v2 memory.events, undefined on a kernel that keeps none', () => {
    assert.equal(oomKillsFromV1(v1OomControl(2)), 2);
    assert.equal(oomKillsFromV2(v2MemoryEvents(1)), 1);
    assert.equal(oomKillsFromV1('oom_kill_disable 0\nunder_oom 0\n'), undefined);
  });

  it('finds the container under the cgroupfs (v1) and systemd (v2) layouts, and says when its cgroup is gone', async () => {
    const v1 = await v1Tree(ID_A, v1OomControl(1));
    const readV1 = oomKillCounterReader(v1.root)!;
    assert.equal(readV1(ID_A), 1);
    assert.equal(readV1(ID_B), undefined);
    const v2 = await v2Tree(ID_B, v2MemoryEvents(3));
    const readV2 = oomKillCounterReader(v2.root)!;
    assert.equal(readV2(ID_B), 3);
    await rm(v2.dir, { recursive: true });
    assert.equal(readV2(ID_B), undefined);
  });

  it('reads null where the kernel keeps no counter, and has no reader without a memory hierarchy', async () => {
    const v1 = await v1Tree(ID_A, 'oom_kill_disable 0\nunder_oom 0\n');
    assert.equal(oomKillCounterReader(v1.root)!(ID_A), null);
    assert.equal(oomKillCounterReader(await tempDir()), undefined);
  });
});

describe('OOM kill records of the kernel\'s log', () => {
  const modern = (id: string): string =>
    `6,2301,42150570258,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=${id},mems_allowed=0,oom_memcg=/docker/${id},task_memcg=/docker/${id},task=dd,pid=13191,uid=0`;

  it('names the victim\'s container from a /dev/kmsg record, a systemd scope and the format before Linux 4.19', () => {
    assert.equal(oomKilledContainerOf(modern(ID_A)), ID_A);
    assert.equal(oomKilledContainerOf(`oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),oom_memcg=/system.slice/docker-${ID_B}.scope,task_memcg=/system.slice/docker-${ID_B}.scope,task=sh,pid=1,uid=0`), ID_B);
    assert.equal(oomKilledContainerOf(`4,100,5,-;Task in /docker/${ID_B} killed as a result of limit of /docker/${ID_B}`), ID_B);
  });

  it('ignores other records: the stats dump that names the cgroup, a host-wide OOM kill, unrelated lines', () => {
    assert.equal(oomKilledContainerOf(`6,2299,42150570149,-;Memory cgroup stats for /docker/${ID_A}:`), undefined);
    assert.equal(oomKilledContainerOf('6,9,1,-;oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice,task=java,pid=9,uid=0'), undefined);
    assert.equal(oomKilledContainerOf(`6,10,1,-;eth0: renamed ${ID_A}`), undefined);
  });

  it('collects the OOM-killed containers of a whole log, a line cut across reads included; undefined when it cannot be read', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'kmsg');
    const filler = Array.from({ length: 3000 }, (_, index) => `6,${index},1,-;noise ${index}`).join('\n');
    await writeFile(file, `${filler}\n${modern(ID_A)}\n${filler}\n${modern(ID_B)}`);
    assert.deepEqual([...(await oomKilledContainersInLog(file))!].sort(), [ID_B, ID_A].sort());
    assert.equal(await oomKilledContainersInLog(path.join(dir, 'absent')), undefined);
  });
});

describe('OomWatch', () => {
  it('counts an OOM kill read before the cgroup went away, and keeps it after', async () => {
    const { root, file } = await v1Tree(ID_A, v1OomControl(0));
    const watch = new OomWatch({ cgroupRoot: root, kernelLogPath: false, logger: quiet });
    watch.track(ID_A);
    assert.equal(watch.countedKill(ID_A), false);
    await writeFile(file, v1OomControl(1));
    watch.readNow(ID_A);
    await rm(path.dirname(file), { recursive: true });
    watch.readNow(ID_A);
    assert.equal(watch.countedKill(ID_A), true);
    assert.equal(await watch.showsOomKill(ID_A), true);
    watch.close();
  });

  it('reads every followed container on its interval', async () => {
    const { root, file } = await v1Tree(ID_A, v1OomControl(0));
    const watch = new OomWatch({ cgroupRoot: root, kernelLogPath: false, intervalMs: 5, logger: quiet });
    watch.track(ID_A);
    await writeFile(file, v1OomControl(1));
    const deadline = Date.now() + 5000;
    while (!watch.countedKill(ID_A) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(watch.countedKill(ID_A), true);
    watch.close();
  });

  it('takes an OOM kill from the kernel\'s log when the cgroup was gone before any reading counted it', async () => {
    const root = await tempDir();
    const log = path.join(root, 'kmsg');
    await writeFile(log, `6,1,1,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),oom_memcg=/docker/${ID_B},task_memcg=/docker/${ID_B},task=dd,pid=5,uid=0\n`);
    const watch = new OomWatch({ cgroupRoot: root, kernelLogPath: log, logger: quiet });
    watch.track(ID_A);
    watch.track(ID_B);
    assert.deepEqual(await Promise.all([watch.showsOomKill(ID_B), watch.showsOomKill(ID_A)]), [true, false]);
    watch.close();
  });

  it('shows nothing where neither the cgroup nor the kernel\'s log can be read', async () => {
    const watch = new OomWatch({ cgroupRoot: await tempDir(), kernelLogPath: path.join(await tempDir(), 'absent'), logger: quiet });
    watch.track(ID_A);
    assert.equal(await watch.showsOomKill(ID_A), false);
    watch.close();
  });
});

describe('a task handle with the kernel\'s OOM evidence', () => {
  const evidence = (shows: { counted: boolean; logged: boolean }): OomEvidence & { asked: string[] } => {
    const asked: string[] = [];
    return {
      asked,
      readNow: (id) => void asked.push(`read ${id}`),
      countedKill: () => shows.counted,
      showsOomKill: async (id) => (asked.push(`shows ${id}`), shows.counted || shows.logged),
    };
  };

  it('ends oom when the kernel logged the kill of a memory-limited task the engine reports as a plain SIGKILL', async () => {
    const engine = new ScriptedEngine();
    const oom = evidence({ counted: false, logged: true });
    const scripted = scriptedHandle(engine, { image: 'img', resources: { memory: '16m' } }, { oomEvidence: oom });
    await scripted.start();
    engine.exit(scripted.containerId, 137);
    const end = await scripted.handle.wait();
    assert.equal(end.kind, 'oom');
    assert.deepEqual(oom.asked, [`read ${scripted.containerId}`, `shows ${scripted.containerId}`]);
  });

  it('ends oom, whatever the exit code and the engine\'s flag, when the cgroup counted an OOM kill', async () => {
    const engine = new ScriptedEngine();
    const scripted = scriptedHandle(engine, { image: 'img', resources: { memory: '16m' } }, { oomEvidence: evidence({ counted: true, logged: false }) });
    await scripted.start();
    engine.exit(scripted.containerId, 1);
    assert.deepEqual(await scripted.handle.wait(), { kind: 'oom', exitCode: 1, hint: 'the task ran out of memory: raise its memory limit of 16 MiB' });
  });

  it('ends failed when neither the kernel nor the engine shows an OOM kill', async () => {
    const engine = new ScriptedEngine();
    const scripted = scriptedHandle(engine, { image: 'img', resources: { memory: '16m' } }, { oomEvidence: evidence({ counted: false, logged: false }) });
    await scripted.start();
    engine.exit(scripted.containerId, 137);
    // The engine's flag is read again for a while on timers that do not hold a process open: this test's does.
    const keepAlive = setInterval(() => undefined, 100);
    try {
      assert.deepEqual(await scripted.handle.wait(), { kind: 'failed', exitCode: 137 });
    } finally {
      clearInterval(keepAlive);
    }
  });
});
