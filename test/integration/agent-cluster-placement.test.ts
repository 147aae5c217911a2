/**
 * Cluster placement through real agent processes (issue 18), three agents with their own node ids,
 * data directories and labels against a private PostgreSQL of the file's own and the shared engine:
 * tasks submitted to any agent are queued, claimed and run exactly once with the right end;
 * constraints are respected; a SIGKILLed agent's tasks end lost after its lease (or run again
 * elsewhere under a restart policy on `lost`), and the restarted agent removes its fenced
 * containers; a SIGSTOPped agent past its lease reports nothing stale and removes its fenced
 * containers; PostgreSQL stopped mid-run loses and doubles nothing. Short leases (4 s: with 1.5 s, 300
 * containers at once on a loaded 2-core host let heartbeats fall behind and nodes lose their leases for real).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ClusterStore, type ClusterEvent, type ClusterTask } from '../../src/cluster/index.js';
import type { AgentClient } from '../../src/agent/client.js';
import { pollUntil, requireEngine, testEngine, TEST_ENGINE_SOCKET, TEST_IMAGE } from '../support/engine.js';
import { agentClientOf, agentTestFile, berth, httpGet, startServedAgent, taskOutput, writeAgentConfig, type RunningAgent } from '../support/agent.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { createTestDatabase, requirePostgres, startPrivatePostgres, type PrivatePostgres } from '../support/postgres.js';

const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);
const skip = (await requireEngine()) || (await requirePostgres());
/** The nodes' shared credential: requests through one node for a task on another are forwarded with it. */
const CLUSTER_TOKEN = 'placement-secret-0123456789abcdef';

interface Member {
  readonly name: string;
  readonly nodeId: string;
  readonly dataDir: string;
  readonly config: string;
  agent: RunningAgent;
  client: AgentClient;
}

