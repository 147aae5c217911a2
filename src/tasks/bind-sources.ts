import { realpathSync, statSync, type BigIntStats } from 'node:fs';
import { posix } from 'node:path';
import { ValidationError, type FieldIssue } from '../common/errors.js';
import type { MountSpec, ResolvedTaskSpec, SpecPolicy } from '../spec/schema.js';

/**
 * What is checked against the host just before a create: the bind parts of SpecPolicy, and the
 * seccomp profiles a spec may name (their files are read then).
 */
export type BindSourcePolicy = Pick<SpecPolicy, 'allowedBindSources' | 'allowEngineSocket' | 'allowedSeccompProfiles'>;

/** The engine's default socket: refused whatever socket the engine was actually reached through. */
export const DEFAULT_ENGINE_SOCKET = '/var/run/docker.sock';

/** A bind source as the host resolved it when it was checked. */
export interface ResolvedBindSource {
  /** Index in the spec's `mounts`. */
  readonly index: number;
  /** The source as the spec wrote it. */
  readonly source: string;
  /** Its real path: every component resolved, no symlink, `.` or `..` left. This is what the engine is given. */
  readonly resolvedPath: string;
  /** Device and inode of what it resolved to, so that a later check can tell whether a component was swapped. */
  readonly dev: bigint;
  readonly ino: bigint;
}

interface FileIdentity {
  readonly dev: bigint;
  readonly ino: bigint;
}

/**
 * A path a bind must not expose: the engine's socket (its directory and every directory above it
 * too), or a protected host path such as the agent's data directory (also anything under it).
 */
export interface SocketGuard {
  /** `engine-socket` may be allowed by a policy that names it; `protected` never is. */
  readonly kind: 'engine-socket' | 'protected';
  readonly socketPath: string;
  readonly resolvedSocket: string;
  /** The socket and each directory above it, by identity: a bind mount or hard link of any of them is caught too. */
  readonly identities: readonly FileIdentity[];
}

function isUnder(resolvedPath: string, resolvedRoot: string): boolean {
  const base = resolvedRoot === '/' ? '' : resolvedRoot;
  return resolvedPath === resolvedRoot || resolvedPath.startsWith(`${base}/`);
}

function identityOf(hostPath: string): FileIdentity | undefined {
  try {
    const stats: BigIntStats = statSync(hostPath, { bigint: true });
    return { dev: stats.dev, ino: stats.ino };
  } catch {
    return undefined;
  }
}

