#!/usr/bin/env node
'use strict';
// The TypeScript `containerd-shim-moat-v1`, Moat's containerd shim v2 (runtime type
// io.containerd.moat.v1; see src/shim/ and docs/containerd.md). The installed binary is the C
// launcher dist/containerd-shim-moat-v1 (native/containerd-shim-moat-v1.c), which executes this
// file for whatever it does not answer itself; this file also works on its own. `start` runs from a small bundle
// of its own (dist/shim-start.cjs) while containerd waits for it; the daemon it starts (this file
// again) and `delete` run from the same bundle and V8 code cache as `moat` (bin/moat.cjs).
const { load } = require('./moat.cjs');

load('shim-start')
  .exports.main(process.argv.slice(2), __filename, () => (argv) => load().exports.shim(argv))
  .then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`containerd-shim-moat-v1: ${e && e.stack ? e.stack : String(e)}\n`);
      process.exit(1);
    },
  );
