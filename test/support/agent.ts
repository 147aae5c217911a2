/**
 * Fixtures for tests of the agent as a user runs it: the real CLI (from source, see BERTH_CLI) run to its
 * end, a real `berth agent` process on a temporary data directory, and short-lived temporary
 * directories. Builds on the engine fixtures (pollUntil) in ./engine.ts.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildAgent, TOKEN_FILE_NAME, type AgentRuntime } from '../../src/agent/agent.js';
import { AgentClient, type TaskView } from '../../src/agent/client.js';
import type { TaskState } from '../../src/state/tasks.js';
import type { AgentConfigInput } from '../../src/agent/config.js';
import { serveAgent, type ServingAgent } from '../../src/agent/http/serve.js';
import type { ErrorCode } from '../../src/common/errors.js';
import { silentLogger, type Logger } from '../../src/common/logger.js';
import type { Engine } from '../../src/engine/engine.js';
import { pollUntil, testRun, type TestRun } from './engine.js';
import { FaultProxy } from './fault-proxy.js';
import { ensureTestDatabase, testPgUrl } from './postgres.js';
import { openStore, STORE_FILE_NAME, type Store } from '../../src/state/store.js';
import { openPostgresStore } from '../../src/state/postgres/backend.js';

/**
 * Node's arguments that run the CLI from its TypeScript source, as `node bin/berth.js` does in a
 * checkout without a build. Not bin/berth.js itself: it prefers dist/ once a build exists (npm run
 * bench makes one), and the tests would then test a stale build.
 */
