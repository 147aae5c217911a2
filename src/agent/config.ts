import { readFileSync } from 'node:fs';
import path from 'node:path';
import { isIP } from 'node:net';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { messageOf, ValidationError, type FieldIssue } from '../common/errors.js';
import { countBoundRule, DURATION_LIMITS, MAX_SIZE_BYTES, MINUTE_MS, readTypedDuration, readTypedSize, SECOND_MS, type CountBounds, type DurationBounds, type SizeBounds } from '../common/units.js';
import {
  anyTypedAs,
  booleanOption,
  countOption,
  durationOption,
  durationOrOffOption,
  durationRule,
  issue,
  mappingEntries,
  sizeOption,
  sizeRule,
} from '../common/validation.js';
import { DOCKER_HOST_RULE, endpointFromDockerHost, engineOptionsOf, parseDockerHost } from '../engine/connect.js';
import { dockerConfigDir, readContext } from '../engine/contexts.js';
import type { EngineOptions } from '../engine/engine.js';
import { IMAGE_OPTION_BOUNDS, IMAGE_OPTION_FIELDS } from '../images/options.js';
import { RECONCILE_OPTION_BOUNDS, RECONCILE_OPTION_FIELDS } from '../reconcile/options.js';
import { normalizeRegistryHost, parseImageReference } from '../spec/reference.js';
import { REGISTRY_NAME, REGISTRY_NAME_RULE } from '../spec/registry-auth.js';
import { SECCOMP_PROFILE_NAME, SPEC_BOUNDS } from '../spec/schema.js';
import { FILES_BOUNDS } from '../spec/files.js';
import { DRIVER_OPTION_BOUNDS } from '../tasks/driver.js';
import type { PoolDefinition } from '../pools/types.js';
import { compilePools, poolsOption, type PoolConfigInput } from './pool-config.js';
import { agentSpecPolicy } from './registry-credentials.js';
import { CLUSTER_CONFIG_BOUNDS, clusterSection, compileCluster, postgresUrlOption, unreachableAddressRule, type ClusterConfig, type ClusterConfigInput } from './cluster-config.js';
import { SCHEMA_NAME } from '../state/postgres/backend.js';

/**
 * The agent's configuration: from a YAML file, BERTH_* environment variables and flags, merged in
 * that order of precedence (flags > environment > file > defaults), validated once, compiled into
 * milliseconds and bytes, and frozen. Nothing here reads process.env or the host: the caller passes
 * them in.
 */

/** A duration as users write it: "30s", "3m", "1h30m", or milliseconds. */
export type DurationInput = string | number;
/** A size as users write it: "128m", "1g", or bytes. */
export type SizeInput = string | number;

/** The configuration as users write it (file, flags). Every key is optional. */
export interface AgentConfigInput {
  /** Where the agent keeps its state and task logs. Default `~/.local/share/berth`, or `/var/lib/berth` as root. */
  dataDir?: string;
  /** The API's unix socket. Default `<dataDir>/agent.sock`. */
  socketPath?: string;
  /**
   * Also listen on TCP, `host:port` (e.g. `127.0.0.1:7070`, `[::1]:7070`). Default: no TCP. A
   * non-loopback address needs `tls.cert` and `tls.key`, or `tls.allowInsecure: true`.
   */
  listen?: string;
  /** TLS on the TCP listener (`listen`); the unix socket stays plain (its file mode guards it). */
  tls?: {
    /** The agent's certificate (PEM; a chain may follow it). With `tls.key`, the TCP listener serves HTTPS. Default none. */
    cert?: string;
    /** The private key of `tls.cert` (PEM, unencrypted). Default none. */
    key?: string;
    /** CA certificates (PEM): clients must present a certificate one of them signed (mutual TLS). Default none. */
    clientCa?: string;
    /** Whether `listen` may be a non-loopback address without TLS (the token then crosses the network in clear). Default false. */
    allowInsecure?: boolean;
  };
  /** The agent's id, written on its containers. Default: generated at first start and stored. */
  agentId?: string;
  engine?: {
    /** The engine as DOCKER_HOST spells it: `unix:///path`, `tcp://host:port`, `https://host:port` or `ssh://user@host`. */
    host?: string;
    /** With a tcp:// host: TLS, verifying the engine against `certPath`'s ca.pem and presenting its cert.pem and key.pem (DOCKER_TLS_VERIFY). Default false. */
    tlsVerify?: boolean;
    /** The directory of ca.pem, cert.pem and key.pem (DOCKER_CERT_PATH). Default `~/.docker`. */
    certPath?: string;
    /** A Docker context (the docker CLI's, under ~/.docker/contexts) naming the engine and its TLS material; not with host or socket. */
    context?: string;
    /** The engine's unix socket. Default `/var/run/docker.sock` (or DOCKER_HOST). */
    socket?: string;
    /** Deadline of one engine read (inspect, list, version). Default "10s". */
    readTimeout?: DurationInput;
    /** Deadline of one engine write (create, start, kill, remove). Default "30s". */
    writeTimeout?: DurationInput;
  };
  http?: {
    /**
     * How long a client may take to send a request's headers; a slower one is answered 408 and
     * dropped. Default "10s"; 100 ms to 10m, at most `http.requestTimeout`.
     */
    headersTimeout?: DurationInput;
    /**
     * How long a client may take to send a whole request (headers and body); a slower one is
     * answered 408 and dropped. Responses (followed logs, events) are not bounded by it. Default "30s"; 100 ms to 1h.
     */
    requestTimeout?: DurationInput;
    /** How long an idle keep-alive connection is kept open for a next request. Default "5s"; 100 ms to 10m. */
    keepAliveTimeout?: DurationInput;
    /**
     * Open connections each listener (the unix socket, the TCP address) holds at most; further ones
     * are closed at once until some end. Default 512; 1 to 65536.
     */
    maxConnections?: number;
  };
  events?: {
    /**
     * How long events are kept for clients that resume a stream (`Last-Event-ID`, `since`); a client
     * that asks for older ones is told they are gone (410). Default "1h"; 1m to 30d.
     */
    window?: DurationInput;
    /** At most this many events are kept, newest first. Default 100000; 100 to 10000000. */
    maxCount?: number;
  };
  health?: {
    /**
     * How long `/healthz` waits for the engine's answer to one ping (never retried) before it
     * answers 503. Keep it below the probe's own timeout. Default "2s".
     */
    engineTimeout?: DurationInput;
  };
  tasks?: {
    /**
     * How long a task may wait to start while the engine does not answer (or answers with a
     * transient error) before it ends as failed (exit 125); "off" waits for as long as it takes.
     * Default "15m".
     */
    startOutageLimit?: DurationInput;
    /** How often the agent lists its running tasks' containers to notice ends a wait missed. Default "5s"; at least 100 ms. */
    relistPeriod?: DurationInput;
  };
  policy?: {
    /** Host path prefixes that bind mounts may use. Default none. */
    allowedBindSources?: string[];
    /** Whether privileged tasks are accepted. Default false. */
    allowPrivileged?: boolean;
    /** Capabilities that `capAdd` may name. Default none. */
    allowedCapabilities?: string[];
    /** Whether tasks may use `network: host`. Default false. */
    allowHostNetwork?: boolean;
    /**
     * Whether a spec may carry registry credentials inline (`registryAuth: { username, password }`)
     * rather than name ones configured here (`registryAuth: { ref }`). Default false.
     */
    allowInlineRegistryAuth?: boolean;
    /** Host device paths that `devices` may name. Default none. */
    allowedDevices?: string[];
    /** Named (user-defined) networks that a spec's `networks` may join. Default none. */
    allowedNetworks?: string[];
    /** OCI runtimes that `runtime` may name (a task without one gets the engine's default). Default `runc`. */
    allowedRuntimes?: string[];
    /** Sysctls that `sysctls` may set: names, or prefixes ending in `*` (`net.ipv4.*`). Default none. */
    allowedSysctls?: string[];
    /**
     * Seccomp profiles a task may name: name → the profile's JSON file on the agent's host, read
     * when each task's container is created (a list of `name=/path` in the environment). Default none.
     */
    allowedSeccompProfiles?: Record<string, string> | string[];
    /** Whether a task may run without seccomp (`seccomp: unconfined`). Default false. */
    allowUnconfinedSeccomp?: boolean;
    /** Whether a task may run without AppArmor (`apparmor: unconfined`). Default false. */
    allowUnconfinedApparmor?: boolean;
    /** Whether a task may set a negative `oomScoreAdj` (shielding itself from the OOM killer). Default false. */
    allowNegativeOomScoreAdj?: boolean;
  };
  /**
   * Registry credentials tasks may name in their spec (`registryAuth: { ref: "<name>" }`), by name.
   * Used only for the pull of a task that names them, and only when its image is on `server`.
   * Never logged nor shown by the API.
   */
  registries?: Record<string, RegistryCredentialsInput>;
  defaults?: {
    /**
     * The sandbox preset, the safe floor for untrusted code: every task gets a read-only root, a
     * tmpfs on /tmp of `defaults.sandboxTmpSize`, no-new-privileges, every capability dropped (a
     * task may add back those in `policy.allowedCapabilities`), `nofile` 1024 and network none,
     * unless it sets the field itself (README "The sandbox preset"). Default false.
     */
    sandbox?: boolean;
    /** The size of the sandbox preset's /tmp tmpfs. Default "64m". */
    sandboxTmpSize?: SizeInput;
    /**
     * Capabilities the sandbox preset gives back after dropping them all (a task without its own
     * `capAdd` gets them); each must be in `policy.allowedCapabilities`. Default none.
     */
    sandboxCapabilities?: string[];
    /** Limits of a task that sets none; also what it draws from the admission budget. */
    resources?: {
      /** Default "256m". */
      memory?: SizeInput;
      /** Default 250 (a quarter of a CPU): eight short tasks share two cores. */
      cpuMilli?: number;
      /** Default 1024. */
      pidsLimit?: number;
    };
  };
  admission?: {
    /** Memory that running tasks may reserve in all. Default: host memory less max(256 MiB, 10%). */
    memory?: SizeInput;
    /** CPU that running tasks may reserve in all. Default: host CPUs × 1000 less 100. */
    cpuMilli?: number;
    /** At most this many tasks starting or running at once. Default: no cap. */
    maxConcurrent?: number;
  };
  images?: {
    /** How long an image nobody holds is kept before removal. Default "3m". */
    removeDelay?: DurationInput;
    /** Whether unheld images are removed at all. Default true. */
    cleanup?: boolean;
    /** A pull that makes no progress for this long is aborted. Default "2m". */
    pullActivityTimeout?: DurationInput;
  };
  logs?: {
    /** A task's log file is rotated when it would grow past this. Default "10m". */
    maxFileSize?: SizeInput;
    /** Files kept per task, the current one included. Default 2. */
    maxFiles?: number;
  };
  /** Files a task spec places in its container (`files`), and archives uploaded for them (`POST /v1/uploads`). */
  files?: {
    /** Files (inline and upload entries) one spec may carry. Default 100. */
    maxCount?: number;
    /** Bytes of inline content (decoded) one spec may carry. Default "512k" (the API's body limit is 1 MiB). */
    maxBytes?: SizeInput;
    /** The largest archive one upload may be. Default "1g". */
    uploadMaxSize?: SizeInput;
    /** How long an upload no task has used is kept. Default "1h". */
    uploadTtl?: DurationInput;
  };
  engineLog?: {
    /** Cap on the engine's own copy of a task's output. Default "1m". */
    maxSize?: SizeInput;
  };
  artifacts?: {
    /** Cap on what is kept of a task's `collect` paths at its end; past it they are cut at a file boundary. Default "64m". */
    maxBytes?: SizeInput;
  };
  reconcile?: {
    /** Whether dangling containers are removed. Default true. */
    enabled?: boolean;
    /** Time between reconciler runs. Default "5m". */
    period?: DurationInput;
    /** Containers younger than this are never touched (they may be being created). Default "5m". */
    creationGrace?: DurationInput;
    /**
     * Orphans (containers of a `berth run` or library owner whose process is gone) younger than this
     * are left for a later sweep, and so is a prune's orphan pass. Default "5m".
     */
    orphanGrace?: DurationInput;
    /** Log what would be removed, remove nothing. Default false. */
    dryRun?: boolean;
  };
  prune?: {
    /** "off" (default) or the interval between scheduled prunes, e.g. "24h". */
    schedule?: DurationInput;
    /** Prune images, least recently used first, until their total is under this size. Default: no budget. */
    imageBudget?: SizeInput;
    /** Image references a prune never removes. Default none. */
    exemptImages?: string[];
  };
  /** Published host ports (a spec's `ports`): where dynamic ones come from, and the address they are bound to. */
  ports?: {
    /** The range dynamic ports (a `ports` entry without `host`) are picked from, inclusive: "FROM-TO". Default "20000-29999". */
    range?: string;
    /**
     * The host address published ports are bound to when a spec names none. Default "127.0.0.1"
     * (reachable from this host only); a non-loopback address ("0.0.0.0": every interface)
     * publishes tasks' ports to the network, and is only ever in force when set here.
     */
    hostIp?: string;
  };
  /**
   * Ended tasks (exited, lost, removed) are removed for good — record, output files and all —
   * oldest first, by age, by count and when the data directory's disk fills up. Tasks that have
   * not ended are never touched.
   */
  retention?: {
    /** An ended task is removed this long after its end; "off" keeps tasks whatever their age. Default "7d". */
    maxAge?: DurationInput;
    /** At most this many ended tasks are kept (the oldest go first); "off" keeps any number. Default 10000. */
    maxCount?: number | 'off';
    /**
     * Above this share of the data directory's file system in use, the oldest ended tasks are
     * removed early, until it is below again: "90%" or 0.9; "off" never. Default "90%".
     */
    diskWatermark?: string | number;
    /** How often retention runs (and once after start). Default "1m". */
    interval?: DurationInput;
  };
  /** Task groups (`POST /v1/groups`). */
  groups?: {
    /**
     * The image of a group's infrastructure container, which owns the group's network namespace:
     * any image whose default command sleeps until killed (pulled when missing). Default: berth's
     * built-in one (129 bytes, imported offline; amd64 engines only).
     */
    infraImage?: string;
  };
  /**
   * Warm pools (README "Warm pools"): each keeps `size` containers of its spec's pool key started
   * and idle, so that a task with the same key starts as an exec in one of them. Each spec is
   * checked as a submitted spec is (defaults, sandbox preset, policy). Default none; changed by a restart only.
   */
  pools?: PoolConfigInput[];
  /**
   * Cluster mode (README "Cluster mode"): with `cluster.postgres`, the agent registers as a node of
   * the cluster that PostgreSQL coordinates. Default none: the agent runs alone. Changed by a restart only.
   */
  cluster?: ClusterConfigInput;
  /**
   * Where the agent keeps its records (README "State in PostgreSQL"): by default a SQLite file in
   * `dataDir`; with `state.postgres`, a schema (`state.schema`, default `berth_agent`) of that
   * PostgreSQL database. The data directory still holds the tasks' output. Changed by a restart only.
   */
  state?: { postgres?: string; schema?: string; deadline?: string | number };
}

