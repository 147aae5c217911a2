/**
 * Real registries for image tests: Debian's `docker-registry` on 127.0.0.1, one plain instance and
 * one behind htpasswd authentication, sharing one temporary storage directory (so an image pushed to
 * the plain one can be pulled from both). Each sits behind a small HTTP proxy that counts requests
 * (manifest fetches are how a test proves there was one pull) and can stall blob downloads midway.
 *
 * Test images are unique per run (random bytes, so their layers are new to the engine and a pull
 * really downloads them) and labelled with the run's label; `cleanup()` removes them locally.
 * 127.0.0.0/8 registries are insecure by default for the engine, so no TLS is set up.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { copyFile, mkdir, mkdtemp, open, rm, symlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { type AddressInfo } from 'node:net';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { Engine } from '../../src/engine/engine.js';
import { TEST_RUN_LABEL } from './engine.js';

const exec = promisify(execFile);

/** The docker CLI that comes with docker.io (the newer /usr/local/bin one works too). */
export const DOCKER_CLI = ['/usr/bin/docker', '/usr/local/bin/docker'].find((p) => spawnSync(p, ['--version']).status === 0) ?? 'docker';

export interface RequestRecord {
  method: string;
  path: string;
  status?: number;
}

export interface TestRegistry {
  /** `127.0.0.1:<port>` of the proxy: the registry host image references name. */
  readonly host: string;
  /** Every request the proxy saw, in order. */
  readonly requests: readonly RequestRecord[];
  /**
   * Manifest GET and HEAD requests for `repository` (a path such as `berth-it/abc/app`), or only
   * those for one tag or digest. An engine pull resolves its tag exactly once (a HEAD, then a GET by
   * digest), so the tag's count is the number of pulls.
   */
  manifestRequests(repository: string, reference?: string): number;
  /** Blob GET requests for `repository`. */
  blobRequests(repository: string): number;
  /**
   * From now on, blob downloads send their response head and `afterBytes` bytes of the body, then
   * nothing more, holding the connection open: a registry that stalls midway. `undefined` heals it.
   */
  stallBlobs(afterBytes: number | undefined): void;
  /**
   * From now on, blob downloads are sent `chunkBytes` at a time every `intervalMs`: a slow registry
   * that keeps delivering. `undefined` heals it.
   */
  trickleBlobs(pace: { chunkBytes: number; intervalMs: number } | undefined): void;
  /** Blob downloads stalled so far. */
  readonly stalledBlobs: number;
  /** The registry's own log (every request), for debugging a failed test. */
  readonly logPath: string;
}

