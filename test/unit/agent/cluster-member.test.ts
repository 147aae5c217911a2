import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ClusterMember, nextBackoffMs, nodeCapacity, singleNode, type MembershipStore } from '../../../src/agent/cluster-member.js';
import type { ClusterConfig } from '../../../src/agent/cluster-config.js';
import type { Budget, NodeLease, NodeRegistration } from '../../../src/cluster/index.js';
import { BerthError } from '../../../src/common/errors.js';
import { pollUntil } from '../../support/engine.js';
import { recordingLogger } from '../../support/logger.js';

const config: ClusterConfig = { postgresUrl: 'postgres://berth:hunter2@db/x', labels: { disk: 'ssd' }, capacity: {}, leaseMs: 1000, heartbeatMs: 10, strategy: 'binpack' };
const admission = {
  snapshot: () => ({ budget: { memoryBytes: 4096, cpuMilli: 2000 }, used: { memoryBytes: 1024, cpuMilli: 500, tasks: 2 } }),
};

/** A scripted store: each call answers from the script (or succeeds), and is recorded. */
function scriptedStore(script: { heartbeat?: Array<'ok' | 'lost' | 'away'>; register?: Array<'ok' | 'away'> } = {}) {
  const calls: string[] = [];
  let epoch = 0;
  const lease = (): NodeLease => ({ nodeId: 'n1', epoch, leaseExpiresAt: new Date() });
  const away = (): BerthError => new BerthError('BERTH_CLUSTER_UNAVAILABLE', 'the database does not answer');
  const registrations: NodeRegistration[] = [];
  const loads: Budget[] = [];
  const store: MembershipStore = {
    async register(node) {
      calls.push('register');
      if (script.register?.shift() === 'away') throw away();
      registrations.push(node);
      epoch++;
      return lease();
    },
    async heartbeat(_nodeId, _epoch, load) {
      calls.push('heartbeat');
      const next = script.heartbeat?.shift();
      if (next === 'lost') throw new BerthError('BERTH_CLUSTER_LEASE_LOST', 'the lease is no longer valid');
      if (next === 'away') throw away();
      loads.push(load);
      return lease();
    },
    async expireLeases() {
      calls.push('expire');
      return { nodes: [], lost: [], requeued: [] };
    },
    async listNodes() {
      return [];
    },
    async leave(_nodeId, leftEpoch) {
      calls.push(`leave ${leftEpoch}`);
      return true;
    },
    async close() {
      calls.push('close');
    },
  };
  return { store, calls, registrations, loads };
}

