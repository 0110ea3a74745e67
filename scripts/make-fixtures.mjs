#!/usr/bin/env node
// Writes a busybox OCI bundle for benchmarks and manual runs:
//   node scripts/make-fixtures.mjs <bundle-dir> [args...]     (default args: sh)
// Needs a compiled test tree (`npx tsc -p tsconfig.json`), since it reuses the test fixture builder.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const fixture = join(root, 'build/test/fixtures/busybox.js');
const [dir, ...args] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node scripts/make-fixtures.mjs <bundle-dir> [args...]');
  process.exit(2);
}
if (!existsSync(fixture)) {
  console.error(`${fixture} is missing: compile first with "npx tsc -p tsconfig.json"`);
  process.exit(1);
}
const { makeBundle } = await import(pathToFileURL(fixture).href);
try {
  const bundle = await makeBundle({ dir, args: args.length > 0 ? args : ['sh'] });
  console.log(bundle);
} catch (err) {
  console.error(`make-fixtures: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