/** One entry of `registries`: the registry, and one secret (a password, inline or in a file, or an identity token). */
export interface RegistryCredentialsInput {
  /** The registry host, as image references name it: `registry.example.com:5000`, `docker.io`. */
  server: string;
  /** Needed with `password` or `passwordFile`. */
  username?: string;
  /** The password, in the configuration file itself (keep the file 0600). */
  password?: string;
  /** A file holding the password (one trailing newline is ignored), read at each pull that uses it. */
  passwordFile?: string;
  /** An OAuth identity token, instead of a username and password. */
  identityToken?: string;
}

/** An entry of `registries`, compiled: `host` normalised as image references are. */
export interface RegistryCredentialsConfig {
  readonly host: string;
  readonly username?: string;
  readonly password?: string;
  readonly passwordFile?: string;
  readonly identityToken?: string;
}

/** The configuration the agent runs with: validated, defaulted, compiled, deep-frozen. */
export interface AgentConfig {
  readonly dataDir: string;
  readonly socketPath: string;
  readonly listen?: { readonly host: string; readonly port: number };
  /**
   * The files of the TCP listener's TLS (absolute paths), when `tls.cert` and `tls.key` are set;
   * `clientCaFile` when clients must present a certificate. The files are read (and checked) when
   * the agent listens and again on SIGHUP.
   */
  readonly tls?: { readonly certFile: string; readonly keyFile: string; readonly clientCaFile?: string };
  readonly agentId?: string;
  /** Engine options (EngineOptions' connection fields): a unix socket, a TCP host and port (over TLS with its material), or an SSH host. */
  readonly engine: Readonly<Pick<EngineOptions, 'socketPath' | 'host' | 'port' | 'protocol' | 'tls' | 'username' | 'ssh'>>;
  /** Deadlines of one engine call (EngineOptions' deadlines). */
  readonly engineDeadlines: { readonly readMs: number; readonly writeMs: number };
  /** Bounds on the API's clients (ServerLimits), applied to both listeners. */
  readonly http: { readonly headersTimeoutMs: number; readonly requestTimeoutMs: number; readonly keepAliveTimeoutMs: number; readonly maxConnections: number };
  readonly health: { readonly engineTimeoutMs: number };
  /** The event log's window: events older or beyond the count are trimmed. */
  readonly events: { readonly windowMs: number; readonly maxCount: number };
  /** `startOutageLimitMs` undefined means a task waits for the engine without bound. */
  readonly tasks: { readonly startOutageLimitMs?: number; readonly relistPeriodMs: number };
  /** The SpecPolicy every submitted spec is checked against. */
  readonly policy: {
    readonly allowPrivileged: boolean;
    readonly allowedBindSources: readonly string[];
    readonly allowedCapabilities: readonly string[];
    readonly allowHostNetwork: boolean;
    readonly allowInlineRegistryAuth: boolean;
    readonly allowedDevices: readonly string[];
    readonly allowedNetworks: readonly string[];
    readonly allowedRuntimes: readonly string[];
    readonly allowedSysctls: readonly string[];
    /** Name → the profile's file. */
    readonly allowedSeccompProfiles: Readonly<Record<string, string>>;
    readonly allowUnconfinedSeccomp: boolean;
    readonly allowUnconfinedApparmor: boolean;
    readonly allowNegativeOomScoreAdj: boolean;
    /** A profile in the spec itself is never accepted by the agent: an operator's allow-list names each. */
    readonly allowInlineSeccomp: false;
  };
  /** Registry credentials by name (`registries.<name>`). */
  readonly registries: Readonly<Record<string, RegistryCredentialsConfig>>;
  readonly defaults: {
    readonly resources: { readonly memoryBytes: number; readonly cpuMilli: number; readonly pidsLimit: number };
    /** The sandbox preset, when on: the size of its /tmp. */
    readonly sandbox?: { readonly tmpSizeBytes: number; readonly capabilities: readonly string[] };
  };
  readonly admission: { readonly memoryBytes: number; readonly cpuMilli: number; readonly maxConcurrent?: number };
  readonly images: { readonly removeDelayMs: number; readonly cleanup: boolean; readonly pullActivityTimeoutMs: number };
  readonly logs: { readonly maxFileBytes: number; readonly maxFiles: number };
  readonly files: { readonly maxCount: number; readonly maxBytes: number; readonly uploadMaxBytes: number; readonly uploadTtlMs: number };
  readonly engineLog: { readonly maxSizeBytes: number };
  readonly artifacts: { readonly maxBytes: number };
  readonly reconcile: { readonly enabled: boolean; readonly periodMs: number; readonly creationGraceMs: number; readonly orphanGraceMs: number; readonly dryRun: boolean };
  /** `scheduleMs` undefined means scheduled prunes are off. */
  readonly prune: { readonly scheduleMs?: number; readonly imageBudgetBytes?: number; readonly exemptImages: readonly string[] };
  /** The dynamic port range (inclusive) and the default publish address. */
  readonly ports: { readonly range: { readonly from: number; readonly to: number }; readonly hostIp: string };
  /** Each limit undefined is off; `diskWatermark` is a fraction (0.9 for "90%"). */
  readonly retention: { readonly maxAgeMs?: number; readonly maxCount?: number; readonly diskWatermark?: number; readonly intervalMs: number };
  /** `infraImage` undefined: berth's built-in infrastructure image. */
  readonly groups: { readonly infraImage?: string };
  /** The warm pools, their specs with the agent's defaults applied (as a matching task's spec is stored). */
  readonly pools: readonly PoolDefinition[];
  /** Cluster mode, when `cluster.postgres` is set. */
  readonly cluster?: ClusterConfig;
  /** The records in PostgreSQL, when `state.postgres` is set; else the SQLite file in dataDir. */
  readonly state?: { readonly postgresUrl: string; readonly schema: string; readonly deadlineMs: number };
  /** The file the configuration was read from, if any. */
  readonly file?: string;
}

