import { Writable } from 'node:stream';

/**
 * The output of a group's tasks on one terminal, as compose shows services': every line prefixed by
 * its task's name, the names padded to one width (`web    | line`), coloured on a terminal only.
 */

/** Compose's colours, in its order: cyan, yellow, green, magenta, blue, then their bright forms. */
const COLOURS = [36, 33, 32, 35, 34, 96, 93, 92, 95, 94] as const;

/** The prefix of each task's lines: its name padded to the longest, then ` | `; coloured when `colour`. */
export function linePrefixes(names: readonly string[], colour: boolean): Map<string, string> {
  const width = Math.max(0, ...names.map((name) => name.length));
  return new Map(
    names.map((name, index) => {
      const plain = `${name.padEnd(width)} | `;
      return [name, colour ? `\u001b[${COLOURS[index % COLOURS.length]}m${plain}\u001b[0m` : plain];
    }),
  );
}

/**
 * A stream that writes whole lines to `target`, each after `prefix`: a line split across chunks is
 * held until its end, so lines of tasks sharing one terminal never mix. Ending it writes a last line
 * without its newline (with one added) and leaves `target` open. Waits for `target` to drain.
 */
export class PrefixedLines extends Writable {
  readonly #target: Writable;
  readonly #prefix: Buffer;
  #partial: Buffer = Buffer.alloc(0);

  constructor(target: Writable, prefix: string) {
    super();
    this.#target = target;
    this.#prefix = Buffer.from(prefix);
  }

  override _write(chunk: Buffer | string, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const data = Buffer.concat([this.#partial, typeof chunk === 'string' ? Buffer.from(chunk) : chunk]);
    const parts: Buffer[] = [];
    let start = 0;
    for (let newline = data.indexOf(0x0a); newline >= 0; newline = data.indexOf(0x0a, start)) {
      parts.push(this.#prefix, data.subarray(start, newline + 1));
      start = newline + 1;
    }
    this.#partial = Buffer.from(data.subarray(start));
    this.#emit(parts, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    const rest = this.#partial;
    this.#partial = Buffer.alloc(0);
    this.#emit(rest.length === 0 ? [] : [this.#prefix, rest, Buffer.from('\n')], callback);
  }

  #emit(parts: Buffer[], callback: (error?: Error | null) => void): void {
    if (parts.length === 0) return callback();
    if (this.#target.write(Buffer.concat(parts))) return callback();
    this.#target.once('drain', () => callback());
  }
}
