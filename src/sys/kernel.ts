/**
 * Raw system calls for the sentry (through koffi). Every function here returns what the kernel
 * returns: a non-negative result, or -errno on failure. Nothing throws on a failed call, so a
 * handler can pass the kernel's answer straight back to the workload.
 *
 * Paths are Buffers holding the exact bytes (NUL-terminated by `cpath`): file names are bytes,
 * not text, and the sentry never re-encodes them.
 */
import { readdirSync } from 'node:fs';
import type { Socket } from 'node:net';
import { HostError } from '../errors.js';
import { loadKoffi } from './koffi.js';


/** x86_64 system call numbers the sentry calls itself (those without a glibc wrapper). */
export const NR = {
  renameat2: 316,
  seccomp: 317,
  process_vm_readv: 310,
  process_vm_writev: 311,
  memfd_create: 319,
  tgkill: 234,
  pidfd_send_signal: 424,
  pidfd_open: 434,
  openat2: 437,
  pidfd_getfd: 438,
  faccessat2: 439,
  fchmodat2: 452,
} as const;

/** ioctl request numbers of a seccomp user-notification fd (linux/seccomp.h). */
export const SECCOMP_IOCTL = {
  NOTIF_RECV: 0xc0502100,
  NOTIF_SEND: 0xc0182101,
  NOTIF_ID_VALID: 0x40082102,
  NOTIF_ADDFD: 0x40182103,
  NOTIF_SET_FLAGS: 0x40082104,
} as const;

/** Flags of seccomp notifications, responses and ADDFD (linux/seccomp.h). */
export const SECCOMP_FLAG = {
  /** Response: let the kernel run the syscall as the workload asked. */
  USER_NOTIF_FLAG_CONTINUE: 1,
  /** ADDFD: install the fd and answer the notification with its number, atomically. */
  ADDFD_FLAG_SEND: 2,
  /** ADDFD: put the fd at newfd. */
  ADDFD_FLAG_SETFD: 1,
  /** SET_FLAGS: wake the workload synchronously on the answering CPU (Linux 6.6+). */
  USER_NOTIF_FD_SYNC_WAKE_UP: 1,
} as const;

/** openat2(2) resolve flags. */
export const RESOLVE = {
  NO_XDEV: 0x01,
  NO_MAGICLINKS: 0x02,
  NO_SYMLINKS: 0x04,
  BENEATH: 0x08,
  IN_ROOT: 0x10,
  CACHED: 0x20,
} as const;

/** open(2) flags and other fcntl.h constants (x86_64). */
export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  ACCMODE: 3,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DSYNC: 0o10000,
  DIRECT: 0o40000,
  LARGEFILE: 0o100000,
  DIRECTORY: 0o200000,
  NOFOLLOW: 0o400000,
  NOATIME: 0o1000000,
  CLOEXEC: 0o2000000,
  SYNC: 0o4010000,
  PATH: 0o10000000,
  TMPFILE: 0o20200000,
} as const;

/** *at(2) flags. */
export const AT = {
  FDCWD: -100,
  SYMLINK_NOFOLLOW: 0x100,
  REMOVEDIR: 0x200,
  EACCESS: 0x200,
  SYMLINK_FOLLOW: 0x400,
  NO_AUTOMOUNT: 0x800,
  EMPTY_PATH: 0x1000,
  STATX_SYNC_TYPE: 0x6000,
} as const;

/** errno values (x86_64 Linux). */
export const E = {
  EPERM: 1, ENOENT: 2, ESRCH: 3, EINTR: 4, EIO: 5, ENXIO: 6, E2BIG: 7, ENOEXEC: 8, EBADF: 9, ECHILD: 10,
  EAGAIN: 11, ENOMEM: 12, EACCES: 13, EFAULT: 14, EBUSY: 16, EEXIST: 17, EXDEV: 18, ENODEV: 19,
  ENOTDIR: 20, EISDIR: 21, EINVAL: 22, ENFILE: 23, EMFILE: 24, ENOTTY: 25, ETXTBSY: 26, EFBIG: 27,
  ENOSPC: 28, ESPIPE: 29, EROFS: 30, EMLINK: 31, EPIPE: 32, ERANGE: 34, ENAMETOOLONG: 36, ENOSYS: 38,
  ENOTEMPTY: 39, ELOOP: 40, ENODATA: 61, EOVERFLOW: 75, ENOTSOCK: 88, EDESTADDRREQ: 89,
  EPROTOTYPE: 91, ENOPROTOOPT: 92, EPROTONOSUPPORT: 93, EOPNOTSUPP: 95, EAFNOSUPPORT: 97,
  EADDRINUSE: 98, EADDRNOTAVAIL: 99, ENETUNREACH: 101, ECONNREFUSED: 111, EHOSTUNREACH: 113,
  EALREADY: 114, EINPROGRESS: 115,
  /**
   * Not an errno a program sees: a system call's answer that makes the kernel restart it once the
   * pending signal's handler returns (SA_RESTART), or fail with EINTR (no SA_RESTART).
   */
  ERESTARTSYS: 512,
} as const;

/** A NUL-terminated copy of a path for the kernel. */
export function cpath(p: Buffer | string): Buffer {
  const b = typeof p === 'string' ? Buffer.from(p, 'latin1') : p;
  const out = Buffer.allocUnsafe(b.length + 1);
  b.copy(out);
  out[b.length] = 0;
  return out;
}

