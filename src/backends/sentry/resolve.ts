/**
 * Path resolution for the sentry's file family: reading a path argument once from workload
 * memory, choosing its base (the cwd, a dirfd's container path, or the dirfd itself), and
 * opening it inside the container root.
 *
 * Every lookup goes through openat2(2) with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS from the
 * root's O_PATH fd (or RESOLVE_BENEATH from a directory fd that was itself obtained that way or
 * from the workload): "..", absolute symlinks and absolute paths all stay inside the root, and
 * no /proc magic link of the sentry's own can be followed. Operations on a final component
 * open its parent that way and then act on one plain name (never "", ".", ".." or anything with
 * a "/") with an *at call that does not follow it.
 *
 * The workload has no real /proc or /sys: paths under them (and the /dev/fd, /dev/std* aliases)
 * are served by procfs.ts. A symlink of the rootfs may point there (/etc/mtab, /dev/fd): the
 * root's /proc and /sys hold at most procfs's listing mirrors (small tmpfs mounts), so the
 * kernel then either fails the lookup with ENOENT/ENOTDIR or ends on one of those tmpfs
 * (checked by st_dev); only then a user-space walk (`walk`) follows the path component by
 * component to find the synthetic path it names.
 */
import {
  AT, E, O, RESOLVE, close, cpath, fstatat, openat2, readlinkat,
} from '../../sys/kernel.js';
import * as procfs from './procfs.js';
import type { Reply, Sandbox, Task } from './types.js';

/** PATH_MAX: a path argument holds at most PATH_MAX - 1 bytes before its NUL. */
export const PATH_MAX = 4096;
/** Symlinks followed in one lookup before ELOOP (the kernel's MAXSYMLINKS). */
export const MAXSYMLINKS = 40;

/** File type bits of st_mode. */
export const S_IFMT = 0o170000;
/** st_mode type: directory. */
export const S_IFDIR = 0o040000;
/** st_mode type: regular file. */
export const S_IFREG = 0o100000;
/** st_mode type: symbolic link. */
export const S_IFLNK = 0o120000;
/** st_mode type: FIFO. */
export const S_IFIFO = 0o010000;
/** st_mode type: socket. */
export const S_IFSOCK = 0o140000;
/** st_mode type: character device. */
export const S_IFCHR = 0o020000;
/** st_mode type: block device. */
export const S_IFBLK = 0o060000;

/** Resolve flags of every lookup from the container root. */
const ROOT_RESOLVE = RESOLVE.IN_ROOT | RESOLVE.NO_MAGICLINKS;
/** Resolve flags of every lookup from a directory fd. */
const FD_RESOLVE = RESOLVE.BENEATH | RESOLVE.NO_MAGICLINKS;
const SLASH = 0x2f;
/** An empty path for the AT_EMPTY_PATH calls on a sentry-owned fd. */
export const EMPTY = cpath('');
/** How often a lookup retries openat2's EAGAIN (a rename raced with ".." resolution). */
const EAGAIN_RETRIES = 8;
/** Magic-link hops through /proc/PID/{root,cwd,fd/N}/... re-routed in one lookup. */
const MAX_MAGIC_HOPS = 8;

/** The synthetic-file layer this module routes to: procfs.ts, replaceable by tests (a seam). */
export interface SyntheticFs {
  isSynthetic(path: string): boolean;
  synthOpen(t: Task, sb: Sandbox, path: string, flags: number): Reply;
  synthStat(t: Task, sb: Sandbox, path: string, follow: boolean): Buffer | number;
  synthReadlink(t: Task, sb: Sandbox, path: string): Buffer | number;
  resolveSelf(t: Task, path: string): string;
  reopenFd(t: Task, sb: Sandbox, path: string, flags: number): Reply | null;
  magicPath(t: Task, sb: Sandbox, path: string): string | null;
  mirrorPath(t: Task, sb: Sandbox, path: string): void;
}

/** The synthetic layer in use (procfs.ts; the functions are looked up at call time). */
export const synthetic: SyntheticFs = {
  isSynthetic: (p) => procfs.isSynthetic(p),
  synthOpen: (t, sb, p, flags) => procfs.synthOpen(t, sb, p, flags),
  synthStat: (t, sb, p, follow) => procfs.synthStat(t, sb, p, follow),
  synthReadlink: (t, sb, p) => procfs.synthReadlink(t, sb, p),
  resolveSelf: (t, p) => procfs.resolveSelf(t, p),
  reopenFd: (t, sb, p, flags) => procfs.reopenFd(t, sb, p, flags),
  magicPath: (t, sb, p) => procfs.magicPath(t, sb, p),
  mirrorPath: (t, sb, p) => procfs.mirrorPath(t, sb, p),
};

