import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { AgentClient } from '../../src/agent/client.js';
import { berth, startServedAgent, type ServedAgent } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_ENGINE_SOCKET } from '../support/engine.js';
import { assertBerthError, rawRequest, type RawResponse, type Target } from '../support/http.js';

/** The test image is shared with other tests: its removal is put off past the run. */
const IMAGES = { cleanup: true, removeDelay: '1h' } as const;

function targetsOf(agent: ServedAgent): Array<[string, Target]> {
  assert.ok(agent.serving.tcp);
  return [
    ['unix socket', { socketPath: agent.serving.socketPath }],
    ['TCP', { host: agent.serving.tcp.host, port: agent.serving.tcp.port }],
  ];
}

function open(target: Target): Socket {
  return 'socketPath' in target ? connect({ path: target.socketPath }) : connect({ host: target.host, port: target.port });
}

/** A connection the test holds: what the server sent on it, and whether the server has closed it. */
interface Held {
  readonly socket: Socket;
  readonly connected: Promise<void>;
  received(): string;
  isClosed(): boolean;
}

/**
 * A slow client: sends `head` at once, then (if it trickles) one byte a second (a header byte, or
 * a body byte), never finishing its request.
 */
function slowClient(target: Target, head: string, trickles = true): Held {
  const socket = open(target);
  let received = '';
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  socket.setEncoding('utf8').on('data', (d: string) => (received += d));
  // The server closing the connection mid-write is what the test waits for, not a failure.
  socket.on('error', () => undefined);
  socket.once('close', () => {
    closed = true;
    clearInterval(timer);
  });
  const connected = once(socket, 'connect').then(() => {
    socket.write(head);
    if (!trickles) return;
    timer = setInterval(() => {
      if (socket.writable) socket.write('a');
    }, 1000);
  });
  return { socket, connected, received: () => received, isClosed: () => closed };
}

/** The one response in what a server sent on a raw connection. */
function parseResponse(text: string): RawResponse {
  const split = text.indexOf('\r\n\r\n');
  const [statusLine = '', ...lines] = text.slice(0, split).split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) headers[line.slice(0, line.indexOf(':')).toLowerCase()] = line.slice(line.indexOf(':') + 1).trim();
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1] ?? 0), headers, body: text.slice(split + 4) };
}

