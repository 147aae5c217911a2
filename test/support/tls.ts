/**
 * Certificates for TLS tests, made with the machine's `openssl` (scripts/test-engine.sh installs it):
 * a CA, a server certificate for 127.0.0.1 (subjectAltName IP) signed by it, a client certificate
 * signed by it, and a second CA with a client certificate of its own (one the agent must refuse).
 * EC P-256 keys, so that making them takes milliseconds.
 */
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A certificate and its key, as PEM files. */
export interface CertFiles {
  readonly cert: string;
  readonly key: string;
}

export interface TestCertificates {
  /** The CA that signed `server` and `client`. */
  readonly ca: CertFiles;
  /** For 127.0.0.1 (IP subjectAltName) and localhost, serverAuth. */
  readonly server: CertFiles;
  /** Signed by `ca`, clientAuth. */
  readonly client: CertFiles;
  /** Another CA, and a client certificate it signed. */
  readonly otherCa: CertFiles;
  readonly otherClient: CertFiles;
  /** Makes another server certificate signed by `ca` (e.g. to rotate to), named `name`. */
  issueServer(name: string): Promise<CertFiles>;
}

async function openssl(args: string[]): Promise<void> {
  await run('openssl', args);
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

async function makeCa(dir: string, name: string): Promise<CertFiles> {
  const files = { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}-key.pem`) };
  await openssl(['req', '-x509', ...EC_KEY, '-keyout', files.key, '-out', files.cert, '-days', '2', '-subj', `/CN=berth test ${name}`]);
  return files;
}

async function issue(dir: string, ca: CertFiles, name: string, extensions: string): Promise<CertFiles> {
  const files = { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}-key.pem`) };
  const csr = path.join(dir, `${name}.csr`);
  const ext = path.join(dir, `${name}.ext`);
  await writeFile(ext, extensions);
  await openssl(['req', ...EC_KEY, '-keyout', files.key, '-out', csr, '-subj', `/CN=berth test ${name}`]);
  // A random serial of its own: -CAcreateserial shares one serial file per CA, which certificates
  // issued at the same time read half-written ("Unable to load number").
  const serial = `0x${randomBytes(16).toString('hex')}`;
  await openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', serial, '-out', files.cert, '-days', '2', '-extfile', ext]);
  return files;
}

const SERVER_EXT = 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n';
const CLIENT_EXT = 'extendedKeyUsage=clientAuth\n';

/** Makes the test's CAs and certificates in `dir`. */
export async function makeTestCertificates(dir: string): Promise<TestCertificates> {
  const ca = await makeCa(dir, 'ca');
  const otherCa = await makeCa(dir, 'other-ca');
  const [server, client, otherClient] = await Promise.all([
    issue(dir, ca, 'server', SERVER_EXT),
    issue(dir, ca, 'client', CLIENT_EXT),
    issue(dir, otherCa, 'other-client', CLIENT_EXT),
  ]);
  return { ca, server, client, otherCa, otherClient, issueServer: (name) => issue(dir, ca, name, SERVER_EXT) };
}
