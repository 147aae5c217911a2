/**
 * Who owns a container, as a process, and whether that process is gone.
 *
 * A short-lived owner (`berth run`, a library driver) labels its containers with its host, the
 * host's boot, its pid namespace, its pid and its start time (see `LABELS.owner*`). Anyone on the
 * same host can then tell, from /proc alone, that the owner is gone (as testcontainers reaps by
 * session, without needing a reaper process per owner): another boot, no such pid, a zombie, or a
 * pid now held by another process (its start time differs). What cannot be told for sure is never
 * "gone": another host, another pid namespace, a /proc that hides other users' processes.
 *
 * The decision (`judgeOwner`) is pure; the only I/O is the `ProcReader`, which tests replace.
 */
import { createHmac } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import os from 'node:os';
import { LABELS } from './labels.js';

/**
 * Reads /proc and /etc. Synchronous on purpose: these are tiny kernel-made files that never block,
 * and a sweep reads a handful of them.
 */
export interface ProcReader {
  /** The text of a file, or undefined when it does not exist (ENOENT; ESRCH for a process that just went). Any other failure throws. */
  readFile(path: string): string | undefined;
  /** The target of a symbolic link, or undefined when it does not exist. Any other failure throws. */
  readLink(path: string): string | undefined;
  hostname(): string;
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ESRCH';
}

