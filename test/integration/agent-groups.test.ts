import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import type { AgentClient } from '../../src/agent/client.js';
import type { GroupView } from '../../src/agent/http/views.js';
import { isBerthError, ValidationError } from '../../src/common/errors.js';
import { LABELS, ROLES } from '../../src/common/labels.js';
import { agentClientOf, agentTestFile, berth, writeAgentConfig } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';

/**
 * Task groups in the agent, end to end: real `berth agent` processes on the real engine, groups
 * submitted through the real CLI (`berth group run -d -f`) and the API, every engine object
 * scoped by the agent's own id (each agent here has one of its own) and the run's labels.
 */

const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);
const skip = await requireEngine();
const ownerIds: string[] = [];

after(async () => {
  // What a failed test may have left: the groups' infrastructure containers, volumes and networks, by their owner.
  for (const ownerId of ownerIds) {
    const label = `${LABELS.ownerId}=${ownerId}`;
    for (const c of await engine.listContainers({ all: true, labels: [label] }).catch(() => [])) await engine.removeContainer(c.id).catch(() => undefined);
    for (const n of await engine.listNetworks({ labels: [label] }).catch(() => [])) await engine.removeNetwork(n.id).catch(() => undefined);
    for (const v of await engine.listVolumes({ labels: [label] }).catch(() => [])) await engine.removeVolume(v.name).catch(() => undefined);
  }
});

interface StartedAgent {
  dir: string;
  ownerId: string;
  client: AgentClient;
}

async function startAgent(suffix: string, yaml = ''): Promise<StartedAgent & { config: string }> {
  const dir = await dirs.make('bgrp-');
  const ownerId = `g${run.id}-${suffix}`;
  ownerIds.push(ownerId);
  const config = await writeAgentConfig(dir, `agentId: ${ownerId}\n${yaml}`);
  await agents.start(dir, ['--config', config]);
  return { dir, ownerId, config, client: await agentClientOf({ dataDir: dir, socketPath: path.join(dir, 'agent.sock') }) };
}

/** A task of a group: the test image, the run's labels, a short grace (busybox as PID 1 ignores SIGTERM). */
function member(name: string, script: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, image: TEST_IMAGE, command: ['sh', '-c', script], labels: run.labels, stopGracePeriod: '1s', ...extra };
}

async function waitForGroup(client: AgentClient, id: string, accept: (group: GroupView) => boolean, what: string, timeoutMs = 90_000): Promise<GroupView> {
  return pollUntil(what, async () => {
    const group = await client.getGroup(id);
    return accept(group) ? group : undefined;
  }, { timeoutMs, intervalMs: 100 });
}

const isCleaned = (group: GroupView): boolean => group.state === 'exited' && group.cleanedAt !== undefined;

/** Every engine object of the agent's groups (containers, infrastructure included; volumes; networks). */
async function groupObjects(ownerId: string): Promise<string[]> {
  const labels = [`${LABELS.ownerId}=${ownerId}`, LABELS.groupId];
  const containers = (await engine.listContainers({ all: true, labels })).map((c) => `container ${c.names[0] ?? c.id}`);
  const volumes = (await engine.listVolumes({ labels })).map((v) => `volume ${v.name}`);
  const networks = (await engine.listNetworks({ labels })).map((n) => `network ${n.name}`);
  return [...containers, ...volumes, ...networks];
}

/** A sidecar serving `pong` on localhost:8080 and a main that fetches it: they share one network namespace. */
const SIDECAR = member('web', 'mkdir -p /tmp/www && echo pong > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www', { lifecycle: 'sidecar' });
const FETCHER = (gate?: string): Record<string, unknown> =>
  member('main', `${gate === undefined ? '' : `while [ ! -e ${gate} ]; do sleep 0.1; done; `}for i in $(seq 1 100); do wget -q -O - http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1`);

