/**
 * Fixtures for tests against the real engine: the test image, run ids with labels and cleanup,
 * the engine requirement (fail under CI, skip locally) and helpers to create containers directly.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { Engine, type EngineOptions } from '../../src/engine/engine.js';
import { engineOptionsFromEnv } from '../../src/engine/connect.js';
import type { ContainerCreateBody, HostConfigBody } from '../../src/engine/types.js';
import { messageOf } from '../../src/common/errors.js';

/**
 * The engine the tests run against: DOCKER_HOST when it is set (scripts/test-podman-suite.sh sets
 * Podman's socket, unix:///run/podman/podman.sock), else the shared Docker at /var/run/docker.sock.
 * The CLIs and agents a test spawns inherit DOCKER_HOST, so they use the same engine.
 */
export const TEST_ENGINE_OPTIONS: Readonly<EngineOptions> = Object.freeze(engineOptionsFromEnv(process.env));

/** The test engine's unix socket (the tests that proxy or bind it need one). */
export const TEST_ENGINE_SOCKET: string = TEST_ENGINE_OPTIONS.socketPath ?? '/var/run/docker.sock';

/** Which engine the tests run against: `podman` when the test engine's socket is Podman's (set by the Podman suite), else `docker`. */
export const TEST_ENGINE_KIND: 'docker' | 'podman' = process.env.BERTH_TEST_ENGINE === 'podman' ? 'podman' : 'docker';

/** Where scripts/test-podman.sh starts Podman's Docker-compatible API. */
export const PODMAN_SOCKET = '/run/podman/podman.sock';

/**
 * For node:test's `skip` in files that speak to Podman directly (beside Docker): false when Podman
 * answers at PODMAN_SOCKET. Under CI=true a Podman that does not answer is a failure, never a skip.
 */
export async function requirePodman(): Promise<false | string> {
  const probe = await probeEngine({ socketPath: PODMAN_SOCKET });
  if (probe.ok) return false;
  const message = `no Podman answers at ${PODMAN_SOCKET} (${probe.reason}); run \`bash scripts/test-podman.sh\` as root`;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${message}`);
  return message;
}

/** An Engine on the test engine (TEST_ENGINE_OPTIONS), with `options` over it. */
export function testEngine(options: EngineOptions = {}): Engine {
  return new Engine({ ...TEST_ENGINE_OPTIONS, ...options });
}

/** Built by scripts/test-engine.sh from a static busybox: sh, cat, sleep, echo, dd, … */
export const TEST_IMAGE = 'berth-test/busybox:latest';

/**
 * The label every test puts on what it creates. Not under `io.berth.`, which is berth's own
 * prefix (user labels may not use it), so tests exercise labels the way a user would.
 */
export const TEST_RUN_LABEL = 'berth-test.run';

export interface TestRun {
  /** Unique per run: safe to embed in container names. */
  readonly id: string;
  /** Put these on everything the test creates. */
  readonly labels: Readonly<Record<string, string>>;
  /** The engine-side filter that finds what this run created: `berth-test.run=<id>`. */
  readonly labelFilter: string;
  /** A unique container name for this run: `berth-test-<id>-<suffix>`. */
  name(suffix?: string): string;
  /** Force-removes every container carrying this run's label. Safe to call more than once. */
  cleanup(): Promise<void>;
  /** The names of the containers this run left (none, once everything it made was removed). */
  leftovers(): Promise<string[]>;
}

let nameCounter = 0;

/** A unique run id, its labels and a cleanup that removes what the run created (through `engine`). */
export function testRun(engine: Engine = testEngine()): TestRun {
  const id = `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  const labelFilter = `${TEST_RUN_LABEL}=${id}`;
  return {
    id,
    labels: Object.freeze({ [TEST_RUN_LABEL]: id }),
    labelFilter,
    name: (suffix = String(++nameCounter)) => `berth-test-${id}-${suffix}`,
    cleanup: async () => {
      const leftovers = await engine.listContainers({ all: true, labels: [labelFilter] });
      await Promise.all(leftovers.map((c) => engine.removeContainer(c.id)));
    },
    leftovers: async () => (await engine.listContainers({ all: true, labels: [labelFilter] })).map((c) => c.names[0] ?? c.id),
  };
}