/** What the agent knows about its host, passed in so that defaults are computed without side effects. */
export interface HostFacts {
  /** The effective uid (0 is root). */
  uid: number;
  homedir: string;
  totalMemoryBytes: number;
  cpuCount: number;
}

export interface ConfigSources {
  /** The YAML file; when undefined, `env.BERTH_CONFIG`; when neither, no file. A named file must exist. */
  file?: string;
  /** The environment (BERTH_*, DOCKER_HOST, XDG_DATA_HOME). Default none. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Values from the command line; undefined values are ignored. */
  flags?: AgentConfigInput;
  host: HostFacts;
}

/** What a configuration key holds: how its environment variable is read, and which rule it follows. */
export type ConfigKeyKind = 'string' | 'duration' | 'size' | 'boolean' | 'integer' | 'list';
type LeafKind = ConfigKeyKind;

/** Every key, with how an environment variable's text is read for it. */
const LEAVES: Readonly<Record<string, LeafKind>> = {
  dataDir: 'string',
  socketPath: 'string',
  listen: 'string',
  'tls.cert': 'string',
  'tls.key': 'string',
  'tls.clientCa': 'string',
  'tls.allowInsecure': 'boolean',
  agentId: 'string',
  'engine.host': 'string',
  'engine.socket': 'string',
  'engine.tlsVerify': 'boolean',
  'engine.certPath': 'string',
  'engine.context': 'string',
  'engine.readTimeout': 'duration',
  'engine.writeTimeout': 'duration',
  'http.headersTimeout': 'duration',
  'http.requestTimeout': 'duration',
  'http.keepAliveTimeout': 'duration',
  'http.maxConnections': 'integer',
  'health.engineTimeout': 'duration',
  'events.window': 'duration',
  'events.maxCount': 'integer',
  'tasks.startOutageLimit': 'duration',
  'policy.allowedBindSources': 'list',
  'policy.allowPrivileged': 'boolean',
  'policy.allowedCapabilities': 'list',
  'policy.allowHostNetwork': 'boolean',
  'policy.allowInlineRegistryAuth': 'boolean',
  'policy.allowedDevices': 'list',
  'policy.allowedNetworks': 'list',
  'policy.allowedRuntimes': 'list',
  'policy.allowedSysctls': 'list',
  'policy.allowedSeccompProfiles': 'list',
  'policy.allowUnconfinedSeccomp': 'boolean',
  'policy.allowUnconfinedApparmor': 'boolean',
  'policy.allowNegativeOomScoreAdj': 'boolean',
  'defaults.sandbox': 'boolean',
  'defaults.sandboxTmpSize': 'size',
  'defaults.sandboxCapabilities': 'list',
  'defaults.resources.memory': 'size',
  'defaults.resources.cpuMilli': 'integer',
  'defaults.resources.pidsLimit': 'integer',
  'admission.memory': 'size',
  'admission.cpuMilli': 'integer',
  'admission.maxConcurrent': 'integer',
  'images.removeDelay': 'duration',
  'images.cleanup': 'boolean',
  'images.pullActivityTimeout': 'duration',
  'logs.maxFileSize': 'size',
  'logs.maxFiles': 'integer',
  'files.maxCount': 'integer',
  'files.maxBytes': 'size',
  'files.uploadMaxSize': 'size',
  'files.uploadTtl': 'duration',
  'engineLog.maxSize': 'size',
  'artifacts.maxBytes': 'size',
  'tasks.relistPeriod': 'duration',
  'reconcile.enabled': 'boolean',
  'reconcile.period': 'duration',
  'reconcile.creationGrace': 'duration',
  'reconcile.orphanGrace': 'duration',
  'reconcile.dryRun': 'boolean',
  'prune.schedule': 'duration',
  'prune.imageBudget': 'size',
  'prune.exemptImages': 'list',
  'ports.range': 'string',
  'ports.hostIp': 'string',
  'retention.maxAge': 'duration',
  'retention.maxCount': 'integer',
  'retention.diskWatermark': 'string',
  'retention.interval': 'duration',
  'groups.infraImage': 'string',
  'cluster.postgres': 'string',
  'state.postgres': 'string',
  'state.schema': 'string',
  'state.deadline': 'duration',
  'cluster.nodeId': 'string',
  'cluster.address': 'string',
  'cluster.labels': 'list',
  'cluster.capacity.memory': 'size',
  'cluster.capacity.cpuMilli': 'integer',
  'cluster.capacity.tasks': 'integer',
  'cluster.lease': 'duration',
  'cluster.heartbeat': 'duration',
  'cluster.strategy': 'string',
  'cluster.token': 'string',
  'cluster.tokenFile': 'string',
  'cluster.tls.ca': 'string',
  'cluster.tls.cert': 'string',
  'cluster.tls.key': 'string',
};

/** Every configuration key (dotted) and what it holds (README "Configuration and environment"). */
export const CONFIG_KEY_KINDS: Readonly<Record<string, ConfigKeyKind>> = Object.freeze({ ...LEAVES });

/** `reconcile.creationGrace` → `BERTH_RECONCILE_CREATION_GRACE`. */
export function envVarForKey(key: string): string {
  return `BERTH_${key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/\./g, '_').toUpperCase()}`;
}

/** Every environment variable the configuration reads, by key (for help text and docs). */
export const CONFIG_ENV_VARS: Readonly<Record<string, string>> = Object.freeze(
  Object.fromEntries(Object.keys(LEAVES).map((key) => [key, envVarForKey(key)])),
);

/** Keys a running agent cannot change: a reload keeps their old values and reports them. */
export const RESTART_ONLY_KEYS: readonly string[] = Object.freeze(['dataDir', 'socketPath', 'listen', 'tls', 'agentId', 'engine', 'engineDeadlines', 'tasks', 'http', 'ports', 'pools', 'cluster', 'state']);

const MiB = 1024 * 1024;

/**
 * The bounds of every duration, size and count key, in one place (README "Configuration"). Deadlines
 * of one operation go up to a day; periods and delays held by a Node timer up to 24 days (its limit
 * is 24.8); ages and limits compared with the clock up to a year; sizes up to 1 PiB. Keys that the
 * task spec or a library component also has take their bounds from there (and the `images.*` and
 * `reconcile.*` keys their whole rule: the schema composes the components' own option fields).
 */
