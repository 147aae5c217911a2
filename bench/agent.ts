/**
 * `agent`: a real `berth agent` process (`node bin/berth.js agent`) on a temporary data directory,
 * driven through its HTTP API with the AgentClient.
 *
 * - `agent.throughput`: short tasks (`true`, network none) submitted at concurrency 8 (eight in
 *   flight: submit, then wait for the task's end on the event stream), against the raw dockerode
 *   sequence (create, start, wait, remove) at the same concurrency, in alternating batches of the
 *   same run (ABBA, so that engine drift hits both alike). A berth batch ends when its last task
 *   has ended and the agent has removed its container, so both sides pay for the same engine work.
 *   Target: berth's tasks/s at least 0.9 times the raw sequence's. Also: submit-to-running latency
 *   p50/p99, as the client sees it (submit call to the `running` event) and as the agent records it
 *   (submittedAt to startedAt), and the agent's CPU time per task.
 * - `agent.memory`: the same agent with 100 tasks running `sleep` at once: the agent's peak RSS
 *   (VmHWM of /proc/<pid>/status, from the first submit until all run; target at most 150 MiB) and
 *   current RSS (VmRSS), next to the agent's peak at startup and over its whole life; then every
 *   task is stopped through the API. Each phase's peak is its own: VmHWM is reset between phases.
 *
 * The agent runs from bin/berth.js, which runs dist/ when it is built and the TypeScript through tsx
 * otherwise (`agentEntry` in the results says which); env BENCH_AGENT_ENTRY names another entry
 * script to run instead (e.g. a build elsewhere). Every container carries the bench label; at the
 * end (also on failure) the agent is stopped, every container with the bench label or the agent's
 * owner label is removed, and the temporary directory is deleted.
 *
 * Runnable alone (`node --import tsx bench/agent.ts`) or from bench/run.ts, which passes its context.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import Dockerode from 'dockerode';
import { AgentClient, type AgentEvent, type EventSubscription, type TaskView } from '../src/agent/client.js';
import { LABELS } from '../src/common/labels.js';
import type { TaskSpec } from '../src/spec/index.js';
import { hasEnded, type StoredEndState, type TaskState } from '../src/state/tasks.js';
import { BENCH_IMAGE, BENCH_LABEL, type CaseContext, elapsedMs, MIB, pairedRatio, quantile, round, runPool, standaloneContext } from './support.js';
import { messageOf, stackOf } from '../src/common/errors.js';
import { startAgentProcess, type RunningAgent } from '../test/support/agent.js';

const CONCURRENCY = 8;
const THROUGHPUT_TASKS = 200;
const THROUGHPUT_BATCHES = 4;
const MEMORY_TASKS = 100;
/** The sleeping tasks are stopped well before this; it bounds what a crashed run leaves behind. */
const SLEEP_SECONDS = 60;
const TARGET_MIN_THROUGHPUT_RATIO = 0.9;
const TARGET_MAX_HWM_MIB = 150;

/** Starting the agent: under tsx, the first start compiles the sources. */
const READY_DEADLINE_MS = 120_000;
/** A short task that has not ended after this is looked up (a missed event) and then given up on. */
const TASK_DEADLINE_MS = 120_000;
/** Waiting for all the sleeping tasks to run, or to end after their stop. */
const MEMORY_PHASE_DEADLINE_MS = 180_000;
/** Waiting for the agent to remove the containers of ended tasks. */
const REMOVAL_DEADLINE_MS = 60_000;

const BERTH_BIN = fileURLToPath(new URL('../bin/berth.js', import.meta.url));
const BUILT_ENTRY = fileURLToPath(new URL('../dist/cli/entry.js', import.meta.url));

/** What this case needs of bench/run.ts's context; without one it prints on its own. */
export type AgentBenchContext = CaseContext;

const scaledCount = (ctx: AgentBenchContext, count: number, minimum: number): number => Math.max(minimum, Math.round(count * ctx.scale));

// ---- the agent process ----

/** Memory figures of a process from /proc/<pid>/status, in bytes. */
interface ProcMemory {
  hwmBytes: number;
  rssBytes: number;
  rssAnonBytes: number;
  rssFileBytes: number;
}

