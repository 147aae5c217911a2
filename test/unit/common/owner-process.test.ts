import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { LABELS } from '../../../src/common/labels.js';
import {
  judgeOwner,
  ownerJudge,
  ownerProcessFromLabels,
  ownerProcessLabels,
  parseProcStat,
  readHostIdentity,
  readOwnerProcess,
  readProcessState,
  type JudgeView,
  type OwnerProcess,
} from '../../../src/common/owner-process.js';
import { FAKE_BOOT_ID, FAKE_MACHINE_ID, FAKE_PID_NAMESPACE, fakeProc, statLine } from '../../support/proc.js';

const OWNER_PID = 4242;
const OWNER_START = '987654';

/** The labels a `berth run` of pid 4242 wrote on the fake host. */
function ownerLabels(overrides: Partial<OwnerProcess> = {}): Record<string, string> {
  const host = readHostIdentity(fakeProc())!;
  return ownerProcessLabels({ ...host, pid: OWNER_PID, startTime: OWNER_START, ...overrides });
}

/** What the judge sees on the fake host, with the owner in `ownerState` (absent when undefined). */
function view(ownerState: { state: string; startTime: string } | undefined, init: Parameters<typeof fakeProc>[0] = {}): JudgeView {
  const processes: Record<number, { state: string; startTime: string }> = { ...(init.processes ?? {}) };
  if (ownerState) processes[OWNER_PID] = ownerState;
  const proc = fakeProc({ ...init, processes });
  const host = readHostIdentity(proc);
  return { host, processesVisible: readProcessState(1, proc).kind === 'present', processState: (pid) => readProcessState(pid, proc) };
}

describe('owner process: reading /proc', () => {
  it('reads fields 3 and 22 of a stat line, even when the command name holds spaces and parentheses', () => {
    assert.deepEqual(parseProcStat(statLine(7, 'node', 'S', '123')), { state: 'S', startTime: '123' });
    assert.deepEqual(parseProcStat(statLine(7, 'we (ird) name) ', 'R', '456')), { state: 'R', startTime: '456' });
    assert.equal(parseProcStat('7 (node) S 1 2'), undefined, 'too short');
    assert.equal(parseProcStat('garbage'), undefined);
  });

  it('identifies the host by a keyed hash of its machine id, never the id itself', () => {
    const identity = readHostIdentity(fakeProc())!;
    assert.match(identity.hostId, /^m[0-9a-f]{32}$/);
    assert.ok(!identity.hostId.includes(FAKE_MACHINE_ID));
    assert.equal(identity.bootId, FAKE_BOOT_ID);
    assert.equal(identity.pidNamespace, FAKE_PID_NAMESPACE);
    assert.equal(readHostIdentity(fakeProc())!.hostId, identity.hostId, 'stable');
    assert.notEqual(readHostIdentity(fakeProc({ machineId: 'ffff' }))!.hostId, identity.hostId);
  });

  it('falls back to the D-Bus machine id, then to the hostname', () => {
    const dbus = readHostIdentity(fakeProc({ machineId: null, dbusMachineId: FAKE_MACHINE_ID }))!;
    assert.equal(dbus.hostId, readHostIdentity(fakeProc())!.hostId, 'the same id read from either file');
    const byName = readHostIdentity(fakeProc({ machineId: null, hostname: 'builder-7' }))!;
    assert.match(byName.hostId, /^h[0-9a-f]{32}$/);
    assert.notEqual(byName.hostId, readHostIdentity(fakeProc({ machineId: null, hostname: 'builder-8' }))!.hostId);
  });

  it('cannot identify a host without a boot id or a pid namespace: then nothing is labelled', () => {
    assert.equal(readHostIdentity(fakeProc({ bootId: null })), undefined);
    assert.equal(readHostIdentity(fakeProc({ pidNamespace: null })), undefined);
    assert.equal(readOwnerProcess(fakeProc({ bootId: null }), OWNER_PID), undefined);
  });

  it('tells an absent pid from an unreadable one', () => {
    const proc = fakeProc({ processes: { 10: { state: 'S', startTime: '5' } }, unreadable: [11] });
    assert.deepEqual(readProcessState(10, proc), { kind: 'present', state: 'S', startTime: '5' });
    assert.deepEqual(readProcessState(12, proc), { kind: 'absent' });
    assert.deepEqual(readProcessState(11, proc), { kind: 'unreadable' });
  });

  it('writes five labels and reads them back; a missing or malformed one makes them no owner at all', () => {
    const owner = readOwnerProcess(fakeProc({ processes: { [OWNER_PID]: { state: 'S', startTime: OWNER_START } } }), OWNER_PID)!;
    const labels = ownerProcessLabels(owner);
    assert.deepEqual(Object.keys(labels).sort(), [LABELS.ownerBootId, LABELS.ownerHost, LABELS.ownerPid, LABELS.ownerPidNamespace, LABELS.ownerStartTime].sort());
    assert.equal(labels[LABELS.ownerPid], String(OWNER_PID));
    assert.equal(labels[LABELS.ownerStartTime], OWNER_START);
    assert.deepEqual(ownerProcessFromLabels(labels), owner);
    for (const key of Object.keys(labels)) {
      const { [key]: _dropped, ...rest } = labels;
      assert.equal(ownerProcessFromLabels(rest), undefined, `without ${key}`);
    }
    assert.equal(ownerProcessFromLabels({ ...labels, [LABELS.ownerPid]: '0' }), undefined);
    assert.equal(ownerProcessFromLabels({ ...labels, [LABELS.ownerPid]: '12abc' }), undefined);
    assert.equal(ownerProcessFromLabels({ ...labels, [LABELS.ownerStartTime]: '-1' }), undefined);
  });
});

