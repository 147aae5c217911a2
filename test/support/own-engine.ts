/**
 * A Docker engine of a test's own (a second dockerd on its own socket, data root, exec root and
 * bridge), for tests that kill, pause or restart the engine: the shared engine keeps serving the rest
 * of the suite. See ../shared/ENGINE.md, "A second engine for destructive tests".
 *
 * Each engine is named by a short slot (`a`..`z`, digits), so tests running in parallel use
 * different slots. It needs root and dockerd on the PATH (scripts/test-engine.sh installs docker.io).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { Engine } from '../../src/engine/engine.js';
import { pollUntil, TEST_IMAGE } from './engine.js';
import { DOCKER_CLI } from './registry.js';

export interface OwnEngine {
  readonly slot: string;
  readonly socketPath: string;
  /** An engine client for this engine. */
  readonly engine: Engine;
  /** The dockerd process id (changes on restart). */
  readonly pid: number;
  /** SIGKILL: containers' shims live on; waits until the process is gone. */
  kill(): Promise<void>;
  /** SIGSTOP: the engine holds every connection and answers nothing. */
  pause(): void;
  /** SIGCONT after pause. */
  resume(): void;
  /** Starts dockerd again after kill (or stop) and waits until it answers. */
  restart(): Promise<void>;
  /** Ends the engine for good: removes its containers, stops dockerd and its containerd, deletes its state. */
  destroy(): Promise<void>;
}

/** Whether this process may start an engine of its own (root, dockerd and ip installed); otherwise the reason not. */
export function ownEngineUnavailable(): false | string {
  if (process.getuid?.() !== 0) return 'an engine of the test\'s own needs root';
  if (spawnSync('sh', ['-c', 'command -v dockerd']).status !== 0) return 'an engine of the test\'s own needs dockerd (docker.io)';
  if (spawnSync('sh', ['-c', 'command -v ip']).status !== 0) return 'an engine of the test\'s own needs ip (iproute2)';
  return false;
}

/** A suite's skip reason: false when an engine of its own can be started; under CI=true a reason is an error, never a skip. */
export function requireOwnEngine(): false | string {
  const why = ownEngineUnavailable();
  if (why && process.env.CI === 'true') throw new Error(`CI=true and ${why}`);
  return why;
}

function paths(slot: string) {
  if (!/^[a-z0-9]{1,6}$/.test(slot)) throw new Error(`engine slot ${slot}: 1 to 6 lowercase letters or digits`);
  const octet = (parseInt(Buffer.from(slot).toString('hex').slice(-4), 16) % 200) + 20;
  return {
    dataRoot: `/var/lib/berth-engine-${slot}`,
    execRoot: `/var/run/berth-engine-${slot}`,
    pidFile: `/var/run/berth-engine-${slot}.pid`,
    socketPath: `/var/run/berth-engine-${slot}.sock`,
    bridge: `berth-${slot}`,
    cidr: `10.213.${octet}.1/24`,
    logFile: `/tmp/berth-engine-${slot}.log`,
  };
}

