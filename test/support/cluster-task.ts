import type { ClusterTask } from '../../src/cluster/index.js';

/** A cluster index entry for unit tests: queued, nowhere yet, with `overrides` applied. */
export function clusterTaskFixture(overrides: Partial<ClusterTask> = {}): ClusterTask {
  return {
    id: 't1',
    spec: { image: 'busybox', command: ['true'], labels: { app: 'web' } },
    priority: 0,
    constraints: {},
    demand: { memoryBytes: 0, cpuMilli: 0 },
    restartOnLost: 0,
    lostCount: 0,
    state: 'queued',
    nodeId: undefined,
    epoch: undefined,
    attempt: 0,
    containerId: undefined,
    exitCode: undefined,
    endReason: undefined,
    submittedAt: new Date('2026-01-01T00:00:00Z'),
    queuedAt: new Date('2026-01-01T00:00:00Z'),
    claimedAt: undefined,
    startedAt: undefined,
    endedAt: undefined,
    ...overrides,
  };
}
