import type { Command } from 'commander';
import type { NodeListView, NodeView } from '../agent/http/views.js';
import { formatBytes } from '../common/units.js';
import { agentCommand, withClient, type AgentFlags } from './client.js';
import { FORMAT_HELP, parseFormat, renderFormatted, type FormatFields, type FormatRow } from './format.js';
import { ago, renderTable, writeJson } from './output.js';
import type { CliIo } from './run.js';

/** `nodes`' fields for `--format`, with their `table` headers. */
export const NODE_FIELDS: FormatFields = Object.freeze({
  ID: 'ID',
  Self: 'SELF',
  Address: 'ADDRESS',
  Status: 'STATUS',
  State: 'STATE',
  DownReason: 'REASON',
  Labels: 'LABELS',
  Tasks: 'TASKS',
  Memory: 'MEMORY',
  CPU: 'CPU',
  Epoch: 'EPOCH',
  Heartbeat: 'HEARTBEAT',
});

/** Labels as `k=v,k=v`, sorted by label. */
export function formatLabels(labels: Readonly<Record<string, string>>): string {
  return Object.entries(labels)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, value]) => `${key}=${value}`)
    .join(',');
}

/** `Ready`, or `Down (left)` / `Down (node n2 lost its lease …)`, as docker node ls writes its STATUS. */
export function nodeStatus(node: Pick<NodeView, 'state' | 'downReason'>): string {
  if (node.state === 'ready') return 'Ready';
  return node.downReason === undefined ? 'Down' : `Down (${node.downReason})`;
}

/** Milli-CPUs as CPUs: 250 → `0.25`, 2000 → `2`. */
function cpus(milli: number): string {
  return String(Math.round(milli) / 1000);
}

/** One node as a `--format` row. */
export function nodeFormatRow(node: NodeView, nowMs: number): FormatRow {
  return {
    ID: node.id,
    Self: node.self,
    Address: node.address,
    Status: nodeStatus(node),
    State: node.state,
    DownReason: node.downReason ?? '',
    Labels: formatLabels(node.labels),
    Tasks: `${node.load.tasks} / ${node.capacity.tasks}`,
    Memory: `${formatBytes(node.load.memoryBytes)} / ${formatBytes(node.capacity.memoryBytes)}`,
    CPU: `${cpus(node.load.cpuMilli)} / ${cpus(node.capacity.cpuMilli)}`,
    Epoch: node.epoch,
    Heartbeat: ago(node.lastHeartbeat, nowMs),
  };
}

/**
 * The nodes as `docker node ls` shows them: the node that answered is marked `*` after its id; each
 * of TASKS, MEMORY and CPU is what the node runs / what it offers.
 */
export function renderNodeTable(listing: NodeListView, nowMs: number): string {
  return renderTable(
    ['ID', 'ADDRESS', 'STATUS', 'LABELS', 'TASKS', 'MEMORY', 'CPU', 'EPOCH', 'HEARTBEAT'],
    listing.nodes.map((node) => {
      const row = nodeFormatRow(node, nowMs);
      return [`${node.id}${node.self ? ' *' : ''}`, node.address, String(row.Status), String(row.Labels), String(row.Tasks), String(row.Memory), String(row.CPU), String(node.epoch), String(row.Heartbeat)];
    }),
  );
}

/** `berth nodes`: the cluster's nodes (or the agent alone), as a table, ids or JSON. */
export function addNodesCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
  agentCommand(program, 'nodes', 'List the cluster\'s nodes, their state and load (the answering node marked *); a single agent lists itself')
    .option('-q, --quiet', 'print node ids only')
    .option('--format <format>', FORMAT_HELP)
    .action((flags: AgentFlags & { quiet?: boolean; format?: string }) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const format = parseFormat(flags.format, NODE_FIELDS);
          const listing = await client.listNodes();
          const now = Date.now();
          if (flags.quiet) io.stdout.write(listing.nodes.map((node) => `${node.id}\n`).join(''));
          else if (format.kind !== 'table') io.stdout.write(renderFormatted(format, listing.nodes.map((node) => nodeFormatRow(node, now))));
          else if (flags.json) writeJson(io.stdout, listing);
          else io.stdout.write(renderNodeTable(listing, now));
          return 0;
        }),
      ),
    );
}
