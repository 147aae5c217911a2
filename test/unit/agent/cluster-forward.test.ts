import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { answeredHeaders, FORWARDED_BY_HEADER, forwardAddressRule, forwardedHeaders, locateTask, readClusterCredentials } from '../../../src/agent/cluster-forward.js';
import { loadAgentConfig, type AgentConfigInput, type HostFacts } from '../../../src/agent/config.js';
import { indexRefusal, isTaskScopedRoute } from '../../../src/agent/http/forward-route.js';
import { mergeClusterTasks } from '../../../src/agent/http/task-list.js';
import { toIndexTaskView, type TaskView } from '../../../src/agent/http/views.js';
import { renderTaskTable } from '../../../src/cli/output.js';
import type { ClusterEvent, ClusterEventPage, ClusterTask } from '../../../src/cluster/index.js';
import { clusterEventResume, clusterEventStream, formatClusterEvents } from '../../../src/agent/http/cluster-events.js';
import { BerthError, ValidationError } from '../../../src/common/errors.js';
import { clusterTaskFixture } from '../../support/cluster-task.js';

const GiB = 1024 ** 3;
const host: HostFacts = { uid: 1000, homedir: '/home/ada', totalMemoryBytes: 8 * GiB, cpuCount: 4 };
const POSTGRES = 'postgres://berth@db.example:5432/berth';

const clusterTask = clusterTaskFixture;

const nodes = [
  { nodeId: 'a', address: 'https://10.0.0.1:7443', state: 'ready' as const },
  { nodeId: 'b', address: 'https://10.0.0.2:7443', state: 'ready' as const },
  { nodeId: 'c', address: 'https://10.0.0.3:7443', state: 'down' as const },
];

describe('locating a task in the cluster', () => {
  const locate = (task: ClusterTask | undefined, options: { isLocal?: boolean; forwardedBy?: string } = {}) =>
    locateTask({ isLocal: options.isLocal ?? false, forwardedBy: options.forwardedBy, selfNodeId: 'a', task, nodes });

  it('answers here a task this node has a record of, whatever the index says', () => {
    assert.deepEqual(locate(clusterTask({ state: 'running', nodeId: 'b' }), { isLocal: true }), { kind: 'local' });
  });

  it('forwards a task running on another node that is ready, to that node\'s address', () => {
    const task = clusterTask({ state: 'running', nodeId: 'b', epoch: 1 });
    assert.deepEqual(locate(task), { kind: 'forward', nodeId: 'b', address: 'https://10.0.0.2:7443', task });
  });

  it('forwards a task that ended on another node that is ready (its output is there)', () => {
    assert.equal(locate(clusterTask({ state: 'exited', nodeId: 'b', exitCode: 0 })).kind, 'forward');
  });

  it('answers from the index a queued task, a task of a node that is down or unknown, and one held here without a record', () => {
    assert.deepEqual(locate(clusterTask()), { kind: 'index', task: clusterTask(), why: 'queued' });
    assert.equal((locate(clusterTask({ state: 'running', nodeId: 'c' })) as { why: string }).why, 'node-down');
    assert.equal((locate(clusterTask({ state: 'running', nodeId: 'gone' })) as { why: string }).why, 'node-down');
    assert.equal((locate(clusterTask({ state: 'claimed', nodeId: 'a' })) as { why: string }).why, 'not-recorded-here');
  });

  it('answers from the index a task cancelled while queued (ended, no node): never placed, not queued', () => {
    const cancelled = clusterTask({ state: 'exited', endReason: 'cancelled', endedAt: new Date('2026-01-01T00:00:01Z') });
    assert.deepEqual(locate(cancelled), { kind: 'index', task: cancelled, why: 'never-placed' });
    const refusal = indexRefusal({ kind: 'index', task: cancelled, why: 'never-placed' });
    assert.equal(refusal.code, 'BERTH_TASK_STATE');
    assert.match(refusal.message, /cancelled before any node ran it/);
  });

  it('shows a task cancelled while queued as a local task stopped before it started: exited, end cancelled, no exit code, no node', () => {
    const view = toIndexTaskView(clusterTask({ state: 'exited', endReason: 'cancelled', endedAt: new Date('2026-01-01T00:00:01Z') }));
    assert.equal(view.state, 'exited');
    assert.deepEqual(view.endState, { kind: 'cancelled' });
    assert.equal(view.exitCode, undefined);
    assert.equal(view.node, null);
    assert.equal(view.finishedAt, '2026-01-01T00:00:01.000Z');
  });

  it('is unknown (404) when neither this node nor the index has the task', () => {
    assert.deepEqual(locate(undefined), { kind: 'unknown' });
  });

  it('never forwards a request another node forwarded: it is refused as a loop', () => {
    assert.deepEqual(locate(clusterTask({ state: 'running', nodeId: 'b' }), { forwardedBy: 'b' }), { kind: 'loop', forwardedBy: 'b' });
    assert.deepEqual(locate(undefined, { forwardedBy: 'b' }), { kind: 'loop', forwardedBy: 'b' });
  });

  it('says why a route cannot be answered from the index: queued (409) or its node down (503)', () => {
    assert.equal(indexRefusal({ kind: 'index', task: clusterTask(), why: 'queued' }).code, 'BERTH_TASK_STATE');
    const down = indexRefusal({ kind: 'index', task: clusterTask({ state: 'running', nodeId: 'c' }), why: 'node-down' });
    assert.equal(down.code, 'BERTH_NODE_UNREACHABLE');
    assert.match(down.message, /node c, which is down/);
  });

  it('covers every route under /v1/tasks/:id, and no other', () => {
    for (const url of ['/v1/tasks/:id', '/v1/tasks/:id/logs', '/v1/tasks/:id/exec', '/v1/tasks/:id/attach', '/v1/tasks/:id/archive']) assert.equal(isTaskScopedRoute(url), true, url);
    for (const url of ['/v1/tasks', '/v1/groups/:id', '/v1/nodes', undefined]) assert.equal(isTaskScopedRoute(url), false, String(url));
  });
});

