import type { Command } from 'commander';
import { agentCommand, withClient, type AgentFlags } from './client.js';
import { FORMAT_HELP, IMAGE_FIELDS, imageFormatRow, parseFormat, renderFormatted } from './format.js';
import { renderImageTable, writeJson } from './output.js';
import type { CliIo } from './run.js';

/** `berth images`: the images the agent holds, with their holders. */
export function addImagesCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
  agentCommand(program, 'images', 'List the images the agent holds for its tasks, with their holders')
    .option('-q, --quiet', 'print image ids only')
    .option('--no-trunc', 'print image ids in full')
    .option('--format <format>', FORMAT_HELP)
    .action((flags: AgentFlags & { quiet?: boolean; trunc: boolean; format?: string }) =>
      run(() =>
        withClient(io, flags, async (client) => {
          const format = parseFormat(flags.format, IMAGE_FIELDS);
          const images = await client.images();
          const rows = images.map((image) => imageFormatRow(image, Date.now(), !flags.trunc));
          if (flags.quiet) io.stdout.write(rows.map((row) => `${String(row.ID)}\n`).join(''));
          else if (format.kind !== 'table') io.stdout.write(renderFormatted(format, rows));
          else if (flags.json) writeJson(io.stdout, images);
          else io.stdout.write(renderImageTable(images, Date.now(), !flags.trunc));
          return 0;
        }),
      ),
    );
}
