import type { ContainerInspect } from '../../src/engine/types.js';

/**
 * A container as the engine port's inspect returns it: a running, unlabelled container with empty
 * limits, for unit tests that script an engine. Tests set what they look at through `overrides`.
 */
export function inspectFixture(overrides: Partial<ContainerInspect> = {}): ContainerInspect {
  return {
    id: 'c0ffee',
    name: 'berth-t1',
    image: 'img',
    labels: {},
    createdAt: new Date(0),
    status: 'running',
    running: true,
    paused: false,
    exitCode: 0,
    oomKilled: false,
    error: '',
    tty: false,
    openStdin: false,
    publishedPorts: [],
    networks: [],
    hostConfig: {
      memoryBytes: 0,
      memorySwapBytes: 0,
      memoryReservationBytes: 0,
      cpuQuota: 0,
      cpuPeriod: 0,
      cpuShares: 0,
      pidsLimit: 0,
      networkMode: 'none',
      privileged: false,
      capAdd: [],
      capDrop: [],
      logType: 'local',
      logConfig: {},
    },
    mounts: [],
    ...overrides,
  };
}
