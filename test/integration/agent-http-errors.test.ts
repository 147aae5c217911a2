import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { tarArchive } from '../../src/tasks/tar.js';
import { after, before, describe, test } from 'node:test';
import { isBerthError, ValidationError } from '../../src/common/errors.js';
import { LABELS } from '../../src/common/labels.js';
import { API_ROUTES, MAX_PARAM_LENGTH, TASK_ID_MAX_LENGTH } from '../../src/agent/http/schemas.js';
import type { StoredTaskSpec } from '../../src/state/tasks.js';
import { berth, startServedAgent, type ServedAgent } from '../support/agent.js';
import { pollUntil, readAll, requireEngine, TEST_IMAGE, testRun, testEngine, TEST_ENGINE_SOCKET } from '../support/engine.js';
import { assertBerthError, rawExchange, rawRequest, type Target } from '../support/http.js';

const engine = testEngine();
const run = testRun(engine);
const spec = (command: string[]): StoredTaskSpec => ({ image: TEST_IMAGE, command, labels: { ...run.labels }, stopGracePeriod: '1s' });

/** A task id of exactly `length` characters, unique to this run. */
const idOfLength = (length: number, tag: string): string => `${run.id}-${tag}-`.padEnd(length, 'x');

describe('the agent API: one error shape, no coercion, every accepted id reachable', { skip: await requireEngine() }, () => {
  let agent: ServedAgent;
  let unix: Target;
  let tcp: Target;
  let auth: Record<string, string>;

  before(async () => {
    // Holders are counted only with cleanup on; the test image is shared, so its removal is put off past the run.
    agent = await startServedAgent(TEST_ENGINE_SOCKET, { listen: '127.0.0.1:0', images: { cleanup: true, removeDelay: '1h' } });
    unix = { socketPath: agent.serving.socketPath };
    assert.ok(agent.serving.tcp);
    tcp = { host: agent.serving.tcp.host, port: agent.serving.tcp.port };
    auth = { authorization: `Bearer ${agent.runtime.token}` };
  });

  after(async () => {
    for (const task of agent.runtime.store.tasks.list({ label: run.labelFilter, state: ['pending', 'starting', 'running'] })) {
      await agent.runtime.supervisor.stop(task.id).catch(() => undefined);
    }
    await agent.close();
    await run.cleanup();
  });

  test('the longest accepted id (128 characters) reaches every route that takes an id', async () => {
    const id = idOfLength(TASK_ID_MAX_LENGTH, 'longest');
    assert.equal(id.length, 128);
    const created = await agent.client.submit({ id, spec: { ...spec(['sleep', '30']), collect: ['/tmp/copied'] } });
    assert.equal(created.id, id);
    // Every route with an id parameter, from the router's own table: a new one fails here until it is covered.
    const withId = API_ROUTES.filter((route) => route.url.startsWith('/v1/tasks/:id')).map((route) => route.operationId).sort();
    // The group routes take group ids (at most 60 characters): the next test covers them.
    assert.deepEqual(API_ROUTES.filter((route) => route.url.includes(':id') && !route.url.startsWith('/v1/tasks/:id')).map((route) => route.operationId).sort(), ['getGroup', 'groupTaskLogs', 'removeGroup', 'stopGroup']);
    assert.deepEqual(withId, ['attachTask', 'copyIntoTask', 'execTask', 'execTaskSocket', 'getTask', 'killTask', 'pauseTask', 'removeTask', 'stopTask', 'taskArchive', 'taskArtifacts', 'taskLogs', 'taskStats', 'unpauseTask', 'waitTask']);
    assert.equal((await agent.client.get(id)).id, id);
    const logs = [];
    for await (const record of agent.client.logs(id)) logs.push(record);
    assert.deepEqual(logs, []);
    await pollUntil('the task to run', async () => ((await agent.client.get(id)).state === 'running' ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
    assert.ok((await agent.client.pause(id)).pausedAt);
    assert.equal((await agent.client.unpause(id)).pausedAt, undefined);
    // A signal sleep ignores: the task goes on.
    assert.equal((await agent.client.kill(id, 'SIGCONT')).id, id);
    assert.equal((await agent.client.execOnce(id, { cmd: ['sh', '-c', 'exit 3'] })).exitCode, 3);
    const session = await agent.client.exec(id, { cmd: ['sh', '-c', 'exit 4'] });
    session.stdout.resume();
    session.stderr.resume();
    assert.equal(await session.exitCode, 4);
    const samples = [];
    for await (const sample of agent.client.stats(id, { stream: false })) samples.push(sample);
    assert.equal(samples.length, 1);
    await agent.client.copyIn(id, '/tmp', Readable.from([tarArchive([{ header: { name: 'copied', type: 'file', mode: 0o644 }, body: Buffer.from('in') }])]));
    assert.equal((await agent.client.execOnce(id, { cmd: ['cat', '/tmp/copied'] })).stdout, 'in');
    assert.match((await readAll(await agent.client.archive(id, '/tmp/copied'))), /^copied\0[^]*\0in\0/);
    const attached = await agent.client.attach(id);
    attached.stdout.resume();
    attached.stderr.resume();
    attached.detach();
    assert.equal((await attached.end).kind, 'detached');
    assert.equal((await agent.client.waitOnce(id, 0)).ended, false);
    assert.equal((await agent.client.stop(id)).id, id);
    await pollUntil('the stopped task to end', async () => ((await agent.client.get(id)).state === 'exited' ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
    assert.match((await readAll(await agent.client.artifacts(id))), /copied\0[^]*\0in\0/);
    // The same id with every character percent-encoded (three times as long) is still within the router's bound.
    const encoded = [...id].map((c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join('');
    assert.ok(encoded.length <= MAX_PARAM_LENGTH);
    const viaEncoded = await rawRequest(unix, 'GET', `/v1/tasks/${encoded}`, { headers: auth });
    assert.equal(viaEncoded.status, 200, viaEncoded.body);
    assert.equal((JSON.parse(viaEncoded.body) as { task: { id: string } }).task.id, id);
    await agent.client.remove(id);
    await assert.rejects(agent.client.get(id), (error: unknown) => isBerthError(error, 'BERTH_TASK_NOT_FOUND') && error.context.status === 404);
    // Through the CLI too, as a user would: the removed task is not found, by its code.
    const inspect = await berth(agent.dataDir, ['inspect', id], { BERTH_HOST: `unix://${agent.serving.socketPath}`, BERTH_TOKEN: agent.runtime.token });
    assert.equal(inspect.code, 1, inspect.stderr);
    assert.match(inspect.stderr, /\[BERTH_TASK_NOT_FOUND\]/);
  });

  test('the longest group id (60 characters) reaches every group route; one character more is refused naming the id', async () => {
    const id = idOfLength(60, 'group');
    assert.equal(id.length, 60);
    const { group, created } = await agent.client.submitGroup({ id, spec: { name: 'longest', tasks: [{ ...spec(['sleep', '30']), name: 'only' }] } });
    assert.equal(created, true);
    assert.equal(group.id, id);
    assert.equal((await agent.client.getGroup(id)).tasks[0]!.taskId, `${id}.only`);
    const logs = [];
    for await (const record of agent.client.groupTaskLogs(id, 'only')) logs.push(record);
    assert.deepEqual(logs, []);
    assert.equal((await agent.client.stopGroup(id)).stopRequested, true);
    await agent.client.removeGroup(id, { force: true });
    await assert.rejects(agent.client.getGroup(id), (error: unknown) => isBerthError(error, 'BERTH_GROUP_NOT_FOUND') && error.context.status === 404);
    const tooLong = idOfLength(61, 'group');
    for (const [method, url] of [['GET', `/v1/groups/${tooLong}`], ['GET', `/v1/groups/${tooLong}/tasks/only/logs`], ['POST', `/v1/groups/${tooLong}/stop`], ['DELETE', `/v1/groups/${tooLong}`], ['POST', `/v1/groups?id=${tooLong}`]] as const) {
      assertBerthError(await rawRequest(unix, method, url, { headers: { ...auth, ...(method === 'POST' ? { 'content-type': 'application/json' } : {}) }, ...(method === 'POST' ? { body: '{}' } : {}) }), { status: 400, code: 'BERTH_VALIDATION', field: 'id' }, `${method} ${url}`);
    }
  });

  test('an id one character too long is refused naming the id, at submit and on every route', async () => {
    const id = idOfLength(TASK_ID_MAX_LENGTH + 1, 'toolong');
    await assert.rejects(agent.client.submit({ id, spec: spec(['true']) }), (error: unknown) => error instanceof ValidationError && error.issues.some((i) => i.field === 'id'));
    for (const [method, url] of [['GET', `/v1/tasks/${id}`], ['GET', `/v1/tasks/${id}/logs`], ['POST', `/v1/tasks/${id}/stop`], ['DELETE', `/v1/tasks/${id}`]] as const) {
      assertBerthError(await rawRequest(unix, method, url, { headers: auth }), { status: 400, code: 'BERTH_VALIDATION', field: 'id' }, `${method} ${url}`);
    }
  });

  test('a JSON value of the wrong type is refused with 400 naming the field, never converted', async () => {
    const json = { ...auth, 'content-type': 'application/json' };
    // A label of this test's own: whatever a case created would be listed by it.
    const typed = (command: string[]): StoredTaskSpec => ({ ...spec(command), labels: { ...run.labels, case: 'types' } });
    const cases: Array<[string, string, unknown, string]> = [
      ['/v1/tasks', 'a number for the id', { id: 5, spec: typed(['true']) }, 'id'],
      ['/v1/tasks', 'true for the id', { id: true, spec: typed(['true']) }, 'id'],
      ['/v1/tasks', 'null for the id', { id: null, spec: typed(['true']) }, 'id'],
      ['/v1/tasks', 'an id in an array', { id: [`${run.id}-array`], spec: typed(['true']) }, 'id'],
      ['/v1/tasks', 'a string for the spec', { spec: 'sleep 1' }, 'spec'],
      ['/v1/tasks', 'a string for a number in the spec', { spec: { ...typed(['true']), resources: { cpuMilli: '250' } } }, 'spec.resources.cpuMilli'],
      ['/v1/tasks', 'a string for the command', { spec: { ...typed(['true']), command: 'true' } }, 'spec.command'],
      ['/v1/tasks', 'a number for a label value', { spec: { ...typed(['true']), labels: { ...run.labels, case: 'types', n: 5 } } }, 'spec.labels.n'],
      ['/v1/prune', 'a string for dryRun', { dryRun: 'true' }, 'dryRun'],
      ['/v1/prune', 'a string for the filters', { filters: `label=${run.labelFilter}`, dryRun: true }, 'filters'],
      ['/v1/prune', 'a number in the filters', { filters: [5], dryRun: true }, 'filters[0]'],
    ];
    for (const [url, what, body, field] of cases) {
      assertBerthError(await rawRequest(unix, 'POST', url, { headers: json, body: JSON.stringify(body) }), { status: 400, code: 'BERTH_VALIDATION', field }, what);
    }
    // Query strings are text: a number or boolean is read only from text that is exactly one.
    for (const [query, field] of [['limit=abc', 'limit'], ['limit=0x10', 'limit'], ['limit=1e3', 'limit'], ['limit=%205', 'limit'], ['limit=5.0', 'limit'], ['limit=1&limit=2', 'limit'], ['limit=-1', 'limit'], ['limit=', 'limit']] as const) {
      assertBerthError(await rawRequest(unix, 'GET', `/v1/tasks?${query}`, { headers: auth }), { status: 400, code: 'BERTH_VALIDATION', field }, query);
    }
    for (const query of ['follow=yes', 'follow=1', 'follow=TRUE', 'follow=true&follow=false']) {
      assertBerthError(await rawRequest(unix, 'GET', `/v1/tasks/${run.id}-none/logs?${query}`, { headers: auth }), { status: 400, code: 'BERTH_VALIDATION', field: 'follow' }, query);
    }
    const listed = await rawRequest(unix, 'GET', `/v1/tasks?limit=2&state=exited&label=${encodeURIComponent(run.labelFilter)}`, { headers: auth });
    assert.equal(listed.status, 200, listed.body);
    const notFound = await rawRequest(unix, 'GET', `/v1/tasks/${run.id}-none/logs?follow=false&stream=stdout`, { headers: auth });
    assertBerthError(notFound, { status: 404, code: 'BERTH_TASK_NOT_FOUND' }, 'logs of no task');
    // Nothing was submitted, nothing reached the engine.
    assert.deepEqual(agent.runtime.store.tasks.list({ label: [run.labelFilter, 'case=types'] }).map((t) => t.id), []);
    assert.deepEqual(await run.leftovers(), []);
  });

  test('every error the server answers, router and parser errors included, is in berth\'s shape', async () => {
    const json = { ...auth, 'content-type': 'application/json' };
    for (const [name, target] of [['unix socket', unix], ['TCP', tcp]] as const) {
      const check = async (what: string, response: Promise<Awaited<ReturnType<typeof rawRequest>>>, expected: { status: number; code?: string; field?: string }): Promise<void> => {
        assertBerthError(await response, expected, `${name}: ${what}`);
      };
      await check('no token', rawRequest(target, 'GET', '/v1/tasks'), { status: 401, code: 'BERTH_UNAUTHORIZED' });
      await check('an unknown route', rawRequest(target, 'GET', '/v1/nothing', { headers: auth }), { status: 404, code: 'BERTH_VALIDATION', field: 'url' });
      await check('an unknown task', rawRequest(target, 'GET', `/v1/tasks/${run.id}-none`, { headers: auth }), { status: 404, code: 'BERTH_TASK_NOT_FOUND' });
      const wrongMethod = await rawRequest(target, 'PUT', '/v1/tasks', { headers: auth });
      await check('a method the path does not take', Promise.resolve(wrongMethod), { status: 405, code: 'BERTH_VALIDATION', field: 'method' });
      assert.equal(wrongMethod.headers.allow, 'POST, GET, HEAD');
      await check('a path segment past the router\'s bound', rawRequest(target, 'GET', `/v1/tasks/${'a'.repeat(MAX_PARAM_LENGTH + 1)}`, { headers: auth }), { status: 414, code: 'BERTH_VALIDATION', field: 'url' });
      await check('headers past the parser\'s bound', rawRequest(target, 'GET', '/v1/tasks', { headers: { ...auth, 'x-padding': 'a'.repeat(32 * 1024) } }), { status: 431, code: 'BERTH_VALIDATION', field: 'headers' });
      await check('a URL that is not percent-encoded correctly', rawRequest(target, 'GET', '/v1/tasks/%E0%A4%A', { headers: auth }), { status: 400, code: 'BERTH_VALIDATION', field: 'url' });
      await check('malformed JSON', rawRequest(target, 'POST', '/v1/tasks', { headers: json, body: '{"spec": ' }), { status: 400, code: 'BERTH_VALIDATION', field: 'body' });
      await check('an empty JSON body', rawRequest(target, 'POST', '/v1/tasks', { headers: json, body: '' }), { status: 400, code: 'BERTH_VALIDATION', field: 'body' });
      await check('JSON that is not an object', rawRequest(target, 'POST', '/v1/tasks', { headers: json, body: '[]' }), { status: 400, code: 'BERTH_VALIDATION', field: 'body' });
      await check('a prototype-poisoning key', rawRequest(target, 'POST', '/v1/tasks', { headers: json, body: '{"spec":{},"__proto__":{"x":1}}' }), { status: 400, code: 'BERTH_VALIDATION' });
      await check('a text body', rawRequest(target, 'POST', '/v1/tasks', { headers: { ...auth, 'content-type': 'text/plain' }, body: 'hello' }), { status: 415, code: 'BERTH_VALIDATION', field: 'content-type' });
      await check('an XML body', rawRequest(target, 'POST', '/v1/prune', { headers: { ...auth, 'content-type': 'application/xml' }, body: '<x/>' }), { status: 415, code: 'BERTH_VALIDATION', field: 'content-type' });
      await check('a body past the limit', rawRequest(target, 'POST', '/v1/tasks', { headers: json, body: `{"spec":{"image":"${'a'.repeat(2 * 1024 * 1024)}"}}` }), { status: 413, code: 'BERTH_VALIDATION', field: 'body' });
      await check('a request line that is not HTTP', rawExchange(target, 'HELLO THERE\r\n\r\n'), { status: 400, code: 'BERTH_VALIDATION', field: 'request' });
      await check('a malformed header', rawExchange(target, 'GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n'), { status: 400, code: 'BERTH_VALIDATION', field: 'request' });
      await check('headers past the bound, sent raw', rawExchange(target, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: ${'a'.repeat(32 * 1024)}\r\n\r\n`), { status: 431, code: 'BERTH_VALIDATION', field: 'headers' });
    }
    assert.deepEqual(await run.leftovers(), []);
  });

  test('the CLI reports the agent\'s refusals by their code and message, not as internal errors', async () => {
    const env = { BERTH_HOST: `unix://${agent.serving.socketPath}`, BERTH_TOKEN: agent.runtime.token };
    // An id the API refuses (400, naming it).
    const tooLong = await berth(agent.dataDir, ['inspect', idOfLength(TASK_ID_MAX_LENGTH + 1, 'cli')], env);
    assert.equal(tooLong.code, 2, tooLong.stderr);
    assert.match(tooLong.stderr, /id: .*\[BERTH_VALIDATION\]/);
    // A path segment the router refuses (414, before any route): reported as the agent said it.
    const tooLongForTheRouter = await berth(agent.dataDir, ['stop', 'a'.repeat(MAX_PARAM_LENGTH + 1)], env);
    assert.equal(tooLongForTheRouter.code, 2, tooLongForTheRouter.stderr);
    assert.match(tooLongForTheRouter.stderr, /url: has a path segment longer than 512 characters.*\[BERTH_VALIDATION\]/);
    for (const result of [tooLong, tooLongForTheRouter]) assert.doesNotMatch(result.stderr, /BERTH_INTERNAL/);
  });

  test('nothing reached the engine for the agent\'s owner id', async () => {
    const containers = await engine.listContainers({ all: true, labels: [`${LABELS.ownerId}=${agent.runtime.agentId}`] });
    // The only task this file ran (the 128-character id) was removed with its container.
    assert.deepEqual(containers.map((c) => c.names[0] ?? c.id), []);
  });
});
