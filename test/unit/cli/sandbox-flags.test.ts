import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { flagForSpecField, oomScoreAdjFlag, parseDeviceFlag, parseSecurityOpts, parseSysctlFlags, parseTmpfsFlag, parseUlimitFlags } from '../../../src/cli/flags.js';
import { specFromRunFlags } from '../../../src/cli/run.js';
import { resolveTaskSpec } from '../../../src/spec/schema.js';

function assertUsage(fn: () => unknown, field: string, rule: RegExp): void {
  assert.throws(fn, (error: unknown) => error instanceof ValidationError && error.issues[0]!.field === field && rule.test(error.issues[0]!.rule), `expected ${field} ${rule}`);
}

const BASE = { env: [], label: [], mount: [], capAdd: [], capDrop: [] };
const IO = { env: {}, stdin: new PassThrough() };
const PROFILE = '{"defaultAction":"SCMP_ACT_ALLOW"}';
const readProfile = (path: string): string => {
  if (path === '/etc/p.json') return PROFILE;
  throw Object.assign(new Error('no'), { code: 'ENOENT' });
};

describe('run: the sandbox\'s docker flags', () => {
  test('--tmpfs PATH[:size=…,mode=…] is a tmpfs mount', () => {
    assert.deepEqual(parseTmpfsFlag('/tmp'), { type: 'tmpfs', target: '/tmp' });
    assert.deepEqual(parseTmpfsFlag('/tmp:size=64m,mode=1777'), { type: 'tmpfs', target: '/tmp', size: '64m', mode: '1777' });
    assertUsage(() => parseTmpfsFlag('tmp'), '--tmpfs', /absolute container path/);
    assertUsage(() => parseTmpfsFlag('/tmp:size=lots'), '--tmpfs size', /size/);
    assertUsage(() => parseTmpfsFlag('/tmp:mode=rwx'), '--tmpfs mode', /octal/);
    assertUsage(() => parseTmpfsFlag('/tmp:exec'), '--tmpfs', /unknown option "exec"/);
  });

  test('--security-opt: no-new-privileges, seccomp and apparmor as docker spells them', () => {
    assert.deepEqual(parseSecurityOpts(['no-new-privileges'], 'engine'), { noNewPrivileges: true });
    assert.deepEqual(parseSecurityOpts(['no-new-privileges=true'], 'engine'), { noNewPrivileges: true });
    assert.deepEqual(parseSecurityOpts(['no-new-privileges:false'], 'engine'), { noNewPrivileges: false });
    assert.deepEqual(parseSecurityOpts(['seccomp=unconfined', 'apparmor=docker-default'], 'engine'), { seccomp: 'unconfined', apparmor: 'docker-default' });
    assert.deepEqual(parseSecurityOpts(['seccomp=default'], 'agent'), { seccomp: 'default' });
    assertUsage(() => parseSecurityOpts(['no-new-privileges=maybe'], 'engine'), '--security-opt', /true or false/);
    assertUsage(() => parseSecurityOpts(['label=disable'], 'engine'), '--security-opt', /is not one of/);
  });

  test('--security-opt seccomp=FILE: berth run reads the file; a task the agent runs names a profile and may not give a path', () => {
    assert.deepEqual(parseSecurityOpts(['seccomp=/etc/p.json'], 'engine', readProfile), { seccomp: PROFILE });
    assertUsage(() => parseSecurityOpts(['seccomp=/etc/none.json'], 'engine', readProfile), '--security-opt', /cannot read the profile file \(ENOENT\)/);
    assert.deepEqual(parseSecurityOpts(['seccomp=strict'], 'agent', readProfile), { seccomp: 'strict' });
    assertUsage(() => parseSecurityOpts(['seccomp=/etc/p.json'], 'agent', readProfile), '--security-opt', /allowedSeccompProfiles/);
    assertUsage(() => parseSecurityOpts(['seccomp=p.json'], 'agent', readProfile), '--security-opt', /allowedSeccompProfiles/);
  });

  test('--ulimit name=soft[:hard]', () => {
    assert.deepEqual(parseUlimitFlags(['nofile=1024:2048', 'nproc=64', 'core=-1']), [
      { name: 'nofile', soft: 1024, hard: 2048 },
      { name: 'nproc', soft: 64 },
      { name: 'core', soft: -1 },
    ]);
    assertUsage(() => parseUlimitFlags(['files=1']), '--ulimit', /not a limit name/);
    assertUsage(() => parseUlimitFlags(['nofile']), '--ulimit', /name=soft\[:hard\]/);
    assertUsage(() => parseUlimitFlags(['nofile=a:b']), '--ulimit', /name=soft\[:hard\]/);
  });

  test('--sysctl, --device and --oom-score-adj', () => {
    assert.deepEqual(parseSysctlFlags(['net.ipv4.ping_group_range=0 2147483647', 'kernel.shmmax=1']), { 'net.ipv4.ping_group_range': '0 2147483647', 'kernel.shmmax': '1' });
    assertUsage(() => parseSysctlFlags(['net.ipv4.ip_forward']), '--sysctl', /key=value/);
    assert.deepEqual(parseDeviceFlag('/dev/fuse'), { source: '/dev/fuse' });
    assert.deepEqual(parseDeviceFlag('/dev/fuse:r'), { source: '/dev/fuse', permissions: 'r' });
    assert.deepEqual(parseDeviceFlag('/dev/fuse:/dev/f'), { source: '/dev/fuse', target: '/dev/f' });
    assert.deepEqual(parseDeviceFlag('/dev/fuse:/dev/f:rw'), { source: '/dev/fuse', target: '/dev/f', permissions: 'rw' });
    assertUsage(() => parseDeviceFlag('/dev/a:/b:rw:x'), '--device', /host/);
    assert.equal(oomScoreAdjFlag('-500'), -500);
    assertUsage(() => oomScoreAdjFlag('1001'), '--oom-score-adj', /-1000 to 1000/);
  });

  test('every flag reaches its spec field, and the spec resolves', () => {
    const spec = specFromRunFlags('busybox', [], {
      ...BASE,
      readOnly: true,
      tmpfs: ['/tmp:size=64m'],
      securityOpt: ['no-new-privileges', 'seccomp=unconfined'],
      ulimit: ['nofile=100:200'],
      init: true,
      shmSize: '16m',
      hostname: 'box',
      dns: ['10.0.0.53'],
      dnsSearch: ['example.com'],
      addHost: ['db:10.0.0.5'],
      sysctl: ['net.ipv4.ip_unprivileged_port_start=0'],
      device: ['/dev/null:/dev/n:r'],
      runtime: 'runc',
      oomScoreAdj: '100',
      cpusetCpus: '0',
    }, IO);
    const resolved = resolveTaskSpec(spec);
    assert.equal(resolved.readOnlyRootfs, true);
    assert.deepEqual(resolved.mounts, [{ type: 'tmpfs', target: '/tmp', sizeBytes: 64 * 1024 * 1024 }]);
    assert.equal(resolved.noNewPrivileges, true);
    assert.deepEqual(resolved.seccomp, { kind: 'unconfined' });
    assert.deepEqual(resolved.ulimits, [{ name: 'nofile', soft: 100, hard: 200 }]);
    assert.equal(resolved.init, true);
    assert.equal(resolved.shmSizeBytes, 16 * 1024 * 1024);
    assert.equal(resolved.hostname, 'box');
    assert.deepEqual([resolved.dns, resolved.dnsSearch, resolved.extraHosts], [['10.0.0.53'], ['example.com'], ['db:10.0.0.5']]);
    assert.deepEqual(resolved.sysctls, { 'net.ipv4.ip_unprivileged_port_start': '0' });
    assert.deepEqual(resolved.devices, [{ source: '/dev/null', target: '/dev/n', permissions: 'r' }]);
    assert.deepEqual([resolved.runtime, resolved.oomScoreAdj, resolved.cpuset], ['runc', 100, '0']);
  });

  test('a spec error in a sandbox field names the flag that set it', () => {
    assert.equal(flagForSpecField('spec.hostname'), '--hostname');
    assert.equal(flagForSpecField('dns[0]'), '--dns');
    assert.equal(flagForSpecField('extraHosts[1]'), '--add-host');
    assert.equal(flagForSpecField('sysctls.kernel.panic'), '--sysctl');
    assert.equal(flagForSpecField('devices[0].source'), '--device');
    assert.equal(flagForSpecField('seccomp'), '--security-opt');
    assert.equal(flagForSpecField('ulimits[0].hard'), '--ulimit');
    assert.equal(flagForSpecField('cpuset'), '--cpuset-cpus');
  });
});
