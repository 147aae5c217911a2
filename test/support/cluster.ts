/**
 * Cluster fixtures for agent tests: putting a task on one node of a cluster of real agents.
 */
import type { AgentClient } from '../../src/agent/client.js';
import type { ClusterStore } from '../../src/cluster/index.js';
import type { StoredTaskSpec } from '../../src/state/tasks.js';
import { pollUntil } from './engine.js';

/** The node label every test node carries, so that a constraint names exactly one node. */
export const NODE_NAME_LABEL = 'berth-test-node';

/**
 * Runs a task on one node through cluster placement: it is submitted (to `via`, default the node
 * itself) with a constraint only that node satisfies (its `berth-test-node` label), and the cluster
 * index is polled until that node reports it running.
 */
export async function placeOnNode(
  store: ClusterStore,
  node: { readonly nodeId: string; readonly client: AgentClient },
  task: { readonly id: string; readonly spec: StoredTaskSpec },
  via: AgentClient = node.client,
): Promise<void> {
  await via.submit({ id: task.id, spec: { ...task.spec, constraints: { [`node.${NODE_NAME_LABEL}`]: node.nodeId } } });
  await pollUntil(`${task.id} running on ${node.nodeId} in the cluster index`, async () => {
    const found = await store.getTask(task.id);
    return found?.state === 'running' && found.nodeId === node.nodeId ? found : undefined;
  }, { timeoutMs: 60_000, intervalMs: 50 });
}