type Fn = ((...args: unknown[]) => number | bigint) & {
  /** koffi's asynchronous form: the call runs on a libuv threadpool thread; the callback gets its result on this thread. */
  async(...argsThenCallback: unknown[]): void;
};

interface KoffiLib {
  func(sig: string): Fn;
}

interface Koffi {
  load(name: string): KoffiLib;
  errno(): number;
  struct(name: string, def: Record<string, string>): unknown;
}


/** The bound functions; each returns -1 with errno set, as libc does. */
interface Bound {
  errno(): number;
  ioctlBuf(fd: number, req: number, buf: Buffer): number;
  ioctlVal(fd: number, req: number, val: number): number;
  poll(fds: Buffer, n: number, timeout: number): number;
  /** poll(2) on a libuv threadpool thread. */
  pollAsync(fds: Buffer, n: number, timeout: number, done: (err: unknown, rc: number) => void): void;
  openat(dirfd: number, path: Buffer, flags: number, mode: number): number;
  openat2(nr: number, dirfd: number, path: Buffer, how: Buffer, size: number): number;
  close(fd: number): number;
  pread(fd: number, buf: Buffer, n: number, off: number): number;
  pwrite(fd: number, buf: Buffer, n: number, off: number): number;
  read(fd: number, buf: Buffer, n: number): number;
  write(fd: number, buf: Buffer, n: number): number;
  readlinkat(dirfd: number, path: Buffer, buf: Buffer, n: number): number;
  fstatat(dirfd: number, path: Buffer, buf: Buffer, flags: number): number;
  statx(dirfd: number, path: Buffer, flags: number, mask: number, buf: Buffer): number;
  fstatfs(fd: number, buf: Buffer): number;
  mkdirat(dirfd: number, path: Buffer, mode: number): number;
  mknodat(dirfd: number, path: Buffer, mode: number, dev: number): number;
  unlinkat(dirfd: number, path: Buffer, flags: number): number;
  renameat2(nr: number, olddir: number, oldpath: Buffer, newdir: number, newpath: Buffer, flags: number): number;
  linkat(olddir: number, oldpath: Buffer, newdir: number, newpath: Buffer, flags: number): number;
  symlinkat(target: Buffer, dirfd: number, path: Buffer): number;
  fchmodat2(nr: number, dirfd: number, path: Buffer, mode: number, flags: number): number;
  fchownat(dirfd: number, path: Buffer, uid: number, gid: number, flags: number): number;
  utimensat(dirfd: number, path: Buffer, times: Buffer | null, flags: number): number;
  faccessat2(nr: number, dirfd: number, path: Buffer, mode: number, flags: number): number;
  ftruncate(fd: number, len: number): number;
  fcntl(fd: number, cmd: number, arg: number): number;
  memfdCreate(nr: number, name: Buffer, flags: number): number;
  pidfdOpen(nr: number, pid: number, flags: number): number;
  pidfdGetfd(nr: number, pidfd: number, fd: number, flags: number): number;
  pidfdSendSignal(nr: number, pidfd: number, sig: number, info: null, flags: number): number;
  tgkill(nr: number, tgid: number, tid: number, sig: number): number;
  socket(domain: number, type: number, proto: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  connect(fd: number, addr: Buffer, len: number): number;
  sendto(fd: number, buf: Buffer, n: number, flags: number, addr: Buffer | null, len: number): number;
  getsockopt(fd: number, level: number, name: number, val: Buffer, len: Buffer): number;
  seccompFilter(nr: number, op: number, flags: number, prog: { len: number; filter: Buffer }): number;
  capset(hdr: Buffer, data: Buffer): number;
  capget(hdr: Buffer, data: Buffer): number;
  getxattr(path: Buffer, name: Buffer, value: Buffer | null, size: number): number;
  setxattr(path: Buffer, name: Buffer, value: Buffer, size: number, flags: number): number;
  listxattr(path: Buffer, list: Buffer | null, size: number): number;
  removexattr(path: Buffer, name: Buffer): number;
  setfsid(nr: number, id: number): number;
  setresid(nr: number, r: number, e: number, s: number): number;
  setgroupsRaw(nr: number, n: number, list: Buffer): number;
  prctl(op: number, a: number, b: number, c: number, d: number): number;
  getdents64(fd: number, buf: Buffer, n: number): number;
  schedGetcpu(): number;
  schedGetaffinity(pid: number, n: number, mask: Buffer): number;
  schedSetaffinity(pid: number, n: number, mask: Buffer): number;
  schedSetscheduler(pid: number, policy: number, param: Buffer): number;
  pthreadSigmask(how: number, set: Buffer | null, old: Buffer | null): number;
  schedGetscheduler(pid: number): number;
  setrlimit(resource: number, rlim: Buffer): number;
  processVmReadv(pid: number, local: { base: Buffer; len: number }, ln: number, remote: { base: number; len: number }, rn: number, flags: number): number;
  processVmWritev(pid: number, local: { base: Buffer; len: number }, ln: number, remote: { base: number; len: number }, rn: number, flags: number): number;
  listen(fd: number, backlog: number): number;
  mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null): number;
  umount2(target: string, flags: number): number;
  pipe2(fds: Buffer, flags: number): number;
  tee(fdIn: number, fdOut: number, len: number, flags: number): number;
  inotifyInit1(flags: number): number;
  inotifyAddWatch(fd: number, path: Buffer, mask: number): number;
  dup3(fd: number, target: number, flags: number): number;
  setns(fd: number, nstype: number): number;
  unshare(flags: number): number;
  accept4(fd: number, addr: null, len: null, flags: number): number;
  // --- sockets (sys_socket.ts)
  getsockname(fd: number, addr: Buffer, len: Buffer): number;
  getpeername(fd: number, addr: Buffer, len: Buffer): number;
  sendmsg(
    fd: number,
    msg: {
      msg_name: Buffer | null;
      msg_namelen: number;
      msg_iov: { iov_base: Buffer; iov_len: number }[];
      msg_iovlen: number;
      msg_control: Buffer | null;
      msg_controllen: number;
      msg_flags: number;
    },
    flags: number,
  ): number;
  // --- end sockets (sys_socket.ts)
}

