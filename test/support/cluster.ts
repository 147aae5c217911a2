/**
 * Cluster fixtures for agent tests: putting a task on one node of a cluster of real agents.
 */
import assert from 'node:assert/strict';
import type { AgentClient } from '../../src/agent/client.js';
import type { ClusterStore } from '../../src/cluster/index.js';
import type { StoredTaskSpec } from '../../src/state/tasks.js';

/** The node label every test node carries, so that a constraint names exactly one node. */
export const NODE_NAME_LABEL = 'berth-test-node';

/**
 * Runs a task on one node and records it in the cluster index as running there, as the claimer of
 * cluster placement will: the task is submitted to the node's own API (it runs there, with its local
 * record), then queued in the cluster with a constraint only that node satisfies (its
 * `berth-test-node` label), claimed by that node at its current epoch and reported running.
 * One function, so that it can become a constrained cluster submit once placement is merged.
 */
export async function placeOnNode(store: ClusterStore, node: { readonly nodeId: string; readonly client: AgentClient }, task: { readonly id: string; readonly spec: StoredTaskSpec }): Promise<void> {
  await node.client.submit({ id: task.id, spec: task.spec });
  const listing = await node.client.listNodes();
  const self = listing.nodes.find((n) => n.id === node.nodeId);
  assert.ok(self !== undefined && self.state === 'ready', `node ${node.nodeId} is ready in ${JSON.stringify(listing.nodes)}`);
  await store.enqueue({ id: task.id, spec: task.spec, constraints: { [`node.${NODE_NAME_LABEL}`]: node.nodeId } });
  const big = { memoryBytes: 1e12, cpuMilli: 1e6, tasks: 1000 };
  const claimed = await store.claim({ nodeId: node.nodeId, epoch: self.epoch, free: big, limit: 1 });
  assert.deepEqual(claimed.map((t) => t.id), [task.id], `node ${node.nodeId} claimed the task`);
  await store.report(task.id, node.nodeId, self.epoch, { kind: 'running' });
}