describe('cluster placement through real agents', { skip }, () => {
  let server: PrivatePostgres;
  let url: string;
  let cluster: ClusterStore;
  const members: Member[] = [];

  const startMember = async (name: string, labels: Record<string, string>, lease = '4s'): Promise<Member> => {
    const dataDir = await dirs.make(`berth-cp-${name}-`);
    const nodeId = `${run.id}-${name}`;
    const config = await writeAgentConfig(
      dataDir,
      ['listen: 127.0.0.1:0', 'cluster:', `  postgres: ${url}`, `  nodeId: ${nodeId}`, `  labels: ${JSON.stringify(labels)}`, '  capacity: { tasks: 12 }', `  lease: ${lease}`, '  heartbeat: 500ms', `  token: ${CLUSTER_TOKEN}`].join('\n'),
    );
    const agent = await agents.start(dataDir, ['--config', config]);
    const member: Member = { name, nodeId, dataDir, config, agent, client: await agentClientOf(agent) };
    members.push(member);
    return member;
  };
  const restart = async (member: Member): Promise<void> => {
    member.agent = await agents.start(member.dataDir, ['--config', member.config]);
    member.client = await agentClientOf(member.agent);
  };
  const memberOf = (nodeId: string | undefined): Member => members.find((m) => m.nodeId === nodeId)!;
  const named = (name: string): Member => members.find((m) => m.name === name)!;
  const allReady = async (): Promise<void> => {
    await pollUntil('all nodes ready', async () => {
      const nodes = await cluster.listNodes();
      return members.every((m) => nodes.find((n) => n.nodeId === m.nodeId)?.state === 'ready') ? true : undefined;
    }, { timeoutMs: 30_000, intervalMs: 100 });
  };
  const spec = (command: string, extra: Partial<TaskSpec> = {}): TaskSpec => ({ image: TEST_IMAGE, command: ['sh', '-c', command], labels: { ...run.labels }, ...extra });
  const tasksOf = async (ids: readonly string[]): Promise<ClusterTask[]> => Promise.all(ids.map(async (id) => (await cluster.getTask(id))!));
  const until = async (what: string, ids: readonly string[], check: (task: ClusterTask) => boolean, timeoutMs = 60_000): Promise<ClusterTask[]> => {
    let last: ClusterTask[] = [];
    try {
      return await pollUntil(what, async () => {
        last = await tasksOf(ids);
        return last.every(check) ? last : undefined;
      }, { timeoutMs, intervalMs: 200 });
    } catch (error) {
      const states = new Map<string, number>();
      for (const task of last) states.set(`${task.state}@${task.nodeId ?? '-'}`, (states.get(`${task.state}@${task.nodeId ?? '-'}`) ?? 0) + 1);
      const odd = last.filter((task) => !check(task)).slice(0, 3).map((task) => `${task.id}: ${task.state} ${task.endReason ?? ''}`);
      throw new Error(`${String(error)}; tasks by state: ${JSON.stringify([...states])}; ${odd.join('; ')}`, { cause: error });
    }
  };
  const allEvents = async (): Promise<ClusterEvent[]> => {
    const events: ClusterEvent[] = [];
    let cursor: string | undefined;
    for (;;) {
      const page = await cluster.readEvents({ ...(cursor === undefined ? {} : { after: cursor }), limit: 1000 });
      events.push(...page.events);
      if (page.events.length === 0) return events;
      cursor = page.cursor;
    }
  };
  const containersOf = async (taskId: string): Promise<string[]> =>
    (await engine.listContainers({ all: true, labels: [run.labelFilter] })).flatMap((c) => c.names).filter((name) => name.includes(`berth-${taskId}.`) || name.includes(`/${taskId}.`) || name.includes(taskId));
  const metric = async (member: Member, name: string): Promise<number | undefined> => {
    const line = (await member.client.metrics()).split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? undefined : Number(line.split(' ')[1]);
  };

  before(async () => {
    server = await startPrivatePostgres();
    url = (await createTestDatabase(server.port)).url;
    cluster = await ClusterStore.open({ connectionString: url, lease: 4000 });
    await Promise.all([startMember('n1', { disk: 'ssd' }), startMember('n2', { disk: 'hdd' }), startMember('n3', { disk: 'hdd' })]);
    await allReady();
  });
  after(async () => {
    await agents.killAll();
    await cluster?.close();
    await server?.destroy();
  });

  test('300 short tasks submitted round-robin through the three agents each run exactly once, with the right exit code, on every node', async () => {
    const count = 300;
    const ids = Array.from({ length: count }, (_, i) => `${run.id}-t${i}`);
    // Concurrently, a few at a time per agent.
    let next = 0;
    await Promise.all(Array.from({ length: 12 }, async () => {
      for (let i = next++; i < count; i = next++) {
        const via = members[i % 3]!;
        const outcome = await via.client.submitTask({ id: ids[i]!, spec: spec(`echo ${i}; exit ${i % 3}`) });
        assert.equal(outcome.task.state, 'pending');
      }
    }));
    // The same submit again is the same task (200), and another spec under a used id is refused.
    assert.equal((await members[1]!.client.submitTask({ id: ids[0]!, spec: spec('echo 0; exit 0') })).created, false);
    await assert.rejects(members[2]!.client.submitTask({ id: ids[0]!, spec: spec('echo other') }), (error: { code?: string }) => error.code === 'BERTH_TASK_EXISTS');
    const ended = await until('all 300 tasks to exit', ids, (task) => task.state === 'exited', 150_000);
    for (const [i, task] of ended.entries()) {
      assert.equal(task.exitCode, i % 3, `${task.id}: ${JSON.stringify(task)}`);
      assert.equal(task.endReason, i % 3 === 0 ? 'success' : 'failed');
      assert.equal(task.attempt, 1);
    }
    const events = (await allEvents()).filter((e) => e.taskId !== undefined && ids.includes(e.taskId));
    for (const kind of ['task.claimed', 'task.running', 'task.exited'] as const) {
      const per = new Map<string, number>();
      for (const event of events.filter((e) => e.kind === kind)) per.set(event.taskId!, (per.get(event.taskId!) ?? 0) + 1);
      assert.equal(per.size, count, kind);
      assert.ok([...per.values()].every((n) => n === 1), `${kind} more than once: ${JSON.stringify([...per].filter(([, n]) => n > 1))}`);
    }
    // Each agent ran some, and each task is in exactly one agent's own records, ended as the cluster says, with its output.
    const byNode = new Map<string, number>();
    for (const task of ended) byNode.set(task.nodeId!, (byNode.get(task.nodeId!) ?? 0) + 1);
    assert.deepEqual([...byNode.keys()].sort(), members.map((m) => m.nodeId).sort(), JSON.stringify([...byNode]));
    const seen = new Map<string, string>();
    for (const member of members) {
      // The list is the cluster's (the index merged with the node's own records, which win): the node's own show it as their node.
      for (const view of (await member.client.list({ state: ['exited'], label: [`berth-test.run=${run.id}`] })).filter((v) => v.node === member.nodeId)) {
        assert.equal(seen.has(view.id), false, `${view.id} ran on ${seen.get(view.id)} and ${member.name}`);
        seen.set(view.id, member.nodeId);
      }
    }
    for (const task of ended) assert.equal(seen.get(task.id), task.nodeId, task.id);
    const sample = ended[7]!;
    assert.deepEqual(await taskOutput(memberOf(sample.nodeId).client, sample.id), ['7\n']);
    await pollUntil('no container left', async () => ((await engine.listContainers({ all: true, labels: [run.labelFilter] })).length === 0 ? true : undefined), { timeoutMs: 60_000, intervalMs: 250 });
    for (const member of members) {
      assert.ok((await metric(member, 'berth_cluster_claimed_total'))! > 0, member.name);
      assert.equal(await metric(member, 'berth_cluster_reports_pending'), 0);
    }
  });

  test('tasks constrained to node.disk: ssd run only on the ssd node; one no node satisfies stays queued', async () => {
    const ids = Array.from({ length: 6 }, (_, i) => `${run.id}-ssd${i}`);
    for (const [i, id] of ids.entries()) await members[(i + 1) % 3]!.client.submitTask({ id, spec: spec('exit 0', { constraints: { 'node.disk': 'ssd' } }) });
    const nowhere = `${run.id}-nvme`;
    await members[1]!.client.submitTask({ id: nowhere, spec: spec('exit 0', { constraints: { 'node.disk': 'nvme' }, priority: 5 }) });
    const ended = await until('the ssd tasks to exit', ids, (task) => task.state === 'exited');
    assert.deepEqual([...new Set(ended.map((t) => t.nodeId))], [named('n1').nodeId]);
    // Past the placement grace and several claim rounds on every node, it is still queued.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    assert.equal((await cluster.getTask(nowhere))!.state, 'queued');
    // A bad constraint is refused at submit, naming the field, and nothing is queued.
    await assert.rejects(members[0]!.client.submitTask({ id: `${run.id}-bad`, spec: spec('exit 0', { constraints: { disk: 'ssd' } }) }), (error: { code?: string; message?: string }) => error.code === 'BERTH_VALIDATION' && /constraints/.test(error.message ?? ''));
    assert.equal(await cluster.getTask(`${run.id}-bad`), undefined);
  });

  test('a SIGKILLed agent: after its lease its tasks end lost (or run again once elsewhere under restart on lost); restarted, it removes their containers', async () => {
    await allReady();
    const plain = [`${run.id}-k0`, `${run.id}-k1`];
    const again = [`${run.id}-k2`, `${run.id}-k3`];
    const restartOnLost: Partial<TaskSpec> = { restart: { policy: 'on-failure', attempts: 1, on: ['lost'] } };
    for (const id of plain) await members[1]!.client.submitTask({ id, spec: spec('sleep 300') });
    for (const id of again) await members[2]!.client.submitTask({ id, spec: spec('sleep 300', restartOnLost) });
    const running = await until('the long tasks to run', [...plain, ...again], (task) => task.state === 'running');
    // Binpack puts them together; the victim is the node holding the first.
    const victim = memberOf(running[0]!.nodeId);
    const onVictim = running.filter((t) => t.nodeId === victim.nodeId).map((t) => t.id);
    const lostIds = plain.filter((id) => onVictim.includes(id));
    const againIds = again.filter((id) => onVictim.includes(id));
    assert.ok(lostIds.length > 0 && againIds.length > 0, `victim ${victim.name} holds ${onVictim.join(', ')}`);
    await victim.agent.stop('SIGKILL');
    const lost = await until('the victim\'s plain tasks to end lost', lostIds, (task) => task.state === 'lost');
    for (const task of lost) assert.match(task.endReason!, new RegExp(`node ${victim.nodeId} lost its lease \\(epoch \\d+`));
    const moved = await until('the restart-on-lost tasks to run elsewhere', againIds, (task) => task.state === 'running' && task.nodeId !== victim.nodeId);
    for (const task of moved) assert.deepEqual([task.attempt, task.lostCount], [2, 1]);
    // Restarted with the same data directory: the fenced containers go, its records end lost with the reason.
    await restart(victim);
    for (const id of [...lostIds, ...againIds]) {
      const view = await pollUntil(`${id} ended lost on the restarted agent`, async () => {
        const task = await victim.client.get(id);
        return task.state === 'lost' ? task : undefined;
      }, { timeoutMs: 30_000, intervalMs: 200 });
      assert.match((view.endState as { reason?: string }).reason ?? '', /^fenced: /);
    }
    await pollUntil('the fenced containers to be removed', async () => {
      const counts = await Promise.all([...lostIds, ...againIds].map(async (id) => (await containersOf(id)).length));
      return counts.every((n, i) => n === (i < lostIds.length ? 0 : 1)) ? true : undefined;
    }, { timeoutMs: 30_000, intervalMs: 250 });
    assert.ok((await metric(victim, 'berth_cluster_fenced_total'))! >= lostIds.length + againIds.length);
    // The cluster still says what it said: nothing stale came from the restarted agent.
    assert.deepEqual((await tasksOf(lostIds)).map((t) => t.state), lostIds.map(() => 'lost'));
    assert.deepEqual((await tasksOf(againIds)).map((t) => [t.state, t.attempt]), againIds.map(() => ['running', 2]));
    // Clean up: the moved tasks are stopped through the node that runs them.
    for (const task of moved) await memberOf(task.nodeId).client.stop(task.id, { graceMs: 0 });
    await until('the moved tasks to end', againIds, (task) => task.state === 'exited');
    await allReady();
  });

  test('an agent SIGSTOPped past its lease and continued reports nothing stale and removes its fenced containers', async () => {
    const long = [`${run.id}-p0`, `${run.id}-p1`];
    const short = `${run.id}-p2`;
    for (const id of long) await members[0]!.client.submitTask({ id, spec: spec('sleep 300') });
    await members[0]!.client.submitTask({ id: short, spec: spec('sleep 4') });
    const running = await until('the tasks to run', [...long, short], (task) => task.state === 'running');
    const victim = memberOf(running[0]!.nodeId);
    const ids = running.filter((t) => t.nodeId === victim.nodeId).map((t) => t.id);
    assert.ok(ids.includes(short), `victim ${victim.name} holds ${ids.join(', ')}`);
    process.kill(victim.agent.pid, 'SIGSTOP');
    try {
      await until('the paused node\'s tasks to end lost', ids, (task) => task.state === 'lost');
      // Past the short task's own end too, while the agent cannot see it.
      await pollUntil('the short task\'s container to exit', async () => {
        const found = (await engine.listContainers({ all: true, labels: [run.labelFilter] })).filter((c) => c.names.some((n) => n.includes(short)));
        return found.length > 0 && found.every((c) => c.state === 'exited') ? true : undefined;
      }, { timeoutMs: 30_000, intervalMs: 200 });
    } finally {
      process.kill(victim.agent.pid, 'SIGCONT');
    }
    for (const id of ids.filter((id) => id !== short)) {
      await pollUntil(`${id} fenced on the continued agent`, async () => {
        const task = await victim.client.get(id);
        return task.state === 'lost' && /^fenced: /.test((task.endState as { reason?: string }).reason ?? '') ? true : undefined;
      }, { timeoutMs: 30_000, intervalMs: 200 });
    }
    await pollUntil('its containers to be removed', async () => ((await Promise.all(ids.map(containersOf))).every((names) => names.length === 0) ? true : undefined), { timeoutMs: 30_000, intervalMs: 250 });
    await pollUntil('its outbox to drain', async () => ((await metric(victim, 'berth_cluster_reports_pending')) === 0 ? true : undefined), { timeoutMs: 30_000, intervalMs: 200 });
    const states = await tasksOf(ids);
    for (const task of states) {
      assert.equal(task.state, 'lost');
      assert.match(task.endReason!, /lost its lease/);
    }
    const stale = (await allEvents()).filter((e) => e.taskId !== undefined && ids.includes(e.taskId) && (e.kind === 'task.exited' || e.kind === 'task.running') && e.at.getTime() > Math.max(...states.map((t) => t.endedAt!.getTime())));
    assert.deepEqual(stale, []);
    assert.equal((await allEvents()).filter((e) => e.taskId !== undefined && ids.includes(e.taskId) && e.kind === 'task.exited').length, 0);
    await allReady();
  });

  test('a SIGTERMed agent leaves (down, "left") with its running task still running and held; restarted within its lease it goes on reporting it', async () => {
    // A node of its own with a long lease: an agent's restart on a loaded host outlasts a 4 s lease (then its task is rightly lost).
    const victim = await startMember('n4', { disk: 'term' }, '60s');
    await allReady();
    const id = `${run.id}-term`;
    await named('n2').client.submitTask({ id, spec: spec('sleep 300', { constraints: { 'node.disk': 'term' } }) });
    const [running] = await until('the task to run', [id], (task) => task.state === 'running');
    assert.equal(running!.nodeId, victim.nodeId);
    assert.equal(await victim.agent.stop('SIGTERM'), 0);
    const node = (await cluster.listNodes()).find((n) => n.nodeId === victim.nodeId)!;
    assert.deepEqual([node.state, node.downReason], ['down', 'left']);
    assert.deepEqual([(await cluster.getTask(id))!.state, (await containersOf(id)).length], ['running', 1]);
    await restart(victim);
    const [kept] = await until('the task to be kept under the new epoch', [id], (task) => task.state === 'running' && task.epoch! > running!.epoch!);
    assert.equal(kept!.nodeId, victim.nodeId);
    await victim.client.stop(id, { graceMs: 0 });
    const [ended] = await until('the stop to be reported', [id], (task) => task.state === 'exited');
    assert.equal(ended!.endReason, 'cancelled');
    await pollUntil('its container to be removed', async () => ((await containersOf(id)).length === 0 ? true : undefined), { timeoutMs: 30_000, intervalMs: 250 });
  });

  test('PostgreSQL stopped mid-run with tasks queued and running: every task ends exactly once, nothing is lost', async () => {
    await allReady();
    const ids = Array.from({ length: 30 }, (_, i) => `${run.id}-pg${i}`);
    for (const [i, id] of ids.entries()) await members[i % 3]!.client.submitTask({ id, spec: spec(`sleep 2; exit ${i % 2}`) });
    await pollUntil('some tasks to run', async () => ((await tasksOf(ids)).some((t) => t.state === 'running') ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
    await server.stop();
    try {
      // Reports wait in the outboxes while the database is away.
      await pollUntil('reports to wait in an outbox', async () => {
        const pending = await Promise.all(members.map((m) => metric(m, 'berth_cluster_reports_pending')));
        return pending.some((n) => (n ?? 0) > 0) ? true : undefined;
      }, { timeoutMs: 30_000, intervalMs: 200 });
    } finally {
      await server.start();
    }
    const ended = await until('every task to end', ids, (task) => task.state === 'exited', 120_000);
    for (const [i, task] of ended.entries()) assert.equal(task.exitCode, i % 2, task.id);
    const events = (await allEvents()).filter((e) => e.taskId !== undefined && ids.includes(e.taskId));
    for (const id of ids) {
      assert.equal(events.filter((e) => e.taskId === id && e.kind === 'task.running').length, 1, id);
      assert.equal(events.filter((e) => e.taskId === id && e.kind === 'task.exited').length, 1, id);
    }
    for (const member of members) {
      await pollUntil(`${member.name}'s outbox to drain`, async () => ((await metric(member, 'berth_cluster_reports_pending')) === 0 ? true : undefined), { timeoutMs: 30_000, intervalMs: 200 });
    }
    await pollUntil('no container left', async () => ((await engine.listContainers({ all: true, labels: [run.labelFilter] })).length === 0 ? true : undefined), { timeoutMs: 60_000, intervalMs: 250 });
  });

  /** A GET on the member's socket with its token: the raw status and body. */
  const get = async (member: Member, urlPath: string): Promise<{ status: number; body: string }> =>
    httpGet(member.agent.socketPath, urlPath, (await readFile(path.join(member.dataDir, 'token'), 'utf8')).trim());
  const errorCode = (body: string): string | undefined => (JSON.parse(body) as { error?: { code?: string } }).error?.code;

  test('a queued task is cancelled by a stop through any node (berth stop, the API): it reads back exited and cancelled everywhere, and no node claims it later', async () => {
    await allReady();
    const [n1, n2, n3] = [named('n1'), named('n2'), named('n3')];
    const viaCli = `${run.id}-cancel-cli`;
    const viaApi = `${run.id}-cancel-api`;
    // No node has disk: nvme yet: both stay queued.
    for (const id of [viaCli, viaApi]) assert.equal((await n1.client.submitTask({ id, spec: spec('exit 0', { constraints: { 'node.disk': 'nvme' } }) })).task.state, 'pending');
    const stopped = await berth(n2.dataDir, ['stop', viaCli]);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(stopped.stdout.trim(), viaCli);
    // The stop's answer is a pending task's stop's: the task ended cancelled, without running (no exit code, no container).
    const view = await n3.client.stop(viaApi);
    assert.equal(view.id, viaApi);
    assert.equal(view.state, 'exited');
    assert.deepEqual(view.endState, { kind: 'cancelled' });
    assert.equal(view.exitCode, undefined);
    assert.equal(view.containerId, undefined);
    assert.equal(view.node, null);
    assert.ok(view.finishedAt);
    for (const id of [viaCli, viaApi]) {
      for (const member of [n1, n2, n3]) {
        const read = await member.client.get(id);
        assert.deepEqual([read.state, read.endState?.kind], ['exited', 'cancelled'], `${id} through ${member.name}`);
        // A wait answers at once: it has ended.
        assert.equal((await member.client.waitOnce(id, 30_000)).ended, true);
      }
      const indexed = (await cluster.getTask(id))!;
      assert.deepEqual([indexed.state, indexed.endReason, indexed.nodeId], ['exited', 'cancelled', undefined]);
    }
    // Stopped again: answered as an ended task's stop is (the task as it is).
    assert.equal((await n1.client.stop(viaApi)).state, 'exited');
    const cancelledEvents = (await allEvents()).filter((e) => e.kind === 'task.cancelled' && (e.taskId === viaCli || e.taskId === viaApi));
    assert.equal(cancelledEvents.length, 2);
    assert.match(String(cancelledEvents.find((e) => e.taskId === viaCli)!.data.reason), new RegExp(`stopped through node ${n2.nodeId}`));

    // A node that satisfies the constraint joins: it runs a task with the same constraint submitted after the
    // cancelled ones (which it would have claimed first, in FIFO order), and never the cancelled ones.
    const nvme = await startMember('n5', { disk: 'nvme' });
    await allReady();
    const later = `${run.id}-after-cancel`;
    await n1.client.submitTask({ id: later, spec: spec('exit 0', { constraints: { 'node.disk': 'nvme' } }) });
    const [ran] = await until('the later task to run to its end', [later], (task) => task.state === 'exited');
    assert.equal(ran!.nodeId, nvme.nodeId);
    for (const id of [viaCli, viaApi]) assert.deepEqual([(await cluster.getTask(id))!.state, (await cluster.getTask(id))!.nodeId], ['exited', undefined]);
    assert.deepEqual((await allEvents()).filter((e) => e.kind === 'task.claimed' && (e.taskId === viaCli || e.taskId === viaApi)), []);
    assert.equal((await nvme.client.get(viaCli)).node, null, 'n5 reads it from the index: it has no record of it');
  });

  test('berth rm refuses a queued task as it refuses a pending one (stop it first); rm -f through another node cancels and removes it; rm removes a cancelled one from the index', async () => {
    await allReady();
    const [n1, n2, n3] = [named('n1'), named('n2'), named('n3')];
    const queued = `${run.id}-rm-queued`;
    const cancelled = `${run.id}-rm-cancelled`;
    for (const id of [queued, cancelled]) await n1.client.submitTask({ id, spec: spec('exit 0', { constraints: { 'node.disk': 'none-has-it' } }) });
    const refused = await berth(n2.dataDir, ['rm', queued]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, new RegExp(`task ${queued} is pending; stop it before removing it.*\\[BERTH_TASK_STATE\\]`));
    assert.equal((await cluster.getTask(queued))!.state, 'queued', 'nothing changed');
    const forced = await berth(n2.dataDir, ['rm', '-f', queued]);
    assert.equal(forced.code, 0, forced.stderr);
    await n3.client.stop(cancelled);
    const removed = await berth(n3.dataDir, ['rm', cancelled]);
    assert.equal(removed.code, 0, removed.stderr);
    for (const id of [queued, cancelled]) {
      assert.equal(await cluster.getTask(id), undefined, id);
      for (const member of [n1, n2, n3]) assert.equal((await get(member, `/v1/tasks/${id}`)).status, 404, `${id} through ${member.name}`);
    }
    const removedEvents = (await allEvents()).filter((e) => e.kind === 'task.removed' && (e.taskId === queued || e.taskId === cancelled));
    assert.equal(removedEvents.length, 2);
  });

  test('a task that publishes a port, submitted through one node and placed on another, is answered with the host port that node handed out', async () => {
    await allReady();
    const [n1, n2] = [named('n1'), named('n2')];
    const id = `${run.id}-ports`;
    const { task: answered, created } = await n2.client.submitTask({ id, spec: spec('sleep 300', { constraints: { 'node.disk': 'ssd' }, network: 'bridge', ports: [{ container: 8080 }] }) });
    assert.equal(created, true);
    assert.equal(answered.node, n1.nodeId);
    assert.equal(answered.ports?.length, 1, JSON.stringify(answered));
    const port = answered.ports![0]!;
    assert.deepEqual({ container: port.container, protocol: port.protocol }, { container: 8080, protocol: 'tcp' });
    assert.ok(Number.isInteger(port.host) && port.host > 0);
    assert.deepEqual((await n1.client.get(id)).ports, [port], 'the port its node recorded');
    await n2.client.stop(id, { graceMs: 0 });
    await until('the task to end', [id], (task) => task.state === 'exited');
  });

  test('a request waiting for its task\'s placement answers 503 BERTH_CLUSTER_UNAVAILABLE when PostgreSQL goes away during the wait', async () => {
    await allReady();
    const [n1, n3] = [named('n1'), named('n3')];
    const id = `${run.id}-wait-pg`;
    await n1.client.submitTask({ id, spec: spec('exit 0', { constraints: { 'node.disk': 'none-has-it' } }) });
    const waiting = get(n3, `/v1/tasks/${id}/wait?timeout=60s`);
    await pollUntil('the request to wait for the placement', async () => ((await metric(n3, 'berth_cluster_placement_waits')) === 1 ? true : undefined), { timeoutMs: 30_000, intervalMs: 50 });
    await server.stop();
    try {
      const answer = await waiting;
      assert.equal(answer.status, 503, answer.body);
      assert.equal(errorCode(answer.body), 'BERTH_CLUSTER_UNAVAILABLE');
      assert.equal(await metric(n3, 'berth_cluster_placement_waits'), 0);
    } finally {
      await server.start();
    }
    await allReady();
    await n1.client.stop(id);
  });

  test('a request waiting for its task\'s placement ends at once when its agent shuts down (503 BERTH_AGENT_UNAVAILABLE), and the agent exits', async () => {
    await allReady();
    const [n1, n3] = [named('n1'), named('n3')];
    const id = `${run.id}-wait-term`;
    await n1.client.submitTask({ id, spec: spec('exit 0', { constraints: { 'node.disk': 'none-has-it' } }) });
    const waiting = get(n3, `/v1/tasks/${id}/logs?follow=true`);
    await pollUntil('the request to wait for the placement', async () => ((await metric(n3, 'berth_cluster_placement_waits')) === 1 ? true : undefined), { timeoutMs: 30_000, intervalMs: 50 });
    const exited = n3.agent.stop('SIGTERM');
    const answer = await waiting;
    assert.equal(answer.status, 503, answer.body);
    assert.equal(errorCode(answer.body), 'BERTH_AGENT_UNAVAILABLE');
    assert.equal(await exited, 0);
    await restart(n3);
    await allReady();
    await n1.client.stop(id);
  });
});

describe('a single agent (no cluster)', { skip }, () => {
  test('refuses a spec with constraints, naming the field (it needs cluster mode), and runs one with a priority as usual', async () => {
    const single = await startServedAgent(TEST_ENGINE_SOCKET);
    try {
      await assert.rejects(
        single.client.submit({ spec: { image: TEST_IMAGE, command: ['true'], labels: { ...run.labels }, constraints: { 'node.disk': 'ssd' } } }),
        (error: { code?: string; message?: string }) => error.code === 'BERTH_VALIDATION' && /constraints.*needs cluster mode/.test(error.message ?? ''),
      );
      assert.deepEqual(await single.client.list({ state: ['pending', 'starting', 'running', 'exited', 'lost'] }), []);
      const task = await single.client.submit({ spec: { image: TEST_IMAGE, command: ['true'], labels: { ...run.labels }, priority: 9 } });
      assert.equal((await single.client.wait(task.id)).exitCode, 0);
    } finally {
      await single.close();
    }
  });
});
