/**
 * Fixtures for tests of task groups against the real engine: output collected per task, and what a
 * run left behind (containers, volumes and networks carrying its label).
 */
import { Writable } from 'node:stream';
import type { Engine } from '../../src/engine/engine.js';
import type { TaskOutputSinks } from '../../src/groups/runner.js';
import type { TestRun } from './engine.js';

/** Every task's stdout and stderr, by task name, as text. */
export class CollectedOutput {
  readonly #text = new Map<string, string>();

  /** The `output` option of GroupRunner.start. */
  readonly sinks = (task: string): TaskOutputSinks => ({ stdout: this.#sink(task), stderr: this.#sink(task) });

  #sink(task: string): Writable {
    return new Writable({
      write: (chunk: Buffer, _encoding, callback) => {
        this.#text.set(task, (this.#text.get(task) ?? '') + chunk.toString('utf8'));
        callback();
      },
    });
  }

  of(task: string): string {
    return this.#text.get(task) ?? '';
  }
}

/** Containers, volumes and networks that carry the run's label: none once everything was removed. */
export async function groupLeftovers(engine: Engine, run: TestRun): Promise<{ containers: string[]; volumes: string[]; networks: string[] }> {
  const labels = [run.labelFilter];
  const [containers, volumes, networks] = await Promise.all([run.leftovers(), engine.listVolumes({ labels }), engine.listNetworks({ labels })]);
  return { containers, volumes: volumes.map((v) => v.name), networks: networks.map((n) => n.name) };
}

/** Removes the run's volumes and networks (after its containers), for a test's `after`. */
export async function removeRunObjects(engine: Engine, run: TestRun): Promise<void> {
  await run.cleanup();
  const labels = [run.labelFilter];
  for (const network of await engine.listNetworks({ labels })) await engine.removeNetwork(network.name).catch(() => undefined);
  for (const volume of await engine.listVolumes({ labels })) await engine.removeVolume(volume.name).catch(() => undefined);
}
