import path from 'node:path';
import { z } from 'zod';
import { CLUSTER_OPTION_BOUNDS } from '../cluster/options.js';
import type { PlacementStrategy } from '../cluster/types.js';
import { HOUR_MS, MAX_SIZE_BYTES, type CountBounds, type DurationBounds, type SizeBounds } from '../common/units.js';
import { countOption, durationOption, durationRule, issue, mappingEntries, sizeOption, sizeRule } from '../common/validation.js';
import { NODE_LABEL_PREFIX } from '../cluster/constraints.js';
import { REDACTED } from '../spec/registry-auth.js';

/**
 * The agent's `cluster` key (docs/cluster.md): a PostgreSQL URL turns cluster mode on; the agent
 * then registers as a node and renews its lease. Validated here, compiled into milliseconds and
 * bytes; the defaults that depend on the running agent (node id, address, capacity) are applied by
 * `resolveClusterNode`.
 */

/** `cluster` as users write it. */
export interface ClusterConfigInput {
  /** The cluster's PostgreSQL URL (`postgres://user:password@host:5432/db`): required with any other cluster key. Never logged nor shown (its password reads `<redacted>`). */
  postgres?: string;
  /** The node's id in the cluster. Default the agent's id (`agentId`). */
  nodeId?: string;
  /** The address other nodes reach this agent's API at (`https://10.0.0.5:7443`). Default from `listen` (https with `tls.cert`). */
  address?: string;
  /** The node's labels, matched by task constraints `node.<label>` (`disk: ssd`; a `node.` prefix is accepted). Default none. */
  labels?: Record<string, string> | string[];
  /** What the node offers the cluster. Default the admission budget (`admission.*`; tasks: `admission.maxConcurrent`, else 1000). */
  capacity?: { memory?: string | number; cpuMilli?: number; tasks?: number };
  /** How long the node's lease lasts after each heartbeat. Default "10s"; 100 ms to 24 h. Use one value across the cluster. */
  lease?: string | number;
  /** How often the node renews its lease and reports its load. Default "3s", or a third of `cluster.lease` when that is less; 50 ms to 1 h, less than `cluster.lease`. */
  heartbeat?: string | number;
  /** Placement: `binpack` (fill the busiest node that fits, the default) or `spread`. */
  strategy?: PlacementStrategy;
  /**
   * The cluster's shared secret (at least 16 characters): every node accepts it as it accepts its own
   * API token, and presents it when it forwards a request to another node. Default none: a forwarded
   * request carries the caller's own token (which then works only where every node shares one API
   * token). Never logged nor shown. Set `cluster.tokenFile` instead to keep it out of the file.
   */
  token?: string;
  /** An absolute path to a file holding `cluster.token` (its first line). */
  tokenFile?: string;
  /**
   * TLS towards other nodes when forwarding (their addresses are https://): `ca` verifies their
   * certificates, `cert` and `key` are the client certificate this node presents (to nodes whose
   * `tls.clientCa` asks for one). Absolute paths to PEM files. Default none: the system's CAs, no client certificate.
   */
  tls?: { ca?: string; cert?: string; key?: string };
}

/** `cluster`, compiled. Absent: the agent runs alone (mode single). */
export interface ClusterConfig {
  /** Secret: use `maskPostgresUrl` to show it. */
  readonly postgresUrl: string;
  readonly nodeId?: string;
  readonly address?: string;
  /** Without the `node.` prefix, as the store matches them. */
  readonly labels: Readonly<Record<string, string>>;
  readonly capacity: { readonly memoryBytes?: number; readonly cpuMilli?: number; readonly tasks?: number };
  readonly leaseMs: number;
  readonly heartbeatMs: number;
  readonly strategy: PlacementStrategy;
  /** Secret: the cluster's shared token (`cluster.token`), when set in the configuration itself. */
  readonly token?: string;
  /** `cluster.tokenFile`, read when the agent starts (`readClusterCredentials`). */
  readonly tokenFile?: string;
  /** `cluster.tls`'s files, read when the agent starts. */
  readonly tls?: { readonly caFile?: string; readonly certFile?: string; readonly keyFile?: string };
}

/** The shortest `cluster.token` accepted: a shared secret guessable by trying is no secret. */
export const MIN_CLUSTER_TOKEN_LENGTH = 16;

/** The bounds of the cluster keys (README "Configuration"). */
export const CLUSTER_CONFIG_BOUNDS = Object.freeze({
  'cluster.lease': CLUSTER_OPTION_BOUNDS.lease,
  'cluster.heartbeat': { minMs: 50, maxMs: HOUR_MS },
  'cluster.capacity.memory': { minBytes: 0, maxBytes: MAX_SIZE_BYTES },
  'cluster.capacity.cpuMilli': { min: 0, max: 1_000_000 },
  'cluster.capacity.tasks': { min: 1, max: 1_000_000 },
} satisfies Record<string, DurationBounds | SizeBounds | CountBounds>);

/** The tasks a node offers when neither `cluster.capacity.tasks` nor `admission.maxConcurrent` says. */
export const DEFAULT_NODE_TASKS = 1000;