let bound: Bound | undefined;

function b(): Bound {
  if (bound) return bound;
  const koffi = loadKoffi() as Koffi;
  const lib = koffi.load('libc.so.6');
  const f = (sig: string) => lib.func(sig) as (...a: unknown[]) => number;
  koffi.struct('moat_sock_fprog', { len: 'uint16_t', filter: 'uint8_t *' });
  bound = {
    errno: () => koffi.errno(),
    ioctlBuf: f('int ioctl(int fd, unsigned long req, _Inout_ uint8_t *buf)'),
    ioctlVal: f('int ioctl(int fd, unsigned long req, unsigned long val)'),
    poll: f('int poll(_Inout_ uint8_t *fds, unsigned long n, int timeout)'),
    pollAsync: (() => {
      const fn = lib.func('int poll(_Inout_ uint8_t *fds, unsigned long n, int timeout)');
      return (fds: Buffer, n: number, timeout: number, done: (err: unknown, rc: number) => void) => fn.async(fds, n, timeout, done);
    })(),
    openat: f('int openat(int dirfd, const uint8_t *path, int flags, uint32_t mode)'),
    openat2: f('long syscall(long nr, int dirfd, const uint8_t *path, const uint8_t *how, size_t size)'),
    close: f('int close(int fd)'),
    pread: f('long pread(int fd, _Out_ uint8_t *buf, size_t n, int64_t off)'),
    pwrite: f('long pwrite(int fd, const uint8_t *buf, size_t n, int64_t off)'),
    read: f('long read(int fd, _Out_ uint8_t *buf, size_t n)'),
    write: f('long write(int fd, const uint8_t *buf, size_t n)'),
    readlinkat: f('long readlinkat(int dirfd, const uint8_t *path, _Out_ uint8_t *buf, size_t n)'),
    fstatat: f('int fstatat(int dirfd, const uint8_t *path, _Out_ uint8_t *buf, int flags)'),
    statx: f('int statx(int dirfd, const uint8_t *path, int flags, uint32_t mask, _Out_ uint8_t *buf)'),
    fstatfs: f('int fstatfs(int fd, _Out_ uint8_t *buf)'),
    mkdirat: f('int mkdirat(int dirfd, const uint8_t *path, uint32_t mode)'),
    mknodat: f('int mknodat(int dirfd, const uint8_t *path, uint32_t mode, uint64_t dev)'),
    unlinkat: f('int unlinkat(int dirfd, const uint8_t *path, int flags)'),
    renameat2: f('long syscall(long nr, int olddir, const uint8_t *oldpath, int newdir, const uint8_t *newpath, unsigned int flags)'),
    linkat: f('int linkat(int olddir, const uint8_t *oldpath, int newdir, const uint8_t *newpath, int flags)'),
    symlinkat: f('int symlinkat(const uint8_t *target, int dirfd, const uint8_t *path)'),
    fchmodat2: f('long syscall(long nr, int dirfd, const uint8_t *path, uint32_t mode, int flags)'),
    fchownat: f('int fchownat(int dirfd, const uint8_t *path, uint32_t uid, uint32_t gid, int flags)'),
    utimensat: f('int utimensat(int dirfd, const uint8_t *path, const uint8_t *times, int flags)'),
    faccessat2: f('long syscall(long nr, int dirfd, const uint8_t *path, int mode, int flags)'),
    ftruncate: f('int ftruncate(int fd, int64_t len)'),
    fcntl: f('int fcntl(int fd, int cmd, long arg)'),
    memfdCreate: f('long syscall(long nr, const uint8_t *name, unsigned int flags)'),
    pidfdOpen: f('long syscall(long nr, int pid, unsigned int flags)'),
    pidfdGetfd: f('long syscall(long nr, int pidfd, int fd, unsigned int flags)'),
    pidfdSendSignal: f('long syscall(long nr, int pidfd, int sig, void *info, unsigned int flags)'),
    tgkill: f('long syscall(long nr, int tgid, int tid, int sig)'),
    socket: f('int socket(int domain, int type, int proto)'),
    bind: f('int bind(int fd, const uint8_t *addr, uint32_t len)'),
    connect: f('int connect(int fd, const uint8_t *addr, uint32_t len)'),
    sendto: f('long sendto(int fd, const uint8_t *buf, size_t n, int flags, const uint8_t *addr, uint32_t len)'),
    getsockopt: f('int getsockopt(int fd, int level, int name, _Out_ uint8_t *val, _Inout_ uint8_t *len)'),
    seccompFilter: f('long syscall(long nr, unsigned int op, unsigned int flags, const moat_sock_fprog *prog)'),
    capset: f('int capset(const uint8_t *hdr, const uint8_t *data)'),
    capget: f('int capget(_Inout_ uint8_t *hdr, _Out_ uint8_t *data)'),
    getxattr: f('long getxattr(const uint8_t *path, const uint8_t *name, _Out_ uint8_t *value, size_t size)'),
    setxattr: f('int setxattr(const uint8_t *path, const uint8_t *name, const uint8_t *value, size_t size, int flags)'),
    listxattr: f('long listxattr(const uint8_t *path, _Out_ uint8_t *list, size_t size)'),
    removexattr: f('int removexattr(const uint8_t *path, const uint8_t *name)'),
    setfsid: f('long syscall(long nr, unsigned int id)'),
    setresid: f('long syscall(long nr, unsigned int r, unsigned int e, unsigned int s)'),
    setgroupsRaw: f('long syscall(long nr, size_t n, const uint8_t *list)'),
    prctl: f('int prctl(int op, unsigned long a, unsigned long b, unsigned long c, unsigned long d)'),
    getdents64: f('long getdents64(int fd, _Out_ uint8_t *buf, size_t n)'),
    schedGetcpu: f('int sched_getcpu()'),
    schedGetaffinity: f('int sched_getaffinity(int pid, size_t n, _Out_ uint8_t *mask)'),
    schedSetaffinity: f('int sched_setaffinity(int pid, size_t n, const uint8_t *mask)'),
    schedSetscheduler: f('int sched_setscheduler(int pid, int policy, const uint8_t *param)'),
    schedGetscheduler: f('int sched_getscheduler(int pid)'),
    pthreadSigmask: f('int pthread_sigmask(int how, const uint8_t *set, uint8_t *old)'),
    setrlimit: f('int setrlimit(int resource, const uint8_t *rlim)'),
    ...((): Pick<Bound, 'processVmReadv' | 'processVmWritev'> => {
      koffi.struct('moat_local_iovec', { base: 'uint8_t *', len: 'size_t' });
      koffi.struct('moat_remote_iovec', { base: 'uint64_t', len: 'size_t' });
      return {
        processVmReadv: f('long process_vm_readv(int pid, const moat_local_iovec *local, unsigned long ln, const moat_remote_iovec *remote, unsigned long rn, unsigned long flags)'),
        processVmWritev: f('long process_vm_writev(int pid, const moat_local_iovec *local, unsigned long ln, const moat_remote_iovec *remote, unsigned long rn, unsigned long flags)'),
      };
    })(),
    listen: f('int listen(int fd, int backlog)'),
    mount: f('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)'),
    umount2: f('int umount2(const char *target, int flags)'),
    pipe2: f('int pipe2(_Out_ uint8_t *fds, int flags)'),
    tee: f('long tee(int fdIn, int fdOut, size_t len, unsigned int flags)'),
    inotifyInit1: f('int inotify_init1(int flags)'),
    inotifyAddWatch: f('int inotify_add_watch(int fd, const uint8_t *path, uint32_t mask)'),
    dup3: f('int dup3(int fd, int target, int flags)'),
    setns: f('int setns(int fd, int nstype)'),
    unshare: f('int unshare(int flags)'),
    accept4: f('int accept4(int fd, void *addr, void *len, int flags)'),
    // --- sockets (sys_socket.ts)
    getsockname: f('int getsockname(int fd, _Out_ uint8_t *addr, _Inout_ uint8_t *len)'),
    getpeername: f('int getpeername(int fd, _Out_ uint8_t *addr, _Inout_ uint8_t *len)'),
    sendmsg: ((): Bound['sendmsg'] => {
      // struct iovec and struct msghdr (x86_64); Buffers in pointer members are passed in place
      koffi.struct('moat_sock_iovec', { iov_base: 'void *', iov_len: 'size_t' });
      koffi.struct('moat_sock_msghdr', {
        msg_name: 'void *',
        msg_namelen: 'uint32_t',
        msg_iov: 'moat_sock_iovec *',
        msg_iovlen: 'size_t',
        msg_control: 'void *',
        msg_controllen: 'size_t',
        msg_flags: 'int',
      });
      return f('long sendmsg(int fd, const moat_sock_msghdr *msg, int flags)');
    })(),
    // --- end sockets (sys_socket.ts)
  };
  return bound;
}

