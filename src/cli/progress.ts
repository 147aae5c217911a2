import cliProgress from 'cli-progress';
import type { Writable } from 'node:stream';
import type { Engine } from '../engine/engine.js';
import type { PullFinishedEvent, PullProgressNotice, PullStartedEvent } from '../images/events.js';
import { dockerConfigDirFromEnv, ImageCoordinator } from '../images/index.js';

/** Shows an image pull: a bar per layer on a terminal, a plain line per layer phase otherwise. */
export interface PullProgressView {
  started(event: PullStartedEvent): void;
  progress(event: PullProgressNotice): void;
  finished(event: PullFinishedEvent): void;
}

const short = (layerId: string): string => layerId.slice(0, 12);

/** Progress bars (cli-progress) on a terminal. */
export function terminalPullView(out: Writable): PullProgressView {
  let bars: cliProgress.MultiBar | undefined;
  const layers = new Map<string, cliProgress.SingleBar>();
  return {
    started(event) {
      bars = new cliProgress.MultiBar(
        { stream: out as NodeJS.WritableStream, format: ' {layer} {phase} [{bar}] {percentage}%', hideCursor: true, clearOnComplete: false, autopadding: true },
        cliProgress.Presets.shades_classic,
      );
      out.write(`Pulling ${event.ref}\n`);
    },
    progress(event) {
      if (!bars || !event.layerId) return;
      let bar = layers.get(event.layerId);
      if (!bar) {
        bar = bars.create(event.totalBytes ?? 1, 0, { layer: short(event.layerId), phase: event.phase });
        layers.set(event.layerId, bar);
      }
      if (event.totalBytes) bar.setTotal(event.totalBytes);
      const done = event.phase === 'complete' || event.phase === 'exists';
      bar.update(done ? bar.getTotal() : (event.currentBytes ?? 0), { phase: event.phase });
    },
    finished(event) {
      bars?.stop();
      bars = undefined;
      layers.clear();
      out.write(event.outcome === 'pulled' ? `Pulled ${event.ref}\n` : `Pull of ${event.ref} ${event.outcome}\n`);
    },
  };
}

/** One line per layer phase change, for logs and pipes. */
export function plainPullView(out: Writable): PullProgressView {
  const phases = new Map<string, string>();
  return {
    started(event) {
      out.write(`Pulling ${event.ref}\n`);
    },
    progress(event) {
      if (!event.layerId || phases.get(event.layerId) === event.phase) return;
      phases.set(event.layerId, event.phase);
      out.write(`${short(event.layerId)}: ${event.phase}\n`);
    },
    finished(event) {
      phases.clear();
      out.write(event.outcome === 'pulled' ? `Pulled ${event.ref} in ${event.durationMs} ms\n` : `Pull of ${event.ref} ${event.outcome}\n`);
    },
  };
}

/**
 * The image coordinator of a one-shot command (`berth run`, `berth group run`): it neither counts
 * references nor removes images (the next run may want the same one), and it shows pulls on
 * stderr, as bars on a terminal and as lines elsewhere.
 */
export function oneShotImages(engine: Engine, io: { env: NodeJS.ProcessEnv; stderr: Writable }): ImageCoordinator {
  const images = new ImageCoordinator({ engine, options: { cleanup: false, dockerConfigDir: dockerConfigDirFromEnv(io.env) } });
  const view = (io.stderr as Partial<NodeJS.WriteStream>).isTTY ? terminalPullView(io.stderr) : plainPullView(io.stderr);
  images.on('pull-started', (e) => view.started(e));
  images.on('pull-progress', (e) => view.progress(e));
  images.on('pull-finished', (e) => view.finished(e));
  return images;
}
