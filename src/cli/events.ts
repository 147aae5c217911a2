import { Option, type Command } from 'commander';
import type { AgentEvent } from '../agent/client.js';
import { ValidationError } from '../common/errors.js';
import { parseDurationMs } from '../common/units.js';
import { agentCommand, withClient, write, type AgentFlags } from './client.js';
import { collect } from './flags.js';
import { endedByUser } from './interrupts.js';
import { formatEventLine } from './output.js';
import type { CliIo } from './run.js';

/**
 * `--since` as the API takes it: an event id as it is; a time (RFC 3339, Unix seconds, or a
 * duration ago, as docker's --since) as RFC 3339.
 */
export function eventsSince(value: string, nowMs: number): string {
  const text = value.trim();
  if (/^(0|[1-9][0-9]{0,15})$/.test(text) && text.length < 10) return text;
  if (/^[0-9]{10}(\.[0-9]{1,9})?$/.test(text)) return new Date(Number(text) * 1000).toISOString();
  const ago = parseDurationMs(text);
  if (ago !== undefined && !/^\d+$/.test(text)) return new Date(nowMs - ago).toISOString();
  const at = Date.parse(text);
  if (/^\d{4}-\d{2}-\d{2}T/.test(text) && Number.isFinite(at)) return new Date(at).toISOString();
  throw new ValidationError([{ field: '--since', rule: `"${value}" is not an event id, an RFC 3339 time, Unix seconds or a duration such as 10m` }]);
}

/** `berth events`: the agent's events as they happen, until Ctrl-C. */
export function addEventsCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const run = (work: () => Promise<number>): Promise<void> => work().then(setExitCode);
agentCommand(program, 'events', 'Print the agent\'s events as they happen (task states, pulls, removals) until Ctrl-C')
  .addOption(new Option('--filter <type>', 'only events of this type (repeatable)').argParser(collect).default([]))
  .option('--since <id|time>', 'first the events after this one: an event id (as --json prints), an RFC 3339 time, Unix seconds, or a duration ago such as 10m')
  .action((flags: AgentFlags & { filter: string[]; since?: string }) =>
    run(() =>
      withClient(io, flags, async (client) => {
        const abort = new AbortController();
        const removeInterrupt = io.interrupts.onInterrupt(() => abort.abort());
        try {
          const since = flags.since === undefined ? undefined : eventsSince(flags.since, Date.now());
          const subscription = await client.events({ signal: abort.signal, ...(since !== undefined ? { since } : {}) });
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