describe('slow and idle clients cannot hold the agent\'s sockets', { skip: await requireEngine() }, () => {
  test('250 slow connections are dropped within the configured timeouts while other clients are served on both listeners', async (t) => {
    const headersTimeoutMs = 5000;
    const requestTimeoutMs = 8000;
    const agent = await startServedAgent(TEST_ENGINE_SOCKET, {
      listen: '127.0.0.1:0',
      images: IMAGES,
      http: { headersTimeout: `${headersTimeoutMs}ms`, requestTimeout: `${requestTimeoutMs}ms`, keepAliveTimeout: '1s', maxConnections: 512 },
    });
    const held: Array<Held & { kind: string }> = [];
    try {
      const targets = targetsOf(agent);
      const token = agent.runtime.token;
      for (let i = 0; i < 250; i++) {
        const [, target] = targets[i % 2]!;
        // Most send their headers a byte a second; some send whole headers and then a body a byte a
        // second; some connect and send nothing at all.
        const kind = i % 10 < 7 ? 'slow headers' : i % 10 < 9 ? 'slow body' : 'silent';
        const head =
          kind === 'slow headers'
            ? 'GET /v1/tasks HTTP/1.1\r\nHost: agent\r\nX-Slow: '
            : kind === 'slow body'
              ? `POST /v1/tasks HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"spec":`
              : '';
        held.push({ ...slowClient(target, head, kind !== 'silent'), kind });
      }
      await Promise.all(held.map((h) => h.connected));
      const attackStartedAt = Date.now();

      // During the attack, other clients are served on both listeners.
      const tcp = targets[1]![1] as { host: string; port: number };
      const tcpClient = AgentClient.connect({ host: `http://${tcp.host}:${tcp.port}`, token });
      try {
        assert.ok(Array.isArray(await agent.client.list({ limit: 5 })));
        assert.ok(Array.isArray(await tcpClient.list({ limit: 5 })));
        assert.equal((await agent.client.health()).agent, 'ok');
        assert.equal((await tcpClient.health()).agent, 'ok');
      } finally {
        tcpClient.close();
      }
      const stillHeld = held.filter((h) => !h.isClosed()).length;
      assert.equal(stillHeld, 250, 'the normal calls were served while every slow connection was still open');

      // None of them ever finishes its request: only the bounds end them, each with a 408 in berth's
      // shape, within its bound (and a margin for a loaded machine) of connecting.
      const marginMs = 10_000;
      const within = (boundMs: number): number => Math.max(0, boundMs + marginMs - (Date.now() - attackStartedAt));
      await pollUntil(
        'the connections that never sent whole headers to be dropped within http.headersTimeout',
        () => (held.filter((h) => h.kind !== 'slow body').every((h) => h.isClosed()) ? true : undefined),
        { timeoutMs: within(headersTimeoutMs), intervalMs: 100 },
      );
      await pollUntil(
        'the connections that never sent a whole body to be dropped within http.requestTimeout',
        () => (held.every((h) => h.isClosed()) ? true : undefined),
        { timeoutMs: within(requestTimeoutMs), intervalMs: 100 },
      );
      t.diagnostic(`all 250 dropped ${Date.now() - attackStartedAt} ms after they connected (headersTimeout ${headersTimeoutMs} ms, requestTimeout ${requestTimeoutMs} ms)`);
      for (const h of held) {
        assertBerthError(parseResponse(h.received()), { status: 408, code: 'BERTH_VALIDATION', field: 'request' }, h.kind);
      }
      // And the agent serves as before.
      assert.ok(Array.isArray(await agent.client.list({ limit: 5 })));
    } finally {
      for (const h of held) h.socket.destroy();
      await agent.close();
    }
  });

  test('an idle keep-alive connection is closed after http.keepAliveTimeout', async () => {
    const agent = await startServedAgent(TEST_ENGINE_SOCKET, { listen: '127.0.0.1:0', images: IMAGES, http: { keepAliveTimeout: '1s' } });
    try {
      for (const [name, target] of targetsOf(agent)) {
        const socket = open(target);
        socket.on('error', () => undefined);
        let received = '';
        socket.setEncoding('utf8').on('data', (d: string) => (received += d));
        let closed = false;
        socket.once('close', () => (closed = true));
        await once(socket, 'connect');
        socket.write('GET /healthz HTTP/1.1\r\nHost: agent\r\nConnection: keep-alive\r\n\r\n');
        await pollUntil(`${name}: the health answer`, () => (received.includes('"agent"') ? true : undefined), { timeoutMs: 20_000 });
        assert.equal(parseResponse(received).status, 200);
        // The client keeps the connection and sends nothing more: the server closes it.
        await pollUntil(`${name}: the idle connection to be closed`, () => (closed ? true : undefined), { timeoutMs: 20_000, intervalMs: 50 });
      }
    } finally {
      await agent.close();
    }
  });

  test('past http.maxConnections new connections are closed at once, and service resumes when some end', async () => {
    const maxConnections = 20;
    const agent = await startServedAgent(TEST_ENGINE_SOCKET, {
      listen: '127.0.0.1:0',
      images: IMAGES,
      http: { headersTimeout: '60s', requestTimeout: '60s', keepAliveTimeout: '60s', maxConnections },
    });
    try {
      for (const [name, target] of targetsOf(agent)) {
        // Each held connection made one request and had its answer, so the server has accepted it; it stays open, idle.
        const held: Socket[] = [];
        for (let i = 0; i < maxConnections; i++) {
          const socket = open(target);
          socket.on('error', () => undefined);
          held.push(socket);
          let received = '';
          socket.setEncoding('utf8').on('data', (d: string) => (received += d));
          await once(socket, 'connect');
          socket.write('GET /healthz HTTP/1.1\r\nHost: agent\r\nConnection: keep-alive\r\n\r\n');
          await pollUntil(`${name}: held connection ${i} to be answered`, () => (received.includes('"agent"') ? true : undefined), { timeoutMs: 20_000 });
        }
        // One more is closed without an answer.
        const refused = await rawRequest(target, 'GET', '/healthz').then(
          (response) => `answered ${response.status}`,
          (error: NodeJS.ErrnoException) => error.code ?? error.message,
        );
        assert.ok(['ECONNRESET', 'EPIPE'].includes(refused), `${name}: past the limit: ${refused}`);
        if (name === 'unix socket') {
          // The CLI says so, by its code, with the limit as a likely cause.
          const ps = await berth(agent.dataDir, ['ps'], { BERTH_HOST: `unix://${agent.serving.socketPath}`, BERTH_TOKEN: agent.runtime.token });
          assert.equal(ps.code, 125, ps.stderr);
          assert.match(ps.stderr, /connection limit \(http\.maxConnections\).*\[BERTH_AGENT_UNAVAILABLE\]/);
        }
        // The limit is per listener: the other one still serves.
        const [, other] = targetsOf(agent).find(([n]) => n !== name)!;
        assert.equal((await rawRequest(other, 'GET', '/healthz')).status, 200, `${name}: the other listener`);
        for (const socket of held) assert.ok(!socket.destroyed, `${name}: a held connection was closed`);
        // Once the held connections end, new ones are served again.
        for (const socket of held) socket.destroy();
        await pollUntil(
          `${name}: service to resume`,
          async () => ((await rawRequest(target, 'GET', '/healthz').catch(() => undefined))?.status === 200 ? true : undefined),
          { timeoutMs: 20_000, intervalMs: 50 },
        );
      }
    } finally {
      await agent.close();
    }
  });
});
