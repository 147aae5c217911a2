import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { InjectOptions } from 'fastify';
import { BerthError, ERROR_CODES, ValidationError, type ErrorCode } from '../../../../src/common/errors.js';
import { Events } from '../../../../src/common/events.js';
import type { Logger } from '../../../../src/common/logger.js';
import type { EngineHealth } from '../../../../src/agent/agent.js';
import type { SubmitResult } from '../../../../src/agent/supervisor.js';
import { AgentEvents } from '../../../../src/agent/events.js';
import { buildServer, type ServerRuntime } from '../../../../src/agent/http/server.js';
import { httpStatusFor, toErrorResponse } from '../../../../src/agent/http/errors.js';
import { agentEventStream, formatServerSentEvent } from '../../../../src/agent/http/streams.js';
import { toTaskView, toUtcLogTimestamp } from '../../../../src/agent/http/views.js';
import { buildOpenApiDocument } from '../../../../src/agent/http/openapi.js';
import { resolveTaskSpec } from '../../../../src/spec/schema.js';
import { API_ROUTES } from '../../../../src/agent/http/schemas.js';
import { parseAgentHost, resolveAgentAddress } from '../../../../src/agent/client.js';
import { ambiguousPrefixError, type TaskFilter, type TaskRecord, type TaskState } from '../../../../src/state/tasks.js';
import type { LogRecord } from '../../../../src/agent/task-logs.js';
import type { PruneOptions, PruneReport } from '../../../../src/prune/index.js';
import type { ImageCoordinatorEvents } from '../../../../src/images/index.js';
import type { StatsSample } from '../../../../src/engine/types.js';
import { pollUntil } from '../../../support/engine.js';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

const TOKEN = 'secret-token';

function record(id: string, overrides: Partial<TaskRecord> = {}): TaskRecord {
  return { id, seq: 1, spec: { image: 'busybox' }, state: 'running', logCursor: {}, pausedForMs: 0, submittedAtMs: Date.UTC(2024, 4, 1, 10), updatedAtMs: Date.UTC(2024, 4, 1, 10), ...overrides };
}

interface FakeOptions {
  tasks?: TaskRecord[];
  /** A record alone is a task this submit created (201). */
  submit?: (input: { id: string; spec: unknown }) => TaskRecord | SubmitResult;
  stop?: (taskId: string, options?: { graceMs?: number }) => Promise<TaskRecord>;
  engineHealth?: EngineHealth;
  /** The data directory's condition, as the health check measures it. Default ok. */
  disk?: 'ok' | 'full';
  started?: boolean;
  tasksWaitingForEngine?: number;
  /** Every task's output, as the log store reads it back. */
  output?: LogRecord[];
  prune?: (options: PruneOptions) => Promise<PruneReport>;
  /** The engine's stats of a container. */
  streamStats?: (containerId: string, options?: { signal?: AbortSignal }) => AsyncGenerator<StatsSample>;
}

/** A narrow scripted runtime: only what the routes under test touch. */
function fakeRuntime(options: FakeOptions = {}) {
  const logged: Array<{ level: string; meta: Record<string, unknown>; message: string }> = [];
  const log = (level: string) => (meta: Record<string, unknown>, message: string) => void logged.push({ level, meta, message });
  const logger: Logger = { debug: () => undefined, info: log('info'), warn: log('warn'), error: log('error') };
  const tasks = new Map((options.tasks ?? []).map((t) => [t.id, t]));
  const listCalls: TaskFilter[] = [];
  const killed: Array<{ id: string; signal: string }> = [];
  const errorListeners = new Set<(code: ErrorCode) => void>();
  const runtime = {
    token: TOKEN,
    logger,
    events: new AgentEvents(),
    images: new Events<ImageCoordinatorEvents>(),
    store: {
      tasks: {
        get: (id: string) => tasks.get(id),
        list: (filter: TaskFilter) => {
          listCalls.push(filter);
          return [...tasks.values()];
        },
        counts: () => ({ pending: 0, starting: 0, running: tasks.size, stopping: 0, exited: 0, lost: 0, removed: 0 }),
        resolve: (idOrPrefix: string, opts: { exceptStates?: readonly TaskState[] } = {}) => {
          const seen = [...tasks.values()].filter((t) => !(opts.exceptStates ?? []).includes(t.state));
          const exact = seen.find((t) => t.id === idOrPrefix);
          if (exact) return exact;
          const matches = seen.filter((t) => t.id.startsWith(idOrPrefix));
          if (matches.length === 1) return matches[0]!;
          if (matches.length === 0) throw new BerthError('BERTH_TASK_NOT_FOUND', `no task ${idOrPrefix}`);
          throw ambiguousPrefixError(idOrPrefix, matches.map((t) => t.id), matches.length);
        },
      },
    },
    supervisor: {
      submit: (input: { id: string; spec: unknown }): SubmitResult => {
        const result = (options.submit ?? ((i: { id: string }) => record(i.id, { state: 'pending' })))(input);
        return 'created' in result ? result : { task: result, created: true };
      },
      tasksWaitingForEngine: options.tasksWaitingForEngine ?? 0,
      stop: options.stop ?? (async (id: string) => tasks.get(id)!),
      remove: async () => undefined,
      isEnded: () => true,
      pause: async (id: string) => ({ ...tasks.get(id)!, pausedAtMs: Date.UTC(2024, 4, 1, 11) }),
      unpause: async (id: string) => tasks.get(id)!,
      kill: async (id: string, signal: string) => {
        killed.push({ id, signal });
        return tasks.get(id)!;
      },
      wait: async (id: string) => tasks.get(id)!,
    },
    imageSnapshot: () => ({ images: [{ imageId: 'sha256:abc', refs: ['busybox:latest'], holders: ['t1'], pulledByBerth: true, removalDueAt: new Date(Date.UTC(2024, 4, 1)) }] }),
    engineHealth: async (): Promise<EngineHealth> => options.engineHealth ?? { ok: true },
    engine: {
      streamStats: options.streamStats ?? (async function* (): AsyncGenerator<StatsSample> {}),
      // Exec is proven against the real engine (test/integration/agent-exec.test.ts); these routes never reach it here.
      exec: async () => {
        throw new Error('exec is not scripted in this test');
      },
      inspectExec: async () => {
        throw new Error('exec is not scripted in this test');
      },
      attachContainer: async () => {
        throw new BerthError('BERTH_ENGINE_UNAVAILABLE', 'no engine in this test');
      },
      // Archives are proven against the real engine (test/integration/files-out.test.ts).
      getArchive: async () => {
        throw new BerthError('BERTH_ENGINE_UNAVAILABLE', 'no engine in this test');
      },
    },
    artifacts: {
      open: async () => {
        throw new BerthError('BERTH_ENGINE_UNAVAILABLE', 'no artifacts in this test');
      },
    },
    logs: {
      space: { condition: options.disk ?? 'ok', check: async () => options.disk ?? 'ok' },
      async *read(): AsyncGenerator<LogRecord> {
        yield* options.output ?? [];
      },
      async *follow(): AsyncGenerator<LogRecord> {
        yield* options.output ?? [];
      },
    },
    garbage: { prune: options.prune ?? (async () => { throw new BerthError('BERTH_PRUNE_RUNNING', 'a prune is running'); }) },
    started: options.started ?? true,
    onError(listener: (code: ErrorCode) => void) {
      errorListeners.add(listener);
      return () => void errorListeners.delete(listener);
    },
  } satisfies ServerRuntime;
  const app = buildServer(runtime, { processMetrics: false });
  return { app, logged, listCalls, runtime, errorListeners, killed };
}

