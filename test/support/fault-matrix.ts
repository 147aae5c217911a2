/**
 * The fault matrix of issue 9: for each kind of engine call and each fault, one task run through
 * berth against the real engine behind the fault proxy. Every case asserts that the fault was
 * injected, the task's end state and exit code, its output exactly once, that no container with
 * the run's label is left (seen on the real engine, not through the proxy), and that the run
 * finished within a generous bound (a hang fails the case; the bound is not a timing assertion).
 *
 * Calls the plain task path makes by itself (create, attach, start, wait, inspect of the OOM flag,
 * remove) run a task to its end with `runToEnd`; the others are driven through the path that makes
 * them: stop through `handle.stop()`, kill through `handle.kill('SIGKILL')` of a running task, exec
 * through `handle.exec`, events through a start that waits for health, pull through a registry
 * image with pull policy `always`, and the engine's log through the agent, which reads output from
 * it. The same task-path calls are also made by `berth run` processes (`describeCliMatrix`), which
 * must exit with the task's code and never hang. The test files
 * (test/integration/faults-matrix-*.test.ts) each register a slice of the table, so that the slices
 * run in parallel and each file stays short.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Writable, type Readable } from 'node:stream';
import { after, afterEach, before, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { Engine, type EngineDeadlines } from '../../src/engine/engine.js';
import { ImageCoordinator } from '../../src/images/index.js';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import type { EndState } from '../../src/tasks/end-state.js';
import { runToEnd } from '../../src/tasks/run.js';
import { BERTH_CLI, cleanEnv, startServedAgent, type ServedAgent } from './agent.js';
import { pollUntil, readAll, requireEngine, TEST_IMAGE, TEST_RUN_LABEL, testEngine, testRun, type TestRun } from './engine.js';
import { FaultProxy, type Fault, type FaultRule } from './fault-proxy.js';
import { buildUniqueImage, pushImage, removeRunImages, requireRegistryTools, startTestRegistries, untag, type TestRegistries } from './registry.js';
import { hasEnded } from '../../src/state/tasks.js';

export type CallKind = 'create' | 'start' | 'attach' | 'wait' | 'inspect' | 'logs' | 'stop' | 'kill' | 'remove' | 'pull' | 'events' | 'exec';
export type FaultName = '500-after' | 'drop-after' | '503-before' | 'never-answers';

export const FAULT_NAMES: readonly FaultName[] = ['500-after', 'drop-after', '503-before', 'never-answers'];

const FAULT_WORDS: Readonly<Record<FaultName, string>> = {
  '500-after': 'a 500 after the engine acted',
  'drop-after': 'a connection dropped after the engine acted',
  '503-before': 'a 503 before the engine saw it',
  'never-answers': 'a call that never answers',
};

/** A delay no test outlives: the request is held until its client gives up (or the proxy closes). */
export const NEVER_MS = 3_600_000;

interface CallTarget {
  method: string;
  path: RegExp;
  /**
   * The engine's answer is a stream that does not end while the task runs: "after the engine acted"
   * is when its response head arrives (it has subscribed), not when the stream ends.
   */
  actsOnHead?: boolean;
}

/** The engine request each kind of call is, as the proxy sees it (path without version and query). */
export const CALLS: Readonly<Record<CallKind, CallTarget>> = {
  create: { method: 'POST', path: /^\/containers\/create$/ },
  start: { method: 'POST', path: /^\/containers\/[^/]+\/start$/ },
  attach: { method: 'POST', path: /^\/containers\/[^/]+\/attach$/ },
  wait: { method: 'POST', path: /^\/containers\/[^/]+\/wait$/ },
  inspect: { method: 'GET', path: /^\/containers\/[^/]+\/json$/ },
  logs: { method: 'GET', path: /^\/containers\/[^/]+\/logs$/ },
  stop: { method: 'POST', path: /^\/containers\/[^/]+\/stop$/ },
  kill: { method: 'POST', path: /^\/containers\/[^/]+\/kill$/ },
  remove: { method: 'DELETE', path: /^\/containers\/[^/]+$/ },
  pull: { method: 'POST', path: /^\/images\/create$/ },
  events: { method: 'GET', path: /^\/events$/, actsOnHead: true },
  // The exec's start is where the command runs and its output flows.
  exec: { method: 'POST', path: /^\/exec\/[^/]+\/start$/ },
};

