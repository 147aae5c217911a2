import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadAgentConfig, type HostFacts } from '../../../src/agent/config.js';
import { withSandboxPreset } from '../../../src/agent/sandbox-preset.js';
import { ValidationError } from '../../../src/common/errors.js';
import { resolveTaskSpec } from '../../../src/spec/schema.js';

const MiB = 1024 * 1024;
const host: HostFacts = { uid: 1000, homedir: '/home/ada', totalMemoryBytes: 8 * 1024 * MiB, cpuCount: 4 };
const dir = mkdtempSync(path.join(tmpdir(), 'berth-sandbox-config-'));
const load = (yaml: string) => {
  const file = path.join(dir, `${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, yaml);
  return loadAgentConfig({ file, host });
};

describe('the agent\'s sandbox policy and preset keys', () => {
  it('reads seccomp profiles as a mapping of name to file', () => {
    const config = load('policy:\n  allowedSeccompProfiles:\n    strict: /etc/berth/strict.json\n  allowedSysctls: ["net.ipv4.*"]\ndefaults:\n  sandbox: true\n');
    assert.deepEqual(config.policy.allowedSeccompProfiles, { strict: '/etc/berth/strict.json' });
    assert.deepEqual(config.policy.allowedSysctls, ['net.ipv4.*']);
    assert.deepEqual(config.defaults.sandbox, { tmpSizeBytes: 64 * MiB, capabilities: [] });
  });

  it('refuses preset capabilities outside policy.allowedCapabilities', () => {
    assert.throws(
      () => load('policy:\n  allowedCapabilities: [CHOWN]\ndefaults:\n  sandbox: true\n  sandboxCapabilities: [CHOWN, NET_RAW]\n'),
      (e: unknown) => e instanceof ValidationError && e.issues[0]!.field === 'defaults.sandboxCapabilities' && /NET_RAW must also be in policy.allowedCapabilities/.test(e.issues[0]!.rule),
    );
    assert.deepEqual(load('policy:\n  allowedCapabilities: [CHOWN]\ndefaults:\n  sandbox: true\n  sandboxCapabilities: [cap_chown]\n').defaults.sandbox?.capabilities, ['CHOWN']);
  });

  it('refuses a profile with a relative path, or named default, naming the key', () => {
    assert.throws(() => load('policy:\n  allowedSeccompProfiles:\n    strict: strict.json\n'), (e: unknown) => e instanceof ValidationError && e.issues.some((i) => i.field === 'policy.allowedSeccompProfiles.strict' && /absolute path/.test(i.rule)));
    assert.throws(() => load('policy:\n  allowedSeccompProfiles:\n    default: /a.json\n'), (e: unknown) => e instanceof ValidationError && e.issues.some((i) => i.field === 'policy.allowedSeccompProfiles.default'));
  });
});

describe('the sandbox preset', () => {
  const preset = { tmpSizeBytes: 64 * MiB };

  it('gives a task that sets nothing the safe floor', () => {
    const resolved = resolveTaskSpec(withSandboxPreset({ image: 'a' }, preset));
    assert.equal(resolved.readOnlyRootfs, true);
    assert.equal(resolved.noNewPrivileges, true);
    assert.equal(resolved.network, 'none');
    assert.deepEqual(resolved.capDrop, ['ALL']);
    assert.deepEqual(resolved.ulimits, [{ name: 'nofile', soft: 1024, hard: 1024 }]);
    assert.deepEqual(resolved.mounts, [{ type: 'tmpfs', target: '/tmp', sizeBytes: 64 * MiB }]);
  });

  it('lets a task override each field it sets, but keeps every capability dropped', () => {
    const spec = withSandboxPreset(
      {
        image: 'a',
        readOnlyRootfs: false,
        noNewPrivileges: false,
        network: 'bridge',
        ulimits: [{ name: 'nofile', soft: 4096 }],
        capDrop: ['NET_RAW'],
        capAdd: ['CHOWN'],
        mounts: [{ type: 'tmpfs', target: '/tmp', size: '128m' }, { type: 'tmpfs', target: '/work' }],
      },
      preset,
    );
    const resolved = resolveTaskSpec(spec);
    assert.equal(resolved.readOnlyRootfs, false);
    assert.equal(resolved.noNewPrivileges, false);
    assert.equal(resolved.network, 'bridge');
    assert.deepEqual(resolved.ulimits, [{ name: 'nofile', soft: 4096, hard: 4096 }]);
    assert.deepEqual(resolved.capDrop, ['NET_RAW', 'ALL']);
    assert.deepEqual(resolved.capAdd, ['CHOWN']);
    assert.deepEqual(resolved.mounts, [{ type: 'tmpfs', target: '/tmp', sizeBytes: 128 * MiB }, { type: 'tmpfs', target: '/work', sizeBytes: undefined }]);
  });

  it('gives back the operator\'s few capabilities to a task that names none', () => {
    assert.deepEqual(resolveTaskSpec(withSandboxPreset({ image: 'a' }, { ...preset, capabilities: ['CHOWN'] })).capAdd, ['CHOWN']);
    assert.deepEqual(resolveTaskSpec(withSandboxPreset({ image: 'a', capAdd: [] }, { ...preset, capabilities: ['CHOWN'] })).capAdd, []);
  });

  it('adds /tmp beside a task\'s own mounts', () => {
    const resolved = resolveTaskSpec(withSandboxPreset({ image: 'a', mounts: [{ type: 'volume', target: '/data' }] }, preset));
    assert.deepEqual(resolved.mounts.map((m) => m.target), ['/data', '/tmp']);
  });
});