/** Whether an engine answers a ping within `timeoutMs`, and why not. */
export async function probeEngine(options: EngineOptions = TEST_ENGINE_OPTIONS, timeoutMs = 5000): Promise<{ ok: true } | { ok: false; reason: string }> {
  const engine = new Engine({ ...options, readAttempts: 1 });
  try {
    await engine.ping({ deadlineMs: timeoutMs });
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: messageOf(error) };
  }
}

/**
 * Checks that an engine answers, for use as node:test's `skip` option:
 * `describe('…', { skip: await requireEngine() }, …)`. Resolves to false when the engine answers.
 * Under CI=true a missing engine is a failure, never a skip: it throws. Locally it resolves to a
 * message saying how to start one, and the suite is skipped.
 */
export async function requireEngine(options: EngineOptions = TEST_ENGINE_OPTIONS): Promise<false | string> {
  const probe = await probeEngine(options);
  if (probe.ok) return false;
  const where = options.host === undefined ? (options.socketPath ?? '/var/run/docker.sock') : `${options.host}:${options.port ?? 2375}`;
  const setUp = TEST_ENGINE_KIND === 'podman' ? 'bash scripts/test-podman.sh' : 'bash scripts/test-engine.sh';
  const message = `no ${TEST_ENGINE_KIND === 'podman' ? 'Podman' : 'Docker'} engine answers at ${where} (${probe.reason}); run \`${setUp}\``;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${message}`);
  return message;
}

export interface TestContainerOptions {
  cmd: string[];
  /** Default: a fresh name from the run. */
  name?: string;
  /** Default TEST_IMAGE. */
  image?: string;
  env?: string[];
  tty?: boolean;
  /** Opens stdin (OpenStdin + StdinOnce + AttachStdin), for attach with stdin. */
  stdin?: boolean;
  /** Extra labels beside the run's. */
  labels?: Record<string, string>;
  /** Merged over `{ NetworkMode: 'none' }`: tests need no network, and bridge setup is slow. */
  hostConfig?: HostConfigBody;
}

/** The create body for a test container: the run's labels, no network, streams attachable. */
export function testContainerBody(run: TestRun, options: TestContainerOptions): ContainerCreateBody {
  const stdin = options.stdin ?? false;
  return {
    Image: options.image ?? TEST_IMAGE,
    Cmd: options.cmd,
    Env: options.env,
    Labels: { ...(options.labels ?? {}), ...run.labels },
    Tty: options.tty ?? false,
    OpenStdin: stdin,
    StdinOnce: stdin,
    AttachStdin: stdin,
    AttachStdout: true,
    AttachStderr: true,
    HostConfig: { NetworkMode: 'none', ...(options.hostConfig ?? {}) },
  };
}

/** Creates (but does not start) a labelled test container; resolves with its id. */
export async function createTestContainer(engine: Engine, run: TestRun, options: TestContainerOptions): Promise<string> {
  return engine.createContainer(options.name ?? run.name(), testContainerBody(run, options));
}

/** Creates and starts a labelled test container; resolves with its id. */
export async function startTestContainer(engine: Engine, run: TestRun, options: TestContainerOptions): Promise<string> {
  const id = await createTestContainer(engine, run, options);
  await engine.startContainer(id);
  return id;
}

/**
 * Polls `check` until it returns something other than undefined, or fails after `timeoutMs`.
 * For states the engine reaches asynchronously and announces no event for; never a bare sleep.
 */
export async function pollUntil<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  { timeoutMs = 10_000, intervalMs = 25 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(intervalMs);
  }
}

/** Reads a stream to its end as UTF-8 text. */
export async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks).toString('utf8');
}
