/**
 * The file family: every path-based system call, served as a "gofer" against the container
 * root. Each path is read once from workload memory and resolved inside the root by
 * resolve.ts (openat2 with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS); the sentry then acts on the
 * object through its own fd (AT_EMPTY_PATH, ftruncate, fstatfs) or on one final component of an
 * opened parent directory with a call that does not follow it. The kernel never acts on the
 * workload's path pointer, except where it must run the call in the caller's own context
 * (execve, chdir, opening /dev/tty): there the sentry checks the path first
 * and lets the call continue, and the kernel's own re-resolution is bounded by the jail (the
 * workload's root and mount namespace are the container's, with no /proc or /sys).
 *
 * The sentry runs with the workload's uid, gids and capabilities (set up by the core), so the
 * kernel makes every permission check. Paths under /proc and /sys go to procfs.ts.
 */
import {
  AT, E, O, RESOLVE, close, cpath, faccessat2, fcntl, fchmodat2, fchownat, fstatat, fstatfs, ftruncate, inotifyAddWatch as addWatch,
  inotifyInit1, linkat, mkdirat, mknodat, openat2, pidfdOpen, pipe2, poll, read, renameat2, statx, symlinkat, tee, unlinkat,
  utimensat, getxattr, setxattr, listxattr, removexattr,
} from '../../sys/kernel.js';
import {
  EMPTY, MAXSYMLINKS, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, containerPath,
  inSyntheticMount, lookup, lookupParent, modeOf, openInRoot, readLinkAt, readPathArg, releaseLoc, siblingLoc, statFd,
  syntheticFound, synthetic,
} from './resolve.js';
import type { DotErr, Found, Loc, Parent } from './resolve.js';
import { asSentry } from './ident.js';
import { posix } from 'node:path';
import { nsPid } from './view.js';
import { CONTINUE, fail, fromResult, giveFd, interruption, offload, ok } from './types.js';
import type { Handler, HandlerTable, Reply, Sandbox, Task } from './types.js';

/** open(2) flags the kernel accepts (VALID_OPEN_FLAGS); open and openat drop the rest. */
const VALID_OPEN =
  O.ACCMODE | O.CREAT | O.EXCL | O.NOCTTY | O.TRUNC | O.APPEND | O.NONBLOCK | O.DSYNC | 0o20000 /* FASYNC */ |
  O.DIRECT | O.LARGEFILE | O.DIRECTORY | O.NOFOLLOW | O.NOATIME | O.CLOEXEC | O.SYNC | O.PATH | O.TMPFILE;
/** fcntl(2) F_SETFL, and the file status flags it sets (the access mode and creation flags are not among them). */
const F_SETFL = 4;
/** fcntl(2) F_DUPFD_CLOEXEC. */
const F_DUPFD_CLOEXEC = 1030;
const STATUS_FLAGS = O.APPEND | O.NONBLOCK | O.DIRECT | O.NOATIME | 0o20000 /* O_ASYNC */;
/** The flags open(2) keeps with O_PATH. */
const O_PATH_FLAGS = O.PATH | O.DIRECTORY | O.NOFOLLOW | O.CLOEXEC;
/** __O_TMPFILE alone (O_TMPFILE includes O_DIRECTORY). */
const O_TMPFILE_BIT = 0o20000000;
/** Flags that create an inode, and so take a mode. */
const WILL_CREATE = O.CREAT | O_TMPFILE_BIT;
/** Resolve flags the kernel knows (openat2 rejects the rest with EINVAL). */
const VALID_RESOLVE = RESOLVE.NO_XDEV | RESOLVE.NO_MAGICLINKS | RESOLVE.NO_SYMLINKS | RESOLVE.BENEATH | RESOLVE.IN_ROOT | RESOLVE.CACHED;
/** sizeof(struct open_how) of its first version. */
const OPEN_HOW_SIZE = 24;
/** Largest struct open_how the kernel takes (a page). */
const OPEN_HOW_MAX = 4096;
/** statx(2) flags. */
const STATX_FLAGS = AT.SYMLINK_NOFOLLOW | AT.NO_AUTOMOUNT | AT.EMPTY_PATH | AT.STATX_SYNC_TYPE;
/** STATX_BASIC_STATS. */
const STATX_BASIC_STATS = 0x7ff;
/** STATX__RESERVED: a mask bit the kernel rejects. */
const STATX_RESERVED = 0x80000000;
/** renameat2(2) flags. */
const RENAME_NOREPLACE = 1;
const RENAME_EXCHANGE = 2;
const RENAME_WHITEOUT = 4;
/** utimensat(2) special nanosecond values. */
const UTIME_OMIT = (1 << 30) - 2;
/** inotify_add_watch(2) mask bits that change the lookup. */
const IN_ONLYDIR = 0x01000000;
const IN_DONT_FOLLOW = 0x02000000;
/** inotify: the event of a file being opened, and inotify_init1's non-blocking and close-on-exec flags. */
const IN_OPEN = 0x20;
const IN_NONBLOCK = O.NONBLOCK;
const IN_CLOEXEC = O.CLOEXEC;
/** poll(2) events. */
const POLLIN = 0x1;
const POLLHUP = 0x10;
/** tee(2) flag: do not wait for data. */
const SPLICE_F_NONBLOCK = 2;
/** pidfd_open(2) flag: a pidfd of one thread, readable once that thread has exited. */
const PIDFD_THREAD = O.EXCL;
/**
 * How long a worker waiting on a FIFO sleeps at most before it checks that its caller still
 * waits and has no signal pending (ms): how late a handled signal may interrupt that open.
 */
const FIFO_RECHECK_MS = 50;
/** statfs f_type of the synthesized trees. */
const PROC_SUPER_MAGIC = 0x9fa0;
const SYSFS_MAGIC = 0x62656572;
const CGROUP2_SUPER_MAGIC = 0x63677270;
/** st_rdev of /dev/tty (5, 0): the opener's controlling terminal. */
const DEV_TTY = 0x500;

const pass = (): Reply => CONTINUE;
const errno = (rc: number): Reply => fail(-rc);

/** A path argument as a Loc, 'empty' for an empty (or NULL) path with AT_EMPTY_PATH (the dirfd itself: onEmptyPath), or -errno. */
function argLoc(t: Task, dirfd: number, i: number, atFlags: number, check = true): Loc | 'empty' | number {
  const emptyOk = (atFlags & AT.EMPTY_PATH) !== 0;
  if (emptyOk && t.num(i) === 0) return 'empty';
  const p = readPathArg(t, i, check);
  if (typeof p === 'number') return p;
  if (emptyOk && p.length === 0) return 'empty';
  return containerPath(t, dirfd, p);
}

/** The path "." (an empty path with AT_FDCWD names the working directory). */
const DOT = Buffer.from('.');

/**
 * Runs `real` on the object an empty path with AT_EMPTY_PATH names: a duplicate of the caller's
 * fd `dirfd` (pidfd_getfd), or with AT_FDCWD its working directory, looked up as "." (`synth` if
 * that is a synthetic directory). Never CONTINUE: the kernel would read the path again, and by
 * then a thread of the workload may have written another one there, which the kernel would
 * resolve unchecked (glibc's fstat is newfstatat(fd, "", AT_EMPTY_PATH)).
 */
function onEmptyPath(t: Task, sb: Sandbox, dirfd: number, real: (fd: number) => Reply, synth: (path: string) => Reply): Reply {
  if (dirfd === AT.FDCWD) {
    const loc = containerPath(t, AT.FDCWD, DOT);
    if (typeof loc === 'number') return errno(loc);
    return onTarget(t, sb, loc, O.PATH, (fd) => real(fd), synth);
  }
  const dup = t.getFd(dirfd);
  if (dup < 0) return errno(dup);
  try {
    return real(dup);
  } finally {
    close(dup);
  }
}

/**
 * Runs `real` on a sentry-owned fd of the object a Loc names and its struct stat (or `synth` on
 * its synthetic path); releases everything.
 */
function onTarget(t: Task, sb: Sandbox, loc: Loc, flags: number, real: (fd: number, st: Buffer) => Reply, synth: (path: string) => Reply): Reply {
  try {
    const found = lookup(t, sb, loc, flags);
    if (typeof found === 'number') return errno(found);
    if ('synth' in found) {
      // /proc/self/fd/N followed names the caller's own open file (glibc's fchmodat and
      // futimens fallbacks use it): act on a duplicate of that fd, never on a path
      const own = (flags & O.NOFOLLOW) === 0 ? ownFd(t, found.synth) : -1;
      if (own < 0) return synth(found.synth);
      try {
        const st = Buffer.alloc(144);
        const rc = fstatat(own, cpath(''), st, AT.EMPTY_PATH);
        return rc < 0 ? errno(rc) : real(own, st);
      } finally {
        close(own);
      }
    }
    try {
      return real(found.fd, found.st);
    } finally {
      close(found.fd);
    }
  } finally {
    releaseLoc(loc);
  }
}