/** Alive and not a zombie (an exited child nobody reaped still answers kill 0). */
function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The containerd dockerd started; it dies with dockerd, and a restart must not find it still going. */
function containerdPid(execRoot: string): number | undefined {
  try {
    const pid = Number(readFileSync(`${execRoot}/containerd/containerd.pid`, 'utf8').trim());
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function waitGone(pid: number, what = 'dockerd'): Promise<void> {
  await pollUntil(`${what} ${pid} to exit`, async () => (processAlive(pid) ? undefined : true), { timeoutMs: 60_000, intervalMs: 50 });
}

/** Kills what an earlier run of the same slot left behind (a crashed test), so the slot starts clean. */
function killStale(pidFile: string): void {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (pid > 0 && processAlive(pid)) {
    process.kill(pid, 'SIGCONT');
    process.kill(pid, 'SIGKILL');
  }
  rmSync(pidFile, { force: true });
}

/**
 * Starts (or restarts) a dockerd on the slot's socket and waits until it answers; loads the test
 * image once. `args` are more dockerd flags (e.g. a TLS listener: `-H tcp://127.0.0.1:<port> --tlsverify …`).
 */
export async function startOwnEngine(slot: string, options: { args?: readonly string[] } = {}): Promise<OwnEngine> {
  const p = paths(slot);
  killStale(p.pidFile);
  if (spawnSync('ip', ['link', 'show', p.bridge]).status !== 0) {
    const steps = [
      ['link', 'add', 'name', p.bridge, 'type', 'bridge'],
      ['addr', 'add', p.cidr, 'dev', p.bridge],
      ['link', 'set', p.bridge, 'up'],
    ];
    for (const step of steps) {
      const result = spawnSync('ip', step, { encoding: 'utf8' });
      if (result.status !== 0) throw new Error(`ip ${step.join(' ')}: ${result.stderr}`);
    }
  }
  const engine = new Engine({ socketPath: p.socketPath, readAttempts: 1, deadlines: { readMs: 2000 } });
  let child: ChildProcess;
  const launch = async (): Promise<void> => {
    rmSync(p.pidFile, { force: true });
    const log = openSync(p.logFile, 'a');
    child = spawn(
      'dockerd',
      ['--data-root', p.dataRoot, '--exec-root', p.execRoot, '--pidfile', p.pidFile, '-H', `unix://${p.socketPath}`, '-b', p.bridge, '--iptables=false', '--ip-masq=false', ...(options.args ?? [])],
      { stdio: ['ignore', log, log], detached: true },
    );
    child.unref();
    await pollUntil(
      `dockerd of slot ${slot} to answer (log ${p.logFile})`,
      async () => {
        if (child.exitCode !== null) throw new Error(`dockerd of slot ${slot} exited with ${child.exitCode}; see ${p.logFile}`);
        return (await engine.ping().then(() => true, () => false)) ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 100 },
    );
  };
  await launch();
  const hasImage = await engine.inspectImage(TEST_IMAGE).then(() => true, () => false);
  if (!hasImage) {
    const loaded = spawnSync('sh', ['-c', `${DOCKER_CLI} save ${TEST_IMAGE} | ${DOCKER_CLI} -H unix://${p.socketPath} load`], { encoding: 'utf8' });
    if (loaded.status !== 0) throw new Error(`loading ${TEST_IMAGE} into slot ${slot}: ${loaded.stderr}`);
  }
  const own: OwnEngine = {
    slot,
    socketPath: p.socketPath,
    engine,
    get pid() {
      return child.pid!;
    },
    async kill() {
      const pid = child.pid!;
      const containerd = containerdPid(p.execRoot);
      process.kill(pid, 'SIGCONT');
      process.kill(pid, 'SIGKILL');
      await waitGone(pid);
      if (containerd !== undefined) await waitGone(containerd, 'containerd');
      // The pid may linger as an unreaped zombie, which dockerd would take for a live containerd.
      rmSync(`${p.execRoot}/containerd/containerd.pid`, { force: true });
    },
    pause() {
      process.kill(child.pid!, 'SIGSTOP');
    },
    resume() {
      process.kill(child.pid!, 'SIGCONT');
    },
    async restart() {
      if (processAlive(child.pid!)) await own.kill();
      await launch();
    },
    async destroy() {
      if (!processAlive(child.pid!)) await launch();
      spawnSync('sh', ['-c', `${DOCKER_CLI} -H unix://${p.socketPath} ps -aq | xargs -r ${DOCKER_CLI} -H unix://${p.socketPath} rm -f`]);
      const pid = child.pid!;
      process.kill(pid, 'SIGCONT');
      process.kill(pid, 'SIGTERM');
      const exited = once(child, 'exit');
      await Promise.race([exited, waitGone(pid)]);
      // dockerd stops the containerd it started; the image stays in the data root for the next run.
    },
  };
  return own;
}