describe('the headers of a forwarded request', () => {
  const incoming = {
    host: 'a.example:7443',
    authorization: 'Bearer users-token',
    connection: 'keep-alive, x-private',
    'keep-alive': 'timeout=5',
    'x-private': 'for this hop only',
    'transfer-encoding': 'chunked',
    'content-type': 'application/json',
    accept: 'application/x-ndjson',
    [FORWARDED_BY_HEADER]: 'spoofed',
  };

  it('carry the cluster token instead of the caller\'s, name this node, and drop the connection\'s own headers', () => {
    const out = forwardedHeaders(incoming, { selfNodeId: 'a', token: 'cluster-secret-0123456789', isUpgrade: false });
    assert.deepEqual(out, { authorization: 'Bearer cluster-secret-0123456789', 'content-type': 'application/json', accept: 'application/x-ndjson', [FORWARDED_BY_HEADER]: 'a' });
  });

  it('carry the caller\'s own token when the cluster has none', () => {
    assert.equal(forwardedHeaders(incoming, { selfNodeId: 'a', token: undefined, isUpgrade: false }).authorization, 'Bearer users-token');
  });

  it('keep a WebSocket upgrade an upgrade, with its key', () => {
    const out = forwardedHeaders({ connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'k', 'sec-websocket-version': '13' }, { selfNodeId: 'a', token: 'cluster-secret-0123456789', isUpgrade: true });
    assert.equal(out.connection, 'Upgrade');
    assert.equal(out.upgrade, 'websocket');
    assert.equal(out['sec-websocket-key'], 'k');
  });

  it('of the answer drop the connection\'s own (the stream is chunked again on this hop)', () => {
    assert.deepEqual(answeredHeaders({ 'content-type': 'application/x-ndjson', 'transfer-encoding': 'chunked', connection: 'keep-alive', 'cache-control': 'no-store' }), {
      'content-type': 'application/x-ndjson',
      'cache-control': 'no-store',
    });
  });

  it('go over https, or plain http to a loopback address only', () => {
    assert.equal(forwardAddressRule('https://10.0.0.2:7443'), undefined);
    assert.equal(forwardAddressRule('http://127.0.0.1:7070'), undefined);
    assert.equal(forwardAddressRule('http://[::1]:7070'), undefined);
    assert.match(forwardAddressRule('http://10.0.0.2:7070') ?? '', /not https:\/\/.*loopback/);
    assert.match(forwardAddressRule('unix:///run/berth.sock') ?? '', /not https/);
  });
});

