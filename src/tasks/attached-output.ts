import { PassThrough, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../common/logger.js';
import type { DemuxedStreams } from '../engine/demux.js';
import type { Engine } from '../engine/engine.js';
import { codeOf } from './container-ops.js';

type StreamName = 'stdout' | 'stderr';

export interface AttachedOutputSource {
  taskId: string;
  containerId: string;
  engine: Pick<Engine, 'containerLogs'>;
  /** Whether the engine keeps a log that can be read back (log driver local or json-file). */
  logReadable: boolean;
  tty: boolean;
  logger: Logger;
  /**
   * How long, once the end is known, a followed log read may take to reach the log's end before it
   * is given up for reads of the whole log: a followed read the engine stalls would otherwise hold
   * the output open for ever. Default 5 s.
   */
  followDrainMs?: number;
  /**
   * How long one read of the whole log (after the end) may take: the engine can stall it after its
   * head as it can a followed one, and then it is hung up and tried again. Default 30 s.
   */
  wholeReadMs?: number;
}

const FOLLOW_DRAIN_MS = 5_000;
const WHOLE_READ_MS = 30_000;

/**
 * A task's attached output, made whole. Bytes come from the attach connection as they are written;
 * when that connection was cut before the task's output ended (the engine restarted, the connection
 * dropped), the rest comes from the engine's own log, which holds the task's output from its first
 * byte: every stream skips the bytes the attach already delivered, so nothing is repeated or lost.
 * Exact while the engine's log still holds all of the task's output (its size cap, `log.maxSize`).
 */
export class AttachedOutput {
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  readonly #source: AttachedOutputSource;
  readonly #delivered: Record<StreamName, number> = { stdout: 0, stderr: 0 };
  /** Resolves once both attached streams finished, with whether either failed. */
  readonly #attachDone: Promise<boolean>;
  #cut = false;
  #filling: Promise<boolean> | undefined;
  /** Ends the followed log read; a read that was ended delivers nothing more. */
  readonly #stopFollow = new AbortController();
  #settled = false;

  constructor(attached: DemuxedStreams, source: AttachedOutputSource) {
    this.#source = source;
    this.#attachDone = Promise.all([this.#copy('stdout', attached.stdout), this.#copy('stderr', attached.stderr)]).then(([out, err]) => out || err);
  }

  /**
   * The attach connection closed while the container still runs: follow the engine's log from
   * where the attach stopped, so the output stays live.
   */
  attachCut(): void {
    this.#cut = true;
    if (!this.#source.logReadable || this.#filling || this.#settled) return;
    this.#filling = this.#attachDone.then(() => this.#readLog(true));
  }

  /**
   * The task's end is known. `mayHaveCut` says the end was learned without the wait answering (the
   * engine was away, so the attach may have been cut too): the engine's log then decides whether
   * bytes are missing. The output streams end once nothing more can come.
   */
  async settle(mayHaveCut: boolean): Promise<void> {
    if (this.#settled) return;
    this.#settled = true;
    const attachFailed = await this.#attachDone;
    const followedToTheEnd = this.#filling ? await this.#followDrained(this.#filling) : false;
    if (this.#source.logReadable && !followedToTheEnd && (mayHaveCut || attachFailed || this.#cut)) await this.#fillAfterEnd();
    this.stdout.end();
    this.stderr.end();
  }

  /**
   * Whether the followed read reached the log's end within the drain time after the end; when it
   * did not (the engine stalls it), it is stopped, so that it delivers nothing more.
   */
  async #followDrained(filling: Promise<boolean>): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), this.#source.followDrainMs ?? FOLLOW_DRAIN_MS)));
    const outcome = await Promise.race([filling, late]);
    clearTimeout(timer);
    if (outcome !== 'late') return outcome;
    this.#source.logger.warn({ taskId: this.#source.taskId }, 'the followed engine log did not reach its end after the task ended; reading the log whole instead');
    this.#stopFollow.abort();
    return false;
  }

  /** Copies one attached stream into its output, counting bytes; resolves with whether it failed. */
  async #copy(name: StreamName, from: Readable): Promise<boolean> {
    try {
      for await (const chunk of from) await this.#deliver(name, chunk as Buffer, 0);
      return false;
    } catch {
      // A cut connection: what it did not deliver comes from the engine's log.
      return true;
    }
  }

  /** Writes `chunk` less its first `skip` bytes; resolves when the reader has room again (backpressure). */
  async #deliver(name: StreamName, chunk: Buffer, skip: number): Promise<void> {
    const rest = skip > 0 ? chunk.subarray(skip) : chunk;
    if (rest.length === 0) return;
    this.#delivered[name] += rest.length;
    const sink = this[name];
    if (!sink.write(rest)) await new Promise<void>((resolve) => sink.once('drain', resolve));
  }

  /**
   * Reads the engine's log from its start and delivers what the attach did not. Resolves true when
   * the read reached the end of the log (a followed read ends when the container stops).
   */
  async #readLog(follow: boolean): Promise<boolean> {
    const { engine, containerId, tty, logger, taskId } = this.#source;
    // A followed read is ended by settle(); a read of the whole log by its own deadline.
    const deadline = follow ? undefined : new AbortController();
    const timer = deadline && setTimeout(() => deadline.abort(), this.#source.wholeReadMs ?? WHOLE_READ_MS);
    const stop = deadline?.signal ?? this.#stopFollow.signal;
    try {
      const streams = await engine.containerLogs(containerId, { follow, tty, signal: stop });
      const skip: Record<StreamName, number> = { ...this.#delivered };
      const read = async (name: StreamName, from: Readable): Promise<void> => {
        for await (const chunk of from) {
          if (stop.aborted) break;
          const buffer = chunk as Buffer;
          const skipped = Math.min(skip[name], buffer.length);
          skip[name] -= skipped;
          await this.#deliver(name, buffer, skipped);
        }
      };
      const hangUp = (): void => {
        streams.stdout.destroy();
        streams.stderr.destroy();
      };
      stop.addEventListener('abort', hangUp, { once: true });
      try {
        await Promise.all([read('stdout', streams.stdout), read('stderr', streams.stderr)]);
      } finally {
        stop.removeEventListener('abort', hangUp);
      }
      if (stop.aborted && !follow) logger.warn({ taskId }, 'a read of the whole engine log stalled past its deadline; it is tried again');
      return !stop.aborted;
    } catch (error) {
      if (stop.aborted && follow) return false;
      logger.warn({ taskId, code: codeOf(error) }, 'reading the rest of the output from the engine log failed');
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /** After the end: a few tries, for the engine may be coming back from the outage that cut the attach. */
  async #fillAfterEnd(): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      if (await this.#readLog(false)) return;
      await sleep(200 * 2 ** attempt);
    }
    this.#source.logger.error({ taskId: this.#source.taskId }, 'output the attach connection did not deliver could not be read from the engine log');
  }
}
