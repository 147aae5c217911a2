import { readFileSync } from 'node:fs';
import { ValidationError } from '../common/errors.js';
import type { ResolvedTaskSpec, SpecPolicy } from '../spec/schema.js';

/**
 * The spec with a seccomp profile named from the policy's allow-list replaced by the profile's own
 * JSON text, read from its file on this host now: the engine takes a profile's content, not a path
 * (as the docker CLI reads `--security-opt seccomp=FILE` itself). Read at each create, so that an
 * operator's edited profile applies to the next task without a restart. Throws a ValidationError
 * naming `seccomp` when the name is not listed or its file is unreadable or not a profile.
 */
export function withSeccompProfile(spec: ResolvedTaskSpec, policy: Pick<SpecPolicy, 'allowedSeccompProfiles'>): ResolvedTaskSpec {
  if (spec.seccomp.kind !== 'named') return spec;
  const { name } = spec.seccomp;
  const profiles = policy.allowedSeccompProfiles ?? {};
  if (!Object.hasOwn(profiles, name)) {
    throw new ValidationError([{ field: 'seccomp', rule: `seccomp profile ${name} is not in the allow-list (allowedSeccompProfiles)` }]);
  }
  const file = profiles[name]!;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ValidationError([{ field: 'seccomp', rule: `seccomp profile ${name}: its file ${file} cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})` }], { cause: error });
  }
  let profile: unknown;
  try {
    profile = JSON.parse(text);
  } catch (error) {
    throw new ValidationError([{ field: 'seccomp', rule: `seccomp profile ${name}: its file ${file} is not valid JSON` }], { cause: error });
  }
  if (typeof profile !== 'object' || profile === null || typeof (profile as { defaultAction?: unknown }).defaultAction !== 'string') {
    throw new ValidationError([{ field: 'seccomp', rule: `seccomp profile ${name}: its file ${file} is not a seccomp profile (it needs a defaultAction)` }]);
  }
  return Object.freeze({ ...spec, seccomp: Object.freeze({ kind: 'profile' as const, json: JSON.stringify(profile) }) });
}
