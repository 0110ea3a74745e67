#!/usr/bin/env node
// Builds Moat: compiles the native pre-exec stage with the system C compiler, bundles the
// TypeScript CLI into one CommonJS file and records a V8 code cache for it (start-up time).
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
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
  try {
    // static: nothing for the dynamic loader to do at every container start
    compile(join(root, 'native', file), join(dist, name), ['-static']);
  } catch {
    console.warn(`build: static linking of ${file} failed (is libc6-dev installed?); linking it dynamically`);
    compile(join(root, 'native', file), join(dist, name));
  }
}

const esbuild = await import('esbuild');
// one CommonJS file per entry: Node 20 loads it faster than ES modules and it can use a V8 code cache
const bundleOptions = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: 'linked',
  external: ['koffi'],
  define: { 'import.meta.url': '__moatImportMetaUrl' },
  banner: { js: "const __moatImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: 'warning',
};
await esbuild.build({ ...bundleOptions, entryPoints: [join(root, 'src/cli/main.ts')], outfile: join(dist, 'moat.cjs') });
// The sentry process (one per sandbox under --isolation sentry) is a bundle of its own: it
// never loads the CLI, the spec schema or zod.
await esbuild.build({ ...bundleOptions, entryPoints: [join(root, 'src/backends/sentry/entry.ts')], outfile: join(dist, 'sentry.cjs') });
// `containerd-shim-moat-v1 start` runs once per sandbox while containerd waits: a bundle of Node's
// core modules and the flag parser only (src/shim/start.ts).
await esbuild.build({ ...bundleOptions, entryPoints: [join(root, 'src/shim/start.ts')], outfile: join(dist, 'shim-start.cjs') });

// Record V8's compiled code for the paths every container (and sentry) start takes (see bin/moat.cjs).
const require = createRequire(import.meta.url);
for (const name of ['moat', 'sentry']) {
  rmSync(join(dist, `${name}.cjs.cache`), { force: true });
  const { exports, script } = require(join(root, 'bin/moat.cjs')).load(name);
  await exports.warmUp();
  writeFileSync(join(dist, `${name}.cjs.cache.tmp`), script.createCachedData());
  renameSync(join(dist, `${name}.cjs.cache.tmp`), join(dist, `${name}.cjs.cache`));
}