/** A duplicate of the caller's fd N when `path` is /proc/<its own pid>/fd/N, else -1. */
function ownFd(t: Task, path: string): number {
  const m = /^\/proc\/(\d+)(?:\/task\/\d+)?\/fd\/(\d+)$/.exec(path);
  if (m === null || Number(m[1]) !== nsPid(t.tgid)) return -1;
  const fd = t.getFd(Number(m[2]));
  return fd < 0 ? -1 : fd;
}

/** Runs `real` on the opened parent of a Loc's final component (closed afterwards); a synthetic path is EACCES. */
function withParent(t: Task, sb: Sandbox, loc: Loc, dotErr: DotErr, real: (p: Parent) => Reply): Reply {
  const p = lookupParent(t, sb, loc, dotErr);
  if (typeof p === 'number') return errno(p);
  if ('synth' in p) return fail(E.EACCES);
  try {
    return real(p);
  } finally {
    close(p.dirfd);
  }
}

/** withParent, then releases the Loc. */
function onParent(t: Task, sb: Sandbox, loc: Loc, dotErr: DotErr, real: (p: Parent) => Reply): Reply {
  try {
    return withParent(t, sb, loc, dotErr, real);
  } finally {
    releaseLoc(loc);
  }
}

/** st_mode of `name` in `dirfd` (not followed), or -errno. */
function lmode(dirfd: number, name: Buffer): number {
  const st = Buffer.alloc(144);
  const rc = fstatat(dirfd, cpath(name), st, AT.SYMLINK_NOFOLLOW);
  return rc < 0 ? rc : modeOf(st);
}

/** The kernel's answer to creating "name/" (not a directory): EEXIST if it exists, else ENOENT. */
function slashCreateErr(p: Parent): Reply {
  const m = lmode(p.dirfd, p.name);
  return fail(m >= 0 ? E.EEXIST : E.ENOENT);
}

/** Writes `data` at `addr` in the task, answering `val` (EFAULT if it is not mapped). */
function put(t: Task, addr: number, data: Buffer, val = 0): Reply {
  return addr > 0 && t.write(addr, data) ? ok(val) : fail(E.EFAULT);
}

/** The pid directory the caller's /proc/self resolves to (e.g. "/proc/7"). */
const selfDir = (t: Task): string => synthetic.resolveSelf(t, '/proc/self');

/** The fd number of a synthetic /proc/<caller>/fd/N path, or -1. */
function ownFdLink(t: Task, path: string): number {
  const m = /^(\/proc\/\d+)\/fd\/(\d+)$/.exec(path);
  if (m === null || m[1] !== selfDir(t)) return -1;
  const n = Number(m[2]);
  return n <= 0x7fffffff ? n : -1;
}

// ---------------------------------------------------------------------------------------------
// open

/** A sentry-side base directory for the workload's own RESOLVE_BENEATH / RESOLVE_IN_ROOT: the dirfd or the cwd. */
function baseDir(t: Task, sb: Sandbox, dirfd: number): number {
  if (dirfd !== AT.FDCWD) {
    const d = t.getFd(dirfd);
    return d < 0 ? -E.EBADF : d;
  }
  const cwd = t.cwd();
  return cwd === null ? -E.ENOENT : openInRoot(sb, cwd, O.PATH | O.DIRECTORY);
}

/**
 * Opens a path argument the way open(2) would for the workload (flags already validated, mode
 * already masked). With the workload's own RESOLVE_BENEATH or RESOLVE_IN_ROOT the lookup is
 * relative to its dirfd (or cwd) under those flags, which confine it below that directory;
 * otherwise it is resolved in the container root with the workload's other RESOLVE_* flags added.
 */
function openPath(t: Task, sb: Sandbox, dirfd: number, p: Buffer, flags: number, mode: number, resolve: number): Found | number {
  if ((resolve & (RESOLVE.BENEATH | RESOLVE.IN_ROOT)) !== 0) {
    if (p.length === 0) return -E.ENOENT;
    const d = baseDir(t, sb, dirfd);
    if (d < 0) return d;
    let fd: number;
    try {
      fd = openat2(d, cpath(p), flags | O.CLOEXEC | ((flags & O.PATH) === 0 ? O.NOCTTY : 0), mode, resolve | RESOLVE.NO_MAGICLINKS);
    } finally {
      close(d);
    }
    if (fd < 0) return fd;
    const st = statFd(fd);
    if (typeof st !== 'number' && !inSyntheticMount(sb, st)) return { fd, st };
    close(fd);
    if (typeof st === 'number') return st;
    // beneath a /proc or /sys directory fd (a listing mirror): the synthetic path it stands for
    const base = dirfd === AT.FDCWD ? t.cwd() : t.fdPath(dirfd);
    if (base === null) return -E.ENOENT;
    const follow = (flags & O.NOFOLLOW) === 0 || p[p.length - 1] === 0x2f;
    return syntheticFound(t, `${base.toString('latin1')}/${p.toString('latin1')}`, follow);
  }
  const loc = containerPath(t, dirfd, p);
  if (typeof loc === 'number') return loc;
  try {
    return lookup(t, sb, loc, flags, mode, resolve);
  } finally {
    releaseLoc(loc);
  }
}

/** Whether a struct stat is of /dev/tty, which only the caller itself can open (its controlling terminal). */
function isDevTty(st: Buffer): boolean {
  return (modeOf(st) & S_IFMT) === S_IFCHR && st.readBigUInt64LE(40) === BigInt(DEV_TTY);
}

/**
 * The common part of open, openat, openat2 and creat. O_NOFOLLOW is passed to openat2, which
 * applies it to the final component only (the same as opening the parent and then the name
 * with O_NOFOLLOW, with the kernel's exact trailing-slash rules). The sentry's own open never
 * takes a controlling terminal (O_NOCTTY) and is close-on-exec; the installed fd is
 * close-on-exec as the workload asked.
 */
function openCommon(t: Task, sb: Sandbox, dirfd: number, pathArg: number, flags: number, mode: number, resolve: number): Reply {
  // the serving thread found a FIFO opened for reading and passed its read end along
  if (t.onWorker && (t.held ?? -1) >= 0) return fifoReadEnd(t, sb, t.held!, flags);
  const p = readPathArg(t, pathArg);
  if (typeof p === 'number') return errno(p);
  const m = (flags & WILL_CREATE) !== 0 ? mode & ~t.umask() & 0o7777 : 0;
  // An open must not block the sentry (a FIFO waits for its peer): it is tried with O_NONBLOCK;
  // on the serving thread a FIFO then goes to a worker, and anything else gets its flags back.
  // On a worker, a FIFO opened for writing (it had no reader) waits there for one.
  const blocking = (flags & (O.NONBLOCK | O.PATH)) === 0;
  const probe = !t.onWorker && blocking;
  const waits = t.onWorker && blocking;
  const since = sb.fifoWaiters?.generation() ?? 0; // before the open: see recountFifoReaders
  let found = waits
    ? awaitFifoReader(t, sb, dirfd, p, flags & ~(O.CREAT | O.EXCL) | O.NONBLOCK, resolve)
    : openPath(t, sb, dirfd, p, probe ? flags | O.NONBLOCK : flags, m, resolve);
  if (typeof found !== 'number' && 'fd' in found && (flags & O.ACCMODE) === O.WRONLY && (modeOf(found.st) & S_IFMT) === S_IFIFO) {
    found = recountFifoReaders(t, sb, dirfd, p, found, flags, resolve, waits, since);
  }
  const cloexec = (flags & O.CLOEXEC) !== 0;
  if (typeof found === 'number') {
    if (found === -E.ENXIO && (flags & O.PATH) === 0) {
      const again = openPath(t, sb, dirfd, p, O.PATH | (flags & O.NOFOLLOW), 0, resolve);
      if (typeof again !== 'number' && 'fd' in again) {
        const tty = isDevTty(again.st);
        const fifo = (modeOf(again.st) & S_IFMT) === S_IFIFO;
        close(again.fd);
        // opened by the sentry, /dev/tty would be the sentry's terminal (ENXIO if it has none)
        if (tty) return CONTINUE; // checked: the caller's own terminal; re-resolution bounded by the jail
        if (fifo && probe) return offload(); // a FIFO opened for writing with no reader yet
      }
    }
    return errno(found);
  }
  if ((probe || waits) && !('synth' in found)) {
    if (probe && (modeOf(found.st) & S_IFMT) === S_IFIFO && (flags & O.ACCMODE) === O.RDONLY) {
      // a blocking read open waits for a writer: a worker waits for one (fifoReadEnd) and hands
      // out this read end, which stays open meanwhile, so a writer that the probe woke has its reader
      return offload(found.fd);
    }
    // the workload did not ask for O_NONBLOCK: give the open file its own status flags back
    const rc = fcntl(found.fd, F_SETFL, flags & STATUS_FLAGS);
    if (rc < 0) {
      close(found.fd);
      return errno(rc);
    }
  }
  if ('synth' in found) {
    const fdLink = /^\/proc\/\d+(?:\/task\/\d+)?\/fd\/\d+$/.test(found.synth);
    if (fdLink && (resolve & (RESOLVE.NO_MAGICLINKS | RESOLVE.NO_SYMLINKS)) !== 0 && (flags & O.NOFOLLOW) === 0) return fail(E.ELOOP);
    // SECCOMP_IOCTL_NOTIF_ADDFD cannot install an O_PATH file: a synthetic file is handed out
    // read-only instead (it is a sealed memfd or a listing directory; nothing more can be done)
    const f = (flags & O.PATH) !== 0 ? (flags & ~(O.PATH | O.NOFOLLOW)) | O.RDONLY : flags;
    return (fdLink ? synthetic.reopenFd(t, sb, found.synth, f) : null) ?? synthetic.synthOpen(t, sb, found.synth, f);
  }
  if ((flags & O.PATH) !== 0) {
    // SECCOMP_IOCTL_NOTIF_ADDFD cannot install an O_PATH file (fget refuses them). The path was
    // resolved in the root and is not synthetic; the kernel's re-resolution is bounded by the
    // jail, and an O_PATH fd carries no access: every later use of it comes back to the sentry
    close(found.fd);
    return CONTINUE;
  }
  if ((flags & O.PATH) === 0 && isDevTty(found.st)) {
    close(found.fd);
    // the kernel must open the caller's own controlling terminal; the path was checked to be
    // /dev/tty in the root, and the kernel's re-resolution is bounded by the jail
    return CONTINUE;
  }
  return giveFd(found.fd, cloexec);
}

