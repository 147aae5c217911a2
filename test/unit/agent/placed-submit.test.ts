import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { locateTask, type TaskLocation } from '../../../src/agent/cluster-forward.js';
import { placedTaskView, publishesPorts, type PlacedViewDeps } from '../../../src/agent/http/forward-route.js';
import type { TaskView } from '../../../src/agent/http/views.js';
import type { ClusterTask } from '../../../src/cluster/index.js';
import { BerthError } from '../../../src/common/errors.js';
import { clusterTaskFixture } from '../../support/cluster-task.js';

const queued: ClusterTask = clusterTaskFixture({ spec: { image: 'busybox', ports: [{ container: 80 }] } });
const onB: ClusterTask = { ...queued, state: 'claimed', nodeId: 'b', epoch: 1, attempt: 1 };
const nodes = [{ nodeId: 'a', address: 'https://10.0.0.1:7443', state: 'ready' as const }, { nodeId: 'b', address: 'https://10.0.0.2:7443', state: 'ready' as const }];
const where = (task: ClusterTask | undefined): TaskLocation => locateTask({ isLocal: false, forwardedBy: undefined, selfNodeId: 'a', task, nodes });
const portView: TaskView = { id: 't1', state: 'pending', spec: { image: 'busybox' }, submittedAt: '2026-01-01T00:00:00.000Z', node: 'b', ports: [{ container: 80, protocol: 'tcp', hostIp: '127.0.0.1', host: 20_001 }] };

/**
 * A scripted cluster: the index's entry of the task per look (the last repeats), the holder's answers
 * per read (the last repeats), news sent by hand, and a record of what was withdrawn.
 */
function scripted(script: { index: readonly (ClusterTask | Error)[]; holder?: readonly { status: number; body: unknown }[]; local?: () => TaskView | undefined; refusal?: BerthError }) {
  let looks = 0;
  let reads = 0;
  const listeners = new Set<(taskId: string | undefined) => void>();
  const withdrawn: string[] = [];
  const deps: PlacedViewDeps = {
    forwarder: {
      locate: async () => {
        const entry = script.index[Math.min(looks++, script.index.length - 1)]!;
        if (entry instanceof Error) throw entry;
        return where(entry);
      },
      readTaskView: async () => script.holder![Math.min(reads++, script.holder!.length - 1)]!,
    },
    localView: () => script.local?.(),
    claimRefusal: () => script.refusal,
    withdrawRefused: async (taskId) => {
      withdrawn.push(taskId);
      return true;
    },
    news: (listener) => {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    track: () => () => undefined,
    placementWaitMs: 3_600_000,
  };
  return { deps, withdrawn, send: (taskId: string | undefined) => [...listeners].forEach((l) => l(taskId)), looks: () => looks, listeners: () => listeners.size };
}

const never = new AbortController().signal;

describe('the answer of a cluster submit that publishes ports', () => {
  it('is asked for a spec with ports only', () => {
    assert.equal(publishesPorts({ ports: [{ container: 80 }] }), true);
    assert.equal(publishesPorts({ ports: [] }), false);
    assert.equal(publishesPorts({ image: 'x' }), false);
    assert.equal(publishesPorts(undefined), false);
  });

  it('is this node\'s record when it claimed the task (ports included)', async () => {
    const { deps } = scripted({ index: [onB], local: () => portView });
    assert.deepEqual(await placedTaskView(deps, 't1', undefined, never), portView);
  });

  it('is the view of the node that recorded it, read once its news comes (its 409 before that is waited out)', async () => {
    const cluster = scripted({ index: [queued, onB], holder: [{ status: 409, body: { error: { code: 'BERTH_FORWARD_LOOP' } } }, { status: 200, body: { task: portView } }] });
    const answer = placedTaskView(cluster.deps, 't1', 'Bearer x', never);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(cluster.looks(), 1, 'queued: it sleeps on the news');
    cluster.send('t1');
    await new Promise((resolve) => setImmediate(resolve));
    cluster.send('t1');
    assert.deepEqual(await answer, portView);
    assert.equal(cluster.listeners(), 0);
  });

  it('is the claim\'s refusal on this node, and the task is withdrawn from the cluster', async () => {
    const refusal = new BerthError('BERTH_PORT_UNAVAILABLE', 'ports[0].host: host port 20001/tcp is held by task web');
    const cluster = scripted({ index: [onB], refusal });
    await assert.rejects(placedTaskView(cluster.deps, 't1', undefined, never), (error: unknown) => error === refusal);
    assert.deepEqual(cluster.withdrawn, ['t1']);
  });

  it('is the index\'s view of a task that ended on its node without a record there (that node could not take it on)', async () => {
    const failed: ClusterTask = { ...onB, state: 'exited', exitCode: 125, endReason: 'failed' };
    const { deps } = scripted({ index: [failed], holder: [{ status: 409, body: {} }] });
    const view = await placedTaskView(deps, 't1', undefined, never);
    assert.deepEqual([view?.state, view?.exitCode, view?.node], ['exited', 125, 'b']);
  });

  it('is pending (undefined) at once when the node that holds it cannot be read, and when a look fails (PostgreSQL away)', async () => {
    assert.equal(await placedTaskView(scripted({ index: [onB], holder: [{ status: 503, body: {} }] }).deps, 't1', undefined, never), undefined);
    const away = new BerthError('BERTH_CLUSTER_UNAVAILABLE', 'read the task: the cluster database did not answer');
    assert.equal(await placedTaskView(scripted({ index: [away] }).deps, 't1', undefined, never), undefined);
  });

  it('is pending (undefined) when the client goes away during the wait', async () => {
    const gone = new AbortController();
    const cluster = scripted({ index: [queued] });
    const answer = placedTaskView(cluster.deps, 't1', undefined, gone.signal);
    await new Promise((resolve) => setImmediate(resolve));
    gone.abort();
    assert.equal(await answer, undefined);
    assert.equal(cluster.listeners(), 0);
  });
});
