import type { Command } from 'commander';
import type { PruneView } from '../agent/http/views.js';
import { collect } from './flags.js';
import { formatBytes } from '../common/units.js';
import { renderTable, shortId, writeJson } from './output.js';
import type { CliIo } from './run.js';
import { agentCommand, withClient, type AgentFlags } from './client.js';

/** What a prune removed (a dry run: would remove), one row per kind, then the total. */
export function renderPruneReport(report: PruneView): string {
  const kinds = [
    ['containers', report.containers],
    ['images', report.images],
    ['networks', report.networks],
    ['volumes', report.volumes],
  ] as const;
  // A dry run removed nothing: every line says what a prune would do.
  const verb = report.dryRun ? 'Would remove' : 'Removed';
  // Networks by name (an id says little); volumes' ids are their names.
  const label = (pruned: { ids: string[]; names?: string[] }, index: number): string => pruned.names?.[index] ?? shortId(pruned.ids[index]!.replace(/^sha256:/, ''));
  const lines = kinds.flatMap(([kind, pruned]) => pruned.ids.map((_, index) => `${verb} ${kind.slice(0, -1)} ${label(pruned, index)}`));
  const table = renderTable(
    ['KIND', report.dryRun ? 'WOULD REMOVE' : 'REMOVED', report.dryRun ? 'WOULD RECLAIM' : 'RECLAIMED'],
    kinds.map(([kind, pruned]) => [kind, String(pruned.ids.length), formatBytes(pruned.reclaimedBytes)]),
  );
  const total = report.dryRun
    ? `Dry run, nothing removed: ${formatBytes(report.reclaimedBytes)} would be reclaimed`
    : `Total reclaimed space: ${formatBytes(report.reclaimedBytes)}`;
  const notes = [
    ...(report.cancelled ? ['The prune was cancelled: what it removed until then is listed.'] : []),
    ...report.failed.map((failure) => `Could not remove ${failure.kind} ${shortId(failure.id)}: ${failure.error.message}`),
  ];
  return [...lines, table.trimEnd(), total, ...notes].join('\n') + '\n';
}

export function addPruneCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  agentCommand(program, 'prune', 'Remove what berth created and nobody uses: stopped task containers, unheld images berth pulled, empty networks, their volumes')
    .option('-f, --filter <filter>', 'label=<key>[=<value>], label!=<key>[=<value>], until=<24h | RFC 3339 | Unix time> (repeatable)', collect, [])
    .option('--dry-run', 'report what would be removed; remove nothing')
    .action((flags: AgentFlags & { filter: string[]; dryRun?: boolean }) =>
      withClient(io, flags, async (client) => {
        const report = await client.prune({ filters: flags.filter, dryRun: flags.dryRun ?? false });
        if (flags.json) writeJson(io.stdout, report);
        else io.stdout.write(renderPruneReport(report));
        return report.failed.length > 0 ? 1 : 0;
      }).then(setExitCode),
    );
}
