/**
 * Where a VM's unix sockets live. A socket address holds 107 bytes of path, and engines give the
 * runtime long state directories (containerd's runc shim: /run/containerd/runc/k8s.io/<64-hex
 * id>; dockerd: /var/run/docker/runtime-runc/moby/<64-hex id>): a VM whose state directory
 * leaves too little room keeps its sockets (control, QMP, monitor, Firecracker's API and vsock)
 * in a short private directory named by a digest of the state directory instead.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Longest path a unix socket address can hold (sun_path is 108 bytes with its NUL). */
const SUN_PATH_MAX = 107;
/** Room for the longest socket name put there: Firecracker's vsock path plus its "_PORT" suffix, with margin. */
const NAME_ROOM = 24;

/** The directory for the sockets of the VM whose state directory is `stateDir` (itself when the names fit). */
export function socketDir(stateDir: string): string {
  if (Buffer.byteLength(stateDir) + 1 + NAME_ROOM <= SUN_PATH_MAX) return stateDir;
  const base = process.geteuid?.() === 0 ? '/run/moat-sock' : join(process.env.XDG_RUNTIME_DIR ?? tmpdir(), 'moat-sock');
  return join(base, createHash('sha256').update(stateDir).digest('hex').slice(0, 24));
}

/** Makes the socket directory of `stateDir` (mode 0700) when it is not the state directory; returns it. */
export function makeSocketDir(stateDir: string): string {
  const dir = socketDir(stateDir);
  if (dir !== stateDir) mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** Removes the socket directory of `stateDir` when it is not the state directory. */
export function removeSocketDir(stateDir: string): void {
  const dir = socketDir(stateDir);
  if (dir !== stateDir) rmSync(dir, { recursive: true, force: true });
}
