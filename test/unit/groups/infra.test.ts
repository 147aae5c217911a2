import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { groupDemand } from '../../../src/groups/demand.js';
import { BerthError, isBerthError } from '../../../src/common/errors.js';
import { BUILTIN_INFRA_IMAGE, elfExecutable, ensureBuiltinInfraImage, infraRootfs } from '../../../src/groups/infra-image.js';
import { groupObjectLabels, groupObjectNames, membershipOf, toInfraCreatePlan, type GroupIdentity } from '../../../src/groups/infra-plan.js';
import { isLegalGroupTransition, refusedGroupTransition } from '../../../src/groups/state.js';
import { resolveGroupSpec } from '../../../src/spec/group.js';

const MiB = 1024 * 1024;
const identity: GroupIdentity = { groupId: 'web-1', ownerId: 'agent', startAttempt: 'attempt-1', labels: { team: 'a' } };
const group = (extra: Record<string, unknown> = {}) => resolveGroupSpec({ name: 'web', tasks: [{ name: 'api', image: 'busybox' }, { name: 'Proxy_1', image: 'busybox', lifecycle: 'sidecar' }], ...extra });

describe('groupObjectNames and membershipOf', () => {
  test('names the infrastructure container always, the volume only with a shared directory, the network only in private mode', () => {
    assert.deepEqual(groupObjectNames(group(), identity), { infraContainer: 'berth-web-1.agent-infra.11', volume: 'berth-web-1.agent.shared' });
    assert.deepEqual(groupObjectNames(group({ sharedDir: false, network: { mode: 'private' } }), identity), { infraContainer: 'berth-web-1.agent-infra.11', network: 'berth-web-1.agent.net' });
  });

  test('a task joins the infrastructure container and mounts the shared volume at the group\'s path', () => {
    assert.deepEqual(membershipOf(group({ sharedDir: '/data' }), identity, 'api', 'c0ffee'), {
      groupId: 'web-1',
      taskName: 'api',
      infraContainerId: 'c0ffee',
      sharedDir: { volumeName: 'berth-web-1.agent.shared', target: '/data' },
    });
    assert.equal(membershipOf(group({ sharedDir: false }), identity, 'api', 'c0ffee').sharedDir, undefined);
  });

  test('labels every object with the caller\'s labels, berth\'s own over them, and its role', () => {
    assert.deepEqual(groupObjectLabels({ ...identity, labels: { team: 'a', 'io.berth.role': 'spoofed' } }, 'shared-dir'), {
      team: 'a',
      'io.berth.managed': 'true',
      'io.berth.owner-id': 'agent',
      'io.berth.group-id': 'web-1',
      'io.berth.role': 'shared-dir',
      'io.berth.start-attempt': 'attempt-1',
    });
  });
});

