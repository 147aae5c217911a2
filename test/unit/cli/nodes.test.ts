import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { toNodeListView, type NodeListView } from '../../../src/agent/http/views.js';
import { formatLabels, nodeFormatRow, nodeStatus, renderNodeTable, NODE_FIELDS } from '../../../src/cli/nodes.js';
import { parseFormat, renderFormatted } from '../../../src/cli/format.js';

const NOW = Date.parse('2026-01-01T00:01:00Z');
const GiB = 1024 ** 3;

const listing: NodeListView = toNodeListView({
  mode: 'cluster',
  self: 'web-1',
  nodes: [
    {
      nodeId: 'web-1',
      address: 'https://10.0.0.5:7443',
      labels: { zone: 'a', disk: 'ssd' },
      capacity: { memoryBytes: 7 * GiB, cpuMilli: 1900, tasks: 1000 },
      state: 'ready',
      epoch: 3,
      load: { memoryBytes: 512 * 1024 ** 2, cpuMilli: 500, tasks: 2 },
      held: { memoryBytes: 0, cpuMilli: 0, tasks: 0 },
      registeredAt: new Date('2026-01-01T00:00:00Z'),
      heartbeatAt: new Date(NOW - 500),
      leaseExpiresAt: new Date(NOW + 9500),
      downReason: undefined,
    },
    {
      nodeId: 'web-2',
      address: 'https://10.0.0.6:7443',
      labels: {},
      capacity: { memoryBytes: 7 * GiB, cpuMilli: 1900, tasks: 1000 },
      state: 'down',
      epoch: 1,
      load: { memoryBytes: 0, cpuMilli: 0, tasks: 0 },
      held: { memoryBytes: 0, cpuMilli: 0, tasks: 0 },
      registeredAt: new Date('2026-01-01T00:00:00Z'),
      heartbeatAt: new Date(NOW - 120_000),
      leaseExpiresAt: new Date(NOW - 110_000),
      downReason: 'left',
    },
  ],
});

describe('GET /v1/nodes view', () => {
  it('marks the answering node self, names ids, and shows a reason only for a node that is down', () => {
    assert.deepEqual(listing.nodes.map((n) => [n.id, n.self, n.state, n.downReason]), [['web-1', true, 'ready', undefined], ['web-2', false, 'down', 'left']]);
    assert.equal(listing.nodes[0]!.lastHeartbeat, new Date(NOW - 500).toISOString());
    assert.ok(!('downReason' in listing.nodes[0]!));
  });
});

describe('berth nodes', () => {
  it('prints a table as docker node ls does, the answering node marked *', () => {
    assert.equal(
      renderNodeTable(listing, NOW),
      [
        'ID        ADDRESS                 STATUS        LABELS            TASKS      MEMORY            CPU         EPOCH   HEARTBEAT',
        'web-1 *   https://10.0.0.5:7443   Ready         disk=ssd,zone=a   2 / 1000   512 MiB / 7 GiB   0.5 / 1.9   3       Less than a second ago',
        'web-2     https://10.0.0.6:7443   Down (left)                     0 / 1000   0 B / 7 GiB       0 / 1.9     1       2 minutes ago',
        '',
      ].join('\n'),
    );
  });

  it('--format takes the node fields, as templates and tables', () => {
    const rows = listing.nodes.map((node) => nodeFormatRow(node, NOW));
    const format = (text: string) => {
      const parsed = parseFormat(text, NODE_FIELDS);
      assert.notEqual(parsed.kind, 'table');
      return parsed as Exclude<typeof parsed, { kind: 'table' }>;
    };
    assert.equal(renderFormatted(format('{{.ID}} {{.Status}} {{.Epoch}} {{.Self}}'), rows), 'web-1 Ready 3 true\nweb-2 Down (left) 1 false\n');
    assert.equal(renderFormatted(format('table {{.ID}}\t{{.DownReason}}'), rows), 'ID      REASON\nweb-1\nweb-2   left\n');
    assert.throws(() => parseFormat('{{.Hostname}}', NODE_FIELDS), /unknown field "Hostname"/);
  });

  it('writes labels sorted as k=v and a down node\'s status with its reason', () => {
    assert.equal(formatLabels({ b: '2', a: '1' }), 'a=1,b=2');
    assert.equal(nodeStatus({ state: 'down', downReason: 'node n2 lost its lease (epoch 3, expired …)' }), 'Down (node n2 lost its lease (epoch 3, expired …))');
    assert.equal(nodeStatus({ state: 'down' }), 'Down');
  });
});
