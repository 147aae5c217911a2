/**
 * Reads through any node (issue 18, "Any node answers"), with real agent processes in cluster mode
 * against a real PostgreSQL and the shared engine. The agents serve HTTPS with mutual TLS and call
 * each other with the cluster's token and client certificate (made by the test). A task running on
 * node B is read through node A with the real CLI: inspect, ps (NODE column, -n), logs and logs -f
 * (lines as they come; closing the client ends the forward), stats once and streamed, plain exec,
 * exec -it over the WebSocket (window size, resize, exit code), attach (stdin, output, exit code),
 * stop, wait and rm. A queued task (a constraint nobody satisfies) reads as pending and shows in
 * `berth events --cluster`; a task of a SIGKILLed node reads from the index (lost); a forwarded
 * request is never forwarded twice; a node with another cluster token is refused by the others, and
 * a client certificate of another CA too.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type { AgentClient } from '../../src/agent/client.js';
import type { TaskView } from '../../src/agent/http/views.js';
import { ClusterStore } from '../../src/cluster/index.js';
import type { StoredTaskSpec } from '../../src/state/tasks.js';
import { agentClientOf, agentTestFile, berth, berthInspect, berthJson, BERTH_CLI, cleanEnv, httpGet, spawnBerth, waitForTaskState, writeAgentConfig, type RunningAgent } from '../support/agent.js';
import { NODE_NAME_LABEL, placeOnNode } from '../support/cluster.js';
import { pollUntil, requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';
import { createTestDatabase, requirePostgres, type TestDatabase } from '../support/postgres.js';
import { BUSYBOX_PROMPT, shellReady, startOnPty, TTY_EOL, type PtySession } from '../support/pty.js';
import { makeTestCertificates, type TestCertificates } from '../support/tls.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);
const skip = (await requireEngine()) || (await requirePostgres());

const CLUSTER_TOKEN = 'cluster-secret-0123456789abcdef';
const OTHER_TOKEN = 'another-secret-0123456789abcdef';

interface Member {
  readonly name: string;
  readonly nodeId: string;
  readonly dataDir: string;
  readonly agent: RunningAgent;
  readonly client: AgentClient;
  readonly token: string;
}

const spec = (command: string[]): StoredTaskSpec => ({ image: TEST_IMAGE, command, labels: { ...run.labels }, stopGracePeriod: '1s' });

/** busybox sh's prompt, as root in / */
const PROMPT = BUSYBOX_PROMPT;
const EOL = TTY_EOL;

