import type { StoredTaskSpec } from '../state/tasks.js';

/** Where the sandbox preset puts its tmpfs: the one place a task with a read-only root may write by default. */
export const SANDBOX_TMP_PATH = '/tmp';

/** The sandbox preset's open-files limit (soft and hard). */
export const SANDBOX_NOFILE = 1024;

/**
 * The agent's `sandbox` preset (`defaults.sandbox: true`), the safe floor for untrusted code,
 * applied to a submitted spec before it is checked against the policy and stored: a read-only root
 * file system, a tmpfs of `tmpSizeBytes` on /tmp, no-new-privileges, every capability dropped but
 * the operator's few (`capabilities`, which the policy allows), a
 * `nofile` limit and network none (the process limit is `defaults.resources.pidsLimit`, applied to
 * every task anyway).
 *
 * A field the task sets itself is the task's: it overrides the preset, and is then checked by the
 * policy like any other (so a task may take `network: bridge` or a larger /tmp, but not a
 * capability outside `policy.allowedCapabilities`). The dropped capabilities are the exception: ALL
 * stays dropped whatever `capDrop` says, so a capability comes back only through `capAdd`, which
 * the policy's allow-list governs. Input of the wrong type is left as it is, for the schema to name.
 */
export function withSandboxPreset(spec: StoredTaskSpec, preset: { readonly tmpSizeBytes: number; readonly capabilities?: readonly string[] }): StoredTaskSpec {
  const out: StoredTaskSpec = { ...spec };
  out.readOnlyRootfs ??= true;
  out.noNewPrivileges ??= true;
  out.network ??= 'none';
  if (out.ulimits === undefined) out.ulimits = [{ name: 'nofile', soft: SANDBOX_NOFILE, hard: SANDBOX_NOFILE }];
  // The operator's few (defaults.sandboxCapabilities), for a task that names none of its own.
  if (out.capAdd === undefined && preset.capabilities !== undefined && preset.capabilities.length > 0) out.capAdd = [...preset.capabilities];
  if (out.capDrop === undefined) out.capDrop = ['ALL'];
  else if (Array.isArray(out.capDrop) && !out.capDrop.some((cap) => typeof cap === 'string' && cap.toUpperCase() === 'ALL')) out.capDrop = [...out.capDrop, 'ALL'];
  if (out.mounts === undefined) out.mounts = [{ type: 'tmpfs', target: SANDBOX_TMP_PATH, size: preset.tmpSizeBytes }];
  else if (Array.isArray(out.mounts) && !out.mounts.some((m) => (m as { target?: unknown } | null)?.target === SANDBOX_TMP_PATH)) {
    out.mounts = [...out.mounts, { type: 'tmpfs', target: SANDBOX_TMP_PATH, size: preset.tmpSizeBytes }];
  }
  return out;
}