const auth = { authorization: `Bearer ${TOKEN}` };

describe('error mapping', () => {
  test('every error code answers the status README\'s API error table gives it', async () => {
    const readme = await readFile(new URL('../../../../README.md', import.meta.url), 'utf8');
    const agent = readme.slice(readme.indexOf('## The agent'));
    const table = agent.slice(agent.indexOf('| status | code |'));
    const rows = table.slice(0, table.indexOf('\n\n')).split('\n').slice(2);
    const documented = new Map<string, number[]>();
    for (const row of rows) {
      const [, status, codes] = row.split('|').map((cell) => cell.trim());
      for (const [, code] of (codes ?? '').matchAll(/`(BERTH_[A-Z_]+)`/g)) documented.set(code!, [...(documented.get(code!) ?? []), Number(status)]);
    }
    for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
      assert.ok(documented.get(code)?.includes(httpStatusFor(code)), `${code} answers ${httpStatusFor(code)}; README's table gives ${documented.get(code)?.join(', ') ?? 'nothing'}`);
      // BERTH_VALIDATION is also the code of the request checks (404 no route, 413 too large …).
      if (code !== 'BERTH_VALIDATION') assert.deepEqual(documented.get(code), [httpStatusFor(code)], code);
      const response = toErrorResponse(new BerthError(code, 'x'));
      assert.equal(response.status, httpStatusFor(code), code);
      assert.equal(response.body.error.code, code);
    }
  });

  test('a code that may pass on a retry never answers 4xx, so a client does not give up on it', () => {
    for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
      if (new BerthError(code, 'x').retryable) assert.ok(httpStatusFor(code) >= 500, `${code} is retryable and answers ${httpStatusFor(code)}`);
    }
    assert.equal(httpStatusFor('BERTH_INTERNAL'), 500);
    assert.equal(httpStatusFor('BERTH_IMAGE_NOT_FOUND'), 404);
    assert.equal(httpStatusFor('BERTH_IMAGE_PULL_FAILED'), 502);
  });

  test('a ValidationError keeps its issues; anything not a BerthError is BERTH_INTERNAL', () => {
    const validation = toErrorResponse(new ValidationError([{ field: 'spec.image', rule: 'is required' }]));
    assert.deepEqual(validation, { status: 400, body: { error: { code: 'BERTH_VALIDATION', message: 'spec.image: is required', issues: [{ field: 'spec.image', rule: 'is required' }] } } });
    assert.deepEqual(toErrorResponse(new TypeError('boom')), { status: 500, body: { error: { code: 'BERTH_INTERNAL', message: 'boom' } } });
  });

  test('an engine error answers 503, is logged once and counted by code', async () => {
    const { app, logged } = fakeRuntime({ tasks: [record('t1')], stop: async () => { throw new BerthError('BERTH_ENGINE_UNAVAILABLE', 'engine gone'); } });
    const response = await app.inject({ method: 'POST', url: '/v1/tasks/t1/stop', headers: auth });
    assert.equal(response.statusCode, 503);
    assert.deepEqual(response.json(), { error: { code: 'BERTH_ENGINE_UNAVAILABLE', message: 'engine gone' } });
    assert.equal(logged.filter((l) => l.level === 'error').length, 1);
    const metrics = await app.inject({ method: 'GET', url: '/metrics', headers: auth });
    assert.match(metrics.body, /^berth_engine_errors_total\{code="BERTH_ENGINE_UNAVAILABLE"\} 1$/m);
    await app.close();
  });

  test('a bug answers 500 with BERTH_INTERNAL and is logged; a client error is not logged', async () => {
    const { app, logged } = fakeRuntime({ tasks: [record('t1')], stop: async () => { throw new Error('invariant'); } });
    const response = await app.inject({ method: 'POST', url: '/v1/tasks/t1/stop', headers: auth });
    assert.equal(response.statusCode, 500);
    assert.equal(response.json().error.code, 'BERTH_INTERNAL');
    assert.equal(logged.length, 1);
    const missing = await app.inject({ method: 'GET', url: '/v1/tasks/nope', headers: auth });
    assert.equal(missing.statusCode, 404);
    assert.equal(missing.json().error.code, 'BERTH_TASK_NOT_FOUND');
    assert.equal(logged.length, 1);
    await app.close();
  });

  test('a duplicate id answers 409 whichever code the supervisor uses', async () => {
    for (const code of ['BERTH_TASK_EXISTS', 'BERTH_ENGINE_CONFLICT'] as const) {
      const { app } = fakeRuntime({ submit: () => { throw new BerthError(code, 'taken', { context: { conflict: 'task-id' } }); } });
      const response = await app.inject({ method: 'POST', url: '/v1/tasks', headers: auth, payload: { id: 'x', spec: {} } });
      assert.equal(response.statusCode, 409, code);
      await app.close();
    }
  });
});

