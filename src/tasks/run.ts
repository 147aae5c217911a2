import type { Readable, Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import type { TaskSpec } from '../spec/schema.js';
import type { TaskDriver } from './driver.js';
import type { EndState } from './end-state.js';

export interface RunToEndOptions {
  taskId?: string;
  signal?: AbortSignal;
  /** Where the task's stdout goes; default: discarded (and, with no stderr sink either, never attached). */
  stdout?: Writable;
  stderr?: Writable;
  /** Keep the container after the task ends. Default false: it is removed. */
  keep?: boolean;
}

export interface RunResult {
  taskId: string;
  containerId: string;
  end: EndState;
}

/** Runs a task to its end: start, stream its output, wait, and (unless `keep`) remove its container. */
export async function runToEnd(driver: TaskDriver, spec: TaskSpec, options: RunToEndOptions = {}): Promise<RunResult> {
  // Nobody reads the output and nothing is fed in: attaching would only cost the engine work at start.
  const needsAttach = options.stdout !== undefined || options.stderr !== undefined || spec.stdin !== undefined || spec.tty === true;
  const handle = await driver.start(spec, { taskId: options.taskId, signal: options.signal, output: needsAttach ? 'attach' : 'engine-log' });
  try {
    const drain = (source: Readable, sink: Writable | undefined): Promise<void> =>
      sink ? pipeline(source, sink, { end: false }) : finished(source.resume());
    const output = Promise.all([drain(handle.stdout, options.stdout), drain(handle.stderr, options.stderr)]);
    const end = await handle.wait();
    // Output may still be in flight after the engine reports the exit; it ends with the attach stream.
    if (end.kind !== 'lost') await output.catch(() => undefined);
    return { taskId: handle.taskId, containerId: handle.containerId, end };
  } finally {
    if (!options.keep) await handle.destroy();
  }
}