/** Where a path argument is resolved: a container path, or a path relative to a sentry-owned dir fd. */
export type Loc = { path: Buffer } | { fd: number; rel: Buffer };

/** What a lookup found: a sentry-owned fd and its struct stat, or a synthetic path (canonical, self-resolved) for procfs. */
export type Found = { fd: number; st: Buffer } | { synth: string };

/** The parent directory (a sentry-owned O_PATH fd) and final component of a path. */
export interface Parent {
  dirfd: number;
  /** One component: never "", "." or "..", never containing "/". */
  name: Buffer;
  /** The path ended with "/" (the caller applies the kernel's trailing-slash rules). */
  slash: boolean;
}

/** The errno for a final component that is the root, "." or ".." (per operation). */
export type DotErr = number | { root: number; dot: number; dotdot: number };

/**
 * Reads path argument `i` once from workload memory: its bytes, or -EFAULT / -ENAMETOOLONG
 * (`check`: see Task.readString).
 */
export function readPathArg(t: Task, i: number, check = true): Buffer | number {
  const addr = t.num(i);
  if (addr <= 0) return -E.EFAULT;
  const p = t.readString(addr, PATH_MAX - 1, check);
  if (typeof p === 'number') return p < 0 ? p : -E.EFAULT;
  if (p.length > PATH_MAX - 1) return -E.ENAMETOOLONG;
  return p;
}

/** Joins a container directory path and a relative path (the result is resolved in the root). */
function joinPath(base: Buffer, rel: Buffer): Buffer {
  return base.length > 0 && base[base.length - 1] === SLASH ? Buffer.concat([base, rel]) : Buffer.concat([base, Buffer.of(SLASH), rel]);
}

/**
 * The base a path argument is resolved from: absolute paths as they are; relative ones joined
 * to the cwd (AT_FDCWD) or the dirfd's container path, or else relative to a duplicate of the
 * dirfd itself (a deleted or non-container directory). -ENOENT for an empty path, -EBADF for a
 * dirfd the task does not have.
 */
export function containerPath(t: Task, dirfd: number, path: Buffer): Loc | number {
  if (path.length === 0) return -E.ENOENT;
  if (path[0] === SLASH) return { path };
  const base = dirfd === AT.FDCWD ? t.cwd() : t.fdPath(dirfd);
  if (base !== null && base.length > 0 && base[0] === SLASH) {
    const joined = joinPath(base, path);
    if (joined.length < PATH_MAX || dirfd === AT.FDCWD) return { path: joined };
    // too long for one lookup from the root: resolve it beneath the directory instead
  } else if (dirfd === AT.FDCWD) {
    return -E.ENOENT; // the cwd is not (or no longer) a directory of the container
  }
  const fd = t.getFd(dirfd);
  return fd < 0 ? -E.EBADF : { fd, rel: path };
}

/** Closes the fd a Loc owns (if any). */
export function releaseLoc(loc: Loc): void {
  if ('fd' in loc) close(loc.fd);
}

/** A "//", a "." or ".." component, or a trailing "/" after something. */
const NOT_NORMAL = /\/\/|\/\.\.?(?:\/|$)|.\/$/s;

/** Lexically normalizes an absolute path: collapses "//", "." and ".." (".." of "/" is "/"). */
export function normalize(path: Buffer | string): string {
  const s = typeof path === 'string' ? path : path.toString('latin1');
  // already normal (the common case): absolute, no empty, "." or ".." component, no trailing "/"
  if (s.length > 0 && s.charCodeAt(0) === SLASH && !NOT_NORMAL.test(s)) return s;
  const out: string[] = [];
  for (const c of s.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') out.pop();
    else out.push(c);
  }
  return `/${out.join('/')}`;
}

/** Whether a path ends with "/" (which makes the kernel follow and require a directory). */
function endsWithSlash(p: Buffer | string): boolean {
  return typeof p === 'string' ? p.endsWith('/') : p.length > 0 && p[p.length - 1] === SLASH;
}

/**
 * Whether the kernel follows a path's last symlink even without being asked to: a trailing "/",
 * or a last component "." or ".." (lstat("/proc/self/.") is the process's directory).
 */