describe('request validation', () => {
  test('a spec the supervisor refuses names the field under spec', async () => {
    const { app } = fakeRuntime({ submit: () => { throw new ValidationError([{ field: 'resources.memory', rule: 'must be a size' }, { field: 'spec', rule: 'must be an object' }]); } });
    const response = await app.inject({ method: 'POST', url: '/v1/tasks', headers: auth, payload: { spec: { image: 'x' } } });
    assert.equal(response.statusCode, 400);
    assert.deepEqual(response.json().error.issues, [{ field: 'spec.resources.memory', rule: 'must be a size' }, { field: 'spec', rule: 'must be an object' }]);
    await app.close();
  });

  test('schema failures name the field: missing, wrong type, unknown, bad query value', async () => {
    const { app } = fakeRuntime();
    const issues = async (request: InjectOptions) => {
      const response = await app.inject(request);
      assert.equal(response.statusCode, 400, response.body);
      return response.json().error.issues as Array<{ field: string; rule: string }>;
    };
    assert.deepEqual(await issues({ method: 'POST', url: '/v1/tasks', headers: auth, payload: {} }), [{ field: 'spec', rule: 'is required' }]);
    assert.deepEqual(await issues({ method: 'POST', url: '/v1/tasks', headers: auth, payload: { spec: 5 } }), [{ field: 'spec', rule: 'must be object' }]);
    assert.deepEqual(await issues({ method: 'POST', url: '/v1/tasks', headers: auth, payload: { spec: {}, cmd: 'x' } }), [{ field: 'cmd', rule: 'is not a known field' }]);
    assert.equal((await issues({ method: 'GET', url: '/v1/tasks?state=running,nope', headers: auth }))[0]!.field, 'state');
    assert.equal((await issues({ method: 'GET', url: '/v1/tasks?limit=-1', headers: auth }))[0]!.field, 'limit');
    assert.equal((await issues({ method: 'GET', url: '/v1/tasks/t1/logs?since=yesterday', headers: auth }))[0]!.field, 'since');
    assert.equal((await issues({ method: 'GET', url: '/v1/tasks/t1/logs?stream=both', headers: auth }))[0]!.rule, 'must be one of stdout, stderr');
    const badJson = await app.inject({ method: 'POST', url: '/v1/tasks', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"spec":' });
    assert.equal(badJson.statusCode, 400);
    assert.equal(badJson.json().error.code, 'BERTH_VALIDATION');
    await app.close();
  });

  test('a spec with a health check round-trips through submit, the task view and the spec schema unchanged', async () => {
    const specs = [
      { image: 'busybox', command: ['sleep', '60'], healthcheck: { command: ['cat', '/tmp/ready'], interval: '500ms', timeout: '2s', startPeriod: '10s', retries: 2 } },
      { image: 'busybox', healthcheck: { shell: 'test -e /tmp/ready || exit 1', interval: 250 } },
      { image: 'busybox', healthcheck: { disabled: true } },
    ];
    for (const [index, spec] of specs.entries()) {
      const id = `hc${index}`;
      let received: unknown;
      const { app } = fakeRuntime({
        submit: (input) => {
          received = input.spec;
          // As the supervisor does: the spec it is handed must still resolve.
          resolveTaskSpec(input.spec);
          return record(input.id, { state: 'pending', spec: input.spec as TaskRecord['spec'] });
        },
        tasks: [record(id, { spec: spec as TaskRecord['spec'] })],
      });
      const submitted = await app.inject({ method: 'POST', url: '/v1/tasks', headers: auth, payload: { id, spec } });
      assert.equal(submitted.statusCode, 201, submitted.body);
      assert.deepEqual(received, spec);
      assert.deepEqual(submitted.json().task.spec, spec);
      const read = await app.inject({ method: 'GET', url: `/v1/tasks/${id}`, headers: auth });
      assert.deepEqual(read.json().task.spec, spec);
      assert.deepEqual(resolveTaskSpec(read.json().task.spec).healthcheck, resolveTaskSpec(spec).healthcheck);
      await app.close();
    }
    const document = buildOpenApiDocument() as { components: { schemas: { TaskSpec: { properties: Record<string, { properties?: Record<string, unknown>; additionalProperties?: unknown }> } } } };
    const healthcheck = document.components.schemas.TaskSpec.properties.healthcheck!;
    assert.deepEqual(Object.keys(healthcheck.properties ?? {}).sort(), ['command', 'disabled', 'interval', 'retries', 'shell', 'startPeriod', 'timeout']);
    assert.equal(healthcheck.additionalProperties, false);
  });

  test('states may repeat or be comma-separated; removed tasks are listed only when asked for', async () => {
    const { app, listCalls } = fakeRuntime();
    await app.inject({ method: 'GET', url: '/v1/tasks?state=running,pending&state=exited&label=a=b&limit=3', headers: auth });
    await app.inject({ method: 'GET', url: '/v1/tasks', headers: auth });
    assert.deepEqual(listCalls[0], { state: ['running', 'pending', 'exited'], label: ['a=b'], limit: 3 });
    assert.ok(!(listCalls[1]!.state as string[]).includes('removed'));
    await app.close();
  });
});

describe('task id prefixes and list order', () => {
  test('every task route resolves a unique id prefix to the task, and acts on its whole id', async () => {
    const stopped: Array<{ id: string; graceMs?: number }> = [];
    const { app } = fakeRuntime({
      tasks: [record('8cd09326-aaaa'), record('91ab0000-bbbb', { state: 'exited', endState: { kind: 'success', exitCode: 0 } })],
      stop: async (id: string, options?: { graceMs?: number }) => {
        stopped.push({ id, ...(options?.graceMs === undefined ? {} : { graceMs: options.graceMs }) });
        return record(id);
      },
    });
    const get = await app.inject({ method: 'GET', url: '/v1/tasks/8cd', headers: auth });
    assert.equal(get.statusCode, 200, get.body);
    assert.equal(get.json().task.id, '8cd09326-aaaa');
    const stop = await app.inject({ method: 'POST', url: '/v1/tasks/8c/stop', headers: auth });
    assert.equal(stop.statusCode, 200, stop.body);
    assert.deepEqual(stopped, [{ id: '8cd09326-aaaa' }]);
    const logs = await app.inject({ method: 'GET', url: '/v1/tasks/91/logs', headers: auth });
    assert.equal(logs.statusCode, 200, logs.body);
    const remove = await app.inject({ method: 'DELETE', url: '/v1/tasks/91a', headers: auth });
    assert.equal(remove.statusCode, 204, remove.body);
    await app.close();
  });

  test('an ambiguous prefix is refused on every task route with 409 BERTH_TASK_AMBIGUOUS naming the candidates', async () => {
    const { app } = fakeRuntime({ tasks: [record('ab-1'), record('ab-2'), record('abc')] });
    for (const route of API_ROUTES.filter((r) => r.url.startsWith('/v1/tasks/:id'))) {
      const response = await app.inject({ method: route.method, url: route.url.replace(':id', 'ab'), headers: auth, ...(route.body ? { payload: {} } : {}) });
      assert.equal(response.statusCode, 409, `${route.operationId}: ${response.body}`);
      assert.equal(response.json().error.code, 'BERTH_TASK_AMBIGUOUS');
      assert.match(response.json().error.message, /task id prefix ab is ambiguous: 3 tasks start with it \(ab-1, ab-2, abc\)/);
    }
    // The exact id wins over the ids it is a prefix of.
    assert.equal((await app.inject({ method: 'GET', url: '/v1/tasks/abc', headers: auth })).json().task.id, 'abc');
    await app.close();
  });

  test('stop takes this stop\'s grace period in milliseconds, within the spec\'s stopGracePeriod bounds', async () => {
    const stopped: Array<number | undefined> = [];
    const { app } = fakeRuntime({ tasks: [record('t1')], stop: async (id: string, options?: { graceMs?: number }) => (stopped.push(options?.graceMs), record(id)) });
    assert.equal((await app.inject({ method: 'POST', url: '/v1/tasks/t1/stop?graceMs=2000', headers: auth })).statusCode, 200);
    assert.deepEqual(stopped, [2000]);
    for (const bad of ['-1', '86400001', '1.5', 'ten']) {
      const response = await app.inject({ method: 'POST', url: `/v1/tasks/t1/stop?graceMs=${bad}`, headers: auth });
      assert.equal(response.statusCode, 400, `graceMs=${bad}: ${response.body}`);
      assert.equal(response.json().error.issues[0].field, 'graceMs');
    }
    assert.deepEqual(stopped, [2000]);
    await app.close();
  });

  test('the OpenAPI document says every task route takes a unique id prefix, with its 409, and documents order, end and graceMs', () => {
    type Operation = { parameters?: Array<{ name: string; in: string; description?: string }>; responses: Record<string, { description: string }> };
    const document = buildOpenApiDocument() as { paths: Record<string, Record<string, Operation>> };
    const taskRoutes = Object.entries(document.paths).filter(([url]) => url.startsWith('/v1/tasks/{id}'));
    assert.equal(taskRoutes.length, 12);
    for (const [url, operations] of taskRoutes) {
      for (const [method, operation] of Object.entries(operations)) {
        const id = operation.parameters?.find((p) => p.name === 'id' && p.in === 'path');
        assert.match(id?.description ?? '', /any unique prefix/, `${method} ${url}`);
        assert.match(operation.responses['409']?.description ?? '', /BERTH_TASK_AMBIGUOUS/, `${method} ${url}`);
      }
    }
    const list = document.paths['/v1/tasks']!.get!.parameters!.map((p) => p.name);
    assert.deepEqual(list, ['state', 'label', 'end', 'order', 'limit']);
    assert.deepEqual(document.paths['/v1/tasks/{id}/stop']!.post!.parameters!.map((p) => p.name), ['id', 'graceMs']);
  });

  test('the list passes order, limit and end kinds to the store; an unknown end kind or order is refused', async () => {
    const { app, listCalls } = fakeRuntime();
    const ok = await app.inject({ method: 'GET', url: '/v1/tasks?order=newest-first&limit=2&end=oom,timed-out&end=failed', headers: auth });
    assert.equal(ok.statusCode, 200, ok.body);
    assert.deepEqual(listCalls[0], { state: listCalls[0]!.state, endKind: ['oom', 'timed-out', 'failed'], limit: 2, order: 'newest-first' });
    assert.equal((await app.inject({ method: 'GET', url: '/v1/tasks?end=crashed', headers: auth })).json().error.issues[0].field, 'end');
    assert.equal((await app.inject({ method: 'GET', url: '/v1/tasks?order=random', headers: auth })).json().error.issues[0].field, 'order');
    await app.close();
  });
});

describe('authorization', () => {
  test('every route but health needs the bearer token', async () => {
    const { app } = fakeRuntime();
    for (const route of API_ROUTES) {
      const url = route.url.replace(':id', 't1');
      const none = await app.inject({ method: route.method, url });
      const wrong = await app.inject({ method: route.method, url, headers: { authorization: 'Bearer nope' } });
      const expected = route.isPublic ? 200 : 401;
      assert.equal(none.statusCode, expected, `${route.method} ${url}`);
      assert.equal(wrong.statusCode, expected, `${route.method} ${url}`);
      if (!route.isPublic) assert.equal(wrong.json().error.code, 'BERTH_UNAUTHORIZED', `${route.method} ${url}`);
    }
    await app.close();
  });

  test('unknown routes answer 404 naming the url', async () => {
    const { app } = fakeRuntime();
    const response = await app.inject({ method: 'GET', url: '/v2/nothing', headers: auth });
    assert.equal(response.statusCode, 404);
    assert.equal(response.json().error.issues[0].field, 'url');
    await app.close();
  });
});

describe('responses', () => {
  test('health reports a full data directory and still answers 200: the agent keeps serving', async () => {
    const { app } = fakeRuntime({ disk: 'full' });
    const response = await app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(response.statusCode, 200);
    assert.deepEqual(response.json(), { agent: 'ok', engine: 'ok', disk: 'full' });
    await app.close();
  });

  test('health answers 503 when the engine does not, with the engine\'s condition and the tasks waiting for it', async () => {
    const engineError = { code: 'BERTH_ENGINE_TIMEOUT', message: 'ping did not answer within 2000 ms' } as const;
    const { app } = fakeRuntime({ engineHealth: { ok: false, ...engineError }, tasksWaitingForEngine: 2 });
    const response = await app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(response.statusCode, 503);
    assert.deepEqual(response.json(), { agent: 'ok', engine: 'unavailable', engineError, tasksWaitingForEngine: 2 });
    await app.close();
  });

  test('submit answers 201 for a task it created and 200 for the same task submitted again', async () => {
    const existing = record('same', { state: 'running' });
    const { app } = fakeRuntime({ submit: (input) => (input.id === 'same' ? { task: existing, created: false } : record(input.id, { state: 'pending' })) });
    const created = await app.inject({ method: 'POST', url: '/v1/tasks', headers: auth, payload: { id: 'new', spec: { image: 'busybox' } } });
    assert.equal(created.statusCode, 201, created.body);
    assert.equal(created.json().task.state, 'pending');
    const again = await app.inject({ method: 'POST', url: '/v1/tasks', headers: auth, payload: { id: 'same', spec: { image: 'busybox' } } });
    assert.equal(again.statusCode, 200, again.body);
    assert.deepEqual(again.json().task, toTaskView(existing));
    await app.close();
  });

  test('health answers 503 while the agent is still starting (recovering its tasks)', async () => {
    const { app } = fakeRuntime({ started: false });
    const response = await app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(response.statusCode, 503);
    assert.deepEqual(response.json(), { agent: 'starting', engine: 'ok' });
    await app.close();
  });

  test('tasks show ISO times; images their holders and removal time', async () => {
    const finished = record('t1', { state: 'exited', endState: { kind: 'failed', exitCode: 2 }, exitCode: 2, startedAtMs: Date.UTC(2024, 4, 1, 10, 0, 1), finishedAtMs: Date.UTC(2024, 4, 1, 10, 0, 3), containerId: 'c1' });
    const { app } = fakeRuntime({ tasks: [finished] });
    const task = (await app.inject({ method: 'GET', url: '/v1/tasks/t1', headers: auth })).json().task;
    assert.deepEqual(task, toTaskView(finished));
    assert.equal(task.startedAt, '2024-05-01T10:00:01.000Z');
    assert.deepEqual((await app.inject({ method: 'GET', url: '/v1/images', headers: auth })).json(), {
      images: [{ imageId: 'sha256:abc', refs: ['busybox:latest'], holders: ['t1'], removalDueAt: '2024-05-01T00:00:00.000Z' }],
    });
    await app.close();
  });

  test('metrics count pulls, shared pulls, reconciler removals (dangling and orphaned apart), phases and the supervisor\'s engine errors', async () => {
    const { app, runtime, errorListeners } = fakeRuntime({ tasks: [record('t1', { startedAtMs: Date.UTC(2024, 4, 1, 10, 0, 2) })] });
    runtime.images.emit('pull-finished', { ref: 'busybox', outcome: 'pulled', durationMs: 1, attempts: 1, waiters: 2 });
    runtime.images.emit('pull-shared', { ref: 'busybox', holderId: 't2', waiters: 2 });
    runtime.images.emit('pull-finished', { ref: 'nope', outcome: 'failed', durationMs: 1, attempts: 3, waiters: 1, error: { code: 'BERTH_IMAGE_NOT_FOUND', message: 'no' } });
    // The supervisor reports the failed start of the task that waited on the pull: counted once.
    for (const listener of errorListeners) listener('BERTH_IMAGE_NOT_FOUND');
    for (const listener of errorListeners) listener('BERTH_VALIDATION');
    runtime.events.emit({ type: 'container.reconciled', containerId: 'c', dryRun: false });
    runtime.events.emit({ type: 'container.reconciled', containerId: 'c', dryRun: true });
    runtime.events.emit({ type: 'container.reconciled', containerId: 'o', reason: 'orphaned', ownerId: 'cli', ownerPid: 4242, dryRun: false });
    runtime.events.emit({ type: 'task.state', taskId: 't1', state: 'running' });
    const text = (await app.inject({ method: 'GET', url: '/metrics', headers: auth })).body;
    assert.match(text, /^berth_tasks\{state="running"\} 1$/m);
    assert.match(text, /^berth_image_pulls_total\{outcome="pulled"\} 1$/m);
    assert.match(text, /^berth_image_pull_shared_total 1$/m);
    assert.match(text, /^berth_reconciler_removals_total 1$/m);
    assert.match(text, /^berth_reconciler_orphan_removals_total 1$/m);
    assert.match(text, /^berth_engine_errors_total\{code="BERTH_IMAGE_NOT_FOUND"\} 1$/m);
    assert.doesNotMatch(text, /BERTH_VALIDATION/);
    assert.match(text, /^berth_task_phase_seconds_sum\{phase="submit_to_start"\} 2$/m);
    await app.close();
  });

  test('logs answer one JSON line per record, only the stream asked for', async () => {
    const output: LogRecord[] = [
      { stream: 'stdout', timestamp: '2024-05-01T10:00:00.000000001Z', text: 'one\n' },
      { stream: 'stderr', timestamp: '2024-05-01T10:00:00.000000002Z', text: 'two\n' },
      { stream: 'stdout', timestamp: '2024-05-01T10:00:00.000000003Z', text: 'three\n' },
    ];
    const { app } = fakeRuntime({ tasks: [record('t1', { state: 'exited' })], output });
    for (const [query, expected] of [['', output], ['?stream=stderr', [output[1]]], ['?follow=true&stream=stdout', [output[0], output[2]]]] as const) {
      const response = await app.inject({ method: 'GET', url: `/v1/tasks/t1/logs${query}`, headers: auth });
      assert.equal(response.statusCode, 200, response.body);
      assert.match(String(response.headers['content-type']), /^application\/x-ndjson/);
      assert.deepEqual(response.body.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line)), expected, query);
    }
    await app.close();
  });

  test('logs take tail (the last N of what the stream and until select) and until (inclusive); bad values are refused naming the parameter', async () => {
    const output: LogRecord[] = [
      { stream: 'stdout', timestamp: '2024-05-01T10:00:00.000000001Z', text: 'one\n' },
      { stream: 'stderr', timestamp: '2024-05-01T10:00:00.000000002Z', text: 'two\n' },
      { stream: 'stdout', timestamp: '2024-05-01T10:00:00.000000003Z', text: 'three\n' },
    ];
    const { app } = fakeRuntime({ tasks: [record('t1', { state: 'exited' })], output });
    const cases: ReadonlyArray<readonly [string, readonly LogRecord[]]> = [
      ['?tail=2', [output[1]!, output[2]!]],
      ['?tail=0', []],
      ['?tail=1&stream=stdout', [output[2]!]],
      ['?until=2024-05-01T10:00:00.000000002Z', [output[0]!, output[1]!]],
      ['?until=2024-05-01T10:00:00.000000002Z&tail=1', [output[1]!]],
      ['?until=2024-05-01T12:00:00.000000002%2B02:00&tail=1', [output[1]!]],
    ];
    for (const [query, expected] of cases) {
      const response = await app.inject({ method: 'GET', url: `/v1/tasks/t1/logs${query}`, headers: auth });
      assert.equal(response.statusCode, 200, response.body);
      assert.deepEqual(response.body.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line)), expected, query);
    }
    for (const [query, field] of [['?tail=-1', 'tail'], ['?tail=1000001', 'tail'], ['?tail=all', 'tail'], ['?until=10m', 'until']] as const) {
      const response = await app.inject({ method: 'GET', url: `/v1/tasks/t1/logs${query}`, headers: auth });
      assert.equal(response.statusCode, 400, query);
      assert.equal(response.json().error.issues[0].field, field, query);
    }
    await app.close();
  });

  test('a prune while another runs answers 409; a finished one its report with the bytes summed', async () => {
    const busy = fakeRuntime();
    const refused = await busy.app.inject({ method: 'POST', url: '/v1/prune', headers: auth, payload: {} });
    assert.equal(refused.statusCode, 409);
    assert.equal(refused.json().error.code, 'BERTH_PRUNE_RUNNING');
    await busy.app.close();
    let asked: PruneOptions | undefined;
    const kind = (ids: string[], reclaimedBytes: number) => ({ ids, reclaimedBytes });
    const { app } = fakeRuntime({
      prune: async (options) => {
        asked = options;
        return { containers: kind(['c1'], 10), networks: { ...kind(['n1'], 0), names: ['berth-g.a.net'] }, volumes: { ...kind(['v1'], 5), names: ['v1'] }, images: { ...kind([], 0), untagged: [] }, kept: [], failed: [], dryRun: true, cancelled: false, filters: ['until=1h'], startedAt: new Date(0), durationMs: 1 };
      },
    });
    const response = await app.inject({ method: 'POST', url: '/v1/prune', headers: auth, payload: { filters: ['until=1h'], dryRun: true } });
    assert.equal(response.statusCode, 200, response.body);
    assert.deepEqual({ filters: asked?.filters, dryRun: asked?.dryRun }, { filters: ['until=1h'], dryRun: true });
    assert.equal(response.json().reclaimedBytes, 15);
    assert.deepEqual(response.json().containers, { ids: ['c1'], reclaimedBytes: 10 });
    assert.deepEqual(response.json().networks, { ids: ['n1'], names: ['berth-g.a.net'], reclaimedBytes: 0 }, 'networks and volumes are named');
    await app.close();
  });

  test('two servers keep separate metrics', async () => {
    const first = fakeRuntime();
    const second = fakeRuntime();
    first.runtime.events.emit({ type: 'container.reconciled', containerId: 'c', dryRun: false });
    assert.match((await second.app.inject({ method: 'GET', url: '/metrics', headers: auth })).body, /^berth_reconciler_removals_total 0$/m);
    await first.app.close();
    await second.app.close();
  });
});