/** The proxy fault for a named fault on a kind of call. */
export function faultFor(fault: FaultName, call: CallKind): Fault {
  const at = CALLS[call].actsOnHead ? 'head' : 'end';
  switch (fault) {
    case '500-after':
      return { kind: 'error500AfterForward', at };
    case 'drop-after':
      return { kind: 'dropAfterForward', at };
    case '503-before':
      return { kind: 'error503Before' };
    case 'never-answers':
      return { kind: 'delay', delayMs: NEVER_MS };
  }
}

/** A hang is a failure: each case must finish well within this (deadlines below are seconds). */
export const CASE_BOUND_MS = 90_000;

/** Short engine deadlines, so that a call that never answers costs seconds, not minutes. */
export const SHORT_DEADLINES: Readonly<EngineDeadlines> = Object.freeze({ readMs: 2000, writeMs: 3000, stopExtraMs: 3000 });

const FAST_RETRY = { attempts: 5, initialDelayMs: 20, maxDelayMs: 300 };

/** How many numbered lines every task prints, and the exit code it ends with. */
export const LINE_COUNT = 20;
export const EXIT_CODE = 3;

export function numberedLines(count: number, prefix = 'line'): string[] {
  return Array.from({ length: count }, (_, i) => `${prefix}-${i + 1}`);
}

/** A shell fragment printing `<prefix>-1` … `<prefix>-<count>` on stdout. */
export function printLines(count: number, prefix = 'line'): string {
  return `i=1; while [ $i -le ${count} ]; do echo ${prefix}-$i; i=$((i+1)); done`;
}

/** Asserts that `text` holds exactly `expected`, each line once, in order; names what is missing or repeated. */
export function assertOutputOnce(text: string, expected: readonly string[], what: string): void {
  const lines = text.split('\n').filter((line) => line !== '');
  const counts = new Map<string, number>();
  for (const line of lines) counts.set(line, (counts.get(line) ?? 0) + 1);
  const missing = expected.filter((line) => !counts.has(line));
  const repeated = [...counts].filter(([, n]) => n > 1).map(([line, n]) => `${line}×${n}`);
  assert.deepEqual(lines, expected, `${what}: ${missing.length} missing [${missing.join(' ')}], repeated [${repeated.join(' ')}]`);
}

