#!/usr/bin/env -S node --
// `node --`: node reads a missing `--env-file` among a script's own arguments as its own option and exits 9
// (nodejs/node#54232); after `--` it leaves them to the script, so `berth run --env-file` is berth's.
// Runs the built CLI; in a source checkout without a build, runs the TypeScript through tsx.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const built = fileURLToPath(new URL('../dist/cli/entry.js', import.meta.url));
if (existsSync(built)) {
  await import(pathToFileURL(built).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(new URL('../src/cli/entry.ts', import.meta.url).href);
}
