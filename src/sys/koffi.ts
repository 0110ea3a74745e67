/**
 * Loads koffi, the FFI library every module in src/sys/ calls libc through. Its native module
 * is loaded directly when it is where koffi's own loader looks first: koffi's entry script
 * also pulls in https, zlib and crypto (for its installer), which costs about 6 ms at every
 * start. Anything unexpected falls back to the entry script.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let cached: unknown;

/** koffi's module object; each caller describes the part it uses with its own interface. */
export function loadKoffi(): unknown {
  if (cached !== undefined) return cached;
  try {
    const version = (require('koffi/package.json') as { version: string }).version;
    const native = require(`koffi/build/koffi/${process.platform}_${process.arch}/koffi.node`) as { version: string };
    if (native.version === version) return (cached = native);
  } catch {
    // a layout this shortcut does not know: use koffi's own loader
  }
  return (cached = require('koffi') as unknown);
}