function followsLast(p: Buffer | string): boolean {
  const s = typeof p === 'string' ? p : p.toString('latin1');
  return s.endsWith('/') || s === '.' || s === '..' || s.endsWith('/.') || s.endsWith('/..');
}

/** Whether a canonical path is /proc, /sys or below (or otherwise claimed by procfs). */
function underSynthetic(p: string): boolean {
  return p === '/proc' || p.startsWith('/proc/') || p === '/sys' || p.startsWith('/sys/') || synthetic.isSynthetic(p);
}

const STD_ALIASES: Readonly<Record<string, number>> = { '/dev/stdin': 0, '/dev/stdout': 1, '/dev/stderr': 2 };

/** The /proc/self/fd path a /dev/fd or /dev/std* alias names, or null (the alias link itself when not followed). */
function devAlias(p: string, follow: boolean): string | null {
  if (p === '/dev/fd') return follow ? '/proc/self/fd' : null;
  if (p.startsWith('/dev/fd/')) return `/proc/self/fd/${p.slice('/dev/fd/'.length)}`;
  const n = STD_ALIASES[p];
  return n !== undefined && follow ? `/proc/self/fd/${n}` : null;
}

/**
 * The synthetic path a normalized container path names (through the /dev aliases), or null.
 * `follow` says whether the final component is followed.
 */
export function syntheticTarget(norm: string, follow: boolean): string | null {
  const p = devAlias(norm, follow) ?? norm;
  return underSynthetic(p) ? p : null;
}

/** The Found for a container path inside a synthetic tree (normalized, self-resolved), or -ENOENT if it is in none. */
export function syntheticFound(t: Task, path: string, follow: boolean): Found | number {
  const syn = syntheticTarget(normalize(path), follow);
  return syn === null ? -E.ENOENT : { synth: selfMap(t, syn, follow) };
}

/** Maps /proc/self and /proc/thread-self to the caller's pid, except the links themselves when not followed. */
function selfMap(t: Task, p: string, follow: boolean): string {
  if (!follow && (p === '/proc/self' || p === '/proc/thread-self')) return p;
  return synthetic.resolveSelf(t, p);
}

/** openat2 that retries the EAGAIN of a ".." race (unless the workload asked RESOLVE_CACHED). */
function openat2r(dirfd: number, path: Buffer, flags: number, mode: number, resolve: number): number {
  for (let i = 0; ; i++) {
    const fd = openat2(dirfd, path, flags, mode, resolve);
    if (fd !== -E.EAGAIN || (resolve & RESOLVE.CACHED) !== 0 || i >= EAGAIN_RETRIES) return fd;
  }
}

/** Flags of a sentry-side open: always close-on-exec, never acquiring a controlling terminal. */
function ownFlags(flags: number): number {
  return flags | O.CLOEXEC | ((flags & O.PATH) === 0 ? O.NOCTTY : 0);
}

/** Opens a container path inside the root (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS, plus `resolve`); fd or -errno. */
export function openInRoot(sb: Sandbox, path: Buffer | string, flags: number, mode = 0, resolve = 0): number {
  return openat2r(sb.rootFd, cpath(path), ownFlags(flags), mode, ROOT_RESOLVE | resolve);
}

/** Opens a Loc: from the root, or beneath its directory fd (RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS); fd or -errno. */
export function openLoc(sb: Sandbox, loc: Loc, flags: number, mode = 0, resolve = 0): number {
  if ('path' in loc) return openInRoot(sb, loc.path, flags, mode, resolve);
  return openat2r(loc.fd, cpath(loc.rel), ownFlags(flags), mode, FD_RESOLVE | resolve);
}

/** A 144-byte struct stat of a sentry-owned fd (the object itself, a symlink included), or -errno. */
export function statFd(fd: number): Buffer | number {
  const buf = Buffer.allocUnsafe(144); // fstatat fills all of it
  const rc = fstatat(fd, EMPTY, buf, AT.EMPTY_PATH);
  return rc < 0 ? rc : buf;
}

/** st_mode of a struct stat. */
export const modeOf = (st: Buffer): number => st.readUInt32LE(24);

/** st_dev of a struct stat. */
const devOf = (st: Buffer): bigint => st.readBigUInt64LE(0);

