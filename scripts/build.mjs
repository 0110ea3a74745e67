#!/usr/bin/env node
// Builds Moat: compiles the native pre-exec stage with the system C compiler and bundles the
// TypeScript CLI into one ESM file (one file loads faster than a module graph at start-up).
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
rmSync(join(dist, 'chunks'), { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

const cc = process.env.CC ?? 'cc';
const cflags = ['-std=gnu11', '-O2', '-Wall', '-Wextra', '-Werror', '-D_GNU_SOURCE', '-fno-strict-aliasing'];

/** Compiles one native program; every C file in native/ states its own build line at its top. */
function compile(src, out, extra = []) {
  const tmp = `${out}.tmp`;
  execFileSync(cc, [...cflags, ...extra, '-o', tmp, src], { stdio: 'inherit' });
  renameSync(tmp, out); // atomic: a running container never sees a half-written stage binary
}

for (const file of readdirSync(join(root, 'native'))) {
  if (!file.endsWith('.c')) continue;
  const name = file.slice(0, -2);
  compile(join(root, 'native', file), join(dist, name), ['-static']);
}

const esbuild = await import('esbuild');
await esbuild.build({
  entryPoints: [join(root, 'src/cli/main.ts')],
  outdir: dist,
  entryNames: 'moat',
  chunkNames: 'chunks/[name]-[hash]',
  // split lazily imported parts (zod, the lifecycle) into chunks that only the commands using
  // them load: V8 parses every byte of a module before running it
  splitting: true,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: 'linked',
  external: ['koffi'],
  banner: { js: "import { createRequire as __moatRequire } from 'node:module'; const require = __moatRequire(import.meta.url);" },
  logLevel: 'warning',
});