export interface TestRegistries {
  plain: TestRegistry;
  /** Requires `username`/`password` (htpasswd, bcrypt). */
  secured: TestRegistry;
  username: string;
  password: string;
  /** The temporary directory holding storage, configs and logs; tests may put files in it. */
  dir: string;
  /** Kills the registries, closes the proxies, deletes the storage. */
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (bound to 0, then released). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

function commandExists(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`]).status === 0;
}

/**
 * For node:test's `skip`: false when `docker-registry` and `htpasswd` are installed. Under CI=true a
 * missing tool is a failure, never a skip.
 */
export function requireRegistryTools(): false | string {
  const missing = ['docker-registry', 'htpasswd'].filter((c) => !commandExists(c));
  if (missing.length === 0) return false;
  const message = `${missing.join(' and ')} not installed; run \`bash scripts/test-registry.sh\` (Debian packages docker-registry, apache2-utils)`;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${message}`);
  return message;
}

/** Starts the plain and the secured registry, each behind its proxy. */
export async function startTestRegistries(): Promise<TestRegistries> {
  const dir = await mkdtemp(path.join(tmpdir(), 'berth-registry-'));
  const storage = path.join(dir, 'storage');
  await mkdir(storage);
  const username = `berth-${randomBytes(3).toString('hex')}`;
  const password = `pw-${randomBytes(12).toString('hex')}`;
  const { stdout } = await exec('htpasswd', ['-Bbn', username, password]);
  await writeFile(path.join(dir, 'htpasswd'), stdout);

  const stops: Array<() => Promise<void>> = [];
  const stop = async (): Promise<void> => {
    for (const s of stops.splice(0).reverse()) await s().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const plain = await startOne(dir, 'plain', storage, undefined, stops);
    const secured = await startOne(dir, 'secured', storage, path.join(dir, 'htpasswd'), stops);
    return { plain, secured, username, password, dir, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function startOne(dir: string, name: string, storage: string, htpasswd: string | undefined, stops: Array<() => Promise<void>>): Promise<TestRegistry> {
  const registryPort = await freePort();
  const configPath = path.join(dir, `${name}.yml`);
  const config = [
    'version: 0.1',
    'log: { level: info }',
    `storage: { filesystem: { rootdirectory: ${storage} }, delete: { enabled: true } }`,
    `http: { addr: 127.0.0.1:${registryPort} }`,
    ...(htpasswd ? [`auth: { htpasswd: { realm: berth-test, path: ${htpasswd} } }`] : []),
  ].join('\n');
  await writeFile(configPath, `${config}\n`);
  const logPath = path.join(dir, `${name}.log`);
  const log = await open(logPath, 'w');
  const child: ChildProcess = spawn('docker-registry', ['serve', configPath], { stdio: ['ignore', log.fd, log.fd] });
  const exited = once(child, 'exit');
  stops.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([exited, delay(5000).then(() => child.kill('SIGKILL'))]);
    }
    await log.close();
  });

  // Ready when /v2/ answers (200, or 401 behind authentication).
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry (${name}) exited with ${child.exitCode}; see ${logPath}`);
    const status = await httpStatus(`http://127.0.0.1:${registryPort}/v2/`);
    if (status === 200 || status === 401) break;
    if (Date.now() > deadline) throw new Error(`docker-registry (${name}) did not answer on port ${registryPort}; see ${logPath}`);
    await delay(50);
  }

  const proxy = await startProxy(registryPort);
  stops.push(proxy.close);
  return {
    host: `127.0.0.1:${proxy.port}`,
    requests: proxy.requests,
    manifestRequests: (repository, reference) =>
      proxy.requests.filter(
        (r) => (r.method === 'GET' || r.method === 'HEAD') && r.path.startsWith(`/v2/${repository}/manifests/${reference ?? ''}`) && (reference === undefined || r.path === `/v2/${repository}/manifests/${reference}`),
      ).length,
    blobRequests: (repository) => proxy.requests.filter((r) => r.method === 'GET' && r.path.startsWith(`/v2/${repository}/blobs/`)).length,
    stallBlobs: (afterBytes) => (proxy.stallAfterBytes = afterBytes),
    trickleBlobs: (pace) => (proxy.trickle = pace),
    get stalledBlobs() {
      return proxy.stalled;
    },
    logPath,
  };
}

function httpStatus(url: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const request = http.get(url, (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    request.setTimeout(2000, () => request.destroy());
    request.on('error', () => resolve(undefined));
  });
}

interface Proxy {
  port: number;
  requests: RequestRecord[];
  stallAfterBytes: number | undefined;
  trickle: { chunkBytes: number; intervalMs: number } | undefined;
  stalled: number;
  close(): Promise<void>;
}