/** Turns libc's -1/errno convention into -errno. */
function r(v: number | bigint): number {
  const n = Number(v);
  return n < 0 ? -b().errno() : n;
}

/** Retries a call interrupted by a signal. */
function ri(call: () => number | bigint): number {
  for (;;) {
    const n = r(call());
    if (n !== -E.EINTR) return n;
  }
}

/** mount(2); returns 0 or -errno. */
export const mount = (source: string | null, target: string, fstype: string | null, flags: number, data: string | null): number =>
  r(b().mount(source, target, fstype, flags, data));

/** umount2(2); returns 0 or -errno. */
export const umount2 = (target: string, flags: number): number => r(b().umount2(target, flags));

/** pipe2(2): the read and write ends, or -errno. */
export function pipe2(flags: number): [number, number] | number {
  const fds = Buffer.alloc(8);
  const n = r(b().pipe2(fds, flags));
  return n < 0 ? n : [fds.readInt32LE(0), fds.readInt32LE(4)];
}

/** tee(2): duplicates up to `len` bytes of one pipe into another without consuming them; -errno on failure. */
export const tee = (fdIn: number, fdOut: number, len: number, flags: number): number => ri(() => b().tee(fdIn, fdOut, len, flags));
/** inotify_init1(2). */
export const inotifyInit1 = (flags: number): number => r(b().inotifyInit1(flags));
/** inotify_add_watch(2): a watch descriptor, or -errno. */
export const inotifyAddWatch = (fd: number, path: string, mask: number): number => r(b().inotifyAddWatch(fd, cpath(path), mask >>> 0));