export const BERTH_CLI: readonly string[] = Object.freeze([
  // tsx resolved here, so that a child with another working directory finds it too.
  '--import',
  import.meta.resolve('tsx'),
  // As bin/berth.js's shebang: node must not take the CLI's own --env-file for its option.
  '--',
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
export async function runBerth(args: string[], env: NodeJS.ProcessEnv, options: { timeoutMs?: number } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [...BERTH_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  // A command that should end but does not (an agent that should have refused its config, a follow
  // that never ends) fails its test, naming it, rather than holding the file until the runner's timeout.
  const timeoutMs = options.timeoutMs ?? 180_000;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  try {
    const [code] = (await once(child, 'close')) as [number | null];
    if (timedOut) throw new Error(`berth ${args.join(' ')} did not end within ${timeoutMs / 1000} s; stderr: ${stderr}`);
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
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

/** `berth inspect <id> --json`, which prints an array (as docker inspect): the one task in it. */
export async function berthInspect<T>(dataDir: string, taskId: string): Promise<T> {
  const tasks = await berthJson<T[]>(dataDir, ['inspect', taskId]);
  assert.equal(tasks.length, 1, `berth inspect ${taskId} printed ${tasks.length} tasks`);
  return tasks[0]!;
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

/** A client of a running agent process, with the token from its data directory. Close it when done. */
export async function agentClientOf(agent: Pick<RunningAgent, 'dataDir' | 'socketPath'>): Promise<AgentClient> {
  const token = (await readFile(path.join(agent.dataDir, TOKEN_FILE_NAME), 'utf8')).trim();
  return AgentClient.connect({ host: `unix://${agent.socketPath}`, token });
}

/** `berth submit -l <label> …args` against the agent of `dataDir`; resolves with the printed task id. */
export async function submitViaCli(dataDir: string, label: string, args: readonly string[]): Promise<string> {
  const result = await berth(dataDir, ['submit', '-l', label, ...args]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.trim();
}

/** Polls a task through the agent's API (for at most a minute) until it is in one of `states`. */
export async function waitForTaskState(client: AgentClient, taskId: string, states: readonly TaskState[]): Promise<TaskView> {
  return pollUntil(
    `task ${taskId} to be ${states.join(' or ')}`,
    async () => {
      const task = await client.get(taskId);
      return states.includes(task.state) ? task : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 100 },
  );
}

/** A long-running CLI command (`logs -f`, `events`) against the agent of `dataDir`, read as it goes; `interrupt` sends SIGINT. */
export function spawnBerth(dataDir: string, args: readonly string[]): { stdout: () => string; stderr: () => string; closed: Promise<number | null>; interrupt: () => void } {
  const child = spawn(process.execPath, [...BERTH_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv({ BERTH_DATA_DIR: dataDir }) });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const closed = once(child, 'close').then(([code]) => code as number | null);
  return { stdout: () => stdout, stderr: () => stderr, closed, interrupt: () => void child.kill('SIGINT') };
}

/** Writes an agent configuration file, `<dir>/config.yaml`, and resolves with its path (for `--config`). */
export async function writeAgentConfig(dir: string, yaml: string): Promise<string> {
  const file = path.join(dir, 'config.yaml');
  await writeFile(file, yaml);
  return file;
}

/**
 * The agent suite's cluster-mode run (scripts/test-cluster-suite.sh sets BERTH_TEST_CLUSTER_SUITE=1):
 * every agent a test starts is then a one-node cluster over a PostgreSQL database of its own, one per
 * data directory (so an agent restarted on the directory finds its cluster again), and each submit
 * goes through the cluster's queue, claimer and report outbox while the test sees what it sees of a
 * single agent. The lease is long so that no restart in a test outlasts it; the address is never
 * dialled (a one-node cluster forwards nothing). The agent keeps its own records in that database
 * too (`state.postgres`, schema berth_agent), so the suite also proves the PostgreSQL store.
 */
/** Whether this is the agent suite's cluster-mode run (a test whose assertions differ there, such as ps's NODE column, asks). */
export const CLUSTER_SUITE = process.env.BERTH_TEST_CLUSTER_SUITE === '1';

async function clusterSuiteConfig(dataDir: string): Promise<{ postgres: string; address: string; lease: string; heartbeat: string } | undefined> {
  if (!CLUSTER_SUITE) return undefined;
  return { postgres: await ensureTestDatabase(suiteDatabaseName(dataDir)), address: 'http://127.0.0.1:9', lease: '10m', heartbeat: '1s' };
}

/** The suite's database of the agent on `dataDir`: one per data directory. */
function suiteDatabaseName(dataDir: string): string {
  return `berth_suite_${createHash('sha256').update(path.resolve(dataDir)).digest('hex').slice(0, 20)}`;
}

/** The agent's records in the suite's database (see clusterSuiteConfig). */
const SUITE_STATE_SCHEMA = 'berth_agent';

/**
 * The store the agent on `dataDir` keeps its records in, for a test that reads or prepares them
 * directly: its SQLite file, or in the cluster suite its schema of the suite's database.
 */
export function openAgentStoreIn(dataDir: string): Store {
  if (!CLUSTER_SUITE) return openStore(path.join(dataDir, STORE_FILE_NAME));
  return openPostgresStore({ url: testPgUrl(suiteDatabaseName(dataDir)), schema: SUITE_STATE_SCHEMA });
}

export interface RunningAgent {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly dataDir: string;
  readonly socketPath: string;
  /** The JSON log lines the agent wrote so far. */
  logLines(): Array<Record<string, unknown>>;
  stderr(): string;
  /** The agent's last lines of output (stdout and stderr as they came), for a failure's message. */
  tail(lines?: number): string;
  /** Resolves with the exit code (null when a signal ended it). */
  readonly exited: Promise<number | null>;
  /** Whether it has exited. */
  readonly hasExited: boolean;
  /** Sends a signal and waits for the exit; SIGKILL after 20 s. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface AgentProcessOptions {
  /** What node runs before `agent`: the CLI from source (BERTH_CLI) unless given, e.g. `[bin/berth.js]` for a build. */
  command?: readonly string[];
  /** How long it may take to answer /healthz with 200 (the engine answers, recovery is done). Default 60 s. */
  readyTimeoutMs?: number;
  /** Aborting stops the wait for readiness, and the agent. */
  signal?: AbortSignal;
  /** Told the child process as soon as it is spawned, before readiness: for a caller that must kill it on an abrupt exit. */
  onSpawn?: (child: ChildProcess) => void;
}

/**
 * Starts `berth agent --data-dir <dataDir> …args` as a child process with no BERTH_* variable of the
 * developer's, and waits (bounded) until its socket answers /healthz with 200. Rejects with its
 * output when it exits first. Shared by the agent tests and bench/agent.ts.
 */
export async function startAgentProcess(dataDir: string, args: readonly string[] = [], options: AgentProcessOptions = {}): Promise<RunningAgent> {
  const command = options.command ?? BERTH_CLI;
  const suite = await clusterSuiteConfig(dataDir);
  const suiteEnv: Record<string, string> =
    suite === undefined
      ? {}
      : {
          BERTH_CLUSTER_POSTGRES: suite.postgres,
          BERTH_CLUSTER_ADDRESS: suite.address,
          BERTH_CLUSTER_LEASE: suite.lease,
          BERTH_CLUSTER_HEARTBEAT: suite.heartbeat,
          BERTH_STATE_POSTGRES: suite.postgres,
          BERTH_STATE_SCHEMA: SUITE_STATE_SCHEMA,
        };
  const child = spawn(process.execPath, [...command, 'agent', '--data-dir', dataDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv(suiteEnv) });
  if (child.pid === undefined) throw new Error('the agent process did not start');
  options.onSpawn?.(child);
  let stdout = '';
  let stderr = '';
  const lines: string[] = [];
  // The last lines of both streams as they came (a chunk may end mid-line: close enough for a message).
  const keepTail = (chunk: string): void => {
    lines.push(...chunk.split('\n').filter((line) => line !== ''));
    if (lines.length > 200) lines.splice(0, lines.length - 200);
  };
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    keepTail(d);
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    keepTail(d);
  });
  let exitCode: number | null | undefined;
  const exited = once(child, 'exit').then(([code]) => (exitCode = code as number | null));
  const socketPath = path.join(dataDir, 'agent.sock');
  const agent: RunningAgent = {
    child,
    pid: child.pid,
    dataDir,
    socketPath,
    logLines: () =>
      stdout
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as Record<string, unknown>),
    stderr: () => stderr,
    tail: (count = 10) => lines.slice(-count).join('\n'),
    exited,
    get hasExited() {
      return exitCode !== undefined;
    },
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
  try {
    await pollUntil(
      'the agent to answer /healthz',
      async () => {
        options.signal?.throwIfAborted();
        if (exitCode !== undefined) throw new Error(`the agent exited with ${exitCode}: ${stderr}${stdout}`);
        const health = await httpGet(socketPath, '/healthz').catch(() => undefined);
        return health?.status === 200 ? true : undefined;
      },
      { timeoutMs: options.readyTimeoutMs ?? 60_000, intervalMs: 50 },
    );
  } catch (error) {
    // Not ready: the caller never gets the agent to stop, so it is stopped here.
    await agent.stop('SIGKILL');
    throw error;
  }
  return agent;
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
      const agent = await startAgentProcess(dataDir, args);
      agents.push(agent);
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

/**
 * What an agent test file works in: its run on `engine` (labels, clean-up) and its temporary
 * directories and its agent processes, all cleaned up after the file's last test, the agents first
 * (registers a node:test `after` hook).
 */
export function agentTestFile(engine: Engine): { run: TestRun; dirs: TempDirs; agents: AgentProcesses } {
  const run = testRun(engine);
  const dirs = tempDirs();
  const agents = agentProcesses();
  after(async () => {
    // The agents first: a live agent would record its tasks lost and write to its data directory
    // while they are removed under it.
    await agents.killAll();
    await run.cleanup();
    await dirs.removeAll();
  });
  return { run, dirs, agents };
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
  /** Closes the client, the API and the agent (startServedAgent's: after waiting at most 30 s for its tasks, and removes the data directory). */
  close(): Promise<void>;
}

/** An in-process agent's configuration besides its data directory, socket and engine; engine deadlines as the configuration spells them. */
export type AgentFlags = Omit<AgentConfigInput, 'dataDir' | 'socketPath' | 'engine'> & { engineDeadlines?: { readTimeout?: string; writeTimeout?: string } };

export interface ServeAgentInOptions {
  /** The agent's logger; silent unless given. */
  logger?: Logger;
  /** Told every error code the agent counts, from before its start, so that what recovery meets is counted too. */
  onError?: (code: ErrorCode) => void;
}

/**
 * Builds, serves and starts an agent on `dataDir` (kept on close, so that a test can start another
 * agent on it) whose engine is at `engineSocket` (a fault proxy's, or an engine of the test's own);
 * `flags` adds configuration.
 */
export async function serveAgentIn(dataDir: string, engineSocket: string, flags: AgentFlags = {}, options: ServeAgentInOptions = {}): Promise<ServedAgent> {
  const { engineDeadlines, ...rest } = flags;
  const suite = rest.cluster === undefined ? await clusterSuiteConfig(dataDir) : undefined;
  const runtime = await buildAgent(
    { flags: { dataDir, socketPath: path.join(dataDir, 'agent.sock'), engine: { socket: engineSocket, ...engineDeadlines }, ...rest, ...(suite ? { cluster: suite, state: { postgres: suite.postgres, schema: SUITE_STATE_SCHEMA } } : {}) }, host: testHost(dataDir) },
    options.logger ?? silentLogger,
  );
  if (options.onError) runtime.onError(options.onError);
  const serving = await serveAgent(runtime, { processMetrics: false });
  await runtime.start();
  runtime.joinCluster(undefined);
  const client = AgentClient.connect({ host: `unix://${serving.socketPath}`, token: runtime.token });
  return {
    dataDir,
    runtime,
    serving,
    client,
    async close() {
      client.close();
      await serving.close();
      await runtime.close();
    },
  };
}

/**
 * Builds, serves and starts an agent on a fresh data directory whose engine is at `engineSocket`
 * (a fault proxy's, or an engine of the test's own); `flags` adds configuration.
 */
export async function startServedAgent(engineSocket: string, flags: AgentFlags = {}): Promise<ServedAgent> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-agent-'));
  const agent = await serveAgentIn(dataDir, engineSocket, flags);
  return {
    ...agent,
    async close() {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([agent.runtime.supervisor.idle(), new Promise<void>((resolve) => (timer = setTimeout(resolve, 30_000)))]);
      clearTimeout(timer);
      await agent.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** The texts of a task's recorded output, in order, read through the agent's API. */
export async function taskOutput(client: AgentClient, taskId: string): Promise<string[]> {
  const texts: string[] = [];
  for await (const record of client.logs(taskId)) texts.push(record.text);
  return texts;
}

/** One case of an agent behind a fault proxy on the real engine (see withAgentBehindProxy). */
export interface ProxiedAgentCase<A extends ServedAgent> {
  readonly proxy: FaultProxy;
  /** The agent's data directory: every agent of the case starts on it, so a second one is a restart. */
  readonly dataDir: string;
  /** A directory the case's tasks may bind (the agent's policy must allow it: `start` is told it). */
  readonly bindDir: string;
  /** Starts an agent on `dataDir` behind the proxy; it is closed at the end of the case unless the case closed it. */
  startAgent(): Promise<A>;
}

/**
 * Runs one case against a fresh fault proxy, with a fresh data directory and a directory to bind
 * (from `dirs`, named after `name`); `start` starts an agent on them. Afterwards, whether the case
 * passed or not, closes every agent it left open and then the proxy.
 */
export async function withAgentBehindProxy<A extends ServedAgent>(
  dirs: TempDirs,
  name: string,
  start: (proxy: FaultProxy, dataDir: string, bindDir: string) => Promise<A>,
  body: (tested: ProxiedAgentCase<A>) => Promise<void>,
): Promise<void> {
  const proxy = await FaultProxy.start();
  const open = new Set<ServedAgent>();
  try {
    const dataDir = await dirs.make(`berth-${name}-`);
    const bindDir = await dirs.make(`berth-${name}-bind-`);
    await body({
      proxy,
      dataDir,
      bindDir,
      async startAgent() {
        const agent = await start(proxy, dataDir, bindDir);
        const tracked: A = {
          ...agent,
          async close() {
            open.delete(tracked);
            await agent.close();
          },
        };
        open.add(tracked);
        return tracked;
      },
    });
  } finally {
    for (const agent of open) await agent.close();
    await proxy.close();
  }
}