/** Forwards to the registry, counting requests; the Host header passes unchanged, so the registry's upload URLs point back here. */
async function startProxy(registryPort: number): Promise<Proxy> {
  const state: Proxy = { port: 0, requests: [], stallAfterBytes: undefined, trickle: undefined, stalled: 0, close: async () => undefined };
  const server = http.createServer((req, res) => {
    const record: RequestRecord = { method: req.method ?? 'GET', path: req.url ?? '/' };
    state.requests.push(record);
    const upstream = http.request(
      { host: '127.0.0.1', port: registryPort, method: req.method, path: req.url, headers: req.headers },
      (response) => {
        record.status = response.statusCode;
        res.writeHead(response.statusCode ?? 502, response.headers);
        const stallAfter = state.stallAfterBytes;
        const trickle = state.trickle;
        const isBlobDownload = record.method === 'GET' && /^\/v2\/.+\/blobs\/sha256:/.test(record.path) && response.statusCode === 200;
        if (trickle && isBlobDownload) {
          let pending = Buffer.alloc(0);
          let upstreamEnded = false;
          response.on('data', (chunk: Buffer) => (pending = Buffer.concat([pending, chunk])));
          response.on('end', () => (upstreamEnded = true));
          const timer = setInterval(() => {
            res.write(pending.subarray(0, trickle.chunkBytes));
            pending = pending.subarray(trickle.chunkBytes);
            if (upstreamEnded && pending.length === 0) {
              clearInterval(timer);
              res.end();
            }
          }, trickle.intervalMs);
          res.on('close', () => clearInterval(timer));
          return;
        }
        if (stallAfter === undefined || !isBlobDownload) {
          response.pipe(res);
          return;
        }
        state.stalled++;
        let sent = 0;
        response.on('data', (chunk: Buffer) => {
          if (sent >= stallAfter) return;
          const part = chunk.subarray(0, stallAfter - sent);
          sent += part.length;
          res.write(part);
          // The rest is never sent and the response never ends: the client sees a silent connection.
          if (sent >= stallAfter) response.destroy();
        });
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  state.port = (server.address() as AddressInfo).port;
  state.close = async () => {
    server.closeAllConnections();
    server.close();
    await once(server, 'close').catch(() => undefined);
  };
  return state;
}

/**
 * Builds an image of busybox plus `randomBytes` of fresh random data, so its layer is new to the
 * engine and every pull of it downloads. Labelled with the run's label; resolves with the image id.
 */
export async function buildUniqueImage(name: string, runId: string, sizeBytes = 4 * 1024 * 1024): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'berth-image-'));
  try {
    await mkdir(path.join(dir, 'bin'));
    await copyFile('/bin/busybox', path.join(dir, 'bin', 'busybox'));
    for (const applet of ['sh', 'true', 'sleep', 'cat', 'echo']) await symlink('busybox', path.join(dir, 'bin', applet));
    await writeFile(path.join(dir, 'payload'), randomBytes(sizeBytes));
    const tar = spawn('tar', ['-C', dir, '-c', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const importer = spawn(DOCKER_CLI, ['import', '--change', 'ENV PATH=/bin', '--change', `LABEL ${TEST_RUN_LABEL}=${runId}`, '-', name], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    tar.stdout.pipe(importer.stdin);
    let output = '';
    importer.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    importer.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const [code] = (await once(importer, 'exit')) as [number | null];
    if (code !== 0) throw new Error(`docker import ${name} failed: ${output.trim()}`);
    return output.trim();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Tags `source` as each target and pushes it (to the plain registry: no credentials). */
export async function pushImage(source: string, targets: readonly string[]): Promise<void> {
  for (const target of targets) {
    await exec(DOCKER_CLI, ['tag', source, target]);
    await exec(DOCKER_CLI, ['push', target], { maxBuffer: 16 * 1024 * 1024 });
  }
}

/** Removes every local image carrying the run's label (all their names), tolerating absent ones. */
export async function removeRunImages(engine: Pick<Engine, 'listImages' | 'removeImage'>, runId: string): Promise<void> {
  const images = await engine.listImages({ labels: [`${TEST_RUN_LABEL}=${runId}`] });
  for (const image of images) await engine.removeImage(image.id, { force: true });
}

/** Removes local names, leaving images that other names still point to. */
export async function untag(engine: Pick<Engine, 'removeImage'>, names: readonly string[]): Promise<void> {
  for (const name of names) await engine.removeImage(name);
}