describe('owner process: is the owner gone?', () => {
  const running = { state: 'S', startTime: OWNER_START };

  it('alive while its pid runs with the same start time', () => {
    assert.deepEqual(judgeOwner(ownerLabels(), view(running)), { kind: 'alive' });
    assert.deepEqual(judgeOwner(ownerLabels(), view({ state: 'R', startTime: OWNER_START })), { kind: 'alive' });
  });

  it('gone when no process has its pid', () => {
    assert.deepEqual(judgeOwner(ownerLabels(), view(undefined)), { kind: 'gone', reason: 'exited' });
  });

  it('gone when its pid is a zombie (killed, not yet reaped by its parent)', () => {
    assert.deepEqual(judgeOwner(ownerLabels(), view({ state: 'Z', startTime: OWNER_START })), { kind: 'gone', reason: 'exited' });
    assert.deepEqual(judgeOwner(ownerLabels(), view({ state: 'X', startTime: OWNER_START })), { kind: 'gone', reason: 'exited' });
  });

  it('gone when another process holds its pid (another start time): a reused pid is not the owner', () => {
    assert.deepEqual(judgeOwner(ownerLabels(), view({ state: 'S', startTime: '999999' })), { kind: 'gone', reason: 'pid-reused' });
  });

  it('gone when the host booted since, whatever now holds the pid', () => {
    assert.deepEqual(judgeOwner(ownerLabels({ bootId: 'an-earlier-boot' }), view(running)), { kind: 'gone', reason: 'rebooted' });
  });

  it('a host known only by its hostname: another boot may be another machine of that name, so never judged gone', () => {
    const byName = { machineId: null, hostname: 'ci' } as const;
    const labels = ownerProcessLabels({ ...readHostIdentity(fakeProc(byName))!, bootId: 'another-boot', pid: OWNER_PID, startTime: OWNER_START });
    assert.deepEqual(judgeOwner(labels, view(undefined, byName)), { kind: 'unknown', reason: 'other-host' });
    // The same boot of that host: judged as any other.
    const sameBoot = ownerProcessLabels({ ...readHostIdentity(fakeProc(byName))!, pid: OWNER_PID, startTime: OWNER_START });
    assert.deepEqual(judgeOwner(sameBoot, view(undefined, byName)), { kind: 'gone', reason: 'exited' });
  });

  it('never judged from another host, even with its pid running here or absent', () => {
    const otherHost = ownerLabels({ hostId: readHostIdentity(fakeProc({ machineId: 'another-machine' }))!.hostId });
    assert.deepEqual(judgeOwner(otherHost, view(undefined)), { kind: 'unknown', reason: 'other-host' });
    assert.deepEqual(judgeOwner(otherHost, view(running)), { kind: 'unknown', reason: 'other-host' });
    // Another host that booted since is still another host's business.
    assert.deepEqual(judgeOwner({ ...otherHost, [LABELS.ownerBootId]: 'x' }, view(undefined)), { kind: 'unknown', reason: 'other-host' });
  });

  it('never judged from another pid namespace of the same host', () => {
    assert.deepEqual(judgeOwner(ownerLabels({ pidNamespace: '4026532999' }), view(undefined)), { kind: 'unknown', reason: 'other-pid-namespace' });
  });

  it('never judged when /proc hides other processes (hidepid=2) or cannot read them (hidepid=1)', () => {
    const hidden = view(undefined, { hideOthers: { self: 77 } });
    assert.equal(hidden.processesVisible, false);
    assert.deepEqual(judgeOwner(ownerLabels(), hidden), { kind: 'unknown', reason: 'processes-hidden' });
    assert.deepEqual(judgeOwner(ownerLabels(), view(running, { unreadable: [OWNER_PID] })), { kind: 'unknown', reason: 'unreadable' });
  });

  it('never judged when this process cannot identify its own host', () => {
    assert.deepEqual(judgeOwner(ownerLabels(), view(undefined, { bootId: null })), { kind: 'unknown', reason: 'host-unknown' });
  });

  it('no verdict for a container without the owner-process labels (an agent\'s, or not berth\'s)', () => {
    assert.deepEqual(judgeOwner({ [LABELS.managed]: 'true', [LABELS.ownerId]: 'agent-1' }, view(undefined)), { kind: 'unknown', reason: 'unlabelled' });
    assert.deepEqual(judgeOwner({}, view(undefined)), { kind: 'unknown', reason: 'unlabelled' });
  });

  it('a judge reads its own identity once and each pid at most once per sweep', () => {
    const proc = fakeProc({ processes: { [OWNER_PID]: running } });
    const judge = ownerJudge(proc);
    for (let i = 0; i < 3; i++) assert.deepEqual(judge(ownerLabels()), { kind: 'alive' });
    assert.equal(proc.reads.filter((path) => path === `/proc/${OWNER_PID}/stat`).length, 1);
    assert.equal(proc.reads.filter((path) => path === '/proc/sys/kernel/random/boot_id').length, 1);
    // A new judge (the next sweep) sees the process gone.
    proc.processes.delete(OWNER_PID);
    assert.deepEqual(ownerJudge(proc)(ownerLabels()), { kind: 'gone', reason: 'exited' });
  });
});

describe('owner process: this host', { skip: process.platform !== 'linux' && 'reads the real /proc' }, () => {
  it('judges this process alive, and a child that has exited and been reaped gone', async () => {
    const self = readOwnerProcess();
    assert.ok(self, 'this process can be identified');
    assert.equal(self.pid, process.pid);
    assert.deepEqual(ownerJudge()(ownerProcessLabels(self)), { kind: 'alive' });

    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    await once(child, 'spawn');
    const owner = readOwnerProcess(undefined, child.pid!);
    assert.ok(owner, 'the child can be identified');
    assert.deepEqual(ownerJudge()(ownerProcessLabels(owner)), { kind: 'alive' });
    child.kill('SIGKILL');
    await once(child, 'exit');
    assert.deepEqual(ownerJudge()(ownerProcessLabels(owner)), { kind: 'gone', reason: 'exited' });
    assert.deepEqual(ownerJudge()(ownerProcessLabels({ ...owner, pid: process.pid })), { kind: 'gone', reason: 'pid-reused' }, 'a live pid with another start time');
  });
});
