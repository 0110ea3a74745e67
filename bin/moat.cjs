#!/usr/bin/env node
'use strict';
// Entry point of the `moat` command. The CLI is one CommonJS bundle (dist/moat.cjs, made by
// scripts/build.mjs); this loader compiles it with the V8 code cache that the build recorded
// (dist/moat.cjs.cache), which spares most of the parse and compile time at every start.
// A cache V8 rejects (another Node version) only costs that time; the code is the same.
// `moat.cjs --sentry CONFIG` starts a sentry process (dist/sentry.cjs) the same way (and
// `--sentry-standby ARGS` a warm standby sentry, which a later create claims), and
// `moat.cjs --vm-monitor CONFIG` a microVM's monitor (only `moat create` runs them), and
// `moat.cjs --vm-exec-relay CONFIG` the host end of an exec in a microVM (only `moat exec`).
// `moat.cjs --cli-standby DIR KEY LOCKFD` is a warm standby of the CLI itself, which the native
// front end (dist/moat, native/moat.c) starts and hands commands to.
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const Module = require('node:module');

/** Loads dist/NAME.cjs (with its code cache) and returns its exports and the compiled script. */
function load(name = 'moat') {
  const file = path.join(__dirname, '..', 'dist', `${name}.cjs`);
  const source = fs.readFileSync(file, 'utf8');
  let cachedData;
  try {
    cachedData = fs.readFileSync(`${file}.cache`);
  } catch {
    // no cache yet: compile from source
  }
  const script = new vm.Script(Module.wrap(source), { filename: file, cachedData });
  const mod = new Module(file, module);
  mod.filename = file;
  mod.paths = Module._nodeModulePaths(path.dirname(file));
  const req = (id) => mod.require(id);
  req.resolve = (id) => Module._resolveFilename(id, mod);
  script.runInThisContext()(mod.exports, req, mod, file, path.dirname(file));
  return { exports: mod.exports, script };
}

module.exports = { load };
if (require.main === module && process.argv[2] === '--sentry') {
  load('sentry').exports.run(process.argv.slice(3)).then((code) => process.exit(code));
} else if (require.main === module && process.argv[2] === '--sentry-standby') {
  load('sentry').exports.standby(process.argv.slice(3)).then((code) => process.exit(code));
} else if (require.main === module && process.argv[2] === '--cli-standby') {
  // a warm standby of the CLI (src/cli/standby.ts), started by the native front end dist/moat
  load().exports.cliStandby(process.argv.slice(3)).then(
    // undefined after a command: its exit code is process.exitCode (process.exit(undefined)
    // would exit 0)
    (code) => process.exit(code ?? process.exitCode ?? 0),
    (e) => {
      process.stderr.write(`moat: ${e && e.stack ? e.stack : String(e)}\n`);
      process.exit(1);
    },
  );
} else if (require.main === module && process.argv[2] === '--vm-monitor') {
  load().exports.vmMonitor(process.argv.slice(3)).then((code) => process.exit(code));
} else if (require.main === module && process.argv[2] === '--vm-exec-relay') {
  load().exports.vmExecRelay(process.argv.slice(3)).then((code) => process.exit(code));
} else if (require.main === module) {
  load().exports.main(process.argv).then(
    // every command writes synchronously: nothing is left to flush, so do not wait for the
    // event loop to wind down (handles of finished children close at their own pace)
    () => process.exit(),
    (e) => {
      process.stderr.write(`moat: ${e && e.stack ? e.stack : String(e)}\n`);
      process.exit(1);
    },
  );
}