export const CONFIG_BOUNDS = Object.freeze({
  'engine.readTimeout': { minMs: 100, maxMs: DURATION_LIMITS.operationMs },
  'engine.writeTimeout': { minMs: 100, maxMs: DURATION_LIMITS.operationMs },
  'health.engineTimeout': { minMs: 100, maxMs: DURATION_LIMITS.operationMs },
  'http.headersTimeout': { minMs: 100, maxMs: 10 * MINUTE_MS },
  'http.requestTimeout': { minMs: 100, maxMs: 60 * MINUTE_MS },
  'http.keepAliveTimeout': { minMs: 100, maxMs: 10 * MINUTE_MS },
  'http.maxConnections': { min: 1, max: 65_536 },
  'events.window': { minMs: MINUTE_MS, maxMs: 30 * 24 * 60 * MINUTE_MS },
  'events.maxCount': { min: 100, max: 10_000_000 },
  'tasks.startOutageLimit': { minMs: SECOND_MS, maxMs: DURATION_LIMITS.longMs },
  'tasks.relistPeriod': DRIVER_OPTION_BOUNDS.relistPeriodMs,
  'defaults.resources.memory': SPEC_BOUNDS.memory,
  'defaults.resources.cpuMilli': SPEC_BOUNDS.cpuMilli,
  'defaults.resources.pidsLimit': SPEC_BOUNDS.pidsLimit,
  'defaults.sandboxTmpSize': SPEC_BOUNDS.tmpfsSize,
  'admission.memory': { minBytes: 6 * MiB, maxBytes: MAX_SIZE_BYTES },
  'admission.cpuMilli': SPEC_BOUNDS.cpuMilli,
  'admission.maxConcurrent': { min: 1, max: 1_000_000 },
  'images.removeDelay': IMAGE_OPTION_BOUNDS.removeDelay,
  'images.pullActivityTimeout': IMAGE_OPTION_BOUNDS.pullActivityTimeout,
  'logs.maxFileSize': { minBytes: 4096, maxBytes: MAX_SIZE_BYTES },
  'logs.maxFiles': { min: 1, max: 100 },
  'files.maxCount': { min: 1, max: FILES_BOUNDS.maxCount },
  'files.maxBytes': { minBytes: 1, maxBytes: FILES_BOUNDS.maxBytes },
  'files.uploadMaxSize': { minBytes: 1, maxBytes: MAX_SIZE_BYTES },
  'files.uploadTtl': { minMs: 1000, maxMs: DURATION_LIMITS.timerMs },
  'engineLog.maxSize': SPEC_BOUNDS.logMaxSize,
  'artifacts.maxBytes': { minBytes: 4096, maxBytes: MAX_SIZE_BYTES },
  'reconcile.period': RECONCILE_OPTION_BOUNDS.period,
  'reconcile.creationGrace': RECONCILE_OPTION_BOUNDS.creationGrace,
  'reconcile.orphanGrace': RECONCILE_OPTION_BOUNDS.orphanGrace,
  /** Held by a chained long interval (setLongInterval), so a monthly schedule works. */
  'prune.schedule': { minMs: MINUTE_MS, maxMs: DURATION_LIMITS.longMs },
  'prune.imageBudget': { minBytes: 0, maxBytes: MAX_SIZE_BYTES },
  /** An age compared with the clock. */
  'retention.maxAge': { minMs: SECOND_MS, maxMs: DURATION_LIMITS.longMs },
  'retention.maxCount': { min: 1, max: 100_000_000 },
  /** A share of the file system: 1% to 99% (a full disk is what the watermark is there to prevent). */
  'retention.diskWatermark': { min: 0.01, max: 0.99 },
  'retention.interval': { minMs: SECOND_MS, maxMs: DURATION_LIMITS.timerMs },
  'state.deadline': { minMs: 100, maxMs: 5 * 60 * SECOND_MS },
  ...CLUSTER_CONFIG_BOUNDS,
} satisfies Record<string, DurationBounds | SizeBounds | CountBounds | FractionBounds>);

/** A closed range of fractions (0.9 is 90%). */
export interface FractionBounds {
  readonly min: number;
  readonly max: number;
}

/**
 * Whether a listen host reaches this machine only: `localhost`, an IPv4 address in 127.0.0.0/8, or
 * `::1` (also as an IPv4-mapped address). Any other name or address, `0.0.0.0` and `::` included, is
 * taken as reachable from the network.
 */
export function isLoopbackHost(host: string): boolean {
  const bare = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (bare === 'localhost' || bare === '::1' || bare === '0:0:0:0:0:0:0:1') return true;
  const v4 = /^(?:::ffff:)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(bare);
  return v4 !== null && v4.slice(1).every((part) => Number(part) <= 255) && v4[1] === '127';
}

/** `~/.local/share/berth` (honouring XDG_DATA_HOME), or `/var/lib/berth` as root. */
export function defaultDataDir(host: Pick<HostFacts, 'uid' | 'homedir'>, env: Readonly<Record<string, string | undefined>> = {}): string {
  if (host.uid === 0) return '/var/lib/berth';
  const xdg = env.XDG_DATA_HOME;
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(host.homedir, '.local', 'share'), 'berth');
}

/**
 * The admission budget when none is configured: the host less a headroom for the engine, the
 * agent and the system, as Fn does. Memory keeps back max(256 MiB, 10%); CPU keeps back 100 milli-CPUs.
 */
export function defaultAdmissionBudget(host: Pick<HostFacts, 'totalMemoryBytes' | 'cpuCount'>): { memoryBytes: number; cpuMilli: number } {
  const headroomBytes = Math.max(256 * MiB, Math.floor(host.totalMemoryBytes * 0.1));
  // Clamped to the keys' ceilings, so that a host beyond them still starts with its defaults.
  return {
    memoryBytes: Math.min(MAX_SIZE_BYTES, Math.max(0, host.totalMemoryBytes - headroomBytes)),
    cpuMilli: Math.min(CONFIG_BOUNDS['admission.cpuMilli'].max, Math.max(100, Math.floor(host.cpuCount * 1000) - 100)),
  };
}

function defaultsInput(host: HostFacts, env: Readonly<Record<string, string | undefined>>): AgentConfigInput {
  const budget = defaultAdmissionBudget(host);
  return {
    dataDir: defaultDataDir(host, env),
    tls: { allowInsecure: false },
    engine: { socket: '/var/run/docker.sock', readTimeout: '10s', writeTimeout: '30s' },
    http: { headersTimeout: '10s', requestTimeout: '30s', keepAliveTimeout: '5s', maxConnections: 512 },
    health: { engineTimeout: '2s' },
    events: { window: '1h', maxCount: 100_000 },
    tasks: { startOutageLimit: '15m', relistPeriod: '5s' },
    policy: {
      allowedBindSources: [],
      allowPrivileged: false,
      allowedCapabilities: [],
      allowHostNetwork: false,
      allowInlineRegistryAuth: false,
      allowedDevices: [],
      allowedNetworks: [],
      allowedRuntimes: ['runc'],
      allowedSysctls: [],
      allowedSeccompProfiles: {},
      allowUnconfinedSeccomp: false,
      allowUnconfinedApparmor: false,
      allowNegativeOomScoreAdj: false,
    },
    registries: {},
    defaults: { resources: { memory: '256m', cpuMilli: 250, pidsLimit: 1024 }, sandbox: false, sandboxTmpSize: '64m', sandboxCapabilities: [] },
    admission: { memory: budget.memoryBytes, cpuMilli: budget.cpuMilli },
    // The image coordinator's and the reconciler's own defaults apply (their option fields carry them).
    images: {},
    logs: { maxFileSize: '10m', maxFiles: 2 },
    files: { maxCount: 100, maxBytes: '512k', uploadMaxSize: '1g', uploadTtl: '1h' },
    engineLog: { maxSize: '1m' },
    artifacts: { maxBytes: '64m' },
    reconcile: {},
    prune: { schedule: 'off', exemptImages: [] },
    retention: { maxAge: '7d', maxCount: 10_000, diskWatermark: '90%', interval: '1m' },
    groups: {},
    ports: { range: '20000-29999', hostIp: '127.0.0.1' },
    pools: [],
    state: { deadline: '5s' },
  };
}

// ---- leaves: the shared ones (common/validation.ts), with the key's default as the example ----

const duration = (example: string, bounds: DurationBounds) => durationOption(bounds, durationRule(example));
const size = (example: string, bounds: SizeBounds) => sizeOption(bounds, sizeRule(example));

const text = (pattern: RegExp, rule: string) =>
  z.unknown().transform((value, ctx): string => (typeof value === 'string' && pattern.test(value) ? value : issue(ctx, rule)));

const list = (pattern: RegExp, rule: string) =>
  z.unknown().transform((value, ctx): string[] => {
    if (!Array.isArray(value)) return issue(ctx, 'must be a list');
    value.forEach((item, i) => {
      if (typeof item !== 'string' || !pattern.test(item)) ctx.addIssue({ code: 'custom', path: [i], message: rule });
    });
    return value as string[];
  });

/** One image reference, checked against the engine's grammar (the spec's own parser). */
const imageReference = z.unknown().transform((value, ctx): string => {
  if (typeof value !== 'string') return issue(ctx, 'must be an image reference');
  try {
    parseImageReference(value);
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    return issue(ctx, error.issues.map((it) => it.rule).join('; '));
  }
  return value;
});

/** Image references, each checked against the engine's grammar (the spec's own parser). */
const imageList = z.unknown().transform((value, ctx): string[] => {
  if (!Array.isArray(value)) return issue(ctx, 'must be a list');
  value.forEach((item, i) => {
    if (typeof item !== 'string') {
      ctx.addIssue({ code: 'custom', path: [i], message: 'must be an image reference' });
      return;
    }
    try {
      parseImageReference(item);
    } catch (error) {
      if (!(error instanceof ValidationError)) throw error;
      ctx.addIssue({ code: 'custom', path: [i], message: error.issues.map((it) => it.rule).join('; ') });
    }
  });
  return value as string[];
});

