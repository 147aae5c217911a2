import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { mkdir, readFile, writeFile, chmod } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { asBerthError, codeOf, isBerthError, ValidationError, type ErrorCode } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { Engine } from '../engine/engine.js';
import { ImageCoordinator, type ImageCoordinatorSnapshot } from '../images/index.js';
import { META_KEYS } from '../state/meta.js';
import { openStore, STORE_FILE_NAME, type Store } from '../state/store.js';
import { openPostgresStore } from '../state/postgres/backend.js';
import { TaskDriver, type ImageProvider } from '../tasks/driver.js';
import { AdmissionController, resolveDemand } from './admission.js';
import { ConfigHolder, type AgentConfig, type ConfigSources, type ReloadResult } from './config.js';
import { AgentEvents, announce } from './events.js';
import { readDiskUsage, type DiskUsageReader } from './disk-space.js';
import { AgentGarbage } from './garbage.js';
import { TaskRetention } from './retention.js';
import { TaskSupervisor } from './supervisor.js';
import { GroupCoordinator } from './groups.js';
import { TaskLogStore } from './task-logs.js';
import { ArtifactStore } from './artifacts.js';
import { UsageSampler } from './usage.js';
import { SecretBox } from './secret-box.js';
import { UploadStore, uploadsNamedBy } from './uploads.js';
import { agentSpecPolicy, configuredRegistryCredentials } from './registry-credentials.js';
import { UNENDED_STATES } from '../state/tasks.js';
import { withAgentDefaults } from './spec-defaults.js';
import { PortAllocator } from './ports.js';
import type { TaskSpec } from '../spec/schema.js';
import { ClusterMember, singleNode, type NodeListing } from './cluster-member.js';
import { addressFromListener } from './cluster-config.js';
import { readClusterCredentials, TaskForwarder } from './cluster-forward.js';
import { ClusterPlacement } from './cluster-placement.js';

/**
 * Everything a running agent is made of; the HTTP layer and tests reach the parts through it.
 * Disposable like a task handle: `await using agent = await createAgent(…)` closes it on scope exit.
 */
export interface AgentRuntime extends AsyncDisposable {
  readonly agentId: string;
  readonly config: ConfigHolder;
  readonly store: Store;
  readonly engine: Engine;
  readonly images: ImageCoordinator;
  readonly driver: TaskDriver;
  readonly supervisor: TaskSupervisor;
  /** Task groups (`/v1/groups`): their tasks are the supervisor's, started by the group. */
  readonly groups: GroupCoordinator;
  /** Host ports handed out to tasks (and groups), durably (`ports.range`, `ports.hostIp`). */
  readonly ports: PortAllocator;
  /** The reconciler, prune and the image budget. */
  readonly garbage: AgentGarbage;
  /** Removal of ended tasks by age, count and disk watermark (`retention.*`). */
  readonly retention: TaskRetention;
  readonly logs: TaskLogStore;
  /** Archives uploaded for specs' `files: [{ upload }]`. */
  readonly uploads: UploadStore;
  /** Tasks' collected artifacts under `<dataDir>/artifacts`. */
  readonly artifacts: ArtifactStore;
  readonly admission: AdmissionController;
  /** Cluster membership, when `cluster.postgres` is set. */
  readonly cluster: ClusterMember | undefined;
  /** Cluster placement (the queue, the claimer, the report outbox), when `cluster.postgres` is set. */
  readonly placement: ClusterPlacement | undefined;
  /**
   * Starts cluster membership (when configured) once the API listens: `tcp` is the TCP listener
   * bound, whose address is the node's unless `cluster.address` says. Idempotent.
   */
  joinCluster(tcp: { host: string; port: number } | undefined): void;
  /** `GET /v1/nodes`: the cluster's nodes, or this agent alone (mode single). */
  listNodes(): Promise<NodeListing>;
  /** Reads through any node: forwards requests for tasks other nodes run (cluster mode only). */
  readonly forwarder: TaskForwarder | undefined;
  readonly events: AgentEvents;
  readonly logger: Logger;
  /** The bearer token every API request but health must carry: the one `reloadToken` read last. */
  readonly token: string;
  /**
   * Re-reads the token file (SIGHUP), so that an operator rotates the token by writing a new one
   * there: from then on requests need the new token, while open connections and streams (followed
   * logs, events) stay open. A file that cannot be read or is empty is refused and the old token
   * stays. Nothing is logged here: the caller logs the result once.
   */
  reloadToken(): TokenReload;
  /** Calls the listener with the code of every error the supervisor meets (metrics); returns the unsubscribe. */
  onError(listener: (code: ErrorCode) => void): () => void;
  /**
   * Whether the engine answers one ping (never retried) within `health.engineTimeout`, and if not,
   * why. Probes that arrive while a ping is under way share it, so a wedged engine is not flooded.
   */
  engineHealth(): Promise<EngineHealth>;
  imageSnapshot(): ImageCoordinatorSnapshot;
  /** Re-reads the configuration (SIGHUP); an invalid file is refused and the old one stays. */
  reload(): ReloadResult;
  /**
   * Waits for the engine, then recovers the tasks of an earlier run and starts the garbage
   * collection; until then the agent answers reads from its store and refuses work
   * (BERTH_AGENT_UNAVAILABLE). Idempotent: every call gets the one start.
   */
  start(): Promise<void>;
  /** Whether start has finished: recovery is done and the agent takes work. */
  readonly started: boolean;
  /** Stops taking work and closes the store; running containers keep running. Idempotent: every call gets the one close. */
  close(): Promise<void>;
}

