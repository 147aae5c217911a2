import type { Command } from 'commander';
import { agentCommand, withClient, type AgentFlags } from './client.js';
import { renderImageTable, writeJson } from './output.js';
import type { CliIo } from './run.js';

/** `berth images`: the images the agent holds, with their holders. */
export function addImagesCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
agentCommand(program, 'images', 'List the images the agent holds for its tasks, with their holders')
  .action((flags: AgentFlags) =>
    run(() =>
      withClient(io, flags, async (client) => {
        const images = await client.images();
        if (flags.json) writeJson(io.stdout, images);
        else io.stdout.write(renderImageTable(images, Date.now()));
        return 0;
      }),
    ),
  );
}