describe('task groups in the agent', { skip }, () => {
  test('a main task reaches its sidecar on localhost, the group ends success with the sidecar stopped, and nothing is left', async () => {
    const agent = await startAgent('a');
    const file = path.join(agent.dir, 'group.yaml');
    await writeFile(file, `name: pair\nnetwork:\n  mode: private\ntasks:\n${[SIDECAR, FETCHER()].map((t) => `  - ${JSON.stringify(t)}\n`).join('')}`);
    const submitted = await berth(agent.dir, ['group', 'run', '-d', '-f', file]);
    assert.equal(submitted.code, 0, submitted.stderr);
    const id = submitted.stdout.trim();
    assert.match(id, /^pair-[0-9a-f]{8}$/);

    const running = await waitForGroup(agent.client, id, (g) => g.infraContainerId !== undefined, 'the group to have its infrastructure');
    assert.equal(running.network.mode, 'private');
    assert.equal(running.sharedDir?.path, '/alloc');

    const ended = await waitForGroup(agent.client, id, isCleaned, 'the group to end and be cleaned up');
    assert.deepEqual(ended.endState, { kind: 'success', exitCode: 0 });
    const byName = new Map(ended.tasks.map((t) => [t.name, t]));
    assert.equal(byName.get('main')?.endState?.kind, 'success');
    assert.equal(byName.get('web')?.endState?.kind, 'cancelled', 'the sidecar was stopped once the main task ended');
    assert.equal(byName.get('main')?.taskId, `${id}.main`);

    // The task's output, through the group's route and the task's own.
    const logs = await berth(agent.dir, ['group', 'logs', id, 'main']);
    assert.equal(logs.code, 0, logs.stderr);
    assert.equal(logs.stdout, 'pong\n');
    const task = await agent.client.get(`${id}.main`);
    assert.deepEqual(task.group, { groupId: id, taskName: 'main', lifecycle: 'main' });
    await assert.rejects(agent.client.remove(`${id}.main`), (e: unknown) => isBerthError(e, 'BERTH_TASK_STATE') && e.message.includes(`belongs to group ${id}`), 'a group\'s task goes with its group, never alone');

    assert.deepEqual(await groupObjects(agent.ownerId), [], 'no container, volume or network of the group is left');

    const ps = await berth(agent.dir, ['group', 'ps', '-a']);
    assert.match(ps.stdout, new RegExp(`^${id} +pair +exited \\(success 0\\) +0/2`, 'm'));
    const removed = await berth(agent.dir, ['group', 'rm', id]);
    assert.equal(removed.code, 0, removed.stderr);
    await assert.rejects(agent.client.getGroup(id), (e: unknown) => isBerthError(e, 'BERTH_GROUP_NOT_FOUND'));
    await assert.rejects(agent.client.get(`${id}.main`), (e: unknown) => isBerthError(e, 'BERTH_TASK_NOT_FOUND'));
    agent.client.close();
  });

  test('a failing prestart task fails the group and its main task never starts', async () => {
    const agent = await startAgent('b');
    const { group } = await agent.client.submitGroup({ spec: { name: 'prep', tasks: [member('setup', 'echo preparing; exit 3', { lifecycle: 'prestart' }), member('main', 'echo must-not-run')] } });
    const ended = await waitForGroup(agent.client, group.id, isCleaned, 'the group to fail');
    assert.deepEqual(ended.endState, { kind: 'failed', exitCode: 3, reason: 'prestart task setup ended failed with exit code 3', task: 'setup' });
    const main = ended.tasks.find((t) => t.name === 'main')!;
    assert.equal(main.endState?.kind, 'cancelled');
    assert.equal(main.containerId, undefined, 'the main task never had a container');
    const output: string[] = [];
    for await (const record of agent.client.groupTaskLogs(group.id, 'main')) output.push(record.text);
    assert.deepEqual(output, []);
    assert.deepEqual(await groupObjects(agent.ownerId), []);
    agent.client.close();
  });

  test('a group of three tasks is admitted as one unit: it waits whole while only part of it fits, and bad input is refused with field paths', async () => {
    const agent = await startAgent('c', 'admission:\n  memory: 300m\n  cpuMilli: 1500\n');
    const resources = (memory: string): Record<string, unknown> => ({ resources: { memory, cpuMilli: 100 } });
    // Holds 200m of the 300m budget until it is stopped.
    const { group: holder } = await agent.client.submitGroup({ spec: { name: 'holder', tasks: [member('hold', 'exec sleep 600', resources('200m'))] } });
    await waitForGroup(agent.client, holder.id, (g) => g.tasks[0]!.state === 'running', 'the holder to run');

    // 3 x 40m: 100m free fits two of its tasks, not the three.
    const trio = { name: 'trio', tasks: ['a', 'b', 'c'].map((name) => member(name, 'echo ok', resources('40m'))) };
    const { group: queued } = await agent.client.submitGroup({ spec: trio });
    assert.equal(queued.state, 'pending');
    // The holder still runs: the trio stays queued whole, none of its tasks starting alone.
    const holderNow = await agent.client.getGroup(holder.id);
    assert.equal(holderNow.tasks[0]!.state, 'running');
    const stillQueued = await agent.client.getGroup(queued.id);
    assert.equal(stillQueued.state, 'pending');
    assert.deepEqual(stillQueued.tasks.map((t) => t.state), ['pending', 'pending', 'pending']);

    // Refused at submit: never fits (3 x 120m > 300m), and bad fields, named by their place; nothing is recorded.
    await assert.rejects(
      agent.client.submitGroup({ id: 'too-big', spec: { name: 'big', tasks: ['a', 'b', 'c'].map((name) => member(name, 'true', resources('120m'))) } }),
      (e: unknown) => e instanceof ValidationError && e.issues.some((issue) => issue.field === 'tasks' && /could never start/.test(issue.rule)),
    );
    await assert.rejects(
      agent.client.submitGroup({ id: 'bad', spec: { name: 'bad', tasks: [member('a', 'true'), member('b', 'true', { resources: { memory: 'lots' } }), member('a', 'true', { network: 'host' })] } }),
      (e: unknown) => {
        assert.ok(e instanceof ValidationError);
        const fields = e.issues.map((issue) => issue.field);
        assert.ok(fields.includes('tasks[1].resources.memory'), fields.join(', '));
        assert.ok(fields.includes('tasks[2].name'), fields.join(', '));
        assert.ok(fields.includes('tasks[2].network'), fields.join(', '));
        return true;
      },
    );
    for (const id of ['too-big', 'bad']) await assert.rejects(agent.client.getGroup(id), (e: unknown) => isBerthError(e, 'BERTH_GROUP_NOT_FOUND'));
    assert.deepEqual((await agent.client.list()).filter((t) => /^(too-big|bad)\./.test(t.id)), []);
    assert.equal((await agent.client.listGroups()).length, 2);

    const pendingCheck = await agent.client.getGroup(queued.id);
    assert.deepEqual(pendingCheck.tasks.map((t) => t.state), ['pending', 'pending', 'pending']);

    // The holder ends: its share returns, and the trio is admitted whole.
    await agent.client.stopGroup(holder.id);
    const holderEnded = await waitForGroup(agent.client, holder.id, isCleaned, 'the holder to end');
    assert.deepEqual(holderEnded.endState, { kind: 'cancelled' });
    const trioEnded = await waitForGroup(agent.client, queued.id, isCleaned, 'the trio to run and end');
    assert.deepEqual(trioEnded.endState, { kind: 'success', exitCode: 0 });
    const started = trioEnded.tasks.map((t) => t.containerId !== undefined);
    assert.deepEqual(started, [true, true, true]);
    assert.deepEqual(await groupObjects(agent.ownerId), []);
    agent.client.close();
  });

  test('a group publishes a dynamic port from the agent\'s range, reachable from the host at its published address, and free again after its end', async () => {
    const agent = await startAgent('e', 'ports:\n  range: 31740-31759\n');
    const spec = { name: 'pub', network: { ports: [{ container: 8080 }] }, tasks: [SIDECAR, member('main', 'while [ ! -e /alloc/go ]; do sleep 0.1; done')] };
    const { group } = await agent.client.submitGroup({ spec });
    const running = await waitForGroup(agent.client, group.id, (g) => g.ports.length === 1 && g.tasks.every((t) => t.state === 'running'), 'the group to run with its port');
    const port = running.ports[0]!;
    assert.equal(port.container, 8080);
    assert.equal(port.hostIp, '127.0.0.1');
    assert.ok(port.host >= 31740 && port.host <= 31759, `host port ${port.host} is in ports.range`);
    const body = await pollUntil('the sidecar to answer on the published port', async () => {
      const response = await fetch(`http://${port.hostIp}:${port.host}/`).catch(() => undefined);
      return response?.ok ? response.text() : undefined;
    }, { timeoutMs: 30_000, intervalMs: 100 });
    assert.equal(body, 'pong\n');

    const touched = await agent.client.execOnce(`${group.id}.main`, { cmd: ['sh', '-c', ': > /alloc/go'] });
    assert.equal(touched.exitCode, 0, touched.stderr);
    await waitForGroup(agent.client, group.id, isCleaned, 'the group to end');
    // Free again: the agent hands it out to another group (static), and nothing holds it on the host.
    const { group: again } = await agent.client.submitGroup({ spec: { ...spec, name: 'again', network: { ports: [{ container: 8080, host: port.host }] } } });
    await agent.client.removeGroup(again.id, { force: true });
    const server = createServer();
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port.host, port.hostIp, resolve));
    await new Promise<void>((resolve) => server.close(() => resolve()));
    assert.deepEqual(await groupObjects(agent.ownerId), []);
    agent.client.close();
  });

  test('retention removes the oldest ended group with its tasks past retention.maxCount, never a task of a group alone', async () => {
    const agent = await startAgent('f', 'retention:\n  maxCount: 1\n  interval: 1s\n');
    const first = (await agent.client.submitGroup({ spec: { name: 'old', tasks: [member('only', 'echo old')] } })).group;
    await waitForGroup(agent.client, first.id, isCleaned, 'the first group to end');
    const second = (await agent.client.submitGroup({ spec: { name: 'new', tasks: [member('only', 'echo new')] } })).group;
    await waitForGroup(agent.client, second.id, isCleaned, 'the second group to end');
    await pollUntil('retention to remove the first group', async () => (await agent.client.getGroup(first.id).then(() => false, (e: unknown) => isBerthError(e, 'BERTH_GROUP_NOT_FOUND'))) || undefined, { timeoutMs: 30_000, intervalMs: 200 });
    await assert.rejects(agent.client.get(`${first.id}.only`), (e: unknown) => isBerthError(e, 'BERTH_TASK_NOT_FOUND'));
    const kept = await agent.client.getGroup(second.id);
    assert.equal(kept.tasks[0]!.state, 'exited');
    assert.equal((await agent.client.get(`${second.id}.only`)).state, 'exited');
    agent.client.close();
  });

  test('after an agent SIGKILL a running group is recovered with its infrastructure and ends properly, leaving nothing', async () => {
    const agent = await startAgent('d');
    // The main task waits for a file in the group-shared directory, which the test creates through exec.
    const { group } = await agent.client.submitGroup({ id: `kill-${run.id}`, spec: { name: 'survivor', tasks: [SIDECAR, FETCHER('/alloc/go')] } });
    const running = await waitForGroup(agent.client, group.id, (g) => g.tasks.every((t) => t.state === 'running'), 'both tasks to run');
    const infraId = running.infraContainerId!;
    agent.client.close();

    // SIGKILL the agent (and the earlier tests' agents, done by now): its containers keep running.
    await agents.killAll();
    assert.equal((await engine.inspectContainer(infraId)).running, true);

    await agents.start(agent.dir, ['--config', agent.config]);
    const client = await agentClientOf({ dataDir: agent.dir, socketPath: path.join(agent.dir, 'agent.sock') });
    const recovered = await client.getGroup(group.id);
    assert.equal(recovered.state, 'running');
    assert.equal(recovered.infraContainerId, infraId, 'the same infrastructure container, not a new one');
    const infra = await engine.inspectContainer(infraId);
    assert.equal(infra.running, true);
    assert.equal(infra.labels[LABELS.role], ROLES.infra);

    // A running group is not removed without force: the task-state code, as for tasks.
    await assert.rejects(client.removeGroup(group.id), (e: unknown) => isBerthError(e, 'BERTH_TASK_STATE') && e.context.status === 409);
    const touched = await client.execOnce(`${group.id}.main`, { cmd: ['sh', '-c', ': > /alloc/go'] });
    assert.equal(touched.exitCode, 0, touched.stderr);
    const ended = await waitForGroup(client, group.id, isCleaned, 'the recovered group to end');
    assert.deepEqual(ended.endState, { kind: 'success', exitCode: 0 });
    assert.equal(ended.tasks.find((t) => t.name === 'web')?.endState?.kind, 'cancelled');
    assert.deepEqual(await groupObjects(agent.ownerId), []);
    await client.removeGroup(group.id);
    client.close();
  });
});
