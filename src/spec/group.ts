/**
 * A task group: tasks submitted together that share one network namespace, owned by an
 * infrastructure container berth creates first and removes last (Nomad's group network), and one
 * shared directory (a berth-managed volume, like Nomad's alloc dir). Validated once, at the edge,
 * into a frozen ResolvedGroupSpec; every member is a full task spec, checked as a task is, with
 * its issues named by their place in the group (`tasks[1].resources.memory`).
 */
import { z } from 'zod';
import { ValidationError, type FieldIssue } from '../common/errors.js';
import {
  DEFAULT_SPEC_POLICY,
  extraHost,
  hostname,
  ipAddress,
  fieldName,
  networkAlias,
  networkList,
  networkPolicyIssues,
  portList,
  resolveAcceptedTaskSpec,
  resolveTaskSpec,
  type NetworkAttachmentSpec,
  type PortSpec,
  type ResolvedTaskSpec,
  type SpecPolicy,
} from './schema.js';

/** When a task of a group runs: Nomad's lifecycle hooks. */
export const LIFECYCLES = ['prestart', 'sidecar', 'main'] as const;
export type Lifecycle = (typeof LIFECYCLES)[number];

export const MAX_GROUP_TASKS = 16;
export const DEFAULT_SHARED_DIR = '/alloc';
const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/;
const NAME_RULE = 'must be a letter or digit, then letters, digits, _ . or -, at most 64 characters';

/**
 * The task spec fields a group's task may not set: the namespace is the group's, so its network,
 * ports, networks, host name, DNS and hosts file are set once, at the group level (`network`).
 */
export const GROUP_LEVEL_FIELDS = ['network', 'ports', 'networks', 'hostname', 'dns', 'dnsSearch', 'extraHosts'] as const;


const groupNetwork = z
  .object({
    /**
     * `bridge` (default): the engine's default bridge, ports publishable; `none`: loopback only
     * (the tasks still reach each other on localhost); `private`: a user-defined bridge network
     * berth creates for the group, labels and removes, on which the group answers to its tasks'
     * names and `aliases`.
     */
    mode: z.enum(['bridge', 'none', 'private']).default('bridge'),
    ports: portList.default([]),
    /** More DNS names of the group on its private network. */
    aliases: z.array(networkAlias).max(16, 'must give at most 16 aliases').default([]),
    /** Named networks the group joins (the agent's policy lists which), with its aliases on each. */
    networks: networkList.default([]),
    hostname: hostname.optional(),
    dns: z.array(ipAddress).max(8, 'must name at most 8 servers').default([]),
    dnsSearch: z.array(hostname).max(8, 'must name at most 8 domains').default([]),
    extraHosts: z.array(extraHost).max(64, 'must give at most 64 entries').default([]),
  })
  .strict()
  .superRefine((network, ctx) => {
    if (network.mode === 'none') {
      if (network.ports.length > 0) ctx.addIssue({ code: 'custom', path: ['ports'], message: 'cannot publish ports with network mode "none"' });
      if (network.networks.length > 0) ctx.addIssue({ code: 'custom', path: ['networks'], message: 'cannot join networks with network mode "none"' });
    }
    if (network.aliases.length > 0 && network.mode !== 'private') ctx.addIssue({ code: 'custom', path: ['aliases'], message: 'needs network mode "private" (the aliases are names on the group\'s own network)' });
    if (network.mode === 'private' && network.networks.length > 0) ctx.addIssue({ code: 'custom', path: ['networks'], message: 'cannot be joined with network mode "private"; choose one' });
  });

const groupTaskHead = z.object({
  name: z.string().regex(NAME, NAME_RULE),
  lifecycle: z.enum(LIFECYCLES).default('main'),
});

export const groupSpecSchema = z
  .object({
    name: z.string().regex(NAME, NAME_RULE),
    tasks: z.array(z.record(z.string(), z.unknown())).min(1, 'must hold at least one task').max(MAX_GROUP_TASKS, `must hold at most ${MAX_GROUP_TASKS} tasks`),
    network: groupNetwork.default({ mode: 'bridge', ports: [], aliases: [], networks: [], dns: [], dnsSearch: [], extraHosts: [] }),
    /** Where every task mounts the group's shared volume; false: no shared directory. */
    sharedDir: z.union([z.string().regex(/^\/./, 'must be an absolute path other than /'), z.literal(false)]).default(DEFAULT_SHARED_DIR),
  })
  .strict();

/** A group as users write it. */
export type GroupSpec = z.input<typeof groupSpecSchema>;

export interface ResolvedGroupNetwork {
  readonly mode: 'bridge' | 'none' | 'private';
  readonly ports: readonly PortSpec[];
  readonly aliases: readonly string[];
  readonly networks: readonly NetworkAttachmentSpec[];
  readonly hostname?: string;
  readonly dns: readonly string[];
  readonly dnsSearch: readonly string[];
  readonly extraHosts: readonly string[];
}

