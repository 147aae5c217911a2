import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { messageOf, ValidationError } from '../common/errors.js';
import type { AgentConfig } from './config.js';

/**
 * TLS material read from PEM files, for both ends of the agent's TCP listener: the agent's
 * certificate, key and client CA (configuration keys `tls.*`), and a client's CA, certificate and
 * key (`--tlscacert`, `--tlscert`, `--tlskey`). Every problem with a file (missing, unreadable, not
 * PEM, a key that does not match its certificate) is a ValidationError naming the key or flag it
 * came from and the file, so that it is reported before anything listens or connects.
 */

/** The PEM texts of a TLS end, as node:tls takes them. */
export interface TlsMaterial {
  /** The certificate (and the chain that may follow it). */
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** CA certificates: the ones the other end's certificate must be signed by. */
  readonly ca?: Buffer;
}

function fileIssue(field: string, file: string, rule: string, cause?: unknown): ValidationError {
  return new ValidationError([{ field, rule: `${file}: ${rule}` }], cause === undefined ? {} : { cause });
}

function readPem(field: string, file: string): Buffer {
  let pem: Buffer;
  try {
    pem = readFileSync(file);
  } catch (error) {
    throw fileIssue(field, file, `cannot be read (${(error as NodeJS.ErrnoException).code ?? messageOf(error)})`, error);
  }
  if (!pem.includes('-----BEGIN ')) throw fileIssue(field, file, 'is not PEM (no "-----BEGIN" line)');
  return pem;
}

/** Reads a PEM file of certificates (its first must parse: a CA bundle or a certificate and its chain). */
export function readCertificateFile(field: string, file: string): { pem: Buffer; certificate: X509Certificate } {
  const pem = readPem(field, file);
  try {
    return { pem, certificate: new X509Certificate(pem) };
  } catch (error) {
    throw fileIssue(field, file, `is not a PEM certificate (${messageOf(error)})`, error);
  }
}

/** Reads a PEM private key file (unencrypted: the agent and the CLI run unattended). */
export function readPrivateKeyFile(field: string, file: string): { pem: Buffer; key: KeyObject } {
  const pem = readPem(field, file);
  try {
    return { pem, key: createPrivateKey(pem) };
  } catch (error) {
    throw fileIssue(field, file, `is not an unencrypted PEM private key (${messageOf(error)})`, error);
  }
}

/** Reads a certificate and its key, refusing a key that is not the certificate's. */
export function readKeyPair(certField: string, certFile: string, keyField: string, keyFile: string): { cert: Buffer; key: Buffer } {
  const cert = readCertificateFile(certField, certFile);
  const key = readPrivateKeyFile(keyField, keyFile);
  if (!cert.certificate.checkPrivateKey(key.key)) {
    throw fileIssue(keyField, keyFile, `is not the private key of the certificate ${certFile} (${certField})`);
  }
  return { cert: cert.pem, key: key.pem };
}

/**
 * Reads the agent's TLS files as its configuration names them (`tls.cert`, `tls.key`,
 * `tls.clientCa`). Throws a ValidationError naming the key and the file.
 */
export function readServerTls(tls: NonNullable<AgentConfig['tls']>): TlsMaterial {
  const pair = readKeyPair('tls.cert', tls.certFile, 'tls.key', tls.keyFile);
  return { ...pair, ...(tls.clientCaFile !== undefined ? { ca: readCertificateFile('tls.clientCa', tls.clientCaFile).pem } : {}) };
}
