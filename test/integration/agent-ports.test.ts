import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import type { TaskView } from '../../src/agent/client.js';
import { agentClientOf, agentTestFile, berth, berthInspect, submitViaCli, waitForTaskState, writeAgentConfig, type RunningAgent } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';
import { canBind, fetchPage, httpdCommand } from '../support/http.js';

/**
 * Published ports and named networks through a real agent process and the real CLI: the agent
 * allocates host ports at submit from its range, durably (none handed out twice across a SIGKILL
 * and restart), refuses a port someone holds with BERTH_PORT_UNAVAILABLE, and frees them once the
 * task is gone; a task joins a network its policy allows, with its alias.
 */

const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);
const LABEL = run.labelFilter;
const networks: string[] = [];
after(async () => {
  // The networks go once nothing is on them: the agents and the run's containers first (both are idempotent).
  await agents.killAll();
  await run.cleanup();
  for (const name of networks) await engine.removeNetwork(name).catch(() => undefined);
});

/** A range of 10 ports of its own for each agent of the file, away from the engine's ephemeral ports and other tests' agents. */
let rangeCount = 0;
const rangeBase = 41_000 + Math.floor(Math.random() * 400) * 20;
function freshRange(): { from: number; to: number } {
  const from = rangeBase + 10 * rangeCount++;
  return { from, to: from + 9 };
}

async function startAgent(range: { from: number; to: number }, extraYaml = ''): Promise<{ dataDir: string; args: string[]; agent: RunningAgent }> {
  const dataDir = await dirs.make('berth-ports-');
  const config = await writeAgentConfig(dataDir, `ports:\n  range: ${range.from}-${range.to}\n${extraYaml}`);
  const args = ['--config', config];
  const agent = await agents.start(dataDir, args);
  return { dataDir, args, agent };
}





const reach = (port: { hostIp: string; host: number }): Promise<string> =>
  pollUntil(`a page on ${port.hostIp}:${port.host}`, () => fetchPage(port.hostIp, port.host), { timeoutMs: 30_000, intervalMs: 100 });