/** ioctl(2) with a buffer argument. */
export const ioctlBuf = (fd: number, req: number, buf: Buffer): number => r(b().ioctlBuf(fd, req, buf));
const everySignal = Buffer.alloc(128, 0xff); // a full glibc sigset_t (glibc keeps its own two out)
const maskBefore = Buffer.alloc(128);
/**
 * ioctl(2) with a buffer argument and every signal blocked in the calling thread while it runs:
 * for a request whose wait a signal must not cut short (SECCOMP_IOCTL_NOTIF_ADDFD, sentry/core.ts).
 */
export function ioctlBufUnsignalled(fd: number, req: number, buf: Buffer): number {
  const l = b();
  const e = l.pthreadSigmask(0 /* SIG_BLOCK */, everySignal, maskBefore);
  if (e !== 0) throw new HostError(`pthread_sigmask(SIG_BLOCK) around ioctl ${req.toString(16)} on fd ${fd} failed with errno ${e}`);
  try {
    return r(l.ioctlBuf(fd, req, buf));
  } finally {
    l.pthreadSigmask(2 /* SIG_SETMASK */, maskBefore, null);
  }
}
/** ioctl(2) with an integer argument. */
export const ioctlVal = (fd: number, req: number, val: number): number => r(b().ioctlVal(fd, req, val));
/** poll(2) over `n` struct pollfd entries in `fds` (8 bytes each); retried on EINTR. */
export const poll = (fds: Buffer, n: number, timeout: number): number => ri(() => b().poll(fds, n, timeout));

/**
 * poll(2) as `poll` does, but made on a libuv threadpool thread, so this thread's event loop
 * turns while it waits; resolves with its result, or -1 when it failed (errno belongs to that
 * thread: a caller that needs it polls again synchronously). `fds` must not be touched meanwhile.
 */
export const pollAsync = (fds: Buffer, n: number, timeout: number): Promise<number> =>
  new Promise((resolve, reject) => b().pollAsync(fds, n, timeout, (err, rc) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(Number(rc)))));
/** openat(2). */
export const openat = (dirfd: number, path: Buffer, flags: number, mode = 0): number => ri(() => b().openat(dirfd, path, flags, mode));

const howBuf = Buffer.alloc(24);
/** openat2(2) with struct open_how {flags, mode, resolve}. */
export function openat2(dirfd: number, path: Buffer, flags: number, mode: number, resolve: number): number {
  // three u64 of 32-bit values: the high halves stay zero
  howBuf.writeUInt32LE(flags >>> 0, 0);
  howBuf.writeUInt32LE(mode >>> 0, 8);
  howBuf.writeUInt32LE(resolve >>> 0, 16);
  return ri(() => b().openat2(NR.openat2, dirfd, path, howBuf, 24));
}
/** close(2). */
export const close = (fd: number): number => r(b().close(fd));
/** pread(2). */
export const pread = (fd: number, buf: Buffer, n: number, off: number): number => ri(() => b().pread(fd, buf, n, off));
/** pwrite(2). */
export const pwrite = (fd: number, buf: Buffer, n: number, off: number): number => ri(() => b().pwrite(fd, buf, n, off));
/** read(2). */
export const read = (fd: number, buf: Buffer, n: number): number => ri(() => b().read(fd, buf, n));
/** write(2). */
export const write = (fd: number, buf: Buffer, n: number): number => ri(() => b().write(fd, buf, n));
/** readlinkat(2): the number of bytes placed in buf. */
export const readlinkat = (dirfd: number, path: Buffer, buf: Buffer): number => r(b().readlinkat(dirfd, path, buf, buf.length));
/** newfstatat(2): fills a 144-byte struct stat. */
export const fstatat = (dirfd: number, path: Buffer, buf: Buffer, flags: number): number => r(b().fstatat(dirfd, path, buf, flags));
/** statx(2): fills a 256-byte struct statx. */
export const statx = (dirfd: number, path: Buffer, flags: number, mask: number, buf: Buffer): number => r(b().statx(dirfd, path, flags, mask, buf));
/** fstatfs(2): fills a 120-byte struct statfs. */
export const fstatfs = (fd: number, buf: Buffer): number => r(b().fstatfs(fd, buf));
/** mkdirat(2). */
export const mkdirat = (dirfd: number, path: Buffer, mode: number): number => r(b().mkdirat(dirfd, path, mode));
/** mknodat(2). */
export const mknodat = (dirfd: number, path: Buffer, mode: number, dev: number): number => r(b().mknodat(dirfd, path, mode, dev));
/** unlinkat(2). */
export const unlinkat = (dirfd: number, path: Buffer, flags: number): number => r(b().unlinkat(dirfd, path, flags));
/** renameat2(2). */
export const renameat2 = (olddir: number, oldpath: Buffer, newdir: number, newpath: Buffer, flags: number): number =>
  r(b().renameat2(NR.renameat2, olddir, oldpath, newdir, newpath, flags));
/** linkat(2). */
export const linkat = (olddir: number, oldpath: Buffer, newdir: number, newpath: Buffer, flags: number): number =>
  r(b().linkat(olddir, oldpath, newdir, newpath, flags));
