import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isBerthError, messageOf, ValidationError } from '../../src/common/errors.js';
import { silentLogger } from '../../src/common/logger.js';
import { createAgent, type AgentRuntime } from '../../src/agent/agent.js';
import { AgentClient, type AgentEvent, type LogRecord, type TaskView } from '../../src/agent/client.js';
import { serveAgent, type ServingAgent } from '../../src/agent/http/serve.js';
import { hasEnded, UNENDED_STATES, type StoredTaskSpec } from '../../src/state/tasks.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { testHost } from '../support/agent.js';
import { rawRequest } from '../support/http.js';

const engine = testEngine();
const run = testRun(engine);
const spec = (command: string[], extra: Partial<StoredTaskSpec> = {}): StoredTaskSpec => ({
  image: TEST_IMAGE,
  command,
  labels: { ...run.labels },
  // busybox sleep as PID 1 ignores SIGTERM: keep stops short.
  stopGracePeriod: '1s',
  ...extra,
});
const taskId = (suffix: string): string => `${run.id}-${suffix}`;

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

async function rejectsWith(work: Promise<unknown>, code: string, status: number): Promise<unknown> {
  let caught: unknown;
  await assert.rejects(work, (error: unknown) => {
    caught = error;
    return isBerthError(error) && error.code === code && error.context.status === status;
  });
  return caught;
}

