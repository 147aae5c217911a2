import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AgentEvents } from '../../../src/agent/events.js';
import { AgentMetrics } from '../../../src/agent/metrics.js';
import { Events } from '../../../src/common/events.js';
import type { ImageCoordinatorEvents } from '../../../src/images/index.js';
import type { PoolEvent, PoolSnapshot } from '../../../src/pools/types.js';
import { TASK_STATES, type TaskState } from '../../../src/state/index.js';

describe('metrics of warm pools', () => {
  it('show each pool\'s containers by state at each scrape, hits by pool, misses by reason and refill latency', async () => {
    let snapshot: PoolSnapshot[] = [{ name: 'py', target: 3, idle: 2, frozen: 1, inUse: 0, starting: 0 }];
    const listeners = new Set<(event: PoolEvent) => void>();
    const metrics = new AgentMetrics({
      taskCounts: () => Object.fromEntries(TASK_STATES.map((s) => [s, 0])) as Record<TaskState, number>,
      task: () => undefined,
      events: new AgentEvents(),
      images: new Events<ImageCoordinatorEvents>(),
      processMetrics: false,
      pools: {
        snapshot: () => snapshot,
        onEvent: (listener) => {
          listeners.add(listener);
          return () => listeners.delete(listener);
        },
      },
    });
    const before = await metrics.render();
    assert.match(before, /^berth_pool_containers\{pool="py",state="idle"\} 2$/m);
    assert.match(before, /^berth_pool_containers\{pool="py",state="frozen"\} 1$/m);
    assert.match(before, /^berth_pool_hits_total\{pool="py"\} 0$/m);
    assert.match(before, /^berth_pool_misses_total\{reason="pool-empty"\} 0$/m);
    const emit = (event: PoolEvent): void => {
      for (const listener of listeners) listener(event);
    };
    emit({ type: 'pool.hit', pool: 'py', taskId: 'a' });
    emit({ type: 'pool.hit', pool: 'py', taskId: 'b' });
    emit({ type: 'pool.miss', pool: 'py', taskId: 'c', reason: 'pool-empty' });
    emit({ type: 'pool.miss', taskId: 'd', reason: 'no-match' });
    emit({ type: 'pool.refilled', pool: 'py', containerId: 'x', latencyMs: 300 });
    snapshot = [{ name: 'py', target: 3, idle: 0, frozen: 0, inUse: 2, starting: 1 }];
    const after = await metrics.render();
    assert.match(after, /^berth_pool_hits_total\{pool="py"\} 2$/m);
    assert.match(after, /^berth_pool_misses_total\{reason="pool-empty"\} 1$/m);
    assert.match(after, /^berth_pool_misses_total\{reason="no-match"\} 1$/m);
    assert.match(after, /^berth_pool_refill_seconds_count\{pool="py"\} 1$/m);
    assert.match(after, /^berth_pool_refill_seconds_bucket\{le="0\.5",pool="py"\} 1$/m);
    assert.match(after, /^berth_pool_containers\{pool="py",state="in_use"\} 2$/m);
    assert.match(after, /^berth_pool_containers\{pool="py",state="idle"\} 0$/m);
    // A pool's containers are not a group's objects: the group removals keep their three roles.
    assert.doesNotMatch(after, /berth_reconciler_group_removals_total\{role="pool"\}/);
    metrics.close();
    assert.equal(listeners.size, 0, 'close stops listening to the pools');
  });
});
