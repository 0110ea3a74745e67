#!/usr/bin/env node
// Writes docs/syscalls.md and docs/syscalls.json from the sentry's syscall table. Run it after
// compiling the TypeScript (`npx tsc -p tsconfig.json`, which writes build/); the unit test
// test/unit/sentry-table.test.ts fails while the committed files are stale.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { syscallsJson, syscallsMarkdown } = await import(join(root, 'build/src/backends/sentry/docs.js'));
writeFileSync(join(root, 'docs/syscalls.md'), syscallsMarkdown());
writeFileSync(join(root, 'docs/syscalls.json'), syscallsJson());
console.log('wrote docs/syscalls.md and docs/syscalls.json');
