/**
 * Cluster membership through real agent processes against a real PostgreSQL of the file's own (a
 * private server, so that it can be stopped) and the shared engine: three agents with their own node
 * ids, data directories and labels list each other ready (`berth nodes`, `GET /v1/nodes`); a
 * SIGKILLed one shows down once its lease ran out; a SIGSTOPped one past its lease registers again
 * with a higher epoch when continued; PostgreSQL stopped and started again leaves the agents serving
 * and brings them back into the cluster; a SIGTERMed one leaves at once ("left"); configuration
 * errors name the field. Short leases (1 s, heartbeat 300 ms) keep the file short.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { NodeListView, NodeView } from '../../src/agent/http/views.js';
import { pollUntil, requireEngine, testEngine } from '../support/engine.js';
import { agentTestFile, berth, berthJson, cleanEnv, httpGet, runBerth, writeAgentConfig, type RunningAgent } from '../support/agent.js';
import { createTestDatabase, requirePostgres, startPrivatePostgres, type PrivatePostgres } from '../support/postgres.js';

const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);
const skip = (await requireEngine()) || (await requirePostgres());

/** A password the URL carries: trust authentication ignores it; nothing the agent prints may show it. */
const PASSWORD = 'pw-never-shown-7f3a';

interface Member {
  readonly name: string;
  readonly nodeId: string;
  readonly labels: Record<string, string>;
  readonly dataDir: string;
  agent: RunningAgent;
}