function readProcMemory(pid: number): ProcMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(status);
    if (!match) throw new Error(`bench agent: /proc/${pid}/status has no ${name}`);
    return Number(match[1]) * 1024;
  };
  return { hwmBytes: field('VmHWM'), rssBytes: field('VmRSS'), rssAnonBytes: field('RssAnon'), rssFileBytes: field('RssFile') };
}

/** CPU time (user + system) a process has used, in ms. */
function readProcCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The fields after the command (in parentheses, which may hold spaces): utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticksPerSecond = 100; // USER_HZ: 100 on every Linux the engine runs on.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond;
}

/**
 * The agent's peak RSS per phase of the bench. VmHWM is the peak since the process started; writing
 * 5 to /proc/<pid>/clear_refs resets it to the current RSS, so that each phase's peak is its own.
 * Where the kernel refuses the reset, the phase's peak is sampled instead (every 100 ms).
 */
class PeakTracker {
  readonly #pid: number;
  readonly #sampler: NodeJS.Timeout;
  #sampledBytes = 0;
  #resetWorks = true;
  #lifetimeBytes: number;

  constructor(pid: number) {
    this.#pid = pid;
    this.#lifetimeBytes = readProcMemory(pid).hwmBytes;
    this.#sampler = setInterval(() => this.#sample(), 100);
  }

  #sample(): ProcMemory | undefined {
    let memory: ProcMemory;
    try {
      memory = readProcMemory(this.#pid);
    } catch {
      return undefined; // the process is gone
    }
    this.#sampledBytes = Math.max(this.#sampledBytes, memory.rssBytes);
    return memory;
  }

  /** Ends the phase under way: returns its peak, and starts the next phase from the current RSS. */
  nextPhase(): { peakBytes: number; now: ProcMemory } {
    const now = this.#sample();
    if (!now) throw new Error(`bench agent: process ${this.#pid} is gone`);
    const peakBytes = this.#resetWorks ? now.hwmBytes : this.#sampledBytes;
    this.#lifetimeBytes = Math.max(this.#lifetimeBytes, peakBytes, now.hwmBytes);
    try {
      writeFileSync(`/proc/${this.#pid}/clear_refs`, '5');
    } catch {
      this.#resetWorks = false;
    }
    this.#sampledBytes = now.rssBytes;
    return { peakBytes, now };
  }

  /** The peak over the process's whole life so far (phases before the last nextPhase() included). */
  get lifetimeBytes(): number {
    return this.#lifetimeBytes;
  }

  stop(): void {
    clearInterval(this.#sampler);
  }
}

const toMiB = (bytes: number): number => round(bytes / MIB, 1);

/** Fails the bench with the agent's last output when the agent has exited. */
function throwIfExited(agent: RunningAgent): void {
  if (agent.hasExited) throw new Error(`bench agent: the agent exited; its last output:\n${agent.tail()}`);
}

/** Connects to a ready agent with the token it wrote. */
async function connect(agent: RunningAgent): Promise<AgentClient> {
  const token = (await readFile(path.join(agent.dataDir, 'token'), 'utf8')).trim();
  return AgentClient.connect({ host: `unix://${agent.socketPath}`, token });
}

// ---- following tasks on the event stream ----

interface TaskEnd {
  state: TaskState;
  endState?: StoredEndState;
}

interface Watch {
  /** hrtime (ns) when the `running` event arrived. */
  runningAtNs?: bigint;
  running: Promise<void>;
  ended: Promise<TaskEnd>;
}

interface Waiter {
  watch: Watch;
  onRunning(): void;
  onEnded(end: TaskEnd): void;
  onError(error: unknown): void;
}

/**
 * Reads the agent's event stream once and hands each task's `running` and end to whoever watches
 * it. A task is watched before it is submitted, so that no event of it can come first.
 */
class TaskWatcher {
  readonly #client: AgentClient;
  readonly #subscription: EventSubscription;
  readonly #waiters = new Map<string, Waiter>();
  readonly #reading: Promise<void>;
  #failure: Error | undefined;
  #closed = false;
  /** Tasks whose end was found with get() after a missed event: should stay 0. */
  missedEvents = 0;

  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = (): void => this.#fail(new Error(`bench agent: interrupted (${String(this.#signal?.reason)})`));

