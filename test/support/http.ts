/**
 * Raw HTTP against the agent's API, for what the typed client cannot send (no token, bad JSON,
 * malformed request lines, huge headers), and the check that an answer is in berth's error shape.
 */
import assert from 'node:assert/strict';
import { connect, createServer } from 'node:net';
import { request } from 'node:http';
import { ERROR_CODES } from '../../src/common/errors.js';

/** Where a listener is: a unix socket, or a TCP host and port. */
export type Target = { socketPath: string } | { host: string; port: number };

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request through node:http (one connection, not kept alive); `body` is sent as it is. */
export function rawRequest(target: Target, method: string, url: string, options: { headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request({ ...target, method, path: url, headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/**
 * Writes `bytes` on a fresh connection and reads until the server closes it; parses the one
 * response it sent. For requests node:http refuses to send (a malformed request line or header).
 */
export function rawExchange(target: Target, bytes: string | Buffer): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = 'socketPath' in target ? connect({ path: target.socketPath }) : connect({ host: target.host, port: target.port });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const split = text.indexOf('\r\n\r\n');
      const head = split >= 0 ? text.slice(0, split) : text;
      const [statusLine = '', ...headerLines] = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of headerLines) {
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1] ?? 0), headers, body: split >= 0 ? text.slice(split + 4) : '' });
    });
    socket.end(bytes);
  });
}

export interface BerthErrorBody {
  error: { code: string; message: string; issues?: Array<{ field: string; rule: string }> };
}

/**
 * Asserts that a response is one of berth's errors: the status, JSON, exactly
 * `{error: {code, message, issues?}}` with a registered code and a message, and, when `field` is
 * given, an issue naming it. Resolves with the body.
 */
export function assertBerthError(response: RawResponse, expected: { status: number; code?: string; field?: string }, what = ''): BerthErrorBody {
  const label = `${what} (answered ${response.status}: ${response.body.slice(0, 300)})`;
  assert.equal(response.status, expected.status, label);
  assert.match(String(response.headers['content-type'] ?? ''), /^application\/json/, label);
  let body: unknown;
  assert.doesNotThrow(() => (body = JSON.parse(response.body)), label);
  assert.ok(typeof body === 'object' && body !== null && !Array.isArray(body), label);
  assert.deepEqual(Object.keys(body), ['error'], label);
  const error = (body as { error: unknown }).error as Record<string, unknown>;
  assert.ok(typeof error === 'object' && error !== null, label);
  for (const key of Object.keys(error)) assert.ok(['code', 'message', 'issues'].includes(key), `${label}: unexpected key ${key}`);
  assert.equal(typeof error.code, 'string', label);
  assert.ok(Object.hasOwn(ERROR_CODES, error.code as string), `${label}: ${String(error.code)} is not a registered code`);
  assert.equal(typeof error.message, 'string', label);
  assert.notEqual(error.message, '', label);
  if (expected.code !== undefined) assert.equal(error.code, expected.code, label);
  if (error.issues !== undefined) {
    assert.ok(Array.isArray(error.issues), label);
    for (const issue of error.issues as unknown[]) {
      assert.ok(typeof issue === 'object' && issue !== null, label);
      const { field, rule } = issue as Record<string, unknown>;
      assert.ok(typeof field === 'string' && typeof rule === 'string', label);
    }
  }
  if (expected.field !== undefined) {
    const fields = ((error.issues ?? []) as Array<{ field: string }>).map((i) => i.field);
    assert.ok(fields.includes(expected.field), `${label}: no issue names ${expected.field} (${fields.join(', ')})`);
  }
  return body as BerthErrorBody;
}

/** busybox httpd serving one page, `hello <name>`, on `port` (a shell command line). */
export const httpdCommand = (name: string, port: number): string => `mkdir -p /www && echo "hello ${name}" > /www/index.html && exec httpd -f -p ${port} -h /www`;

/** GET http://host:port/index.html from this process (the host); undefined while nothing answers. */
export function fetchPage(hostIp: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = request({ host: hostIp, port, path: '/index.html', timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve(res.statusCode === 200 ? body : undefined));
    });
    req.on('error', () => resolve(undefined)).on('timeout', () => req.destroy());
    req.end();
  });
}

/** Whether this process can bind `port` on `hostIp` (nothing else holds it). */
export function canBind(hostIp: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ host: hostIp, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}