/** What marks the root's synthetic trees: the st_dev of their own mounts, and the (st_dev, st_ino) of /proc and /sys themselves. */
interface SyntheticMarks {
  rootFd: number;
  devs: bigint[];
  dirs: Array<readonly [bigint, bigint]>;
  /** The same as 32-bit halves, for the check every look-up makes: devs as [lo, hi], dirs as [dev lo, dev hi, ino lo, ino hi]. */
  devWords: Array<readonly [number, number]>;
  dirWords: Array<readonly [number, number, number, number]>;
}

const marksCache = new WeakMap<Sandbox, SyntheticMarks>();

/**
 * The marks of the root's /proc and /sys: their (st_dev, st_ino), and their st_dev when they are
 * mounts of their own (procfs's listing mirrors are tmpfs mounts there; a plain directory
 * shares the root's st_dev). Computed once per sandbox root.
 */
function syntheticMarks(sb: Sandbox): SyntheticMarks {
  const rootFd = sb.rootFd;
  const cached = marksCache.get(sb);
  if (cached !== undefined && cached.rootFd === rootFd) return cached;
  const marks: SyntheticMarks = { rootFd, devs: [], dirs: [], devWords: [], dirWords: [] };
  const rootSt = statFd(rootFd);
  if (typeof rootSt !== 'number') {
    for (const name of ['proc', 'sys']) {
      const fd = openat2(rootFd, cpath(name), O.PATH | O.NOFOLLOW | O.DIRECTORY | O.CLOEXEC, 0, FD_RESOLVE | RESOLVE.NO_SYMLINKS);
      if (fd < 0) continue;
      const st = statFd(fd);
      close(fd);
      if (typeof st === 'number') continue;
      marks.dirs.push([devOf(st), st.readBigUInt64LE(8)]);
      marks.dirWords.push([st.readUInt32LE(0), st.readUInt32LE(4), st.readUInt32LE(8), st.readUInt32LE(12)]);
      if (devOf(st) !== devOf(rootSt)) {
        marks.devs.push(devOf(st));
        marks.devWords.push([st.readUInt32LE(0), st.readUInt32LE(4)]);
      }
    }
  }
  marksCache.set(sb, marks);
  return marks;
}

/** st_dev of the filesystems mounted at the root's /proc and /sys (procfs's listing mirrors), if any. */
export function syntheticDevs(sb: Sandbox): readonly bigint[] {
  return syntheticMarks(sb).devs;
}

/**
 * Whether a struct stat is of the root's /proc or /sys directory or of an object on their own
 * mounts (a listing mirror, not content): a lookup that ends there reached a synthetic tree.
 */
export function inSyntheticMount(sb: Sandbox, st: Buffer): boolean {
  const m = syntheticMarks(sb);
  const devLo = st.readUInt32LE(0);
  const devHi = st.readUInt32LE(4);
  for (const [lo, hi] of m.devWords) if (lo === devLo && hi === devHi) return true;
  const inoLo = st.readUInt32LE(8);
  const inoHi = st.readUInt32LE(12);
  for (const [dl, dh, il, ih] of m.dirWords) if (dl === devLo && dh === devHi && il === inoLo && ih === inoHi) return true;
  return false;
}


const linkBuf = Buffer.alloc(PATH_MAX);

/** The target of the symlink `name` in `dirfd` (EMPTY: `dirfd` is an O_PATH fd of the link), or -errno. */
export function readLinkAt(dirfd: number, name: Buffer): Buffer | number {
  const n = readlinkat(dirfd, name, linkBuf);
  return n < 0 ? n : Buffer.from(linkBuf.subarray(0, n));
}

/** The components of a path (empty ones dropped). */
function components(p: string): string[] {
  return p.split('/').filter((c) => c !== '');
}

/**
 * Follows a container path component by component from the root (each step an openat2 of one
 * name, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS, O_NOFOLLOW; symlinks read with readlinkat and
 * absolute targets restarting from the root) to find whether it enters a synthetic tree.
 * Returns the canonical synthetic path (not self-resolved), null if the path stays in the real
 * tree (the caller keeps its original error), or -ELOOP after MAXSYMLINKS links.
 */