/** symlinkat(2). */
export const symlinkat = (target: Buffer, dirfd: number, path: Buffer): number => r(b().symlinkat(target, dirfd, path));
/** fchmodat2(2) (Linux 6.6+; AT_EMPTY_PATH and AT_SYMLINK_NOFOLLOW work). */
export const fchmodat2 = (dirfd: number, path: Buffer, mode: number, flags: number): number => r(b().fchmodat2(NR.fchmodat2, dirfd, path, mode, flags));
/** fchownat(2); -1 (0xffffffff) leaves an id unchanged. */
export const fchownat = (dirfd: number, path: Buffer, uid: number, gid: number, flags: number): number => r(b().fchownat(dirfd, path, uid >>> 0, gid >>> 0, flags));
/** utimensat(2) with a 32-byte struct timespec[2] (or null for now). */
export const utimensat = (dirfd: number, path: Buffer, times: Buffer | null, flags: number): number => r(b().utimensat(dirfd, path, times, flags));
/** faccessat2(2). */
export const faccessat2 = (dirfd: number, path: Buffer, mode: number, flags: number): number => r(b().faccessat2(NR.faccessat2, dirfd, path, mode, flags));
/** ftruncate(2). */
export const ftruncate = (fd: number, len: number): number => ri(() => b().ftruncate(fd, len));
/** fcntl(2) with an integer argument. */
export const fcntl = (fd: number, cmd: number, arg = 0): number => r(b().fcntl(fd, cmd, arg));
/** memfd_create(2). */
export const memfdCreate = (name: string, flags: number): number => r(b().memfdCreate(NR.memfd_create, cpath(name), flags));
/** pidfd_open(2). */
export const pidfdOpen = (pid: number, flags = 0): number => r(b().pidfdOpen(NR.pidfd_open, pid, flags));
/** pidfd_send_signal(2) without a siginfo (the target sees SI_USER from the sender); 0 or -errno. */
export const pidfdSendSignal = (pidfd: number, sig: number): number => r(b().pidfdSendSignal(NR.pidfd_send_signal, pidfd, sig, null, 0));
/** tgkill(2): signal `sig` to thread `tid` of thread group `tgid`; 0 or -errno. */
export const tgkill = (tgid: number, tid: number, sig: number): number => r(b().tgkill(NR.tgkill, tgid, tid, sig));
/** pidfd_getfd(2): a duplicate of another process's fd (same open file description). */
export const pidfdGetfd = (pidfd: number, fd: number): number => r(b().pidfdGetfd(NR.pidfd_getfd, pidfd, fd, 0));
/** socket(2). */
export const socket = (domain: number, type: number, proto: number): number => r(b().socket(domain, type, proto));
/** bind(2). */
export const bind = (fd: number, addr: Buffer): number => r(b().bind(fd, addr, addr.length));
/** connect(2) (blocks if the socket is blocking). */
export const connect = (fd: number, addr: Buffer): number => ri(() => b().connect(fd, addr, addr.length));
/** sendto(2). */
export const sendto = (fd: number, buf: Buffer, flags: number, addr: Buffer | null): number =>
  ri(() => b().sendto(fd, buf, buf.length, flags, addr, addr ? addr.length : 0));