/**
 * Seccomp profiles by name: a mapping of name to an absolute path to the profile's JSON file, or
 * (from the environment) a list of `name=/path`. Both compile to the mapping.
 */
const seccompProfiles = z.unknown().transform((value, ctx): Record<string, string> => {
  const rule = 'must be a mapping of profile name to an absolute path to its JSON file (or, in the environment, name=/path,…)';
  const entries = mappingEntries(value);
  if (entries === undefined) return issue(ctx, rule);
  const result: Record<string, string> = {};
  for (const [name, file] of entries) {
    if (!SECCOMP_PROFILE_NAME.test(name) || ['default', 'unconfined'].includes(name)) ctx.addIssue({ code: 'custom', path: [name], message: 'must be a profile name of [a-zA-Z0-9_.-] (not "default" or "unconfined")' });
    else if (typeof file !== 'string' || !path.isAbsolute(file)) ctx.addIssue({ code: 'custom', path: [name], message: 'must be an absolute path to the profile\'s JSON file' });
    else result[name] = path.normalize(file);
  }
  return result;
});

const section = <T extends z.ZodRawShape>(shape: T) => z.object(shape).strict();

/** `"off"` (undefined) or a whole number within `bounds`. */
const countOrOff = (bounds: CountBounds, example: number) =>
  anyTypedAs<number | 'off'>().transform((value, ctx): number | undefined => {
    if (value === 'off') return undefined;
    const broken = typeof value === 'number' && Number.isInteger(value) ? countBoundRule(value, bounds) : 'is not a whole number';
    if (broken === undefined) return value as number;
    return issue(ctx, `must be "off" or a whole number from ${bounds.min} to ${bounds.max}, such as ${example} (${broken})`);
  });

/**
 * `"off"` (undefined) or a share within `bounds`, as a percentage (`"90%"`) or a fraction (`0.9`,
 * `"0.9"`), compiled to the fraction.
 */
const fractionOrOff = (bounds: FractionBounds, example: string) =>
  anyTypedAs<string | number>().transform((value, ctx): number | undefined => {
    if (value === 'off') return undefined;
    const text = typeof value === 'string' ? value.trim() : undefined;
    const percent = text === undefined ? undefined : /^(\d+(?:\.\d+)?)\s*%$/.exec(text);
    const fraction = percent ? Number(percent[1]) / 100 : typeof value === 'number' ? value : text !== undefined && /^\d*\.?\d+$/.test(text) ? Number(text) : NaN;
    const range = `${bounds.min * 100}% to ${bounds.max * 100}% (${bounds.min} to ${bounds.max})`;
    if (Number.isFinite(fraction) && fraction >= bounds.min && fraction <= bounds.max) return fraction;
    return issue(ctx, `must be "off" or a share of the disk from ${range}, such as "${example}"`);
  });

/**
 * `registries`: a mapping of names to credentials. No rule quotes a value (a bad entry may hold a
 * password), and a key that is not a field is named, never echoed with its value.
 */
