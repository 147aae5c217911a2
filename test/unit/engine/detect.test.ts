import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { CONTAINER_CGROUP_DIRS, describeEngine, engineFactsFromRaw, engineKindOf, engineLimitation, engineLogDriver, engineStatusFilter, engineUnsupported, familiarImageName, matchesLabelFilters, podmanImageRemoval, type RawInfoBody, type RawVersionBody } from '../../../src/engine/detect.js';

/** A reply recorded from a real engine (test/fixtures/engines/, see its README). */
function recorded<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(`../../fixtures/engines/${name}.json`, import.meta.url), 'utf8')) as T;
}

const docker = { version: recorded<RawVersionBody>('docker-20.10-version'), info: recorded<RawInfoBody>('docker-20.10-info') };
const podman = { version: recorded<RawVersionBody>('podman-4.3-version'), info: recorded<RawInfoBody>('podman-4.3-info') };

describe('engine detection from recorded /version and /info replies', () => {
  it('knows Docker 20.10 by the absence of a Podman component, with its versions, cgroup, storage and security facts', () => {
    const facts = engineFactsFromRaw(docker.version, docker.info);
    assert.deepEqual(facts, {
      kind: 'docker',
      name: 'Docker',
      version: '20.10.24+dfsg1',
      apiVersion: '1.41',
      os: 'linux',
      arch: 'amd64',
      cgroupVersion: 1,
      cgroupDriver: 'cgroupfs',
      storageDriver: { driver: 'overlay2', backingFilesystem: 'extfs', supportsSizeQuota: false },
      securityOptions: ['seccomp'],
      rootless: false,
      logDrivers: ['awslogs', 'fluentd', 'gcplogs', 'gelf', 'journald', 'json-file', 'local', 'logentries', 'splunk', 'syslog'],
    });
  });

  it('knows Podman 4.3 by its "Podman Engine" component, and takes Podman\'s own version with the Docker API version it speaks', () => {
    const facts = engineFactsFromRaw(podman.version, podman.info);
    assert.equal(facts.kind, 'podman');
    assert.equal(facts.name, 'Podman');
    assert.equal(facts.version, '4.3.1');
    assert.equal(facts.apiVersion, '1.41');
    assert.equal(facts.cgroupVersion, 1);
    assert.equal(facts.cgroupDriver, 'cgroupfs');
    assert.deepEqual(facts.storageDriver, { driver: 'overlay', backingFilesystem: 'extfs', supportsSizeQuota: false });
    assert.deepEqual(facts.securityOptions, ['seccomp']);
    assert.equal(facts.rootless, false);
    assert.deepEqual(facts.logDrivers, ['k8s-file', 'none', 'passthrough', 'journald']);
    assert.equal(describeEngine(facts), 'Podman 4.3.1 (API 1.41, cgroup v1, overlay)');
  });

  it('reads cgroup v2, rootless and several security options as a rootless engine reports them', () => {
    const facts = engineFactsFromRaw(
      { Version: '27.1.0', ApiVersion: '1.46', Os: 'linux', Arch: 'arm64', Components: [{ Name: 'Engine', Version: '27.1.0' }] },
      { Driver: 'overlay2', CgroupVersion: '2', CgroupDriver: 'systemd', SecurityOptions: ['name=seccomp,profile=builtin', 'name=rootless', 'name=cgroupns', 'apparmor'], Plugins: { Log: null } },
    );
    assert.equal(facts.kind, 'docker');
    assert.equal(facts.cgroupVersion, 2);
    assert.deepEqual(facts.securityOptions, ['seccomp', 'rootless', 'cgroupns', 'apparmor']);
    assert.equal(facts.rootless, true);
    assert.deepEqual(facts.logDrivers, []);
    assert.equal(describeEngine(facts), 'Docker 27.1.0 (API 1.46, cgroup v2, overlay2, rootless)');
  });

  it('takes an engine that gives no components (older Docker) for Docker, and leaves unknown cgroup facts unset', () => {
    assert.equal(engineKindOf({ Version: '19.03.0', ApiVersion: '1.40' }), 'docker');
    const facts = engineFactsFromRaw({ Version: '19.03.0', ApiVersion: '1.40', Components: null }, {});
    assert.equal(facts.cgroupVersion, undefined);
    assert.equal(facts.cgroupDriver, undefined);
    assert.deepEqual(facts.securityOptions, []);
  });
});