describe('streams', () => {
  test('an event is one server-sent event with its type and JSON data', () => {
    const text = formatServerSentEvent({ type: 'image.removed', imageId: 'sha256:x', at: '2024-05-01T00:00:00.000Z' });
    assert.equal(text, 'event: image.removed\ndata: {"type":"image.removed","imageId":"sha256:x","at":"2024-05-01T00:00:00.000Z"}\n\n');
  });

  test('the event stream sends heartbeats and unsubscribes when destroyed', async () => {
    const events = new AgentEvents();
    let subscribers = 0;
    const counting = { replayPage: () => [], subscribe: (listener: Parameters<AgentEvents['subscribe']>[0]) => { subscribers++; const off = events.subscribe(listener); return () => { subscribers--; off(); }; } };
    const stream = agentEventStream({ events: counting, heartbeatMs: 5, logger: { debug() {}, info() {}, warn() {}, error() {} } });
    const chunks: string[] = [];
    // The heartbeat timer is unref'd (it must not keep an agent alive): this deadline keeps the test's loop alive, and fails it if no heartbeat comes.
    const deadline = setTimeout(() => stream.destroy(new Error('no heartbeat within 10 s')), 10_000);
    try {
      for await (const chunk of stream) {
        chunks.push(String(chunk));
        if (chunks.join('').includes(': heartbeat')) break;
      }
    } finally {
      clearTimeout(deadline);
    }
    assert.ok(chunks.join('').startsWith(': connected\n\n'));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(subscribers, 0);
  });

  test('a slow event reader is disconnected rather than buffered without bound', () => {
    const events = new AgentEvents();
    const warned: string[] = [];
    const stream = agentEventStream({ events, maxBufferedBytes: 1000, logger: { debug() {}, info() {}, warn: (_m, message) => void warned.push(message), error() {} } });
    for (let i = 0; i < 100; i++) events.emit({ type: 'image.removed', imageId: `sha256:${i}` });
    assert.ok(stream.destroyed);
    assert.equal(warned.length, 1);
  });
});

