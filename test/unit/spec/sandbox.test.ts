import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { storageDriverFromRaw } from '../../../src/engine/decode.js';
import { isNamespacedSysctl, resolveTaskSpec, sysctlAllowed, type SpecPolicy, type TaskSpec } from '../../../src/spec/schema.js';
import { toCreatePlan } from '../../../src/spec/translate.js';
import { withSeccompProfile } from '../../../src/tasks/seccomp-profiles.js';

const identity = { taskId: 't', ownerId: 'o', startAttempt: 'a' };
const MiB = 1024 * 1024;

function plan(spec: Omit<TaskSpec, 'image'>, policy?: SpecPolicy) {
  return toCreatePlan(resolveTaskSpec({ image: 'a', ...spec }, policy), identity).body;
}

function issuesOf(spec: Omit<TaskSpec, 'image'> | Record<string, unknown>, policy?: SpecPolicy): Array<{ field: string; rule: string }> {
  try {
    resolveTaskSpec({ image: 'a', ...spec }, policy);
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    return error.issues.map((i) => ({ field: i.field, rule: i.rule }));
  }
  return [];
}

describe('sandbox spec fields translate into the engine\'s create options', () => {
  test('a spec without sandbox fields sets none of them, so the engine\'s defaults stay', () => {
    const { HostConfig, Hostname } = plan({});
    for (const key of ['ReadonlyRootfs', 'SecurityOpt', 'Ulimits', 'Init', 'ShmSize', 'Dns', 'DnsSearch', 'ExtraHosts', 'Sysctls', 'Devices', 'Runtime', 'OomScoreAdj', 'CpusetCpus', 'StorageOpt'] as const) {
      assert.equal(HostConfig[key], undefined, key);
    }
    assert.equal(Hostname, undefined);
  });

  test('every field reaches its engine option', () => {
    const body = plan({
      readOnlyRootfs: true,
      noNewPrivileges: true,
      seccomp: 'unconfined',
      apparmor: 'docker-default',
      ulimits: [{ name: 'nofile', soft: 256, hard: 512 }, { name: 'nproc', soft: 64 }, { name: 'core', soft: -1, hard: -1 }],
      init: true,
      shmSize: '16m',
      hostname: 'sandbox-1.example',
      dns: ['10.0.0.53', '2001:db8::53'],
      dnsSearch: ['example.com'],
      extraHosts: ['db.local:10.0.0.5', 'v6.local:2001:db8::1'],
      sysctls: { 'net.ipv4.ip_unprivileged_port_start': '0', 'kernel.shmmax': '1000000' },
      devices: [{ source: '/dev/fuse' }, { source: '/dev/null', target: '/dev/mynull', permissions: 'r' }],
      runtime: 'runc',
      oomScoreAdj: 500,
      cpuset: '0-1,3',
      storageSize: '1g',
      mounts: [{ type: 'tmpfs', target: '/tmp', size: '64m', mode: '1777' }],
    });
    const h = body.HostConfig;
    assert.equal(h.ReadonlyRootfs, true);
    assert.deepEqual(h.SecurityOpt, ['no-new-privileges', 'seccomp=unconfined', 'apparmor=docker-default']);
    assert.deepEqual(h.Ulimits, [{ Name: 'nofile', Soft: 256, Hard: 512 }, { Name: 'nproc', Soft: 64, Hard: 64 }, { Name: 'core', Soft: -1, Hard: -1 }]);
    assert.equal(h.Init, true);
    assert.equal(h.ShmSize, 16 * MiB);
    assert.equal(body.Hostname, 'sandbox-1.example');
    assert.deepEqual(h.Dns, ['10.0.0.53', '2001:db8::53']);
    assert.deepEqual(h.DnsSearch, ['example.com']);
    assert.deepEqual(h.ExtraHosts, ['db.local:10.0.0.5', 'v6.local:2001:db8::1']);
    assert.deepEqual(h.Sysctls, { 'net.ipv4.ip_unprivileged_port_start': '0', 'kernel.shmmax': '1000000' });
    assert.deepEqual(h.Devices, [
      { PathOnHost: '/dev/fuse', PathInContainer: '/dev/fuse', CgroupPermissions: 'rwm' },
      { PathOnHost: '/dev/null', PathInContainer: '/dev/mynull', CgroupPermissions: 'r' },
    ]);
    assert.equal(h.Runtime, 'runc');
    assert.equal(h.OomScoreAdj, 500);
    assert.equal(h.CpusetCpus, '0-1,3');
    assert.deepEqual(h.StorageOpt, { size: String(1024 * MiB) });
    assert.deepEqual(h.Mounts, [{ Type: 'tmpfs', Target: '/tmp', TmpfsOptions: { SizeBytes: 64 * MiB, Mode: 0o1777 } }]);
  });

  test('a seccomp profile given as an object or as JSON text is sent as its JSON text; "default" sends nothing', () => {
    const profile = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO' }] };
    assert.deepEqual(plan({ seccomp: profile }).HostConfig.SecurityOpt, [`seccomp=${JSON.stringify(profile)}`]);
    assert.deepEqual(plan({ seccomp: JSON.stringify(profile, null, 2) }).HostConfig.SecurityOpt, [`seccomp=${JSON.stringify(profile)}`]);
    assert.equal(plan({ seccomp: 'default' }).HostConfig.SecurityOpt, undefined);
  });

  test('a named seccomp profile is read from its allow-listed file before the create', () => {
    const dir = mkdtempSync(join(tmpdir(), 'berth-seccomp-'));
    const file = join(dir, 'p.json');
    writeFileSync(file, JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW' }));
    const policy: SpecPolicy = { allowPrivileged: false, allowedSeccompProfiles: { strict: file } };
    const resolved = resolveTaskSpec({ image: 'a', seccomp: 'strict' }, policy);
    assert.deepEqual(resolved.seccomp, { kind: 'named', name: 'strict' });
    assert.throws(() => toCreatePlan(resolved, identity), (e: unknown) => e instanceof ValidationError && e.issues[0]!.field === 'seccomp');
    const body = toCreatePlan(withSeccompProfile(resolved, policy), identity).body;
    assert.deepEqual(body.HostConfig.SecurityOpt, ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']);
    writeFileSync(file, 'not json');
    assert.throws(() => withSeccompProfile(resolved, policy), /is not valid JSON/);
    assert.throws(() => withSeccompProfile(resolved, { allowedSeccompProfiles: { strict: join(dir, 'gone.json') } }), /cannot be read \(ENOENT\)/);
  });
});

describe('sandbox spec fields are validated with clear field errors', () => {
  const cases: Array<[string, Record<string, unknown>, string, RegExp]> = [
    ['readOnlyRootfs', { readOnlyRootfs: 'yes' }, 'readOnlyRootfs', /boolean/],
    ['ulimit name', { ulimits: [{ name: 'files', soft: 1 }] }, 'ulimits[0].name', /must be one of core, cpu/],
    ['ulimit hard under soft', { ulimits: [{ name: 'nofile', soft: 10, hard: 5 }] }, 'ulimits[0].hard', /at least soft/],
    ['ulimit unlimited soft with a finite hard', { ulimits: [{ name: 'nofile', soft: -1, hard: 5 }] }, 'ulimits[0].hard', /at least soft/],
    ['hostname', { hostname: '-bad-' }, 'hostname', /RFC 1123/],
    ['hostname too long a label', { hostname: 'a'.repeat(64) }, 'hostname', /RFC 1123/],
    ['dns', { dns: ['8.8.8'] }, 'dns[0]', /IPv4 or IPv6/],
    ['dnsSearch', { dnsSearch: ['bad domain'] }, 'dnsSearch[0]', /domain name/],
    ['extraHosts without ip', { extraHosts: ['db.local'] }, 'extraHosts[0]', /host:ip/],
    ['extraHosts bad ip', { extraHosts: ['db.local:10.0.0'] }, 'extraHosts[0]', /host:ip/],
    ['sysctl of the host', { sysctls: { 'kernel.panic': '1' } }, 'sysctls.kernel.panic', /not a namespaced sysctl/],
    ['sysctl vm', { sysctls: { 'vm.swappiness': '1' } }, 'sysctls.vm.swappiness', /not a namespaced sysctl/],
    ['device relative', { devices: [{ source: 'dev/fuse' }] }, 'devices[0].source', /absolute/],
    ['device permissions', { devices: [{ source: '/dev/fuse', permissions: 'rwx' }] }, 'devices[0].permissions', /r, w and m/],
    ['device permissions repeated', { devices: [{ source: '/dev/fuse', permissions: 'rr' }] }, 'devices[0].permissions', /each once/],
    ['runtime', { runtime: 'run c' }, 'runtime', /runtime name/],
    ['cpuset', { cpuset: '0-' }, 'cpuset', /CPU list/],
    ['cpuset backwards', { cpuset: '3-1' }, 'cpuset', /low to high/],
    ['seccomp path', { seccomp: '/etc/profile.json' }, 'seccomp', /"default", "unconfined"/],
    ['seccomp bad json', { seccomp: '{"defaultAction":' }, 'seccomp', /not valid JSON/],
    ['seccomp without defaultAction', { seccomp: { syscalls: [] } }, 'seccomp', /defaultAction/],
    ['tmpfs mode', { mounts: [{ type: 'tmpfs', target: '/tmp', mode: '999' }] }, 'mounts[0].mode', /file mode/],
    ['hostname with the host network', { hostname: 'x', network: 'host' }, 'hostname', /network "host"/],
    ['net sysctl with the host network', { sysctls: { 'net.ipv4.ip_forward': '1' }, network: 'host' }, 'sysctls.net.ipv4.ip_forward', /network "host"/],
  ];
  for (const [what, spec, field, rule] of cases) {
    test(`${what}: refused naming ${field}`, () => {
      const issues = issuesOf(spec);
      const found = issues.find((i) => i.field === field);
      assert.ok(found, `no issue for ${field}: ${JSON.stringify(issues)}`);
      assert.match(found.rule, rule);
    });
  }

  test('the namespaced sysctls are docker\'s: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*', () => {
    for (const key of ['net.ipv4.ping_group_range', 'net.core.somaxconn', 'kernel.shmmax', 'kernel.shm_rmid_forced', 'kernel.msgmax', 'kernel.sem', 'fs.mqueue.msg_max']) assert.ok(isNamespacedSysctl(key), key);
    for (const key of ['kernel.hostname', 'kernel.semx', 'vm.overcommit_memory', 'fs.file-max', 'net']) assert.ok(!isNamespacedSysctl(key), key);
  });
});

describe('the powerful sandbox knobs need the policy\'s allow-list', () => {
  const closed: SpecPolicy = {
    allowPrivileged: false,
    allowedDevices: [],
    allowedRuntimes: ['runc'],
    allowedSysctls: ['net.ipv4.ping_group_range', 'kernel.shm*'],
    allowedSeccompProfiles: {},
    allowUnconfinedSeccomp: false,
    allowUnconfinedApparmor: false,
    allowInlineSeccomp: false,
    allowNegativeOomScoreAdj: false,
  };

  test('each knob outside the policy is refused, naming its field, all in one answer', () => {
    const issues = issuesOf(
      {
        devices: [{ source: '/dev/fuse' }],
        runtime: 'runsc',
        sysctls: { 'net.ipv4.ip_forward': '1', 'kernel.shmmax': '1', 'net.ipv4.ping_group_range': '0 0' },
        seccomp: 'unconfined',
        apparmor: 'unconfined',
        oomScoreAdj: -500,
      },
      closed,
    );
    assert.deepEqual(issues.map((i) => i.field).sort(), ['apparmor', 'devices[0].source', 'oomScoreAdj', 'runtime', 'seccomp', 'sysctls.net.ipv4.ip_forward']);
    assert.match(issues.find((i) => i.field === 'runtime')!.rule, /runsc is not in the runtime allow-list \(allowedRuntimes: runc\)/);
    assert.match(issues.find((i) => i.field === 'seccomp')!.rule, /allowUnconfinedSeccomp is off/);
    assert.match(issues.find((i) => i.field === 'apparmor')!.rule, /allowUnconfinedApparmor is off/);
  });

  test('a seccomp profile name not in the allow-list, and an inline profile where they are off, are refused', () => {
    assert.match(issuesOf({ seccomp: 'strict' }, closed)[0]!.rule, /seccomp profile strict is not in the allow-list \(allowedSeccompProfiles is empty\)/);
    assert.match(issuesOf({ seccomp: { defaultAction: 'SCMP_ACT_ALLOW' } }, closed)[0]!.rule, /given in the spec is not allowed/);
    assert.deepEqual(issuesOf({ seccomp: 'default', apparmor: 'docker-default' }, closed), []);
  });

  test('knobs within the policy are accepted', () => {
    assert.deepEqual(issuesOf({ devices: [{ source: '/dev/fuse' }], runtime: 'runc', sysctls: { 'kernel.shmmax': '1' }, oomScoreAdj: 500 }, { ...closed, allowedDevices: ['/dev/fuse'] }), []);
  });

  test('a library driver without allow-lists (undefined) allows them', () => {
    assert.deepEqual(issuesOf({ devices: [{ source: '/dev/fuse' }], runtime: 'runsc', seccomp: 'unconfined', apparmor: 'unconfined' }), []);
  });

  test('sysctl patterns: an exact name, or a prefix ending in *', () => {
    assert.ok(sysctlAllowed('net.ipv4.tcp_keepalive_time', ['net.ipv4.*']));
    assert.ok(!sysctlAllowed('net.ipv6.conf.all.forwarding', ['net.ipv4.*']));
    assert.ok(!sysctlAllowed('kernel.shmmax2', ['kernel.shmmax']));
  });
});

describe('the engine\'s storage driver: which can bound a container\'s writable layer', () => {
  test('overlay2 only on xfs; btrfs, zfs and devicemapper always; others not', () => {
    assert.deepEqual(storageDriverFromRaw({ Driver: 'overlay2', DriverStatus: [['Backing Filesystem', 'extfs'], ['Supports d_type', 'true']] }), { driver: 'overlay2', backingFilesystem: 'extfs', supportsSizeQuota: false });
    assert.equal(storageDriverFromRaw({ Driver: 'overlay2', DriverStatus: [['Backing Filesystem', 'xfs']] }).supportsSizeQuota, true);
    assert.equal(storageDriverFromRaw({ Driver: 'btrfs', DriverStatus: null }).supportsSizeQuota, true);
    assert.equal(storageDriverFromRaw({ Driver: 'vfs' }).supportsSizeQuota, false);
  });
});