const NODE_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/;
const LABEL_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_./-]{0,62}$/;

/**
 * The URL with its password replaced by `<redacted>` (and a password in the query string too), as
 * the agent shows it in its log and API. Text that is not a URL is redacted whole.
 */
export function maskPostgresUrl(url: string): string {
  const match = /^([a-z][a-z0-9+.-]*:\/\/)([^@/?#]*@)?(.*)$/i.exec(url);
  if (!match) return REDACTED;
  const [, scheme, userinfo, rest] = match;
  const user = userinfo === undefined ? '' : `${userinfo.slice(0, -1).split(':')[0]}${userinfo.includes(':') ? `:${REDACTED}` : ''}@`;
  return `${scheme}${user}${rest!.replace(/([?&]password=)[^&#]*/gi, `$1${REDACTED}`)}`;
}

/** `cluster.postgres` (and `state.postgres`): a postgres:// or postgresql:// URL with a host. The rule never quotes the value (it may hold a password). */
export const postgresUrlOption = z.unknown().transform((value, ctx): string => {
  const rule = 'must be a PostgreSQL URL such as "postgres://berth@db.example:5432/berth"';
  if (typeof value !== 'string' || !/^postgres(ql)?:\/\/[^\s]+$/.test(value.trim())) return issue(ctx, rule);
  try {
    const parsed = new URL(value.trim());
    if (parsed.hostname === '') return issue(ctx, `${rule} (it names no host)`);
  } catch {
    return issue(ctx, rule);
  }
  return value.trim();
});

/** `cluster.address`: an http:// or https:// URL with a host and a port, no path. */
const address = z.unknown().transform((value, ctx): string => {
  const rule = 'must be the URL other nodes reach this agent\'s API at, such as "https://10.0.0.5:7443"';
  if (typeof value !== 'string') return issue(ctx, rule);
  try {
    const parsed = new URL(value.trim());
    if (!['http:', 'https:'].includes(parsed.protocol) || parsed.hostname === '' || parsed.port === '' || (parsed.pathname !== '/' && parsed.pathname !== '')) return issue(ctx, rule);
    if (isUnspecifiedHost(parsed.hostname)) return issue(ctx, `${rule}: ${parsed.hostname} is not an address others can reach`);
    return `${parsed.protocol}//${parsed.host}`;
  } catch {
    return issue(ctx, rule);
  }
});

/** A mapping of label → value, or (from the environment) a list of `label=value`; a `node.` prefix is dropped. */
const labels = z.unknown().transform((value, ctx): Record<string, string> => {
  const rule = 'must be a mapping of label to value, such as { disk: ssd } (or, in the environment, disk=ssd,…)';
  const entries = mappingEntries(value);
  if (entries === undefined) return issue(ctx, rule);
  const result: Record<string, string> = {};
  for (const [key, labelValue] of entries) {
    const name = key.startsWith(NODE_LABEL_PREFIX) ? key.slice(NODE_LABEL_PREFIX.length) : key;
    if (!LABEL_NAME.test(name)) ctx.addIssue({ code: 'custom', path: [key], message: 'must be a label name of [a-zA-Z0-9_./-], starting with a letter or digit' });
    else if (typeof labelValue !== 'string' || labelValue === '') ctx.addIssue({ code: 'custom', path: [key], message: 'must be a non-empty text value' });
    else result[name] = labelValue;
  }
  return result;
});

/** An absolute path to a file (`cluster.tokenFile`, `cluster.tls.*`). */
const filePath = (what: string) =>
  z.unknown().transform((value, ctx): string => (typeof value === 'string' && path.isAbsolute(value.trim()) ? value.trim() : issue(ctx, `must be an absolute path to ${what}`)));

/** `cluster.token`: never quoted in a rule (it is a secret). */
const clusterToken = z.unknown().transform((value, ctx): string => {
  if (typeof value !== 'string' || value.trim().length < MIN_CLUSTER_TOKEN_LENGTH || /\s/.test(value.trim())) {
    return issue(ctx, `must be a shared secret of at least ${MIN_CLUSTER_TOKEN_LENGTH} characters without spaces`);
  }
  return value.trim();
});

/** The schema of `cluster` (a section of the agent's configuration). */
export const clusterSection = z
  .object({
    postgres: postgresUrlOption.optional(),
    nodeId: z.unknown().transform((value, ctx): string => (typeof value === 'string' && NODE_ID.test(value) ? value : issue(ctx, 'must be 1 to 64 characters of [a-zA-Z0-9_.-], starting with a letter or digit'))).optional(),
    address: address.optional(),
    labels: labels.default({}),
    capacity: z
      .object({
        memory: sizeOption(CLUSTER_CONFIG_BOUNDS['cluster.capacity.memory'], sizeRule('16g')).optional(),
        cpuMilli: countOption(CLUSTER_CONFIG_BOUNDS['cluster.capacity.cpuMilli']).optional(),
        tasks: countOption(CLUSTER_CONFIG_BOUNDS['cluster.capacity.tasks']).optional(),
      })
      .strict()
      .default({}),
    lease: durationOption(CLUSTER_CONFIG_BOUNDS['cluster.lease'], durationRule('10s')).default(10_000),
    heartbeat: durationOption(CLUSTER_CONFIG_BOUNDS['cluster.heartbeat'], durationRule('3s')).optional(),
    strategy: z.unknown().transform((value, ctx): PlacementStrategy => (value === 'binpack' || value === 'spread' ? value : issue(ctx, 'must be "binpack" or "spread"'))).default('binpack'),
    token: clusterToken.optional(),
    tokenFile: filePath('a file holding the cluster\'s token').optional(),
    tls: z
      .object({
        ca: filePath('PEM CA certificates that sign the other nodes\' certificates').optional(),
        cert: filePath('the PEM client certificate this node presents to the others').optional(),
        key: filePath('the PEM private key of cluster.tls.cert').optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.postgres === undefined) ctx.addIssue({ code: 'custom', path: ['postgres'], message: 'must be set with any other cluster key: the cluster\'s PostgreSQL URL (postgres://…)' });
    if (c.token !== undefined && c.tokenFile !== undefined) ctx.addIssue({ code: 'custom', path: ['tokenFile'], message: 'must not be set with cluster.token: one of the two holds the cluster\'s token' });
    if (c.tls?.cert !== undefined && c.tls.key === undefined) ctx.addIssue({ code: 'custom', path: ['tls', 'key'], message: 'must be set with cluster.tls.cert (the certificate\'s private key)' });
    if (c.tls?.key !== undefined && c.tls.cert === undefined) ctx.addIssue({ code: 'custom', path: ['tls', 'cert'], message: 'must be set with cluster.tls.key (the key\'s certificate)' });
    if (c.heartbeat !== undefined && c.heartbeat >= c.lease) ctx.addIssue({ code: 'custom', path: ['heartbeat'], message: 'must be less than cluster.lease: a node renewing its lease less often than it lasts loses it' });
  });

/** The heartbeat when `cluster.heartbeat` is not set: 3 s, or a third of the lease when that is less (at least 50 ms), so that a short lease alone is valid. */
export function defaultHeartbeatMs(leaseMs: number): number {
  return Math.max(CLUSTER_CONFIG_BOUNDS['cluster.heartbeat'].minMs, Math.min(3_000, Math.floor(leaseMs / 3)));
}

/** Compiles the parsed section (with `listen` and `tls`, to default the address). */
export function compileCluster(c: z.output<typeof clusterSection>): ClusterConfig {
  return {
    postgresUrl: c.postgres!,
    ...(c.nodeId !== undefined ? { nodeId: c.nodeId } : {}),
    ...(c.address !== undefined ? { address: c.address } : {}),
    labels: c.labels,
    capacity: {
      ...(c.capacity.memory !== undefined ? { memoryBytes: c.capacity.memory } : {}),
      ...(c.capacity.cpuMilli !== undefined ? { cpuMilli: c.capacity.cpuMilli } : {}),
      ...(c.capacity.tasks !== undefined ? { tasks: c.capacity.tasks } : {}),
    },
    leaseMs: c.lease,
    heartbeatMs: c.heartbeat ?? defaultHeartbeatMs(c.lease),
    strategy: c.strategy,
    ...(c.token !== undefined ? { token: c.token } : {}),
    ...(c.tokenFile !== undefined ? { tokenFile: c.tokenFile } : {}),
    ...(c.tls !== undefined
      ? { tls: { ...(c.tls.ca !== undefined ? { caFile: c.tls.ca } : {}), ...(c.tls.cert !== undefined ? { certFile: c.tls.cert } : {}), ...(c.tls.key !== undefined ? { keyFile: c.tls.key } : {}) } }
      : {}),
  };
}

/** `0.0.0.0`, `::` and their spellings: a listen address that is every interface, not one others can dial. */
export function isUnspecifiedHost(host: string): boolean {
  const bare = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  return bare === '0.0.0.0' || bare === '::' || bare === '0:0:0:0:0:0:0:0' || bare === '';
}

/**
 * Why the configuration gives the cluster no address others can reach, or undefined when it does:
 * `cluster.address`, or else `listen` with a host that is not every interface (the port may be 0:
 * the one bound is used).
 */
export function unreachableAddressRule(cluster: Pick<ClusterConfig, 'address'>, listen: { host: string; port: number } | undefined): string | undefined {
  if (cluster.address !== undefined) return undefined;
  if (listen === undefined) return 'must be set, or listen: a cluster node needs an address other nodes reach its API at (the unix socket is this host\'s only)';
  if (isUnspecifiedHost(listen.host)) return `must be set: listen is ${listen.host} (every interface), not an address other nodes can reach`;
  return undefined;
}

/** The node's address from the TCP listener the agent bound: `https://` with TLS, else `http://`. */
export function addressFromListener(tcp: { host: string; port: number }, tls: boolean): string {
  const host = tcp.host.includes(':') && !tcp.host.startsWith('[') ? `[${tcp.host}]` : tcp.host;
  return `${tls ? 'https' : 'http'}://${host}:${tcp.port}`;
}
