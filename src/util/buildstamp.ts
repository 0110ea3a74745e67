/**
 * A warm standby's check that the installation it was started from is still the one on disk.
 * The front end and the create derive a standby's key from its files' identity, so after a
 * rebuild or an upgrade no caller asks an old standby for anything again: it should give its
 * memory back at once rather than at the end of its idle time.
 */
import { statSync } from 'node:fs';

/** How often a waiting standby looks at the files of its build. */
export const BUILD_CHECK_MS = 5000;

/** The identity of `files` (device, inode, size, modification time); "-" for a missing one. */
export function buildStamp(files: readonly string[]): string {
  return files
    .map((f) => {
      try {
        const s = statSync(f, { bigint: true });
        return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}`;
      } catch {
        return '-';
      }
    })
    .join('|');
}

/**
 * Calls `onStale` once, when the stamp of `files` is no longer `since`, checking every
 * `everyMs` without keeping the event loop alive. Returns the function that stops the checks.
 */
export function watchBuild(files: readonly string[], since: string, onStale: () => void, everyMs = BUILD_CHECK_MS): () => void {
  const timer = setInterval(() => {
    if (buildStamp(files) === since) return;
    clearInterval(timer);
    onStale();
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