/**
 * A FIFO just opened for writing (`w`) counted its readers, and one may be a read end the sentry
 * still holds, or held when the open began (`since`, a FifoWaiters generation), for a reader
 * that is gone (see awaitFifoWriter). Once those are dropped, a second non-blocking open, made
 * while `w` stays open (so that no reader sees a writer come and go), says whether a reader is
 * left: then `w` stands; if not, `w` closes unseen and the open goes on as one that found no
 * reader (ENXIO, which hands a blocking open to a worker; on a worker, the wait for a reader).
 * (An open that succeeded on a FIFO created nothing: O_CREAT and O_EXCL are left out.)
 */
function recountFifoReaders(t: Task, sb: Sandbox, dirfd: number, p: Buffer, w: Extract<Found, { fd: number }>, flags: number, resolve: number, waits: boolean, since: number): Found | number {
  if (!sb.fifoWaiters?.dropStale(w.st, since)) return w;
  const f = flags & ~(O.CREAT | O.EXCL);
  const check = openPath(t, sb, dirfd, p, f | O.NONBLOCK, 0, resolve);
  if (typeof check !== 'number' && 'fd' in check) {
    close(check.fd);
    return w;
  }
  close(w.fd);
  if (check !== -E.ENXIO) return check;
  return waits ? awaitFifoReader(t, sb, dirfd, p, f | O.NONBLOCK, resolve) : check;
}

/**
 * A blocking open of a FIFO for reading, on a worker: answered once a writer has opened it, as
 * the kernel's open would be. The read end that the serving thread's non-blocking probe opened
 * (`probe`) becomes the workload's file. Opening the FIFO again here would lose a race: a writer
 * that the probe let through may write and close before the second open starts to wait, which
 * then waits for a writer that never comes (found with `(echo hi > fifo &); cat fifo`).
 */
function fifoReadEnd(t: Task, sb: Sandbox, probe: number, flags: number): Reply {
  const rc = awaitFifoWriter(t, sb, probe);
  if (rc < 0) return errno(rc);
  const fd = fcntl(probe, F_DUPFD_CLOEXEC, 0); // the worker closes `probe` once it has answered
  if (fd < 0) return errno(fd);
  const set = fcntl(fd, F_SETFL, flags & STATUS_FLAGS);
  if (set < 0) {
    close(fd);
    return errno(set);
  }
  return giveFd(fd, (flags & O.CLOEXEC) !== 0);
}

/**
 * Waits until a writer has opened the FIFO whose read end is `fd` (opened non-blocking before
 * any wait): 0 then, -EINTR once the caller stopped waiting (killed), or -ERESTARTSYS once it
 * has a signal pending (the kernel then restarts its open or fails it with EINTR, as the
 * handler's SA_RESTART says, as for a native open). A writer counts once it is present
 * (tee(2) on the empty FIFO answers EAGAIN rather than 0) or has been since `fd` was opened (data
 * to read, or a hang-up, which poll reports only after a writer). An inotify watch for opens of
 * the FIFO wakes the wait when a writer comes and writes nothing yet; it is set before the first
 * check, so no writer can come between the check and the wait unnoticed. `fd` counts as a reader
 * while it is open, as the kernel counts a reader blocked in its open; a pidfd of the caller
 * ends the wait when it dies, as its open would. Not in the same instant, though: the kernel
 * drops a dying reader's count before its parent can see it exit, while `fd` stays until this
 * worker runs again. A writer's open that finds a reader therefore first has the ends held for
 * callers that are gone dropped (FifoWaiters.dropStale, which wakes this wait through the
 * worker's kick pipe) and opens again, so it never counts a reader that is gone.
 */
function awaitFifoWriter(t: Task, sb: Sandbox, fd: number): number {
  const watch = fifoWatch(t, sb, fd);
  if (typeof watch === 'number') return watch;
  const pipe = pipe2(O.NONBLOCK | O.CLOEXEC);
  try {
    if (typeof pipe === 'number') return pipe;
    const probe = Buffer.alloc(8);
    probe.writeInt32LE(fd, 0);
    probe.writeInt16LE(POLLIN, 4);
    for (;;) {
      probe.writeInt16LE(0, 6);
      if (poll(probe, 1, 0) > 0 && (probe.readInt16LE(6) & (POLLIN | POLLHUP)) !== 0) return 0;
      const copied = tee(fd, pipe[1], 1, SPLICE_F_NONBLOCK);
      if (copied === -E.EAGAIN || copied > 0) return 0; // a writer is there (or data came meanwhile)
      if (copied < 0) return copied;
      const stop = interruption(t); // as fifo_open's wait answers a signal
      if (stop < 0) return stop;
      watch.sleep(fd);
    }
  } finally {
    watch.close();
    if (typeof pipe !== 'number') {
      close(pipe[0]);
      close(pipe[1]);
    }
  }
}

/**
 * On a worker: opens `p` with `flags` (which hold O_NONBLOCK) until it no longer fails with ENXIO,
 * the answer of a FIFO opened for writing that has no reader. That is a blocking open's wait,
 * but one the sentry can abandon: -EINTR once the caller stopped waiting, -ERESTARTSYS once it
 * has a signal pending (a worker blocked in the kernel's open stayed so until a reader came,
 * and enough of them stopped the sentry). An
 * inotify watch for opens of the FIFO wakes the wait; it is set before the next try, so no
 * reader that stays can come unnoticed. (One that opens and closes again before the try is
 * missed: the kernel's own open would have returned, and the first write would fail, EPIPE.)
 * Every try after the first checks first that the caller still waits: an open for a caller
 * that is gone would show its reader a writer that came and went, an end of file.
 */
function awaitFifoReader(t: Task, sb: Sandbox, dirfd: number, p: Buffer, flags: number, resolve: number): Found | number {
  let watch: FifoWatch | undefined;
  try {
    for (;;) {
      const stop = watch ? interruption(t) : 0;
      if (stop < 0) return stop;
      const found = openPath(t, sb, dirfd, p, flags, 0, resolve);
      if (found !== -E.ENXIO) return found;
      if (watch) {
        watch.sleep(-1);
        continue;
      }
      const node = openPath(t, sb, dirfd, p, O.PATH | (flags & O.NOFOLLOW), 0, resolve);
      if (typeof node === 'number') return node;
      if (!('fd' in node)) return -E.ENXIO;
      const w = fifoWatch(t, sb, node.fd);
      close(node.fd);
      if (typeof w === 'number') return w;
      watch = w; // and try again now that a reader's open wakes the wait
    }
  } finally {
    watch?.close();
  }
}

/** What a worker waiting on a FIFO sleeps on: opens of the FIFO, the caller's end, and a kick from a writer's open. */
interface FifoWatch {
  /** Sleeps until the FIFO is opened, `fd` (if not -1) is readable or hung up, the caller exits, a writer's open asks for a check, or a second passes. */
  sleep(fd: number): void;
  close(): void;
}

/** An inotify watch for opens of the FIFO that `fifo` (any fd of it) names, a pidfd of the caller's thread, and this worker's kick pipe. */
function fifoWatch(t: Task, sb: Sandbox, fifo: number): FifoWatch | number {
  const ino = inotifyInit1(IN_NONBLOCK | IN_CLOEXEC);
  if (ino < 0) return ino;
  // the sentry's own watch: it needs read access to the FIFO, which a writer need not have
  const wd = asSentry(sb, () => addWatch(ino, `/proc/self/fd/${fifo}`, IN_OPEN));
  if (wd < 0) {
    close(ino);
    return wd;
  }
  const pidfd = pidfdOpen(t.tid, PIDFD_THREAD); // none (-ESRCH): gone already; the next check sees it
  const kick = sb.fifoWaiters?.kickFd() ?? -1;
  const fds = Buffer.alloc(32);
  const events = Buffer.allocUnsafe(4096);
  return {
    sleep(fd: number): void {
      let n = 0;
      for (const f of [ino, pidfd, fd, kick]) {
        if (f < 0) continue;
        fds.writeInt32LE(f, 8 * n);
        fds.writeInt16LE(POLLIN, 8 * n + 4);
        fds.writeInt16LE(0, 8 * n + 6);
        n++;
      }
      poll(fds, n, FIFO_RECHECK_MS);
      while (read(ino, events, events.length) > 0); // drain: every wake-up checks again
      sb.fifoWaiters?.drainKick();
    },
    close(): void {
      close(ino);
      if (pidfd >= 0) close(pidfd);
    },
  };
}