describe('the agent API through its real unix socket', { skip: await requireEngine() }, () => {
  let dataDir: string;
  let runtime: AgentRuntime;
  let serving: ServingAgent;
  let client: AgentClient;

  /** Polls the task through the API until it satisfies the predicate, for at most a minute. */
  async function waitForTask(id: string, predicate: (task: TaskView) => boolean): Promise<TaskView> {
    let last: TaskView | undefined;
    return pollUntil(`task ${id} to reach the expected state`, async () => {
      last = await client.get(id);
      return predicate(last) ? last : undefined;
    }, { timeoutMs: 60_000, intervalMs: 100 }).catch((error: unknown) => assert.fail(`${messageOf(error)}; it is still ${last?.state}`));
  }
  const ended = (task: TaskView): boolean => hasEnded(task.state);

  before(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-http-'));
    runtime = await createAgent(
      {
        flags: {
          dataDir,
          socketPath: path.join(dataDir, 'agent.sock'),
          listen: '127.0.0.1:0',
          // Holders are counted only with cleanup on; the test image is shared with other tests, so
          // its removal is put off past the end of the run (the removal timer does not hold the process).
          images: { cleanup: true, removeDelay: '1h' },
        },
        host: testHost(dataDir),
      },
      silentLogger,
    );
    serving = await serveAgent(runtime, { processMetrics: false });
    client = AgentClient.connect({ host: `unix://${serving.socketPath}`, token: runtime.token });
  });

  after(async () => {
    // Through the runtime, not the API: a failed test may leave a task running, and the server may be closed.
    for (const task of runtime.store.tasks.list({ label: run.labelFilter, state: UNENDED_STATES })) {
      await runtime.supervisor.stop(task.id).catch(() => undefined);
    }
    await runtime.supervisor.idle();
    client.close();
    await serving.close();
    await runtime.close();
    await run.cleanup();
    await rm(dataDir, { recursive: true, force: true });
  });

  test('the socket is private to the agent user (mode 0600)', async () => {
    assert.equal((await stat(serving.socketPath)).mode & 0o777, 0o600);
  });

  test('a submitted task answers 201 and runs to its real exit code', async () => {
    const submitted = await client.submit({ id: taskId('exit'), spec: spec(['sh', '-c', 'exit 3']) });
    assert.equal(submitted.id, taskId('exit'));
    assert.ok(['pending', 'starting'].includes(submitted.state), submitted.state);
    assert.ok(!Number.isNaN(Date.parse(submitted.submittedAt)));
    const done = await waitForTask(submitted.id, ended);
    assert.equal(done.state, 'exited');
    assert.equal(done.exitCode, 3);
    assert.deepEqual(done.endState, { kind: 'failed', exitCode: 3 });
    assert.ok(done.startedAt && done.finishedAt && done.containerId);
  });

  test('a task submitted without an id gets a UUID', async () => {
    const submitted = await client.submit({ spec: spec(['true']) });
    assert.match(submitted.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal((await waitForTask(submitted.id, ended)).exitCode, 0);
  });

  test('following logs yields stdout and stderr lines in order until the task ends', async () => {
    const id = taskId('logs');
    await client.submit({ id, spec: spec(['sh', '-c', 'echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three; sleep 0.2; echo four >&2']) });
    const records = await collect(client.logs(id, { follow: true }));
    assert.deepEqual(
      records.map((r) => [r.stream, r.text]),
      [['stdout', 'one\n'], ['stderr', 'two\n'], ['stdout', 'three\n'], ['stderr', 'four\n']],
    );
    // After the end: the same lines without following, and filtered by since and stream.
    assert.deepEqual(await collect(client.logs(id)), records);
    assert.deepEqual((await collect(client.logs(id, { since: records[0]!.timestamp }))).map((r) => r.text), ['two\n', 'three\n', 'four\n']);
    assert.deepEqual((await collect(client.logs(id, { stream: 'stderr' }))).map((r) => r.text), ['two\n', 'four\n']);
    // The output ends just before the end is recorded.
    assert.equal((await waitForTask(id, ended)).exitCode, 0);
  });

  test('a follower that goes away is let go while the task still runs', async () => {
    const id = taskId('follow-leave');
    await client.submit({ id, spec: spec(['sh', '-c', 'echo first; exec sleep 300']) });
    const seen: LogRecord[] = [];
    for await (const record of client.logs(id, { follow: true })) {
      seen.push(record);
      break;
    }
    assert.deepEqual(seen.map((r) => r.text), ['first\n']);
    // The agent still serves requests and the task still runs: the follow ended on its side.
    assert.equal((await client.get(id)).state, 'running');
    await client.stop(id);
    await waitForTask(id, ended);
  });

  test('stopping a running task ends it as cancelled; removing it answers 204 and then 404', async () => {
    const id = taskId('stop');
    await client.submit({ id, spec: spec(['sleep', '300']) });
    await waitForTask(id, (t) => t.state === 'running');
    await rejectsWith(client.remove(id), 'BERTH_TASK_STATE', 409);
    await client.stop(id);
    const done = await waitForTask(id, ended);
    assert.equal(done.endState?.kind, 'cancelled');
    await client.remove(id);
    await rejectsWith(client.get(id), 'BERTH_TASK_NOT_FOUND', 404);
    await rejectsWith(client.remove(id), 'BERTH_TASK_NOT_FOUND', 404);
    assert.ok(!(await client.list({ label: run.labelFilter })).some((t) => t.id === id));
  });

  test('a task id submitted again answers 200 with the task for the same spec, and 409 for another', async () => {
    const id = taskId('dup');
    const first = await client.submitTask({ id, spec: spec(['true']) });
    assert.equal(first.created, true);
    const again = await client.submitTask({ id, spec: spec(['true']) });
    assert.deepEqual({ created: again.created, id: again.task.id, submittedAt: again.task.submittedAt }, { created: false, id, submittedAt: first.task.submittedAt });
    await rejectsWith(client.submit({ id, spec: spec(['false']) }), 'BERTH_TASK_EXISTS', 409);
    await waitForTask(id, ended);
  });

  test('malformed bodies answer 400 naming the field', async () => {
    const fieldsOf = async (body: unknown): Promise<string[]> => {
      const error = await rejectsWith(client.submit(body as never), 'BERTH_VALIDATION', 400);
      assert.ok(error instanceof ValidationError);
      return error.issues.map((i) => i.field);
    };
    assert.deepEqual(await fieldsOf({}), ['spec']);
    assert.deepEqual(await fieldsOf({ spec: 'sleep 1' }), ['spec']);
    assert.deepEqual(await fieldsOf({ spec: [] }), ['spec']);
    assert.deepEqual(await fieldsOf({ spec: spec(['true'], { resources: { memory: 'lots' } }) }), ['spec.resources.memory']);
    assert.deepEqual(await fieldsOf({ spec: spec(['true']), extra: 1 }), ['extra']);
    // The host network is off unless the agent's policy allows it (policy.allowHostNetwork).
    assert.deepEqual(await fieldsOf({ spec: spec(['true'], { network: 'host' }) }), ['spec.network']);
    assert.deepEqual(await fieldsOf({ id: 'not a valid id', spec: spec(['true']) }), ['id']);
    const target = { socketPath: serving.socketPath };
    const badJson = await rawRequest(target, 'POST', '/v1/tasks', { headers: { authorization: `Bearer ${runtime.token}`, 'content-type': 'application/json' }, body: '{"spec": ' });
    assert.equal(badJson.status, 400);
    assert.equal((JSON.parse(badJson.body) as { error: { code: string } }).error.code, 'BERTH_VALIDATION');
    await rejectsWith(client.list({ state: 'sleeping' as never }), 'BERTH_VALIDATION', 400);
    assert.equal((await client.list({ label: run.labelFilter })).filter((t) => t.spec.resources?.memory === 'lots').length, 0);
  });

  test('every route but health needs the token', async () => {
    const target = { socketPath: serving.socketPath };
    for (const url of ['/v1/tasks', '/v1/images', '/v1/nodes', '/metrics', '/v1/openapi.json', '/v1/events']) {
      assert.equal((await rawRequest(target, 'GET', url)).status, 401, url);
      assert.equal((await rawRequest(target, 'GET', url, { headers: { authorization: 'Bearer wrong' } })).status, 401, url);
    }
    const noToken = await rawRequest(target, 'POST', '/v1/tasks', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ spec: spec(['true']) }) });
    assert.equal(noToken.status, 401);
    assert.equal(noToken.headers['www-authenticate'], 'Bearer');
    const wrong = AgentClient.connect({ host: `unix://${serving.socketPath}`, token: 'wrong' });
    try {
      await rejectsWith(wrong.list(), 'BERTH_UNAUTHORIZED', 401);
      assert.deepEqual(await wrong.health(), { agent: 'ok', engine: 'ok' });
    } finally {
      wrong.close();
    }
    const health = await rawRequest(target, 'GET', '/healthz');
    assert.equal(health.status, 200);
    assert.deepEqual(JSON.parse(health.body), { agent: 'ok', engine: 'ok' });
  });

  test('the same API answers on the configured TCP address', async () => {
    assert.ok(serving.tcp);
    const tcpClient = AgentClient.connect({ host: `http://${serving.tcp.host}:${serving.tcp.port}`, token: runtime.token });
    try {
      assert.deepEqual(await tcpClient.health(), { agent: 'ok', engine: 'ok' });
      assert.ok(Array.isArray(await tcpClient.list({ limit: 1 })));
      assert.equal((await rawRequest({ host: serving.tcp.host, port: serving.tcp.port }, 'GET', '/v1/tasks')).status, 401);
    } finally {
      tcpClient.close();
    }
  });

  test('the event stream delivers the state changes of a submitted task', async () => {
    const id = taskId('events');
    const subscription = await client.events();
    await client.submit({ id, spec: spec(['true']) });
    const states: string[] = [];
    for await (const event of subscription) {
      if (event.type !== 'task.state' || event.taskId !== id) continue;
      states.push(event.state);
      if (event.state === 'exited') {
        assert.equal(event.endState?.kind, 'success');
        break;
      }
    }
    subscription.close();
    assert.deepEqual(states, ['pending', 'starting', 'running', 'exited']);
  });

  test('images lists the test image with a running task as holder', async () => {
    const id = taskId('holder');
    await client.submit({ id, spec: spec(['sleep', '300']) });
    await waitForTask(id, (t) => t.state === 'running');
    const images = await client.images();
    const held = images.find((image) => image.holders.includes(id));
    assert.ok(held, JSON.stringify(images));
    assert.match(held.imageId, /^sha256:/);
    assert.ok(held.refs.some((ref) => ref.includes('berth-test/busybox')), held.refs.join(', '));
    await client.stop(id);
    await waitForTask(id, ended);
    await runtime.supervisor.idle();
    assert.ok(!(await client.images()).some((image) => image.holders.includes(id)));
  });

  test('metrics expose tasks by state and phase durations', async () => {
    const text = await client.metrics();
    assert.match(text, /^# TYPE berth_tasks gauge$/m);
    assert.match(text, /^berth_tasks\{state="exited"\} [1-9]\d*$/m);
    assert.match(text, /^berth_task_phase_seconds_count\{phase="submit_to_start"\} [1-9]\d*$/m);
    assert.match(text, /^berth_task_phase_seconds_count\{phase="start_to_end"\} [1-9]\d*$/m);
    for (const name of ['berth_image_pulls_total', 'berth_image_pull_shared_total', 'berth_reconciler_removals_total', 'berth_engine_errors_total']) {
      assert.match(text, new RegExp(`^# TYPE ${name} counter$`, 'm'));
    }
  });

  test('the OpenAPI document is JSON listing every path', async () => {
    const document = await client.openapi();
    assert.equal(document.openapi, '3.1.0');
    assert.deepEqual(Object.keys(document.paths as object).sort(), [
      '/healthz',
      '/metrics',
      '/v1/events',
      '/v1/groups',
      '/v1/groups/{id}',
      '/v1/groups/{id}/stop',
      '/v1/groups/{id}/tasks/{name}/logs',
      '/v1/images',
      '/v1/nodes',
      '/v1/openapi.json',
      '/v1/prune',
      '/v1/tasks',
      '/v1/tasks/{id}',
      '/v1/tasks/{id}/archive',
      '/v1/tasks/{id}/artifacts',
      '/v1/tasks/{id}/attach',
      '/v1/tasks/{id}/exec',
      '/v1/tasks/{id}/kill',
      '/v1/tasks/{id}/logs',
      '/v1/tasks/{id}/pause',
      '/v1/tasks/{id}/stats',
      '/v1/tasks/{id}/stop',
      '/v1/tasks/{id}/unpause',
      '/v1/tasks/{id}/wait',
      '/v1/uploads',
    ]);
    const raw = await rawRequest({ socketPath: serving.socketPath }, 'GET', '/v1/openapi.json', { headers: { authorization: `Bearer ${runtime.token}` } });
    assert.doesNotThrow(() => JSON.parse(raw.body));
  });

  test('an agent without a cluster lists itself alone as a ready node (mode single)', async () => {
    const listing = await client.listNodes();
    assert.equal(listing.mode, 'single');
    assert.equal(listing.nodes.length, 1);
    const [self] = listing.nodes;
    assert.deepEqual([self!.id, self!.state, self!.epoch, self!.self], [runtime.agentId, 'ready', 0, true]);
    const budget = runtime.admission.snapshot().budget;
    assert.deepEqual([self!.capacity.memoryBytes, self!.capacity.cpuMilli], [budget.memoryBytes, budget.cpuMilli]);
  });

  test('tasks are listed and filtered by state and label', async () => {
    const mine = await client.list({ label: run.labelFilter });
    assert.ok(mine.length >= 3);
    assert.ok(mine.every((t) => t.spec.labels?.[Object.keys(run.labels)[0]!] === run.id));
    const exited = await client.list({ label: run.labelFilter, state: ['exited', 'lost'] });
    assert.ok(exited.length > 0 && exited.every((t) => t.state === 'exited' || t.state === 'lost'));
    assert.equal((await client.list({ label: run.labelFilter, limit: 1 })).length, 1);
    assert.deepEqual(await client.list({ label: `${run.labelFilter}-nobody` }), []);
  });

  test('an event stream open at close does not hold the server open', async () => {
    // The last test: closes the server with a subscriber still reading.
    const subscription = await client.events();
    const events: AgentEvent[] = [];
    const reading = (async () => {
      for await (const event of subscription) events.push(event);
    })();
    await serving.close();
    await reading;
    await assert.rejects(client.health(), (error: unknown) => isBerthError(error, 'BERTH_AGENT_UNAVAILABLE'));
  });
});
