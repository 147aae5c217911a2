/**
 * Fixtures for tests of the agent as a user runs it: the real CLI (from source, see BERTH_CLI) run to its
 * end, a real `berth agent` process on a temporary data directory, and short-lived temporary
 * directories. Builds on the engine fixtures (pollUntil) in ./engine.ts.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildAgent, type AgentRuntime } from '../../src/agent/agent.js';
import { AgentClient } from '../../src/agent/client.js';
import type { AgentConfigInput } from '../../src/agent/config.js';
import { serveAgent, type ServingAgent } from '../../src/agent/serve.js';
import { silentLogger } from '../../src/common/logger.js';
import { pollUntil } from './engine.js';

/**
 * Node's arguments that run the CLI from its TypeScript source, as `node bin/berth.js` does in a
 * checkout without a build. Not bin/berth.js itself: it prefers dist/ once a build exists (npm run
 * bench makes one), and the tests would then test a stale build.
 */
export const BERTH_CLI: readonly string[] = Object.freeze([
  // tsx resolved here, so that a child with another working directory finds it too.
  '--import',
  import.meta.resolve('tsx'),
  fileURLToPath(new URL('../../src/cli/entry.ts', import.meta.url)),
]);

/** The environment without any BERTH_* variable of the developer's, so that only the test's apply. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('BERTH_')) env[key] = value;
  return { ...env, ...extra };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI with `args` in exactly the environment `env`, to its end, collecting its output. */
export async function runBerth(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  const child = spawn(process.execPath, [...BERTH_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

/** Runs the CLI against the agent of `dataDir` (BERTH_DATA_DIR), to its end, with no other BERTH_* variable than `env`'s. */
export function berth(dataDir: string, args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return runBerth(args, cleanEnv({ BERTH_DATA_DIR: dataDir, ...env }));
}

/** Runs the CLI and parses its --json output; fails with its stderr when it did not exit 0. */
export async function berthJson<T>(dataDir: string, args: string[]): Promise<T> {
  const result = await berth(dataDir, [...args, '--json']);
  assert.equal(result.code, 0, `berth ${args.join(' ')} failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

/** GET on the agent's unix socket, with or without a token. */
export function httpGet(socketPath: string, urlPath: string, token?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: urlPath, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('error', reject);
    req.end();
  });
}

/** Writes an agent configuration file, `<dir>/config.yaml`, and resolves with its path (for `--config`). */
export async function writeAgentConfig(dir: string, yaml: string): Promise<string> {
  const file = path.join(dir, 'config.yaml');
  await writeFile(file, yaml);
  return file;
}

export interface RunningAgent {
  readonly child: ChildProcess;
  readonly dataDir: string;
  readonly socketPath: string;
  /** The JSON log lines the agent wrote so far. */
  logLines(): Array<Record<string, unknown>>;
  stderr(): string;
  readonly exited: Promise<number | null>;
  /** Sends a signal and waits for the exit; SIGKILL after 20 s. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface AgentProcesses {
  /** Starts `berth agent --data-dir <dataDir> …args` and waits (bounded) until its socket answers /healthz. */
  start(dataDir: string, args?: string[]): Promise<RunningAgent>;
  /** Kills (SIGKILL) every agent started here that is still running and waits for its exit. For `after`. */
  killAll(): Promise<void>;
}

/** Real agent processes, each remembered so that `killAll` leaves none behind. */
export function agentProcesses(): AgentProcesses {
  const agents: RunningAgent[] = [];
  return {
    async start(dataDir, args = []) {
      const child = spawn(process.execPath, [...BERTH_CLI, 'agent', '--data-dir', dataDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      let exitCode: number | null | undefined;
      const exited = once(child, 'exit').then(([code]) => (exitCode = code as number | null));
      const socketPath = path.join(dataDir, 'agent.sock');
      const agent: RunningAgent = {
        child,
        dataDir,
        socketPath,
        logLines: () =>
          stdout
            .split('\n')
            .filter((line) => line.startsWith('{'))
            .map((line) => JSON.parse(line) as Record<string, unknown>),
        stderr: () => stderr,
        exited,
        async stop(signal = 'SIGTERM') {
          if (exitCode !== undefined) return exitCode;
          child.kill(signal);
          const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
          try {
            return await exited;
          } finally {
            clearTimeout(timer);
          }
        },
      };
      agents.push(agent);
      await pollUntil(
        'the agent to answer /healthz',
        async () => {
          if (exitCode !== undefined) throw new Error(`the agent exited with ${exitCode}: ${stderr}${stdout}`);
          const health = await httpGet(socketPath, '/healthz').catch(() => undefined);
          return health?.status === 200 ? true : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 50 },
      );
      return agent;
    },
    async killAll() {
      await Promise.all(agents.map((agent) => agent.stop('SIGKILL')));
    },
  };
}

export interface TempDirs {
  /** A fresh directory under the system's temporary directory, named `<prefix>XXXXXX`. */
  make(prefix: string): Promise<string>;
  /** Removes every directory made here. For `after`. */
  removeAll(): Promise<void>;
}

/** Temporary directories with short paths (a unix socket path is limited to 107 bytes), removed together. */
export function tempDirs(): TempDirs {
  const dirs: string[] = [];
  return {
    async make(prefix) {
      const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
      dirs.push(dir);
      return dir;
    },
    async removeAll() {
      await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
    },
  };
}

/** The host facts an in-process agent's configuration reads (ConfigSources.host), with `dataDir` as home. */
export function testHost(dataDir: string): { uid: number; homedir: string; totalMemoryBytes: number; cpuCount: number } {
  return { uid: process.getuid?.() ?? 1000, homedir: dataDir, totalMemoryBytes: os.totalmem(), cpuCount: os.cpus().length };
}

/** An in-process agent serving its API, with a client: for tests that drive the agent through its real socket. */
export interface ServedAgent {
  readonly dataDir: string;
  readonly runtime: AgentRuntime;
  readonly serving: ServingAgent;
  readonly client: AgentClient;
  /** Waits (at most 30 s) for its tasks, then closes the client, the API and the agent, and removes the data directory. */
  close(): Promise<void>;
}

/**
 * Builds, serves and starts an agent on a fresh data directory whose engine is at `engineSocket`
 * (a fault proxy's, or an engine of the test's own); `flags` adds configuration.
 */
export async function startServedAgent(engineSocket: string, flags: Omit<AgentConfigInput, 'dataDir' | 'socketPath' | 'engine'> = {}): Promise<ServedAgent> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-agent-'));
  const runtime = await buildAgent({ flags: { dataDir, socketPath: path.join(dataDir, 'agent.sock'), engine: { socket: engineSocket }, ...flags }, host: testHost(dataDir) }, silentLogger);
  const serving = await serveAgent(runtime, { processMetrics: false });
  await runtime.start();
  const client = AgentClient.connect({ host: `unix://${serving.socketPath}`, token: runtime.token });
  return {
    dataDir,
    runtime,
    serving,
    client,
    async close() {
      client.close();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([runtime.supervisor.idle(), new Promise<void>((resolve) => (timer = setTimeout(resolve, 30_000)))]);
      clearTimeout(timer);
      await serving.close();
      await runtime.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