/** The real /proc and /etc of this process. */
export const systemProcReader: ProcReader = Object.freeze({
  readFile(path: string): string | undefined {
    try {
      return readFileSync(path, 'utf8');
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  },
  readLink(path: string): string | undefined {
    try {
      return readlinkSync(path);
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  },
  hostname: () => os.hostname(),
});

/** Where a process runs: the host, its boot, and the pid namespace its pids mean something in. */
export interface HostIdentity {
  /** A keyed hash of the machine id (`m…`), or of the hostname when there is none (`h…`). */
  hostId: string;
  /** /proc/sys/kernel/random/boot_id. */
  bootId: string;
  /** The inode number of the pid namespace, from /proc/self/ns/pid (`pid:[4026531836]` → `4026531836`). */
  pidNamespace: string;
}

/** The process that owns a container: what its owner-process labels say. */
export interface OwnerProcess extends HostIdentity {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: when the process started, in clock ticks after boot. */
  startTime: string;
}

/** What /proc says about one pid. */
export type ProcessState =
  | { kind: 'absent' }
  /** `state` is field 3 of /proc/<pid>/stat: `Z` (zombie) and `X` (dead) no longer run. */
  | { kind: 'present'; state: string; startTime: string }
  /** It exists but could not be read (for example hidepid=1): nothing can be concluded. */
  | { kind: 'unreadable' };

/** Why an owner is judged gone. */
export type OwnerGoneReason =
  /** The host booted since: no process of the earlier boot runs. */
  | 'rebooted'
  /** No process has the pid, or it is a zombie. */
  | 'exited'
  /** A process has the pid, but started at another time: the pid was reused. */
  | 'pid-reused';

/** Why nothing could be concluded: such a container is never removed as an orphan. */
export type OwnerUnknownReason =
  /** The owner-process labels are missing or malformed: not a container of a short-lived owner (or not berth's). */
  | 'unlabelled'
  /** Another host: its processes cannot be seen from here. */
  | 'other-host'
  /** The same host, but another pid namespace: its pids mean other processes here. */
  | 'other-pid-namespace'
  /** This process cannot identify its own host, boot or pid namespace. */
  | 'host-unknown'
  /** /proc hides other users' processes here (hidepid), so an absent pid proves nothing. */
  | 'processes-hidden'
  /** The owner's /proc entry exists but could not be read. */
  | 'unreadable';

export type OwnerVerdict =
  | { kind: 'alive' }
  | { kind: 'gone'; reason: OwnerGoneReason }
  | { kind: 'unknown'; reason: OwnerUnknownReason };

const HOST_ID_KEY = 'io.berth.owner-host';

/**
 * machine-id(5) asks applications never to expose the id itself, but a keyed hash of it: labels are
 * readable by anyone who can list containers.
 */
function hashHostId(kind: 'm' | 'h', value: string): string {
  return `${kind}${createHmac('sha256', HOST_ID_KEY).update(value).digest('hex').slice(0, 32)}`;
}

/** Whether a host id was made from a machine id (`m…`) rather than from a hostname (`h…`). */
function isMachineIdHost(hostId: string): boolean {
  return hostId.startsWith('m');
}

/** Reads a file for an identity: any failure means only "not available here". */
function readQuietly(reader: ProcReader, read: (reader: ProcReader) => string | undefined): string | undefined {
  try {
    const text = read(reader)?.trim();
    return text === '' ? undefined : text;
  } catch {
    return undefined;
  }
}

const PID_NAMESPACE_LINK = /^pid:\[(\d+)\]$/;

/**
 * This process's host, boot and pid namespace; undefined when any cannot be read (not Linux, no
 * /proc): then nothing is labelled, and nothing is judged.
 */
export function readHostIdentity(reader: ProcReader = systemProcReader): HostIdentity | undefined {
  const bootId = readQuietly(reader, (r) => r.readFile('/proc/sys/kernel/random/boot_id'));
  const namespaceLink = readQuietly(reader, (r) => r.readLink('/proc/self/ns/pid'));
  const pidNamespace = namespaceLink === undefined ? undefined : PID_NAMESPACE_LINK.exec(namespaceLink)?.[1];
  if (bootId === undefined || pidNamespace === undefined) return undefined;
  const machineId = readQuietly(reader, (r) => r.readFile('/etc/machine-id')) ?? readQuietly(reader, (r) => r.readFile('/var/lib/dbus/machine-id'));
  let hostId: string;
  if (machineId !== undefined) hostId = hashHostId('m', machineId);
  else {
    const hostname = readQuietly(reader, (r) => r.hostname());
    if (hostname === undefined) return undefined;
    hostId = hashHostId('h', hostname);
  }
  return { hostId, bootId, pidNamespace };
}

/**
 * Fields 3 (state) and 22 (start time) of a /proc/<pid>/stat line. The command name (field 2) is in
 * parentheses and may itself hold spaces and parentheses, so fields are counted after the last `)`.
 */
export function parseProcStat(text: string): { state: string; startTime: string } | undefined {
  const close = text.lastIndexOf(')');
  if (close === -1) return undefined;
  const fields = text.slice(close + 1).trim().split(/\s+/);
  const state = fields[0];
  const startTime = fields[22 - 3];
  if (state === undefined || !/^[A-Za-z]$/.test(state) || startTime === undefined || !/^\d+$/.test(startTime)) return undefined;
  return { state, startTime };
}

/** What /proc says about `pid`, in this process's pid namespace. */
export function readProcessState(pid: number, reader: ProcReader = systemProcReader): ProcessState {
  let text: string | undefined;
  try {
    text = reader.readFile(`/proc/${pid}/stat`);
  } catch {
    return { kind: 'unreadable' };
  }
  if (text === undefined) return { kind: 'absent' };
  const parsed = parseProcStat(text);
  return parsed === undefined ? { kind: 'unreadable' } : { kind: 'present', ...parsed };
}

/** This process (or `pid`) as an owner; undefined when it cannot be identified, and then its containers carry no owner-process labels. */
export function readOwnerProcess(reader: ProcReader = systemProcReader, pid: number = process.pid): OwnerProcess | undefined {
  const host = readHostIdentity(reader);
  if (host === undefined) return undefined;
  const state = readProcessState(pid, reader);
  if (state.kind !== 'present') return undefined;
  return { ...host, pid, startTime: state.startTime };
}

/** The labels that name an owner process (all five). */
export function ownerProcessLabels(owner: OwnerProcess): Record<string, string> {
  return {
    [LABELS.ownerHost]: owner.hostId,
    [LABELS.ownerBootId]: owner.bootId,
    [LABELS.ownerPidNamespace]: owner.pidNamespace,
    [LABELS.ownerPid]: String(owner.pid),
    [LABELS.ownerStartTime]: owner.startTime,
  };
}

/** The owner process a container's labels name; undefined unless all five are there and well formed. */
export function ownerProcessFromLabels(labels: Readonly<Record<string, string>>): OwnerProcess | undefined {
  const hostId = labels[LABELS.ownerHost];
  const bootId = labels[LABELS.ownerBootId];
  const pidNamespace = labels[LABELS.ownerPidNamespace];
  const pidText = labels[LABELS.ownerPid];
  const startTime = labels[LABELS.ownerStartTime];
  if (!hostId || !bootId || pidNamespace === undefined || pidText === undefined || startTime === undefined) return undefined;
  if (!/^\d+$/.test(pidNamespace) || !/^[1-9]\d{0,9}$/.test(pidText) || !/^\d+$/.test(startTime)) return undefined;
  return { hostId, bootId, pidNamespace, pid: Number(pidText), startTime };
}

/** What the judge sees from where it runs. */
export interface JudgeView {
  /** This process's host, boot and pid namespace; undefined when unknown. */
  host: HostIdentity | undefined;
  /** Whether /proc shows every process (pid 1 can be read); with hidepid, an absent pid proves nothing. */
  processesVisible: boolean;
  /** What /proc says about a pid. */
  processState(pid: number): ProcessState;
}

/**
 * Whether the owner process a container's labels name is gone. Gone means: the same host (by its
 * machine id), and another boot; or the same boot and pid namespace, and the pid not running (absent or a zombie) or
 * running with another start time. Anything that cannot be told from here is `unknown`, never gone.
 */
export function judgeOwner(labels: Readonly<Record<string, string>>, view: JudgeView): OwnerVerdict {
  const owner = ownerProcessFromLabels(labels);
  if (owner === undefined) return { kind: 'unknown', reason: 'unlabelled' };
  const { host } = view;
  if (host === undefined) return { kind: 'unknown', reason: 'host-unknown' };
  if (owner.hostId !== host.hostId) return { kind: 'unknown', reason: 'other-host' };
  if (owner.bootId !== host.bootId) {
    // A hostname is no proof of the same machine (two hosts may share one, and an engine may be
    // remote): without a machine id, another boot may be another host that is up.
    return isMachineIdHost(owner.hostId) ? { kind: 'gone', reason: 'rebooted' } : { kind: 'unknown', reason: 'other-host' };
  }
  if (owner.pidNamespace !== host.pidNamespace) return { kind: 'unknown', reason: 'other-pid-namespace' };
  const state = view.processState(owner.pid);
  if (state.kind === 'unreadable') return { kind: 'unknown', reason: 'unreadable' };
  if (state.kind === 'absent') return view.processesVisible ? { kind: 'gone', reason: 'exited' } : { kind: 'unknown', reason: 'processes-hidden' };
  if (state.startTime !== owner.startTime) return { kind: 'gone', reason: 'pid-reused' };
  if (state.state === 'Z' || state.state === 'X') return { kind: 'gone', reason: 'exited' };
  return { kind: 'alive' };
}

/**
 * A judge for one sweep: reads this process's identity once, and each pid's /proc entry at most
 * once, so a sweep over many containers of one owner reads /proc once for it.
 */
export function ownerJudge(reader: ProcReader = systemProcReader): (labels: Readonly<Record<string, string>>) => OwnerVerdict {
  const host = readHostIdentity(reader);
  const states = new Map<number, ProcessState>();
  const processState = (pid: number): ProcessState => {
    let state = states.get(pid);
    if (state === undefined) {
      state = readProcessState(pid, reader);
      states.set(pid, state);
    }
    return state;
  };
  const view: JudgeView = { host, processesVisible: processState(1).kind === 'present', processState };
  return (labels) => judgeOwner(labels, view);
}