/**
 * The agent's own state (not a task's: see tasks/lifecycle.ts): built (it answers reads and refuses
 * work) → recovering (it waits for the engine, then recovers its tasks) → open (it takes work);
 * closed from any of them, and final. The supervisor's own `recovering | open | closed` follows it.
 */
type AgentState = 'built' | 'recovering' | 'open' | 'closed';

/** The engine's condition as health reports it. */
export type EngineHealth = { ok: true } | { ok: false; code: ErrorCode; message: string };

export const TOKEN_FILE_NAME = 'token';

/** What re-reading the token file did: `rotated` when it holds another token than the one in force. */
export type TokenReload = { ok: true; rotated: boolean } | { ok: false; error: ValidationError };

/** Reads the token file as `reloadToken` does: synchronously (it is a line), refusing an empty one. */
function readTokenFile(dataDir: string): { ok: true; token: string } | { ok: false; error: ValidationError } {
  const file = path.join(dataDir, TOKEN_FILE_NAME);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    return { ok: false, error: new ValidationError([{ field: 'token', rule: `${file} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})` }], { cause: error }) };
  }
  const token = text.trim();
  if (token === '' || /\s/.test(token)) return { ok: false, error: new ValidationError([{ field: 'token', rule: `${file} must hold one token: a line without spaces` }]) };
  return { ok: true, token };
}

/** Reads the API token, creating it (mode 0600) at first start. */
export async function ensureToken(dataDir: string): Promise<string> {
  const file = path.join(dataDir, TOKEN_FILE_NAME);
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    const token = randomBytes(32).toString('base64url');
    await writeFile(file, `${token}\n`, { mode: 0o600, flag: 'wx' }).catch(async (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
    });
    await chmod(file, 0o600);
    return (await readFile(file, 'utf8')).trim();
  }
}

/** Records image holders in the store as the driver acquires and releases them, so a restart rebuilds them exactly. */
function durableImageProvider(images: ImageCoordinator, store: Store): ImageProvider {
  return {
    async acquire(image, holderId, options) {
      const acquired = await images.acquire(image, holderId, options);
      store.images.addHolder({ imageId: acquired.imageId, imageRef: image, taskId: holderId });
      // Remembered across restarts: only images berth pulled are ever removed.
      if (acquired.pulled) store.meta.set(pulledImageKey(acquired.imageId), image);
      return acquired;
    },
    release(holderId) {
      images.release(holderId);
      store.images.removeTask(holderId);
    },
  };
}

