import { cleanupBoundFromEnv, installInterrupts } from './interrupts.js';
import { errorLine } from './output.js';

/** The process entry point: the only place the CLI touches process globals. */
let boundMs: number;
try {
  boundMs = cleanupBoundFromEnv(process.env);
} catch (error) {
  process.stderr.write(`${errorLine(error)}\n`);
  process.exit(2);
}
const interrupts = installInterrupts(
  {
    on: (signal, listener) => void process.on(signal, listener),
    exit: (code) => process.exit(code),
    writeError: (text) => void process.stderr.write(text),
  },
  { boundMs },
);
// Loaded after the handlers are in place: a signal while the CLI loads exits with 130/143 too.
const { main } = await import('./main.js');
const exitCode = await main(process.argv.slice(2), {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  interrupts,
});
process.exitCode = exitCode;
// The command is done: what is still open (a call to a wedged engine that was abandoned, a stdin
// nobody reads, the engine's waits of an agent that shut down) must not keep the process alive.
// Exit once what was written has been handed to stdout and stderr.
let pending = 2;
const flushed = (): void => {
  if (--pending === 0) process.exit(exitCode);
};
// A reader that went away (EPIPE) has nothing more to get: that is no reason to stay.
process.stdout.once('error', () => process.exit(exitCode));
process.stderr.once('error', () => process.exit(exitCode));
process.stdout.write('', flushed);
process.stderr.write('', flushed);
