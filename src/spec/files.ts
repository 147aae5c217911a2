import { z } from 'zod';
import type { FieldIssue } from '../common/errors.js';

/**
 * The spec's `files`: what is written into a task's container after it is created and before it
 * starts. Inline files carry their content in the spec (small files); an upload names an archive
 * its owner holds (the agent's `POST /v1/uploads`), extracted at a directory. Pure: no I/O here.
 */

export const FILES_BOUNDS = Object.freeze({
  /** Files (inline and upload entries) one spec may carry, whatever the owner's policy. */
  maxCount: 1000,
  /** Bytes of inline content (decoded) one spec may carry, whatever the owner's policy. */
  maxBytes: 64 * 1024 * 1024,
});

/** A mode as a number (0o640 = 416) or an octal string ("0640", "640"). */
const mode = z.union([
  z.number().int().min(0).max(0o7777),
  z
    .string()
    .regex(/^0?[0-7]{3,4}$/, 'must be an octal mode such as "0644", or a number')
    .transform((s) => Number.parseInt(s, 8))
    .refine((n) => n <= 0o7777, 'must be at most 07777'),
]);

const id = z.number().int().min(0).max(2 ** 31 - 1);

/** An absolute path to a file: not the root, no "." or ".." parts, no trailing slash. */
const filePath = z
  .string()
  .regex(/^\/./, 'must be an absolute path to a file')
  .refine((p) => !p.endsWith('/') && !p.split('/').some((part) => part === '.' || part === '..'), 'must be an absolute path to a file, without "." or ".." parts')
  .refine((p) => !p.includes('\0'), 'must not contain NUL');

const directoryPath = z
  .string()
  .regex(/^\//, 'must be an absolute path to a directory')
  .refine((p) => !p.split('/').some((part) => part === '.' || part === '..') && !p.includes('\0'), 'must be an absolute path without "." or ".." parts');

const inlineFile = z
  .object({
    path: filePath,
    content: z.string(),
    /** `utf8` (default): content is the text; `base64`: content is the bytes, base64-encoded. */
    encoding: z.enum(['utf8', 'base64']).default('utf8'),
    /** Default 0644. */
    mode: mode.default(0o644),
    /** Default 0 (root). */
    uid: id.default(0),
    gid: id.default(0),
  })
  .strict()
  .superRefine((file, ctx) => {
    if (file.encoding === 'base64' && !/^[A-Za-z0-9+/]*={0,2}$/.test(file.content.replace(/\s+/g, ''))) {
      ctx.addIssue({ code: 'custom', path: ['content'], message: 'must be base64 (encoding is "base64")' });
    }
  });

/** Upload ids are what the agent hands out: letters, digits, "-" and "_". */
export const UPLOAD_ID = /^[A-Za-z0-9_-]{1,64}$/;

const uploadFile = z
  .object({
    upload: z.string().regex(UPLOAD_ID, 'must be an upload id (POST /v1/uploads answers one)'),
    /** The directory the archive is extracted into; made (owned by root, 0755) when missing. */
    path: directoryPath,
  })
  .strict();

export const filesSchema = z.array(z.union([uploadFile, inlineFile])).superRefine((files, ctx) => {
  if (files.length > FILES_BOUNDS.maxCount) {
    ctx.addIssue({ code: 'custom', message: `must hold at most ${FILES_BOUNDS.maxCount} files (${files.length} given)` });
  }
  const total = inlineBytes(files);
  if (total > FILES_BOUNDS.maxBytes) {
    ctx.addIssue({ code: 'custom', message: `must hold at most ${FILES_BOUNDS.maxBytes} bytes of inline content (${total} given)` });
  }
});

export type ResolvedFile =
  | { readonly kind: 'inline'; readonly path: string; readonly content: Uint8Array; readonly mode: number; readonly uid: number; readonly gid: number }
  | { readonly kind: 'upload'; readonly upload: string; readonly path: string };

function decodedLength(file: { content: string; encoding?: string }): number {
  return file.encoding === 'base64' ? Buffer.from(file.content, 'base64').length : Buffer.byteLength(file.content, 'utf8');
}

function inlineBytes(files: readonly unknown[]): number {
  let total = 0;
  for (const file of files) {
    if (file && typeof file === 'object' && 'content' in file && typeof file.content === 'string') {
      total += decodedLength(file as { content: string; encoding?: string });
    }
  }
  return total;
}

export function resolveFiles(files: z.output<typeof filesSchema>): ResolvedFile[] {
  return files.map((file): ResolvedFile =>
    'upload' in file
      ? { kind: 'upload', upload: file.upload, path: file.path }
      : {
          kind: 'inline',
          path: file.path,
          content: file.encoding === 'base64' ? Buffer.from(file.content, 'base64') : Buffer.from(file.content, 'utf8'),
          mode: file.mode,
          uid: file.uid,
          gid: file.gid,
        },
  );
}

/** An owner's limits on `files` (the agent's `files.maxCount`, `files.maxBytes`). */
export interface FilesPolicy {
  filesMaxCount?: number;
  filesMaxBytes?: number;
  /** Whether an upload is held: a spec naming one that is not is refused at submit. Undefined: not checked. */
  uploadExists?: (id: string) => boolean;
}

/** What the owner's limits refuse, read defensively from raw input. */
export function filesPolicyIssues(input: { files?: unknown }, policy: FilesPolicy): FieldIssue[] {
  if (!Array.isArray(input.files)) return [];
  const issues: FieldIssue[] = [];
  if (policy.filesMaxCount !== undefined && input.files.length > policy.filesMaxCount) {
    issues.push({ field: 'files', rule: `must hold at most ${policy.filesMaxCount} files (${input.files.length} given; the limit is files.maxCount)` });
  }
  const total = inlineBytes(input.files);
  if (policy.filesMaxBytes !== undefined && total > policy.filesMaxBytes) {
    issues.push({ field: 'files', rule: `must hold at most ${policy.filesMaxBytes} bytes of inline content (${total} given; the limit is files.maxBytes)` });
  }
  if (policy.uploadExists) {
    input.files.forEach((file: unknown, i) => {
      const upload = (file as { upload?: unknown } | null)?.upload;
      if (typeof upload === 'string' && UPLOAD_ID.test(upload) && !policy.uploadExists!(upload)) {
        issues.push({ field: `files[${i}].upload`, rule: `no upload ${upload} is held (POST /v1/uploads makes one; an unused upload is removed after files.uploadTtl)` });
      }
    });
  }
  return issues;
}