describe('the cluster credential keys', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'berth-cred-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  function issues(cluster: Record<string, unknown>): Array<{ field: string; rule: string }> {
    try {
      loadAgentConfig({ host, flags: { listen: '127.0.0.1:7070', cluster: { postgres: POSTGRES, ...cluster } } as AgentConfigInput });
      return [];
    } catch (error) {
      assert.ok(error instanceof ValidationError, String(error));
      return error.issues.map((i) => ({ field: i.field, rule: i.rule }));
    }
  }

  it('compile a token and the TLS files', () => {
    const config = loadAgentConfig({ host, flags: { listen: '127.0.0.1:7070', cluster: { postgres: POSTGRES, token: 'cluster-secret-0123456789', tls: { ca: '/etc/ca.pem', cert: '/etc/n.pem', key: '/etc/n-key.pem' } } } });
    assert.equal(config.cluster?.token, 'cluster-secret-0123456789');
    assert.deepEqual(config.cluster?.tls, { caFile: '/etc/ca.pem', certFile: '/etc/n.pem', keyFile: '/etc/n-key.pem' });
  });

  it('refuse a short token without quoting it, a token with a token file, a certificate without its key, a relative path, naming the field', () => {
    const short = issues({ token: 'tiny' });
    assert.deepEqual(short.map((i) => i.field), ['cluster.token']);
    assert.equal(short[0]!.rule.includes('tiny'), false);
    assert.deepEqual(issues({ token: 'cluster-secret-0123456789', tokenFile: '/etc/token' }).map((i) => i.field), ['cluster.tokenFile']);
    assert.deepEqual(issues({ tls: { cert: '/etc/n.pem' } }).map((i) => i.field), ['cluster.tls.key']);
    assert.deepEqual(issues({ tls: { ca: 'ca.pem' } }).map((i) => i.field), ['cluster.tls.ca']);
    assert.deepEqual(issues({ tls: { ca: '/etc/ca.pem', extra: 1 } }).length, 1);
  });

  it('read the token file\'s first line, and name cluster.tokenFile when it is missing or too short', () => {
    const file = path.join(dir, 'token');
    writeFileSync(file, 'from-a-file-0123456789\nignored\n');
    assert.equal(readClusterCredentials({ tokenFile: file }).token, 'from-a-file-0123456789');
    const missing = (() => {
      try {
        readClusterCredentials({ tokenFile: path.join(dir, 'absent') });
        return undefined;
      } catch (error) {
        return error;
      }
    })();
    assert.ok(missing instanceof ValidationError);
    assert.equal(missing.issues[0]!.field, 'cluster.tokenFile');
    writeFileSync(file, 'short\n');
    assert.throws(() => readClusterCredentials({ tokenFile: file }), (error: unknown) => error instanceof ValidationError && error.issues[0]!.field === 'cluster.tokenFile');
  });

  it('name cluster.tls.cert when its file is not a certificate', () => {
    const bad = path.join(dir, 'bad.pem');
    writeFileSync(bad, 'not pem');
    assert.throws(() => readClusterCredentials({ tls: { certFile: bad, keyFile: bad } }), (error: unknown) => error instanceof ValidationError && error.issues[0]!.field === 'cluster.tls.cert');
  });
});

describe('tasks of the cluster index as the API shows them', () => {
  it('a queued or claimed task is pending with no node (queued) or its node (claimed)', () => {
    const queued = toIndexTaskView(clusterTask());
    assert.equal(queued.state, 'pending');
    assert.equal(queued.node, null);
    assert.equal(queued.submittedAt, '2026-01-01T00:00:00.000Z');
    assert.equal(toIndexTaskView(clusterTask({ state: 'claimed', nodeId: 'b' })).node, 'b');
  });

  it('an exited task has the end its node reported; a lost one its reason', () => {
    const exited = toIndexTaskView(clusterTask({ state: 'exited', nodeId: 'b', exitCode: 137, endReason: 'oom', endedAt: new Date('2026-01-01T00:01:00Z') }));
    assert.deepEqual(exited.endState, { kind: 'oom', exitCode: 137 });
    assert.equal(exited.exitCode, 137);
    assert.equal(exited.finishedAt, '2026-01-01T00:01:00.000Z');
    assert.deepEqual(toIndexTaskView(clusterTask({ state: 'exited', nodeId: 'b', exitCode: 2 })).endState, { kind: 'failed', exitCode: 2 });
    const lost = toIndexTaskView(clusterTask({ state: 'lost', nodeId: 'c', endReason: 'node c lost its lease' }));
    assert.equal(lost.state, 'lost');
    assert.deepEqual(lost.endState, { kind: 'lost', reason: 'node c lost its lease' });
  });

  it('redacts the secrets of inline registry credentials in the spec', () => {
    const view = toIndexTaskView(clusterTask({ spec: { image: 'r.example/app', registryAuth: { username: 'u', password: 'hunter2' } } }));
    assert.equal(JSON.stringify(view).includes('hunter2'), false);
  });
});