describe('since and addresses', () => {
  test('since is turned into the engine\'s UTC form, nanoseconds kept', () => {
    assert.equal(toUtcLogTimestamp('2024-05-01T12:00:00.123456789+02:00'), '2024-05-01T10:00:00.123456789Z');
    assert.equal(toUtcLogTimestamp('2024-05-01T10:00:00Z'), '2024-05-01T10:00:00Z');
    assert.throws(() => toUtcLogTimestamp('2024-13-01T10:00:00Z'), (e: unknown) => e instanceof ValidationError && e.issues[0]!.field === 'since');
    // Date.parse would roll these over into the next day or month.
    for (const text of ['2024-02-30T10:00:00Z', '2023-02-29T10:00:00Z', '2024-04-31T10:00:00Z', '2024-05-01T24:00:00Z', '2024-05-01T10:60:00Z', '2024-05-01T10:00:60Z', '2024-05-01T10:00:00+24:00']) {
      assert.throws(() => toUtcLogTimestamp(text), ValidationError, text);
    }
    assert.equal(toUtcLogTimestamp('2024-02-29T23:59:59+23:59'), '2024-02-29T00:00:59Z');
  });

  test('agent hosts are unix sockets, or http, https or tcp addresses with a port', () => {
    assert.deepEqual(parseAgentHost('unix:///run/berth/agent.sock'), { socketPath: '/run/berth/agent.sock' });
    assert.deepEqual(parseAgentHost('http://127.0.0.1:7070'), { host: '127.0.0.1', port: 7070 });
    assert.deepEqual(parseAgentHost('http://[::1]:7070'), { host: '::1', port: 7070 });
    assert.deepEqual(parseAgentHost('https://agent.example:7443'), { host: 'agent.example', port: 7443 });
    assert.deepEqual(parseAgentHost('tcp://10.0.0.5:7070'), { host: '10.0.0.5', port: 7070 });
    assert.deepEqual(parseAgentHost('tcp://[::1]:7070'), { host: '::1', port: 7070 });
    for (const bad of ['ftp://x:1', 'unix://relative', 'http://host', 'https://h', 'tcp://h', 'https://h:1/path', 'tcp://u@h:1']) assert.throws(() => parseAgentHost(bad), ValidationError, bad);
  });

  test('the address comes from flags, then the environment, then the data directory', async () => {
    const home = await mkdtemp(path.join(tmpdir(), 'berth-addr-'));
    try {
      const user = { uid: 1000, homedir: home };
      const dataDir = path.join(home, '.local', 'share', 'berth');
      await assert.rejects(resolveAgentAddress({}, {}, user), (e: unknown) => e instanceof ValidationError && e.issues[0]!.field === 'token');
      await import('node:fs/promises').then((fs) => fs.mkdir(dataDir, { recursive: true }));
      await writeFile(path.join(dataDir, 'token'), 'from-file\n');
      assert.deepEqual(await resolveAgentAddress({}, {}, user), { host: `unix://${dataDir}/agent.sock`, token: 'from-file', dataDir });
      assert.deepEqual(await resolveAgentAddress({ BERTH_DATA_DIR: '/srv/berth', BERTH_TOKEN: 'env' }, {}, user), { host: 'unix:///srv/berth/agent.sock', token: 'env', dataDir: '/srv/berth' });
      const env = { BERTH_HOST: 'http://10.0.0.1:7070', BERTH_TOKEN: 'env' };
      assert.equal((await resolveAgentAddress(env, {}, user)).host, 'http://10.0.0.1:7070');
      assert.deepEqual(await resolveAgentAddress(env, { host: 'unix:///tmp/a.sock', token: 'flag' }, user), { host: 'unix:///tmp/a.sock', token: 'flag', dataDir });
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});

describe('OpenAPI', () => {
  test('the document lists every route with the schemas the server validates with', () => {
    const document = buildOpenApiDocument({ version: '1.2.3' }) as { paths: Record<string, Record<string, { requestBody?: unknown; security?: unknown[]; parameters?: Array<{ name: string }> }>>; components: { schemas: Record<string, { properties?: Record<string, unknown> }> } };
    for (const route of API_ROUTES) {
      const operation = document.paths[route.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')]?.[route.method.toLowerCase()];
      assert.ok(operation, `${route.method} ${route.url}`);
    }
    assert.deepEqual(document.paths['/healthz']!.get!.security, []);
    assert.deepEqual(document.paths['/v1/tasks/{id}/logs']!.get!.parameters!.map((p) => p.name), ['id', 'follow', 'since', 'until', 'tail', 'stream']);
    assert.ok(document.components.schemas.TaskSpec!.properties!.image);
    assert.doesNotThrow(() => JSON.parse(JSON.stringify(document)));
  });

  test('submit documents 201 for a new task, 200 for the same task again and 409 for another spec; health documents the engine\'s condition', () => {
    type Responses = Record<string, { description: string; content?: { 'application/json': { schema: { properties?: Record<string, unknown> } } } }>;
    const document = buildOpenApiDocument({}) as { paths: Record<string, Record<string, { responses: Responses }>> };
    const submit = document.paths['/v1/tasks']!.post!.responses;
    assert.deepEqual(Object.keys(submit).sort(), ['200', '201', '400', '401', '409', '503', 'default']);
    // Every operation documents the one error shape for what its own statuses leave out.
    for (const [pathName, operations] of Object.entries(document.paths)) {
      for (const [method, op] of Object.entries(operations as Record<string, { responses: Record<string, { content?: Record<string, { schema: { $ref?: string } }> }> }>)) {
        assert.equal(op.responses.default?.content?.['application/json']?.schema.$ref, '#/components/schemas/Error', `${method} ${pathName}`);
      }
    }
    assert.match(submit['200']!.description, /same spec/);
    assert.match(submit['409']!.description, /another spec/);
    const unhealthy = document.paths['/healthz']!.get!.responses['503']!;
    assert.deepEqual(Object.keys(unhealthy.content!['application/json'].schema.properties!), ['agent', 'engine', 'engineError', 'tasksWaitingForEngine', 'disk']);
  });
});

describe('pause, kill and wait routes', () => {
  test('kill passes the signal on (default SIGKILL) and refuses one that is not a signal, naming the field', async () => {
    const { app, killed } = fakeRuntime({ tasks: [record('t1')] });
    assert.equal((await app.inject({ method: 'POST', url: '/v1/tasks/t1/kill', headers: auth, payload: { signal: 'SIGHUP' } })).statusCode, 200);
    assert.equal((await app.inject({ method: 'POST', url: '/v1/tasks/t1/kill', headers: auth, payload: {} })).statusCode, 200);
    assert.deepEqual(killed, [{ id: 't1', signal: 'SIGHUP' }, { id: 't1', signal: 'SIGKILL' }]);
    const bad = await app.inject({ method: 'POST', url: '/v1/tasks/t1/kill', headers: auth, payload: { signal: 'rm -rf' } });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().error.message, /signal/);
  });

  test('pause answers the task with when its pause began', async () => {
    const { app } = fakeRuntime({ tasks: [record('t1')] });
    const answer = await app.inject({ method: 'POST', url: '/v1/tasks/t1/pause', headers: auth });
    assert.equal(answer.statusCode, 200);
    assert.equal(answer.json().task.pausedAt, '2024-05-01T11:00:00.000Z');
    assert.ok(answer.json().task.pausedForMs > 0);
  });

  test('wait answers whether the task ended, and refuses a timeout past 10m or without a unit', async () => {
    const { app } = fakeRuntime({ tasks: [record('t1'), record('t2', { state: 'exited', endState: { kind: 'success', exitCode: 0 }, exitCode: 0 })] });
    const running = await app.inject({ method: 'GET', url: '/v1/tasks/t1/wait?timeout=0s', headers: auth });
    assert.deepEqual([running.statusCode, running.json().ended], [200, false]);
    const ended = await app.inject({ method: 'GET', url: '/v1/tasks/t2/wait', headers: auth });
    assert.deepEqual([ended.statusCode, ended.json().ended, ended.json().task.exitCode], [200, true, 0]);
    for (const timeout of ['11m', '30']) {
      const bad = await app.inject({ method: 'GET', url: `/v1/tasks/t1/wait?timeout=${timeout}`, headers: auth });
      assert.equal(bad.statusCode, 400, timeout);
    }
  });
});

describe('task stats', () => {
  const sampleAt = (second: number, withPrevious: boolean): StatsSample => ({
    at: new Date(Date.UTC(2024, 4, 1, 10, 0, second)),
    ...(withPrevious ? { previousAt: new Date(Date.UTC(2024, 4, 1, 10, 0, second - 1)) } : {}),
    memoryBytes: 16 * 1024 * 1024,
    memoryLimitBytes: 64 * 1024 * 1024,
    cpuMilli: 500,
    pids: 3,
    networkRxBytes: 1,
    networkTxBytes: 2,
    blockReadBytes: 3,
    blockWriteBytes: 4,
    cpuDeltaNanos: 5e8,
    systemCpuDeltaNanos: 2e9,
    onlineCpus: 2,
  });
  const streamed: string[] = [];
  const streamStats = async function* (containerId: string): AsyncGenerator<StatsSample> {
    streamed.push(containerId);
    yield sampleAt(1, false);
    yield sampleAt(2, true);
    yield sampleAt(3, true);
  };

  test('streams the engine\'s samples of the task\'s container as NDJSON records, and one sample with stream=false', async () => {
    const { app } = fakeRuntime({ tasks: [record('t1', { containerId: 'c0ffee' })], streamStats });
    const all = await app.inject({ method: 'GET', url: '/v1/tasks/t1/stats', headers: auth });
    assert.equal(all.statusCode, 200, all.body);
    assert.match(String(all.headers['content-type']), /application\/x-ndjson/);
    const records = all.body.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.deepEqual(records.map((r) => [r.taskId, r.containerId, r.previousAt === null, r.cpuPercent, r.memoryPercent]), [
      ['t1', 'c0ffee', true, 50, 25],
      ['t1', 'c0ffee', false, 50, 25],
      ['t1', 'c0ffee', false, 50, 25],
    ]);
    // One sample: the first that measures CPU over an interval, as docker's --no-stream.
    const one = await app.inject({ method: 'GET', url: '/v1/tasks/t1/stats?stream=false', headers: auth });
    const lines = one.body.trim().split('\n');
    assert.equal(lines.length, 1);
    assert.equal((JSON.parse(lines[0]!) as { at: string }).at, sampleAt(2, true).at.toISOString());
    assert.deepEqual(streamed, ['c0ffee', 'c0ffee']);
    await app.close();
  });

  test('refuses a task that is not running with 409 BERTH_TASK_STATE, and a bad stream flag with 400', async () => {
    const { app } = fakeRuntime({ tasks: [record('done', { state: 'exited', containerId: 'c1' }), record('queued', { state: 'pending' }), record('t1', { containerId: 'c2' })], streamStats });
    for (const id of ['done', 'queued']) {
      const response = await app.inject({ method: 'GET', url: `/v1/tasks/${id}/stats`, headers: auth });
      assert.equal(response.statusCode, 409, response.body);
      assert.equal(response.json().error.code, 'BERTH_TASK_STATE');
    }
    const bad = await app.inject({ method: 'GET', url: '/v1/tasks/t1/stats?stream=maybe', headers: auth });
    assert.equal(bad.statusCode, 400);
    await app.close();
  });

  test('a stream the server closes ends cleanly after the samples sent, and the engine\'s stream is aborted', async () => {
    let isWaiting = false;
    let wasAborted = false;
    const { app } = fakeRuntime({
      tasks: [record('t1', { containerId: 'c4' })],
      streamStats: async function* (_containerId, options) {
        yield sampleAt(1, false);
        isWaiting = true;
        await new Promise((resolve) => options?.signal?.addEventListener('abort', resolve, { once: true }));
        wasAborted = true;
        throw new Error('the engine stream was aborted');
      },
    });
    const answer = app.inject({ method: 'GET', url: '/v1/tasks/t1/stats', headers: auth });
    await pollUntil('the stream to wait for a second sample', async () => (isWaiting ? true : undefined), { timeoutMs: 10_000, intervalMs: 5 });
    await app.close();
    const response = await answer;
    assert.equal(response.statusCode, 200);
    assert.equal(response.body.trim().split('\n').length, 1);
    assert.equal(wasAborted, true);
  });

  test('a container that stopped before its first sample is 409 BERTH_TASK_STATE, not an empty stream', async () => {
    const { app } = fakeRuntime({ tasks: [record('t1', { containerId: 'c3' })], streamStats: async function* () {} });
    const response = await app.inject({ method: 'GET', url: '/v1/tasks/t1/stats', headers: auth });
    assert.equal(response.statusCode, 409);
    assert.equal(response.json().error.code, 'BERTH_TASK_STATE');
    await app.close();
  });
});