describe('cluster membership', () => {
  it('registers with its labels and capacity, heartbeats with its load, sweeps once it has been a member for a lease, and leaves with its epoch', async () => {
    const { store, calls, registrations, loads } = scriptedStore();
    const member = new ClusterMember({ config: { ...config, leaseMs: 100 }, agentId: 'n1', admission, logger: recordingLogger(), openStore: async () => store });
    member.start('http://127.0.0.1:7070');
    await pollUntil('two heartbeats', async () => (loads.length >= 2 ? true : undefined), { timeoutMs: 5000, intervalMs: 5 });
    assert.deepEqual(registrations[0], { nodeId: 'n1', address: 'http://127.0.0.1:7070', labels: { disk: 'ssd' }, capacity: { memoryBytes: 4096, cpuMilli: 2000, tasks: 1000 } });
    assert.deepEqual(loads[0], { memoryBytes: 1024, cpuMilli: 500, tasks: 2 });
    await pollUntil('a sweep', async () => (calls.includes('expire') ? true : undefined), { timeoutMs: 5000, intervalMs: 5 });
    assert.deepEqual([member.isMember, member.epoch], [true, 1]);
    await member.leave();
    assert.deepEqual(calls.slice(-2), ['leave 1', 'close']);
    assert.equal(member.state, 'left');
  });

  it('a lost lease is logged once at warn and the node registers again with a new epoch', async () => {
    const { store, calls } = scriptedStore({ heartbeat: ['lost'] });
    const logger = recordingLogger();
    const member = new ClusterMember({ config, agentId: 'n1', admission, logger, openStore: async () => store });
    let failures = 0;
    member.onHeartbeatFailure(() => failures++);
    member.start('http://127.0.0.1:7070');
    await pollUntil('the second registration', async () => (member.epoch === 2 && member.isMember ? true : undefined), { timeoutMs: 5000, intervalMs: 5 });
    await member.leave();
    assert.deepEqual(calls.filter((c) => c === 'register').length, 2);
    assert.equal(logger.lines.filter((l) => l.level === 'warn' && l.message.includes('lost its cluster lease')).length, 1);
    assert.ok(logger.lines.some((l) => l.message === 'registered in the cluster again with a new epoch (2)'));
    assert.equal(failures, 1);
  });

  it('a database away is logged once, retried with a back-off, and its return logged once; the password is never logged', async () => {
    const { store } = scriptedStore({ register: ['away', 'away', 'away'], heartbeat: ['away', 'away'] });
    const logger = recordingLogger();
    const member = new ClusterMember({ config, agentId: 'n1', admission, logger, openStore: async () => store, backoff: { minMs: 1, maxMs: 4 } });
    member.start('http://127.0.0.1:7070');
    await pollUntil('a member after the outages', async () => (member.isMember && logger.lines.filter((l) => l.message === 'the cluster database answers again').length === 2 ? true : undefined), { timeoutMs: 5000, intervalMs: 5 });
    await member.leave();
    assert.equal(logger.lines.filter((l) => l.message.startsWith('the cluster database does not answer')).length, 2, 'once per outage: at start, and after the heartbeats failed');
    assert.ok(!JSON.stringify(logger.lines).includes('hunter2'));
    assert.ok(logger.lines.some((l) => l.meta.database === 'postgres://berth:<redacted>@db/x'));
  });

  it('a store that cannot be opened at start is retried, and the agent goes on', async () => {
    const { store } = scriptedStore();
    let opens = 0;
    const member = new ClusterMember({
      config,
      agentId: 'n1',
      admission,
      logger: recordingLogger(),
      backoff: { minMs: 1, maxMs: 2 },
      openStore: async () => {
        if (++opens < 3) throw new BerthError('BERTH_CLUSTER_UNAVAILABLE', 'no answer');
        return store;
      },
    });
    member.start('http://127.0.0.1:7070');
    assert.equal(member.isMember, false);
    await pollUntil('a member', async () => (member.isMember ? true : undefined), { timeoutMs: 5000, intervalMs: 5 });
    assert.equal(opens, 3);
    await member.leave();
  });

  it('the back-off doubles from its minimum to its maximum', () => {
    const bounds = { minMs: 200, maxMs: 1000 };
    const steps: number[] = [];
    let last: number | undefined;
    for (let i = 0; i < 5; i++) steps.push((last = nextBackoffMs(last, bounds)));
    assert.deepEqual(steps, [200, 400, 800, 1000, 1000]);
  });

  it('capacity comes from cluster.capacity, else the admission budget (tasks: its cap, else 1000)', () => {
    assert.deepEqual(nodeCapacity({ capacity: {} }, { memoryBytes: 10, cpuMilli: 20 }), { memoryBytes: 10, cpuMilli: 20, tasks: 1000 });
    assert.deepEqual(nodeCapacity({ capacity: {} }, { memoryBytes: 10, cpuMilli: 20, maxConcurrent: 3 }), { memoryBytes: 10, cpuMilli: 20, tasks: 3 });
    assert.deepEqual(nodeCapacity({ capacity: { memoryBytes: 5, tasks: 2 } }, { memoryBytes: 10, cpuMilli: 20 }), { memoryBytes: 5, cpuMilli: 20, tasks: 2 });
  });

  it('a single agent is one ready node of epoch 0 with its budget and load', () => {
    const now = new Date('2026-01-01T00:00:00Z');
    const node = singleNode('a1', 'unix:///run/berth.sock', admission.snapshot(), now, now);
    assert.deepEqual([node.nodeId, node.state, node.epoch, node.capacity, node.load], ['a1', 'ready', 0, { memoryBytes: 4096, cpuMilli: 2000, tasks: 1000 }, { memoryBytes: 1024, cpuMilli: 500, tasks: 2 }]);
  });
});