/** The meta key that records that berth pulled an image (so it may remove it). */
function pulledImageKey(imageId: string): string {
  return `pulled-image:${imageId}`;
}

/** Waits until the engine answers, logging once while it does not: the agent outlives a wedged engine. */
async function waitForEngine(engine: Engine, logger: Logger, signal: AbortSignal): Promise<void> {
  let warned = false;
  while (!signal.aborted) {
    try {
      await engine.checkCompatible();
      if (warned) logger.info({}, 'the engine answers again');
      return;
    } catch (error) {
      if (isBerthError(error, 'BERTH_ENGINE_VERSION')) throw error;
      if (!warned) logger.error({ code: codeOf(error) }, 'the engine does not answer; waiting for it');
      warned = true;
      await delay(1000, undefined, { signal }).catch(() => undefined);
    }
  }
}

/** Parts of the agent a test may replace; nothing else is configurable this way. */
export interface AgentHooks {
  /** How full the data directory's file system is (retention's watermark). Default statfs. */
  diskUsage?: DiskUsageReader;
}

/**
 * The agent's store: the SQLite file in its data directory, or its schema in PostgreSQL
 * (`state.postgres`). A PostgreSQL schema holds one agent's records: another agent's (another host
 * or data directory) is refused, naming the key to change, before anything is read or written.
 */
export function openAgentStore(config: Pick<AgentConfig, 'dataDir' | 'state'>, logger: Logger): Store {
  if (config.state === undefined) return openStore(path.join(config.dataDir, STORE_FILE_NAME), { logger });
  const store = openPostgresStore({ url: config.state.postgresUrl, schema: config.state.schema, deadlineMs: config.state.deadlineMs }, { logger });
  const self = `${hostname()}:${path.resolve(config.dataDir)}`;
  try {
    const owner = store.meta.ensure(META_KEYS.storeOwner, () => self);
    if (owner !== self) {
      throw new ValidationError([{ field: 'state.schema', rule: `schema ${config.state.schema} holds the records of the agent at ${owner}; give each agent a schema of its own` }]);
    }
  } catch (error) {
    store.close();
    throw error;
  }
  logger.info({ location: store.location }, 'the agent keeps its records in PostgreSQL');
  return store;
}

/**
 * Builds the agent's parts from its configuration, recovers the tasks of an earlier run, and
 * returns the runtime. Serving HTTP is the caller's (see `serveAgent`).
 */
export async function createAgent(sources: ConfigSources, logger: Logger, hooks: AgentHooks = {}): Promise<AgentRuntime> {
  const runtime = await buildAgent(sources, logger, hooks);
  await runtime.start();
  return runtime;
}

/** How often the event log is trimmed to its window (`events.window`, `events.maxCount`). */
const EVENT_TRIM_PERIOD_MS = 10_000;

/**
 * Builds the agent's parts (store, token, engine client, supervisor …) without waiting for the
 * engine: the caller may serve the API first, so that health and reads answer while a wedged engine
 * holds up recovery, then calls `start()`.
 */
