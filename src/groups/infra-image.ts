/**
 * berth's own infrastructure image, made offline: a root filesystem holding one static program,
 * `/pause`, that sleeps until it is killed (the role of Kubernetes' and Nomad's pause container:
 * own a network namespace and do nothing). The program is 129 bytes of x86-64 machine code in a
 * hand-made ELF file, so berth needs no registry, no compiler and no base image to run a group; the
 * image is imported into the engine the first time a group needs it. Other architectures name
 * their own image in the configuration (`groups.infraImage`).
 */
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { BerthError, isBerthError } from '../common/errors.js';
import { LABELS, ROLES } from '../common/labels.js';
import type { Engine } from '../engine/engine.js';
import { tarArchive } from '../tasks/tar.js';

/** The machine code: `loop: mov eax, 34 (pause); syscall; jmp loop`. Signals end it (SIGKILL; berth stops it with SIGKILL). */
const PAUSE_CODE_X86_64 = Buffer.from([0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7]);
const LOAD_ADDRESS = 0x400000n;
const ELF_HEADER_SIZE = 64;
const PROGRAM_HEADER_SIZE = 56;

/** A minimal static ELF64 executable for x86-64: one loadable segment holding the headers and `code`. */
export function elfExecutable(code: Buffer): Buffer {
  const codeOffset = ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE;
  const size = codeOffset + code.length;
  const file = Buffer.alloc(size);
  // e_ident: magic, 64-bit, little-endian, version 1, System V ABI.
  file.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0], 0);
  file.writeUInt16LE(2, 16); // e_type: executable
  file.writeUInt16LE(0x3e, 18); // e_machine: x86-64
  file.writeUInt32LE(1, 20); // e_version
  file.writeBigUInt64LE(LOAD_ADDRESS + BigInt(codeOffset), 24); // e_entry
  file.writeBigUInt64LE(BigInt(ELF_HEADER_SIZE), 32); // e_phoff
  file.writeBigUInt64LE(0n, 40); // e_shoff: no sections
  file.writeUInt32LE(0, 48); // e_flags
  file.writeUInt16LE(ELF_HEADER_SIZE, 52); // e_ehsize
  file.writeUInt16LE(PROGRAM_HEADER_SIZE, 54); // e_phentsize
  file.writeUInt16LE(1, 56); // e_phnum
  // e_shentsize, e_shnum, e_shstrndx: 0.
  const ph = ELF_HEADER_SIZE;
  file.writeUInt32LE(1, ph); // p_type: PT_LOAD
  file.writeUInt32LE(5, ph + 4); // p_flags: read + execute
  file.writeBigUInt64LE(0n, ph + 8); // p_offset
  file.writeBigUInt64LE(LOAD_ADDRESS, ph + 16); // p_vaddr
  file.writeBigUInt64LE(LOAD_ADDRESS, ph + 24); // p_paddr
  file.writeBigUInt64LE(BigInt(size), ph + 32); // p_filesz
  file.writeBigUInt64LE(BigInt(size), ph + 40); // p_memsz
  file.writeBigUInt64LE(0x1000n, ph + 48); // p_align
  code.copy(file, codeOffset);
  return file;
}

/** The pause program itself (129 bytes): the groups' infrastructure image runs it, and warm pools bind-mount it as their holder (src/pools/holder.ts). */
export const PAUSE_BINARY = elfExecutable(PAUSE_CODE_X86_64);

/** The built-in image's reference: its tag is the program's digest, so a changed program is a new image. */
export const BUILTIN_INFRA_IMAGE = `berth-infra:${createHash('sha256').update(PAUSE_BINARY).digest('hex').slice(0, 12)}`;

/** The engine architectures the built-in image runs on (the engine's `Arch`, Go's names). */
const SUPPORTED_ARCHES = new Set(['amd64', 'x86_64']);

/** A root filesystem with `/pause`, as the tar stream `docker import` takes. */
export function infraRootfs(): Buffer {
  return tarArchive([{ header: { name: 'pause', type: 'file', mode: 0o755, mtime: 0 }, body: PAUSE_BINARY }]);
}

/**
 * Makes sure the built-in infrastructure image exists in the engine: imported once, from memory,
 * when it is missing. Safe to call concurrently (an import of the same content twice is harmless).
 * Throws BERTH_GROUP_INFRA when the engine's architecture cannot run it.
 */
export async function ensureBuiltinInfraImage(engine: Pick<Engine, 'inspectImage' | 'importImage' | 'version'>, options: { signal?: AbortSignal } = {}): Promise<string> {
  try {
    await engine.inspectImage(BUILTIN_INFRA_IMAGE, options);
    return BUILTIN_INFRA_IMAGE;
  } catch (error) {
    if (!isBerthError(error, 'BERTH_ENGINE_NOT_FOUND')) throw error;
  }
  const { arch } = await engine.version(options);
  if (arch !== undefined && !SUPPORTED_ARCHES.has(arch)) {
    throw new BerthError('BERTH_GROUP_INFRA', `berth's built-in infrastructure image runs on amd64 only, and the engine is ${arch}: configure groups.infraImage (any image whose default command sleeps until killed)`, { context: { arch } });
  }
  const [repo, tag] = BUILTIN_INFRA_IMAGE.split(':') as [string, string];
  await engine.importImage(Readable.from([infraRootfs()]), { repo, tag }, ['CMD ["/pause"]', `LABEL ${LABELS.managed}=true ${LABELS.role}=${ROLES.infra}`], options);
  return BUILTIN_INFRA_IMAGE;
}