describe('the cluster-wide task list', () => {
  const local = (id: string, submittedAt: string): TaskView => ({ id, state: 'running', spec: { image: 'busybox' }, submittedAt, node: 'a' });
  const base = { isRecordedHere: () => false, states: ['pending', 'starting', 'running', 'stopping', 'exited', 'lost'] as const, labels: [], endKinds: [], order: 'oldest-first' as const };

  it('merges this node\'s records with the index\'s other tasks, in submission order, a record here winning', () => {
    const indexed = [clusterTask({ id: 'here', state: 'running', nodeId: 'a' }), clusterTask({ id: 'there', state: 'running', nodeId: 'b', submittedAt: new Date('2026-01-01T00:00:30Z') })];
    const merged = mergeClusterTasks([local('here', '2026-01-01T00:00:10.000Z')], indexed, { ...base, states: [...base.states] });
    assert.deepEqual(merged.map((t) => [t.id, t.node]), [['here', 'a'], ['there', 'b']]);
    assert.equal(merged[0]!.submittedAt, '2026-01-01T00:00:10.000Z', 'the record here, not the index entry');
  });

  it('applies the list\'s filters to the index\'s tasks: states, labels, end kinds, order and limit', () => {
    const indexed = [
      clusterTask({ id: 'q' }),
      clusterTask({ id: 'x', state: 'exited', nodeId: 'b', exitCode: 1, submittedAt: new Date('2026-01-01T00:00:01Z') }),
      clusterTask({ id: 'y', state: 'exited', nodeId: 'b', exitCode: 0, spec: { image: 'busybox', labels: { app: 'db' } }, submittedAt: new Date('2026-01-01T00:00:02Z') }),
    ];
    assert.deepEqual(mergeClusterTasks([], indexed, { ...base, states: ['pending'] }).map((t) => t.id), ['q']);
    assert.deepEqual(mergeClusterTasks([], indexed, { ...base, states: [...base.states], labels: ['app=web'] }).map((t) => t.id), ['q', 'x']);
    assert.deepEqual(mergeClusterTasks([], indexed, { ...base, states: [...base.states], endKinds: ['failed'] }).map((t) => t.id), ['x']);
    assert.deepEqual(mergeClusterTasks([], indexed, { ...base, states: [...base.states], order: 'newest-first', limit: 2 }).map((t) => t.id), ['y', 'x']);
    assert.deepEqual(mergeClusterTasks([], indexed, { ...base, states: [...base.states], isRecordedHere: (id) => id === 'q' }).map((t) => t.id), ['x', 'y']);
  });

  it('berth ps shows a NODE column for a cluster\'s tasks (empty while queued), and none on a single agent', () => {
    const now = Date.parse('2026-01-01T00:01:00Z');
    const cluster = renderTaskTable([{ ...local('t1', '2026-01-01T00:00:00Z'), node: 'node-b' }, toIndexTaskView(clusterTask({ id: 't2' }))], now, { noTrunc: true });
    const [header, first, second] = cluster.trimEnd().split('\n');
    assert.match(header!, /PORTS\s+NODE$/);
    assert.match(first!, /node-b$/);
    assert.doesNotMatch(second!, /node-/);
    const single = renderTaskTable([{ id: 't1', state: 'running', spec: { image: 'busybox' }, submittedAt: '2026-01-01T00:00:00Z' }], now);
    assert.doesNotMatch(single, /NODE/);
  });
});

