/**
 * `group`: start-to-running latency of a 3-task group through berth's GroupRunner (the built-in
 * infrastructure container, then three tasks joined to its network namespace) against the same
 * containers started by hand with raw dockerode: a pause container, then three `container:<id>`
 * joiners, created and started together. Both use the engine's default bridge. Two variants: no
 * shared directory, and a shared volume mounted in every task (berth's default; the raw side then
 * creates and mounts one too). Interleaved (ABBA) so that engine drift hits both equally; the
 * teardown is not measured.
 */
import type Dockerode from 'dockerode';
import { BUILTIN_INFRA_IMAGE, ensureBuiltinInfraImage } from '../src/groups/infra-image.js';
import { GroupRunner } from '../src/groups/runner.js';
import { BENCH_IMAGE, elapsedMs, median, pairedRatio, quantile, round, scaled, type BenchContext } from './support.js';

/** berth's median start-to-running time may exceed the raw engine's by at most 10 %. */
const TARGET_MAX_RATIO = 1.1;
const TASKS = ['web', 'proxy', 'worker'] as const;

type Mode = 'berth' | 'raw';

function groupSpec(sharedDir: boolean): Record<string, unknown> {
  return {
    name: 'bench',
    sharedDir: sharedDir ? '/alloc' : false,
    tasks: TASKS.map((name) => ({ name, image: BENCH_IMAGE, command: ['sleep', '600'], stopSignal: 'SIGKILL' })),
  };
}

/** One group through berth: the time until start resolves (every task running); then it is stopped and removed. */
async function berthGroup(ctx: BenchContext, runner: GroupRunner, sharedDir: boolean): Promise<number> {
  const started = process.hrtime.bigint();
  const group = await runner.start(groupSpec(sharedDir), { groupId: ctx.nextTaskId('grp') });
  const ms = elapsedMs(started);
  const end = await group.stop();
  if (end.kind !== 'cancelled' || group.state !== 'removed') throw new Error(`a berth bench group ended ${end.kind} in state ${group.state}`);
  if ([...group.tasks.values()].some((t) => t.phase === 'starting')) throw new Error('a berth bench group resolved before its tasks ran');
  return ms;
}

/** The same by hand: pause container, then the three joiners (and a volume for the shared-dir variant). */
async function rawGroup(ctx: BenchContext, sharedDir: boolean): Promise<number> {
  const docker = ctx.docker;
  const made: Dockerode.Container[] = [];
  let volume: string | undefined;
  const started = process.hrtime.bigint();
  try {
    if (sharedDir) volume = ((await docker.createVolume({ Name: ctx.nextTaskId('raw-vol'), Labels: { ...ctx.labels } })) as unknown as { name: string }).name;
    const pause = await docker.createContainer({ Image: BUILTIN_INFRA_IMAGE, Labels: { ...ctx.labels }, HostConfig: { NetworkMode: 'bridge' } });
    made.push(pause);
    await pause.start();
    await Promise.all(
      TASKS.map(async () => {
        const task = await docker.createContainer({
          Image: BENCH_IMAGE,
          Cmd: ['sleep', '600'],
          Labels: { ...ctx.labels },
          HostConfig: { NetworkMode: `container:${pause.id}`, ...(volume === undefined ? {} : { Mounts: [{ Type: 'volume', Source: volume, Target: '/alloc' }] }) },
        });
        made.push(task);
        await task.start();
      }),
    );
    return elapsedMs(started);
  } finally {
    // The joiners first: the pause container owns their namespace.
    await Promise.all(made.slice(1).map((c) => c.remove({ force: true, v: true })));
    await made[0]?.remove({ force: true, v: true });
    if (volume !== undefined) await docker.getVolume(volume).remove();
  }
}

async function variant(ctx: BenchContext, runner: GroupRunner, sharedDir: boolean): Promise<void> {
  const n = scaled(ctx, 20, 2);
  const warmup = 2;
  const name = sharedDir ? 'group.shared-dir' : 'group';
  ctx.progress(`${name}: ${warmup} warm-up and ${n} measured groups of each`);
  const one = (mode: Mode): Promise<number> => {
    ctx.signal.throwIfAborted();
    return mode === 'berth' ? berthGroup(ctx, runner, sharedDir) : rawGroup(ctx, sharedDir);
  };
  const order = (i: number): readonly Mode[] => (i % 2 === 0 ? ['berth', 'raw'] : ['raw', 'berth']);
  for (let i = 0; i < warmup; i++) for (const mode of order(i)) await one(mode);
  const times: Record<Mode, number[]> = { berth: [], raw: [] };
  for (let i = 0; i < n; i++) {
    for (const mode of order(i)) times[mode].push(await one(mode));
    if ((i + 1) % 5 === 0) ctx.progress(`${name}: ${i + 1}/${n}`);
  }
  const summary = (ms: readonly number[]) => ({ medianMs: round(median(ms)), p90Ms: round(quantile(ms, 0.9)) });
  const berth = summary(times.berth);
  const raw = summary(times.raw);
  const ratio = round(berth.medianMs / raw.medianMs, 3);
  ctx.emit({
    case: name,
    groups: n,
    tasksPerGroup: TASKS.length,
    berth,
    raw,
    ratio,
    pairedRatio: round(pairedRatio(times.berth, times.raw), 3),
    target: { field: 'ratio', max: TARGET_MAX_RATIO },
    pass: ratio <= TARGET_MAX_RATIO,
  });
}

export async function benchGroup(ctx: BenchContext): Promise<void> {
  await ensureBuiltinInfraImage(ctx.engine);
  const runner = new GroupRunner({ driver: ctx.driver, engine: ctx.engine, labels: ctx.labels });
  await variant(ctx, runner, false);
  await variant(ctx, runner, true);
}
