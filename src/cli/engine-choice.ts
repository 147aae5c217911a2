import type { Command } from 'commander';
import { engineOptionsOf, formatEndpoint } from '../engine/connect.js';
import { listContexts, resolveEngine, type EngineSelection } from '../engine/contexts.js';
import { Engine } from '../engine/engine.js';
import { renderTable, writeJson } from './output.js';
import type { CliIo } from './run.js';

/** How long the default socket (and each rootless one) may take to answer a ping while berth looks for an engine. */
const PROBE_DEADLINE_MS = 2000;

/** Whether an engine answers a ping at a unix socket within PROBE_DEADLINE_MS. */
async function socketAnswers(socketPath: string): Promise<boolean> {
  try {
    await new Engine({ socketPath, readAttempts: 1 }).ping({ deadlineMs: PROBE_DEADLINE_MS, attempts: 1 });
    return true;
  } catch {
    return false;
  }
}

/** The engine this invocation uses, and why: `--context`, DOCKER_HOST, DOCKER_CONTEXT, the docker CLI's current context, the default or a rootless socket (engine/contexts.ts). */
export function chooseEngine(io: CliIo): Promise<EngineSelection> {
  return resolveEngine({ env: io.env, context: io.context, probe: socketAnswers });
}

/** An Engine on the chosen engine (see `chooseEngine`). */
export async function cliEngine(io: CliIo): Promise<Engine> {
  const selection = await chooseEngine(io);
  return new Engine(engineOptionsOf(selection.endpoint, io.env));
}

/** `berth context ls`: the docker CLI's contexts, the one berth uses marked, and why it uses it. */
export function addContextCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  const context = program.command('context').description('The Docker contexts berth can use (the docker CLI\'s), and the one it uses');
  context
    .command('ls')
    .description('List the Docker contexts; * marks the one berth uses, and the last line says why')
    .option('--json', 'print JSON: the contexts and the one in use with its reason')
    .action(async (flags: { json?: boolean }) => {
      const contexts = listContexts(io.env);
      const selection = await chooseEngine(io);
      const endpoint = formatEndpoint(selection.endpoint);
      if (flags.json) {
        writeJson(io.stdout, { contexts, current: { context: selection.context, endpoint, source: selection.source, reason: selection.reason } });
      } else {
        const rows = contexts.map((entry) => [entry.name === selection.context ? `${entry.name} *` : entry.name, entry.name === selection.context ? endpoint : entry.endpoint, entry.description]);
        io.stdout.write(renderTable(['NAME', 'DOCKER ENDPOINT', 'DESCRIPTION'], rows));
        io.stdout.write(`berth uses ${selection.context} (${endpoint}): ${selection.reason}\n`);
      }
      setExitCode(0);
    });
}
