/**
 * A minimal, pure ustar (POSIX.1-1988) writer, with pax extended headers for long names: enough to
 * hand the engine files and directories with owner and mode (PUT /containers/{id}/archive). No I/O:
 * it turns entries into 512-byte blocks; callers stream file bodies between them.
 */

export const TAR_BLOCK = 512;

export interface TarEntryHeader {
  /** The entry's name inside the archive, relative ("etc/app.conf"); a directory's may end in "/". */
  readonly name: string;
  readonly type: 'file' | 'directory' | 'symlink';
  /** Permission bits (and setuid/setgid/sticky), e.g. 0o644. */
  readonly mode: number;
  readonly uid?: number;
  readonly gid?: number;
  /** Bytes of a file's body; 0 for others. */
  readonly size?: number;
  /** Seconds since the epoch. */
  readonly mtime?: number;
  /** A symlink's target. */
  readonly linkname?: string;
}

const TYPE_FLAG = { file: '0', directory: '5', symlink: '2' } as const;

/** Bytes of padding after a body of `size` bytes, so the next header starts on a block. */
export function tarPadding(size: number): number {
  const rest = size % TAR_BLOCK;
  return rest === 0 ? 0 : TAR_BLOCK - rest;
}

/** The two zero blocks that end an archive. */
export function tarEnd(): Buffer {
  return Buffer.alloc(TAR_BLOCK * 2);
}

function writeString(block: Buffer, value: string, offset: number, length: number): void {
  block.write(value, offset, length, 'utf8');
}

/** An octal number, zero-padded, NUL-terminated, in a field of `length` bytes. */
function writeOctal(block: Buffer, value: number, offset: number, length: number): void {
  block.write(`${Math.trunc(value).toString(8).padStart(length - 1, '0')}\0`, offset, length, 'ascii');
}

function fitsOctal(value: number, length: number): boolean {
  return value >= 0 && value < 8 ** (length - 1);
}

/** Splits a long name into ustar's prefix (155) and name (100) at a slash, or undefined when it cannot. */
function splitName(name: string): { prefix: string; name: string } | undefined {
  if (Buffer.byteLength(name) <= 100) return { prefix: '', name };
  for (let i = name.indexOf('/'); i !== -1; i = name.indexOf('/', i + 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(rest) <= 100 && rest !== '') return { prefix, name: rest };
  }
  return undefined;
}

function ustarBlock(fields: {
  name: string;
  prefix: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
}): Buffer {
  const block = Buffer.alloc(TAR_BLOCK);
  writeString(block, fields.name, 0, 100);
  writeOctal(block, fields.mode & 0o7777, 100, 8);
  writeOctal(block, fields.uid, 108, 8);
  writeOctal(block, fields.gid, 116, 8);
  writeOctal(block, fields.size, 124, 12);
  writeOctal(block, fields.mtime, 136, 12);
  block.write(fields.typeflag, 156, 1, 'ascii');
  writeString(block, fields.linkname, 157, 100);
  block.write('ustar\u000000', 257, 8, 'ascii');
  writeString(block, fields.prefix, 345, 155);
  // The checksum is summed with its own field as spaces.
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  return block;
}

/** One pax record: "<length> <key>=<value>\n", the length counting itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyBytes = Buffer.byteLength(body);
  let length = bodyBytes + 1;
  while (String(length).length + bodyBytes !== length) length = String(length).length + bodyBytes;
  return `${length}${body}`;
}

/**
 * The header blocks of one entry: a pax extended header first when its name or link does not fit
 * ustar's fields (or a number does not fit its octal field), then the ustar header.
 */
export function tarHeader(entry: TarEntryHeader): Buffer {
  const size = entry.type === 'file' ? (entry.size ?? 0) : 0;
  const uid = entry.uid ?? 0;
  const gid = entry.gid ?? 0;
  const mtime = entry.mtime ?? 0;
  const linkname = entry.linkname ?? '';
  const name = entry.type === 'directory' && !entry.name.endsWith('/') ? `${entry.name}/` : entry.name;
  const split = splitName(name);
  const records: string[] = [];
  if (split === undefined) records.push(paxRecord('path', name));
  if (Buffer.byteLength(linkname) > 100) records.push(paxRecord('linkpath', linkname));
  if (!fitsOctal(size, 12)) records.push(paxRecord('size', String(size)));
  if (!fitsOctal(uid, 8)) records.push(paxRecord('uid', String(uid)));
  if (!fitsOctal(gid, 8)) records.push(paxRecord('gid', String(gid)));
  const main = ustarBlock({
    name: split?.name ?? name.slice(-100).replace(/^\/+/, ''),
    prefix: split?.prefix ?? '',
    mode: entry.mode,
    uid: fitsOctal(uid, 8) ? uid : 0,
    gid: fitsOctal(gid, 8) ? gid : 0,
    size: fitsOctal(size, 12) ? size : 0,
    mtime,
    typeflag: TYPE_FLAG[entry.type],
    linkname: Buffer.byteLength(linkname) > 100 ? '' : linkname,
  });
  if (records.length === 0) return main;
  const pax = Buffer.from(records.join(''), 'utf8');
  const paxHeader = ustarBlock({
    name: 'PaxHeader',
    prefix: '',
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: pax.length,
    mtime,
    typeflag: 'x',
    linkname: '',
  });
  return Buffer.concat([paxHeader, pax, Buffer.alloc(tarPadding(pax.length)), main]);
}

/** One whole entry with its body in memory (inline files): header, body, padding. */
export function tarEntry(entry: Omit<TarEntryHeader, 'size'>, body: Uint8Array = new Uint8Array(0)): Buffer {
  const header = tarHeader({ ...entry, size: body.length });
  return Buffer.concat([header, body, Buffer.alloc(tarPadding(body.length))]);
}

/** A whole archive of in-memory entries (small inline files). */
export function tarArchive(entries: readonly { header: Omit<TarEntryHeader, 'size'>; body?: Uint8Array }[]): Buffer {
  return Buffer.concat([...entries.map((e) => tarEntry(e.header, e.body)), tarEnd()]);
}
