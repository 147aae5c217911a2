import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AgentEvents } from '../../../src/agent/events.js';
import { AgentMetrics } from '../../../src/agent/metrics.js';
import { Events } from '../../../src/common/events.js';
import type { ImageCoordinatorEvents } from '../../../src/images/index.js';
import { TASK_STATES, type TaskState } from '../../../src/state/index.js';

describe('metrics of retention', () => {
  it('count every task.expired event by reason, from 0 for each reason, and read the state database size at each scrape', async () => {
    const events = new AgentEvents();
    let databaseBytes = 4096;
    const metrics = new AgentMetrics({
      taskCounts: () => Object.fromEntries(TASK_STATES.map((s) => [s, 0])) as Record<TaskState, number>,
      task: () => undefined,
      events,
      images: new Events<ImageCoordinatorEvents>(),
      stateDatabaseBytes: () => databaseBytes,
      processMetrics: false,
    });
    const before = await metrics.render();
    for (const reason of ['age', 'count', 'disk']) assert.match(before, new RegExp(`^berth_tasks_expired_total\\{reason="${reason}"\\} 0$`, 'm'));
    const endedAt = new Date(0).toISOString();
    events.emit({ type: 'task.expired', taskId: 'a', reason: 'age', endedAt });
    events.emit({ type: 'task.expired', taskId: 'b', reason: 'count', endedAt });
    events.emit({ type: 'task.expired', taskId: 'c', reason: 'count', endedAt });
    databaseBytes = 8192;
    const text = await metrics.render();
    assert.match(text, /^berth_tasks_expired_total\{reason="age"\} 1$/m);
    assert.match(text, /^berth_tasks_expired_total\{reason="count"\} 2$/m);
    assert.match(text, /^berth_tasks_expired_total\{reason="disk"\} 0$/m);
    assert.match(text, /^berth_state_database_bytes 8192$/m);
    metrics.close();
  });
});
