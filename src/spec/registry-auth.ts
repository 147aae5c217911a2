import { z } from 'zod';
import { ValidationError, type FieldIssue } from '../common/errors.js';
import { anyTypedAs, issue } from '../common/validation.js';
import { normalizeRegistryHost, parseImageReference } from './reference.js';

/**
 * A task's own credentials for the registry of its image (`registryAuth` in the spec), used for
 * that task's pull only: by reference to credentials its driver holds (`{ ref: "ci-registry" }`,
 * the agent's `registries` configuration), or inline (`{ username, password }`, or
 * `{ identityToken }`). A reference keeps the secret out of the spec altogether; inline credentials
 * travel with the spec, and the agent accepts them only when its policy allows
 * (`policy.allowInlineRegistryAuth`).
 */

/** What a redacted secret reads as, in the agent's task view and its state database. */
export const REDACTED = '<redacted>';

/** The name of credentials configured in a driver (the agent's `registries.<name>`). */
export const REGISTRY_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/;
export const REGISTRY_NAME_RULE = 'must be 1 to 64 characters of [a-zA-Z0-9_.-], starting with a letter or digit';

/** Credentials given in the spec itself. */
export interface InlineRegistryAuth {
  readonly username?: string;
  readonly password?: string;
  /** An OAuth identity token, used instead of a username and password. */
  readonly identityToken?: string;
  /** The address the registry knows the credentials by. Default: the image's registry. */
  readonly serverAddress?: string;
}

/** Credentials configured in the driver, by name. */
export interface RegistryAuthRef {
  readonly ref: string;
}

export type RegistryAuthSpec = RegistryAuthRef | InlineRegistryAuth;

/** The secret fields of inline credentials: what is redacted and never stored in the clear. */
export const REGISTRY_SECRET_FIELDS = ['password', 'identityToken'] as const;
export type RegistrySecretField = (typeof REGISTRY_SECRET_FIELDS)[number];

const INLINE_FIELDS = ['username', 'password', 'identityToken', 'serverAddress'] as const;
const SHAPE_RULE = 'must be { ref: "<name of credentials configured in the agent>" } or inline { username, password } / { identityToken } (with serverAddress optional)';

export function isRegistryAuthRef(auth: RegistryAuthSpec): auth is RegistryAuthRef {
  return 'ref' in auth && typeof auth.ref === 'string';
}

/**
 * The `registryAuth` field's rule. Every problem is named by its own field; no rule ever quotes a
 * value, so a refused spec never echoes a secret back.
 */
export const registryAuthSchema = anyTypedAs<RegistryAuthSpec>()
  .transform((value, ctx): RegistryAuthSpec => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return issue(ctx, SHAPE_RULE);
    const raw = value as Record<string, unknown>;
    const unknown = Object.keys(raw).filter((key) => key !== 'ref' && !(INLINE_FIELDS as readonly string[]).includes(key));
    if (unknown.length > 0) return issue(ctx, `unknown field(s): ${unknown.join(', ')}`);
    if ('ref' in raw) {
      const others = INLINE_FIELDS.filter((key) => key in raw);
      if (others.length > 0) return issue(ctx, `ref cannot be combined with ${others.join(', ')}: name configured credentials, or give them inline`);
      if (typeof raw.ref !== 'string' || !REGISTRY_NAME.test(raw.ref)) {
        ctx.addIssue({ code: 'custom', path: ['ref'], message: REGISTRY_NAME_RULE });
        return z.NEVER;
      }
      return { ref: raw.ref };
    }
    let bad = false;
    for (const key of INLINE_FIELDS) {
      if (raw[key] !== undefined && (typeof raw[key] !== 'string' || raw[key] === '')) {
        ctx.addIssue({ code: 'custom', path: [key], message: 'must be a non-empty string' });
        bad = true;
      }
    }
    if (bad) return z.NEVER;
    const inline = raw as InlineRegistryAuth;
    if (inline.password === undefined && inline.identityToken === undefined) return issue(ctx, SHAPE_RULE);
    if (inline.password !== undefined && inline.identityToken !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['identityToken'], message: 'cannot be combined with password: give one secret' });
      return z.NEVER;
    }
    if (inline.password !== undefined && inline.username === undefined) {
      ctx.addIssue({ code: 'custom', path: ['username'], message: 'must be set with password' });
      return z.NEVER;
    }
    return Object.fromEntries(INLINE_FIELDS.filter((key) => inline[key] !== undefined).map((key) => [key, inline[key]])) as InlineRegistryAuth;
  })
  .meta({
    description:
      'The task\'s own credentials for its image\'s registry, used for its pull only: { "ref": "<name>" } names credentials configured in the agent (registries.<name>); inline { "username", "password" } or { "identityToken" } (with "serverAddress") needs policy.allowInlineRegistryAuth. Secrets are never returned: the task view shows them as "<redacted>".',
    anyOf: [
      { type: 'object', properties: { ref: { type: 'string', pattern: REGISTRY_NAME.source } }, required: ['ref'], additionalProperties: false },
      {
        type: 'object',
        properties: Object.fromEntries(INLINE_FIELDS.map((key) => [key, { type: 'string', minLength: 1 }])),
        additionalProperties: false,
      },
    ],
  });

