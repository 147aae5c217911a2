import { ValidationError, type FieldIssue } from '../common/errors.js';
import type { StoredTaskSpec } from '../state/tasks.js';
import { withSandboxPreset } from './sandbox-preset.js';

/** The configuration a spec's defaults come from (AgentConfig's `defaults` and `engineLog`). */
export interface SpecDefaultsConfig {
  readonly defaults: {
    readonly resources: { readonly memoryBytes: number; readonly cpuMilli: number; readonly pidsLimit: number };
    readonly sandbox?: { readonly tmpSizeBytes: number; readonly capabilities: readonly string[] };
  };
  readonly engineLog: { readonly maxSizeBytes: number };
}

/**
 * Gives a task without limits the agent's defaults, so it draws from the budget what it may use,
 * its engine log the agent's cap, and (with `defaults.sandbox`) the sandbox preset. A pool's spec
 * (`pools[i].spec`) gets the same, so that a submitted task and the pool agree on their pool key.
 */
export function withAgentDefaults(spec: StoredTaskSpec, config: SpecDefaultsConfig): StoredTaskSpec {
  // Only a field left out takes the default. Anything else, null included, is the spec's own and
  // is checked by its schema after this: null is a wrong type, not "use the default".
  const given = spec.resources as unknown;
  if (given !== undefined && (typeof given !== 'object' || given === null || Array.isArray(given))) return spec;
  const resources = { ...(spec.resources ?? {}) };
  if (resources.memory === undefined) resources.memory = config.defaults.resources.memoryBytes;
  if (resources.cpuMilli === undefined) resources.cpuMilli = config.defaults.resources.cpuMilli;
  if (resources.pidsLimit === undefined) resources.pidsLimit = config.defaults.resources.pidsLimit;
  const log = spec.log === undefined ? { driver: 'local' as const, maxSize: config.engineLog.maxSizeBytes } : spec.log;
  const withDefaults = { ...spec, resources, log };
  return config.defaults.sandbox ? withSandboxPreset(withDefaults, config.defaults.sandbox) : withDefaults;
}

/** The rules the agent adds to the spec's own (it reads output from the engine log, and keeps stdin as text); empty when it passes. */
export function agentSpecIssues(spec: unknown): FieldIssue[] {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) return [{ field: 'spec', rule: 'must be an object' }];
  const issues: FieldIssue[] = [];
  const raw = spec as Record<string, unknown>;
  if (raw.tty === true) issues.push({ field: 'tty', rule: 'is not supported by the agent (it reads output from the engine log)' });
  if (raw.stdin !== undefined && typeof raw.stdin !== 'string') issues.push({ field: 'stdin', rule: 'must be a string' });
  const log = raw.log as { driver?: unknown } | undefined;
  if (log?.driver === 'none') issues.push({ field: 'log.driver', rule: 'must be local or json-file: the agent reads output from the engine log' });
  return issues;
}

/** What the agent cannot do that the library can (see agentSpecIssues): a ValidationError names each. */
export function checkAgentSpec(spec: unknown): StoredTaskSpec {
  const issues = agentSpecIssues(spec);
  if (issues.length > 0) throw new ValidationError(issues);
  return spec as StoredTaskSpec;
}
