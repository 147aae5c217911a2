/**
 * A narrow scripted fake of the engine port the image coordinator takes. The coordination logic
 * (sharing, cancellation, reference counts, delayed removal) is tested against it and the manual
 * clock of test/support/time.ts, where the real engine could not make the interleavings deterministic.
 */
import { PassThrough } from 'node:stream';
import { BerthError } from '../../../src/common/errors.js';
import type { CallOptions } from '../../../src/engine/engine.js';
import type { ImageDeleteOutcome, ImageInspect, RegistryAuth } from '../../../src/engine/types.js';
import type { ImageEngine } from '../../../src/images/coordinator.js';

export interface ScriptedPull {
  readonly fromImage: string;
  readonly tag: string;
  readonly auth: RegistryAuth | undefined;
  readonly signal: AbortSignal | undefined;
  readonly stream: PassThrough;
  /** Writes a line of progress. */
  progress(line: Record<string, unknown>): void;
  /** Makes the image present under `name` as `imageId` and ends the stream as the engine does. */
  complete(name: string, imageId: string): void;
  /** Reports an in-stream error and ends the stream. */
  failInStream(message: string): void;
}

type RemoveAnswer = 'absent' | 'in-use' | Error;

export class FakeImageEngine implements ImageEngine {
  /** Local name → image id. */
  readonly names = new Map<string, string>();
  readonly pulls: ScriptedPull[] = [];
  readonly removals: string[] = [];
  inspections = 0;
  /** Answers for removeImage calls in order ('absent' drops the name too); when empty, the name (or an id's every name) is untagged, and the image deleted with its last name. */
  readonly removeAnswers: RemoveAnswer[] = [];
  /** When set, openPull rejects with this error instead of opening a stream. */
  openError: ((attempt: number) => Error | undefined) | undefined;
  readonly #pullWaiters: Array<() => void> = [];

  openPull = async (fromImage: string, tag: string, auth: RegistryAuth | undefined, options: CallOptions = {}) => {
    const error = this.openError?.(this.pulls.length + 1);
    const stream = new PassThrough();
    const pull: ScriptedPull = {
      fromImage,
      tag,
      auth,
      signal: options.signal,
      stream,
      progress: (line) => void stream.write(`${JSON.stringify(line)}\n`),
      complete: (name, imageId) => {
        this.names.set(name, imageId);
        stream.end(`${JSON.stringify({ status: `Status: Downloaded newer image for ${name}` })}\n`);
      },
      failInStream: (message) => void stream.end(`${JSON.stringify({ error: message, errorDetail: { message } })}\n`),
    };
    this.pulls.push(pull);
    for (const notify of this.#pullWaiters.splice(0)) notify();
    if (error) throw error;
    options.signal?.addEventListener('abort', () => stream.destroy(), { once: true });
    return stream;
  };

  inspectImage = async (ref: string, _options: CallOptions = {}): Promise<ImageInspect> => {
    this.inspections++;
    await Promise.resolve();
    const id = this.names.get(ref) ?? ([...this.names.values()].includes(ref) ? ref : undefined);
    if (id === undefined) throw new BerthError('BERTH_ENGINE_NOT_FOUND', `inspect image: No such image: ${ref}`);
    return { id, repoTags: [], repoDigests: [], sizeBytes: 1, createdAt: new Date(0), labels: {} };
  };

  removeImage = async (ref: string, _options: CallOptions & { force?: boolean } = {}): Promise<ImageDeleteOutcome> => {
    this.removals.push(ref);
    await Promise.resolve();
    const answer = this.removeAnswers.shift();
    if (answer instanceof Error) throw answer;
    if (answer === 'in-use') return { kind: 'in-use' };
    const imageId = this.names.get(ref) ?? ref;
    const untagged = [...this.names].filter(([name, id]) => name === ref || id === ref).map(([name]) => name);
    for (const name of untagged) this.names.delete(name);
    if (answer === 'absent' || untagged.length === 0) return { kind: 'absent' };
    const deleted = [...this.names.values()].includes(imageId) ? [] : [imageId];
    return { kind: 'removed', untagged, deleted };
  };

  /** Resolves once `count` pulls have been opened in all. */
  async pullsOpened(count: number): Promise<void> {
    while (this.pulls.length < count) await new Promise<void>((resolve) => this.#pullWaiters.push(resolve));
  }
}
