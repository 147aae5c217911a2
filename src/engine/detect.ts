/**
 * Which engine berth speaks to, learnt at connect from GET /version and GET /info, and the pure
 * rules that adapt berth to it. Docker and Podman (through its Docker-compatible API) answer the
 * same endpoints with the same shapes but differ in what they hold: Podman names itself in
 * /version's Components ("Podman Engine"), knows no `local` log driver, and keeps its containers'
 * cgroups under `libpod_parent/libpod-<id>` (cgroupfs) or `machine.slice/libpod-<id>.scope`
 * (systemd) instead of Docker's `docker/<id>` or `system.slice/docker-<id>.scope`.
 */
import { BerthError } from '../common/errors.js';
import { storageDriverFromRaw } from './decode.js';
import type { StorageDriverInfo } from './types.js';

/** The engines berth knows apart. Anything that is not Podman is taken for Docker (Docker's API is the contract). */
export type EngineKind = 'docker' | 'podman';

/** The engine's name as people write it, for messages. */
export const ENGINE_NAMES: Readonly<Record<EngineKind, string>> = Object.freeze({ docker: 'Docker', podman: 'Podman' });

/** What berth learnt about its engine at connect. */
export interface EngineFacts {
  kind: EngineKind;
  /** `Docker` or `Podman`, for messages. */
  name: string;
  /** The engine's own version (`20.10.24+dfsg1`, Podman's `4.3.1`). */
  version: string;
  /** The Docker API version it speaks (`1.41`; Podman's compatible API too). */
  apiVersion: string;
  os: string;
  arch: string;
  /** 1 or 2; undefined when the engine does not say. */
  cgroupVersion?: 1 | 2;
  /** `cgroupfs` or `systemd`, when the engine says. */
  cgroupDriver?: string;
  storageDriver: StorageDriverInfo;
  /** The security options' names: `seccomp`, `apparmor`, `selinux`, `rootless`, `userns`, `cgroupns`. */
  securityOptions: string[];
  /** Whether the engine runs without root (a `rootless` security option). */
  rootless: boolean;
  /** The log drivers the engine lists as plugins (Podman also accepts `json-file`, which it does not list). */
  logDrivers: string[];
}

/** The parts of GET /version's body read here. */
export interface RawVersionBody {
  Version?: string;
  ApiVersion?: string;
  Os?: string;
  Arch?: string;
  Components?: Array<{ Name?: string; Version?: string }> | null;
}

/** The parts of GET /info's body read here. */
export interface RawInfoBody {
  Driver?: string;
  DriverStatus?: Array<[string, string]> | null;
  CgroupVersion?: string;
  CgroupDriver?: string;
  SecurityOptions?: string[] | null;
  Plugins?: { Log?: string[] | null } | null;
}

/** Podman's compatible API names its own engine among /version's components. */
export function engineKindOf(version: RawVersionBody): EngineKind {
  return (version.Components ?? []).some((component) => component.Name === 'Podman Engine') ? 'podman' : 'docker';
}

/** `name=seccomp,profile=default` → `seccomp`; a bare `apparmor` (old engines) stays. */
function securityOptionName(option: string): string {
  const named = /(?:^|,)name=([^,]+)/.exec(option);
  return named?.[1] ?? option;
}

/** The facts of an engine from its /version and /info answers. */
export function engineFactsFromRaw(version: RawVersionBody, info: RawInfoBody): EngineFacts {
  const kind = engineKindOf(version);
  const podman = (version.Components ?? []).find((component) => component.Name === 'Podman Engine');
  const securityOptions = (info.SecurityOptions ?? []).map(securityOptionName);
  const cgroupVersion = info.CgroupVersion === '2' ? 2 : info.CgroupVersion === '1' ? 1 : undefined;
  return {
    kind,
    name: ENGINE_NAMES[kind],
    version: podman?.Version ?? version.Version ?? '',
    apiVersion: version.ApiVersion ?? '',
    os: version.Os ?? '',
    arch: version.Arch ?? '',
    ...(cgroupVersion === undefined ? {} : { cgroupVersion }),
    ...(info.CgroupDriver ? { cgroupDriver: info.CgroupDriver } : {}),
    storageDriver: storageDriverFromRaw(info),
    securityOptions,
    rootless: securityOptions.includes('rootless'),
    logDrivers: [...(info.Plugins?.Log ?? [])],
  };
}

/** The log drivers a task spec may name. */
export type SpecLogDriver = 'local' | 'json-file' | 'none';

/**
 * The log driver to ask the engine for. Podman has no `local` driver ("invalid log driver"); its
 * `json-file` (a file of its own k8s-file format, rotated at `max-size` as Docker's) keeps what a
 * task's `local` promised berth: a bounded copy of the output that the logs endpoint reads back. So
 * a spec's `local` (the default) is mapped to `json-file` on Podman rather than refused: a spec
 * runs the same on both engines.
 */
export function engineLogDriver(kind: EngineKind, driver: SpecLogDriver): SpecLogDriver {
  return kind === 'podman' && driver === 'local' ? 'json-file' : driver;
}

/** The container states of Docker's API that Podman has no counterpart of; its list refuses them in a status filter ("unknown container state"). */
const PODMAN_UNKNOWN_STATES: ReadonlySet<string> = new Set(['dead', 'restarting']);

/**
 * A container list's status filter as the engine takes it: on Podman, without the states it never
 * has (and refuses to filter by); an empty result means no container can match.
 */
export function engineStatusFilter<T extends string>(kind: EngineKind, statuses: readonly T[]): T[] {
  return kind === 'podman' ? statuses.filter((status) => !PODMAN_UNKNOWN_STATES.has(status)) : [...statuses];
}

