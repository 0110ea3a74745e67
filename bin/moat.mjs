#!/usr/bin/env node
// Compatibility entry point: the `moat` command is bin/moat.cjs.
import { createRequire } from 'node:module';

const { load } = createRequire(import.meta.url)('./moat.cjs');
await load().exports.main(process.argv);
