import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import type { TaskHandle } from '../../src/tasks/handle.js';
import { requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

/** TaskHandle.resize (the engine's container resize) against the real engine: what the task's TTY reports. */
const engine = testEngine();
const run = testRun(engine);
const driver = new TaskDriver({ engine, ownerId: 'cli' });
const handles: TaskHandle[] = [];

/** Collects a stream's text; `until` resolves once the text matches, and fails naming the pattern and the text after `timeoutMs`. */
function collect(stream: NodeJS.ReadableStream, timeoutMs = 30_000): { text(): string; until(pattern: RegExp): Promise<void> } {
  let text = '';
  const waiters = new Set<() => void>();
  stream.on('data', (chunk: Buffer) => {
    text += String(chunk);
    for (const waiter of [...waiters]) waiter();
  });
  return {
    text: () => text,
    until: (pattern) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`the task's output did not match ${pattern} within ${timeoutMs} ms; it was ${JSON.stringify(text)}`));
        }, timeoutMs);
        const check = (): void => {
          if (!pattern.test(text)) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve();
        };
        waiters.add(check);
        check();
      }),
  };
}

describe('TaskHandle.resize', { skip: await requireEngine(), timeout: 120_000 }, () => {
  after(async () => {
    await Promise.all(handles.map((h) => h.destroy()));
    await run.cleanup();
  });

  test('sets the window size the task\'s TTY reports, and the task gets SIGWINCH', async () => {
    // The task waits for SIGWINCH, then prints the size its TTY has.
    const script = 'trap \'stty size; exit 0\' WINCH; echo waiting; while :; do sleep 0.1; done';
    const handle = await driver.start({ image: TEST_IMAGE, command: ['sh', '-c', script], tty: true, labels: { ...run.labels }, pull: 'never' });
    handles.push(handle);
    const output = collect(handle.stdout);
    // The trap is set once the task says so: a resize before that would go unheard.
    await output.until(/waiting/);
    await handle.resize({ rows: 33, columns: 144 });
    assert.deepEqual(await handle.wait(), { kind: 'success', exitCode: 0 });
    await output.until(/33 144\r\n/);
  });

  test('is refused for a task that has ended', async () => {
    const handle = await driver.start({ image: TEST_IMAGE, command: ['true'], tty: true, labels: { ...run.labels }, pull: 'never' });
    handles.push(handle);
    handle.stdout.resume();
    await handle.wait();
    await assert.rejects(handle.resize({ rows: 10, columns: 10 }), (error: unknown) => isBerthError(error, 'BERTH_TASK_STATE'));
  });
});