describe('cluster membership of real agents', { skip }, () => {
  let server: PrivatePostgres;
  let url: string;
  const members: Member[] = [];

  const nodesVia = async (member: Member): Promise<NodeListView> => {
    const token = (await readFile(path.join(member.dataDir, 'token'), 'utf8')).trim();
    const answer = await httpGet(member.agent.socketPath, '/v1/nodes', token);
    assert.equal(answer.status, 200, answer.body);
    return JSON.parse(answer.body) as NodeListView;
  };
  const nodeIn = (listing: NodeListView, nodeId: string): NodeView | undefined => listing.nodes.find((node) => node.id === nodeId);
  const metric = async (member: Member, name: string): Promise<number | undefined> => {
    const token = (await readFile(path.join(member.dataDir, 'token'), 'utf8')).trim();
    const answer = await httpGet(member.agent.socketPath, '/metrics', token);
    const line = answer.body.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? undefined : Number(line.split(' ')[1]);
  };
  /** Polls `GET /v1/nodes` on `via` until `nodeId` satisfies `check`. */
  const untilNode = (via: Member, nodeId: string, what: string, check: (node: NodeView) => boolean): Promise<NodeView> =>
    pollUntil(`${nodeId} ${what} (asked ${via.name})`, async () => {
      const node = nodeIn(await nodesVia(via), nodeId);
      return node !== undefined && check(node) ? node : undefined;
    }, { timeoutMs: 30_000, intervalMs: 100 });

  const configFor = (nodeId: string, labels: Record<string, string>, extra = ''): string =>
    [
      'listen: 127.0.0.1:0',
      'cluster:',
      `  postgres: ${url}`,
      `  nodeId: ${nodeId}`,
      `  labels: ${JSON.stringify(labels)}`,
      '  capacity: { tasks: 7 }',
      '  lease: 1s',
      '  heartbeat: 300ms',
      extra,
    ].join('\n');

  const startMember = async (name: string, labels: Record<string, string>): Promise<Member> => {
    const dataDir = await dirs.make(`berth-cl-${name}-`);
    const nodeId = `${run.id}-${name}`;
    const file = await writeAgentConfig(dataDir, configFor(nodeId, labels));
    const agent = await agents.start(dataDir, ['--config', file]);
    const member = { name, nodeId, labels, dataDir, agent };
    members.push(member);
    return member;
  };

  before(async () => {
    server = await startPrivatePostgres();
    const db = await createTestDatabase(server.port);
    url = db.url.replace('postgres://postgres@', `postgres://postgres:${PASSWORD}@`);
    assert.ok(url.includes(PASSWORD), url);
    await Promise.all([startMember('n1', { disk: 'ssd', zone: 'a' }), startMember('n2', { zone: 'b' }), startMember('n3', { disk: 'hdd', zone: 'c' })]);
  });
  after(async () => {
    await agents.killAll();
    await server?.destroy();
  });

  test('three agents list all three ready, with labels and capacity, from each (API and berth nodes)', async () => {
    const [n1, n2, n3] = members as [Member, Member, Member];
    for (const via of [n1, n2, n3]) {
      const listing = await pollUntil(`all three ready (asked ${via.name})`, async () => {
        const found = await nodesVia(via);
        return members.every((m) => nodeIn(found, m.nodeId)?.state === 'ready') ? found : undefined;
      }, { timeoutMs: 30_000, intervalMs: 100 });
      assert.equal(listing.mode, 'cluster');
      assert.deepEqual(listing.nodes.filter((node) => node.self).map((node) => node.id), [via.nodeId]);
      for (const member of members) {
        const node = nodeIn(listing, member.nodeId)!;
        assert.deepEqual(node.labels, member.labels);
        assert.equal(node.capacity.tasks, 7);
        assert.ok(node.capacity.memoryBytes > 0 && node.capacity.cpuMilli > 0, JSON.stringify(node.capacity));
        assert.match(node.address, /^http:\/\/127\.0\.0\.1:\d+$/);
        assert.ok(node.epoch >= 1);
      }
      // The CLI: JSON as the API's, and the table marks the answering node.
      const json = await berthJson<NodeListView>(via.dataDir, ['nodes']);
      assert.deepEqual(json.nodes.filter((node) => node.self).map((node) => node.id), [via.nodeId]);
      const table = await berth(via.dataDir, ['nodes']);
      assert.equal(table.code, 0, table.stderr);
      const lines = table.stdout.trimEnd().split('\n');
      assert.match(lines[0]!, /^ID\s+ADDRESS\s+STATUS\s+LABELS\s+TASKS\s+MEMORY\s+CPU\s+EPOCH\s+HEARTBEAT$/);
      const own = lines.find((line) => line.startsWith(`${via.nodeId} *`));
      assert.ok(own, table.stdout);
      assert.match(own, /Ready/);
      assert.ok(own.includes([...Object.entries(via.labels)].map(([k, v]) => `${k}=${v}`).join(',')), own);
    }
    assert.equal(await metric(n1, 'berth_cluster_member'), 1);
    // The URL's password is never shown: not in the log, not in the API.
    for (const member of members) assert.ok(!member.agent.tail(200).includes(PASSWORD), `${member.name} logged the database password`);
    assert.ok(members[0]!.agent.logLines().some((line) => line.msg === 'joined the cluster' && String(line.database).includes('<redacted>')));
  });

  test('a SIGKILLed agent shows down once its lease ran out, with the lease as the reason', async () => {
    const n3 = members[2]!;
    await n3.agent.stop('SIGKILL');
    const down = await untilNode(members[0]!, n3.nodeId, 'down', (node) => node.state === 'down');
    assert.match(down.downReason ?? '', new RegExp(`node ${n3.nodeId} lost its lease|lease expired`));
    // Once the sweep has run (every node sweeps on its heartbeat), the reason names the lease and its epoch.
    const swept = await untilNode(members[1]!, n3.nodeId, 'declared down by a sweep', (node) => /lost its lease \(epoch \d+/.test(node.downReason ?? ''));
    assert.equal(swept.state, 'down');
    const table = await berth(members[1]!.dataDir, ['nodes']);
    assert.match(table.stdout.split('\n').find((line) => line.startsWith(n3.nodeId)) ?? '', /Down \(node .* lost its lease/);
  });

  test('an agent paused past its lease registers again with a higher epoch when continued, and logs that it lost its lease', async () => {
    const [n1, n2] = members as [Member, Member];
    const before = await untilNode(n1, n2.nodeId, 'ready', (node) => node.state === 'ready');
    process.kill(n2.agent.pid, 'SIGSTOP');
    try {
      // Declared down by a sweep (a lease that ran out and that no sweep acted on yet is renewed when the node continues).
      await untilNode(n1, n2.nodeId, 'declared down by a sweep while paused', (node) => node.state === 'down' && /lost its lease \(epoch \d+/.test(node.downReason ?? ''));
    } finally {
      process.kill(n2.agent.pid, 'SIGCONT');
    }
    const back = await untilNode(n1, n2.nodeId, 'ready again with a higher epoch', (node) => node.state === 'ready' && node.epoch > before.epoch);
    assert.ok(back.epoch > before.epoch);
    await pollUntil('the paused agent to log its lost lease', async () =>
      n2.agent.logLines().some((line) => line.level === 40 && String(line.msg).includes('lost its cluster lease')) ? true : undefined,
    { timeoutMs: 10_000, intervalMs: 100 });
    assert.ok(n2.agent.logLines().some((line) => String(line.msg).includes(`registered in the cluster again with a new epoch (${back.epoch})`)));
  });

  test('with PostgreSQL stopped the agents keep serving and leave the cluster (metric 0); they are members again once it is back', async () => {
    const [n1, n2] = members as [Member, Member];
    await server.stop();
    try {
      for (const member of [n1, n2]) {
        await pollUntil(`${member.name}'s berth_cluster_member to drop to 0`, async () => ((await metric(member, 'berth_cluster_member')) === 0 ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
        // The agent keeps serving: health, tasks, and its CLI.
        assert.equal((await httpGet(member.agent.socketPath, '/healthz')).status, 200);
        const ps = await berth(member.dataDir, ['ps', '-a']);
        assert.equal(ps.code, 0, ps.stderr);
        // The nodes cannot be listed meanwhile: a typed 503.
        const token = (await readFile(path.join(member.dataDir, 'token'), 'utf8')).trim();
        const nodes = await httpGet(member.agent.socketPath, '/v1/nodes', token);
        assert.equal(nodes.status, 503);
        assert.equal((JSON.parse(nodes.body) as { error: { code: string } }).error.code, 'BERTH_CLUSTER_UNAVAILABLE');
        assert.ok((await metric(member, 'berth_cluster_heartbeat_failures_total'))! > 0);
      }
    } finally {
      await server.start();
    }
    for (const member of [n1, n2]) {
      await pollUntil(`${member.name} to be a member again`, async () => ((await metric(member, 'berth_cluster_member')) === 1 ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
      await untilNode(member, member.nodeId, 'ready after the outage', (node) => node.state === 'ready');
      const lines = member.agent.logLines();
      // Logged once when it went away, once when it came back.
      assert.equal(lines.filter((line) => String(line.msg).startsWith('the cluster database does not answer')).length, 1, member.agent.tail(40));
      assert.equal(lines.filter((line) => line.msg === 'the cluster database answers again').length, 1, member.agent.tail(40));
    }
    for (const member of [n1, n2]) assert.ok(!member.agent.tail(200).includes(PASSWORD));
  });

  test('a SIGTERMed agent leaves the cluster at once: down with reason "left"', async () => {
    const [n1, n2] = members as [Member, Member];
    const before = await untilNode(n1, n2.nodeId, 'ready', (node) => node.state === 'ready');
    assert.equal(await n2.agent.stop('SIGTERM'), 0);
    // Read right after the exit: no lease had to run out.
    const node = nodeIn(await nodesVia(n1), n2.nodeId)!;
    assert.deepEqual([node.state, node.downReason, node.epoch], ['down', 'left', before.epoch]);
    assert.ok(n2.agent.logLines().some((line) => line.msg === 'left the cluster'));
  });

  test('configuration errors name the cluster field, and never show the password', async () => {
    const dataDir = await dirs.make('berth-cl-bad-');
    const cases: Array<{ yaml: string; field: string }> = [
      { yaml: configFor('bad', {}).replace('lease: 1s', 'lease: 5000'), field: 'cluster.lease' },
      { yaml: configFor('bad', {}).replace('heartbeat: 300ms', 'heartbeat: 2s'), field: 'cluster.heartbeat' },
      { yaml: configFor('bad', {}).replace('listen: 127.0.0.1:0', ''), field: 'cluster.address' },
      { yaml: configFor('bad', {}).replace('listen: 127.0.0.1:0', 'listen: 0.0.0.0:0\ntls: { allowInsecure: true }'), field: 'cluster.address' },
      { yaml: configFor('bad', {}, '  strategy: fastest'), field: 'cluster.strategy' },
      { yaml: `cluster:\n  lease: 2s\n`, field: 'cluster.postgres' },
      { yaml: configFor('bad', {}).replace(url, `mysql://root:${PASSWORD}@db/x`), field: 'cluster.postgres' },
    ];
    for (const { yaml, field } of cases) {
      const file = await writeAgentConfig(dataDir, yaml);
      const result = await runBerth(['agent', '--data-dir', dataDir, '--config', file], cleanEnv(), { timeoutMs: 60_000 });
      assert.notEqual(result.code, 0, `${field}: ${result.stdout}${result.stderr}`);
      assert.ok(`${result.stdout}${result.stderr}`.includes(field), `${field}: ${result.stdout}${result.stderr}`);
      assert.ok(!`${result.stdout}${result.stderr}`.includes(PASSWORD), `${field} showed the password: ${result.stderr}`);
    }
  });
});