/** Flags and mode of open(2)/openat(2) as the kernel takes them (unknown flags dropped, O_PATH narrowing the rest). */
function legacyOpen(flagsArg: number, modeArg: number): { flags: number; mode: number } {
  let flags = flagsArg & VALID_OPEN;
  if ((flags & O.PATH) !== 0) flags &= O_PATH_FLAGS;
  return { flags, mode: (flags & WILL_CREATE) !== 0 ? modeArg & 0o7777 : 0 };
}

/** open(path, flags, mode). */
function open(t: Task, sb: Sandbox): Reply {
  const { flags, mode } = legacyOpen(t.int(1), t.int(2));
  return openCommon(t, sb, AT.FDCWD, 0, flags, mode, 0);
}

/** openat(dirfd, path, flags, mode). */
function openat(t: Task, sb: Sandbox): Reply {
  const { flags, mode } = legacyOpen(t.int(2), t.int(3));
  return openCommon(t, sb, t.int(0), 1, flags, mode, 0);
}

/** creat(path, mode) = open(path, O_CREAT|O_WRONLY|O_TRUNC, mode). */
function creat(t: Task, sb: Sandbox): Reply {
  return openCommon(t, sb, AT.FDCWD, 0, O.CREAT | O.WRONLY | O.TRUNC, t.int(1) & 0o7777, 0);
}

/** A decoded struct open_how, or -errno (EINVAL/E2BIG/EFAULT as openat2 checks it). */
function readOpenHow(t: Task): { flags: number; mode: number; resolve: number } | number {
  const size = t.num(3);
  if (size < OPEN_HOW_SIZE) return -E.EINVAL;
  if (size > OPEN_HOW_MAX) return -E.E2BIG;
  const how = t.read(t.num(2), size);
  if (how === null) return -E.EFAULT;
  for (let i = OPEN_HOW_SIZE; i < size; i++) if (how[i] !== 0) return -E.E2BIG;
  const flags = how.readBigUInt64LE(0);
  const mode = how.readBigUInt64LE(8);
  const resolve = how.readBigUInt64LE(16);
  if (flags > 0xffffffffn || (Number(flags) & ~VALID_OPEN) !== 0) return -E.EINVAL;
  if ((resolve & ~BigInt(VALID_RESOLVE)) !== 0n) return -E.EINVAL;
  const f = Number(flags);
  if ((f & WILL_CREATE) !== 0 ? mode > 0o7777n : mode !== 0n) return -E.EINVAL;
  return { flags: f, mode: Number(mode), resolve: Number(resolve) };
}

/** openat2(dirfd, path, how, size): the workload's RESOLVE_* flags are honoured on top of the sentry's. */
function openat2H(t: Task, sb: Sandbox): Reply {
  const how = readOpenHow(t);
  if (typeof how === 'number') return errno(how);
  return openCommon(t, sb, t.int(0), 1, how.flags, how.mode, how.resolve);
}

/**
 * Whether a call may block for long: an open (open, openat, openat2, creat) of a FIFO without
 * O_NONBLOCK waits for the other end, so the core runs it on a worker thread.
 */
export function mayBlock(_name: string, _t: Task, _sb: Sandbox): boolean {
  // opens find out themselves (a FIFO answers OFFLOAD); nothing else in this family blocks
  return false;
}

// ---------------------------------------------------------------------------------------------
// stat, access, readlink, statfs

/** A 256-byte struct statx built from a 144-byte struct stat (STATX_BASIC_STATS). */
function statxOf(st: Buffer): Buffer {
  const x = Buffer.alloc(256);
  const dev = st.readBigUInt64LE(0);
  const rdev = st.readBigUInt64LE(40);
  const major = (d: bigint): number => Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & 0xfffff000n));
  const minor = (d: bigint): number => Number((d & 0xffn) | ((d >> 12n) & 0xffffff00n));
  x.writeUInt32LE(STATX_BASIC_STATS, 0);
  x.writeUInt32LE(Number(st.readBigUInt64LE(56) & 0xffffffffn), 4);
  x.writeUInt32LE(Number(st.readBigUInt64LE(16) & 0xffffffffn), 16);
  x.writeUInt32LE(st.readUInt32LE(28), 20);
  x.writeUInt32LE(st.readUInt32LE(32), 24);
  x.writeUInt16LE(modeOf(st) & 0xffff, 28);
  x.writeBigUInt64LE(st.readBigUInt64LE(8), 32);
  x.writeBigUInt64LE(st.readBigUInt64LE(48), 40);
  x.writeBigUInt64LE(st.readBigUInt64LE(64), 48);
  // atime, ctime, mtime ({i64 sec, u32 nsec, pad}); btime stays 0 (not in the mask)
  for (const [from, to] of [[72, 64], [104, 96], [88, 112]] as const) {
    x.writeBigInt64LE(st.readBigInt64LE(from), to);
    x.writeUInt32LE(Number(st.readBigUInt64LE(from + 8) & 0xffffffffn), to + 8);
  }
  x.writeUInt32LE(major(rdev), 128);
  x.writeUInt32LE(minor(rdev), 132);
  x.writeUInt32LE(major(dev), 136);
  x.writeUInt32LE(minor(dev), 140);
  return x;
}

/** stat/lstat/newfstatat: the object's struct stat (synthetic paths from procfs). */
function statCommon(t: Task, sb: Sandbox, dirfd: number, pathArg: number, bufArg: number, flags: number): Reply {
  if ((flags & ~(AT.SYMLINK_NOFOLLOW | AT.NO_AUTOMOUNT | AT.EMPTY_PATH)) !== 0) return fail(E.EINVAL);
  // a look-up without side effects, answered through put() (which confirms the notification)
  const loc = argLoc(t, dirfd, pathArg, flags, false);
  if (typeof loc === 'number') return errno(loc);
  const nofollow = (flags & AT.SYMLINK_NOFOLLOW) !== 0;
  const addr = t.num(bufArg);
  const synth = (path: string): Reply => {
    const st = synthetic.synthStat(t, sb, path, !nofollow);
    return typeof st === 'number' ? errno(st) : put(t, addr, st);
  };
  if (loc === 'empty') {
    // fstat of the dirfd (glibc's fstat)
    const st = Buffer.allocUnsafe(144); // fstatat fills all of it
    const rc = viaCallerFd(t, dirfd, (path) => fstatat(AT.FDCWD, path, st, 0));
    if (rc !== undefined) return rc < 0 ? errno(rc) : put(t, addr, st);
    return onEmptyPath(t, sb, dirfd, (fd) => {
      const st = statFd(fd);
      return typeof st === 'number' ? errno(st) : put(t, addr, st);
    }, synth);
  }
  return onTarget(t, sb, loc, O.PATH | (nofollow ? O.NOFOLLOW : 0), (_fd, st) => put(t, addr, st), synth);
}

/**
 * Runs a stat-like `call` on the caller's open file `fd` through /proc/TID/fd/N (procfs follows
 * the magic link to the open file itself, whatever it is: one look-up, where a duplicate would
 * take four calls to make, stat and close): 0, or -EBADF if the caller has no such fd; undefined
 * for AT_FDCWD or if procfs refused (then the caller takes a duplicate). The reply's confirmation
 * that the notification is still pending (put) proves that TID was the caller's all along.
 */
function viaCallerFd(t: Task, fd: number, call: (path: Buffer) => number): number | undefined {
  if (fd < 0) return fd === AT.FDCWD ? undefined : -E.EBADF;
  const rc = call(callerFdPath(t, fd));
  if (rc === 0) return 0;
  return rc === -E.ENOENT ? -E.EBADF : undefined;
}

/** The host path of the caller's fd `fd` in procfs, which a look-up follows to the open file itself. */
const callerFdPath = (t: Task, fd: number): Buffer => cpath(`/proc/${t.tid}/fd/${fd}`);

