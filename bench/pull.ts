/**
 * `pull`: 50 concurrent acquires of an image that is not present, through the image coordinator,
 * against one plain pull of the same image with raw dockerode, from a real local registry (Debian's
 * docker-registry behind a counting proxy). Targets: the registry resolves the tag once for all 50
 * (one pull), and the wall time is at most 1.3 times the plain pull's, in the same run.
 *
 * Runnable alone (`node --import tsx bench/pull.ts`) or from bench/run.ts, which passes its context.
 */
import { fileURLToPath } from 'node:url';
import Dockerode from 'dockerode';
import { Engine } from '../src/engine/engine.js';
import { ImageCoordinator } from '../src/images/index.js';
import { buildUniqueImage, pushImage, removeRunImages, requireRegistryTools, startTestRegistries } from '../test/support/registry.js';
import { elapsedMs, median, MIB, pairedRatio, round, standaloneContext } from './support.js';
import { stackOf } from '../src/common/errors.js';

const CONCURRENT_ACQUIRES = 50;
const TARGET_MANIFEST_REQUESTS = 1;
const TARGET_MAX_RATIO = 1.3;
/** Fresh random bytes in the image: the pull is dominated by a real download and extraction. */
const IMAGE_PAYLOAD_BYTES = 16 * MIB;

/** What this case needs of bench/run.ts's context; without one it prints on its own. */
interface PullBenchContext {
  runId: string;
  scale: number;
  emit(result: Record<string, unknown>): void;
  progress(message: string): void;
}


/** Runs the case and prints one JSON line. */
export async function benchPull(context?: PullBenchContext): Promise<void> {
  const ctx = context ?? standaloneContext();
  const missingTools = requireRegistryTools();
  if (missingTools) throw new Error(`bench pull: ${missingTools}`);
  const rounds = Math.max(1, Math.round(5 * ctx.scale));
  const engine = new Engine();
  const docker = new Dockerode({ socketPath: '/var/run/docker.sock' });
  const registries = await startTestRegistries();
  const registry = registries.plain;
  const repository = `berth-bench/${ctx.runId}/pull`;
  const ref = `${registry.host}/${repository}:1`;
  try {
    ctx.progress(`pull: building and pushing a ${IMAGE_PAYLOAD_BYTES / MIB} MiB test image`);
    const source = `berth-bench-src/${ctx.runId}:1`;
    await buildUniqueImage(source, ctx.runId, IMAGE_PAYLOAD_BYTES);
    await pushImage(source, [ref]);
    await removeRunImages(engine, ctx.runId);

    const berthMs: number[] = [];
    const rawMs: number[] = [];
    const manifestRequests: number[] = [];
    const enginePulls: number[] = [];
    for (let round_ = 1; round_ <= rounds; round_++) {
      // Alternate which goes first, so that drift (caches, the engine warming up) hits both alike.
      const order = round_ % 2 === 1 ? (['berth', 'raw'] as const) : (['raw', 'berth'] as const);
      for (const mode of order) {
        if (mode === 'berth') {
          const before = registry.manifestRequests(repository, '1');
          let pulls = 0;
          const coordinator = new ImageCoordinator({ engine, options: { cleanup: false } });
          coordinator.on('pull-started', () => pulls++);
          const started = process.hrtime.bigint();
          const results = await Promise.all(Array.from({ length: CONCURRENT_ACQUIRES }, (_, i) => coordinator.acquire(ref, `bench-${i}`)));
          berthMs.push(elapsedMs(started));
          await coordinator.close();
          if (new Set(results.map((r) => r.imageId)).size !== 1) throw new Error('bench pull: the acquires got different image ids');
          manifestRequests.push(registry.manifestRequests(repository, '1') - before);
          enginePulls.push(pulls);
        } else {
          const started = process.hrtime.bigint();
          const stream = await docker.pull(ref);
          await new Promise<void>((resolve, reject) => docker.modem.followProgress(stream, (error: Error | null) => (error ? reject(error) : resolve())));
          rawMs.push(elapsedMs(started));
        }
        await removeRunImages(engine, ctx.runId);
      }
      ctx.progress(`pull: round ${round_}/${rounds}: berth ${round(berthMs.at(-1)!)} ms, raw ${round(rawMs.at(-1)!)} ms`);
    }

    const ratio = round(median(berthMs) / median(rawMs), 3);
    const worstManifestRequests = Math.max(...manifestRequests);
    ctx.emit({
      case: 'pull.shared',
      concurrentAcquires: CONCURRENT_ACQUIRES,
      rounds,
      imagePayloadMiB: IMAGE_PAYLOAD_BYTES / MIB,
      manifestRequests: worstManifestRequests,
      enginePulls: Math.max(...enginePulls),
      berth: { medianMs: round(median(berthMs)), runsMs: berthMs.map((ms) => round(ms)) },
      raw: { medianMs: round(median(rawMs)), runsMs: rawMs.map((ms) => round(ms)) },
      ratio,
      pairedRatio: round(pairedRatio(berthMs, rawMs), 3),
      target: [
        { field: 'manifestRequests', max: TARGET_MANIFEST_REQUESTS },
        { field: 'ratio', max: TARGET_MAX_RATIO },
      ],
      pass: worstManifestRequests <= TARGET_MANIFEST_REQUESTS && ratio <= TARGET_MAX_RATIO,
    });
  } finally {
    await removeRunImages(engine, ctx.runId).catch((error: unknown) => ctx.progress(`pull: could not remove the bench images: ${String(error)}`));
    await registries.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  benchPull().catch((error: unknown) => {
    process.stderr.write(`bench pull: ${stackOf(error)}\n`);
    process.exitCode = 1;
  });
}
