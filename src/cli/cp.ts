import type { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { ValidationError } from '../common/errors.js';
import type { AgentClient } from '../agent/client.js';
import type { TaskHandle } from '../tasks/handle.js';
import { agentCommand, withClient, type AgentFlags } from './client.js';
import { copyIntoTask } from './cp-in.js';
import { errorLine } from './output.js';
import { extractArchive } from './extract.js';
import type { CliIo } from './run.js';

/** One side of `berth cp`: `TASK:PATH` (a task's absolute path), or a local path (`-` for stdin/stdout). */
export type CpOperand = { kind: 'task'; taskId: string; path: string } | { kind: 'local'; path: string };

/**
 * Reads an operand as docker cp does: `NAME:PATH` is the task's side when a colon comes before any
 * slash (so `./a:b` and `/x:y` are local paths); the task's path must be absolute.
 */
export function parseCpOperand(text: string, field: string): CpOperand {
  const match = /^([^/:]+):(.*)$/.exec(text);
  if (!match || text.startsWith('.')) return { kind: 'local', path: text };
  const [, taskId, taskPath] = match as unknown as [string, string, string];
  if (!taskPath.startsWith('/')) throw new ValidationError([{ field, rule: `the task's path must be absolute (TASK:/path), not ${JSON.stringify(taskPath)}` }]);
  return { kind: 'task', taskId, path: taskPath };
}

/**
 * TASK:PATH -> LOCAL: from the running container through the agent (GET /v1/tasks/:id/archive),
 * or, once the task ended, from its kept artifacts (the path must be one of its spec's `collect`).
 * LOCAL `-` writes the tar to stdout.
 */
export async function copyFromTask(io: CliIo, client: AgentClient, from: { taskId: string; path: string }, local: string): Promise<void> {
  const task = await client.get(from.taskId);
  const archive = task.state === 'running' ? await client.archive(task.id, from.path) : await client.artifacts(task.id, { path: from.path });
  if (local === '-') {
    await pipeline(archive, io.stdout, { end: false });
    return;
  }
  await extractArchive(archive, from.path, local);
}

/**
 * `berth run --collect PATH[:LOCAL]`: after the task's end, before its container is removed, each
 * PATH is extracted to LOCAL (default `./<basename>`). A path that cannot be collected is reported
 * on stderr and the others are still collected.
 */
export async function collectFromHandle(io: CliIo, handle: TaskHandle, specs: readonly string[]): Promise<void> {
  for (const spec of specs) {
    const { path: source, local } = parseCollectFlag(spec);
    try {
      await extractArchive(await handle.copyOut(source), source, local);
    } catch (error) {
      io.stderr.write(`${errorLine(error)} (collecting ${source})\n`);
    }
  }
}

/** `PATH[:LOCAL]` of `--collect`: PATH absolute; LOCAL defaults to `./<basename of PATH>`. */
export function parseCollectFlag(text: string): { path: string; local: string } {
  const colon = text.indexOf(':');
  const source = colon === -1 ? text : text.slice(0, colon);
  const local = colon === -1 ? '' : text.slice(colon + 1);
  if (!source.startsWith('/')) throw new ValidationError([{ field: '--collect', rule: `must be PATH[:LOCAL] with an absolute PATH, not ${JSON.stringify(text)}` }]);
  const base = source.replace(/\/+$/, '').split('/').pop() ?? '';
  return { path: source, local: local !== '' ? local : `./${base === '' ? 'root' : base}` };
}

/** `--collect PATH` of a task for the agent (submit, run -d): kept with the task, so a LOCAL has no place there. */
export function collectPathForAgent(text: string): string {
  if (text.includes(':')) throw new ValidationError([{ field: '--collect', rule: `takes PATH alone for a task of the agent's (it keeps the files; copy them with berth cp TASK:PATH LOCAL), not ${JSON.stringify(text)}` }]);
  return parseCollectFlag(text).path;
}

/** `berth cp`: copies files out of a task of the agent's (TASK:PATH LOCAL) or into one (LOCAL TASK:PATH). */
export function addCpCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  agentCommand(program, 'cp', 'Copy files out of a task (TASK:PATH LOCAL, from a running task, or an ended one\'s artifacts) or into one (LOCAL TASK:PATH), as docker cp does; LOCAL - is a tar on stdout')
    .argument('<source>', 'TASK:PATH or LOCAL')
    .argument('<destination>', 'LOCAL (- for a tar on stdout) or TASK:PATH')
    .action((source: string, destination: string, flags: AgentFlags) =>
      withClient(io, flags, async (client) => {
        const from = parseCpOperand(source, 'source');
        const to = parseCpOperand(destination, 'destination');
        if (from.kind === 'task' && to.kind === 'local') {
          await copyFromTask(io, client, from, to.path);
          return 0;
        }
        if (from.kind === 'local' && to.kind === 'task') {
          await copyIntoTask(client, from.path, to.taskId, to.path);
          return 0;
        }
        throw new ValidationError([{ field: 'source', rule: 'one side must be TASK:PATH and the other a local path' }]);
      }).then(setExitCode),
    );
}