/** statx(dirfd, path, flags, mask, buf). */
function statxH(t: Task, sb: Sandbox): Reply {
  const dirfd = t.int(0);
  const flags = t.int(2);
  const mask = Number(t.notif.args[3] & 0xffffffffn);
  if ((flags & ~STATX_FLAGS) !== 0 || (flags & AT.STATX_SYNC_TYPE) === AT.STATX_SYNC_TYPE) return fail(E.EINVAL);
  if ((mask & STATX_RESERVED) !== 0) return fail(E.EINVAL);
  const loc = argLoc(t, dirfd, 1, flags, false); // as stat: no side effects, answered through put()
  if (typeof loc === 'number') return errno(loc);
  const nofollow = (flags & AT.SYMLINK_NOFOLLOW) !== 0;
  const addr = t.num(4);
  const real = (fd: number): Reply => {
    const buf = Buffer.alloc(256);
    const rc = statx(fd, EMPTY, AT.EMPTY_PATH | (flags & (AT.STATX_SYNC_TYPE | AT.NO_AUTOMOUNT)), mask, buf);
    return rc < 0 ? errno(rc) : put(t, addr, buf);
  };
  const synth = (path: string): Reply => {
    const st = synthetic.synthStat(t, sb, path, !nofollow);
    return typeof st === 'number' ? errno(st) : put(t, addr, statxOf(st));
  };
  if (loc === 'empty') {
    // statx of the dirfd, as stat's
    const buf = Buffer.alloc(256);
    const rc = viaCallerFd(t, dirfd, (path) => statx(AT.FDCWD, path, flags & (AT.STATX_SYNC_TYPE | AT.NO_AUTOMOUNT), mask, buf));
    if (rc !== undefined) return rc < 0 ? errno(rc) : put(t, addr, buf);
    return onEmptyPath(t, sb, dirfd, real, synth);
  }
  return onTarget(t, sb, loc, O.PATH | (nofollow ? O.NOFOLLOW : 0), real, synth);
}

/** access on a synthetic path: existence, and the mode bits procfs reports (no kernel inode to ask). */
function synthAccess(t: Task, sb: Sandbox, path: string, mode: number, flags: number): Reply {
  const st = synthetic.synthStat(t, sb, path, (flags & AT.SYMLINK_NOFOLLOW) === 0);
  if (typeof st === 'number') return errno(st);
  if (mode === 0) return ok(0);
  const m = modeOf(st);
  const c = t.creds();
  const uid = (flags & AT.EACCESS) !== 0 ? c.euid : c.uid;
  const gid = (flags & AT.EACCESS) !== 0 ? c.egid : c.gid;
  if (uid === 0) return (mode & 1) === 0 || (m & 0o111) !== 0 ? ok(0) : fail(E.EACCES);
  const fuid = st.readUInt32LE(28);
  const fgid = st.readUInt32LE(32);
  const bits = uid === fuid ? (m >> 6) & 7 : gid === fgid || c.groups.includes(fgid) ? (m >> 3) & 7 : m & 7;
  return (bits & mode) === mode ? ok(0) : fail(E.EACCES);
}

/** access/faccessat/faccessat2: the kernel checks the sentry's (the workload's) credentials on the object. */
function accessCommon(t: Task, sb: Sandbox, dirfd: number, pathArg: number, mode: number, flags: number): Reply {
  if ((mode & ~7) !== 0) return fail(E.EINVAL);
  if ((flags & ~(AT.EACCESS | AT.SYMLINK_NOFOLLOW | AT.EMPTY_PATH)) !== 0) return fail(E.EINVAL);
  // no side effects: the answer is the reply, which the kernel refuses for a stale notification
  const loc = argLoc(t, dirfd, pathArg, flags, false);
  if (typeof loc === 'number') return errno(loc);
  const nofollow = (flags & AT.SYMLINK_NOFOLLOW) !== 0;
  // without AT_EACCESS the whole look-up is checked with the caller's real ids: this thread
  // takes those on and checks as itself (its real uid is the sentry's)
  if ((flags & AT.EACCESS) === 0) sb.ids?.actAsForAccess(t);
  const real = (fd: number): Reply => fromResult(faccessat2(fd, EMPTY, mode, AT.EMPTY_PATH | AT.EACCESS));
  const synth = (path: string): Reply => synthAccess(t, sb, path, mode, flags);
  if (loc === 'empty') return onEmptyPath(t, sb, dirfd, real, synth); // the dirfd itself
  return onTarget(t, sb, loc, O.PATH | (nofollow ? O.NOFOLLOW : 0), real, synth);
}

/** readlink/readlinkat: the target, truncated to bufsiz as the kernel does; the byte count. */
function readlinkCommon(t: Task, sb: Sandbox, dirfd: number, pathArg: number, bufArg: number, sizeArg: number): Reply {
  const size = t.int(sizeArg);
  if (size <= 0) return fail(E.EINVAL);
  const addr = t.num(bufArg);
  const answer = (target: Buffer | number): Reply => {
    if (typeof target === 'number') return errno(target);
    const out = target.subarray(0, Math.min(size, target.length));
    return put(t, addr, out, out.length);
  };
  const p = readPathArg(t, pathArg);
  if (typeof p === 'number') return errno(p);
  if (p.length === 0) {
    // readlinkat(fd, "") reads the symlink the fd itself is (an O_PATH|O_NOFOLLOW fd)
    if (dirfd === AT.FDCWD) return fail(E.ENOENT);
    const d = t.getFd(dirfd);
    if (d < 0) return fail(E.EBADF);
    try {
      return answer(readLinkAt(d, EMPTY));
    } finally {
      close(d);
    }
  }
  const loc = containerPath(t, dirfd, p);
  if (typeof loc === 'number') return errno(loc);
  return onTarget(t, sb, loc, O.PATH | O.NOFOLLOW, (fd) => {
    const target = readLinkAt(fd, EMPTY);
    // on an fd that is not a symlink, readlinkat(fd, "") answers ENOENT; readlink(path) EINVAL
    return answer(target === -E.ENOENT ? -E.EINVAL : target);
  }, (path) => answer(synthetic.synthReadlink(t, sb, path)));
}

/** A struct statfs for a synthesized tree. */
function synthStatfs(path: string): Buffer {
  const b = Buffer.alloc(120);
  const sys = path === '/sys' || path.startsWith('/sys/');
  // the cgroup v2 tree is a mount of its own (mountinfo lists it): how runtimes tell v2 from v1
  const cgroup = path === '/sys/fs/cgroup' || path.startsWith('/sys/fs/cgroup/');
  b.writeBigInt64LE(BigInt(cgroup ? CGROUP2_SUPER_MAGIC : sys ? SYSFS_MAGIC : PROC_SUPER_MAGIC), 0);
  b.writeBigInt64LE(4096n, 8);
  b.writeBigInt64LE(255n, 64);
  b.writeBigInt64LE(4096n, 72);
  // ST_VALID | ST_NOSUID | ST_NODEV | ST_NOEXEC, and ST_RDONLY for /sys
  b.writeBigInt64LE(BigInt(0x20 | 2 | 4 | 8 | (sys ? 1 : 0)), 80);
  return b;
}

/** statfs(path, buf): fstatfs of the resolved object. */
function statfs(t: Task, sb: Sandbox): Reply {
  const loc = argLoc(t, AT.FDCWD, 0, 0);
  if (loc === 'empty') return fail(E.ENOENT);
  if (typeof loc === 'number') return errno(loc);
  const addr = t.num(1);
  return onTarget(t, sb, loc, O.PATH, (fd) => {
    const buf = Buffer.alloc(120);
    const rc = fstatfs(fd, buf);
    return rc < 0 ? errno(rc) : put(t, addr, buf);
  }, (path) => {
    const st = synthetic.synthStat(t, sb, path, true);
    return typeof st === 'number' ? errno(st) : put(t, addr, synthStatfs(path));
  });
}

// ---------------------------------------------------------------------------------------------
// create and remove

/** mkdir/mkdirat: mode masked with the workload's umask (the sentry's own is 0). */
function mkdirCommon(t: Task, sb: Sandbox, dirfd: number, pathArg: number, mode: number): Reply {
  const loc = argLoc(t, dirfd, pathArg, 0);
  if (typeof loc !== 'object') return loc === 'empty' ? fail(E.ENOENT) : errno(loc);
  return onParent(t, sb, loc, E.EEXIST, (p) => fromResult(mkdirat(p.dirfd, cpath(p.name), mode & 0o7777 & ~t.umask())));
}

/** mknod/mknodat: regular files, FIFOs and sockets only; device nodes are EPERM. */
function mknodCommon(t: Task, sb: Sandbox, dirfd: number, pathArg: number, mode: number): Reply {
  const loc = argLoc(t, dirfd, pathArg, 0);
  if (typeof loc !== 'object') return loc === 'empty' ? fail(E.ENOENT) : errno(loc);
  const type = mode & S_IFMT;
  let refuse = 0;
  if (type === S_IFCHR || type === S_IFBLK || type === S_IFDIR) refuse = E.EPERM;
  else if (type !== 0 && type !== S_IFREG && type !== S_IFIFO && type !== S_IFSOCK) refuse = E.EINVAL;
  if (refuse !== 0) {
    releaseLoc(loc);
    return fail(refuse);
  }
  return onParent(t, sb, loc, E.EEXIST, (p) => {
    if (p.slash) return slashCreateErr(p);
    return fromResult(mknodat(p.dirfd, cpath(p.name), (type === 0 ? S_IFREG : type) | (mode & 0o7777 & ~t.umask()), 0));
  });
}