function sameFile(a: FileIdentity, b: FileIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/** The real path of a host path, or why it has none. */
function realPath(hostPath: string): { path: string } | { errorCode: string } {
  try {
    // The kernel's realpath(3): every component, symlinks included, as the engine's mount will walk it.
    return { path: realpathSync.native(hostPath) };
  } catch (error) {
    return { errorCode: (error as NodeJS.ErrnoException).code ?? 'EUNKNOWN' };
  }
}

/** Resolves a socket path as far as the host allows: a missing socket still guards its (resolved) directory. */
function guardFor(socketPath: string, kind: SocketGuard['kind'] = 'engine-socket'): SocketGuard {
  const absolute = posix.resolve(socketPath);
  const whole = realPath(absolute);
  let resolvedSocket: string;
  if ('path' in whole) {
    resolvedSocket = whole.path;
  } else {
    const directory = realPath(posix.dirname(absolute));
    resolvedSocket = 'path' in directory ? posix.join(directory.path, posix.basename(absolute)) : absolute;
  }
  const identities: FileIdentity[] = [];
  for (let p = resolvedSocket; ; p = posix.dirname(p)) {
    const identity = identityOf(p);
    if (identity) identities.push(identity);
    if (p === '/') break;
  }
  return { kind, socketPath, resolvedSocket, identities };
}

/**
 * The engine sockets a bind must not expose: the one the engine was reached through (when known)
 * and always the default one, since a host usually has it whichever socket berth uses.
 */
export function engineSocketGuards(engineSocketPath: string | undefined, protectedPaths: readonly string[] = []): readonly SocketGuard[] {
  const paths = [...new Set([DEFAULT_ENGINE_SOCKET, ...(engineSocketPath === undefined ? [] : [engineSocketPath])])];
  return [...paths.map((socket) => guardFor(socket)), ...protectedPaths.map((hostPath) => guardFor(hostPath, 'protected'))];
}

function describe(source: string, resolvedPath: string): string {
  return resolvedPath === posix.normalize(source) ? `host path ${source}` : `host path ${source} (resolved: ${resolvedPath})`;
}

/**
 * Resolves every bind source of a spec on the host and checks the result: it must exist, lie under
 * an allowed root (each root resolved as well) and not expose the engine's socket unless the
 * policy says so. Throws a ValidationError naming each `mounts[i].source` at fault; nothing is
 * touched. Called when a task is submitted and again just before its container is created.
 *
 * Resolution happens on this host, which must be the engine's host (a unix socket): with an engine
 * on another machine (tcp), the paths checked here are not the paths the engine mounts.
 */
export function resolveBindSources(
  mounts: readonly MountSpec[],
  policy: BindSourcePolicy,
  guards: readonly SocketGuard[],
): readonly ResolvedBindSource[] {
  const issues: FieldIssue[] = [];
  const resolved: ResolvedBindSource[] = [];
  let allowedRoots: readonly string[] | undefined;
  const rootsResolved = (): readonly string[] => {
    // A root that does not exist (or cannot be resolved) allows nothing.
    allowedRoots ??= (policy.allowedBindSources ?? []).flatMap((root) => {
      const real = realPath(root);
      return 'path' in real ? [real.path] : [];
    });
    return allowedRoots;
  };

  mounts.forEach((mount, index) => {
    if (mount.type !== 'bind') return;
    const field = `mounts[${index}].source`;
    const source = mount.source;
    const real = realPath(source);
    if (!('path' in real)) {
      issues.push({
        field,
        rule:
          real.errorCode === 'ENOENT' || real.errorCode === 'ENOTDIR'
            ? `host path ${source} does not exist (or is a symlink to nothing); bind sources must exist, berth does not create host paths`
            : `host path ${source} cannot be resolved on the host (${real.errorCode}); bind sources must be paths this process can resolve`,
      });
      return;
    }
    const resolvedPath = real.path;
    const identity = identityOf(resolvedPath);
    if (!identity) {
      issues.push({ field, rule: `host path ${source} could not be examined on the host after resolving to ${resolvedPath}` });
      return;
    }
    if (policy.allowedBindSources !== undefined && !rootsResolved().some((root) => isUnder(resolvedPath, root))) {
      issues.push({ field, rule: `${describe(source, resolvedPath)} is not in the bind-mount allow-list (sources are checked after resolving symlinks)` });
      return;
    }
    const namedExplicitly = policy.allowEngineSocket === true || rootsResolved().includes(resolvedPath);
    const exposes = (guard: SocketGuard): boolean => isUnder(guard.resolvedSocket, resolvedPath) || guard.identities.some((id) => sameFile(id, identity));
    const shielded = guards.find((guard) => guard.kind === 'protected' && (exposes(guard) || isUnder(resolvedPath, guard.resolvedSocket)));
    if (shielded) {
      issues.push({ field, rule: `${describe(source, resolvedPath)} exposes ${shielded.socketPath}, which berth protects (the agent's own state: its token and socket); no policy allows it` });
      return;
    }
    const exposed = namedExplicitly ? undefined : guards.find((guard) => guard.kind === 'engine-socket' && exposes(guard));
    if (exposed) {
      issues.push({
        field,
        rule: `${describe(source, resolvedPath)} exposes the engine's socket ${exposed.socketPath}; it is refused unless the policy names it (allowEngineSocket, or this exact path in allowedBindSources)`,
      });
      return;
    }
    resolved.push({ index, source, resolvedPath, dev: identity.dev, ino: identity.ino });
  });
  if (issues.length > 0) throw new ValidationError(issues);
  return resolved;
}

/**
 * Checks that each resolved source still is what it was: its real path unchanged and the same file.
 * Called after create, just before start, since the engine mounts at start: a component swapped
 * for a symlink in between is refused rather than followed.
 */
export function confirmBindSources(binds: readonly ResolvedBindSource[]): void {
  const issues: FieldIssue[] = [];
  for (const bind of binds) {
    const real = realPath(bind.resolvedPath);
    const identity = 'path' in real ? identityOf(real.path) : undefined;
    if (!('path' in real) || real.path !== bind.resolvedPath || !identity || identity.dev !== bind.dev || identity.ino !== bind.ino) {
      issues.push({ field: `mounts[${bind.index}].source`, rule: `host path ${bind.source} changed on the host while the task was being created (it resolved to ${bind.resolvedPath}); refused` });
    }
  }
  if (issues.length > 0) throw new ValidationError(issues);
}

/** The spec with each bind source replaced by its resolved path, so that the engine does not walk a symlink again. */
export function withResolvedSources(spec: ResolvedTaskSpec, binds: readonly ResolvedBindSource[]): ResolvedTaskSpec {
  if (binds.length === 0) return spec;
  const byIndex = new Map(binds.map((bind) => [bind.index, bind.resolvedPath]));
  return Object.freeze({
    ...spec,
    mounts: Object.freeze(spec.mounts.map((mount, index) => (mount.type === 'bind' ? Object.freeze({ ...mount, source: byIndex.get(index) ?? mount.source }) : mount))),
  });
}
