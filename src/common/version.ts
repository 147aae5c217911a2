import { readFileSync } from 'node:fs';

/**
 * berth's version, read from its package.json, the one place it is written: `berth --version`, the
 * agent's OpenAPI document (`info.version`) and its logs state it. The file is two levels up from
 * both src/common/ and dist/common/, and npm always packs it.
 */
export const BERTH_VERSION: string = readVersion();

function readVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  if (typeof manifest.version !== 'string') throw new Error('berth\'s package.json has no version');
  return manifest.version;
}