describe('toInfraCreatePlan', () => {
  test('a bridge group: the default bridge, its ports published on loopback, a small locked-down container killed at removal', () => {
    const plan = toInfraCreatePlan(group({ network: { ports: [{ container: 8080 }, { container: 53, host: 5353, protocol: 'udp' }] } }), identity, BUILTIN_INFRA_IMAGE);
    assert.equal(plan.name, 'berth-web-1.agent-infra.11');
    assert.equal(plan.body.Image, BUILTIN_INFRA_IMAGE);
    assert.equal(plan.body.StopSignal, 'SIGKILL');
    assert.equal(plan.body.Labels?.['io.berth.role'], 'infra');
    assert.equal(plan.body.Labels?.team, 'a');
    const host = plan.body.HostConfig!;
    assert.equal(host.NetworkMode, 'bridge');
    assert.deepEqual(host.CapDrop, ['ALL']);
    assert.equal(host.ReadonlyRootfs, true);
    assert.equal(host.Memory, 16 * MiB);
    assert.deepEqual(Object.keys(plan.body.ExposedPorts ?? {}).sort(), ['53/udp', '8080/tcp']);
    assert.deepEqual(host.PortBindings?.['8080/tcp'], [{ HostIp: '127.0.0.1', HostPort: '' }]);
    assert.deepEqual(host.PortBindings?.['53/udp'], [{ HostIp: '127.0.0.1', HostPort: '5353' }]);
    assert.deepEqual(plan.connectNetworks, []);
  });

  test('a private group joins its own network with its tasks\' names (as host names) and its aliases', () => {
    const plan = toInfraCreatePlan(group({ network: { mode: 'private', aliases: ['www'] } }), identity, 'pause');
    assert.equal(plan.body.HostConfig?.NetworkMode, 'berth-web-1.agent.net');
    assert.deepEqual(plan.body.NetworkingConfig?.EndpointsConfig?.['berth-web-1.agent.net']?.Aliases, ['api', 'www']);
  });

  test('a group with no network gets loopback only; host name, DNS and hosts entries are the group\'s', () => {
    const plan = toInfraCreatePlan(group({ network: { mode: 'none', hostname: 'box', dns: ['10.0.0.2'], dnsSearch: ['corp'], extraHosts: ['db:10.0.0.3'] } }), identity, 'pause');
    assert.equal(plan.body.HostConfig?.NetworkMode, 'none');
    assert.equal(plan.body.Hostname, 'box');
    assert.deepEqual([plan.body.HostConfig?.Dns, plan.body.HostConfig?.DnsSearch, plan.body.HostConfig?.ExtraHosts], [['10.0.0.2'], ['corp'], ['db:10.0.0.3']]);
    assert.equal(plan.body.HostConfig?.PortBindings, undefined);
  });

  test('named networks: the first at create, the others connected before the start', () => {
    const spec = resolveGroupSpec({ name: 'web', tasks: [{ name: 'api', image: 'busybox' }], network: { networks: [{ name: 'front', aliases: ['web'] }, { name: 'back' }] } }, { allowPrivileged: false, allowedNetworks: ['front', 'back'] });
    const plan = toInfraCreatePlan(spec, identity, 'pause');
    assert.equal(plan.body.HostConfig?.NetworkMode, 'front');
    assert.deepEqual(plan.connectNetworks.map((n) => n.name), ['back']);
  });
});

