#!/usr/bin/env node
// Entry point of the `moat` command: the whole CLI is bundled into dist/moat.mjs by `npm run build`.
import '../dist/moat.mjs';
