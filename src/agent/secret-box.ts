import { createCipheriv, createDecipheriv, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { BerthError, messageOf } from '../common/errors.js';

/**
 * Seals the secrets a task carries (its inline registry credentials) before they are written to
 * the state database: AES-256-GCM with a random 96-bit nonce per value, under a 256-bit key kept in
 * the data directory (`secrets.key`, mode 0600, made at first use). The database, its WAL and any
 * copy of them hold only the sealed form; a restarted agent opens it with the same key, so a task
 * still pending then keeps its credentials. Whoever can read the key file can read the secrets:
 * it guards against the database travelling without the key (a backup, a bug report, a `.db` file
 * copied off the host), which is what "never stored in the clear" asks.
 */

/** The key file, in the data directory. */
export const SECRET_KEY_FILE_NAME = 'secrets.key';

const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** The sealed form's prefix: its version, so another scheme can follow without guessing. */
const PREFIX = 'v1:';

export interface SecretSealer {
  /** The sealed form of `plain` (text): `v1:<base64url nonce, ciphertext, tag>`. */
  seal(plain: string): string;
  /** The text `sealed` was made from; BERTH_INTERNAL when it was not sealed with this key. */
  open(sealed: string): string;
}

export class SecretBox implements SecretSealer {
  readonly #key: Buffer;

  constructor(key: Buffer) {
    if (key.length !== KEY_BYTES) throw new BerthError('BERTH_INTERNAL', `a secret key must be ${KEY_BYTES} bytes`);
    this.#key = Buffer.from(key);
  }

  /**
   * The data directory's key: read when the file exists, made (mode 0600, never replaced) when it
   * does not. A key file of the wrong size is refused rather than replaced: replacing it would
   * make every sealed secret unreadable.
   */
  static async openIn(dataDir: string): Promise<SecretBox> {
    const file = path.join(dataDir, SECRET_KEY_FILE_NAME);
    try {
      await writeFile(file, randomBytes(KEY_BYTES), { mode: 0o600, flag: 'wx' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new BerthError('BERTH_INTERNAL', `cannot create the secret key ${file}: ${messageOf(error)}`, { cause: error, context: { file } });
      }
    }
    // A key another umask or a copy left readable by others is made private again.
    if (((await stat(file)).mode & 0o077) !== 0) await chmod(file, 0o600);
    const key = await readFile(file);
    if (key.length !== KEY_BYTES) {
      throw new BerthError('BERTH_INTERNAL', `the secret key ${file} is ${key.length} bytes, not ${KEY_BYTES}: restore it, or remove it (the secrets sealed with it are then lost)`, {
        context: { file },
      });
    }
    return new SecretBox(key);
  }

  seal(plain: string): string {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key, nonce);
    const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return PREFIX + Buffer.concat([nonce, body, cipher.getAuthTag()]).toString('base64url');
  }

  open(sealed: string): string {
    const unreadable = (): BerthError =>
      new BerthError('BERTH_INTERNAL', `a sealed secret cannot be opened with this agent's key (${SECRET_KEY_FILE_NAME} in the data directory was replaced or lost)`);
    if (!sealed.startsWith(PREFIX)) throw unreadable();
    const bytes = Buffer.from(sealed.slice(PREFIX.length), 'base64url');
    if (bytes.length < NONCE_BYTES + TAG_BYTES) throw unreadable();
    const decipher = createDecipheriv('aes-256-gcm', this.#key, bytes.subarray(0, NONCE_BYTES));
    decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
    try {
      return Buffer.concat([decipher.update(bytes.subarray(NONCE_BYTES, bytes.length - TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch {
      throw unreadable();
    }
  }
}

/** Whether two secrets are the same text, in time that does not depend on where they differ. */
export function sameSecret(a: string, b: string): boolean {
  const left = Buffer.from(a, 'utf8');
  const right = Buffer.from(b, 'utf8');
  return left.length === right.length && timingSafeEqual(left, right);
}
