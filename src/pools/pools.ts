/**
 * WarmPools: keeps each declared pool's containers created, started and idle (running the holder,
 * see holder.ts), hands one to a matching task (the driver runs the task as an exec in it), refills
 * in the background, freezes idle containers (the engine's pause) after `freezeAfterMs` and thaws
 * them when taken, and shrinks or grows to the owner's allowance. A pool never fails a task: a
 * container that cannot be taken is removed and the task starts cold.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { isBerthError, ValidationError, codeOf, type FieldIssue } from '../common/errors.js';
import { Events } from '../common/events.js';
import { LABELS, ROLES } from '../common/labels.js';
import type { Logger } from '../common/logger.js';
import type { OwnerProcess } from '../common/owner-process.js';
import type { Engine, ExecSession } from '../engine/engine.js';
import type { ResolvedTaskSpec } from '../spec/schema.js';
import { connectNetworks, createIdempotent, isAmbiguousFailure, removeContainer, startIdempotent, type ContainerEngine, type RetryPolicy } from '../tasks/container-ops.js';
import { retry } from '../common/retry.js';
import type { EndState } from '../tasks/end-state.js';
import { execGateOf } from '../tasks/exec-gate.js';
import { ensureHolder } from './holder.js';
import { execArgv, LAUNCHER_ARGV, matchesPool, notPoolableReason, poolContainerPlan, poolKeyOf, type ImageRunConfig } from './key.js';
import type { ColdReason, PoolDefinition, PoolEvent, PoolSnapshot } from './types.js';

/** What the pools need from the engine. */
export type PoolEngine = Pick<
  ContainerEngine,
  'createContainer' | 'startContainer' | 'inspectContainer' | 'removeContainer' | 'listContainers' | 'pauseContainer' | 'unpauseContainer' | 'connectNetwork' | 'deadlines' | 'exec'
> &
  Partial<Pick<Engine, 'inspectImage' | 'inspectExec'>>;

/** How long a launcher may take to be set up in its container before the container is given up. */
const LAUNCHER_SETUP_MS = 5_000;

/** A pool's name: as a container name's part and a label value. */
export const POOL_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;

/** The most containers one pool keeps. */
export const POOL_MAX_SIZE = 1000;

/** How many containers of one pool are created at once while it fills. */
const FILL_CONCURRENCY = 2;
/** How often the idle containers are checked against the engine's list: one that died while idle is replaced. */
export const POOL_SWEEP_MS = 15_000;
/** Backoff of a pool whose creates fail (engine down, image missing): from 1 s, doubling to 30 s. */
const FILL_BACKOFF_MS = { initial: 1000, max: 30_000 } as const;

export interface WarmPoolsOptions {
  engine: PoolEngine;
  ownerId: string;
  ownerProcess?: OwnerProcess;
  retry: RetryPolicy;
  logger: Logger;
  /** Where the holder program is written (default: under the system's temporary directory). */
  holderDir?: string;
  /** A pool spec resolved for its create: bind sources resolved on the host, named seccomp profiles read. */
  prepareSpec: (spec: ResolvedTaskSpec) => ResolvedTaskSpec;
  /** Makes the pool's image present (the driver's image provider), held by `holderId`; release on close. */
  acquireImage?: (spec: ResolvedTaskSpec, holderId: string) => Promise<void>;
  releaseImage?: (holderId: string) => void;
}

type SlotState = 'starting' | 'idle' | 'frozen' | 'in-use';

interface Slot {
  containerId: string | undefined;
  state: SlotState;
  freezeTimer?: NodeJS.Timeout;
  /** A pause under way: a take waits for it, then thaws. */
  freezing?: Promise<void>;
  /** When it last became idle (epoch ms): the sweep judges only slots idle before its list. */
  idleSinceMs?: number;
  /**
   * The launcher waiting in the idle container (the holder's launch mode, an exec whose streams are
   * attached already): a task writes its request to it instead of creating and starting an exec.
   * Every idle or frozen slot has one; undefined while it is being started and once a task took it.
   */
  launcher?: ExecSession;
}

interface Pool {
  readonly definition: PoolDefinition;
  /** The spec as resolved for keys (seccomp read), without host bind resolution. */
  readonly spec: ResolvedTaskSpec;
  readonly key: string;
  allowance: number;
  readonly slots: Set<Slot>;
  image: ImageRunConfig | undefined;
  fillBackoffMs: number;
  fillRetryAt: number;
  filling: number;
}