describe('the cluster event stream\'s wire format', () => {
  const event = (seq: number): ClusterEvent => ({ seq, at: new Date('2026-01-01T00:00:00Z'), kind: 'task.queued', taskId: `t${seq}`, nodeId: undefined, epoch: undefined, data: { priority: 0 } });

  it('writes each event with its kind, and the page\'s cursor as the last one\'s id', () => {
    const text = formatClusterEvents({ events: [event(1), event(2)], cursor: '900:2' });
    assert.equal(
      text,
      'event: task.queued\ndata: {"seq":1,"at":"2026-01-01T00:00:00.000Z","kind":"task.queued","taskId":"t1","data":{"priority":0}}\n\n' +
        'id: 900:2\nevent: task.queued\ndata: {"seq":2,"at":"2026-01-01T00:00:00.000Z","kind":"task.queued","taskId":"t2","data":{"priority":0}}\n\n',
    );
  });

  it('resumes after a cluster cursor from Last-Event-ID, and refuses anything else naming the header', () => {
    assert.equal(clusterEventResume(undefined), undefined);
    assert.equal(clusterEventResume(' 900:2 '), '900:2');
    assert.throws(() => clusterEventResume('17'), (error: unknown) => error instanceof ValidationError && error.issues[0]!.field === 'last-event-id');
  });
});

describe('the cluster event stream', () => {
  const noLogger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
  /** A scripted event log: cursors are `0:<seq>`, a page the events after it. */
  const log = (): { events: ClusterEvent[]; fail: boolean; failedReads: number; read(options: { after?: string; limit?: number }): Promise<ClusterEventPage> } => {
    const state = {
      events: [] as ClusterEvent[],
      fail: false,
      failedReads: 0,
      async read(options: { after?: string; limit?: number }): Promise<ClusterEventPage> {
        if (state.fail) {
          state.failedReads += 1;
          throw new BerthError('BERTH_CLUSTER_UNAVAILABLE', 'away');
        }
        const after = Number((options.after ?? '0:0').split(':')[1]);
        const page = state.events.filter((e) => e.seq > after).slice(0, options.limit ?? 1000);
        return { events: page, cursor: page.length === 0 ? (options.after ?? '0:0') : `0:${page.at(-1)!.seq}` };
      },
    };
    return state;
  };
  const event = (seq: number): ClusterEvent => ({ seq, at: new Date(0), kind: 'task.queued', taskId: `t${seq}`, nodeId: undefined, epoch: undefined, data: {} });
  const until = async (text: () => string, wanted: string): Promise<void> => {
    const deadline = Date.now() + 5_000;
    while (!text().includes(wanted)) {
      if (Date.now() > deadline) throw new Error(`no ${wanted} in ${text()}`);
      await new Promise((resolve) => setImmediate(resolve));
    }
  };

  it('starts from now: what was logged before is skipped, what comes after is sent, also after the database was away', async () => {
    const store = log();
    store.events.push(event(1), event(2));
    const stream = clusterEventStream({ readEvents: (o) => store.read(o), pollMs: 5, logger: noLogger });
    let text = '';
    stream.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
    try {
      await until(() => text, ': connected');
      store.events.push(event(3));
      await until(() => text, '"taskId":"t3"');
      store.fail = true;
      store.events.push(event(4));
      // Reads fail for a while (twice: the stream goes on reading); then the database is back.
      await until(() => (store.failedReads >= 2 ? 'failed twice' : ''), 'failed twice');
      store.fail = false;
      await until(() => text, '"taskId":"t4"');
      assert.equal(text.includes('"taskId":"t1"'), false);
      assert.equal(text.includes('"taskId":"t2"'), false);
      assert.equal(text.split('"taskId":"t3"').length, 2, 'each event once');
    } finally {
      stream.destroy();
    }
  });

  it('resumes after a cursor: the events after it, then new ones', async () => {
    const store = log();
    store.events.push(event(1), event(2), event(3));
    const stream = clusterEventStream({ readEvents: (o) => store.read(o), after: '0:1', pollMs: 5, logger: noLogger });
    let text = '';
    stream.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
    try {
      await until(() => text, 'id: 0:3');
      assert.equal(text.includes('"taskId":"t1"'), false);
      assert.ok(text.includes('"taskId":"t2"'));
    } finally {
      stream.destroy();
    }
  });
});