  private constructor(client: AgentClient, subscription: EventSubscription, signal: AbortSignal | undefined) {
    this.#client = client;
    this.#subscription = subscription;
    this.#signal = signal;
    // One listener for every watched task: an interrupt fails them all.
    signal?.addEventListener('abort', this.#onAbort, { once: true });
    this.#reading = this.#read();
  }

  /** Subscribes to the agent's events; `signal` (an interrupt) fails every task watched. */
  static async open(client: AgentClient, signal?: AbortSignal): Promise<TaskWatcher> {
    return new TaskWatcher(client, await client.events(), signal);
  }

  async #read(): Promise<void> {
    try {
      for await (const event of this.#subscription) this.#dispatch(event);
      if (!this.#closed) this.#fail(new Error('bench agent: the agent ended its event stream'));
    } catch (error) {
      if (!this.#closed) this.#fail(new Error(`bench agent: the event stream broke: ${messageOf(error)}`));
    }
  }

  #dispatch(event: AgentEvent): void {
    if (event.type !== 'task.state') return;
    const waiter = this.#waiters.get(event.taskId);
    if (!waiter) return;
    if (event.state === 'running') waiter.onRunning();
    else if (hasEnded(event.state)) waiter.onEnded({ state: event.state, ...(event.endState ? { endState: event.endState } : {}) });
  }

  #fail(error: Error): void {
    this.#failure = error;
    for (const waiter of this.#waiters.values()) waiter.onError(error);
    this.#waiters.clear();
  }

  /** Starts watching a task (before submitting it). */
  watch(taskId: string): Watch {
    if (this.#failure) throw this.#failure;
    let resolveRunning!: () => void;
    let resolveEnded!: (end: TaskEnd) => void;
    let rejectAll!: (error: unknown) => void;
    const running = new Promise<void>((resolve, reject) => {
      resolveRunning = resolve;
      rejectAll = reject;
    });
    let rejectEnded!: (error: unknown) => void;
    const ended = new Promise<TaskEnd>((resolve, reject) => {
      resolveEnded = resolve;
      rejectEnded = reject;
    });
    // A rejection nobody awaits (a task given up on, the watcher closed on failure) is not unhandled;
    // whoever awaits either promise still gets it.
    running.catch(() => undefined);
    ended.catch(() => undefined);
    const watch: Watch = { running, ended };
    const settle = (): void => {
      clearTimeout(timer);
      this.#waiters.delete(taskId);
    };
    const waiter: Waiter = {
      watch,
      onRunning: () => {
        watch.runningAtNs ??= process.hrtime.bigint();
        resolveRunning();
      },
      onEnded: (end) => {
        settle();
        rejectAll(new Error(`bench agent: task ${taskId} ended (${end.state}) before it was seen running`));
        resolveEnded(end);
      },
      onError: (error) => {
        settle();
        rejectAll(error);
        rejectEnded(error);
      },
    };
    // A backstop, not the mechanism: should an event go missing, the task's record says how it is.
    const timer = setTimeout(() => void this.#lookUp(taskId, waiter), TASK_DEADLINE_MS);
    this.#waiters.set(taskId, waiter);
    return watch;
  }

  async #lookUp(taskId: string, waiter: Waiter): Promise<void> {
    try {
      const task = await this.#client.get(taskId);
      if (hasEnded(task.state)) {
        this.missedEvents++;
        if (task.startedAt !== undefined) waiter.onRunning();
        waiter.onEnded({ state: task.state, ...(task.endState ? { endState: task.endState } : {}) });
        return;
      }
      waiter.onError(new Error(`bench agent: task ${taskId} is still ${task.state} after ${TASK_DEADLINE_MS / 1000} s`));
    } catch (error) {
      waiter.onError(error);
    }
  }

  /** Stops watching `taskId` (its submit failed). */
  forget(taskId: string): void {
    const waiter = this.#waiters.get(taskId);
    waiter?.onError(new Error(`bench agent: task ${taskId} was not submitted`));
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#subscription.close();
    await this.#reading;
    this.#fail(new Error('bench agent: the watcher was closed'));
  }
}

// ---- the case ----

interface Setup {
  ctx: AgentBenchContext;
  docker: Dockerode;
  agent: RunningAgent;
  client: AgentClient;
  watcher: TaskWatcher;
  agentId: string;
  benchLabels: Record<string, string>;
  /** What runs the agent: "dist" or "tsx" (through bin/berth.js), or the BENCH_AGENT_ENTRY script. */
  agentEntry: string;
  /** The agent's memory once ready, before any task. */
  startup: ProcMemory;
  /** Its peak RSS until then. */
  startupPeakBytes: number;
  /** Its peak RSS per phase: nextPhase() at the end of each. */
  peaks: PeakTracker;
  nextTaskId(prefix: string): string;
}

/** Waits until the engine holds no container of the agent's: it has removed every ended task's. */
async function untilAgentContainersGone(setup: Setup): Promise<void> {
  const filters = JSON.stringify({ label: [`${LABELS.ownerId}=${setup.agentId}`] });
  const deadline = Date.now() + REMOVAL_DEADLINE_MS;
  for (;;) {
    setup.ctx.signal?.throwIfAborted();
    const rows = await setup.docker.listContainers({ all: true, filters });
    if (rows.length === 0) return;
    if (Date.now() > deadline) throw new Error(`bench agent: ${rows.length} container(s) of the agent were still there ${REMOVAL_DEADLINE_MS / 1000} s after their tasks ended`);
    await delay(20);
  }
}

function describeEnd(end: TaskEnd): string {
  if (!end.endState) return end.state;
  const { kind } = end.endState;
  const detail = 'reason' in end.endState ? `: ${end.endState.reason}` : 'exitCode' in end.endState ? ` (exit ${end.endState.exitCode})` : '';
  return `${end.state}/${kind}${detail}`;
}

interface BerthSample {
  /** The submit call to the `running` event. */
  toRunningMs: number;
  /** The submit call's own round trip. */
  submitMs: number;
}

/** One short task through the agent: submit, then wait for its end on the event stream. */
async function berthTask(setup: Setup, taskId: string): Promise<BerthSample> {
  const { client, watcher, benchLabels, ctx } = setup;
  ctx.signal?.throwIfAborted();
  const spec: TaskSpec = { image: BENCH_IMAGE, command: ['true'], network: 'none', labels: { ...benchLabels } };
  const watch = watcher.watch(taskId);
  const started = process.hrtime.bigint();
  try {
    await client.submit({ id: taskId, spec });
  } catch (error) {
    watcher.forget(taskId);
    throw error;
  }
  const submitMs = elapsedMs(started);
  const end = await watch.ended;
  if (end.state !== 'exited' || end.endState?.kind !== 'success') throw new Error(`bench agent: task ${taskId} did not succeed: ${describeEnd(end)}`);
  if (watch.runningAtNs === undefined) throw new Error(`bench agent: task ${taskId} ended without a running event`);
  return { toRunningMs: Number(watch.runningAtNs - started) / 1e6, submitMs };
}

/** The same task with the fewest engine calls that do the job; returns the ms from the create call to the start's answer. */
async function rawTask(setup: Setup): Promise<number> {
  setup.ctx.signal?.throwIfAborted();
  const started = process.hrtime.bigint();
  const container = await setup.docker.createContainer({
    Image: BENCH_IMAGE,
    Cmd: ['true'],
    Labels: { ...setup.benchLabels },
    HostConfig: { NetworkMode: 'none' },
  });
  let toRunningMs: number;
  try {
    await container.start();
    toRunningMs = elapsedMs(started);
    const { StatusCode } = (await container.wait()) as { StatusCode: number };
    if (StatusCode !== 0) throw new Error(`bench agent: a raw task exited with ${StatusCode}`);
  } finally {
    await container.remove({ force: true, v: true });
  }
  return toRunningMs;
}

type Mode = 'berth' | 'raw';

const latency = (values: readonly number[]): { p50Ms: number; p99Ms: number } => ({ p50Ms: round(quantile(values, 0.5)), p99Ms: round(quantile(values, 0.99)) });

/** Alternates which mode goes first (ABBA), so neither always runs on a freshly settled engine. */
const orderFor = (i: number): readonly Mode[] => (i % 2 === 0 ? ['berth', 'raw'] : ['raw', 'berth']);

async function throughput(setup: Setup): Promise<void> {
  const { ctx } = setup;
  const total = scaledCount(ctx, THROUGHPUT_TASKS, 2 * CONCURRENCY);
  const batches = Math.max(1, Math.min(THROUGHPUT_BATCHES, Math.floor(total / (2 * CONCURRENCY))));
  const batchSize = Math.round(total / batches);
  ctx.progress(`agent/throughput: ${batches} batches of ${batchSize} tasks per mode, ${CONCURRENCY} in flight`);

  const samples: BerthSample[] = [];
  const rawToRunningMs: number[] = [];
  const berthTaskIds: string[] = [];
  const wallMs: Record<Mode, number[]> = { berth: [], raw: [] };
  let berthCpuMs = 0;
  const batch = async (mode: Mode, size: number, measured: boolean): Promise<void> => {
    const ids = Array.from({ length: size }, () => setup.nextTaskId(measured ? 'tp' : 'warm'));
    const cpuBefore = mode === 'berth' ? readProcCpuMs(setup.agent.pid) : 0;
    const started = process.hrtime.bigint();
    if (mode === 'berth') {
      await runPool(ids, CONCURRENCY, async (taskId) => {
        const sample = await berthTask(setup, taskId);
        if (measured) samples.push(sample);
      });
      // The raw sequence includes the removal: the agent's batch ends when it has removed its containers too.
      await untilAgentContainersGone(setup);
    } else {
      await runPool(ids, CONCURRENCY, async () => {
        const ms = await rawTask(setup);
        if (measured) rawToRunningMs.push(ms);
      });
    }
    const ms = elapsedMs(started);
    throwIfExited(setup.agent);
    if (!measured) return;
    wallMs[mode].push(ms);
    if (mode === 'berth') {
      berthCpuMs += readProcCpuMs(setup.agent.pid) - cpuBefore;
      berthTaskIds.push(...ids);
    }
  };

  // Warm-up: the agent's code paths (and tsx's compilation of them) and the engine, for both modes.
  for (const mode of orderFor(0)) await batch(mode, 2 * CONCURRENCY, false);
  for (let i = 0; i < batches; i++) {
    for (const mode of orderFor(i)) await batch(mode, batchSize, true);
    ctx.progress(`agent/throughput: batch ${i + 1}/${batches}: berth ${round(wallMs.berth.at(-1)!)} ms, raw ${round(wallMs.raw.at(-1)!)} ms`);
  }

  // The agent's own record of each task: submittedAt to startedAt, in whole milliseconds.
  const views = await setup.client.list({ label: `${BENCH_LABEL}=${ctx.runId}`, limit: 100_000 });
  const byId = new Map<string, TaskView>(views.map((view) => [view.id, view]));
  const recordedToRunningMs = berthTaskIds.flatMap((id) => {
    const view = byId.get(id);
    return view?.startedAt === undefined ? [] : [Date.parse(view.startedAt) - Date.parse(view.submittedAt)];
  });

  // The agent's peak RSS during this case (warm-up included); the memory case's phase starts here.
  const { peakBytes } = setup.peaks.nextPhase();
  const sum = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0);
  const tasks = batches * batchSize;
  const tasksPerSec = (mode: Mode): number => (tasks / sum(wallMs[mode])) * 1000;
  const berthTps = tasksPerSec('berth');
  const rawTps = tasksPerSec('raw');
  const ratio = round(berthTps / rawTps, 3);
  ctx.emit({
    case: 'agent.throughput',
    tasks,
    batches,
    concurrency: CONCURRENCY,
    agentEntry: setup.agentEntry,
    berth: { wallMs: round(sum(wallMs.berth)), tasksPerSec: round(berthTps, 2), batchWallMs: wallMs.berth.map((ms) => round(ms)) },
    raw: {
      wallMs: round(sum(wallMs.raw)),
      tasksPerSec: round(rawTps, 2),
      batchWallMs: wallMs.raw.map((ms) => round(ms)),
      // The raw sequence's counterpart of submit-to-running: the create call to the start's answer.
      createToStarted: latency(rawToRunningMs),
    },
    // berth tasks/s over raw tasks/s: above 1 means berth is faster.
    ratio,
    pairedRatio: round(pairedRatio(wallMs.raw, wallMs.berth), 3),
    submitToRunning: latency(samples.map((s) => s.toRunningMs)),
    submitToRunningRecorded: latency(recordedToRunningMs),
    submitCallMs: latency(samples.map((s) => s.submitMs)),
    agentCpuMsPerTask: round(berthCpuMs / tasks, 2),
    agentVmHwmMiB: toMiB(peakBytes),
    missedEvents: setup.watcher.missedEvents,
    target: { field: 'ratio', min: TARGET_MIN_THROUGHPUT_RATIO },
    pass: ratio >= TARGET_MIN_THROUGHPUT_RATIO,
  });
}

async function memory(setup: Setup): Promise<void> {
  const { ctx, agent, client, watcher } = setup;
  const count = scaledCount(ctx, MEMORY_TASKS, CONCURRENCY);
  // The throughput case ended the previous phase: the peak from here on is this case's.
  const before = readProcMemory(agent.pid);
  const ids = Array.from({ length: count }, () => setup.nextTaskId('mem'));
  const watches = new Map<string, Watch>();
  ctx.progress(`agent/memory: ${count} tasks running sleep ${SLEEP_SECONDS}`);
  const spec: TaskSpec = {
    image: BENCH_IMAGE,
    command: ['sleep', String(SLEEP_SECONDS)],
    network: 'none',
    labels: { ...setup.benchLabels },
    // sleep as PID 1 ignores SIGTERM; the stop should not wait out a grace period.
    stopSignal: 'SIGKILL',
  };
  const started = process.hrtime.bigint();
  await runPool(ids, CONCURRENCY * 2, async (taskId) => {
    ctx.signal?.throwIfAborted();
    const watch = watcher.watch(taskId);
    watches.set(taskId, watch);
    try {
      await client.submit({ id: taskId, spec });
    } catch (error) {
      watcher.forget(taskId);
      watches.delete(taskId);
      throw error;
    }
  });
  const submittedMs = elapsedMs(started);
  await withDeadline(Promise.all([...watches.values()].map((w) => w.running)), MEMORY_PHASE_DEADLINE_MS, `all ${count} sleeping tasks to run`);
  const allRunningMs = elapsedMs(started);
  // Let the output followers and waits of the last tasks settle before reading.
  await delay(2000);
  throwIfExited(agent);
  const running = await client.list({ state: 'running', label: `${BENCH_LABEL}=${ctx.runId}`, limit: 100_000 });
  if (running.length !== count) throw new Error(`bench agent: ${running.length} of the ${count} sleeping tasks are running, not all`);
  // The peak from the first submit until every task runs: what the target is about.
  const { peakBytes: runningPeakBytes, now: withTasks } = setup.peaks.nextPhase();

  ctx.progress(`agent/memory: stopping the ${count} tasks`);
  const stopStarted = process.hrtime.bigint();
  await runPool(ids, CONCURRENCY * 2, async (taskId) => void (await client.stop(taskId)));
  await withDeadline(Promise.all([...watches.values()].map((w) => w.ended)), MEMORY_PHASE_DEADLINE_MS, `the ${count} stopped tasks to end`);
  await untilAgentContainersGone(setup);
  const stopAllMs = elapsedMs(stopStarted);
  const { peakBytes: stoppingPeakBytes } = setup.peaks.nextPhase();

  const hwmMiB = toMiB(runningPeakBytes);
  ctx.emit({
    case: 'agent.memory',
    tasks: count,
    // The agent's peak RSS (VmHWM) from the first submit of this case until all its tasks run.
    vmHwmMiB: hwmMiB,
    // Its RSS then, with every task running.
    vmRssMiB: toMiB(withTasks.rssBytes),
    rssAnonMiB: toMiB(withTasks.rssAnonBytes),
    rssFileMiB: toMiB(withTasks.rssFileBytes),
    // Its RSS before this case's first submit (after the throughput case).
    rssBeforeMiB: toMiB(before.rssBytes),
    // The peak while stopping them all.
    stoppingVmHwmMiB: toMiB(stoppingPeakBytes),
    // The peak while starting up (before any task), and over the agent's whole life: under tsx
    // (agentEntry "tsx") the startup's peak includes compiling the sources in the loader thread.
    startupVmHwmMiB: toMiB(setup.startupPeakBytes),
    startupRssMiB: toMiB(setup.startup.rssBytes),
    lifetimeVmHwmMiB: toMiB(setup.peaks.lifetimeBytes),
    submitAllMs: round(submittedMs),
    allRunningMs: round(allRunningMs),
    stopAllMs: round(stopAllMs),
    agentEntry: setup.agentEntry,
    target: { field: 'vmHwmMiB', max: TARGET_MAX_HWM_MIB },
    pass: hwmMiB <= TARGET_MAX_HWM_MIB,
  });
}

async function withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`bench agent: gave up waiting for ${what} after ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Force-removes every container carrying one of the labels; returns how many there were. */
async function removeLabelled(docker: Dockerode, labels: readonly string[]): Promise<number> {
  const ids = new Set<string>();
  for (const label of labels) {
    for (const row of await docker.listContainers({ all: true, filters: JSON.stringify({ label: [label] }) })) ids.add(row.Id);
  }
  await Promise.all(
    [...ids].map(async (id) => {
      try {
        await docker.getContainer(id).remove({ force: true, v: true });
      } catch (error) {
        // 404 (already gone) and 409 (removal in progress) both end with the container gone.
        const status = (error as { statusCode?: number }).statusCode;
        if (status !== 404 && status !== 409) throw error;
      }
    }),
  );
  return ids.size;
}

/** Runs the case and prints its JSON lines. */
export async function benchAgent(context?: AgentBenchContext): Promise<void> {
  const ctx: AgentBenchContext = context ?? standaloneContext();
  const docker = ctx.docker ?? new Dockerode({ socketPath: '/var/run/docker.sock' });
  const agentId = `bench-${ctx.runId}`;
  const benchLabels = { [BENCH_LABEL]: ctx.runId };
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-bench-agent-'));
  const configFile = path.join(dataDir, 'agent.yaml');
  await writeFile(
    configFile,
    [
      `agentId: ${agentId}`,
      // Eight short tasks at once, or every sleeping task of the memory case, fit the budget.
      'defaults: {resources: {memory: 64m, cpuMilli: 100}}',
      'admission: {memory: 8g, cpuMilli: 100000}',
      'images: {cleanup: false}',
      'reconcile: {enabled: false}',
      '',
    ].join('\n'),
  );
  const entry = process.env.BENCH_AGENT_ENTRY?.trim() || BERTH_BIN;
  let agent: RunningAgent | undefined;
  let child: ChildProcess | undefined;
  let client: AgentClient | undefined;
  let watcher: TaskWatcher | undefined;
  let peaks: PeakTracker | undefined;
  // A bench that exits abruptly (a second interrupt) must not leave the agent behind.
  const killOnExit = (): void => void child?.kill('SIGKILL');
  process.once('exit', killOnExit);
  try {
    ctx.progress(`agent: starting ${path.relative(process.cwd(), entry) || entry} agent --data-dir ${dataDir}`);
    const startedAt = process.hrtime.bigint();
    agent = await startAgentProcess(dataDir, ['--config', configFile], {
      command: [entry],
      readyTimeoutMs: READY_DEADLINE_MS,
      signal: ctx.signal,
      onSpawn: (spawned) => (child = spawned),
    });
    client = await connect(agent);
    ctx.progress(`agent: ready in ${round(elapsedMs(startedAt) / 1000)} s (pid ${agent.pid})`);
    watcher = await TaskWatcher.open(client, ctx.signal);
    peaks = new PeakTracker(agent.pid);
    // The startup's peak; the throughput case's phase starts here.
    const startup = peaks.nextPhase();
    let taskCounter = 0;
    const setup: Setup = {
      ctx,
      docker,
      agent,
      client,
      watcher,
      agentId,
      benchLabels,
      agentEntry: entry !== BERTH_BIN ? entry : existsSync(BUILT_ENTRY) ? 'dist' : 'tsx',
      startup: startup.now,
      startupPeakBytes: startup.peakBytes,
      peaks,
      nextTaskId: (prefix) => `bench-${ctx.runId}-${prefix}-${++taskCounter}`,
    };
    await throughput(setup);
    await memory(setup);
  } finally {
    peaks?.stop();
    await watcher?.close().catch(() => undefined);
    client?.close();
    if (agent) {
      const code = await agent.stop();
      if (code !== 0) ctx.progress(`agent: the agent exited with ${String(code)}; its last output:\n${agent.tail()}`);
    }
    process.off('exit', killOnExit);
    try {
      const removed = await removeLabelled(docker, [`${BENCH_LABEL}=${ctx.runId}`, `${LABELS.ownerId}=${agentId}`]);
      if (removed > 0) ctx.progress(`agent: removed ${removed} leftover container(s)`);
    } catch (error) {
      ctx.progress(`agent: could not remove the bench containers: ${String(error)}`);
    }
    await rm(dataDir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  benchAgent().catch((error: unknown) => {
    process.stderr.write(`bench agent: ${stackOf(error)}\n`);
    process.exitCode = 1;
  });
}
