import { Option, type Command } from 'commander';
import type { AgentEvent } from '../agent/client.js';
import { agentCommand, withClient, write, type AgentFlags } from './client.js';
import { collect } from './flags.js';
import { endedByUser } from './interrupts.js';
import { formatEventLine } from './output.js';
import type { CliIo } from './run.js';

/** `berth events`: the agent's events as they happen, until Ctrl-C. */
export function addEventsCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
agentCommand(program, 'events', 'Print the agent\'s events as they happen (task states, pulls, removals) until Ctrl-C')
  .addOption(new Option('--filter <type>', 'only events of this type (repeatable)').argParser(collect).default([]))
  .action((flags: AgentFlags & { filter: string[] }) =>
    run(() =>
      withClient(io, flags, async (client) => {
        const abort = new AbortController();
        const removeInterrupt = io.interrupts.onInterrupt(() => abort.abort());
        try {
          const subscription = await client.events({ signal: abort.signal });
          // Says when the subscription is in place: every event after this line is printed.
          io.stderr.write('berth: listening for events (Ctrl-C to stop)\n');
          for await (const event of subscription) {
            if (flags.filter.length > 0 && !flags.filter.includes(event.type)) continue;
            await write(io.stdout, flags.json ? `${JSON.stringify(event)}\n` : `${formatEventLine(event as AgentEvent & Record<string, unknown>)}\n`);
          }
        } catch (error) {
          if (!abort.signal.aborted) throw error;
        } finally {
          removeInterrupt();
        }
        return endedByUser(io);
      }),
    ),
  );
}