/** Resolves with `work`, or fails once `boundMs` passed: a run that never finishes is a failed case. */
export async function finishesWithin<T>(what: string, boundMs: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${boundMs / 1000} s (hung)`)), boundMs);
  });
  try {
    return await Promise.race([work, bound]);
  } finally {
    clearTimeout(timer);
  }
}

/** A sink that keeps what is written, as text. */
export function collector(): { stream: Writable; text(): string; lineCount(): number } {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      text += chunk.toString('utf8');
      done();
    },
  });
  return { stream, text: () => text, lineCount: () => text.split('\n').filter((l) => l !== '').length };
}

const describeEnd = (end: EndState): string => JSON.stringify(end, (key, value: unknown) => (key === 'error' ? undefined : value));

/** What one case ran and saw; checked against the expectation of its kind of call. */
interface Outcome {
  end: EndState;
  stdout: string;
  expectedEnd: EndState;
  /** For exec: what the exec gave back. */
  exec?: { ok: true; stdout: string; exitCode: number } | { ok: false; error: unknown };
}

interface LibraryContext {
  run: TestRun;
  proxy: FaultProxy;
  driver: TaskDriver;
  /** The image tasks run; a registry image (pulled every time) for the pull slice. */
  image: string;
  pull: TaskSpec['pull'];
}

function taskSpec(ctx: LibraryContext, script: string, extra: Partial<TaskSpec> = {}): TaskSpec {
  return { image: ctx.image, pull: ctx.pull, labels: { ...ctx.run.labels }, command: ['sh', '-c', script], ...extra };
}

/** Starts a task, reads its stdout into a collector, and waits until it printed every numbered line. */
async function startPrinting(ctx: LibraryContext, script: string, extra: Partial<TaskSpec> = {}, waitHealthy = false) {
  const handle = await ctx.driver.start(taskSpec(ctx, script, extra), { waitHealthy });
  const out = collector();
  const output = Promise.all([readInto(handle.stdout, out.stream), readAll(handle.stderr)]);
  return { handle, out, output };
}

async function readInto(source: Readable, sink: Writable): Promise<void> {
  for await (const chunk of source) sink.write(chunk as Buffer);
}

async function untilPrinted(out: ReturnType<typeof collector>): Promise<void> {
  await pollUntil('the task to print every line', () => (out.lineCount() >= LINE_COUNT ? true : undefined), { timeoutMs: 30_000 });
}

/** The task path: start, stream the output, wait, remove. */
async function runPrintingTask(ctx: LibraryContext): Promise<Outcome> {
  const out = collector();
  const result = await runToEnd(ctx.driver, taskSpec(ctx, `${printLines(LINE_COUNT)}; exit ${EXIT_CODE}`), { stdout: out.stream });
  return { end: result.end, stdout: out.text(), expectedEnd: { kind: 'failed', exitCode: EXIT_CODE } };
}

/** A task stopped by its owner: it exits with its code on SIGTERM. */
async function stopPrintingTask(ctx: LibraryContext): Promise<Outcome> {
  const { handle, out, output } = await startPrinting(ctx, `trap 'exit ${EXIT_CODE}' TERM; ${printLines(LINE_COUNT)}; sleep 60 & wait`);
  try {
    await untilPrinted(out);
    await handle.stop({ graceMs: 5000 });
    const end = await handle.wait();
    await output.catch(() => undefined);
    return { end, stdout: out.text(), expectedEnd: { kind: 'cancelled', exitCode: EXIT_CODE } };
  } finally {
    await handle.destroy();
  }
}

/**
 * A running task killed by its owner with handle.kill('SIGKILL'), as `docker kill` does. A kill is
 * not a cancellation: the task ends as the engine reports it, failed with 137 (128 + SIGKILL's 9).
 */
async function killPrintingTask(ctx: LibraryContext): Promise<Outcome> {
  const { handle, out, output } = await startPrinting(ctx, `${printLines(LINE_COUNT)}; sleep 60; exit ${EXIT_CODE}`);
  try {
    await untilPrinted(out);
    await handle.kill('SIGKILL');
    const end = await handle.wait();
    await output.catch(() => undefined);
    return { end, stdout: out.text(), expectedEnd: { kind: 'failed', exitCode: 137 } };
  } finally {
    await handle.destroy();
  }
}

export const EXEC_LINES = 5;
export const EXEC_EXIT_CODE = 5;

/** A command run in the task with handle.exec; the task ends once the exec ran (or after 10 s). */
async function execInPrintingTask(ctx: LibraryContext): Promise<Outcome> {
  const { handle, out, output } = await startPrinting(
    ctx,
    `${printLines(LINE_COUNT)}; n=0; while [ ! -f /tmp/go ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; exit ${EXIT_CODE}`,
  );
  try {
    await untilPrinted(out);
    let exec: Outcome['exec'];
    try {
      const session = await handle.exec({ cmd: ['sh', '-c', `${printLines(EXEC_LINES, 'exec')}; touch /tmp/go; exit ${EXEC_EXIT_CODE}`] });
      const [stdout] = await Promise.all([readAll(session.stdout), readAll(session.stderr)]);
      exec = { ok: true, stdout, exitCode: await session.exitCode() };
    } catch (error) {
      exec = { ok: false, error };
    }
    const end = await handle.wait();
    await output.catch(() => undefined);
    return { end, stdout: out.text(), expectedEnd: { kind: 'failed', exitCode: EXIT_CODE }, exec };
  } finally {
    await handle.destroy();
  }
}

/** A start that waits for health, which follows the engine's events for the container. */
async function startHealthyPrintingTask(ctx: LibraryContext): Promise<Outcome> {
  const { handle, out, output } = await startPrinting(
    ctx,
    `${printLines(LINE_COUNT)}; touch /tmp/healthy; sleep 3; exit ${EXIT_CODE}`,
    { healthcheck: { shell: 'test -f /tmp/healthy', interval: '200ms', timeout: '2s', retries: 3 } },
    true,
  );
  try {
    const end = await handle.wait();
    await output.catch(() => undefined);
    return { end, stdout: out.text(), expectedEnd: { kind: 'failed', exitCode: EXIT_CODE } };
  } finally {
    await handle.destroy();
  }
}

const LIBRARY_SCENARIOS: Readonly<Record<Exclude<CallKind, 'logs'>, (ctx: LibraryContext) => Promise<Outcome>>> = {
  create: runPrintingTask,
  start: runPrintingTask,
  attach: runPrintingTask,
  wait: runPrintingTask,
  // A task that fails has its OOM flag read with an inspect.
  inspect: runPrintingTask,
  remove: runPrintingTask,
  pull: runPrintingTask,
  stop: stopPrintingTask,
  kill: killPrintingTask,
  exec: execInPrintingTask,
  events: startHealthyPrintingTask,
};

const HOW: Readonly<Record<CallKind, string>> = {
  create: 'a task run to its end',
  start: 'a task run to its end',
  attach: 'a task run to its end with its output attached',
  wait: 'a task run to its end',
  inspect: 'a failing task run to its end (its OOM flag is inspected)',
  remove: 'a task run to its end',
  pull: 'a task whose registry image is pulled (pull always)',
  stop: 'a task stopped with handle.stop()',
  kill: "a running task killed with handle.kill('SIGKILL')",
  exec: 'a command run with handle.exec in a running task',
  events: 'a task started with waitHealthy (it follows the engine events)',
  logs: 'a task run by the agent, which reads its output from the engine log',
};

function caseName(call: CallKind, fault: FaultName): string {
  return `${call}: with ${FAULT_WORDS[fault]}, ${HOW[call]} ends right with its output exactly once and nothing left`;
}

function checkOutcome(call: CallKind, fault: FaultName, outcome: Outcome): void {
  assert.deepEqual(
    { kind: outcome.end.kind, exitCode: 'exitCode' in outcome.end ? outcome.end.exitCode : undefined },
    { kind: outcome.expectedEnd.kind, exitCode: 'exitCode' in outcome.expectedEnd ? outcome.expectedEnd.exitCode : undefined },
    `end state ${describeEnd(outcome.end)}`,
  );
  assertOutputOnce(outcome.stdout, numberedLines(LINE_COUNT), 'the task output');
  if (call !== 'exec') return;
  const exec = outcome.exec!;
  if (exec.ok) {
    assertOutputOnce(exec.stdout, numberedLines(EXEC_LINES, 'exec'), 'the exec output');
    assert.equal(exec.exitCode, EXEC_EXIT_CODE, 'the exec exit code');
    return;
  }
  // Before the engine saw the exec, nothing ran: retrying is safe, and the exec must succeed.
  assert.notEqual(fault, '503-before', `an exec refused before the engine saw it failed instead of being retried: ${String(exec.error)}`);
  // After the command ran, its lost stream cannot be replayed: a typed error, never a second run.
  assert.ok(isBerthError(exec.error), `the exec failed with an untyped error: ${String(exec.error)}`);
}

/**
 * Registers the hooks of a describe whose cases share one fault proxy: it is started before the
 * first case and told to `onStart` (which builds what runs on it), its rules are reset and the run's
 * objects removed after each case, and it is closed and the run cleaned up after the last. Hooks the
 * caller registers later run after these.
 */
export function shareFaultProxy(run: TestRun, onStart: (proxy: FaultProxy) => void | Promise<void>): void {
  let proxy: FaultProxy | undefined;
  before(async () => {
    proxy = await FaultProxy.start();
    await onStart(proxy);
  });
  afterEach(async () => {
    proxy?.reset();
    await run.cleanup();
  });
  after(async () => {
    await proxy?.close();
    await run.cleanup();
  });
}

/** How a `berth` process run by `runBerthWithin` ended. */
export interface BoundedRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Whether it outlived the bound and was killed (SIGKILL). */
  hung: boolean;
  stdout: string;
  stderr: string;
  /** From spawn to close. */
  durationMs: number;
}

/**
 * Runs the CLI from source with `args` on the engine at `socketPath` (DOCKER_HOST, no other BERTH_*
 * variable), to its end, and kills it when it outlives `boundMs`: a hang is reported, never waited for.
 */
export async function runBerthWithin(socketPath: string, args: readonly string[], boundMs: number, onHang?: () => void): Promise<BoundedRun> {
  const startedAt = performance.now();
  const child = spawn(process.execPath, [...BERTH_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv({ DOCKER_HOST: `unix://${socketPath}` }) });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let hung = false;
  const timer = setTimeout(() => {
    hung = true;
    onHang?.();
    child.kill('SIGKILL');
  }, boundMs);
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  return { code, signal, hung, stdout, stderr, durationMs: Math.round(performance.now() - startedAt) };
}

function addRule(proxy: FaultProxy, call: CallKind, fault: FaultName): FaultRule {
  const target = CALLS[call];
  return proxy.addRule({ method: target.method, path: target.path, fault: faultFor(fault, call), times: 1 });
}

async function leftovers(direct: Engine, run: TestRun): Promise<string[]> {
  return (await direct.listContainers({ all: true, labels: [run.labelFilter] })).map((c) => `${c.names[0] ?? c.id} (${c.state})`);
}

/**
 * Registers the matrix for `calls` made by the library (TaskDriver with an Engine on the proxy,
 * short deadlines). `pull` needs the test registries; the other calls run the local test image.
 */
export async function describeLibraryMatrix(title: string, calls: ReadonlyArray<Exclude<CallKind, 'logs'>>): Promise<void> {
  const usesRegistry = calls.includes('pull');
  const skip = (await requireEngine()) || (usesRegistry ? requireRegistryTools() : false);
  describe(title, { skip }, () => {
    const direct = testEngine();
    const run = testRun(direct);
    let proxy: FaultProxy;
    let registries: TestRegistries | undefined;
    let images: ImageCoordinator | undefined;
    const ctx = {} as LibraryContext;

    shareFaultProxy(run, async (started) => {
      proxy = started;
      const engine = new Engine({ socketPath: proxy.socketPath, deadlines: SHORT_DEADLINES });
      let image = TEST_IMAGE;
      if (usesRegistry) {
        registries = await startTestRegistries();
        const local = `berth-it/${run.id}/matrix-local:1`;
        image = `${registries.plain.host}/berth-it/${run.id}/matrix:1`;
        await buildUniqueImage(local, run.id, 64 * 1024);
        await pushImage(local, [image]);
        await untag(direct, [image]);
        images = new ImageCoordinator({ engine, options: { cleanup: false, pullActivityTimeout: 3000, pullRetryDelay: 50 } });
      }
      Object.assign(ctx, {
        run,
        proxy,
        driver: new TaskDriver({ engine, ownerId: `matrix-${run.id}`, retry: FAST_RETRY, images }),
        image,
        pull: usesRegistry ? 'always' : 'if-not-present',
      } satisfies LibraryContext);
    });
    after(async () => {
      await images?.close();
      if (registries) {
        await removeRunImages(direct, run.id).catch(() => undefined);
        await registries.stop();
      }
    });

    for (const call of calls) {
      for (const fault of FAULT_NAMES) {
        test(caseName(call, fault), { timeout: CASE_BOUND_MS + 60_000 }, async () => {
          const rule = addRule(proxy, call, fault);
          const outcome = await finishesWithin(`${HOW[call]} under ${FAULT_WORDS[fault]} on ${call}`, CASE_BOUND_MS, LIBRARY_SCENARIOS[call](ctx));
          assert.equal(rule.fired, 1, `the fault was injected on a ${call} call (${rule.matched} such calls were made)`);
          checkOutcome(call, fault, outcome);
          // A create that timed out is watched for a while in case the engine acts late.
          await finishesWithin('the late-create guard', CASE_BOUND_MS, ctx.driver.settled());
          assert.deepEqual(await leftovers(direct, run), [], 'no container of the run is left');
        });
      }
    }
  });
}


/**
 * Registers the matrix for the engine's log, read by an in-process agent whose engine is the proxy:
 * the agent's output pump follows the log and must record every line exactly once.
 */
export async function describeAgentLogsMatrix(title: string): Promise<void> {
  describe(title, { skip: await requireEngine() }, () => {
    const direct = testEngine();
    const run = testRun(direct);
    let proxy: FaultProxy;
    let agent: ServedAgent;

    before(async () => {
      proxy = await FaultProxy.start();
      agent = await startServedAgent(proxy.socketPath);
    });
    afterEach(async () => {
      proxy.reset();
      await run.cleanup();
    });
    after(async () => {
      await agent.close();
      await proxy.close();
      await run.cleanup();
    });

    for (const fault of FAULT_NAMES) {
      test(caseName('logs', fault), { timeout: CASE_BOUND_MS + 60_000 }, async () => {
        const rule = addRule(proxy, 'logs', fault);
        const submitted = await agent.client.submit({
          spec: { image: TEST_IMAGE, labels: { ...run.labels }, command: ['sh', '-c', `${printLines(LINE_COUNT)}; exit ${EXIT_CODE}`] },
        });
        const ended = await finishesWithin(
          `the agent's task under ${FAULT_WORDS[fault]} on logs`,
          CASE_BOUND_MS,
          pollUntil('the task to end', async () => {
            const view = await agent.client.get(submitted.id);
            return hasEnded(view.state) ? view : undefined;
          }, { timeoutMs: CASE_BOUND_MS + 1000, intervalMs: 100 }),
        );
        assert.equal(rule.fired, 1, `the fault was injected on a logs call (${rule.matched} such calls were made)`);
        assert.deepEqual({ state: ended.state, end: ended.endState?.kind, exitCode: ended.exitCode }, { state: 'exited', end: 'failed', exitCode: EXIT_CODE }, JSON.stringify(ended.endState));
        // The end is recorded once the output is; the container is removed right after.
        await finishesWithin('the agent to remove the container', CASE_BOUND_MS, agent.runtime.supervisor.idle());
        let text = '';
        for await (const record of agent.client.logs(submitted.id)) text += `${record.text.replace(/\n$/, '')}\n`;
        assertOutputOnce(text, numberedLines(LINE_COUNT), 'the task output the agent recorded');
        assert.deepEqual(await leftovers(direct, run), [], 'no container of the run is left');
        const admission = agent.runtime.admission.snapshot();
        assert.deepEqual({ tasks: admission.used.tasks, queued: admission.queued.length }, { tasks: 0, queued: 0 }, 'the budget is free');
      });
    }
  });
}

/** A `berth run` that has not exited after this hangs: it is killed (SIGKILL) and the case fails. */
export const CLI_BOUND_MS = 150_000;

/**
 * Registers the matrix for `calls` made by `berth run` (the CLI from source, DOCKER_HOST on a proxy
 * of the case's own, default deadlines): the process exits with the task's code, prints its output
 * once, leaves no container and does not hang. Cases run `concurrency` at a time, each with its own
 * proxy and label, so that one case's fault never reaches another's run.
 */
export async function describeCliMatrix(title: string, calls: readonly CallKind[], concurrency = 4): Promise<void> {
  describe(title, { skip: await requireEngine(), concurrency }, () => {
    const direct = testEngine();
    const run = testRun(direct);
    after(() => run.cleanup());
    let caseCounter = 0;

    for (const call of calls) {
      for (const fault of FAULT_NAMES) {
        const name = `berth run, ${call}: with ${FAULT_WORDS[fault]}, exits with the task's code, prints its output once, leaves nothing and does not hang`;
        test(name, { timeout: CLI_BOUND_MS + 60_000 }, async () => {
          // Unique across files too: the slices run in parallel, and a case's clean-up removes what carries its label.
          const caseLabel = `${TEST_RUN_LABEL}.case=${run.id}-${++caseCounter}`;
          const proxy = await FaultProxy.start();
          try {
            const rule = addRule(proxy, call, fault);
            const args = ['run', '-l', `${TEST_RUN_LABEL}=${run.id}`, '-l', caseLabel, TEST_IMAGE, 'sh', '-c', `${printLines(LINE_COUNT)}; exit ${EXIT_CODE}`];
            const { code, hung, stderr, stdout } = await runBerthWithin(proxy.socketPath, args, CLI_BOUND_MS);
            assert.equal(hung, false, `berth run did not exit within ${CLI_BOUND_MS / 1000} s (killed); stderr: ${stderr}`);
            assert.equal(rule.fired, 1, `the fault was injected on a ${call} call (${rule.matched} such calls were made)`);
            assert.equal(code, EXIT_CODE, `berth run exited ${code}; stderr: ${stderr}`);
            assertOutputOnce(stdout, numberedLines(LINE_COUNT), 'the output of berth run');
            const left = await direct.listContainers({ all: true, labels: [run.labelFilter, caseLabel] });
            assert.deepEqual(left.map((c) => `${c.names[0] ?? c.id} (${c.state})`), [], 'no container of the run is left');
          } finally {
            await proxy.close();
            const left = await direct.listContainers({ all: true, labels: [run.labelFilter, caseLabel] });
            await Promise.all(left.map((c) => direct.removeContainer(c.id)));
          }
        });
      }
    }
  });
}