export interface ResolvedGroupTask {
  readonly name: string;
  readonly lifecycle: Lifecycle;
  readonly spec: ResolvedTaskSpec;
  /** The task's spec as given (without name and lifecycle): what an agent stores and compiles again. */
  readonly input: Readonly<Record<string, unknown>>;
}

export interface ResolvedGroupSpec {
  readonly name: string;
  readonly tasks: readonly ResolvedGroupTask[];
  readonly network: ResolvedGroupNetwork;
  /** Undefined: no shared directory. */
  readonly sharedDir?: string;
}

/** Validates a group under `policy`; a ValidationError names every field at fault, members' by their place. */
export function resolveGroupSpec(input: unknown, policy: SpecPolicy = DEFAULT_SPEC_POLICY): ResolvedGroupSpec {
  return compileGroup(input, (task) => resolveTaskSpec(task, policy), networkPolicyIssues(networksOf(input), policy, 'network.networks'));
}

/** Re-reads a group its owner accepted earlier (the agent's stored group), without the policy, as resolveAcceptedTaskSpec does for a task. */
export function resolveAcceptedGroupSpec(stored: unknown): ResolvedGroupSpec {
  return compileGroup(stored, resolveAcceptedTaskSpec, []);
}

function networksOf(input: unknown): unknown {
  return (input as { network?: { networks?: unknown } } | null)?.network?.networks;
}

function compileGroup(input: unknown, compileTask: (task: unknown) => ResolvedTaskSpec, policyIssues: readonly FieldIssue[]): ResolvedGroupSpec {
  const issues: FieldIssue[] = [...policyIssues];
  const parsed = groupSpecSchema.safeParse(input);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      issues.push({ field: fieldName(issue.path), rule: issue.code === 'unrecognized_keys' ? `unknown field(s): ${issue.keys.join(', ')}` : issue.message });
    }
  }
  // The members are checked even when the group's own fields are not, so one answer names every problem.
  const rawTasks = (input as { tasks?: unknown } | null)?.tasks;
  const isObject = (t: unknown): t is Record<string, unknown> => typeof t === 'object' && t !== null && !Array.isArray(t);
  const members: unknown[] = Array.isArray(rawTasks) ? rawTasks : [];
  const tasks: ResolvedGroupTask[] = [];
  const names = new Set<string>();
  members.forEach((raw, i) => {
    // Not an object: the schema named it already.
    if (!isObject(raw)) return;
    const at = (field: string): string => `tasks[${i}].${field}`;
    const { name, lifecycle, ...spec } = raw;
    const head = groupTaskHead.safeParse({ name, lifecycle });
    if (!head.success) {
      for (const issue of head.error.issues) issues.push({ field: at(fieldName(issue.path)), rule: issue.message });
    } else if (names.has(head.data.name)) {
      issues.push({ field: at('name'), rule: `names task ${head.data.name} twice` });
    } else {
      // Named even when the rest of the task is at fault: a second task of that name is refused too.
      names.add(head.data.name);
    }
    for (const field of GROUP_LEVEL_FIELDS) {
      if (spec[field] !== undefined) issues.push({ field: at(field), rule: 'is set for the whole group, under network' });
    }
    let resolved: ResolvedTaskSpec | undefined;
    try {
      resolved = compileTask(spec);
    } catch (error) {
      if (!(error instanceof ValidationError)) throw error;
      for (const issue of error.issues) issues.push({ field: at(issue.field), rule: issue.rule });
    }
    if (head.success && resolved !== undefined) {
      tasks.push({ name: head.data.name, lifecycle: head.data.lifecycle, spec: resolved, input: spec });
    }
  });
  if (members.length > 0 && !members.some((t) => isObject(t) && (t.lifecycle === undefined || t.lifecycle === 'main'))) {
    issues.push({ field: 'tasks', rule: 'must hold at least one main task (lifecycle "main", the default): the main tasks decide the group\'s end' });
  }
  if (issues.length > 0 || !parsed.success) throw new ValidationError(issues);
  const group = parsed.data;
  return Object.freeze({
    name: group.name,
    tasks: Object.freeze(tasks),
    network: Object.freeze({ ...group.network }),
    ...(group.sharedDir === false ? {} : { sharedDir: group.sharedDir }),
  });
}

/**
 * The DNS names the group answers to on its private network: its tasks' names and its aliases, so
 * a service elsewhere on that network reaches a task by its name (all tasks share one address).
 */
export function groupAliases(group: Pick<ResolvedGroupSpec, 'tasks' | 'network'>): string[] {
  return [...new Set([...group.tasks.map((t) => t.name.toLowerCase()).filter((n) => hostname.safeParse(n).success), ...group.network.aliases])];
}