/**
 * Whether `labels` pass every label filter, as Docker reads them (`key`, `key=value`, `key!=value`;
 * all must hold). Podman 4.3's compatible API ORs several label filters of a volume, network or
 * image list (a volume with any one of the labels passes): on Podman the rows are checked again here.
 */
export function matchesLabelFilters(labels: Readonly<Record<string, string>>, filters: readonly string[]): boolean {
  return filters.every((filter) => {
    const negated = /^([^=!]+)!=(.*)$/.exec(filter);
    if (negated) return labels[negated[1]!] !== negated[2];
    const separator = filter.indexOf('=');
    if (separator < 0) return Object.hasOwn(labels, filter);
    const key = filter.slice(0, separator);
    return Object.hasOwn(labels, key) && labels[key] === filter.slice(separator + 1);
  });
}

/**
 * An image name as Docker spells it: Podman's compatible API names images with their registry
 * (`docker.io/library/busybox:1`, `docker.io/me/app:1`), where Docker gives the familiar form
 * (`busybox:1`, `me/app:1`); berth compares names, so Podman's are made familiar. Names of other
 * registries (`localhost/…`, `127.0.0.1:5000/…`) are the same on both.
 */
export function familiarImageName(name: string): string {
  if (name.startsWith('docker.io/library/')) return name.slice('docker.io/library/'.length);
  if (name.startsWith('docker.io/')) return name.slice('docker.io/'.length);
  return name;
}

/**
 * An image removal as Docker reports it: Podman names the untagged in full (`docker.io/me/app:1`)
 * and the deleted ids without their `sha256:` prefix.
 */
export function podmanImageRemoval(outcome: { kind: 'removed'; untagged: string[]; deleted: string[] }): { kind: 'removed'; untagged: string[]; deleted: string[] } {
  return {
    kind: 'removed',
    untagged: outcome.untagged.map(familiarImageName),
    deleted: outcome.deleted.map((id) => (/^[0-9a-f]{64}$/.test(id) ? `sha256:${id}` : id)),
  };
}

/**
 * Whether the engine leaves a container's health checks to its caller. Podman runs them from
 * systemd timers; where Podman manages cgroups itself (`cgroupfs`, as it does when systemd is not
 * the init), there is no systemd to ask, no check ever runs, and a container's health stays
 * `starting` for ever. berth then runs them itself (Engine's health pump). Docker runs its own.
 */
export function podmanLeavesHealthToCaller(facts: Pick<EngineFacts, 'kind' | 'cgroupDriver'>): boolean {
  return facts.kind === 'podman' && facts.cgroupDriver === 'cgroupfs';
}

/** Podman's (and Docker's) interval of a health check that sets none: 30 s. */
export const PODMAN_DEFAULT_HEALTH_INTERVAL_MS = 30_000;

/**
 * Where a container's cgroup lives under a hierarchy (v2) or a controller's directory (v1), for
 * each engine and cgroup driver: Docker's `docker/<id>` (cgroupfs) and `system.slice/docker-<id>.scope`
 * (systemd); Podman's `libpod_parent/libpod-<id>` (cgroupfs) and `machine.slice/libpod-<id>.scope` (systemd).
 */
export const CONTAINER_CGROUP_DIRS: Readonly<Record<EngineKind, ReadonlyArray<(id: string) => string>>> = Object.freeze({
  docker: [(id: string) => `docker/${id}`, (id: string) => `system.slice/docker-${id}.scope`],
  podman: [(id: string) => `libpod_parent/libpod-${id}`, (id: string) => `machine.slice/libpod-${id}.scope`],
});

/** Features that one engine (or one set-up of it) lacks; `engineUnsupported` names the engine and the feature. */
export type EngineFeature = 'pause';

/**
 * Why the engine cannot provide `feature`, in words, or undefined when it can. Rootless Podman on
 * cgroup v1 cannot freeze a container (its freezer needs a cgroup it may write, which only cgroup v2
 * delegates): pause and unpause fail there with the runtime's words, so berth refuses them first.
 */
export function engineLimitation(facts: Pick<EngineFacts, 'kind' | 'rootless' | 'cgroupVersion'>, feature: EngineFeature): string | undefined {
  if (feature === 'pause' && facts.kind === 'podman' && facts.rootless && facts.cgroupVersion === 1) {
    return 'rootless Podman cannot freeze a container on cgroup v1; run Podman as root, or on a host with cgroup v2';
  }
  return undefined;
}

/** The words a feature has in messages. */
const FEATURE_WORDS: Readonly<Record<EngineFeature, string>> = Object.freeze({ pause: 'pausing a container' });

/** The error for a feature the engine cannot provide: names the engine and the feature, never the engine's raw message. */
export function engineUnsupported(facts: Pick<EngineFacts, 'name' | 'version'>, feature: EngineFeature, hint?: string): BerthError {
  return new BerthError(
    'BERTH_ENGINE_UNSUPPORTED',
    `${FEATURE_WORDS[feature]} is not supported by ${facts.name} ${facts.version}${hint ? `: ${hint}` : ''}`,
    { context: { engine: facts.name, engineVersion: facts.version, feature } },
  );
}

/** One line about the engine, for logs and `berth context ls`: `Podman 4.3.1 (API 1.41, cgroup v1, overlay)`. */
export function describeEngine(facts: EngineFacts): string {
  const parts = [`API ${facts.apiVersion}`];
  if (facts.cgroupVersion !== undefined) parts.push(`cgroup v${facts.cgroupVersion}`);
  if (facts.storageDriver.driver) parts.push(facts.storageDriver.driver);
  if (facts.rootless) parts.push('rootless');
  return `${facts.name} ${facts.version} (${parts.join(', ')})`;
}