describe('published ports through the agent', { skip: await requireEngine() }, () => {
  test('a dynamic port from the range is reachable from the host, shown by ps and inspect, refused to another task while held, and free again after', async () => {
    const range = freshRange();
    const { dataDir } = await startAgent(range);
    const client = await agentClientOf({ dataDir, socketPath: `${dataDir}/agent.sock` });
    try {
      const web = await submitViaCli(dataDir, LABEL, ['--name', `web-${run.id}`, '-p', '8080', '--memory', '16m', TEST_IMAGE, 'sh', '-c', httpdCommand('agent', 8080)]);
      const running = await waitForTaskState(client, web, ['running']);
      assert.equal(running.ports?.length, 1);
      const port = running.ports![0]!;
      assert.deepEqual({ container: port.container, protocol: port.protocol, hostIp: port.hostIp }, { container: 8080, protocol: 'tcp', hostIp: '127.0.0.1' });
      assert.ok(port.host >= range.from && port.host <= range.to, `${port.host} is in ${range.from}-${range.to}`);
      assert.equal(await reach(port), 'hello agent\n');
      const ps = await berth(dataDir, ['ps']);
      assert.ok(ps.stdout.includes(`127.0.0.1:${port.host}->8080/tcp`), ps.stdout);
      assert.deepEqual((await berthInspect<TaskView>(dataDir, web)).ports, [port]);

      // Static: the port the first task holds is refused, naming the field and the port, and nothing is recorded or created.
      const tasksBefore = (await client.list()).length;
      const refused = await berth(dataDir, ['run', '-d', '-l', LABEL, '--name', `late-${run.id}`, '-p', `${port.host}:80`, TEST_IMAGE, 'true']);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, new RegExp(`ports\\[0\\]\\.host: host port ${port.host}/tcp is held by task ${web}.*\\[BERTH_PORT_UNAVAILABLE\\]`));
      await assert.rejects(
        client.submitTask({ spec: { image: TEST_IMAGE, labels: { 'berth-test.run': run.id }, network: 'bridge', ports: [{ container: 81 }, { container: 80, host: port.host }] } }),
        (error: unknown) => isBerthError(error, 'BERTH_PORT_UNAVAILABLE') && error.message.includes('ports[1].host') && error.message.includes(String(port.host)),
      );
      assert.equal((await client.list()).length, tasksBefore, 'no task was recorded');
      assert.equal((await engine.listContainers({ all: true, labels: [LABEL] })).length, 1, 'no container was created');

      // Ended and removed: the host port and the allocator's hold are free; a static ask for it now succeeds.
      assert.equal((await berth(dataDir, ['stop', '-t', '0', web])).code, 0);
      await waitForTaskState(client, web, ['exited']);
      await pollUntil('the ended task\'s container to be removed', async () => ((await engine.listContainers({ all: true, labels: [LABEL] })).length === 0 ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
      assert.equal(await canBind(port.hostIp, port.host), true, 'the host port is free');
      const again = await submitViaCli(dataDir, LABEL, ['--name', `again-${run.id}`, '-p', `${port.host}:8080`, '--memory', '16m', TEST_IMAGE, 'sh', '-c', httpdCommand('again', 8080)]);
      const second = await waitForTaskState(client, again, ['running']);
      assert.deepEqual(second.ports, [port]);
      assert.equal(await reach(port), 'hello again\n');
      assert.equal((await berth(dataDir, ['stop', '-t', '0', again])).code, 0);
      await waitForTaskState(client, again, ['exited']);
    } finally {
      client.close();
    }
  });

  test('no port is handed out twice across an agent SIGKILL and restart', async () => {
    const range = freshRange();
    const { dataDir, args, agent } = await startAgent(range);
    // Through the API (as berth run -d sends it): ten CLI processes would only cost time.
    const submit = async (n: number): Promise<string> => {
      const client = await agentClientOf({ dataDir, socketPath: `${dataDir}/agent.sock` });
      try {
        const spec = { image: TEST_IMAGE, command: ['sleep', '600'], labels: { ...run.labels }, network: 'bridge' as const, ports: [{ container: 80 }, { container: 53, protocol: 'udp' as const }], resources: { memory: '8m', cpuMilli: 50 } };
        return (await client.submitTask({ id: `sleeper-${n}-${run.id}`, spec })).task.id;
      } finally {
        client.close();
      }
    };
    const portsOf = async (taskIds: readonly string[]): Promise<string[]> => {
      const client = await agentClientOf({ dataDir, socketPath: `${dataDir}/agent.sock` });
      try {
        const ports: string[] = [];
        for (const id of taskIds) ports.push(...((await client.get(id)).ports ?? []).map((p) => `${p.host}/${p.protocol}`));
        return ports;
      } finally {
        client.close();
      }
    };
    const before: string[] = [];
    for (let n = 1; n <= 4; n++) before.push(await submit(n));
    const portsBefore = await portsOf(before);
    assert.equal(portsBefore.length, 8);
    // kill -9: the agent saves nothing on its way out.
    assert.equal(await agent.stop('SIGKILL'), null);
    await agents.start(dataDir, args);
    const afterRestart: string[] = [];
    for (let n = 5; n <= 10; n++) afterRestart.push(await submit(n));
    const portsAfter = await portsOf(afterRestart);
    // The tasks of before the kill kept theirs.
    assert.deepEqual(await portsOf(before), portsBefore);
    const all = [...portsBefore, ...portsAfter];
    assert.equal(new Set(all).size, all.length, `every port handed out once: ${all.join(' ')}`);
    for (const port of all) {
      const host = Number(port.split('/')[0]);
      assert.ok(host >= range.from && host <= range.to, `${port} is in ${range.from}-${range.to}`);
    }
    // All 10 of each protocol are held: the range is exhausted, and the next submit says so.
    const exhausted = await berth(dataDir, ['run', '-d', '-l', LABEL, '-p', '80', TEST_IMAGE, 'true']);
    assert.equal(exhausted.code, 1, exhausted.stderr);
    assert.match(exhausted.stderr, new RegExp(`ports\\[0\\]\\.host: no tcp port is free in the dynamic range ${range.from}-${range.to}.*\\[BERTH_PORT_UNAVAILABLE\\]`));
    // The recovered tasks are running with the very ports recorded for them.
    const client = await agentClientOf({ dataDir, socketPath: `${dataDir}/agent.sock` });
    try {
      const task = await waitForTaskState(client, before[0]!, ['running']);
      const published = (await engine.inspectContainer(task.containerId!)).publishedPorts.map((p) => `${p.host}/${p.protocol}`).sort();
      assert.deepEqual(published, (task.ports ?? []).map((p) => `${p.host}/${p.protocol}`).sort());
      // One task removed frees its ports for the next submit.
      assert.equal((await berth(dataDir, ['rm', '-f', before[0]!])).code, 0);
      const freed = new Set(published);
      const next = await pollUntil(
        'a submit to get the freed ports',
        async () => {
          const result = await berth(dataDir, ['run', '-d', '-l', LABEL, '-p', '80', '-p', '53/udp', '--memory', '8m', TEST_IMAGE, 'sleep', '600']);
          return result.code === 0 ? result.stdout.trim() : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 200 },
      );
      assert.deepEqual(new Set(((await client.get(next)).ports ?? []).map((p) => `${p.host}/${p.protocol}`)), freed);
    } finally {
      client.close();
    }
  });

  test('a task joins a network the policy allows, with its alias; one the policy does not list is refused', async () => {
    const name = `berth-test-${run.id}-net`;
    networks.push(name);
    await engine.createNetwork(name, { labels: { ...run.labels } });
    const { dataDir } = await startAgent(freshRange(), `policy:\n  allowedNetworks: [${name}]\n`);
    const client = await agentClientOf({ dataDir, socketPath: `${dataDir}/agent.sock` });
    try {
      const refused = await berth(dataDir, ['run', '-d', '-l', LABEL, '--network', 'elsewhere', TEST_IMAGE, 'true']);
      assert.equal(refused.code, 2, refused.stderr);
      assert.match(refused.stderr, /--network: network elsewhere is not in the allowed list \(allowedNetworks\)/);
      const id = await submitViaCli(dataDir, LABEL, ['--network', name, '--network-alias', 'joined', '--memory', '16m', TEST_IMAGE, 'sleep', '600']);
      const task = await waitForTaskState(client, id, ['running']);
      assert.deepEqual(task.networks, [{ name, aliases: ['joined'] }]);
      const endpoint = (await engine.inspectContainer(task.containerId!)).networks.find((n) => n.name === name);
      assert.ok(endpoint?.aliases.includes('joined'), JSON.stringify(endpoint));
      assert.equal((await berth(dataDir, ['rm', '-f', id])).code, 0);
    } finally {
      client.close();
    }
  });
});