describe('reads through any node of a cluster', { skip }, () => {
  let db: TestDatabase;
  let store: ClusterStore;
  let certs: TestCertificates;
  const members: Member[] = [];
  const clients: AgentClient[] = [];

  const startMember = async (name: string, options: { token?: string; clientCert?: 'own' | 'other' } = {}): Promise<Member> => {
    const dataDir = await dirs.make(`berth-fw-${name}-`);
    const nodeId = `${run.id}-${name}`;
    const client = options.clientCert === 'other' ? certs.otherClient : certs.client;
    const file = await writeAgentConfig(
      dataDir,
      [
        'listen: 127.0.0.1:0',
        'tls:',
        `  cert: ${certs.server.cert}`,
        `  key: ${certs.server.key}`,
        `  clientCa: ${certs.ca.cert}`,
        'cluster:',
        `  postgres: ${db.url}`,
        `  nodeId: ${nodeId}`,
        `  labels: { ${NODE_NAME_LABEL}: ${nodeId} }`,
        '  lease: 1s',
        '  heartbeat: 300ms',
        `  token: ${options.token ?? CLUSTER_TOKEN}`,
        '  tls:',
        `    ca: ${certs.ca.cert}`,
        `    cert: ${client.cert}`,
        `    key: ${client.key}`,
      ].join('\n'),
    );
    const agent = await agents.start(dataDir, ['--config', file]);
    const agentClient = await agentClientOf(agent);
    clients.push(agentClient);
    const token = (await readFile(path.join(dataDir, 'token'), 'utf8')).trim();
    const member = { name, nodeId, dataDir, agent, client: agentClient, token };
    members.push(member);
    return member;
  };
  const member = (name: string): Member => members.find((m) => m.name === name)!;
  /** A sample of the member's /metrics by its name and labels as printed (`name{labels}`); undefined when absent. */
  const metric = async (m: Member, series: string): Promise<number | undefined> => {
    const answer = await httpGet(m.agent.socketPath, '/metrics', m.token);
    const line = answer.body.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };

  /** An HTTPS request to a member's TCP address (its node address), with the given bearer and client certificate. */
  const httpsTo = async (target: Member, urlPath: string, options: { bearer: string; clientCert?: 'own' | 'other'; headers?: Record<string, string> }): Promise<{ status: number; body: string }> => {
    const listing = await target.client.listNodes();
    const address = new URL(listing.nodes.find((n) => n.id === target.nodeId)!.address);
    const pair = options.clientCert === 'other' ? certs.otherClient : certs.client;
    const [ca, cert, key] = await Promise.all([readFile(certs.ca.cert), readFile(pair.cert), readFile(pair.key)]);
    return new Promise((resolve, reject) => {
      const req = httpsRequest({ host: address.hostname, port: address.port, path: urlPath, ca, cert, key, headers: { authorization: `Bearer ${options.bearer}`, ...options.headers } }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.once('error', reject);
      req.end();
    });
  };

  before(async () => {
    db = await createTestDatabase();
    certs = await makeTestCertificates(await dirs.make('berth-fw-certs-'));
    await Promise.all([startMember('a'), startMember('b'), startMember('c', { token: OTHER_TOKEN })]);
    store = await ClusterStore.open({ connectionString: db.url });
    await pollUntil('all three nodes ready', async () => {
      const listing = await member('a').client.listNodes();
      return members.every((m) => listing.nodes.find((n) => n.id === m.nodeId)?.state === 'ready') ? true : undefined;
    }, { timeoutMs: 30_000, intervalMs: 100 });
  });
  after(async () => {
    for (const client of clients) await client.close();
    await agents.killAll();
    await store?.close();
    await db?.drop();
  });

  test('a task running on node B reads through node A: inspect, ps with its node, logs and logs -f as lines come, stats once and streamed, plain exec, stop, wait, rm', async () => {
    const [a, b] = [member('a'), member('b')];
    const id = `${run.id}-on-b`;
    // Submitted through A, placed on B by its constraint.
    await placeOnNode(store, b, { id, spec: spec(['sh', '-c', 'echo first; while [ ! -f /tmp/go ]; do sleep 0.1; done; echo second; exec sleep 3600']) }, a.client);
    await waitForTaskState(b.client, id, ['running']);

    const inspected = await berthInspect<TaskView>(a.dataDir, id);
    assert.equal(inspected.id, id);
    assert.equal(inspected.state, 'running');
    assert.equal(inspected.node, b.nodeId, 'inspect through A shows the node that runs the task');
    assert.ok(inspected.containerId, 'the detail of B\'s own record (its container)');

    const table = await berth(a.dataDir, ['ps', '--no-trunc']);
    assert.equal(table.code, 0, table.stderr);
    const [header, ...rows] = table.stdout.trimEnd().split('\n');
    assert.match(header!, /\bNODE\b/);
    const row = rows.find((line) => line.startsWith(id));
    assert.ok(row, table.stdout);
    assert.match(row, new RegExp(`${b.nodeId}\\s*$`));
    const listed = await berthJson<TaskView[]>(a.dataDir, ['ps']);
    assert.equal(listed.find((t) => t.id === id)?.node, b.nodeId);

    // logs -f through A: the first line, then (after an exec through A lets the task go on) the second as it comes.
    const follower = spawnBerth(a.dataDir, ['logs', '-f', id]);
    try {
      await pollUntil('the first line through A', async () => (follower.stdout().includes('first\n') ? true : undefined), { timeoutMs: 30_000, intervalMs: 50 });
      assert.equal(follower.stdout().includes('second'), false);
      const touched = await berth(a.dataDir, ['exec', id, 'sh', '-c', ': > /tmp/go']);
      assert.equal(touched.code, 0, touched.stderr);
      await pollUntil('the second line as it comes through A', async () => (follower.stdout().includes('second\n') ? true : undefined), { timeoutMs: 30_000, intervalMs: 50 });
    } finally {
      follower.interrupt();
      await follower.closed;
    }
    // The client going away ends A's forward (and with it the request to B).
    await pollUntil('no forward open on A', async () => ((await metric(a, 'berth_cluster_forwards_open')) === 0 ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
    const logs = await berth(a.dataDir, ['logs', id]);
    assert.equal(logs.code, 0, logs.stderr);
    assert.equal(logs.stdout, 'first\nsecond\n');

    const printed = await berth(a.dataDir, ['exec', id, 'sh', '-c', 'echo from-b; exit 4']);
    assert.equal(printed.code, 4, printed.stderr);
    assert.equal(printed.stdout, 'from-b\n');

    const stats = await berth(a.dataDir, ['stats', '--no-stream', '--json', id]);
    assert.equal(stats.code, 0, stats.stderr);
    const sample = JSON.parse(stats.stdout.trim().split('\n')[0]!) as { taskId?: string; memoryBytes?: number };
    assert.equal(sample.taskId, id, stats.stdout);

    // Streamed stats through A: samples keep coming (one a second) until berth is interrupted.
    const streamed = spawnBerth(a.dataDir, ['stats', '--json', id]);
    try {
      await pollUntil('two streamed samples through A', async () => (streamed.stdout().split('\n').filter((line) => line.includes(`"taskId":"${id}"`)).length >= 2 ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
    } finally {
      streamed.interrupt();
      await streamed.closed;
    }

    const stopped = await berth(a.dataDir, ['stop', id]);
    assert.equal(stopped.code, 0, stopped.stderr);
    const ended = await waitForTaskState(a.client, id, ['exited']);
    assert.equal(ended.node, b.nodeId);
    assert.equal((await b.client.get(id)).state, 'exited', 'the stop reached B');
    assert.equal((await a.client.waitOnce(id, 1_000)).ended, true, 'wait through A');
    // rm through A removes it on B; it is then gone through A too (B answers 404 through A).
    const removed = await berth(a.dataDir, ['rm', id]);
    assert.equal(removed.code, 0, removed.stderr);
    const gone = await httpGet(a.agent.socketPath, `/v1/tasks/${id}`, a.token);
    assert.equal(gone.status, 404, gone.body);
  });

  test('exec -it through node A reaches node B over the WebSocket: the window size, a resize, the exit code', async () => {
    const [a, b] = [member('a'), member('b')];
    const id = `${run.id}-tty-on-b`;
    await placeOnNode(store, b, { id, spec: spec(['sleep', '3600']) });
    await waitForTaskState(b.client, id, ['running']);
    const session: PtySession = startOnPty(process.execPath, [...BERTH_CLI, 'exec', '-it', id, 'sh'], { rows: 31, columns: 97, cwd: REPO, env: cleanEnv({ BERTH_DATA_DIR: a.dataDir }) });
    try {
      await shellReady(session);
      const sizeIs = (size: string): Promise<boolean> =>
        pollUntil(`stty size ${size}`, async () => {
          const from = session.screen.length;
          session.write('stty size\r');
          const at = await session.waitFor(new RegExp(`\\d+ \\d+${EOL}`), { from });
          await session.waitFor(PROMPT, { from: at });
          return new RegExp(`${size}${EOL}$`).test(session.screen.slice(from, at)) ? true : undefined;
        }, { timeoutMs: 30_000, intervalMs: 100 });
      await sizeIs('31 97');
      session.resize(40, 132);
      await sizeIs('40 132');
      session.write('exit 3\r');
      const exit = await session.exited();
      assert.equal(exit.code, 3, session.screen);
    } finally {
      session.kill();
    }
    assert.ok(((await metric(a, 'berth_cluster_forwarded_requests_total{kind="websocket",outcome="forwarded"}')) ?? 0) >= 1);
    await b.client.stop(id);
    await waitForTaskState(b.client, id, ['exited']);
    // B refuses the upgrade (the task is not running): its answer comes through A as it is.
    await assert.rejects(a.client.exec(id, { cmd: ['true'] }), (error: unknown) => (error as { code?: string }).code === 'BERTH_TASK_STATE');
  });

  test('berth attach through node A reaches node B over the WebSocket: stdin in, output out, the task\'s exit code', async () => {
    const [a, b] = [member('a'), member('b')];
    const id = `${run.id}-attach-on-b`;
    await placeOnNode(store, b, { id, spec: { ...spec(['sh', '-c', 'read line; echo got-$line; exit 5']), openStdin: true } });
    await waitForTaskState(b.client, id, ['running']);
    const child = spawn(process.execPath, [...BERTH_CLI, 'attach', id], { stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv({ BERTH_DATA_DIR: a.dataDir }) });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const closed = once(child, 'close');
    child.stdin.write('hello\n');
    const [code] = (await closed) as [number | null];
    assert.equal(code, 5, stderr);
    assert.equal(stdout, 'got-hello\n');
  });

  test('a queued task (a constraint nobody satisfies) reads as pending with no node, its logs say it is queued, and berth events --cluster shows it queued', async () => {
    const a = member('a');
    const id = `${run.id}-queued`;
    // The cluster's events through A (GET /v1/events?scope=cluster): the queued task shows as it is queued.
    const events = spawnBerth(a.dataDir, ['events', '--cluster']);
    try {
      await pollUntil('berth events --cluster listening', async () => (events.stderr().includes('listening') ? true : undefined), { timeoutMs: 30_000, intervalMs: 50 });
      await a.client.submit({ id, spec: { ...spec(['true']), constraints: { 'node.zone': 'nowhere' } } });
      await pollUntil('the task.queued event through A', async () => (events.stdout().includes(`task.queued task=${id}`) ? true : undefined), { timeoutMs: 30_000, intervalMs: 50 });
    } finally {
      events.interrupt();
      await events.closed;
    }
    const task = await a.client.get(id);
    assert.equal(task.state, 'pending');
    assert.equal(task.node, null);
    const listed = await berthJson<TaskView[]>(a.dataDir, ['ps']);
    assert.equal(listed.find((t) => t.id === id)?.node, null);
    // ps -n 1 (newest first, limit 1): the newest of the cluster's tasks.
    assert.deepEqual((await berthJson<TaskView[]>(a.dataDir, ['ps', '-n', '1'])).map((t) => t.id), [id]);
    const logs = await httpGet(a.agent.socketPath, `/v1/tasks/${id}/logs`, a.token);
    assert.equal(logs.status, 409, logs.body);
    assert.equal((JSON.parse(logs.body) as { error: { code: string } }).error.code, 'BERTH_TASK_STATE');
    const unknown = await httpGet(a.agent.socketPath, `/v1/tasks/${run.id}-nowhere`, a.token);
    assert.equal(unknown.status, 404, unknown.body);
  });

  test('a forwarded request is never forwarded twice: a task the index puts on B that B does not hold answers 409 BERTH_FORWARD_LOOP', async () => {
    const [a, b] = [member('a'), member('b')];
    const id = `${run.id}-not-on-b`;
    // In the index on a node whose address is B's but that B is not (B's claimer cannot take the task):
    // B has no record of it and must not send the request on (back to A, or anywhere).
    const bAddress = (await b.client.listNodes()).nodes.find((n) => n.id === b.nodeId)!.address;
    const ghost = await store.register({ nodeId: `${run.id}-ghost`, address: bAddress, labels: { [NODE_NAME_LABEL]: `${run.id}-ghost` }, capacity: { memoryBytes: 1e12, cpuMilli: 1e6, tasks: 1000 } });
    await store.enqueue({ id, spec: spec(['true']), constraints: { [`node.${NODE_NAME_LABEL}`]: ghost.nodeId } });
    assert.equal((await store.claim({ nodeId: ghost.nodeId, epoch: ghost.epoch, free: { memoryBytes: 1e12, cpuMilli: 1e6, tasks: 1000 }, limit: 1 })).length, 1);
    const answer = await httpGet(a.agent.socketPath, `/v1/tasks/${id}`, a.token);
    assert.equal(answer.status, 409, answer.body);
    const body = JSON.parse(answer.body) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'BERTH_FORWARD_LOOP');
    assert.match(body.error.message, new RegExp(a.nodeId));
    // The header alone (a request that says another node forwarded it) is never forwarded either.
    const direct = await httpsTo(a, `/v1/tasks/${id}`, { bearer: CLUSTER_TOKEN, headers: { 'berth-forwarded-by': b.nodeId } });
    assert.equal(direct.status, 409, direct.body);
    await store.report(id, ghost.nodeId, ghost.epoch, { kind: 'exited', exitCode: 0 });
    await store.leave(ghost.nodeId, ghost.epoch);
  });

  test('the cluster refuses a node with another cluster token, and a client certificate of another CA', async () => {
    const [b, c] = [member('b'), member('c')];
    const id = `${run.id}-refused`;
    await placeOnNode(store, b, { id, spec: spec(['sleep', '3600']) });
    await waitForTaskState(b.client, id, ['running']);
    const viaC = await berth(c.dataDir, ['inspect', id]);
    assert.notEqual(viaC.code, 0, viaC.stdout);
    assert.match(viaC.stderr, /BERTH_NODE_UNREACHABLE/);
    assert.match(viaC.stderr, /cluster\.token/);
    assert.ok(((await metric(c, 'berth_cluster_forwarded_requests_total{kind="http",outcome="refused"}')) ?? 0) >= 1);
    const wrongToken = await httpsTo(b, `/v1/tasks/${id}`, { bearer: OTHER_TOKEN });
    assert.equal(wrongToken.status, 401, wrongToken.body);
    const otherCa = await httpsTo(b, `/v1/tasks/${id}`, { bearer: CLUSTER_TOKEN, clientCert: 'other' });
    assert.equal(otherCa.status, 403, otherCa.body);
    const cluster = await httpsTo(b, `/v1/tasks/${id}`, { bearer: CLUSTER_TOKEN });
    assert.equal(cluster.status, 200, 'the cluster token with the cluster\'s certificate is accepted as the API token');
    await b.client.stop(id);
  });

  test('a node shutting down (SIGTERM) ends the streams it forwards, and exits', async () => {
    const [b, d] = [member('b'), await startMember('d')];
    const id = `${run.id}-followed-on-b`;
    await placeOnNode(store, b, { id, spec: spec(['sh', '-c', 'echo up; exec sleep 3600']) });
    await waitForTaskState(b.client, id, ['running']);
    await pollUntil('d ready in the cluster', async () => ((await d.client.listNodes()).nodes.find((n) => n.id === d.nodeId)?.state === 'ready' ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
    const follower = spawnBerth(d.dataDir, ['logs', '-f', id]);
    await pollUntil('the follow through D', async () => (follower.stdout().includes('up\n') ? true : undefined), { timeoutMs: 30_000, intervalMs: 50 });
    assert.equal(await d.agent.stop('SIGTERM'), 0, d.agent.tail(20));
    await follower.closed;
    await b.client.stop(id);
  });

  test('a task of a SIGKILLed node reads from the cluster index: lost, with the node and the reason', async () => {
    const [a, c] = [member('a'), member('c')];
    const id = `${run.id}-on-c`;
    await placeOnNode(store, c, { id, spec: spec(['sleep', '3600']) });
    await waitForTaskState(c.client, id, ['running']);
    await c.agent.stop('SIGKILL');
    const lost = await pollUntil('the task lost in the index, read through A', async () => {
      const task = await a.client.get(id);
      return task.state === 'lost' ? task : undefined;
    }, { timeoutMs: 30_000, intervalMs: 200 });
    assert.equal(lost.node, c.nodeId);
    assert.equal(lost.endState?.kind, 'lost');
    assert.match((lost.endState as { reason: string }).reason, new RegExp(c.nodeId));
    const inspected = await berthInspect<TaskView>(a.dataDir, id);
    assert.equal(inspected.state, 'lost');
    const logs = await httpGet(a.agent.socketPath, `/v1/tasks/${id}/logs`, a.token);
    assert.equal(logs.status, 503, logs.body);
    assert.equal((JSON.parse(logs.body) as { error: { code: string } }).error.code, 'BERTH_NODE_UNREACHABLE');
    // The SIGKILLed agent left its container: removed with the run's (labels) in the file's clean-up.
  });
});