const registries = (passwordFile: z.ZodType<string, unknown>) =>
  z.unknown().transform((value, ctx): Record<string, RegistryCredentialsConfig> => {
    if (!isPlain(value)) return issue(ctx, 'must be a mapping of names to { server, username, password | passwordFile | identityToken }');
    const compiled: Record<string, RegistryCredentialsConfig> = {};
    for (const [name, entry] of Object.entries(value)) {
      const fail = (field: string | undefined, message: string): void => ctx.addIssue({ code: 'custom', path: field === undefined ? [name] : [name, field], message });
      if (!REGISTRY_NAME.test(name)) fail(undefined, `is not a registry credentials name: ${REGISTRY_NAME_RULE}`);
      if (!isPlain(entry)) {
        fail(undefined, 'must be a mapping: { server, username, password | passwordFile | identityToken }');
        continue;
      }
      const unknown = Object.keys(entry).filter((key) => !REGISTRY_ENTRY_KEYS.includes(key));
      for (const key of unknown) fail(key, 'is not a configuration key');
      for (const key of ['server', 'username', 'password', 'identityToken'] as const) {
        if (entry[key] !== undefined && (typeof entry[key] !== 'string' || entry[key] === '')) fail(key, 'must be a non-empty string');
      }
      let server: string | undefined;
      if (typeof entry.server !== 'string' || entry.server === '') {
        if (entry.server === undefined) fail('server', 'must be set: the registry host the credentials are for, as image references name it (registry.example.com:5000, docker.io)');
      } else {
        server = normalizeRegistryHost(entry.server.replace(/^https?:\/\//, '').replace(/\/.*$/, ''));
      }
      let file: string | undefined;
      if (entry.passwordFile !== undefined) {
        const parsed = passwordFile.safeParse(entry.passwordFile);
        if (parsed.success) file = parsed.data;
        else fail('passwordFile', parsed.error.issues[0]?.message ?? 'must be an absolute path');
      }
      const secrets = (['password', 'passwordFile', 'identityToken'] as const).filter((key) => entry[key] !== undefined);
      if (secrets.length !== 1) fail(undefined, `must have exactly one of password, passwordFile and identityToken${secrets.length > 1 ? ` (has ${secrets.join(', ')})` : ''}`);
      if ((entry.password !== undefined || entry.passwordFile !== undefined) && entry.username === undefined) fail('username', 'must be set with password or passwordFile');
      if (server === undefined) continue;
      compiled[name] = {
        host: server,
        ...(typeof entry.username === 'string' ? { username: entry.username } : {}),
        ...(typeof entry.password === 'string' ? { password: entry.password } : {}),
        ...(file !== undefined ? { passwordFile: file } : {}),
        ...(typeof entry.identityToken === 'string' ? { identityToken: entry.identityToken } : {}),
      };
    }
    return compiled;
  });

const REGISTRY_ENTRY_KEYS: readonly string[] = ['server', 'username', 'password', 'passwordFile', 'identityToken'];

function buildSchema(host: HostFacts) {
  const expandHome = (p: string): string => (p === '~' ? host.homedir : p.startsWith('~/') ? path.join(host.homedir, p.slice(2)) : p);
  const absolutePath = (rule = 'must be an absolute path (or start with ~/)') =>
    z.unknown().transform((value, ctx): string => {
      if (typeof value !== 'string') return issue(ctx, rule);
      const expanded = expandHome(value.trim());
      return path.isAbsolute(expanded) ? path.normalize(expanded) : issue(ctx, rule);
    });
  const listen = z.unknown().transform((value, ctx): { host: string; port: number } => {
    const match = typeof value === 'string' ? /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(value.trim()) : null;
    const port = match ? Number(match[3]) : NaN;
    if (!match || port > 65_535) return issue(ctx, 'must be host:port, such as "127.0.0.1:7070" or "[::1]:7070"');
    return { host: (match[1] ?? match[2])!, port };
  });
  // The engine reads DOCKER_HOST with this very parser (engine/connect.ts), so both accept the same addresses.
  // Kept as text: whether tcp:// means TLS (and port 2376) depends on engine.tlsVerify, read once all keys are.
  const engineHost = z.unknown().transform((value, ctx): string => (typeof value === 'string' && parseDockerHost(value) !== undefined ? value.trim() : issue(ctx, DOCKER_HOST_RULE)));
  const capability = /^(CAP_)?[A-Z_]+$|^ALL$/i;

  return section({
    dataDir: absolutePath(),
    socketPath: absolutePath().optional(),
    listen: listen.optional(),
    tls: section({
      cert: absolutePath('must be an absolute path to a PEM certificate (or start with ~/)').optional(),
      key: absolutePath('must be an absolute path to a PEM private key (or start with ~/)').optional(),
      clientCa: absolutePath('must be an absolute path to PEM CA certificates (or start with ~/)').optional(),
      allowInsecure: booleanOption(),
    }).superRefine((tls, ctx) => {
      if (tls.cert !== undefined && tls.key === undefined) ctx.addIssue({ code: 'custom', path: ['key'], message: 'must be set with tls.cert (the certificate\'s private key)' });
      if (tls.key !== undefined && tls.cert === undefined) ctx.addIssue({ code: 'custom', path: ['cert'], message: 'must be set with tls.key (the key\'s certificate)' });
      if (tls.clientCa !== undefined && tls.cert === undefined && tls.key === undefined) {
        ctx.addIssue({ code: 'custom', path: ['clientCa'], message: 'needs tls.cert and tls.key: client certificates are asked for over TLS only' });
      }
    }),
    agentId: text(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/, 'must be 1 to 64 characters of [a-zA-Z0-9_.-], starting with a letter or digit').optional(),
    engine: section({
      host: engineHost.optional(),
      socket: absolutePath('must be an absolute path to the engine\'s socket').optional(),
      tlsVerify: booleanOption().optional(),
      certPath: absolutePath('must be an absolute path to a directory of ca.pem, cert.pem and key.pem (or start with ~/)').optional(),
      context: text(/^[a-zA-Z0-9][a-zA-Z0-9_.+-]*$/, 'must be the name of a Docker context (berth context ls)').optional(),
      readTimeout: duration('10s', CONFIG_BOUNDS['engine.readTimeout']),
      writeTimeout: duration('30s', CONFIG_BOUNDS['engine.writeTimeout']),
    })
      .refine((engine) => engine.host === undefined || engine.socket === undefined, { message: 'set engine.host or engine.socket, not both', path: ['host'] })
      .refine((engine) => engine.context === undefined || (engine.host === undefined && engine.socket === undefined), {
        message: 'names the engine already: set engine.context, engine.host or engine.socket, one only',
        path: ['context'],
      }),
    http: section({
      headersTimeout: duration('10s', CONFIG_BOUNDS['http.headersTimeout']),
      requestTimeout: duration('30s', CONFIG_BOUNDS['http.requestTimeout']),
      keepAliveTimeout: duration('5s', CONFIG_BOUNDS['http.keepAliveTimeout']),
      maxConnections: countOption(CONFIG_BOUNDS['http.maxConnections']),
    }).refine((http) => http.headersTimeout <= http.requestTimeout, { message: 'must be at most http.requestTimeout', path: ['headersTimeout'] }),
    health: section({ engineTimeout: duration('2s', CONFIG_BOUNDS['health.engineTimeout']) }),
    events: section({ window: duration('1h', CONFIG_BOUNDS['events.window']), maxCount: countOption(CONFIG_BOUNDS['events.maxCount']) }),
    tasks: section({ startOutageLimit: durationOrOffOption(CONFIG_BOUNDS['tasks.startOutageLimit'], '15m'), relistPeriod: duration('5s', CONFIG_BOUNDS['tasks.relistPeriod']) }),
    policy: section({
      allowedBindSources: list(/^\//, 'must be an absolute host path'),
      allowPrivileged: booleanOption(),
      allowedCapabilities: list(capability, 'must be a capability name such as NET_ADMIN'),
      allowHostNetwork: booleanOption(),
      allowInlineRegistryAuth: booleanOption(),
      allowedDevices: list(/^\//, 'must be an absolute host path such as /dev/fuse'),
      allowedNetworks: list(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/, 'must be a network name such as backend'),
      allowedRuntimes: list(/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/, 'must be a runtime name such as runc or runsc'),
      allowedSysctls: list(/^[a-z0-9_./-]+\*?$/, 'must be a sysctl name, or a prefix ending in * such as net.ipv4.*'),
      allowedSeccompProfiles: seccompProfiles,
      allowUnconfinedSeccomp: booleanOption(),
      allowUnconfinedApparmor: booleanOption(),
      allowNegativeOomScoreAdj: booleanOption(),
    }),
    registries: registries(absolutePath('must be an absolute path to a file holding the password (or start with ~/)')),
    defaults: section({
      sandbox: booleanOption(),
      sandboxTmpSize: size('64m', CONFIG_BOUNDS['defaults.sandboxTmpSize']),
      sandboxCapabilities: list(capability, 'must be a capability name such as CHOWN'),
      resources: section({
        memory: size('256m', CONFIG_BOUNDS['defaults.resources.memory']),
        cpuMilli: countOption(CONFIG_BOUNDS['defaults.resources.cpuMilli']),
        pidsLimit: countOption(CONFIG_BOUNDS['defaults.resources.pidsLimit']),
      }),
    }),
    admission: section({
      memory: size('16g', CONFIG_BOUNDS['admission.memory']),
      cpuMilli: countOption(CONFIG_BOUNDS['admission.cpuMilli']),
      maxConcurrent: countOption(CONFIG_BOUNDS['admission.maxConcurrent']).optional(),
    }),
    // The image coordinator's own option fields: the same rule (and default) as the library's.
    images: section({
      removeDelay: IMAGE_OPTION_FIELDS.removeDelay,
      cleanup: IMAGE_OPTION_FIELDS.cleanup,
      pullActivityTimeout: IMAGE_OPTION_FIELDS.pullActivityTimeout,
    }),
    logs: section({ maxFileSize: size('10m', CONFIG_BOUNDS['logs.maxFileSize']), maxFiles: countOption(CONFIG_BOUNDS['logs.maxFiles']) }),
    files: section({
      maxCount: countOption(CONFIG_BOUNDS['files.maxCount']),
      maxBytes: size('512k', CONFIG_BOUNDS['files.maxBytes']),
      uploadMaxSize: size('1g', CONFIG_BOUNDS['files.uploadMaxSize']),
      uploadTtl: duration('1h', CONFIG_BOUNDS['files.uploadTtl']),
    }),
    engineLog: section({ maxSize: size('1m', CONFIG_BOUNDS['engineLog.maxSize']) }),
    artifacts: section({ maxBytes: size('64m', CONFIG_BOUNDS['artifacts.maxBytes']) }),
    // The reconciler's own option fields: the same rule (and default) as the library's.
    reconcile: section({
      enabled: RECONCILE_OPTION_FIELDS.enabled,
      period: RECONCILE_OPTION_FIELDS.period,
      creationGrace: RECONCILE_OPTION_FIELDS.creationGrace,
      // The reconciler's rule; the agent's own default, 5m whatever the creation grace (the library's
      // default is the creation grace): the agent passes it to prune's orphan pass as well.
      orphanGrace: RECONCILE_OPTION_FIELDS.orphanGrace.unwrap().default(300_000),
      dryRun: RECONCILE_OPTION_FIELDS.dryRun,
    }),
    prune: section({
      schedule: durationOrOffOption(CONFIG_BOUNDS['prune.schedule'], '24h'),
      imageBudget: size('20g', CONFIG_BOUNDS['prune.imageBudget']).optional(),
      exemptImages: imageList,
    }),
    retention: section({
      maxAge: durationOrOffOption(CONFIG_BOUNDS['retention.maxAge'], '7d'),
      maxCount: countOrOff(CONFIG_BOUNDS['retention.maxCount'], 10_000),
      diskWatermark: fractionOrOff(CONFIG_BOUNDS['retention.diskWatermark'], '90%'),
      interval: duration('1m', CONFIG_BOUNDS['retention.interval']),
    }),
    groups: section({ infraImage: imageReference.optional() }),
    pools: poolsOption,
    cluster: clusterSection.optional(),
    state: section({
      postgres: postgresUrlOption.optional(),
      schema: text(SCHEMA_NAME, 'must be a lower-case identifier: a letter or _, then letters, digits or _ (63 at most)').optional(),
      deadline: duration('5s', CONFIG_BOUNDS['state.deadline']),
    }),
    ports: section({ range: portRange, hostIp: text(/^[0-9a-fA-F.:]+$/, 'must be an IPv4 or IPv6 address such as 127.0.0.1').refine((v) => isIP(v) !== 0, 'must be an IPv4 or IPv6 address such as 127.0.0.1') }),
  });
}

/**
 * `state.schema` when unset: `berth_agent`, or in cluster mode `berth_agent_<node id>`, so that the
 * nodes of a cluster that share one database keep their records apart.
 */
export function defaultStateSchema(nodeId: string | undefined): string {
  if (nodeId === undefined) return 'berth_agent';
  return `berth_agent_${nodeId.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`.slice(0, 63);
}

/** `ports.range`: "FROM-TO", 1 <= FROM <= TO <= 65535, at least 10 ports wide (a narrower range runs out at once). */
export const PORT_RANGE_RULE = 'must be FROM-TO, such as "20000-29999": port numbers with 1 <= FROM <= TO <= 65535, at least 10 ports';
const portRange = z.unknown().transform((value, ctx): { from: number; to: number } => {
  const match = typeof value === 'string' ? /^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$/.exec(value) : null;
  const from = match ? Number(match[1]) : NaN;
  const to = match ? Number(match[2]) : NaN;
  if (!match || from < 1 || to > 65_535 || to - from + 1 < 10) return issue(ctx, PORT_RANGE_RULE);
  return { from, to };
});

// ---- sources and merging ----

type Plain = Record<string, unknown>;
const isPlain = (value: unknown): value is Plain => typeof value === 'object' && value !== null && !Array.isArray(value);

/** Which source set each key, so an error can say where the bad value came from. */
type Origins = Map<string, string>;

/**
 * Merges `source` over `target`. Arrays and scalars replace; mappings merge key by key. engine.host
 * and engine.socket are one choice: a source that sets either replaces both.
 */
function mergeInto(target: Plain, source: Plain, origin: string, origins: Origins, prefix = ''): void {
  if (prefix === 'engine.' && (source.host !== undefined || source.socket !== undefined || source.context !== undefined)) {
    delete target.host;
    delete target.socket;
    delete target.context;
  }
  for (const [key, value] of Object.entries(source)) {
    if (value === undefined) continue;
    const dotted = `${prefix}${key}`;
    if (isPlain(value) && isPlain(target[key])) {
      mergeInto(target[key] as Plain, value, origin, origins, `${dotted}.`);
    } else {
      target[key] = isPlain(value) ? structuredClone(value) : Array.isArray(value) ? [...value] : value;
      origins.set(dotted, origin);
    }
  }
}

function envInput(env: Readonly<Record<string, string | undefined>>, origins: Map<string, string>): Plain {
  const input: Plain = {};
  const put = (key: string, value: unknown, variable: string): void => {
    const parts = key.split('.');
    let node = input;
    for (const part of parts.slice(0, -1)) node = (node[part] ??= {}) as Plain;
    node[parts[parts.length - 1]!] = value;
    origins.set(key, variable);
  };
  // The docker CLI's variables, unless a BERTH_ENGINE_* one names the engine: DOCKER_HOST with its
  // TLS (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), else DOCKER_CONTEXT (DOCKER_HOST wins, as in the docker CLI).
  const engineVars = env.BERTH_ENGINE_HOST !== undefined || env.BERTH_ENGINE_SOCKET !== undefined || env.BERTH_ENGINE_CONTEXT !== undefined;
  if (!engineVars && env.DOCKER_HOST?.trim()) {
    put('engine.host', env.DOCKER_HOST.trim(), 'DOCKER_HOST');
    if (env.BERTH_ENGINE_TLS_VERIFY === undefined && env.DOCKER_TLS_VERIFY?.trim()) put('engine.tlsVerify', true, 'DOCKER_TLS_VERIFY');
    if (env.BERTH_ENGINE_CERT_PATH === undefined && env.DOCKER_CERT_PATH?.trim()) put('engine.certPath', env.DOCKER_CERT_PATH.trim(), 'DOCKER_CERT_PATH');
  } else if (!engineVars && env.DOCKER_CONTEXT?.trim()) {
    put('engine.context', env.DOCKER_CONTEXT.trim(), 'DOCKER_CONTEXT');
  }
  for (const [key, kind] of Object.entries(LEAVES)) {
    const variable = envVarForKey(key);
    const raw = env[variable];
    if (raw === undefined) continue;
    put(key, coerce(raw, kind), variable);
  }
  return input;
}

/** Reads an environment variable's text as the key's kind; text that does not fit is left for the schema to report. */
function coerce(raw: string, kind: LeafKind): unknown {
  const value = raw.trim();
  switch (kind) {
    case 'boolean':
      if (/^(true|1|yes|on)$/i.test(value)) return true;
      if (/^(false|0|no|off)$/i.test(value)) return false;
      return value;
    case 'integer':
      return /^-?\d+$/.test(value) ? Number(value) : value;
    case 'list':
      return value === '' ? [] : value.split(',').map((item) => item.trim());
    default:
      return value;
  }
}

/**
 * The one rule for durations and sizes (common/units.ts) applied to the keys users set: no key's
 * name carries a unit, so a bare number ("5000" in BERTH_ENGINE_READ_TIMEOUT, `readTimeout: 5000`
 * in the file) is refused with the units named, rather than read as milliseconds or bytes. A bare
 * 0 is zero in any unit and is left to the key's bounds. Defaults are berth's own and not checked;
 * a number given in code (`flags`, typed `DurationInput`/`SizeInput`) is milliseconds or bytes.
 */
function unitIssues(merged: Plain, origins: Origins): FieldIssue[] {
  const issues: FieldIssue[] = [];
  for (const [key, kind] of Object.entries(LEAVES)) {
    if (kind !== 'duration' && kind !== 'size') continue;
    // A section that no default holds (cluster) records its origin on the section only.
    const origin = originOf(origins, key);
    if (origin === undefined || origin === 'default') continue;
    const value = key.split('.').reduce<unknown>((node, part) => (isPlain(node) ? node[part] : undefined), merged);
    const bareText = typeof value === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(value);
    // A number from the programmatic flags (AgentConfigInput in code) is milliseconds or bytes, as the library's options are.
    const bareNumber = typeof value === 'number' && origin !== 'flags';
    if (!bareText && !bareNumber) continue;
    const read = kind === 'duration' ? readTypedDuration(String(value)) : readTypedSize(String(value));
    if (!read.ok) issues.push({ field: key, rule: `${read.problem} (from ${origin})` });
  }
  return issues;
}

function readFileInput(file: string): Plain {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ValidationError([{ field: file, rule: `cannot be read: ${messageOf(error)}` }], { cause: error });
  }
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ValidationError(doc.errors.map((e) => ({ field: file, rule: `is not valid YAML: ${e.message.split('\n')[0]}` })));
  }
  const value: unknown = doc.toJS();
  if (value === null || value === undefined) return {};
  if (!isPlain(value)) throw new ValidationError([{ field: file, rule: 'must be a YAML mapping of configuration keys' }]);
  return value;
}

function issueField(pathParts: readonly PropertyKey[]): string {
  return pathParts.length === 0 ? '(configuration)' : pathParts.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[');
}

function originOf(origins: Origins, field: string): string | undefined {
  for (let key = field.replace(/\[\d+\]/g, ''); key !== ''; key = key.includes('.') ? key.slice(0, key.lastIndexOf('.')) : '') {
    const origin = origins.get(key);
    if (origin !== undefined) return origin;
  }
  return undefined;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/**
 * Loads, merges, validates and compiles the configuration once. Throws a ValidationError naming
 * every bad key, its rule, and where the value came from (the file, the environment variable, or
 * the flags).
 */
export function loadAgentConfig(sources: ConfigSources): AgentConfig {
  const env = sources.env ?? {};
  const file = sources.file ?? (env.BERTH_CONFIG?.trim() || undefined);
  const origins: Origins = new Map();
  const merged: Plain = {};
  mergeInto(merged, defaultsInput(sources.host, env) as Plain, 'default', origins);
  if (file !== undefined) mergeInto(merged, readFileInput(file), file, origins);
  const envOrigins = new Map<string, string>();
  mergeInto(merged, envInput(env, envOrigins), 'environment', origins);
  for (const [key, variable] of envOrigins) origins.set(key, variable);
  if (sources.flags) mergeInto(merged, sources.flags as Plain, 'flags', origins);

  const unitless = unitIssues(merged, origins);
  const parsed = buildSchema(sources.host).safeParse(merged);
  if (!parsed.success || unitless.length > 0) {
    const schemaIssues = parsed.success ? [] : parsed.error.issues;
    const issues: FieldIssue[] = [...unitless];
    issues.push(...schemaIssues.flatMap((i): FieldIssue[] => {
      const keys = i.code === 'unrecognized_keys' ? i.keys.map((k) => issueField([...i.path, k])) : [issueField(i.path)];
      return keys.map((field) => {
        const rule =
          i.code === 'unrecognized_keys' ? 'is not a configuration key' : i.code === 'invalid_type' && i.expected === 'object' ? 'must be a mapping of keys' : i.message;
        const origin = originOf(origins, field);
        return { field, rule: origin && origin !== 'default' ? `${rule} (from ${origin})` : rule };
      });
    }).filter((issue) => !unitless.some((u) => u.field === issue.field)));
    throw new ValidationError(issues, { context: { file } });
  }
  const c = parsed.data!;
  // The preset's capabilities are given to every task, which the policy then checks: one outside it would refuse them all.
  const outside = c.defaults.sandboxCapabilities.map(normalizeCapability).filter((cap) => !c.policy.allowedCapabilities.map(normalizeCapability).includes(cap));
  if (outside.length > 0) {
    throw new ValidationError([{ field: 'defaults.sandboxCapabilities', rule: `${outside.join(', ')} must also be in policy.allowedCapabilities: the policy checks what the preset gives every task` }], { context: { file } });
  }
  const socketPath = c.socketPath ?? path.join(c.dataDir, 'agent.sock');
  // sun_path holds 108 bytes with the terminating NUL; a longer path fails only at listen time.
  if (Buffer.byteLength(socketPath) > 107) {
    const origin = c.socketPath === undefined ? 'dataDir' : originOf(origins, 'socketPath');
    throw new ValidationError(
      [{ field: 'socketPath', rule: `${socketPath} is longer than a unix socket path may be (107 bytes); set a shorter socketPath or dataDir${origin && origin !== 'default' ? ` (from ${origin})` : ''}` }],
      { context: { file } },
    );
  }
  const tls = c.tls.cert !== undefined && c.tls.key !== undefined ? { certFile: c.tls.cert, keyFile: c.tls.key, ...(c.tls.clientCa !== undefined ? { clientCaFile: c.tls.clientCa } : {}) } : undefined;
  // The bearer token would cross the network in clear: only an explicit opt-out allows that.
  if (c.listen && !tls && !c.tls.allowInsecure && !isLoopbackHost(c.listen.host)) {
    const origin = originOf(origins, 'listen');
    throw new ValidationError(
      [
        {
          field: 'listen',
          rule: `${c.listen.host} is not a loopback address: set tls.cert and tls.key to serve HTTPS, or tls.allowInsecure: true to serve plain HTTP (the token crosses the network in clear)${origin && origin !== 'default' ? ` (from ${origin})` : ''}`,
        },
      ],
      { context: { file } },
    );
  }
  const cluster = c.cluster === undefined ? undefined : compileCluster(c.cluster);
  const unreachable = cluster === undefined ? undefined : unreachableAddressRule(cluster, c.listen);
  if (unreachable !== undefined) {
    throw new ValidationError([{ field: 'cluster.address', rule: unreachable }], { context: { file } });
  }
  const config: Omit<AgentConfig, 'pools'> = {
    dataDir: c.dataDir,
    socketPath,
    ...(c.listen ? { listen: c.listen } : {}),
    ...(tls ? { tls } : {}),
    ...(c.agentId ? { agentId: c.agentId } : {}),
    engine: agentEngine(c.engine, env, origins),
    engineDeadlines: { readMs: c.engine.readTimeout, writeMs: c.engine.writeTimeout },
    http: {
      headersTimeoutMs: c.http.headersTimeout,
      requestTimeoutMs: c.http.requestTimeout,
      keepAliveTimeoutMs: c.http.keepAliveTimeout,
      maxConnections: c.http.maxConnections,
    },
    health: { engineTimeoutMs: c.health.engineTimeout },
    events: { windowMs: c.events.window, maxCount: c.events.maxCount },
    tasks: { relistPeriodMs: c.tasks.relistPeriod, ...(c.tasks.startOutageLimit !== undefined ? { startOutageLimitMs: c.tasks.startOutageLimit } : {}) },
    policy: {
      allowPrivileged: c.policy.allowPrivileged,
      allowedBindSources: c.policy.allowedBindSources.map((p) => path.normalize(p)),
      allowedCapabilities: c.policy.allowedCapabilities.map(normalizeCapability),
      allowHostNetwork: c.policy.allowHostNetwork,
      allowInlineRegistryAuth: c.policy.allowInlineRegistryAuth,
      allowedDevices: c.policy.allowedDevices.map((p) => path.normalize(p)),
      allowedNetworks: c.policy.allowedNetworks,
      allowedRuntimes: c.policy.allowedRuntimes,
      allowedSysctls: c.policy.allowedSysctls,
      allowedSeccompProfiles: c.policy.allowedSeccompProfiles,
      allowUnconfinedSeccomp: c.policy.allowUnconfinedSeccomp,
      allowUnconfinedApparmor: c.policy.allowUnconfinedApparmor,
      allowNegativeOomScoreAdj: c.policy.allowNegativeOomScoreAdj,
      allowInlineSeccomp: false,
    },
    registries: c.registries,
    defaults: {
      resources: { memoryBytes: c.defaults.resources.memory, cpuMilli: c.defaults.resources.cpuMilli, pidsLimit: c.defaults.resources.pidsLimit },
      ...(c.defaults.sandbox ? { sandbox: { tmpSizeBytes: c.defaults.sandboxTmpSize, capabilities: c.defaults.sandboxCapabilities.map(normalizeCapability) } } : {}),
    },
    admission: {
      memoryBytes: c.admission.memory,
      cpuMilli: c.admission.cpuMilli,
      ...(c.admission.maxConcurrent !== undefined ? { maxConcurrent: c.admission.maxConcurrent } : {}),
    },
    images: { removeDelayMs: c.images.removeDelay, cleanup: c.images.cleanup, pullActivityTimeoutMs: c.images.pullActivityTimeout },
    logs: { maxFileBytes: c.logs.maxFileSize, maxFiles: c.logs.maxFiles },
    files: { maxCount: c.files.maxCount, maxBytes: c.files.maxBytes, uploadMaxBytes: c.files.uploadMaxSize, uploadTtlMs: c.files.uploadTtl },
    engineLog: { maxSizeBytes: c.engineLog.maxSize },
    artifacts: { maxBytes: c.artifacts.maxBytes },
    reconcile: { enabled: c.reconcile.enabled, periodMs: c.reconcile.period, creationGraceMs: c.reconcile.creationGrace, orphanGraceMs: c.reconcile.orphanGrace, dryRun: c.reconcile.dryRun },
    prune: {
      ...(c.prune.schedule !== undefined ? { scheduleMs: c.prune.schedule } : {}),
      ...(c.prune.imageBudget !== undefined ? { imageBudgetBytes: c.prune.imageBudget } : {}),
      exemptImages: c.prune.exemptImages,
    },
    retention: {
      ...(c.retention.maxAge !== undefined ? { maxAgeMs: c.retention.maxAge } : {}),
      ...(c.retention.maxCount !== undefined ? { maxCount: c.retention.maxCount } : {}),
      ...(c.retention.diskWatermark !== undefined ? { diskWatermark: c.retention.diskWatermark } : {}),
      intervalMs: c.retention.interval,
    },
    groups: c.groups.infraImage !== undefined ? { infraImage: c.groups.infraImage } : {},
    ports: { range: c.ports.range, hostIp: c.ports.hostIp },
    ...(cluster !== undefined ? { cluster } : {}),
    ...(c.state.postgres !== undefined ? { state: { postgresUrl: c.state.postgres, schema: c.state.schema ?? defaultStateSchema(cluster?.nodeId), deadlineMs: c.state.deadline } } : {}),
    ...(file !== undefined ? { file } : {}),
  };
  let pools: PoolDefinition[];
  try {
    // Checked as a submitted spec is, under the policy and defaults just compiled.
    pools = compilePools(c.pools, config, agentSpecPolicy(config));
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    const origin = originOf(origins, 'pools');
    throw new ValidationError(error.issues.map((it) => ({ field: it.field, rule: origin && origin !== 'default' ? `${it.rule} (from ${origin})` : it.rule })), { context: { file } });
  }
  return deepFreeze({ ...config, pools });
}

/**
 * The engine's connection options from `engine.*`: a context's endpoint and TLS material, a host
 * (TLS with engine.tlsVerify, from engine.certPath, as DOCKER_TLS_VERIFY and DOCKER_CERT_PATH do),
 * or the socket. Files are read here, once, so that a missing certificate fails the start naming its key.
 */
function agentEngine(
  engine: { host?: string; socket?: string; tlsVerify?: boolean; certPath?: string; context?: string },
  env: Readonly<Record<string, string | undefined>>,
  origins: Origins,
): AgentConfig['engine'] {
  const named = (field: string, error: unknown): never => {
    const origin = originOf(origins, field);
    const rule = error instanceof ValidationError ? error.issues.map((i) => i.rule).join('; ') : messageOf(error);
    throw new ValidationError([{ field, rule: origin && origin !== 'default' ? `${rule} (from ${origin})` : rule }]);
  };
  if (engine.context !== undefined) {
    const configDir = dockerConfigDir(env);
    if (configDir === undefined) return named('engine.context', new Error('cannot be found: neither DOCKER_CONFIG nor HOME is set'));
    try {
      return engineOptionsOf(readContext(configDir, engine.context).endpoint, env);
    } catch (error) {
      return named('engine.context', error);
    }
  }
  if (engine.host === undefined) return { socketPath: engine.socket ?? '/var/run/docker.sock' };
  try {
    const endpoint = endpointFromDockerHost({ DOCKER_HOST: engine.host, DOCKER_TLS_VERIFY: engine.tlsVerify ? '1' : undefined, DOCKER_CERT_PATH: engine.certPath }, env.HOME);
    return engineOptionsOf(endpoint!, env);
  } catch (error) {
    return named(engine.certPath === undefined ? 'engine.host' : 'engine.certPath', error);
  }
}

function normalizeCapability(cap: string): string {
  return cap.toUpperCase().replace(/^CAP_/, '');
}

// ---- reload ----

export type ReloadResult =
  | {
      ok: true;
      config: AgentConfig;
      previous: AgentConfig;
      /** Dotted keys whose values changed and took effect. */
      changed: string[];
      /** Dotted keys that changed in the sources but keep their old values until a restart. */
      needsRestart: string[];
    }
  | { ok: false; error: ValidationError; config: AgentConfig };

function changedKeys(before: unknown, after: unknown, prefix = ''): string[] {
  if (isPlain(before) && isPlain(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    return keys.flatMap((key) => changedKeys(before[key], after[key], prefix === '' ? key : `${prefix}.${key}`));
  }
  return JSON.stringify(before) === JSON.stringify(after) ? [] : [prefix];
}

/**
 * Holds the configuration as one immutable value and swaps it atomically (read-copy-update, as
 * Moby's daemon does): an operation takes `current()` once when it starts and keeps that snapshot,
 * so a request that races a reload still sees one consistent configuration.
 */
export class ConfigHolder {
  readonly #sources: ConfigSources;
  #current: AgentConfig;

  /** Loads the configuration; throws the ValidationError if it is invalid. */
  constructor(sources: ConfigSources) {
    this.#sources = sources;
    this.#current = loadAgentConfig(sources);
  }

  /** The configuration in force: a frozen snapshot that never changes under the caller. */
  current(): AgentConfig {
    return this.#current;
  }

  /**
   * Re-reads the file (the environment and flags are those of the process, fixed at start),
   * validates, and swaps. An invalid file is refused: the result carries the error (naming the
   * keys) and the old configuration stays. Keys in RESTART_ONLY_KEYS keep their running values and
   * are reported in `needsRestart`. Nothing is logged here: the caller logs the result once.
   */
  reload(): ReloadResult {
    const previous = this.#current;
    let loaded: AgentConfig;
    try {
      loaded = loadAgentConfig(this.#sources);
    } catch (error) {
      if (error instanceof ValidationError) return { ok: false, error, config: previous };
      throw error;
    }
    const needsRestart = RESTART_ONLY_KEYS.flatMap((key) => changedKeys(previous[key as keyof AgentConfig], loaded[key as keyof AgentConfig], key)).sort();
    // A running agent cannot move its database or its sockets: those keys keep their running values.
    const next: Record<string, unknown> = { ...loaded };
    for (const key of RESTART_ONLY_KEYS) {
      const running = previous[key as keyof AgentConfig];
      if (running === undefined) delete next[key];
      else next[key] = running;
    }
    deepFreeze(next);
    const config = next as unknown as AgentConfig;
    const changed = changedKeys(previous, config);
    this.#current = config;
    return { ok: true, config, previous, changed, needsRestart };
  }
}
