/**
 * Validation of what callers hand the cluster store, once, at its edge: task submissions, node
 * registrations, budgets and claim requests. Pure; every problem is named in one ValidationError.
 */
import { ValidationError, type FieldIssue } from '../common/errors.js';
import { constraintLabels } from './constraints.js';
import type { Budget, ClaimRequest, NodeRegistration, PlacementStrategy, TaskSubmission } from './types.js';

/** Task and node ids: 1 to 128 characters, as the agent's task ids. */
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** Priorities and counts stay well inside PostgreSQL's integer. */
const PRIORITY_LIMIT = 1_000_000;
const MAX_RESTARTS_ON_LOST = 100;
const MAX_CLAIM_LIMIT = 1000;
/** `\u0000` in JSON text, escaped once (an odd number of backslashes): `\\u0000` is a backslash and text. */
const NUL_IN_JSON = /(?:^|[^\\])(?:\\\\)*\\u0000/;

/** A submission ready for the queue's row. */
export interface QueueRow {
  readonly id: string;
  readonly specJson: string;
  readonly priority: number;
  readonly constraintLabels: Record<string, string>;
  readonly demandMemoryBytes: number;
  readonly demandCpuMilli: number;
  readonly restartOnLost: number;
}

function checkId(issues: FieldIssue[], field: string, value: unknown): void {
  if (typeof value !== 'string' || !ID_PATTERN.test(value)) issues.push({ field, rule: 'must be 1 to 128 letters, digits, _ . or -, starting with a letter or digit' });
}

function checkCount(issues: FieldIssue[], field: string, value: unknown, max = Number.MAX_SAFE_INTEGER, min = 0): void {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) issues.push({ field, rule: `must be a whole number from ${min} to ${max}` });
}

function fail(issues: FieldIssue[]): void {
  if (issues.length > 0) throw new ValidationError(issues);
}

/** The queue row of a submission, or a ValidationError naming each field at fault. */
export function queueRowOf(task: TaskSubmission, field = 'task'): QueueRow {
  const issues: FieldIssue[] = [];
  checkId(issues, `${field}.id`, task.id);
  const priority = task.priority ?? 0;
  checkCount(issues, `${field}.priority`, priority, PRIORITY_LIMIT, -PRIORITY_LIMIT);
  const memoryBytes = task.demand?.memoryBytes ?? 0;
  const cpuMilli = task.demand?.cpuMilli ?? 0;
  checkCount(issues, `${field}.demand.memoryBytes`, memoryBytes);
  checkCount(issues, `${field}.demand.cpuMilli`, cpuMilli);
  const restartOnLost = task.restartOnLost ?? 0;
  checkCount(issues, `${field}.restartOnLost`, restartOnLost, MAX_RESTARTS_ON_LOST);
  let specJson: string | undefined;
  try {
    specJson = JSON.stringify(task.spec);
  } catch {
    specJson = undefined;
  }
  if (specJson === undefined) issues.push({ field: `${field}.spec`, rule: 'must be a JSON value' });
  // PostgreSQL's jsonb cannot hold the NUL character (JSON.stringify writes it as \u0000).
  else if (NUL_IN_JSON.test(specJson)) issues.push({ field: `${field}.spec`, rule: 'must not contain the NUL character' });
  let labels: Record<string, string> = {};
  try {
    labels = constraintLabels(task.constraints, `${field}.constraints`);
  } catch (error) {
    if (error instanceof ValidationError) issues.push(...error.issues);
    else throw error;
  }
  fail(issues);
  return { id: task.id, specJson: specJson!, priority, constraintLabels: labels, demandMemoryBytes: memoryBytes, demandCpuMilli: cpuMilli, restartOnLost };
}

export function checkBudget(budget: Budget | undefined, field: string): void {
  const issues: FieldIssue[] = [];
  if (budget === undefined || typeof budget !== 'object') issues.push({ field, rule: 'must be { memoryBytes, cpuMilli, tasks }' });
  else {
    checkCount(issues, `${field}.memoryBytes`, budget.memoryBytes);
    checkCount(issues, `${field}.cpuMilli`, budget.cpuMilli);
    checkCount(issues, `${field}.tasks`, budget.tasks);
  }
  fail(issues);
}

export function checkRegistration(node: NodeRegistration): void {
  const issues: FieldIssue[] = [];
  checkId(issues, 'nodeId', node.nodeId);
  if (typeof node.address !== 'string' || node.address.length === 0) issues.push({ field: 'address', rule: 'must be the address of the node\'s API' });
  for (const [key, value] of Object.entries(node.labels ?? {})) {
    if (key.length === 0 || typeof value !== 'string') issues.push({ field: `labels.${key}`, rule: 'must be a non-empty name with a text value' });
  }
  fail(issues);
  checkBudget(node.capacity, 'capacity');
}

export function checkLease(nodeId: string, epoch: number): void {
  const issues: FieldIssue[] = [];
  checkId(issues, 'nodeId', nodeId);
  checkCount(issues, 'epoch', epoch, Number.MAX_SAFE_INTEGER, 1);
  fail(issues);
}

export interface ResolvedClaim {
  readonly nodeId: string;
  readonly epoch: number;
  readonly free: Budget;
  readonly limit: number;
  readonly strategy: PlacementStrategy;
}

export function resolveClaim(request: ClaimRequest): ResolvedClaim {
  checkLease(request.nodeId, request.epoch);
  checkBudget(request.free, 'free');
  const issues: FieldIssue[] = [];
  const limit = request.limit ?? 16;
  checkCount(issues, 'limit', limit, MAX_CLAIM_LIMIT, 1);
  const strategy = request.strategy ?? 'binpack';
  if (strategy !== 'binpack' && strategy !== 'spread') issues.push({ field: 'strategy', rule: 'must be binpack or spread' });
  fail(issues);
  return { nodeId: request.nodeId, epoch: request.epoch, free: request.free, limit, strategy };
}

/**
 * The tasks a claimer takes of the candidates (in claim order), greedily: each one whose demand
 * still fits what is left of the free budget, one task slot each, up to `limit`. A large task that
 * does not fit does not keep smaller ones behind it from being claimed.
 */
export function takeWithinBudget<T extends { readonly demandMemoryBytes: number; readonly demandCpuMilli: number }>(candidates: readonly T[], free: Budget, limit: number): T[] {
  const taken: T[] = [];
  let memory = free.memoryBytes;
  let cpu = free.cpuMilli;
  const max = Math.min(limit, free.tasks);
  for (const candidate of candidates) {
    if (taken.length >= max) break;
    if (candidate.demandMemoryBytes > memory || candidate.demandCpuMilli > cpu) continue;
    memory -= candidate.demandMemoryBytes;
    cpu -= candidate.demandCpuMilli;
    taken.push(candidate);
  }
  return taken;
}