/** getsockopt(2) of an int option. */
export function getsockoptInt(fd: number, level: number, name: number): number {
  const val = Buffer.alloc(4);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(4);
  const rc = r(b().getsockopt(fd, level, name, val, len));
  return rc < 0 ? rc : val.readInt32LE(0);
}
/** getsockopt(2) into `val` (its length is the room given); the option's length, or -errno. */
export function getsockoptBuf(fd: number, level: number, name: number, val: Buffer): number {
  const len = Buffer.alloc(4);
  len.writeUInt32LE(val.length);
  const rc = r(b().getsockopt(fd, level, name, val, len));
  return rc < 0 ? rc : len.readUInt32LE(0);
}
/** The fd of a connected net.Socket (a unix stream); -1 if Node does not show it. */
export function socketFd(sock: Socket): number {
  // `_handle` is Node's internal Pipe handle; its `fd` is public on Unix but untyped
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

/** SO_PEERCRED of a connected unix socket: the peer's pid, uid and gid when it connected, or -errno. */
export function peerCred(fd: number): { pid: number; uid: number; gid: number } | number {
  const val = Buffer.alloc(12);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(12);
  const rc = r(b().getsockopt(fd, 1 /* SOL_SOCKET */, 17 /* SO_PEERCRED */, val, len));
  return rc < 0 ? rc : { pid: val.readInt32LE(0), uid: val.readUInt32LE(4), gid: val.readUInt32LE(8) };
}
/** setns(2) of the calling thread into the namespace `fd` refers to (`nstype` CLONE_NEW* or 0); 0 or -errno. */
export const setns = (fd: number, nstype: number): number => r(b().setns(fd, nstype));

/** unshare(2) of the calling thread; 0 or -errno. */
export const unshare = (flags: number): number => r(b().unshare(flags));

/** dup3(2): `fd` copied onto `target` (closed first if open), with `flags` (O_CLOEXEC or 0). */
export const dup3 = (fd: number, target: number, flags = 0): number => r(b().dup3(fd, target, flags));
/** seccomp(SECCOMP_SET_MODE_FILTER, flags, prog) for a filter of struct sock_filter entries. */
export const seccompFilter = (flags: number, filter: Buffer): number =>
  r(b().seccompFilter(NR.seccomp, 1, flags, { len: filter.length / 8, filter }));
/** capset(2) for the calling thread (header version 3, two data words). */
export const capset = (hdr: Buffer, data: Buffer): number => r(b().capset(hdr, data));
/** capget(2) of the calling thread (header version 3: `data` holds two 12-byte words). */
export const capget = (hdr: Buffer, data: Buffer): number => r(b().capget(hdr, data));
/** getxattr(2): the value's length (into `value` unless null), or -errno. */
export const getxattr = (path: Buffer, name: Buffer, value: Buffer | null): number => r(b().getxattr(path, name, value, value?.length ?? 0));
/** setxattr(2) of `value` (its whole length); 0 or -errno. */
export const setxattr = (path: Buffer, name: Buffer, value: Buffer, flags: number): number => r(b().setxattr(path, name, value, value.length, flags));
/** listxattr(2): the list's length (into `list` unless null), or -errno. */
export const listxattr = (path: Buffer, list: Buffer | null): number => r(b().listxattr(path, list, list?.length ?? 0));
/** removexattr(2); 0 or -errno. */
export const removexattr = (path: Buffer, name: Buffer): number => r(b().removexattr(path, name));
/** setfsuid(2) of the calling thread only; returns the previous fsuid (-1 as the id just reads it). */
export const setfsuid = (uid: number): number => Number(b().setfsid(122, uid >>> 0));
/** setfsgid(2) of the calling thread only; returns the previous fsgid (-1 as the id just reads it). */
export const setfsgid = (gid: number): number => Number(b().setfsid(123, gid >>> 0));
/** setresuid(2) as the raw system call: the calling thread only (glibc's wrapper changes every thread); -1 keeps an id. */
export const setresuidThread = (ruid: number, euid: number, suid: number): number => r(b().setresid(117, ruid >>> 0, euid >>> 0, suid >>> 0));
/** setresgid(2) as the raw system call: the calling thread only; -1 keeps an id. */
export const setresgidThread = (rgid: number, egid: number, sgid: number): number => r(b().setresid(119, rgid >>> 0, egid >>> 0, sgid >>> 0));
/** setgroups(2) as the raw system call: the calling thread only (glibc's wrapper changes every thread). */
export const setgroupsThread = (groups: number[]): number => {
  const list = Buffer.alloc(4 * Math.max(groups.length, 1));
  groups.forEach((g, i) => list.writeUInt32LE(g >>> 0, 4 * i));
  return r(b().setgroupsRaw(116, groups.length, list));
};
/** sched_getcpu(3): the CPU the calling thread runs on, or -errno. */
export const schedGetcpu = (): number => r(b().schedGetcpu());
/** sched_getaffinity(2) of thread `tid` (0: the caller) into `mask` (its whole length); 0 or -errno. */
export const schedGetaffinity = (tid: number, mask: Buffer): number => r(b().schedGetaffinity(tid, mask.length, mask));
/** sched_setaffinity(2) of thread `tid` (0: the caller) to `mask` (its whole length); 0 or -errno. */
export const schedSetaffinity = (tid: number, mask: Buffer): number => r(b().schedSetaffinity(tid, mask.length, mask));
/** Scheduling policies of sched_setscheduler(2). */
export const SCHED = { OTHER: 0, FIFO: 1, RR: 2, BATCH: 3, IDLE: 5, DEADLINE: 6 } as const;
const schedParam = Buffer.alloc(4);
/** sched_setscheduler(2) of thread `tid` (0: the caller) to `policy` at static priority `prio`; 0 or -errno. */
export const schedSetscheduler = (tid: number, policy: number, prio: number): number => {
  schedParam.writeInt32LE(prio, 0);
  return r(b().schedSetscheduler(tid, policy, schedParam));
};
/** sched_getscheduler(2): the policy of thread `tid` (0: the caller), or -errno. */
export const schedGetscheduler = (tid: number): number => r(b().schedGetscheduler(tid));
/** setrlimit(2) of resource `resource` (RLIMIT_* number) to `soft` and `hard`; 0 or -errno. */
export const setrlimit = (resource: number, soft: bigint, hard: bigint): number => {
  const lim = Buffer.alloc(16);
  lim.writeBigUInt64LE(soft, 0);
  lim.writeBigUInt64LE(hard, 8);
  return r(b().setrlimit(resource, lim));
};
/** prctl(2). */
export const prctl = (op: number, a = 0, b2 = 0, c = 0, d = 0): number => r(b().prctl(op, a, b2, c, d));
/** getdents64(2). */
export const getdents64 = (fd: number, buf: Buffer): number => r(b().getdents64(fd, buf, buf.length));
/**
 * Memory of another process through a staging area in native memory: its iovecs are written in
 * place there, so a call passes plain addresses instead of structs koffi converts from objects
 * (about 0.7 µs a call, and the sentry makes two per served call). Each thread that loads this
 * module has its own area. Transfers larger than the area take the struct route.
 */
interface VmStage {
  /** Keeps the native allocation alive (never freed: one per thread). */
  mem: unknown;
  /** The whole area: [0, 16) local iovec, [16, 32) remote iovec, [32, end) data. */
  view: Buffer;
  base: number;
  call: (nr: number, pid: number, local: number, ln: number, remote: number, rn: number, flags: number) => number;
}

const VM_STAGE_DATA = 16384;
let vmStage: VmStage | null | undefined;

function stage(): VmStage | null {
  if (vmStage !== undefined) return vmStage;
  try {
    const koffi = loadKoffi() as Koffi & { alloc(type: string, n: number): unknown; address(p: unknown): bigint; view(p: unknown, n: number): ArrayBuffer };
    const mem = koffi.alloc('uint8_t', 32 + VM_STAGE_DATA);
    const base = Number(koffi.address(mem));
    const view = Buffer.from(koffi.view(mem, 32 + VM_STAGE_DATA));
    const call = koffi.load('libc.so.6').func('long syscall(long nr, int pid, uintptr_t local, unsigned long ln, uintptr_t remote, unsigned long rn, unsigned long flags)') as VmStage['call'];
    vmStage = { mem, view, base, call };
  } catch {
    vmStage = null; // a koffi without alloc/view: the struct route only
  }
  return vmStage;
}

/** Writes a safe integer as a little-endian 64-bit two's-complement value, without a BigInt. */
export function putI64(buf: Buffer, off: number, v: number): void {
  const hi = Math.floor(v / 2 ** 32);
  buf.writeUInt32LE(v - hi * 2 ** 32, off);
  buf.writeInt32LE(hi | 0, off + 4);
}

/** One process_vm_readv/writev of `len` bytes at `addr` through the staging area; bytes moved or -errno. */
function vmStaged(st: VmStage, nr: number, pid: number, len: number, addr: number): number {
  putI64(st.view, 0, st.base + 32);
  putI64(st.view, 8, len);
  putI64(st.view, 16, addr);
  putI64(st.view, 24, len);
  return r(st.call(nr, pid, st.base, 1, st.base + 16, 1, 0));
}

/** process_vm_readv(2) of `buf.length` bytes at `addr` in process `pid`: bytes read (short at an unmapped page) or -errno. */
export function processVmRead(pid: number, buf: Buffer, addr: number): number {
  const st = buf.length <= VM_STAGE_DATA ? stage() : null;
  if (st === null) return r(b().processVmReadv(pid, { base: buf, len: buf.length }, 1, { base: addr, len: buf.length }, 1, 0));
  const n = vmStaged(st, NR.process_vm_readv, pid, buf.length, addr);
  if (n > 0) st.view.copy(buf, 0, 32, 32 + n);
  return n;
}

/** process_vm_writev(2) of `buf` at `addr` in process `pid`: bytes written or -errno. */
export function processVmWrite(pid: number, buf: Buffer, addr: number): number {
  const st = buf.length <= VM_STAGE_DATA ? stage() : null;
  if (st === null) return r(b().processVmWritev(pid, { base: buf, len: buf.length }, 1, { base: addr, len: buf.length }, 1, 0));
  buf.copy(st.view, 32);
  return vmStaged(st, NR.process_vm_writev, pid, buf.length, addr);
}
/** listen(2). */
export const listen = (fd: number, backlog: number): number => r(b().listen(fd, backlog));
/** accept4(2) without the peer address. */
export const accept4 = (fd: number, flags: number): number => ri(() => b().accept4(fd, null, null, flags));

// --- sockets (sys_socket.ts)
/** Runs getsockname(2) or getpeername(2) into a 128-byte buffer: the address bytes, or -errno. */
function sockName(call: (fd: number, addr: Buffer, len: Buffer) => number, fd: number): Buffer | number {
  const addr = Buffer.alloc(128);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(addr.length);
  const rc = r(call(fd, addr, len));
  if (rc < 0) return rc;
  return Buffer.from(addr.subarray(0, Math.min(len.readUInt32LE(0), addr.length)));
}
/** getsockname(2): the socket's own address (at most 128 bytes), or -errno. */
export const getsockname = (fd: number): Buffer | number => sockName((f, a, l) => b().getsockname(f, a, l), fd);
/** getpeername(2): the connected peer's address (at most 128 bytes), or -errno. */
export const getpeername = (fd: number): Buffer | number => sockName((f, a, l) => b().getpeername(f, a, l), fd);
/** sendmsg(2) of one data buffer with an optional address and control data; retried on EINTR. */
export const sendmsg = (fd: number, data: Buffer, flags: number, name: Buffer | null, control: Buffer | null): number =>
  ri(() =>
    b().sendmsg(
      fd,
      {
        msg_name: name,
        msg_namelen: name ? name.length : 0,
        msg_iov: [{ iov_base: data, iov_len: data.length }],
        msg_iovlen: 1,
        msg_control: control && control.length > 0 ? control : null,
        msg_controllen: control ? control.length : 0,
        msg_flags: 0,
      },
      flags,
    ),
  );
// --- end sockets (sys_socket.ts)

let fdsSealed = false;

/**
 * Marks close-on-exec every fd above 2 this process inherited open across exec (Node's own are
 * close-on-exec already), once per process. Node's spawn keeps such fds open in every child,
 * so without this a caller's pipe at fd 50 (or a conmon's or make's) would stay open in the
 * sentries, standbys and VM monitors a command leaves behind, and the pipe's reader would wait
 * for a standby's ten idle minutes. What a command hands on it passes explicitly (the stdio of
 * spawn: --preserve-fds, the listening socket of a sentry).
 */
export function sealInheritedFds(): void {
  if (fdsSealed) return;
  fdsSealed = true;
  let names: string[];
  try {
    names = readdirSync('/proc/self/fd');
  } catch {
    return; // no /proc: nothing to go by
  }
  for (const name of names) {
    const fd = Number(name);
    if (fd <= 2) continue;
    const flags = fcntl(fd, 1 /* F_GETFD */);
    if (flags >= 0 && (flags & 1) === 0) fcntl(fd, 2 /* F_SETFD */, flags | 1 /* FD_CLOEXEC */);
  }
}