/** rmdir's answers for a final "/", "." and "..". */
const RMDIR_DOT = { root: E.EBUSY, dot: E.EINVAL, dotdot: E.ENOTEMPTY };

/** unlink/rmdir/unlinkat: removes one name of an opened parent. */
function unlinkCommon(t: Task, sb: Sandbox, dirfd: number, pathArg: number, flags: number): Reply {
  if ((flags & ~AT.REMOVEDIR) !== 0) return fail(E.EINVAL);
  const dir = (flags & AT.REMOVEDIR) !== 0;
  const loc = argLoc(t, dirfd, pathArg, 0);
  if (typeof loc !== 'object') return loc === 'empty' ? fail(E.ENOENT) : errno(loc);
  return onParent(t, sb, loc, dir ? RMDIR_DOT : E.EISDIR, (p) => {
    if (!dir && p.slash) {
      // "name/": the kernel answers ENOENT, EISDIR or ENOTDIR (a symlink is not followed)
      const m = lmode(p.dirfd, p.name);
      return fail(m < 0 ? -m : (m & S_IFMT) === S_IFDIR ? E.EISDIR : E.ENOTDIR);
    }
    return fromResult(unlinkat(p.dirfd, cpath(p.name), dir ? AT.REMOVEDIR : 0));
  });
}

/** rename/renameat/renameat2 between two opened parents (RENAME_WHITEOUT, which makes a device node, is EPERM). */
function renameCommon(t: Task, sb: Sandbox, oldDir: number, oldArg: number, newDir: number, newArg: number, flags: number): Reply {
  if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT)) !== 0) return fail(E.EINVAL);
  if ((flags & RENAME_EXCHANGE) !== 0 && (flags & (RENAME_NOREPLACE | RENAME_WHITEOUT)) !== 0) return fail(E.EINVAL);
  if ((flags & RENAME_WHITEOUT) !== 0) return fail(E.EPERM);
  const ol = argLoc(t, oldDir, oldArg, 0);
  if (typeof ol !== 'object') return ol === 'empty' ? fail(E.ENOENT) : errno(ol);
  const nl = argLoc(t, newDir, newArg, 0);
  if (typeof nl !== 'object') {
    releaseLoc(ol);
    return nl === 'empty' ? fail(E.ENOENT) : errno(nl);
  }
  try {
    return withParent(t, sb, ol, E.EBUSY, (op) =>
      withParent(t, sb, nl, (flags & RENAME_NOREPLACE) !== 0 ? E.EEXIST : E.EBUSY, (np) => {
        const exchange = (flags & RENAME_EXCHANGE) !== 0;
        if (op.slash || (np.slash && !exchange)) {
          const m = lmode(op.dirfd, op.name);
          if (m >= 0 && (m & S_IFMT) !== S_IFDIR) return fail(E.ENOTDIR);
        }
        if (exchange && np.slash) {
          const m = lmode(np.dirfd, np.name);
          if (m >= 0 && (m & S_IFMT) !== S_IFDIR) return fail(E.ENOTDIR);
        }
        return fromResult(renameat2(op.dirfd, cpath(op.name), np.dirfd, cpath(np.name), flags));
      }));
  } finally {
    releaseLoc(ol);
    releaseLoc(nl);
  }
}

/** Links the object a sentry-owned fd refers to (linkat AT_EMPTY_PATH; the kernel checks the privilege it needs). */
function linkFd(fd: number, np: Parent): Reply {
  return fromResult(linkat(fd, EMPTY, np.dirfd, cpath(np.name), AT.EMPTY_PATH));
}

/**
 * Resolves linkat's old path to a (parent, name) pair, following final symlinks inside the
 * root when asked (each target re-resolved from the link's directory or the root), then links.
 */
function linkFrom(t: Task, sb: Sandbox, old: Loc, np: Parent, follow: boolean): Reply {
  let cur = old;
  let wantDir = false;
  for (let hops = 0; ; hops++) {
    const op = lookupParent(t, sb, cur, E.EPERM);
    if (typeof op === 'number') return errno(op);
    if ('synth' in op) {
      // linkat(AT_FDCWD, "/proc/self/fd/N", ..., AT_SYMLINK_FOLLOW): link the caller's fd N
      const n = follow ? ownFdLink(t, op.synth) : -1;
      if (n < 0) return fail(E.EXDEV);
      const d = t.getFd(n);
      if (d < 0) return fail(E.ENOENT);
      try {
        return linkFd(d, np);
      } finally {
        close(d);
      }
    }
    try {
      wantDir ||= op.slash;
      const m = lmode(op.dirfd, op.name);
      if (m >= 0 && (m & S_IFMT) === S_IFLNK && (follow || op.slash)) {
        if (hops >= MAXSYMLINKS) return fail(E.ELOOP);
        const target = readLinkAt(op.dirfd, cpath(op.name));
        if (typeof target === 'number') return errno(target);
        if (target.length === 0) return fail(E.ENOENT);
        cur = siblingLoc(cur, target);
        continue;
      }
      if (wantDir && m >= 0) return fail((m & S_IFMT) === S_IFDIR ? E.EPERM : E.ENOTDIR);
      return fromResult(linkat(op.dirfd, cpath(op.name), np.dirfd, cpath(np.name), 0));
    } finally {
      close(op.dirfd);
    }
  }
}

/** link/linkat: both names resolved in the root; AT_SYMLINK_FOLLOW and AT_EMPTY_PATH supported. */
function linkCommon(t: Task, sb: Sandbox, oldDir: number, oldArg: number, newDir: number, newArg: number, flags: number): Reply {
  if ((flags & ~(AT.SYMLINK_FOLLOW | AT.EMPTY_PATH)) !== 0) return fail(E.EINVAL);
  const ol = argLoc(t, oldDir, oldArg, flags & AT.EMPTY_PATH);
  if (typeof ol === 'number') return errno(ol);
  const nl = argLoc(t, newDir, newArg, 0);
  if (typeof nl !== 'object') {
    if (ol !== 'empty') releaseLoc(ol);
    return nl === 'empty' ? fail(E.ENOENT) : errno(nl);
  }
  try {
    return withParent(t, sb, nl, E.EEXIST, (np) => {
      if (np.slash) return slashCreateErr(np);
      if (ol !== 'empty') return linkFrom(t, sb, ol, np, (flags & AT.SYMLINK_FOLLOW) !== 0);
      // linkat(fd, "", ..., AT_EMPTY_PATH): the object the workload's fd refers to
      if (oldDir === AT.FDCWD) return fail(E.EPERM); // the cwd: a directory
      const d = t.getFd(oldDir);
      if (d < 0) return fail(E.EBADF);
      try {
        return linkFd(d, np);
      } finally {
        close(d);
      }
    });
  } finally {
    releaseLoc(nl);
    if (ol !== 'empty') releaseLoc(ol);
  }
}

/** symlink/symlinkat: the target is stored verbatim (whoever follows it resolves it, inside the root). */
function symlinkCommon(t: Task, sb: Sandbox, targetArg: number, dirfd: number, pathArg: number): Reply {
  const target = readPathArg(t, targetArg);
  if (typeof target === 'number') return errno(target);
  if (target.length === 0) return fail(E.ENOENT);
  const loc = argLoc(t, dirfd, pathArg, 0);
  if (typeof loc !== 'object') return loc === 'empty' ? fail(E.ENOENT) : errno(loc);
  return onParent(t, sb, loc, E.EEXIST, (p) => (p.slash ? slashCreateErr(p) : fromResult(symlinkat(cpath(target), p.dirfd, cpath(p.name)))));
}

// ---------------------------------------------------------------------------------------------
// attributes

/** Resolves a path argument (following unless AT_SYMLINK_NOFOLLOW) and runs `real` on its O_PATH fd; synthetic paths are EACCES. */
function attrCommon(t: Task, sb: Sandbox, dirfd: number, pathArg: number, flags: number, real: (fd: number) => Reply): Reply {
  if ((flags & ~(AT.SYMLINK_NOFOLLOW | AT.EMPTY_PATH)) !== 0) return fail(E.EINVAL);
  const loc = argLoc(t, dirfd, pathArg, flags);
  if (loc === 'empty') return onEmptyPath(t, sb, dirfd, real, () => fail(E.EACCES)); // the dirfd itself
  if (typeof loc === 'number') return errno(loc);
  return onTarget(t, sb, loc, O.PATH | ((flags & AT.SYMLINK_NOFOLLOW) !== 0 ? O.NOFOLLOW : 0), real, () => fail(E.EACCES));
}

/** chmod family: fchmodat2(fd, "", mode, AT_EMPTY_PATH) on the resolved object. */
function chmodCommon(t: Task, sb: Sandbox, dirfd: number, pathArg: number, mode: number, flags: number): Reply {
  return attrCommon(t, sb, dirfd, pathArg, flags, (fd) => fromResult(fchmodat2(fd, EMPTY, mode & 0xffff, AT.EMPTY_PATH)));
}