describe('elfExecutable', () => {
  const code = Buffer.from([0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7]);
  const file = elfExecutable(code);

  test('is a 64-bit little-endian x86-64 executable whose entry is the code, right after the headers', () => {
    assert.equal(file.length, 64 + 56 + code.length);
    assert.equal(file.length, 129, 'the built-in pause program is 129 bytes');
    assert.deepEqual([...file.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
    assert.equal(file[4], 2, 'ELFCLASS64');
    assert.equal(file[5], 1, 'little-endian');
    assert.equal(file.readUInt16LE(16), 2, 'ET_EXEC');
    assert.equal(file.readUInt16LE(18), 0x3e, 'EM_X86_64');
    assert.equal(file.readBigUInt64LE(24), 0x400000n + 120n, 'e_entry');
    assert.equal(file.readBigUInt64LE(32), 64n, 'program headers right after the ELF header');
    assert.equal(file.readUInt16LE(52), 64);
    assert.equal(file.readUInt16LE(54), 56);
    assert.equal(file.readUInt16LE(56), 1, 'one program header');
    assert.deepEqual(file.subarray(120), code);
  });

  test('maps the whole file as one loadable read-and-execute segment at the load address', () => {
    assert.equal(file.readUInt32LE(64), 1, 'PT_LOAD');
    assert.equal(file.readUInt32LE(68), 5, 'PF_R | PF_X');
    assert.equal(file.readBigUInt64LE(72), 0n, 'p_offset');
    assert.equal(file.readBigUInt64LE(80), 0x400000n, 'p_vaddr');
    assert.equal(file.readBigUInt64LE(96), 129n, 'p_filesz');
    assert.equal(file.readBigUInt64LE(104), 129n, 'p_memsz');
  });

  test('the built-in image is named by the program\'s digest', () => {
    assert.match(BUILTIN_INFRA_IMAGE, /^berth-infra:[0-9a-f]{12}$/);
  });
});

describe('groupDemand', () => {
  const spec = (tasks: Array<Record<string, unknown>>) => resolveGroupSpec({ name: 'g', tasks });
  const defaults = { memoryBytes: 64 * MiB, cpuMilli: 100 };

  test('sums the main tasks and sidecars, which run together', () => {
    const demand = groupDemand(spec([{ name: 'a', image: 'x', resources: { memory: '128m', cpuMilli: 500 } }, { name: 'b', image: 'x', lifecycle: 'sidecar', resources: { memory: '32m', cpuMilli: 100 } }]), defaults);
    assert.deepEqual(demand, { memoryBytes: 160 * MiB, cpuMilli: 600 });
  });

  test('takes the larger of the prestart phase and the running phase, per resource', () => {
    const demand = groupDemand(
      spec([
        { name: 'p1', image: 'x', lifecycle: 'prestart', resources: { memory: '512m', cpuMilli: 100 } },
        { name: 'p2', image: 'x', lifecycle: 'prestart', resources: { memory: '256m', cpuMilli: 100 } },
        { name: 'm', image: 'x', resources: { memory: '128m', cpuMilli: 1000 } },
      ]),
      defaults,
    );
    assert.deepEqual(demand, { memoryBytes: 768 * MiB, cpuMilli: 1000 });
  });

  test('a task without a limit counts with the defaults', () => {
    assert.deepEqual(groupDemand(spec([{ name: 'a', image: 'x' }, { name: 'b', image: 'x', resources: { cpuMilli: 250 } }]), defaults), { memoryBytes: 128 * MiB, cpuMilli: 350 });
  });
});

describe('group state transitions', () => {
  test('moves forward only: starting, running, stopping, exited, removed', () => {
    assert.equal(isLegalGroupTransition('starting', 'running'), true);
    assert.equal(isLegalGroupTransition('starting', 'exited'), true);
    assert.equal(isLegalGroupTransition('running', 'stopping'), true);
    assert.equal(isLegalGroupTransition('exited', 'removed'), true);
    assert.equal(isLegalGroupTransition('running', 'starting'), false);
    assert.equal(isLegalGroupTransition('stopping', 'running'), false);
    assert.equal(isLegalGroupTransition('starting', 'removed'), false);
    assert.equal(refusedGroupTransition('g', 'removed', 'running')?.code, 'BERTH_INTERNAL');
    assert.equal(refusedGroupTransition('g', 'running', 'running'), undefined);
  });
});

describe('ensureBuiltinInfraImage', () => {
  const notFound = () => new BerthError('BERTH_ENGINE_NOT_FOUND', 'no such image');
  function fakeEngine(options: { present: boolean; arch?: string }) {
    const imports: Array<{ ref: { repo: string; tag: string }; changes: readonly string[]; bytes: number }> = [];
    const engine = {
      inspectImage: async () => {
        if (!options.present) throw notFound();
        return {} as never;
      },
      version: async () => ({ arch: options.arch }) as never,
      importImage: async (tar: NodeJS.ReadableStream, ref: { repo: string; tag: string }, changes: readonly string[]) => {
        let bytes = 0;
        for await (const chunk of tar) bytes += (chunk as Buffer).length;
        imports.push({ ref, changes, bytes });
      },
    };
    return { engine: engine as unknown as Parameters<typeof ensureBuiltinInfraImage>[0], imports };
  }

  test('imports nothing when the image is present', async () => {
    const { engine, imports } = fakeEngine({ present: true });
    assert.equal(await ensureBuiltinInfraImage(engine), BUILTIN_INFRA_IMAGE);
    assert.deepEqual(imports, []);
  });

  test('imports the pause program as the image, with its command and berth\'s labels, when it is missing', async () => {
    const { engine, imports } = fakeEngine({ present: false, arch: 'amd64' });
    assert.equal(await ensureBuiltinInfraImage(engine), BUILTIN_INFRA_IMAGE);
    assert.equal(imports.length, 1);
    assert.deepEqual(imports[0]!.ref, { repo: 'berth-infra', tag: BUILTIN_INFRA_IMAGE.split(':')[1] });
    assert.ok(imports[0]!.changes.includes('CMD ["/pause"]'));
    assert.ok(imports[0]!.changes.some((c) => c.includes('io.berth.role=infra')));
    assert.equal(imports[0]!.bytes, infraRootfs().length);
  });

  test('refuses an engine of another architecture with BERTH_GROUP_INFRA, naming the setting to use', async () => {
    const { engine, imports } = fakeEngine({ present: false, arch: 'arm64' });
    await assert.rejects(ensureBuiltinInfraImage(engine), (error: unknown) => isBerthError(error, 'BERTH_GROUP_INFRA') && /infraImage/.test(error.message));
    assert.deepEqual(imports, []);
  });
});