/** What a driver's policy says of `registryAuth` (fields of SpecPolicy). */
export interface RegistryAuthPolicy {
  /** Whether inline credentials are accepted. Undefined allows them; the agent's default is false. */
  allowInlineRegistryAuth?: boolean;
  /**
   * The credentials a `ref` may name, by name, each with the registry host it is for. Undefined
   * leaves names to the driver's resolver (checked at pull); a name not listed is refused, and so
   * is one whose registry is not the image's: configured credentials never go to another registry.
   */
  registries?: Readonly<Record<string, string>>;
}

/** What the policy forbids in `registryAuth`, read defensively from input that may not have passed the schema. */
export function registryAuthPolicyIssues(input: { image?: unknown; registryAuth?: unknown }, policy: RegistryAuthPolicy): FieldIssue[] {
  const auth = input.registryAuth;
  if (typeof auth !== 'object' || auth === null || Array.isArray(auth)) return [];
  const raw = auth as Record<string, unknown>;
  if ('ref' in raw) {
    if (typeof raw.ref !== 'string' || policy.registries === undefined) return [];
    const host = policy.registries[raw.ref];
    if (host === undefined) {
      const names = Object.keys(policy.registries).sort();
      return [{ field: 'registryAuth.ref', rule: `no registry credentials named ${JSON.stringify(raw.ref)} are configured (registries: ${names.length > 0 ? names.join(', ') : 'none'})` }];
    }
    const mismatch = registryMismatch(input.image, host);
    return mismatch === undefined ? [] : [{ field: 'registryAuth.ref', rule: mismatch }];
  }
  if (policy.allowInlineRegistryAuth === false) {
    return [{ field: 'registryAuth', rule: 'inline registry credentials are not allowed by this driver (allowInlineRegistryAuth is off): name credentials configured in the agent with { "ref": "<name>" }' }];
  }
  return [];
}

/**
 * Why credentials for registry `host` must not be sent for `image`, or undefined when the image is
 * on that very registry (hosts compared exactly, after normalising docker.io's aliases, as the
 * Docker configuration's credentials are matched).
 */
export function registryMismatch(image: unknown, host: string): string | undefined {
  if (typeof image !== 'string') return undefined;
  let registry: string;
  try {
    registry = parseImageReference(image).registry;
  } catch {
    // The image's own rule reports it.
    return undefined;
  }
  const wanted = normalizeRegistryHost(host);
  return registry === wanted ? undefined : `the credentials are for registry ${wanted}, and the image is on ${registry}: they are never sent to another registry`;
}

/**
 * The spec with the secrets of inline credentials replaced by REDACTED, and the secrets taken out
 * (undefined when it has none: no `registryAuth`, or a `ref`). What the agent stores and shows.
 */
export function separateRegistrySecrets<T extends object>(spec: T): { redacted: T; secrets?: Partial<Record<RegistrySecretField, string>> } {
  const auth = (spec as { registryAuth?: unknown }).registryAuth;
  if (typeof auth !== 'object' || auth === null || Array.isArray(auth)) return { redacted: spec };
  const raw = auth as Record<string, unknown>;
  const secrets: Partial<Record<RegistrySecretField, string>> = {};
  const redactedAuth: Record<string, unknown> = { ...raw };
  for (const key of REGISTRY_SECRET_FIELDS) {
    if (raw[key] === undefined) continue;
    // Anything given for a secret field is taken out, whatever its type: the schema refuses a wrong one later.
    if (typeof raw[key] === 'string') secrets[key] = raw[key];
    redactedAuth[key] = REDACTED;
  }
  if (Object.keys(secrets).length === 0 && !REGISTRY_SECRET_FIELDS.some((key) => raw[key] !== undefined)) return { redacted: spec };
  return { redacted: { ...spec, registryAuth: redactedAuth }, secrets };
}

/** The stored (redacted) spec with its secrets put back: the spec as it was submitted. */
export function restoreRegistrySecrets<T extends object>(spec: T, secrets: Partial<Record<RegistrySecretField, string>>): T {
  const auth = (spec as { registryAuth?: unknown }).registryAuth;
  if (typeof auth !== 'object' || auth === null || Array.isArray(auth)) {
    throw new ValidationError([{ field: 'registryAuth', rule: 'the stored spec has no inline credentials to restore' }]);
  }
  return { ...spec, registryAuth: { ...(auth as Record<string, unknown>), ...secrets } };
}