/** An idle container taken for a task: the driver thaws it (`ready`) and runs the task in it. */
export interface PoolClaim {
  readonly pool: string;
  readonly containerId: string;
  /** The task's exec argv, its command resolved against the pool image's entrypoint and command. */
  readonly argv: readonly string[];
  /** Whether the container was frozen when taken (it is thawed by `WarmPools.ready`). */
  readonly wasFrozen: boolean;
  /** The container's launcher, now the task's to use (see Slot.launcher and launch.ts). */
  readonly launcher: ExecSession;
}

export type ClaimResult = { kind: 'claimed'; claim: PoolClaim } | { kind: 'cold'; reason: ColdReason; pool?: string; detail?: string };

/** The pools of one owner (a TaskDriver's `pools`). See README "Warm pools". */
export class WarmPools {
  readonly #options: WarmPoolsOptions;
  readonly #pools = new Map<string, Pool>();
  readonly #events: Events<{ event: PoolEvent }>;
  /** Containers in use by tasks, by container id: their pool and slot. */
  readonly #inUse = new Map<string, { pool: Pool; slot: Slot }>();
  readonly #removals = new Set<Promise<void>>();
  #holderPath: Promise<string> | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  #started = false;
  #closed = false;

  /**
   * `resolve`: a definition's spec validated as a task spec (the driver's resolve and seccomp
   * profiles): each pool's spec must itself be poolable. Throws a ValidationError naming
   * `pools[i].field` at fault.
   */
  constructor(definitions: readonly PoolDefinition[], resolve: (spec: PoolDefinition['spec']) => ResolvedTaskSpec, options: WarmPoolsOptions) {
    this.#options = options;
    this.#events = new Events(options.logger);
    const issues: FieldIssue[] = [];
    for (const [i, definition] of definitions.entries()) {
      const at = `pools[${i}]`;
      if (typeof definition.name !== 'string' || !POOL_NAME.test(definition.name)) issues.push({ field: `${at}.name`, rule: `must match ${POOL_NAME.source}` });
      else if (this.#pools.has(definition.name)) issues.push({ field: `${at}.name`, rule: `pool ${definition.name} is declared twice` });
      if (!Number.isInteger(definition.size) || definition.size < 0 || definition.size > POOL_MAX_SIZE) issues.push({ field: `${at}.size`, rule: `must be a whole number from 0 to ${POOL_MAX_SIZE}` });
      if (definition.freezeAfterMs !== undefined && (!Number.isFinite(definition.freezeAfterMs) || definition.freezeAfterMs < 0 || definition.freezeAfterMs > 2_147_483_647)) {
        issues.push({ field: `${at}.freezeAfterMs`, rule: 'must be a number of milliseconds from 0 to 24 days' });
      }
      let spec: ResolvedTaskSpec;
      try {
        spec = resolve(definition.spec);
      } catch (error) {
        if (error instanceof ValidationError) {
          issues.push(...error.issues.map((issue) => ({ field: `${at}.spec.${issue.field}`, rule: issue.rule })));
          continue;
        }
        throw error;
      }
      const notPoolable = notPoolableReason(spec);
      if (notPoolable !== undefined) issues.push({ field: `${at}.spec`, rule: `cannot be pooled (${notPoolable}): see README "Warm pools"` });
      if (issues.length > 0 || this.#pools.has(definition.name)) continue;
      this.#pools.set(definition.name, {
        definition,
        spec,
        key: poolKeyOf(spec),
        allowance: definition.size,
        slots: new Set(),
        image: undefined,
        fillBackoffMs: FILL_BACKOFF_MS.initial,
        fillRetryAt: 0,
        filling: 0,
      });
    }
    if (issues.length > 0) throw new ValidationError(issues);
  }

  /** Whether any pool is declared. */
  get declared(): boolean {
    return this.#pools.size > 0;
  }