/** chown family: fchownat(fd, "", uid, gid, AT_EMPTY_PATH) on the resolved object (-1 keeps an id). */
function chownCommon(t: Task, sb: Sandbox, dirfd: number, pathArg: number, uid: number, gid: number, flags: number): Reply {
  return attrCommon(t, sb, dirfd, pathArg, flags, (fd) => fromResult(fchownat(fd, EMPTY, uid, gid, AT.EMPTY_PATH)));
}

/** A struct timespec[2] from two (sec, nsec) pairs. */
function timespecs(a: bigint, an: bigint, m: bigint, mn: bigint): Buffer {
  const b = Buffer.alloc(32);
  b.writeBigInt64LE(a, 0);
  b.writeBigInt64LE(an, 8);
  b.writeBigInt64LE(m, 16);
  b.writeBigInt64LE(mn, 24);
  return b;
}

/** The times argument of utimes/futimesat (struct timeval[2]) as timespecs, null for now, or -errno. */
function readTimevals(t: Task, addr: number): Buffer | null | number {
  if (addr === 0) return null;
  const tv = addr > 0 ? t.read(addr, 32) : null;
  if (tv === null) return -E.EFAULT;
  const u0 = tv.readBigInt64LE(8);
  const u1 = tv.readBigInt64LE(24);
  if (u0 < 0n || u0 >= 1_000_000n || u1 < 0n || u1 >= 1_000_000n) return -E.EINVAL;
  return timespecs(tv.readBigInt64LE(0), u0 * 1000n, tv.readBigInt64LE(16), u1 * 1000n);
}

/** Sets times (null: now) on the resolved object with utimensat(fd, "", times, AT_EMPTY_PATH). */
function utimesCommon(t: Task, sb: Sandbox, dirfd: number, pathArg: number, times: Buffer | null, flags: number): Reply {
  return attrCommon(t, sb, dirfd, pathArg, flags, (fd) => fromResult(utimensat(fd, EMPTY, times, AT.EMPTY_PATH)));
}

/** utime(path, struct utimbuf *). */
function utime(t: Task, sb: Sandbox): Reply {
  const addr = t.num(1);
  let times: Buffer | null = null;
  if (addr !== 0) {
    const ub = addr > 0 ? t.read(addr, 16) : null;
    if (ub === null) return fail(E.EFAULT);
    times = timespecs(ub.readBigInt64LE(0), 0n, ub.readBigInt64LE(8), 0n);
  }
  return utimesCommon(t, sb, AT.FDCWD, 0, times, 0);
}

/** utimes(path, struct timeval[2]). */
function utimes(t: Task, sb: Sandbox): Reply {
  const times = readTimevals(t, t.num(1));
  if (typeof times === 'number') return errno(times);
  return utimesCommon(t, sb, AT.FDCWD, 0, times, 0);
}

/** futimesat(dirfd, path, struct timeval[2]): a NULL path with a dirfd sets the fd's times (fd-local). */
function futimesat(t: Task, sb: Sandbox): Reply {
  const dirfd = t.int(0);
  const times = readTimevals(t, t.num(2));
  if (typeof times === 'number') return errno(times);
  if (t.num(1) === 0 && dirfd !== AT.FDCWD) return CONTINUE;
  return utimesCommon(t, sb, dirfd, 1, times, 0);
}

/** utimensat(dirfd, path, times, flags): UTIME_NOW/UTIME_OMIT passed through; NULL path with a dirfd is futimens. */
function utimensatH(t: Task, sb: Sandbox): Reply {
  const dirfd = t.int(0);
  const flags = t.int(3);
  const addr = t.num(2);
  let times: Buffer | null = null;
  if (addr !== 0) {
    times = addr > 0 ? t.read(addr, 32) : null;
    if (times === null) return fail(E.EFAULT);
    // both omitted: nothing to do, and the kernel does not even look the path up
    if (times.readBigInt64LE(8) === BigInt(UTIME_OMIT) && times.readBigInt64LE(24) === BigInt(UTIME_OMIT)) return ok(0);
  }
  if (t.num(1) === 0) return dirfd === AT.FDCWD ? fail(E.EFAULT) : CONTINUE; // futimens: fd-local
  return utimesCommon(t, sb, dirfd, 1, times, flags);
}

/** truncate(path, length): the path resolved in the root, opened for writing, then ftruncate. */
function truncate(t: Task, sb: Sandbox): Reply {
  const len = BigInt.asIntN(64, t.notif.args[1]);
  const loc = argLoc(t, AT.FDCWD, 0, 0);
  if (typeof loc !== 'object') return loc === 'empty' ? fail(E.ENOENT) : errno(loc);
  if (len < 0n) {
    releaseLoc(loc);
    return fail(E.EINVAL);
  }
  return onTarget(t, sb, loc, O.PATH, (_pfd, st) => {
    // look before opening for writing: a directory, FIFO or device is never opened
    const type = modeOf(st) & S_IFMT;
    if (type === S_IFDIR) return fail(E.EISDIR);
    if (type !== S_IFREG) return fail(E.EINVAL);
    if (len > BigInt(Number.MAX_SAFE_INTEGER)) return fail(E.EFBIG);
    const w = lookup(t, sb, loc, O.WRONLY | O.NONBLOCK);
    if (typeof w === 'number') return errno(w);
    if ('synth' in w) return fail(E.EACCES);
    try {
      return fromResult(ftruncate(w.fd, Number(len)));
    } finally {
      close(w.fd);
    }
  }, () => fail(E.EACCES));
}

// ---------------------------------------------------------------------------------------------
// directories, exec, watches, xattrs

/**
 * chdir(path): resolves and checks a directory of the container, then lets the call continue:
 * the kernel re-resolves the path in the workload's own root and mount namespace (the
 * container's), which bounds it.
 */
function chdir(t: Task, sb: Sandbox): Reply {
  const loc = argLoc(t, AT.FDCWD, 0, 0);
  if (typeof loc !== 'object') return loc === 'empty' ? fail(E.ENOENT) : errno(loc);
  // The kernel walks the path again (CONTINUE), through the mirrors of /proc and /sys when it
  // names them, "self" links and magic links included: they must be there and name the caller.
  // (Only listings are refreshed here; what the chdir may reach is decided below.) A relative
  // path is walked from the caller's cwd, which is in a mirror then: its target's are refreshed.
  const literal = 'path' in loc ? loc.path.toString('latin1') : '';
  const absolute = /^\/+(proc|sys)(\/|$)/.test(literal);
  if (absolute) synthetic.mirrorPath(t, sb, posix.normalize(literal).replace(/(.)\/+$/, '$1'));
  return onTarget(t, sb, loc, O.PATH | O.DIRECTORY, () => CONTINUE, (path) => {
    const st = synthetic.synthStat(t, sb, path, true);
    if (typeof st === 'number') return errno(st);
    if ((modeOf(st) & S_IFMT) !== S_IFDIR) return fail(E.ENOTDIR);
    if (!absolute) synthetic.mirrorPath(t, sb, path);
    return CONTINUE; // checked: a directory of the synthetic tree, whose mirrors bound the walk
  });
}

/**
 * execve/execveat: the program is resolved in the root and must be a regular file there (not
 * under /proc or /sys; no magic link is ever followed). The call then continues: the kernel
 * must load the program into the caller. Its own re-resolution of the path (and of a script's
 * interpreter) happens in the workload's root and mount namespace, the container's: the jail
 * bounds it even if the workload rewrote the path meanwhile.
 */
function execCommon(t: Task, sb: Sandbox, dirfd: number, pathArg: number, flags: number): Reply {
  if ((flags & ~(AT.EMPTY_PATH | AT.SYMLINK_NOFOLLOW)) !== 0) return fail(E.EINVAL);
  const loc = argLoc(t, dirfd, pathArg, flags);
  if (loc === 'empty') return CONTINUE; // fexecve: runs the file the fd refers to (fd-local)
  if (typeof loc === 'number') return errno(loc);
  const nofollow = (flags & AT.SYMLINK_NOFOLLOW) !== 0;
  return onTarget(t, sb, loc, O.PATH | (nofollow ? O.NOFOLLOW : 0), (_fd, st) => {
    const type = modeOf(st) & S_IFMT;
    if (type === S_IFLNK) return fail(E.ELOOP);
    return type === S_IFREG ? CONTINUE : fail(E.EACCES);
  }, () => fail(E.EACCES));
}

/**
 * inotify_add_watch(fd, path, mask), performed by the sentry: the path is resolved in the root
 * (with IN_DONT_FOLLOW and IN_ONLYDIR applied there), and the watch is added to the caller's
 * inotify instance (a pidfd_getfd duplicate: the same group, so the same watch descriptors) on
 * the object resolved, named as /proc/self/fd/N of the sentry's own fd: the kernel looks up
 * nothing the workload could change after the check. Synthetic files cannot be watched (EACCES).
 */
