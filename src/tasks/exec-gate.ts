/**
 * ExecSetupGate: per container, an exec being set up and a freeze (the engine's pause) never
 * overlap. The engine answers an exec's start before its runtime has set the process up (`runc
 * init` joins the container's cgroups); a container frozen in between leaves that setup stuck in
 * the frozen cgroup (D state) holding the container's lock, and the engine wedges for it: unpause,
 * inspect and remove hang. So a freeze waits until every exec being set up in the container shows
 * running (pid > 0) or ended in the engine, and an exec asked for while a freeze is under way (or
 * waiting) waits until it is done (the engine then refuses it on a paused container, safely).
 *
 * One gate per engine (`execGateOf`): the driver's handles, the library's execInTask, the pools and
 * the agent's exec route all share it, whichever of them runs the exec or the freeze.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExecInspect } from '../engine/engine.js';

/** How long an exec may take to show running or ended before the gate stops holding freezes back for it (the engine's write deadline). */
export const EXEC_SETUP_MAX_MS = 30_000;
/** How often a held exec is inspected. */
const EXEC_SETUP_POLL_MS = 5;

interface ContainerGate {
  /** Execs being set up now. */
  setups: number;
  /** Freezes under way or waiting: setups asked for meanwhile wait (a stream of execs must not starve a pause). */
  freezes: number;
  /** Settled whenever a setup or a freeze ends: waiters look again. */
  changed: Promise<void>;
  signalChange: () => void;
  /** A freeze runs now (they run one at a time). */
  freezing: boolean;
}

export interface ExecGateOptions {
  /** Default EXEC_SETUP_MAX_MS. */
  setupMaxMs?: number;
  /** Default 5 ms. */
  pollMs?: number;
}

/** See the module's comment. */
export class ExecSetupGate {
  readonly #containers = new Map<string, ContainerGate>();
  readonly #setupMaxMs: number;
  readonly #pollMs: number;

  constructor(options: ExecGateOptions = {}) {
    this.#setupMaxMs = options.setupMaxMs ?? EXEC_SETUP_MAX_MS;
    this.#pollMs = options.pollMs ?? EXEC_SETUP_POLL_MS;
  }

  /**
   * Runs `start` (an exec's create and start in `containerId`) once no freeze of the container is
   * under way or waiting, and holds freezes back until `inspectExec` shows the exec running with a
   * pid, or ended (or `start` failed, or EXEC_SETUP_MAX_MS passed). Without `inspectExec`, freezes
   * are held back until `start` resolves only. Resolves with what `start` resolves.
   */
  async setup<T extends { id: string }>(containerId: string, start: () => Promise<T>, inspectExec?: (execId: string) => Promise<ExecInspect>): Promise<T> {
    let gate = this.#gate(containerId);
    while (gate.freezes > 0) {
      await gate.changed;
      // A gate left with nothing is forgotten: looked up again.
      gate = this.#gate(containerId);
    }
    gate.setups++;
    let session: T;
    try {
      session = await start();
    } catch (error) {
      this.#endSetup(containerId, gate);
      throw error;
    }
    if (inspectExec === undefined) this.#endSetup(containerId, gate);
    else void this.#setUp(inspectExec, session.id).finally(() => this.#endSetup(containerId, gate));
    return session;
  }

  /**
   * Runs `freeze` (the engine's pause of `containerId`) once no exec is being set up in it; execs
   * asked for from now until it settles wait for it. Resolves or rejects as `freeze` does.
   */
  async freeze<T>(containerId: string, freeze: () => Promise<T>): Promise<T> {
    const gate = this.#gate(containerId);
    gate.freezes++;
    try {
      while (gate.setups > 0 || gate.freezing) await gate.changed;
      gate.freezing = true;
      return await freeze();
    } finally {
      gate.freezing = false;
      gate.freezes--;
      this.#changed(containerId, gate);
    }
  }

  /** Execs being set up in `containerId` now (for tests and logs). */
  settingUp(containerId: string): number {
    return this.#containers.get(containerId)?.setups ?? 0;
  }

  async #setUp(inspectExec: (execId: string) => Promise<ExecInspect>, execId: string): Promise<void> {
    for (const deadline = Date.now() + this.#setupMaxMs; Date.now() < deadline; ) {
      const exec = await inspectExec(execId).catch(() => undefined);
      if (exec !== undefined && ((exec.running && exec.pid > 0) || (!exec.running && exec.exitCode !== null))) return;
      await sleep(this.#pollMs);
    }
  }

  #gate(containerId: string): ContainerGate {
    let gate = this.#containers.get(containerId);
    if (gate === undefined) {
      let signalChange = (): void => undefined;
      const changed = new Promise<void>((resolve) => (signalChange = resolve));
      gate = { setups: 0, freezes: 0, changed, signalChange, freezing: false };
      this.#containers.set(containerId, gate);
    }
    return gate;
  }

  #endSetup(containerId: string, gate: ContainerGate): void {
    gate.setups--;
    this.#changed(containerId, gate);
  }

  /** Wakes the container's waiters; a gate with nothing left is forgotten. */
  #changed(containerId: string, gate: ContainerGate): void {
    const wake = gate.signalChange;
    gate.changed = new Promise<void>((resolve) => (gate.signalChange = resolve));
    if (gate.setups === 0 && gate.freezes === 0 && this.#containers.get(containerId) === gate) this.#containers.delete(containerId);
    wake();
  }
}

const gates = new WeakMap<object, ExecSetupGate>();

/** The gate of one engine (one per engine object, made on first use): everything that execs in or freezes its containers shares it. */
export function execGateOf(engine: object): ExecSetupGate {
  let gate = gates.get(engine);
  if (gate === undefined) {
    gate = new ExecSetupGate();
    gates.set(engine, gate);
  }
  return gate;
}

/** The engine's `inspectExec`, when the port it is seen through has one (a narrow port may leave it out). */
export function inspectExecOf(engine: object): ((execId: string) => Promise<ExecInspect>) | undefined {
  const inspect = (engine as { inspectExec?: unknown }).inspectExec;
  return typeof inspect === 'function' ? (execId: string) => (inspect as (id: string) => Promise<ExecInspect>).call(engine, execId) : undefined;
}
