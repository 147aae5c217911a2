/**
 * A scripted /proc and /etc for the owner-process judge (src/common/owner-process.ts): a host with
 * a machine id, a boot id, a pid namespace and processes, each of which a test can end, turn into a
 * zombie, hide or reuse.
 */
import type { ProcReader } from '../../src/common/owner-process.js';

/** A /proc/<pid>/stat line as Linux writes it: pid, (comm), state, then fields 4 to 52; field 22 is the start time. */
export function statLine(pid: number, comm: string, state: string, startTime: string): string {
  // Fields 4..21 (18 of them), then 22 (start time), then 23..52.
  const before = Array.from({ length: 18 }, (_, i) => String(i + 1));
  const after = Array.from({ length: 30 }, () => '0');
  return `${pid} (${comm}) ${state} ${before.join(' ')} ${startTime} ${after.join(' ')}\n`;
}

export interface FakeProcess {
  state: string;
  startTime: string;
  comm?: string;
}

export interface FakeProcInit {
  /** Default a fixed id; `null` for a host without /etc/machine-id. */
  machineId?: string | null;
  /** The D-Bus copy of the machine id, read when /etc/machine-id is missing. Default none. */
  dbusMachineId?: string;
  /** Default a fixed id; `null` when /proc has none. */
  bootId?: string | null;
  /** Default 4026531836; `null` when /proc/self/ns/pid cannot be read. */
  pidNamespace?: string | null;
  hostname?: string;
  /** The processes /proc shows. Pid 1 is added (running) unless given or `hideOthers` is set. */
  processes?: Record<number, FakeProcess>;
  /** hidepid=2: every pid but `self` reads as absent, pid 1 included. */
  hideOthers?: { self: number };
  /** Pids whose stat exists but cannot be read (hidepid=1). */
  unreadable?: number[];
}

export const FAKE_BOOT_ID = '95547373-791e-473a-a13a-3c8b1b395e17';
export const FAKE_MACHINE_ID = '3d1219c7c4c5404aaa1f6d2a48adfda4';
export const FAKE_PID_NAMESPACE = '4026531836';

/** A ProcReader over scripted files; `processes` stays live, so a test can end a process between sweeps. */
export function fakeProc(init: FakeProcInit = {}): ProcReader & { processes: Map<number, FakeProcess>; reads: string[] } {
  const processes = new Map<number, FakeProcess>(Object.entries(init.processes ?? {}).map(([pid, p]) => [Number(pid), p]));
  if (!init.hideOthers && !processes.has(1)) processes.set(1, { state: 'S', startTime: '1', comm: 'systemd' });
  const machineId = init.machineId === undefined ? FAKE_MACHINE_ID : init.machineId;
  const bootId = init.bootId === undefined ? FAKE_BOOT_ID : init.bootId;
  const pidNamespace = init.pidNamespace === undefined ? FAKE_PID_NAMESPACE : init.pidNamespace;
  const reads: string[] = [];
  return {
    processes,
    reads,
    readFile(path) {
      reads.push(path);
      if (path === '/etc/machine-id') return machineId === null ? undefined : `${machineId}\n`;
      if (path === '/var/lib/dbus/machine-id') return init.dbusMachineId === undefined ? undefined : `${init.dbusMachineId}\n`;
      if (path === '/proc/sys/kernel/random/boot_id') return bootId === null ? undefined : `${bootId}\n`;
      const stat = /^\/proc\/(\d+)\/stat$/.exec(path);
      if (stat) {
        const pid = Number(stat[1]);
        if (init.hideOthers && pid !== init.hideOthers.self) return undefined;
        if (init.unreadable?.includes(pid)) throw Object.assign(new Error(`EACCES: permission denied, open '${path}'`), { code: 'EACCES' });
        const process = processes.get(pid);
        return process === undefined ? undefined : statLine(pid, process.comm ?? 'node', process.state, process.startTime);
      }
      return undefined;
    },
    readLink(path) {
      reads.push(path);
      if (path === '/proc/self/ns/pid') return pidNamespace === null ? undefined : `pid:[${pidNamespace}]`;
      return undefined;
    },
    hostname: () => init.hostname ?? 'builder-7',
  };
}