  /**
   * Removes this owner's pool containers from earlier runs, except those in `keep` (in use by tasks
   * being recovered: `recoverWarm` takes them), then fills each pool in the background. Call once.
   */
  async start(options: { keep?: ReadonlySet<string> } = {}): Promise<void> {
    if (this.#started || this.#closed) return;
    this.#started = true;
    if (this.#pools.size === 0) return;
    const { engine, ownerId, logger } = this.#options;
    const rows = await engine.listContainers({ all: true, labels: [`${LABELS.managed}=true`, `${LABELS.ownerId}=${ownerId}`, `${LABELS.role}=${ROLES.pool}`] });
    const known = this.containerIds();
    await Promise.all(
      rows
        .filter((row) => row.labels[LABELS.ownerId] === ownerId && row.labels[LABELS.role] === ROLES.pool && !options.keep?.has(row.id) && !known.has(row.id))
        .map(async (row) => {
          try {
            await removeContainer(engine, row.id, this.#options.retry);
            this.#emit({ type: 'pool.removed', pool: row.labels[LABELS.pool] ?? '', containerId: row.id, reason: 'orphaned' });
          } catch (error) {
            logger.warn({ containerId: row.id, code: codeOf(error) }, 'could not remove a pool container of an earlier run');
          }
        }),
    );
    for (const pool of this.#pools.values()) void this.#fill(pool);
    this.#sweepTimer = setInterval(() => void this.#sweep(), POOL_SWEEP_MS);
    // The sweep serves the pools; it alone must not keep a process alive.
    this.#sweepTimer.unref();
  }

  /**
   * One list of this owner's pool containers: an idle (or frozen) one the engine no longer shows
   * running or paused (killed, or gone) is forgotten and replaced, so a take rarely meets a broken
   * container (one that does is removed at the take, and the task starts cold).
   */
  async #sweep(): Promise<void> {
    if (this.#closed) return;
    const { engine, ownerId, logger } = this.#options;
    const listedAt = Date.now();
    let rows;
    try {
      rows = await engine.listContainers({ all: true, labels: [`${LABELS.managed}=true`, `${LABELS.ownerId}=${ownerId}`, `${LABELS.role}=${ROLES.pool}`] });
    } catch (error) {
      logger.debug({ code: codeOf(error) }, 'could not list the pool containers; the next sweep tries again');
      return;
    }
    const alive = new Set(rows.filter((row) => row.state === 'running' || row.state === 'paused').map((row) => row.id));
    for (const pool of this.#pools.values()) {
      const broken = [...pool.slots].filter(
        (slot) => (slot.state === 'idle' || slot.state === 'frozen') && slot.freezing === undefined && (slot.idleSinceMs ?? listedAt) < listedAt && slot.containerId !== undefined && !alive.has(slot.containerId),
      );
      for (const slot of broken) {
        logger.warn({ pool: pool.definition.name, containerId: slot.containerId }, 'an idle pool container stopped; removing and replacing it');
        void this.#remove(pool, slot, 'failed');
      }
      if (broken.length > 0) void this.#fill(pool);
    }
  }

  /** Every pool's containers by state. */
  snapshot(): PoolSnapshot[] {
    return [...this.#pools.values()].map((pool) => {
      const count = (state: SlotState): number => [...pool.slots].filter((slot) => slot.state === state).length;
      return { name: pool.definition.name, target: Math.min(pool.definition.size, pool.allowance), idle: count('idle'), frozen: count('frozen'), inUse: count('in-use'), starting: count('starting') };
    });
  }

  /** Every pool container this process knows: idle, frozen, starting (once created), in use. The reconciler and prune leave these alone. */
  containerIds(): ReadonlySet<string> {
    const ids = new Set<string>();
    for (const pool of this.#pools.values()) for (const slot of pool.slots) if (slot.containerId !== undefined) ids.add(slot.containerId);
    return ids;
  }

  /** Calls `listener` with every later pool event; returns its unsubscribe. */
  onEvent(listener: (event: PoolEvent) => void): () => void {
    return this.#events.on('event', listener);
  }

  /**
   * The owner's admission: pool `name` keeps at most `containers` idle containers (default: its
   * size). Idle ones above it are removed at once; raised again, the pool refills.
   */
  setAllowance(name: string, containers: number): void {
    const pool = this.#pool(name);
    if (!Number.isInteger(containers) || containers < 0) throw new ValidationError([{ field: 'containers', rule: 'must be a whole number, 0 or more' }]);
    pool.allowance = containers;
    this.#trim(pool);
    void this.#fill(pool);
  }

  /** One container's resources of pool `name` (what the owner's admission budget counts per idle container). */
  demandOf(name: string): { memoryBytes?: number; cpuMilli?: number } {
    const { resources } = this.#pool(name).spec;
    return { ...(resources.memoryBytes === undefined ? {} : { memoryBytes: resources.memoryBytes }), ...(resources.cpuMilli === undefined ? {} : { cpuMilli: resources.cpuMilli }) };
  }

  /** Removes the idle containers and stops refilling; containers in use are left to their tasks (destroy removes them). */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweepTimer);
    for (const pool of this.#pools.values()) {
      for (const slot of pool.slots) if (slot.state === 'idle' || slot.state === 'frozen') void this.#remove(pool, slot, 'closed');
      this.#options.releaseImage?.(holderIdOf(pool));
    }
    // Containers still being made are removed as their create ends (see #addOne); their removals are awaited too.
    while (this.#removals.size > 0 || [...this.#pools.values()].some((pool) => pool.filling > 0)) {
      await Promise.race([...this.#removals, sleep(50)]);
    }
  }

  /**
   * @internal The driver's take: an idle container of a pool the task matches, marked in use (and
   * its refill begun), or why the task starts cold. Synchronous, so two tasks never take one container.
   */
  claim(spec: ResolvedTaskSpec, options: { waitHealthy?: boolean; inGroup?: boolean }): ClaimResult {
    if (this.#pools.size === 0 || this.#closed) return { kind: 'cold', reason: 'no-pool' };
    const notPoolable = notPoolableReason(spec, options);
    if (notPoolable !== undefined) return { kind: 'cold', reason: 'not-poolable', detail: notPoolable };
    const key = poolKeyOf(spec);
    const matching = [...this.#pools.values()].filter((pool) => matchesPool({ key: pool.key, env: pool.spec.env }, key, spec.env));
    if (matching.length === 0) return { kind: 'cold', reason: 'no-match' };
    for (const pool of matching) {
      if (pool.image === undefined) continue;
      const argv = execArgv(spec, pool.image);
      // Nothing to run: the cold path's create gives the engine's own refusal.
      if (argv === undefined) return { kind: 'cold', reason: 'not-poolable', pool: pool.definition.name, detail: 'no command' };
      // A running idle container first (no thaw), then a frozen one.
      const slots = [...pool.slots];
      const offered = slots.filter((s) => (s.state === 'idle' || s.state === 'frozen') && s.launcher !== undefined);
      const slot = offered.find((s) => s.state === 'idle' && s.freezing === undefined) ?? offered[0];
      if (slot === undefined || slot.containerId === undefined || slot.launcher === undefined) continue;
      const wasFrozen = slot.state === 'frozen' || slot.freezing !== undefined;
      clearTimeout(slot.freezeTimer);
      slot.state = 'in-use';
      const launcher = slot.launcher;
      slot.launcher = undefined;
      this.#inUse.set(slot.containerId, { pool, slot });
      void this.#fill(pool);
      return { kind: 'claimed', claim: { pool: pool.definition.name, containerId: slot.containerId, argv, wasFrozen, launcher } };
    }
    return { kind: 'cold', reason: 'pool-empty', pool: matching[0]!.definition.name };
  }

  /** @internal Thaws a claimed container that was frozen (or being frozen). Throws when the engine cannot. */
  async ready(claim: PoolClaim, signal?: AbortSignal): Promise<void> {
    const taken = this.#inUse.get(claim.containerId);
    if (taken?.slot.freezing) await taken.slot.freezing;
    if (!claim.wasFrozen) return;
    try {
      await this.#options.engine.unpauseContainer(claim.containerId, { signal });
    } catch (error) {
      // Refused as not paused (a freeze that failed, or a retry after a lost answer): the inspect decides.
      const state = await this.#options.engine.inspectContainer(claim.containerId, { signal }).catch(() => undefined);
      if (state === undefined || !state.running || state.paused) throw error;
    }
    this.#emit({ type: 'pool.thawed', pool: claim.pool, containerId: claim.containerId });
  }

  /** @internal The task took the container (its exec started). */
  noteHit(claim: PoolClaim, taskId: string): void {
    this.#emit({ type: 'pool.hit', pool: claim.pool, taskId });
  }

  /** @internal A task started cold: said for metrics. */
  noteMiss(taskId: string, reason: ColdReason, pool?: string): void {
    this.#emit({ type: 'pool.miss', taskId, reason, ...(pool === undefined ? {} : { pool }) });
  }

  /** @internal A claimed container could not serve its task: removed (the task starts cold). */
  discard(containerId: string): Promise<void> {
    const taken = this.#inUse.get(containerId);
    if (!taken) return Promise.resolve();
    this.#inUse.delete(containerId);
    return this.#remove(taken.pool, taken.slot, 'failed');
  }

  /**
   * @internal Asked when a warm task is destroyed: with hot reuse, a container whose task ended on
   * its own (success or failure, not OOM, not stopped) and that still runs goes back idle; else
   * the caller removes it (and calls `removed`).
   */
  async release(containerId: string, end: EndState | undefined): Promise<'returned' | 'remove'> {
    const taken = this.#inUse.get(containerId);
    if (!taken) return 'remove';
    const { pool, slot } = taken;
    const endedOnItsOwn = end !== undefined && (end.kind === 'success' || (end.kind === 'failed' && end.reason === undefined));
    if (!pool.definition.reuse || !endedOnItsOwn || this.#closed) return 'remove';
    const idle = [...pool.slots].filter((s) => s.state === 'idle' || s.state === 'frozen').length;
    if (idle >= Math.min(pool.definition.size, pool.allowance) && pool.definition.size > 0) return 'remove';
    try {
      const state = await this.#options.engine.inspectContainer(containerId);
      if (!state.running || state.paused) return 'remove';
    } catch {
      return 'remove';
    }
    // Offered again only with a new launcher running in it, as at fill (the task's became the task).
    slot.launcher = undefined;
    if (!(await this.#startLauncher(pool, slot)) || this.#closed || slot.state !== 'in-use') {
      (slot.launcher as ExecSession | undefined)?.close();
      slot.launcher = undefined;
      return 'remove';
    }
    this.#inUse.delete(containerId);
    this.#markIdle(pool, slot);
    return 'returned';
  }

  /** @internal The container of a warm task was removed by its handle. */
  removed(containerId: string): void {
    const taken = this.#inUse.get(containerId);
    if (!taken) return;
    this.#inUse.delete(containerId);
    taken.pool.slots.delete(taken.slot);
    this.#emit({ type: 'pool.removed', pool: taken.pool.definition.name, containerId, reason: 'served' });
  }

  /** @internal A container of a recovered warm task: known (and in use) until its handle removes it. */
  adoptInUse(poolName: string, containerId: string): void {
    const pool = this.#pools.get(poolName);
    if (!pool || this.#inUse.has(containerId)) return;
    const slot: Slot = { containerId, state: 'in-use' };
    pool.slots.add(slot);
    this.#inUse.set(containerId, { pool, slot });
  }

  #pool(name: string): Pool {
    const pool = this.#pools.get(name);
    if (!pool) throw new ValidationError([{ field: 'name', rule: `no pool named ${JSON.stringify(name)} is declared` }]);
    return pool;
  }

  #emit(event: PoolEvent): void {
    this.#events.emit('event', event);
  }

  /** Idle containers above the allowance are removed, frozen ones first (they are the slower to take). */
  #trim(pool: Pool): void {
    const idle = [...pool.slots].filter((slot) => slot.state === 'idle' || slot.state === 'frozen').sort((a, b) => Number(b.state === 'frozen') - Number(a.state === 'frozen'));
    const limit = Math.min(pool.definition.size, pool.allowance);
    for (const slot of idle.slice(0, Math.max(0, idle.length - limit))) void this.#remove(pool, slot, 'shrunk');
  }

  /** Creates containers until the pool holds its target (size within the allowance), a few at once. */
  async #fill(pool: Pool): Promise<void> {
    if (!this.#started || this.#closed) return;
    const wanted = (): number => {
      const held = [...pool.slots].filter((slot) => slot.state !== 'in-use').length;
      return Math.min(pool.definition.size, pool.allowance) - held;
    };
    while (!this.#closed && pool.filling < FILL_CONCURRENCY && wanted() > 0) {
      const waitMs = pool.fillRetryAt - Date.now();
      if (waitMs > 0) {
        // A pool whose creates fail waits out its backoff once, then fills again.
        if (pool.filling === 0) setTimeout(() => void this.#fill(pool), waitMs).unref();
        return;
      }
      pool.filling++;
      const slot: Slot = { containerId: undefined, state: 'starting' };
      pool.slots.add(slot);
      void this.#addOne(pool, slot).finally(() => {
        pool.filling--;
        void this.#fill(pool);
      });
    }
  }

  async #addOne(pool: Pool, slot: Slot): Promise<void> {
    const { engine, logger, retry: policy, ownerId } = this.#options;
    const startedAt = performance.now();
    const name = pool.definition.name;
    const slotId = randomUUID().slice(0, 8);
    const identity = { taskId: `${name}-${slotId}`, ownerId, startAttempt: randomUUID(), poolName: name };
    try {
      if (pool.image === undefined) {
        await this.#options.acquireImage?.(pool.spec, holderIdOf(pool));
        const inspectImage = engine.inspectImage?.bind(engine);
        if (inspectImage === undefined) throw new ValidationError([{ field: 'pools', rule: 'need an engine that inspects images' }]);
        const image = await retry(() => inspectImage(pool.spec.image), { ...policy, shouldRetry: isAmbiguousFailure });
        pool.image = { ...(image.entrypoint ? { entrypoint: image.entrypoint } : {}), ...(image.cmd ? { cmd: image.cmd } : {}) };
      }
      const holderPath = await (this.#holderPath ??= ensureHolder(this.#options.holderDir).catch((error: unknown) => {
        this.#holderPath = undefined;
        throw error;
      }));
      // Bind sources are resolved on the host for each create, as for a task's.
      const plan = poolContainerPlan(this.#options.prepareSpec(pool.spec), {
        poolName: name,
        ownerId,
        slotId,
        startAttempt: identity.startAttempt,
        holderPath,
        ...(this.#options.ownerProcess ? { ownerProcess: this.#options.ownerProcess } : {}),
      });
      const created = await createIdempotent(engine, plan, identity, policy, logger);
      slot.containerId = created.containerId;
      await connectNetworks(engine, created.containerId, plan, policy);
      await startIdempotent(engine, created.containerId, policy, logger);
      pool.fillBackoffMs = FILL_BACKOFF_MS.initial;
      pool.fillRetryAt = 0;
      if (this.#closed || !pool.slots.has(slot)) {
        await this.#remove(pool, slot, 'closed');
        return;
      }
      const launched = await this.#startLauncher(pool, slot);
      if (this.#closed || !pool.slots.has(slot)) {
        await this.#remove(pool, slot, 'closed');
        return;
      }
      // Never offered without a launcher: removed (below) and made again after the backoff.
      if (!launched) throw new Error('the container\'s launcher could not be started');
      this.#markIdle(pool, slot);
      this.#emit({ type: 'pool.refilled', pool: name, containerId: created.containerId, latencyMs: Math.round(performance.now() - startedAt) });
      // Over the allowance meanwhile (it was lowered while this one started): trimmed now.
      this.#trim(pool);
    } catch (error) {
      logger.warn({ pool: name, code: codeOf(error), error: error instanceof Error ? error.message : String(error) }, 'could not add a container to the pool; trying again after a backoff');
      // The holder's file may have been removed meanwhile (a temporary directory cleaned): written again next time.
      this.#holderPath = undefined;
      pool.fillRetryAt = Date.now() + pool.fillBackoffMs;
      pool.fillBackoffMs = Math.min(pool.fillBackoffMs * 2, FILL_BACKOFF_MS.max);
      if (slot.containerId !== undefined) await this.#remove(pool, slot, 'failed');
      else pool.slots.delete(slot);
    }
  }

  /**
   * A started container whose launcher runs becomes idle: a task that takes it then costs one
   * write. Frozen after the pool's idle time (the launcher is known to run, so no exec is being set
   * up in it: a freeze then would wedge the engine, see #startLauncher).
   */
  #markIdle(pool: Pool, slot: Slot): void {
    slot.state = 'idle';
    slot.idleSinceMs = Date.now();
    const freezeAfterMs = pool.definition.freezeAfterMs;
    if (freezeAfterMs === undefined) return;
    slot.freezeTimer = setTimeout(() => this.#freeze(pool, slot), freezeAfterMs);
    slot.freezeTimer.unref();
  }

  /**
   * Starts the container's launcher (an exec of the holder's launch mode, its streams attached), so
   * that a task taking the container costs one write. Resolves whether it runs. A container whose
   * launcher cannot be started is never offered to a task (the caller removes it): its create or
   * start is not retried, for a lost answer may hide an exec being set up. A launcher that ends or
   * hangs up while its container is idle gets the container removed and replaced.
   */
  async #startLauncher(pool: Pool, slot: Slot): Promise<boolean> {
    const containerId = slot.containerId;
    const inspectExec = this.#options.engine.inspectExec?.bind(this.#options.engine);
    if (containerId === undefined || inspectExec === undefined) return false;
    let launcher: ExecSession;
    try {
      const { engine } = this.#options;
      launcher = await execGateOf(engine).setup(containerId, () => engine.exec(containerId, { cmd: [...LAUNCHER_ARGV], stdin: true, tty: false }, { retry: { ...this.#options.retry, attempts: 1 } }), inspectExec);
    } catch (error) {
      this.#options.logger.warn({ pool: pool.definition.name, containerId, code: codeOf(error) }, 'could not start the launcher of a pool container; removing the container');
      return false;
    }
    // The engine answers an exec's start before its runtime has set the process up; a container
    // frozen in between wedges the engine (the runtime's setup waits in the frozen cgroup and
    // holds the container's lock), so the launcher counts only once the engine shows it running.
    if (!(await launcherRunning(inspectExec, launcher.id))) {
      launcher.close();
      this.#options.logger.warn({ pool: pool.definition.name, containerId }, 'the launcher of a pool container did not start running; removing the container');
      return false;
    }
    // Removed or closed meanwhile: a launcher nobody will use is hung up.
    if (!pool.slots.has(slot) || this.#closed) {
      launcher.close();
      return false;
    }
    slot.launcher = launcher;
    void (launcher.closed ?? Promise.resolve()).then(() => {
      // Still the container's (not taken by a task): it cannot serve one now.
      if (slot.launcher !== launcher || (slot.state !== 'idle' && slot.state !== 'frozen')) return;
      this.#options.logger.warn({ pool: pool.definition.name, containerId }, 'the launcher of an idle pool container ended; removing and replacing the container');
      void this.#remove(pool, slot, 'failed');
      void this.#fill(pool);
    });
    return true;
  }

  #freeze(pool: Pool, slot: Slot): void {
    const containerId = slot.containerId;
    if (slot.state !== 'idle' || containerId === undefined || this.#closed) return;
    const freezing = (async () => {
      try {
        // Under the container's gate, as every freeze (see tasks/exec-gate.ts).
        await execGateOf(this.#options.engine).freeze(containerId, () => this.#options.engine.pauseContainer(containerId));
        if (slot.state === 'idle') slot.state = 'frozen';
        this.#emit({ type: 'pool.frozen', pool: pool.definition.name, containerId });
      } catch (error) {
        // A container the engine cannot pause is broken (gone, stopped): removed, and refilled.
        this.#options.logger.warn({ pool: pool.definition.name, containerId, code: codeOf(error) }, 'could not freeze an idle pool container; removing it');
        if (slot.state === 'idle') {
          await this.#remove(pool, slot, 'failed');
          void this.#fill(pool);
        }
      } finally {
        slot.freezing = undefined;
      }
    })();
    slot.freezing = freezing;
  }

  /** Removes a slot's container (if it has one) and forgets the slot; failures are logged (the reconciler removes what is left). */
  #remove(pool: Pool, slot: Slot, reason: 'shrunk' | 'failed' | 'closed'): Promise<void> {
    clearTimeout(slot.freezeTimer);
    slot.launcher?.close();
    slot.launcher = undefined;
    pool.slots.delete(slot);
    const containerId = slot.containerId;
    if (containerId === undefined) return Promise.resolve();
    const removal = (async () => {
      try {
        await removeContainer(this.#options.engine, containerId, this.#options.retry);
        this.#emit({ type: 'pool.removed', pool: pool.definition.name, containerId, reason });
      } catch (error) {
        if (!isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) this.#options.logger.warn({ pool: pool.definition.name, containerId, code: codeOf(error) }, 'could not remove a pool container');
      }
    })();
    this.#removals.add(removal);
    void removal.finally(() => this.#removals.delete(removal));
    return removal;
  }
}

function holderIdOf(pool: Pool): string {
  return `pool-${pool.definition.name}`;
}

/** Whether the engine shows the exec running (its process set up) within a few seconds. */
async function launcherRunning(inspectExec: NonNullable<PoolEngine['inspectExec']>, execId: string): Promise<boolean> {
  for (const deadline = Date.now() + LAUNCHER_SETUP_MS; Date.now() < deadline; ) {
    const exec = await inspectExec(execId).catch(() => undefined);
    if (exec?.running === true && exec.pid > 0) return true;
    if (exec !== undefined && !exec.running && exec.exitCode !== null) return false;
    await sleep(5);
  }
  return false;
}
