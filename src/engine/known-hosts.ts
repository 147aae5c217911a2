/**
 * The SSH host keys OpenSSH trusts (`~/.ssh/known_hosts`), for an `ssh://` engine: berth accepts the
 * server only when its host key is listed for its host, as `ssh` does with StrictHostKeyChecking
 * (the docker CLI runs `ssh`, which refuses an unknown host when it cannot ask). Pure: the file's
 * text is read at the edge (connect.ts).
 */
import { createHmac } from 'node:crypto';

/** How OpenSSH names a host in known_hosts: `host` on port 22, `[host]:port` otherwise. */
export function knownHostName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** Whether a known_hosts pattern (`*` and `?` wildcards) matches `name`. */
function globMatches(pattern: string, name: string): boolean {
  const regex = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i');
  return regex.test(name);
}

/** Whether the host field of a known_hosts line (patterns, or a hashed `|1|salt|hash`) names `name`. */
function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|');
    if (salt === undefined || hash === undefined) return false;
    return createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64') === hash;
  }
  let matched = false;
  for (const pattern of field.split(',')) {
    if (pattern.startsWith('!')) {
      if (globMatches(pattern.slice(1), name)) return false;
    } else if (globMatches(pattern, name)) {
      matched = true;
    }
  }
  return matched;
}

/** The keys known_hosts lists for a host: the trusted ones, and the revoked (`@revoked`) ones. */
export function knownHostKeys(text: string, host: string, port: number): { trusted: Buffer[]; revoked: Buffer[] } {
  const name = knownHostName(host, port);
  const trusted: Buffer[] = [];
  const revoked: Buffer[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    const marker = fields[0]!.startsWith('@') ? fields.shift() : undefined;
    // A certificate authority's key signs host certificates, which berth does not take.
    if (marker === '@cert-authority') continue;
    const [hosts, , key] = fields;
    if (hosts === undefined || key === undefined || !hostFieldMatches(hosts, name)) continue;
    (marker === '@revoked' ? revoked : trusted).push(Buffer.from(key, 'base64'));
  }
  return { trusted, revoked };
}

/**
 * ssh2's host verifier for a host: true only for a key known_hosts trusts for it (and does not
 * revoke). `onRefused` hears why a key was refused, for the error the caller reports.
 */
export function hostKeyVerifier(knownHostsText: string | undefined, host: string, port: number, onRefused: (reason: string) => void): (key: Buffer) => boolean {
  const { trusted, revoked } = knownHostKeys(knownHostsText ?? '', host, port);
  return (key) => {
    if (revoked.some((k) => k.equals(key))) {
      onRefused(`the SSH host key of ${knownHostName(host, port)} is revoked in known_hosts`);
      return false;
    }
    if (trusted.some((k) => k.equals(key))) return true;
    onRefused(
      trusted.length > 0
        ? `the SSH host key of ${knownHostName(host, port)} does not match the one in known_hosts (a different server, or its key changed)`
        : `${knownHostName(host, port)} is not in ~/.ssh/known_hosts: connect once with ssh (or add its key with ssh-keyscan) to trust it`,
    );
    return false;
  };
}
