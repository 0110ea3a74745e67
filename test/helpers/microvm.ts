/** When the microvm tests can run here: Moat as the runtime, root, QEMU and a guest kernel. */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { RUNTIME, skipReason } from './runtime.js';

/** Why microVMs cannot be tested here, or undefined when they can (printed by the skip). */
export function microvmSkipReason(): string | undefined {
  if (RUNTIME !== 'moat') return 'the microvm isolation is Moat-only';
  const base = skipReason();
  if (base) return base;
  try {
    execFileSync('sh', ['-c', 'command -v qemu-system-x86_64'], { stdio: 'ignore' });
  } catch {
    return 'qemu-system-x86_64 is not installed (Debian qemu-system-x86; .ci/run installs it)';
  }
  if (!existsSync('/boot') || !readdirSync('/boot').some((f) => f.startsWith('vmlinuz-'))) {
    return 'no guest kernel in /boot (Debian linux-image-amd64; .ci/run installs it)';
  }
  return undefined;
}
