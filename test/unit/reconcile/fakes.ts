/**
 * A scripted fake of the reconciler's engine port and a counting logger: the reconciler's decisions
 * and timing are tested against these and the manual clock of test/support/time.ts, where the real
 * engine could not make them deterministic.
 */
import { BerthError } from '../../../src/common/errors.js';
import { LABELS } from '../../../src/common/labels.js';
import type { CallOptions } from '../../../src/engine/engine.js';
import type { ContainerListFilter, ContainerSummary, NetworkSummary, RemovalOutcome, VolumeSummary } from '../../../src/engine/types.js';
import type { ReconcileEngine } from '../../../src/reconcile/reconciler.js';

export const OWNER = 'agent-1';

/** A running berth container of `owner`, created at `createdAtMs` (a whole second, as the engine's list reports). */
export function berthContainer(id: string, createdAtMs: number, options: { owner?: string; taskId?: string } = {}): ContainerSummary {
  return {
    id,
    names: [`berth-${options.taskId ?? id}`],
    image: 'busybox:latest',
    labels: { [LABELS.managed]: 'true', [LABELS.ownerId]: options.owner ?? OWNER, [LABELS.taskId]: options.taskId ?? `task-${id}` },
    createdAt: new Date(Math.floor(createdAtMs / 1000) * 1000),
    state: 'running',
    status: 'Up',
  };
}

type Answer<T> = T | Error | Promise<T>;

export class FakeReconcileEngine implements ReconcileEngine {
  /** What the next list calls answer; the last one is repeated. */
  listAnswers: Array<Answer<ContainerSummary[]>> = [[]];
  readonly listCalls: Array<{ filter: ContainerListFilter; signal: AbortSignal | undefined }> = [];
  readonly removals: string[] = [];
  /** Per container id: what its removal answers. Default 'removed'. */
  readonly removeAnswers = new Map<string, Answer<'removed' | 'absent'>>();
  pingAnswer: Answer<void> = undefined;
  pings = 0;
  /** The engine's networks and volumes (every list answers all of them: the fake ignores filters, as the reconciler must not rely on them alone). */
  networks: NetworkSummary[] = [];
  volumes: VolumeSummary[] = [];
  readonly networkListFilters: Array<string[] | undefined> = [];
  readonly volumeListFilters: Array<string[] | undefined> = [];
  /** Removals of networks (by id) and volumes (by name), in order: `network <id>`, `volume <name>`. */
  readonly resourceRemovals: string[] = [];
  /** Per network id or volume name: what its removal answers. Default 'removed' (and it goes from the lists). */
  readonly resourceRemoveAnswers = new Map<string, Answer<RemovalOutcome>>();

  listContainers = async (filter: ContainerListFilter = {}, options: CallOptions = {}): Promise<ContainerSummary[]> => {
    this.listCalls.push({ filter, signal: options.signal });
    const answer = this.listAnswers.length > 1 ? this.listAnswers.shift()! : this.listAnswers[0]!;
    if (answer instanceof Error) throw answer;
    return answer;
  };

  removeContainer = async (id: string): Promise<'removed' | 'absent'> => {
    this.removals.push(id);
    const answer = this.removeAnswers.get(id) ?? 'removed';
    if (answer instanceof Error) throw answer;
    return answer;
  };

  listNetworks = async (filter: { labels?: string[] } = {}): Promise<NetworkSummary[]> => {
    this.networkListFilters.push(filter.labels);
    return [...this.networks];
  };

  listVolumes = async (filter: { labels?: string[] } = {}): Promise<VolumeSummary[]> => {
    this.volumeListFilters.push(filter.labels);
    return [...this.volumes];
  };

  removeNetwork = async (id: string): Promise<RemovalOutcome> => {
    this.resourceRemovals.push(`network ${id}`);
    const answer = await (this.resourceRemoveAnswers.get(id) ?? 'removed');
    if (answer instanceof Error) throw answer;
    if (answer === 'removed') this.networks = this.networks.filter((n) => n.id !== id);
    return answer;
  };

  removeVolume = async (name: string): Promise<RemovalOutcome> => {
    this.resourceRemovals.push(`volume ${name}`);
    const answer = await (this.resourceRemoveAnswers.get(name) ?? 'removed');
    if (answer instanceof Error) throw answer;
    if (answer === 'removed') this.volumes = this.volumes.filter((v) => v.name !== name);
    return answer;
  };

  ping = async (): Promise<void> => {
    this.pings++;
    if (this.pingAnswer instanceof Error) throw this.pingAnswer;
    await this.pingAnswer;
  };
}

export const unavailable = (): BerthError => new BerthError('BERTH_ENGINE_UNAVAILABLE', 'connect ECONNREFUSED');

/**
 * Where the reconciler tests start their manual clock (test/support/time.ts): a real wall-clock time,
 * so that containers created minutes before it have ordinary creation times.
 */
export const CLOCK_START_MS = 1_700_000_000_000;

export { recordingLogger, type LogLine } from '../../support/logger.js';
