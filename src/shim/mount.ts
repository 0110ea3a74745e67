/**
 * The container's root filesystem as containerd describes it in CreateTaskRequest.rootfs: a
 * list of mounts (an overlay of snapshot layers, or a bind mount) that the shim mounts on
 * `<bundle>/rootfs` before create and unmounts after delete.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { MoatError } from '../errors.js';
import { mount, umount2 } from '../sys/kernel.js';
import { MS, parseMountOptions } from '../backends/container/mounts.js';

/** One mount of containerd's rootfs list. */
export interface RootfsMount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

/** A rootfs mount the kernel refused, with the mount and the errno text. */
export class RootfsMountError extends MoatError {
  constructor(what: string, errno: number) {
    super(`rootfs: ${what}: ${errnoText(errno)}`);
  }
}

/** Mounts containerd's rootfs list on `target` in order; on failure, unmounts what it mounted. */
export function mountRootfs(mounts: readonly RootfsMount[], target: string): void {
  mkdirSync(target, { recursive: true });
  const done: string[] = [];
  try {
    for (const m of mounts) {
      const parsed = parseMountOptions(m.options, 'rootfs.options');
      const flags = parsed.flags;
      const data = parsed.data.join(',');
      const where = target; // containerd 1.6 rootfs mounts all land on the rootfs itself
      const bind = (flags & MS.BIND) !== 0;
      const page = Buffer.byteLength(data) + 1;
      if (page > 4096) throw new RootfsMountError(`${m.type} mount options are ${page} bytes (the kernel takes one page)`, 7 /* E2BIG */);
      let rc = mount(m.source, where, bind ? null : m.type, flags & ~(bind ? MS.RDONLY : 0), data || null);
      if (rc < 0) throw new RootfsMountError(`mount -t ${m.type} ${m.source} ${where}`, -rc);
      done.push(where);
      if (bind && (flags & MS.RDONLY) !== 0) {
        // a bind mount takes ro only on a remount
        rc = mount(null, where, null, flags | MS.REMOUNT, null);
        if (rc < 0) throw new RootfsMountError(`remount read-only ${where}`, -rc);
      }
    }
  } catch (e) {
    for (const where of done.reverse()) umount2(where, 2 /* MNT_DETACH */);
    throw e;
  }
}

/** Unmounts everything mounted on `target` (stacked mounts included); quiet when nothing is. */
export function unmountRootfs(target: string): void {
  for (let i = 0; i < 32 && isMountPoint(target); i++) {
    const rc = umount2(target, 0);
    if (rc < 0) {
      // busy (a process still holds it): detach, it goes when the last user does
      umount2(target, 2 /* MNT_DETACH */);
    }
  }
}

/** Whether `path` is a mount point in this mount namespace. */
export function isMountPoint(path: string): boolean {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  for (const line of text.split('\n')) {
    const mp = line.split(' ')[4];
    if (mp !== undefined && unescapeMountinfo(mp) === path) return true;
  }
  return false;
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** strerror-like text for an errno number: its name and number. */
export function errnoText(errno: number): string {
  for (const [name, n] of Object.entries(constants.errno)) if (n === errno) return `${name} (errno ${errno})`;
  return `errno ${errno}`;
}
