import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { isBerthError, ValidationError } from '../../../../src/common/errors.js';
import { createServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { AgentClient, agentError } from '../../../../src/agent/client.js';
import { answerClientError, clientErrorResponse, toErrorResponse } from '../../../../src/agent/http/errors.js';
import { API_ROUTES, MAX_PARAM_LENGTH, TASK_ID_MAX_LENGTH } from '../../../../src/agent/http/schemas.js';
import { TASK_ID } from '../../../../src/tasks/driver.js';
import { exitCodeForClientError } from '../../../../src/cli/client.js';

const errnoError = (code: string): NodeJS.ErrnoException => Object.assign(new Error(code), { code });

describe('errors of Node\'s HTTP parser answered in berth\'s shape', () => {
  test('each parser error maps to its status as Node\'s own handler does, with BERTH_VALIDATION naming the part at fault', () => {
    const cases: Array<[string, number, string]> = [
      ['HPE_HEADER_OVERFLOW', 431, 'headers'],
      ['HPE_CHUNK_EXTENSIONS_OVERFLOW', 413, 'body'],
      ['ERR_HTTP_REQUEST_TIMEOUT', 408, 'request'],
      ['HPE_INVALID_METHOD', 400, 'request'],
      ['HPE_INVALID_HEADER_TOKEN', 400, 'request'],
    ];
    for (const [code, status, field] of cases) {
      const response = clientErrorResponse(errnoError(code));
      assert.ok(response, code);
      assert.equal(response.status, status, code);
      assert.equal(response.body.error.code, 'BERTH_VALIDATION');
      assert.equal(response.body.error.issues?.[0]?.field, field);
    }
    assert.equal(clientErrorResponse(errnoError('ECONNRESET')), undefined);
  });
  test('the answer is written as a whole HTTP response with a JSON body, and the connection closed', () => {
    const socket = new PassThrough();
    let written = '';
    socket.on('data', (chunk: Buffer) => (written += chunk.toString('utf8')));
    answerClientError(errnoError('HPE_HEADER_OVERFLOW'), socket);
    assert.ok(socket.destroyed);
    const [head, body] = written.split('\r\n\r\n') as [string, string];
    assert.match(head, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
    assert.match(head, /content-type: application\/json/);
    assert.match(head, new RegExp(`content-length: ${Buffer.byteLength(body)}`));
    assert.equal((JSON.parse(body) as { error: { code: string } }).error.code, 'BERTH_VALIDATION');
  });
  test('fastify\'s parser errors name the part at fault', () => {
    const fastifyError = (code: string, statusCode: number) => Object.assign(new Error(code), { code, statusCode });
    assert.deepEqual(toErrorResponse(fastifyError('FST_ERR_CTP_INVALID_MEDIA_TYPE', 415)).body.error.issues, [{ field: 'content-type', rule: 'must be application/json' }]);
    assert.equal(toErrorResponse(fastifyError('FST_ERR_CTP_INVALID_MEDIA_TYPE', 415)).status, 415);
    assert.deepEqual(toErrorResponse(fastifyError('FST_ERR_CTP_INVALID_JSON_BODY', 400)).body.error.issues, [{ field: 'body', rule: 'must be valid JSON' }]);
    assert.deepEqual(toErrorResponse(fastifyError('FST_ERR_CTP_BODY_TOO_LARGE', 413)).body.error, { code: 'BERTH_VALIDATION', message: 'body: FST_ERR_CTP_BODY_TOO_LARGE', issues: [{ field: 'body', rule: 'FST_ERR_CTP_BODY_TOO_LARGE' }] });
    assert.equal(toErrorResponse(new Error('boom')).status, 500);
  });
});

describe('the router takes every id the API accepts', () => {
  test('the longest path parameter it matches covers the longest task id, even percent-encoded', () => {
    assert.equal(TASK_ID.source, `^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,${TASK_ID_MAX_LENGTH - 1}}$`, 'the API\'s id rule is the driver\'s');
    assert.ok(MAX_PARAM_LENGTH >= 3 * TASK_ID_MAX_LENGTH);
    for (const route of API_ROUTES.filter((r) => r.params)) {
      for (const property of Object.values(route.params!.properties as Record<string, { maxLength?: number }>)) {
        assert.ok(property.maxLength !== undefined && 3 * property.maxLength <= MAX_PARAM_LENGTH, route.operationId);
      }
    }
  });
});

describe('the client maps every error answer to a BerthError by its code', () => {
  test('berth\'s codes are kept, with the issues of a validation error', () => {
    const error = agentError(414, { code: 'BERTH_VALIDATION', message: 'url: too long', issues: [{ field: 'url', rule: 'too long' }] }, '', 'unix:///a.sock');
    assert.ok(error instanceof ValidationError);
    assert.deepEqual(error.issues, [{ field: 'url', rule: 'too long' }]);
    assert.equal(error.context.status, 414);
    assert.equal(agentError(404, { code: 'BERTH_TASK_NOT_FOUND', message: 'no task x' }, '', 'h').code, 'BERTH_TASK_NOT_FOUND');
  });
  test('an answer without a berth code is classified by its status, never as an internal error unless it is a 5xx', () => {
    const cases: Array<[number, string | undefined, string]> = [
      [401, undefined, 'BERTH_UNAUTHORIZED'],
      [408, undefined, 'BERTH_AGENT_UNAVAILABLE'],
      [502, undefined, 'BERTH_AGENT_UNAVAILABLE'],
      [503, 'SOMETHING_NEW', 'BERTH_AGENT_UNAVAILABLE'],
      [414, 'FST_ERR_MAX_PARAM_LENGTH', 'BERTH_VALIDATION'],
      [431, undefined, 'BERTH_VALIDATION'],
      [500, undefined, 'BERTH_INTERNAL'],
    ];
    for (const [status, code, expected] of cases) {
      const error = agentError(status, code === undefined ? undefined : { code, message: 'from a newer agent' }, '<html>proxy</html>', 'h');
      assert.equal(error.code, expected, `${status} ${code}`);
      assert.equal(error.context.status, status);
      if (code !== undefined) assert.equal(error.context.agentCode, code);
      assert.match(error.message, code === undefined ? new RegExp(`the agent answered ${status}: <html>proxy</html>`) : /from a newer agent/);
    }
  });
  test('the CLI exits 2 for requests the agent refused as malformed, 1 for other refusals', () => {
    for (const status of [400, 413, 414, 415, 431]) assert.equal(exitCodeForClientError(agentError(status, { code: 'BERTH_VALIDATION', message: 'x' }, '', 'h')), 2, String(status));
    for (const status of [404, 405, 408]) assert.equal(exitCodeForClientError(agentError(status, { code: 'BERTH_VALIDATION', message: 'x' }, '', 'h')), 1, String(status));
    assert.ok(isBerthError(agentError(404, { code: 'BERTH_TASK_NOT_FOUND', message: 'x' }, '', 'h')));
    assert.equal(exitCodeForClientError(agentError(404, { code: 'BERTH_TASK_NOT_FOUND', message: 'x' }, '', 'h')), 1);
  });
});

describe('the client and a kept-alive connection the agent closed as idle', () => {
  test('a repeatable request that meets the closed connection is sent again on a new one; a submit is not', async () => {
    // Answers the first request on each connection and drops the connection at its second, unread,
    // as a server whose keep-alive timeout ends just as the request arrives.
    const served = new Map<Socket, number>();
    const server = createServer((request, response) => {
      const count = (served.get(request.socket) ?? 0) + 1;
      served.set(request.socket, count);
      if (count > 1) {
        request.socket.destroy();
        return;
      }
      response.setHeader('content-type', 'application/json');
      response.end(request.method === 'POST' && request.url === '/v1/tasks' ? JSON.stringify({ task: { id: 't' } }) : JSON.stringify({ tasks: [] }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = AgentClient.connect({ host: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, token: 't' });
    try {
      assert.deepEqual(await client.list(), []);
      assert.deepEqual(await client.list(), [], 'sent again on a new connection');
      assert.equal(served.size, 2);
      await assert.rejects(client.submit({ spec: { image: 'x' } }), (error: unknown) => isBerthError(error, 'BERTH_AGENT_UNAVAILABLE'));
    } finally {
      client.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
