import type { Readable } from 'node:stream';

/** A tar block: headers and padded data come in 512-byte blocks; two zero blocks end an archive. */
export const TAR_BLOCK = 512;
export const TAR_TRAILER = Buffer.alloc(TAR_BLOCK * 2);

/** Header types that describe the entry after them (pax, GNU long names): kept together with it. */
const META_TYPES = new Set(['x', 'g', 'L', 'K']);

export interface TarCopyOutcome {
  /** Bytes written (entries only, without the trailer). */
  bytes: number;
  entries: number;
  /** The name of the first entry left out because it did not fit; undefined when all fitted. */
  cutAt?: string;
}

function padded(size: number): number {
  return Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
}

/** The size field: octal text, or GNU base-256 when its first byte has the high bit set. */
export function headerSize(header: Buffer): number {
  const field = header.subarray(124, 136);
  if ((field[0]! & 0x80) !== 0) {
    let value = 0;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    return value;
  }
  const text = field.toString('latin1').replace(/\0.*$/s, '').trim();
  return text === '' ? 0 : parseInt(text, 8);
}

/** The entry's name: the pax `path` or a GNU long name when one came before it, else prefix/name. */
export function headerName(header: Buffer, meta: Buffer[]): string {
  for (const block of meta) {
    const type = String.fromCharCode(block[156]!);
    const data = block.subarray(TAR_BLOCK, TAR_BLOCK + headerSize(block));
    if (type === 'L') return data.toString('utf8').replace(/\0.*$/s, '');
    if (type === 'x') {
      const match = /\d+ path=([^\n]*)\n/.exec(data.toString('utf8'));
      if (match) return match[1]!;
    }
  }
  const name = header.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '');
  const prefix = header.subarray(345, 500).toString('utf8').replace(/\0.*$/s, '');
  return prefix === '' ? name : `${prefix}/${name}`;
}

/**
 * Copies the entries of the tar archive `source` to `write`, without its trailer, while they fit in
 * `budget` bytes: an entry that does not fit is left out with everything after it (cut at a file
 * boundary, never inside one), and `source` is destroyed. `write` resolves when the sink can take more.
 */
export async function copyTarEntries(source: Readable, budget: number, write: (chunk: Buffer) => Promise<void>): Promise<TarCopyOutcome> {
  let buffered: Buffer = Buffer.alloc(0);
  let meta: Buffer[] = [];
  let bytes = 0;
  let entries = 0;
  /** Data bytes (with padding) of the entry being passed through. */
  let passing = 0;
  /** A meta header collecting its data: the block so far and how much data it still needs. */
  let collecting: { block: Buffer; needs: number } | undefined;
  try {
    for await (const chunk of source) {
      buffered = buffered.length === 0 ? (chunk as Buffer) : Buffer.concat([buffered, chunk as Buffer]);
      for (;;) {
        if (passing > 0) {
          if (buffered.length === 0) break;
          const part = buffered.subarray(0, passing);
          await write(part);
          bytes += part.length;
          passing -= part.length;
          buffered = buffered.subarray(part.length);
          continue;
        }
        if (collecting) {
          if (buffered.length < collecting.needs) break;
          meta.push(Buffer.concat([collecting.block, buffered.subarray(0, collecting.needs)]));
          buffered = buffered.subarray(collecting.needs);
          collecting = undefined;
          continue;
        }
        if (buffered.length < TAR_BLOCK) break;
        const header = Buffer.from(buffered.subarray(0, TAR_BLOCK));
        buffered = buffered.subarray(TAR_BLOCK);
        if (header.every((b) => b === 0)) return { bytes, entries };
        const size = headerSize(header);
        const type = String.fromCharCode(header[156]!);
        if (META_TYPES.has(type)) {
          collecting = { block: header, needs: padded(size) };
          continue;
        }
        const metaBytes = meta.reduce((sum, block) => sum + block.length, 0);
        // Links, directories and devices carry no data whatever their size field says.
        const dataBytes = type === '0' || type === '\0' || type === '7' ? padded(size) : 0;
        if (bytes + metaBytes + TAR_BLOCK + dataBytes > budget) {
          return { bytes, entries, cutAt: headerName(header, meta) };
        }
        for (const block of meta) await write(block);
        await write(header);
        bytes += metaBytes + TAR_BLOCK;
        entries += 1;
        meta = [];
        passing = dataBytes;
      }
    }
    return { bytes, entries };
  } finally {
    source.destroy();
  }
}