export function walk(sb: Sandbox, path: Buffer | string, follow: boolean): string | number | null {
  const s = typeof path === 'string' ? path : path.toString('latin1');
  const followLast = follow || followsLast(s);
  /** Components still to walk, next one last. */
  const pending = components(s).reverse();
  /** Owned fds of the directories walked below the root, deepest last, and their names. */
  const stack: number[] = [];
  const names: string[] = [];
  let links = 0;
  const reset = (): void => {
    while (stack.length > 0) close(stack.pop() as number);
    names.length = 0;
  };
  try {
    while (pending.length > 0) {
      const c = pending.pop() as string;
      if (c === '.') continue;
      if (c === '..') {
        if (stack.length > 0) close(stack.pop() as number);
        names.pop();
        continue;
      }
      const last = pending.length === 0;
      const here = `/${[...names, c].join('/')}`;
      const syn = syntheticTarget(here, !last || followLast);
      if (syn !== null) {
        const rest = pending.reverse().join('/');
        return normalize(rest === '' ? syn : `${syn}/${rest}`);
      }
      const cur = stack.length > 0 ? (stack[stack.length - 1] as number) : sb.rootFd;
      const fd = openat2(cur, cpath(c), O.PATH | O.NOFOLLOW | O.CLOEXEC, 0, FD_RESOLVE);
      if (fd < 0) return null;
      const st = statFd(fd);
      if (typeof st === 'number') {
        close(fd);
        return null;
      }
      const type = modeOf(st) & S_IFMT;
      if (type === S_IFLNK && (!last || followLast)) {
        const target = readLinkAt(fd, EMPTY);
        close(fd);
        if (typeof target === 'number' || target.length === 0) return null;
        if (++links > MAXSYMLINKS) return -E.ELOOP;
        const t = target.toString('latin1');
        if (t.startsWith('/')) reset();
        pending.push(...components(t).reverse());
        continue;
      }
      if (type === S_IFDIR) {
        stack.push(fd);
        names.push(c);
        continue;
      }
      close(fd);
      return null; // a real file: the end of the path, or ENOTDIR before it
    }
    return null;
  } finally {
    reset();
  }
}

/**
 * Whether a failed lookup went through a symlink (so that `walk` might find a synthetic tree):
 * the same lookup with RESOLVE_NO_SYMLINKS fails with ELOOP only then. Saves the walk for the
 * common ENOENT of a path without symlinks (a PATH or library search).
 */
function crossedSymlink(sb: Sandbox, path: Buffer, follow: boolean): boolean {
  const fd = openInRoot(sb, path, O.PATH | (follow ? 0 : O.NOFOLLOW), 0, RESOLVE.NO_SYMLINKS);
  if (fd >= 0) {
    close(fd); // it appeared meanwhile: keep the first answer
    return false;
  }
  return fd === -E.ELOOP;
}

/** The synthetic path a failed root lookup reaches through rootfs symlinks, -errno (ELOOP), or null. */
function slowWalk(sb: Sandbox, path: Buffer, follow: boolean, err: number, resolve: number): string | number | null {
  if (err !== -E.ENOENT && err !== -E.ENOTDIR) return null;
  if ((resolve & RESOLVE.NO_SYMLINKS) !== 0 || !crossedSymlink(sb, path, follow)) return null;
  return walk(sb, path, follow);
}

/**
 * Looks a Loc up for an operation on the object it names: opens it with `flags` (O_PATH for
 * most; O_NOFOLLOW for the "l" variants) in the root, or reports the synthetic path procfs
 * serves (directly, through the /dev aliases, through rootfs symlinks, or re-routed to the
 * real path a /proc/PID/{root,cwd,fd/N}/... path names). The caller closes the fd.
 */
export function lookup(t: Task, sb: Sandbox, loc: Loc, flags: number, mode = 0, resolve = 0): Found | number {
  if ('fd' in loc) {
    const fd = openLoc(sb, loc, flags, mode, resolve);
    if (fd < 0) return fd;
    const st = statFd(fd);
    if (typeof st === 'number' || inSyntheticMount(sb, st)) {
      close(fd);
      return typeof st === 'number' ? st : -E.ENOENT; // a listing mirror reached without a container path
    }
    return { fd, st };
  }
  const follow = (flags & O.NOFOLLOW) === 0 || followsLast(loc.path);
  let path = loc.path;
  for (let hop = 0; ; hop++) {
    let syn = syntheticTarget(normalize(path), follow);
    if (syn === null) {
      const fd = openInRoot(sb, path, flags, mode, resolve);
      let w: string | number | null;
      if (fd >= 0) {
        const st = statFd(fd);
        if (typeof st !== 'number' && !inSyntheticMount(sb, st)) return { fd, st };
        close(fd);
        if (typeof st === 'number') return st;
        // a rootfs symlink led into a listing mirror: find the synthetic path it names
        w = walk(sb, path, follow);
        if (w === null) return -E.ENOENT;
      } else {
        w = slowWalk(sb, path, follow, fd, resolve);
        if (w === null) return fd;
      }
      if (typeof w === 'number') return w;
      syn = w;
    }
    const mapped = selfMap(t, syn, follow);
    const real = synthetic.magicPath(t, sb, mapped);
    if (real === null) return { synth: mapped };
    if (hop >= MAX_MAGIC_HOPS) return -E.ELOOP;
    path = Buffer.from(endsWithSlash(path) ? `${real}/` : real, 'latin1');
  }
}

