import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isBerthError } from '../../../src/common/errors.js';
import { AgentClient } from '../../../src/agent/client.js';

/**
 * An agent stand-in on a unix socket that, like an agent whose keep-alive timeout fires just as a
 * request goes out, drops the first connection when a second request arrives on it, unanswered.
 */
describe('AgentClient on a kept-alive connection the agent closes', () => {
  let dir: string;
  let server: Server;
  const seen: { connection: number; head: string }[] = [];
  /** The connection whose second request is dropped: each scenario's first. */
  let dropOn = 1;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'berth-client-reuse-'));
    let connections = 0;
    server = createServer((socket: Socket) => {
      const connection = ++connections;
      let buffered = '';
      let answered = 0;
      socket.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('latin1');
        let end: number;
        while ((end = buffered.indexOf('\r\n\r\n')) >= 0) {
          const head = buffered.slice(0, end);
          const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
          if (buffered.length < end + 4 + length) return;
          buffered = buffered.slice(end + 4 + length);
          seen.push({ connection, head: head.split('\r\n')[0]! });
          if (connection === dropOn && answered === 1) {
            socket.destroy();
            return;
          }
          answered++;
          const body = JSON.stringify({ task: { id: 't1', state: 'running' } });
          socket.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: keep-alive\r\n\r\n${body}`);
        }
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(path.join(dir, 'agent.sock'), resolve));
  });

  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  test('a request safe to repeat (a read, a submit naming its id) is sent again on a new connection; one that is not fails typed, sent once', async () => {
    const host = `unix://${path.join(dir, 'agent.sock')}`;
    const reader = AgentClient.connect({ host, token: 't' });
    try {
      await reader.get('t1');
      const task = await reader.get('t1');
      assert.equal(task.id, 't1');
      assert.deepEqual(
        seen.map(({ connection, head }) => [connection, head]),
        [
          [1, 'GET /v1/tasks/t1 HTTP/1.1'],
          [1, 'GET /v1/tasks/t1 HTTP/1.1'],
          [2, 'GET /v1/tasks/t1 HTTP/1.1'],
        ],
      );
    } finally {
      reader.close();
    }

    seen.length = 0;
    dropOn = 3;
    const submitter = AgentClient.connect({ host, token: 't' });
    try {
      await submitter.get('t1');
      // Without an id a second send would make a second task: never sent twice.
      const submitted = submitter.submit({ spec: { image: 'busybox:latest', command: ['true'] } });
      await assert.rejects(submitted, (error) => isBerthError(error, 'BERTH_AGENT_UNAVAILABLE'));
      assert.equal(seen.filter(({ head }) => head.startsWith('POST /v1/tasks ')).length, 1, 'a submit without an id is never sent twice');
    } finally {
      submitter.close();
    }

    seen.length = 0;
    dropOn = 4;
    const named = AgentClient.connect({ host, token: 't' });
    try {
      await named.get('t1');
      // With its id the same submit is the same task: sent again on a new connection, it answers.
      const task = await named.submit({ id: 't1', spec: { image: 'busybox:latest', command: ['true'] } });
      assert.equal(task.id, 't1');
      assert.deepEqual(seen.filter(({ head }) => head.startsWith('POST /v1/tasks ')).map(({ connection }) => connection), [4, 5]);
    } finally {
      named.close();
    }
  });
});