export async function buildAgent(sources: ConfigSources, logger: Logger, hooks: AgentHooks = {}): Promise<AgentRuntime> {
  const config = new ConfigHolder(sources);
  const initial: AgentConfig = config.current();
  await mkdir(initial.dataDir, { recursive: true, mode: 0o700 });
  const store = openAgentStore(initial, logger);
  const agentId = initial.agentId ?? store.meta.ensure(META_KEYS.agentId, () => `agent-${randomUUID().slice(0, 8)}`);
  let token = await ensureToken(initial.dataDir);
  const secrets = await SecretBox.openIn(initial.dataDir);
  const engine = new Engine({ ...initial.engine, deadlines: initial.engineDeadlines });
  const events = new AgentEvents({ log: store.events, logger });
  // The window is trimmed now and every few seconds, so the log stays within it on a busy host too.
  const trimEvents = (): number => events.trim({ maxAgeMs: config.current().events.windowMs, maxCount: config.current().events.maxCount });
  trimEvents();
  const eventTrimmer = setInterval(trimEvents, EVENT_TRIM_PERIOD_MS);
  eventTrimmer.unref();
  const images = new ImageCoordinator({
    engine,
    logger,
    options: {
      removeDelay: initial.images.removeDelayMs,
      cleanup: initial.images.cleanup,
      pullActivityTimeout: initial.images.pullActivityTimeoutMs,
    },
  });
  announce.images(images, events);
  // The agent checks each spec against the policy in force at submit (the supervisor); the driver
  // starts and recovers it as accepted (startAccepted, recover), so the driver's own policy never applies to it.
  const imageProvider = durableImageProvider(images, store);
  // No owner-process labels: the agent's containers outlive its process (a restarted agent recovers them), and its reconciler tracks them by owner id.
  const uploads = new UploadStore(path.join(initial.dataDir, 'uploads'), () => ({ maxBytes: config.current().files.uploadMaxBytes, ttlMs: config.current().files.uploadTtlMs }), logger);
  const driver = new TaskDriver({
    engine,
    ownerId: agentId,
    ownerProcess: 'none',
    // No task may mount the agent's state: its token and API socket would hand it the agent.
    protectedHostPaths: [initial.dataDir, initial.socketPath],
    images: imageProvider,
    logger,
    relistPeriodMs: initial.tasks.relistPeriodMs,
    // `registryAuth: { ref }` is resolved against the configuration in force when the task pulls.
    registryCredentials: (ref) => configuredRegistryCredentials(config.current(), ref),
    openUpload: (id) => uploads.open(id),
    // Warm pools (`pools`): their specs were checked against the policy at load; the driver checks
    // them again under the same policy (and their bind sources at each create), which applies to them alone.
    ...(initial.pools.length > 0 ? { pools: initial.pools, holderDir: path.join(initial.dataDir, 'holder'), policy: agentSpecPolicy(initial) } : {}),
  });
  const artifacts = new ArtifactStore(path.join(initial.dataDir, 'artifacts'), logger);
  const logs = new TaskLogStore(path.join(initial.dataDir, 'logs'), { maxFileBytes: initial.logs.maxFileBytes, maxFiles: initial.logs.maxFiles });
  const admission = new AdmissionController(initial.admission);
  // The pools' idle containers draw from the budget: admission tells the pools how many each may keep.
  admission.onAllowance((pool, containers) => driver.pools.setAllowance(pool, containers));
  admission.setPools(initial.pools.map((pool) => ({ name: pool.name, size: pool.size, demand: resolveDemand(driver.pools.demandOf(pool.name), initial.defaults.resources) })));
  const errorListeners = new Set<(code: ErrorCode) => void>();
  const usage = new UsageSampler({ logger });
  const ports = new PortAllocator(store.ports, { range: initial.ports.range, hostIp: initial.ports.hostIp });
  const supervisor = new TaskSupervisor({
    store,
    ports,
    driver,
    engine,
    logs,
    admission,
    events,
    logger,
    policy: () => ({ ...agentSpecPolicy(config.current()), uploadExists: (id: string) => uploads.has(id) }),
    // An upload is extracted when the task's container is made; a task that may be restarted needs it again (it is then removed by files.uploadTtl).
    onStarted: (record) => {
      const restart = (record.spec as { restart?: { policy?: unknown } }).restart;
      if (restart === undefined || restart.policy === undefined || restart.policy === 'never') {
        for (const id of uploadsNamedBy(record.spec)) void uploads.remove(id).catch(() => undefined);
      }
    },
    secrets,
    defaultDemand: () => config.current().defaults.resources,
    withDefaults: (spec) => withAgentDefaults(spec, config.current()),
    onError: (code) => {
      for (const listener of errorListeners) listener(code);
    },
    pingEngine: (signal) => engine.ping({ attempts: 1, deadlineMs: config.current().health.engineTimeoutMs, signal }),
    startOutageLimitMs: () => config.current().tasks.startOutageLimitMs,
    usage,
    artifacts: { store: artifacts, maxBytes: () => config.current().artifacts.maxBytes },
    warm: driver,
    clusterMode: initial.cluster !== undefined,
  });
  const groups = new GroupCoordinator({
    store,
    supervisor,
    admission,
    engine,
    events,
    logger,
    ownerId: agentId,
    policy: () => ({ ...agentSpecPolicy(config.current()), uploadExists: (id: string) => uploads.has(id) }),
    infraImage: () => config.current().groups.infraImage,
    acquireImage: async (image, holderId) => {
      await images.acquire(image, holderId);
    },
    releaseImage: (holderId) => {
      images.release(holderId);
    },
    retention: () => config.current().retention,
    // A group's ports are held under its id (owner kind `group`) from its submit to its cleanup.
    ports,
  });
  let healthPing: Promise<EngineHealth> | undefined;
  const engineHealth = (): Promise<EngineHealth> =>
    (healthPing ??= engine
      .ping({ attempts: 1, deadlineMs: config.current().health.engineTimeoutMs })
      .then(
        (): EngineHealth => ({ ok: true }),
        (error: unknown): EngineHealth => {
          const berthError = asBerthError(error);
          return { ok: false, code: berthError.code, message: berthError.message };
        },
      )
      .finally(() => (healthPing = undefined)));

  const closing = new AbortController();
  // A group's infrastructure container, network and volume are live until its cleanup has removed them.
  const liveGroupIds = (): string[] => store.groups.listUnfinished().map((group) => group.id);
  const garbage = new AgentGarbage({ engine, store, images, events, logger, agentId, config: initial, current: () => config.current(), liveGroupIds, livePoolContainerIds: () => driver.pools.containerIds() });
  const diskUsage = hooks.diskUsage ?? readDiskUsage;
  const retention = new TaskRetention({
    store,
    forget: (taskIds) => supervisor.forget(taskIds),
    outputBytes: (taskId) => logs.outputBytes(taskId),
    diskUsage: () => diskUsage(initial.dataDir),
    events,
    logger,
    settings: () => config.current().retention,
    onError: (code) => {
      for (const listener of errorListeners) listener(code);
    },
  });
  const cluster = initial.cluster === undefined ? undefined : new ClusterMember({ config: initial.cluster, agentId, admission, logger });
  // The cluster's credential is read now, so that a wrong file stops the agent at its start, naming the key.
  const forwarder =
    cluster === undefined || initial.cluster === undefined
      ? undefined
      : new TaskForwarder({ selfNodeId: cluster.nodeId, credentials: readClusterCredentials(initial.cluster), index: cluster, logger });
  const placement =
    initial.cluster === undefined || cluster === undefined ? undefined : new ClusterPlacement({ config: initial.cluster, member: cluster, supervisor, store, admission, events, logger });
  const builtAt = new Date();
  let ownAddress = `unix://${initial.socketPath}`;
  const joinCluster = (tcp: { host: string; port: number } | undefined): void => {
    if (tcp !== undefined) ownAddress = addressFromListener(tcp, initial.tls !== undefined);
    cluster?.start(tcp === undefined ? undefined : ownAddress);
    placement?.start();
  };
  const listNodes = async (): Promise<NodeListing> => {
    if (cluster === undefined) return { mode: 'single', self: agentId, nodes: [singleNode(agentId, ownAddress, admission.snapshot(), builtAt, new Date())] };
    return { mode: 'cluster', self: cluster.nodeId, nodes: await cluster.listNodes() };
  };
  let state: AgentState = 'built';
  const moveTo = (to: AgentState): void => {
    // Only forward; closed is final (a start that finishes after a close leaves it closed).
    if (state === 'closed') return;
    logger.debug({ agentId, from: state, to }, 'agent state changed');
    state = to;
  };
  const start = async (): Promise<void> => {
    moveTo('recovering');
    await waitForEngine(engine, logger, closing.signal);
    if (closing.signal.aborted) return;
    // Image holders come back from the store, so nobody is counted twice after a restart.
    for (const holder of store.images.holders()) {
      images.restoreHolder(holder.imageId, holder.taskId, holder.imageRef, store.meta.get(pulledImageKey(holder.imageId)) !== undefined);
    }
    await finishInterruptedRemovals(store, driver, logger);
    // The pools of an earlier run: its idle containers go (the pools refill in the background), and
    // the containers of warm tasks being recovered are kept for their recovery (driver.recoverWarm).
    await driver.pools.start({ keep: supervisor.warmContainersToRecover() }).catch((error: unknown) => {
      logger.error({ code: codeOf(error) }, 'could not start the warm pools; tasks start cold');
    });
    const recovered = await supervisor.recover();
    logger.info({ agentId, ...recovered }, 'recovered tasks');
    // After the tasks: a group is driven from its tasks' recovered states.
    logger.info({ agentId, ...groups.recover() }, 'recovered groups');
    // After recovery, so the reconciler's first sweep sees every task re-attached.
    if (closing.signal.aborted) return;
    garbage.start();
    uploads.startSweeping();
    // After recovery too: only ended tasks are removed, and recovery is what ends the tasks of the last run.
    retention.start();
    moveTo('open');
  };
  let starting: Promise<void> | undefined;
  const close = async (): Promise<void> => {
    moveTo('closed');
    closing.abort();
    // Claiming stops and claimed tasks not started go back to the queue; the outbox is sent.
    await placement?.close();
    // The node leaves first (down with reason "left"): nothing more is placed on it; its running tasks stay held for its lease.
    await cluster?.leave();
    forwarder?.close();
    // A start under way finishes what it began (a recovery writes to the store) before the store closes.
    await starting?.catch(() => undefined);
    await garbage.close();
    await retention.close();
    uploads.close();
    await groups.shutdown();
    await supervisor.shutdown();
    // Idle pool containers are removed (a next start would, too); containers serving tasks are left to them.
    await driver.pools.close().catch((error: unknown) => logger.warn({ code: codeOf(error) }, 'could not remove the idle pool containers'));
    usage.close();
    clearInterval(eventTrimmer);
    store.close();
  };
  let closed: Promise<void> | undefined;

  return {
    agentId,
    config,
    store,
    engine,
    images,
    driver,
    supervisor,
    groups,
    ports,
    garbage,
    retention,
    logs,
    uploads,
    artifacts,
    admission,
    cluster,
    placement,
    joinCluster,
    listNodes,
    forwarder,
    events,
    logger,
    get token() {
      return token;
    },
    reloadToken() {
      const read = readTokenFile(initial.dataDir);
      if (!read.ok) return read;
      const rotated = read.token !== token;
      token = read.token;
      return { ok: true, rotated };
    },
    onError(listener) {
      errorListeners.add(listener);
      return () => errorListeners.delete(listener);
    },
    engineHealth,
    imageSnapshot: () => images.snapshot(),
    start: () => (starting ??= start()),
    get started() {
      return state === 'open';
    },
    reload() {
      const result = config.reload();
      if (result.ok) supervisor.setBudget(result.config.admission);
      return result;
    },
    close: () => (closed ??= close()),
    [Symbol.asyncDispose]: () => (closed ??= close()),
  };
}

/**
 * A task holds its image until its container is removed, which comes after its end is recorded. A
 * task that ended but still holds an image had its removal cut short (the agent died in between):
 * remove its container now, which releases the image, or release it if the container is gone.
 * Without this, such a holder would be restored on every start and keep the image forever.
 */
async function finishInterruptedRemovals(store: Store, driver: TaskDriver, logger: Logger): Promise<void> {
  const taskIds = new Set(store.images.holders().map((holder) => holder.taskId));
  for (const taskId of taskIds) {
    const record = store.tasks.get(taskId);
    if (record && UNENDED_STATES.includes(record.state)) continue;
    try {
      const handle = record ? await driver.recover(taskId, record.spec as TaskSpec) : undefined;
      if (handle) await handle.destroy();
      else driver.releaseImages(taskId);
    } catch (error) {
      // The holder stays recorded, so the next start tries again.
      logger.error({ taskId, code: codeOf(error) }, 'could not remove the container of an ended task');
    }
  }
}