/** Splits a path into its parent part (raw, "." or "/" when none) and its last component. */
export function splitLast(p: Buffer): { parent: Buffer; name: Buffer; slash: boolean; kind: 'norm' | 'root' | 'dot' | 'dotdot' } {
  let end = p.length;
  while (end > 0 && p[end - 1] === SLASH) end--;
  const slash = end < p.length;
  if (end === 0) return { parent: Buffer.from('/'), name: Buffer.alloc(0), slash, kind: 'root' };
  const i = p.lastIndexOf(SLASH, end - 1);
  const name = p.subarray(i + 1, end);
  const parent = i < 0 ? Buffer.from('.') : i === 0 ? Buffer.from('/') : p.subarray(0, i);
  const n = name.toString('latin1');
  return { parent, name, slash, kind: n === '.' ? 'dot' : n === '..' ? 'dotdot' : 'norm' };
}

/** The errno of a non-normal final component. */
function dotErrno(e: DotErr, kind: 'root' | 'dot' | 'dotdot'): number {
  return typeof e === 'number' ? e : e[kind];
}

/**
 * Opens the parent directory of a path (O_PATH | O_DIRECTORY, in the root or beneath a Loc's
 * fd) and returns it with the final component; -dotErr for a final "/", "." or "..".
 */
export function openParent(sb: Sandbox, path: Buffer | Loc, dotErr: DotErr = E.EINVAL): Parent | number {
  const loc: Loc = Buffer.isBuffer(path) ? { path } : path;
  const sp = splitLast('path' in loc ? loc.path : loc.rel);
  if (sp.kind !== 'norm') return -dotErrno(dotErr, sp.kind);
  const parentLoc: Loc = 'path' in loc ? { path: sp.parent } : { fd: loc.fd, rel: sp.parent };
  const dirfd = openLoc(sb, parentLoc, O.PATH | O.DIRECTORY);
  return dirfd < 0 ? dirfd : { dirfd, name: Buffer.from(sp.name), slash: sp.slash };
}

/**
 * Like openParent, for an operation on a final component (create, remove, rename, link): also
 * reports a path inside a synthetic tree (directly, or whose parent a rootfs symlink leads
 * into) as `{ synth }`, the final component not followed. The caller closes the dirfd.
 */
export function lookupParent(t: Task, sb: Sandbox, loc: Loc, dotErr: DotErr = E.EINVAL): Parent | { synth: string } | number {
  if ('path' in loc) {
    const syn = syntheticTarget(normalize(loc.path), false);
    if (syn !== null) return { synth: selfMap(t, syn, false) };
  }
  const p = openParent(sb, loc, dotErr);
  let inMirror = false;
  if (typeof p !== 'number') {
    const st = statFd(p.dirfd);
    if (typeof st !== 'number' && !inSyntheticMount(sb, st)) return p;
    close(p.dirfd);
    if (typeof st === 'number') return st;
    inMirror = true;
  }
  if (!('path' in loc)) return inMirror ? -E.ENOENT : p;
  const sp = splitLast(loc.path);
  // the parent is a listing mirror (reached through a rootfs symlink), or missing: find whether
  // a rootfs symlink leads into a synthetic tree
  const w = inMirror ? walk(sb, sp.parent, true) : slowWalk(sb, sp.parent, true, p as number, 0);
  if (typeof w === 'number') return w;
  if (w === null) return inMirror ? -E.ENOENT : p;
  return { synth: selfMap(t, normalize(`${w}/${sp.name.toString('latin1')}`), false) };
}

/** The directory part of a Loc (for resolving a relative symlink target found in it). */
export function siblingLoc(loc: Loc, target: Buffer): Loc {
  if (target.length > 0 && target[0] === SLASH) return { path: target };
  if ('path' in loc) return { path: joinPath(splitLast(loc.path).parent, target) };
  return { fd: loc.fd, rel: joinPath(splitLast(loc.rel).parent, target) };
}