function inotifyAddWatch(t: Task, sb: Sandbox): Reply {
  const mask = Number(t.notif.args[2] & 0xffffffffn);
  const loc = argLoc(t, AT.FDCWD, 1, 0);
  if (typeof loc !== 'object') return loc === 'empty' ? fail(E.ENOENT) : errno(loc);
  const flags = O.PATH | ((mask & IN_DONT_FOLLOW) !== 0 ? O.NOFOLLOW : 0) | ((mask & IN_ONLYDIR) !== 0 ? O.DIRECTORY : 0);
  return onTarget(t, sb, loc, flags, (fd) => {
    const group = t.getFd(t.int(0));
    if (group < 0) return fail(-group);
    try {
      // the magic link is followed to the object itself (a symlink opened with O_NOFOLLOW
      // stays that symlink); IN_DONT_FOLLOW would watch the link in /proc instead
      return fromResult(addWatch(group, `/proc/self/fd/${fd}`, mask & ~IN_DONT_FOLLOW));
    } finally {
      close(group);
    }
  }, () => fail(E.EACCES));
}

/** The largest extended attribute value and name list (XATTR_SIZE_MAX), and name (XATTR_NAME_MAX). */
const XATTR_SIZE_MAX = 65536;
const XATTR_NAME_MAX = 255;
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;

/** Which path xattr call a handler serves. */
type XattrOp = 'get' | 'set' | 'list' | 'remove';

/**
 * The attribute names the sentry sets or removes for the workload: user.* and POSIX ACLs, which
 * the kernel checks against the caller's identity (ident.ts: owner or CAP_FOWNER, write
 * access). The others are checked against capabilities of the sentry beyond the caller's own
 * file-system ones (security.capability against CAP_SETFCAP, trusted.* against CAP_SYS_ADMIN):
 * EPERM, as for a caller without them.
 */
const settable = (name: Buffer): boolean => {
  const s = name.toString('latin1');
  return s.startsWith('user.') || s === 'system.posix_acl_access' || s === 'system.posix_acl_default';
};

/**
 * The path variants of the xattr calls: the path is resolved in the root (following it, or not
 * for the l* variants), and the call is made by the kernel on that very object, through the
 * sentry's /proc/self/fd/N of it, with the caller's file-system identity (dispatch took it on).
 * A symlink itself (l* variants) holds no user attributes: ENODATA, an empty list, EPERM to set.
 * Synthetic /proc and /sys paths have none either, as procfs: an empty list, else EOPNOTSUPP.
 */
function xattrPath(op: XattrOp, follow: boolean): Handler {
  return (t, sb) => {
    let name: Buffer | null = null;
    if (op !== 'list') {
      const n = t.readString(t.num(1), XATTR_NAME_MAX + 1);
      if (typeof n === 'number') return errno(n === -E.ENAMETOOLONG ? -E.ERANGE : n);
      if (n.length === 0 || n.length > XATTR_NAME_MAX) return fail(E.ERANGE);
      name = n;
    }
    const size = t.num(op === 'list' ? 2 : 3);
    let value: Buffer | null = null;
    if (op === 'set') {
      const flags = t.int(4);
      if ((flags & ~(XATTR_CREATE | XATTR_REPLACE)) !== 0) return fail(E.EINVAL);
      if (size < 0 || size > XATTR_SIZE_MAX) return fail(E.E2BIG);
      value = size === 0 ? Buffer.alloc(0) : t.read(t.num(2), size);
      if (value === null) return fail(E.EFAULT);
    }
    const loc = argLoc(t, AT.FDCWD, 0, 0);
    if (typeof loc !== 'object') return loc === 'empty' ? fail(E.ENOENT) : errno(loc);
    return onTarget(t, sb, loc, O.PATH | (follow ? 0 : O.NOFOLLOW), (fd, st) => {
      const symlink = (modeOf(st) & S_IFMT) === S_IFLNK;
      if (op === 'set' || op === 'remove') {
        if (symlink || !settable(name!)) return fail(E.EPERM);
      } else if (symlink) {
        return op === 'list' ? ok(0) : fail(E.ENODATA);
      }
      const at = cpath(`/proc/self/fd/${fd}`);
      switch (op) {
        case 'set':
          return fromResult(setxattr(at, cpath(name!), value!, t.int(4)));
        case 'remove':
          return fromResult(removexattr(at, cpath(name!)));
        case 'get':
        case 'list': {
          const room = size < 0 ? XATTR_SIZE_MAX : Math.min(size, XATTR_SIZE_MAX);
          const buf = room === 0 ? null : Buffer.alloc(room);
          const n = op === 'get' ? getxattr(at, cpath(name!), buf) : listxattr(at, buf);
          if (n < 0 || buf === null) return fromResult(n);
          return t.write(t.num(op === 'list' ? 1 : 2), buf.subarray(0, n)) ? ok(n) : fail(E.EFAULT);
        }
      }
    }, () => (op === 'list' ? ok(0) : fail(E.EOPNOTSUPP)));
  };
}

/** Handlers of the file family, keyed by syscall name. */
export const handlers: HandlerTable = {
  open,
  openat,
  openat2: openat2H,
  creat,
  stat: (t, sb) => statCommon(t, sb, AT.FDCWD, 0, 1, 0),
  lstat: (t, sb) => statCommon(t, sb, AT.FDCWD, 0, 1, AT.SYMLINK_NOFOLLOW),
  fstat: pass,
  newfstatat: (t, sb) => statCommon(t, sb, t.int(0), 1, 2, t.int(3)),
  statx: statxH,
  access: (t, sb) => accessCommon(t, sb, AT.FDCWD, 0, t.int(1), 0),
  faccessat: (t, sb) => accessCommon(t, sb, t.int(0), 1, t.int(2), 0),
  faccessat2: (t, sb) => accessCommon(t, sb, t.int(0), 1, t.int(2), t.int(3)),
  readlink: (t, sb) => readlinkCommon(t, sb, AT.FDCWD, 0, 1, 2),
  readlinkat: (t, sb) => readlinkCommon(t, sb, t.int(0), 1, 2, 3),
  mkdir: (t, sb) => mkdirCommon(t, sb, AT.FDCWD, 0, t.int(1)),
  mkdirat: (t, sb) => mkdirCommon(t, sb, t.int(0), 1, t.int(2)),
  mknod: (t, sb) => mknodCommon(t, sb, AT.FDCWD, 0, t.int(1)),
  mknodat: (t, sb) => mknodCommon(t, sb, t.int(0), 1, t.int(2)),
  unlink: (t, sb) => unlinkCommon(t, sb, AT.FDCWD, 0, 0),
  rmdir: (t, sb) => unlinkCommon(t, sb, AT.FDCWD, 0, AT.REMOVEDIR),
  unlinkat: (t, sb) => unlinkCommon(t, sb, t.int(0), 1, t.int(2)),
  rename: (t, sb) => renameCommon(t, sb, AT.FDCWD, 0, AT.FDCWD, 1, 0),
  renameat: (t, sb) => renameCommon(t, sb, t.int(0), 1, t.int(2), 3, 0),
  renameat2: (t, sb) => renameCommon(t, sb, t.int(0), 1, t.int(2), 3, t.int(4)),
  link: (t, sb) => linkCommon(t, sb, AT.FDCWD, 0, AT.FDCWD, 1, 0),
  linkat: (t, sb) => linkCommon(t, sb, t.int(0), 1, t.int(2), 3, t.int(4)),
  symlink: (t, sb) => symlinkCommon(t, sb, 0, AT.FDCWD, 1),
  symlinkat: (t, sb) => symlinkCommon(t, sb, 0, t.int(1), 2),
  chmod: (t, sb) => chmodCommon(t, sb, AT.FDCWD, 0, t.int(1), 0),
  fchmod: pass,
  fchmodat: (t, sb) => chmodCommon(t, sb, t.int(0), 1, t.int(2), 0),
  fchmodat2: (t, sb) => chmodCommon(t, sb, t.int(0), 1, t.int(2), t.int(3)),
  chown: (t, sb) => chownCommon(t, sb, AT.FDCWD, 0, t.int(1), t.int(2), 0),
  lchown: (t, sb) => chownCommon(t, sb, AT.FDCWD, 0, t.int(1), t.int(2), AT.SYMLINK_NOFOLLOW),
  fchown: pass,
  fchownat: (t, sb) => chownCommon(t, sb, t.int(0), 1, t.int(2), t.int(3), t.int(4)),
  utime,
  utimes,
  futimesat,
  utimensat: utimensatH,
  truncate,
  statfs,
  fstatfs: pass,
  chdir,
  fchdir: pass,
  getcwd: pass, // the kernel prints the cwd relative to the task's root (the container's)
  chroot: () => fail(E.EPERM),
  execve: (t, sb) => execCommon(t, sb, AT.FDCWD, 0, 0),
  execveat: (t, sb) => execCommon(t, sb, t.int(0), 1, t.int(4)),
  getxattr: xattrPath('get', true),
  lgetxattr: xattrPath('get', false),
  listxattr: xattrPath('list', true),
  llistxattr: xattrPath('list', false),
  setxattr: xattrPath('set', true),
  lsetxattr: xattrPath('set', false),
  removexattr: xattrPath('remove', true),
  lremovexattr: xattrPath('remove', false),
  fgetxattr: pass,
  fsetxattr: pass,
  flistxattr: pass,
  fremovexattr: pass,
  inotify_add_watch: inotifyAddWatch,
};
