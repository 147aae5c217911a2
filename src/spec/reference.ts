import { ValidationError } from '../common/errors.js';

/**
 * Image references, parsed the way the engine parses them (distribution's reference grammar), so
 * that berth and the engine agree on what `busybox` or `127.0.0.1:5000/app@sha256:…` names.
 */

/** The registry an unqualified reference names. */
export const DOCKER_HUB = 'docker.io';

/** The tag an unqualified reference names, when it has no digest either. */
export const DEFAULT_TAG = 'latest';

export interface ImageReference {
  /** Registry host with its port, if any: `docker.io`, `127.0.0.1:5000`, `localhost`. */
  readonly registry: string;
  /** Path of the repository in the registry: `library/busybox`, `team/app`. */
  readonly repository: string;
  /** `latest` when the reference has neither tag nor digest; undefined for a digest-only reference. */
  readonly tag: string | undefined;
  /** `sha256:<64 hex>`, when the reference pins one. */
  readonly digest: string | undefined;
  /** Fully qualified: `docker.io/library/busybox:latest`. Concurrent pulls are shared by this string. */
  readonly canonical: string;
  /** The repository as the docker CLI shows it: `busybox`, `team/app`, `127.0.0.1:5000/app`. */
  readonly familiarName: string;
  /**
   * The name the engine's image store knows the image by: `busybox:latest`, or `busybox@sha256:…`
   * when a digest is pinned (the digest wins over a tag, as it does in the engine).
   */
  readonly localName: string;
}

// The grammar of github.com/distribution/reference, piece by piece.
const ALPHANUMERIC = '[a-z0-9]+';
const SEPARATOR = '(?:[._]|__|[-]+)';
const PATH_COMPONENT = `${ALPHANUMERIC}(?:${SEPARATOR}${ALPHANUMERIC})*`;
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN_NAME = `${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*`;
const IPV6 = '\\[[a-fA-F0-9:]+\\]';
const DOMAIN = `(?:${DOMAIN_NAME}|${IPV6})(?::[0-9]+)?`;

const DOMAIN_RE = new RegExp(`^${DOMAIN}$`);
const PATH_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
/** The longest tag the grammar allows. */
export const MAX_TAG_LENGTH = 128;
const TAG_RE = new RegExp(`^[\\w][\\w.-]{0,${MAX_TAG_LENGTH - 1}}$`);
const DIGEST_RE = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-f0-9]+)$/;
/** Hex lengths of the digest algorithms the engine verifies. */
const DIGEST_HEX_LENGTH: Readonly<Record<string, number>> = { sha256: 64, sha384: 96, sha512: 128 };
/** The engine's limit on a repository name, registry included. */
export const MAX_NAME_LENGTH = 255;

/** docker.io's other names, which all mean the same registry. */
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

function invalid(field: string, text: string, rule: string): ValidationError {
  return new ValidationError([{ field, rule: `${JSON.stringify(text)} is not a valid image reference: ${rule}` }]);
}

/**
 * Parses an image reference. `busybox` is `docker.io/library/busybox:latest`; `user/repo` is on
 * docker.io; the first component is a registry only when it has a `.` or a `:` or is `localhost`.
 * Throws a ValidationError naming `field` (default `image`) for anything the engine would reject.
 */
export function parseImageReference(text: string, field = 'image'): ImageReference {
  if (typeof text !== 'string' || text === '') throw invalid(field, String(text), 'it is empty');
  if (text !== text.trim() || /\s/.test(text)) throw invalid(field, text, 'it contains whitespace');

  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    const match = DIGEST_RE.exec(digest);
    if (!match) throw invalid(field, text, 'the digest must look like sha256:<hex>');
    const expected = DIGEST_HEX_LENGTH[match[1]!];
    if (expected === undefined) throw invalid(field, text, `unsupported digest algorithm ${match[1]!}`);
    if (match[2]!.length !== expected) throw invalid(field, text, `a ${match[1]!} digest has ${expected} hex digits`);
  }

  // A tag follows the last ':' after the last '/'; a ':' before that belongs to a registry port.
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw invalid(field, text, `a tag is up to ${MAX_TAG_LENGTH} letters, digits, _, . and -, not starting with . or -`);
  }
  if (rest === '') throw invalid(field, text, 'the repository name is missing');

  let registry = DOCKER_HUB;
  let repository = rest;
  const slash = rest.indexOf('/');
  if (slash !== -1) {
    const first = rest.slice(0, slash);
    // As the engine (20.10) splits it: an uppercase first component is not a registry, so `UPPER/app` is a repository name the engine refuses.
    if (first.includes('.') || first.includes(':') || first === 'localhost') {
      if (!DOMAIN_RE.test(first)) throw invalid(field, text, `${JSON.stringify(first)} is not a valid registry host`);
      registry = DOCKER_HUB_ALIASES.has(first.toLowerCase()) ? DOCKER_HUB : first;
      repository = rest.slice(slash + 1);
    }
  }
  if (repository !== repository.toLowerCase()) throw invalid(field, text, 'the repository name must be lowercase');
  if (!PATH_RE.test(repository)) {
    throw invalid(field, text, 'the repository is lowercase letters, digits and separators (., _, __, -) in /-separated components');
  }
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (`${registry}/${repository}`.length > MAX_NAME_LENGTH) throw invalid(field, text, `the name is longer than ${MAX_NAME_LENGTH} characters`);

  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  const familiarName = registry === DOCKER_HUB ? repository.replace(/^library\/(?=[^/]+$)/, '') : `${registry}/${repository}`;
  const qualifier = `${tag === undefined ? '' : `:${tag}`}${digest === undefined ? '' : `@${digest}`}`;
  return Object.freeze({
    registry,
    repository,
    tag,
    digest,
    canonical: `${registry}/${repository}${qualifier}`,
    familiarName,
    localName: digest === undefined ? `${familiarName}:${tag!}` : `${familiarName}@${digest}`,
  });
}

/** The engine's pull arguments: the engine takes a digest in the `tag` parameter. */
export function pullArguments(ref: ImageReference): { fromImage: string; tag: string } {
  return { fromImage: ref.familiarName, tag: ref.digest ?? ref.tag ?? DEFAULT_TAG };
}

/**
 * Normalises a registry as written in a Docker config key or by a user (`https://index.docker.io/v1/`,
 * `http://127.0.0.1:5000`, `Registry.Example.com`) to the host form references use. docker.io's
 * aliases all become `docker.io`.
 */
export function normalizeRegistryHost(value: string): string {
  let host = value.trim().replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  const slash = host.indexOf('/');
  if (slash !== -1) host = host.slice(0, slash);
  host = host.toLowerCase();
  return DOCKER_HUB_ALIASES.has(host) ? DOCKER_HUB : host;
}
