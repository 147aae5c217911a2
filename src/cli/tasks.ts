import type { Command } from 'commander';
import { addAttachCommand } from './attach.js';
import { addControlCommands } from './control.js';
import { addEventsCommand } from './events.js';
import { addImagesCommand } from './images.js';
import { addNodesCommand } from './nodes.js';
import { addInspectCommand } from './inspect.js';
import { addLogsCommand } from './logs.js';
import { addPsCommand } from './ps.js';
import type { CliIo } from './run.js';
import { addStopAndRemoveCommands } from './stop-remove.js';
import { addCpCommand } from './cp.js';
import { addSubmitCommand } from './submit.js';

/** Registers the commands that talk to a running agent (see client.ts), one module each. */
export function addTaskCommands(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  addSubmitCommand(program, io, setExitCode);
  addPsCommand(program, io, setExitCode);
  addInspectCommand(program, io, setExitCode);
  addLogsCommand(program, io, setExitCode);
  addStopAndRemoveCommands(program, io, setExitCode);
  addControlCommands(program, io, setExitCode);
  addAttachCommand(program, io, setExitCode);
  addImagesCommand(program, io, setExitCode);
  addNodesCommand(program, io, setExitCode);
  addEventsCommand(program, io, setExitCode);
  addCpCommand(program, io, setExitCode);
}