describe('per-engine adaptations', () => {
  it('maps the local log driver to json-file on Podman (which has no local driver) and leaves Docker\'s and the other drivers alone', () => {
    assert.equal(engineLogDriver('podman', 'local'), 'json-file');
    assert.equal(engineLogDriver('podman', 'json-file'), 'json-file');
    assert.equal(engineLogDriver('podman', 'none'), 'none');
    assert.equal(engineLogDriver('docker', 'local'), 'local');
    // The mapped driver is one the recorded Podman accepts: json-file is its alias of k8s-file.
    assert.ok(!podman.info.Plugins?.Log?.includes('local'));
  });

  it('drops the states Podman never has (dead, restarting) from a status filter, which Podman refuses, and keeps Docker\'s filter whole', () => {
    assert.deepEqual(engineStatusFilter('podman', ['created', 'exited', 'dead']), ['created', 'exited']);
    assert.deepEqual(engineStatusFilter('podman', ['dead']), []);
    assert.deepEqual(engineStatusFilter('docker', ['created', 'exited', 'dead']), ['created', 'exited', 'dead']);
  });

  it('checks label filters as Docker does, all of them (Podman ORs a volume\'s, network\'s or image\'s)', () => {
    const labels = { 'io.berth.managed': 'true', 'io.berth.owner': 'a', empty: '' };
    assert.equal(matchesLabelFilters(labels, []), true);
    assert.equal(matchesLabelFilters(labels, ['io.berth.managed', 'io.berth.owner=a']), true);
    assert.equal(matchesLabelFilters(labels, ['io.berth.managed', 'io.berth.owner=b']), false);
    assert.equal(matchesLabelFilters(labels, ['io.berth.role']), false);
    assert.equal(matchesLabelFilters(labels, ['empty=']), true);
    assert.equal(matchesLabelFilters(labels, ['io.berth.owner!=b']), true);
    assert.equal(matchesLabelFilters(labels, ['io.berth.owner!=a']), false);
  });

  it('gives Podman\'s image names (docker.io/library/busybox:1) in Docker\'s familiar form, and leaves other registries\' alone', () => {
    assert.equal(familiarImageName('docker.io/library/busybox:1'), 'busybox:1');
    assert.equal(familiarImageName('docker.io/me/app:1'), 'me/app:1');
    assert.equal(familiarImageName('localhost/berth-test/busybox:latest'), 'localhost/berth-test/busybox:latest');
    assert.equal(familiarImageName('127.0.0.1:5000/busybox:1'), '127.0.0.1:5000/busybox:1');
  });

  it('reads Podman\'s image removal as Docker reports one: familiar names untagged, sha256: ids deleted', () => {
    const id = 'b'.repeat(64);
    assert.deepEqual(podmanImageRemoval({ kind: 'removed', untagged: ['docker.io/me/app:1'], deleted: [id] }), { kind: 'removed', untagged: ['me/app:1'], deleted: [`sha256:${id}`] });
  });

  it('finds a container\'s cgroup under Docker\'s and Podman\'s own directories, for both cgroup drivers', () => {
    const id = 'a'.repeat(64);
    assert.deepEqual(CONTAINER_CGROUP_DIRS.docker.map((dir) => dir(id)), [`docker/${id}`, `system.slice/docker-${id}.scope`]);
    assert.deepEqual(CONTAINER_CGROUP_DIRS.podman.map((dir) => dir(id)), [`libpod_parent/libpod-${id}`, `machine.slice/libpod-${id}.scope`]);
  });

  it('refuses pause on rootless Podman with cgroup v1 only, with BERTH_ENGINE_UNSUPPORTED naming the engine, its version and the feature', () => {
    const rootful = engineFactsFromRaw(podman.version, podman.info);
    assert.equal(engineLimitation(rootful, 'pause'), undefined, 'the recorded (rootful) Podman pauses');
    assert.equal(engineLimitation(engineFactsFromRaw(docker.version, docker.info), 'pause'), undefined);
    const rootless = engineFactsFromRaw(podman.version, { ...podman.info, SecurityOptions: ['name=seccomp,profile=default', 'name=rootless'] });
    assert.equal(engineLimitation({ ...rootless, cgroupVersion: 2 }, 'pause'), undefined, 'cgroup v2 delegates the freezer');
    const why = engineLimitation(rootless, 'pause');
    assert.match(why ?? '', /rootless Podman cannot freeze a container on cgroup v1/);
    const error = engineUnsupported(rootless, 'pause', why);
    assert.ok(error instanceof BerthError);
    assert.equal(error.code, 'BERTH_ENGINE_UNSUPPORTED');
    assert.equal(error.message, `pausing a container is not supported by Podman 4.3.1: ${why}`);
    assert.deepEqual(error.context, { engine: 'Podman', engineVersion: '4.3.1', feature: 'pause' });
    assert.equal(error.retryable, false);
  });
});
