/**
 * libc calls of the CLI (through koffi): Node's own APIs cover most of what Moat does; this
 * covers the rest: advisory locks, passing fds over unix sockets and terminals. The sentry's raw system
 * calls are in kernel.ts.
 * koffi is loaded on first use so commands that need none of this pay nothing at start-up.
 */
import { closeSync, constants as fsConstants, openSync, readdirSync } from 'node:fs';
import { loadKoffi } from './koffi.js';
import { HostError } from '../errors.js';


/** errno values Moat checks for by name. */
export const Errno = { EINTR: 4, EAGAIN: 11, EWOULDBLOCK: 11 } as const;

/** flock(2) operations. */
export const LOCK_SH = 1;
/** flock(2): exclusive lock. */
export const LOCK_EX = 2;
/** flock(2): do not block. */
export const LOCK_NB = 4;
/** flock(2): release. */
export const LOCK_UN = 8;

interface Libc {
  flock(fd: number, op: number): number;
  recvmsg(fd: number, msg: unknown, flags: number): number;
  ioctlWinsize(fd: number, req: number, ws: Buffer): number;
  tcgetattr(fd: number, t: Buffer): number;
  tcsetattr(fd: number, when: number, t: Buffer): number;
  cfmakeraw(t: Buffer): void;
  schedSetscheduler(tid: number, policy: number, param: Buffer): number;
  schedGetscheduler(tid: number): number;
  sendmsg(fd: number, msg: unknown, flags: number): number;
  errno(): number;
  strerror(errno: number): string;
  koffi: KoffiModule;
}

/** The few koffi entry points used here (koffi ships no TypeScript declarations we rely on). */
interface KoffiModule {
  load(name: string): { func(sig: string): (...args: unknown[]) => unknown };
  struct(name: string, def: Record<string, unknown>): unknown;
  pointer(t: unknown): unknown;
  array(t: string, n: number): unknown;
  errno(): number;
  sizeof(t: unknown): number;
}

let libc: Libc | undefined;


function load(): Libc {
  if (libc) return libc;
  const koffi = loadKoffi() as KoffiModule;
  const lib = koffi.load('libc.so.6');
  koffi.struct('moat_iovec', { iov_base: 'void *', iov_len: 'size_t' });
  koffi.struct('moat_msghdr', {
    msg_name: 'void *',
    msg_namelen: 'uint32_t',
    msg_iov: 'moat_iovec *',
    msg_iovlen: 'size_t',
    msg_control: 'void *',
    msg_controllen: 'size_t',
    msg_flags: 'int',
  });
  const strerror = lib.func('const char *strerror(int errnum)') as (e: number) => string;
  libc = {
    flock: lib.func('int flock(int fd, int op)') as Libc['flock'],
    recvmsg: lib.func('long recvmsg(int fd, _Inout_ moat_msghdr *msg, int flags)') as Libc['recvmsg'],
    sendmsg: lib.func('long sendmsg(int fd, const moat_msghdr *msg, int flags)') as Libc['sendmsg'],
    ioctlWinsize: lib.func('int ioctl(int fd, unsigned long req, _Inout_ uint8_t *ws)') as Libc['ioctlWinsize'],
    tcgetattr: lib.func('int tcgetattr(int fd, _Out_ uint8_t *t)') as Libc['tcgetattr'],
    tcsetattr: lib.func('int tcsetattr(int fd, int when, const uint8_t *t)') as Libc['tcsetattr'],
    cfmakeraw: lib.func('void cfmakeraw(_Inout_ uint8_t *t)') as Libc['cfmakeraw'],
    schedSetscheduler: lib.func('int sched_setscheduler(int pid, int policy, const uint8_t *param)') as Libc['schedSetscheduler'],
    schedGetscheduler: lib.func('int sched_getscheduler(int pid)') as Libc['schedGetscheduler'],
    errno: () => koffi.errno(),
    strerror,
    koffi,
  };
  return libc;
}

/** Raises a HostError that names the failed call and errno text. */
function sysFail(call: string, what: string): never {
  const l = load();
  const e = l.errno();
  const err = new HostError(`${call} ${what}: ${l.strerror(e)}`);
  (err as HostError & { errno: number }).errno = e;
  throw err;
}

/** Takes (or with LOCK_NB tries to take) an flock on fd; returns false if LOCK_NB found it held. */
export function flock(fd: number, op: number, what: string): boolean {
  const l = load();
  for (;;) {
    if (l.flock(fd, op) === 0) return true;
    const e = l.errno();
    if (e === Errno.EINTR) continue;
    if (e === Errno.EWOULDBLOCK && (op & LOCK_NB) !== 0) return false;
    sysFail('flock', what);
  }
}

/** sched_setscheduler(2) policies. */
export const SCHED_OTHER = 0;
/** sched_setscheduler(2): runs only on a CPU nothing else wants. */
export const SCHED_IDLE = 5;

/** The scheduling policy of thread `tid` (0: the calling one). */
export function schedPolicy(tid: number): number {
  const l = load();
  const p = l.schedGetscheduler(tid);
  if (p < 0) sysFail('sched_getscheduler', `of thread ${tid}`);
  return p;
}

/** Sets thread `tid`'s scheduling policy (priority 0: SCHED_OTHER, SCHED_BATCH or SCHED_IDLE). */
export function setSchedPolicy(tid: number, policy: number): void {
  const l = load();
  if (l.schedSetscheduler(tid, policy, Buffer.alloc(4)) < 0) sysFail('sched_setscheduler', `of thread ${tid}`);
}

/**
 * Takes every thread of this process from SCHED_IDLE back to SCHED_OTHER: a warm standby CLI
 * process boots at idle priority (as root), so that its boot takes no CPU time from the command
 * that started it, and turns normal before it serves. Does nothing when the calling thread is
 * not SCHED_IDLE.
 */
export function leaveIdlePriority(): void {
  if (schedPolicy(0) !== SCHED_IDLE) return;
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      setSchedPolicy(Number(tid), SCHED_OTHER);
    } catch (e) {
      if ((e as { errno?: number }).errno !== 3 /* ESRCH: the thread ended meanwhile */) throw e;
    }
  }
}

const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;

/**
 * Receives one fd sent with SCM_RIGHTS on a connected unix socket (blocking), with the bytes
 * that came with it (runc-style console sockets send the pty name).
 */
export function recvFd(sock: number): { fd: number; data: string } {
  const l = load();
  const data = Buffer.alloc(4096);
  const control = Buffer.alloc(64);
  const msg = {
    msg_name: null,
    msg_namelen: 0,
    msg_iov: [{ iov_base: data, iov_len: data.length }],
    msg_iovlen: 1,
    msg_control: control,
    msg_controllen: control.length,
    msg_flags: 0,
  };
  let n: number;
  const deadline = Date.now() + 10_000;
  for (;;) {
    n = Number(l.recvmsg(sock, msg, 0x40000000 /* MSG_CMSG_CLOEXEC */));
    if (n >= 0) break;
    const e = l.errno();
    if (e === Errno.EINTR) continue;
    // sockets that Node accepted are non-blocking: wait briefly for the sender
    if (e === Errno.EAGAIN && Date.now() < deadline) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
      continue;
    }
    sysFail('recvmsg', 'on the console socket');
  }
  // struct cmsghdr { size_t len; int level; int type; unsigned char data[]; }
  const clen = Number(control.readBigUInt64LE(0));
  const level = control.readInt32LE(8);
  const type = control.readInt32LE(12);
  if (Number(msg.msg_controllen) < 20 || clen < 20 || level !== SOL_SOCKET || type !== SCM_RIGHTS) {
    throw new HostError('the message on the socket carried no file descriptor');
  }
  return { fd: control.readInt32LE(16), data: data.subarray(0, n).toString('utf8') };
}

/** Sends one fd with SCM_RIGHTS (and `data` as the message body) over a connected unix socket. */
export function sendFd(sock: number, fd: number, data: string): void {
  const l = load();
  const body = Buffer.from(data.length > 0 ? data : '\0');
  const control = Buffer.alloc(24);
  control.writeBigUInt64LE(20n, 0);
  control.writeInt32LE(SOL_SOCKET, 8);
  control.writeInt32LE(SCM_RIGHTS, 12);
  control.writeInt32LE(fd, 16);
  const msg = {
    msg_name: null,
    msg_namelen: 0,
    msg_iov: [{ iov_base: body, iov_len: body.length }],
    msg_iovlen: 1,
    msg_control: control,
    msg_controllen: control.length,
    msg_flags: 0,
  };
  for (;;) {
    if (Number(l.sendmsg(sock, msg, 0)) >= 0) return;
    if (l.errno() !== Errno.EINTR) sysFail('sendmsg', 'with a file descriptor');
  }
}

const TIOCSWINSZ = 0x5414;
const TIOCGWINSZ = 0x5413;
const TIOCSCTTY = 0x540e;
const TIOCGPTN = 0x80045430;
const TIOCSPTLCK = 0x40045431;

/**
 * Opens a new pseudo-terminal pair on the host: the master and the slave (both close-on-exec,
 * neither becoming this process's controlling terminal) and the slave's path.
 */
export function openPty(): { master: number; slave: number; name: string } {
  const l = load();
  const master = openSync('/dev/ptmx', fsConstants.O_RDWR | fsConstants.O_NOCTTY);
  try {
    const n = Buffer.alloc(4);
    if (l.ioctlWinsize(master, TIOCSPTLCK, n) !== 0) sysFail('ioctl(TIOCSPTLCK)', 'on /dev/ptmx');
    if (l.ioctlWinsize(master, TIOCGPTN, n) !== 0) sysFail('ioctl(TIOCGPTN)', 'on /dev/ptmx');
    const name = `/dev/pts/${n.readUInt32LE(0)}`;
    const slave = openSync(name, fsConstants.O_RDWR | fsConstants.O_NOCTTY);
    return { master, slave, name };
  } catch (e) {
    closeSync(master);
    throw e;
  }
}

/** Makes the terminal `fd` this process's controlling terminal (it must lead a session without one). */
export function setControllingTerminal(fd: number): void {
  if (load().ioctlWinsize(fd, TIOCSCTTY, null as unknown as Buffer) !== 0) sysFail('ioctl(TIOCSCTTY)', 'on the terminal');
}

/**
 * Puts terminal `fd` in raw mode as cfmakeraw(3) does: no echo, no line editing, no signal
 * keys and, unlike Node's setRawMode, no output processing (a relayed terminal's bytes pass
 * unchanged: "\r\n" does not become "\r\r\n").
 */
export function makeRaw(fd: number): void {
  const l = load();
  const t = Buffer.alloc(64); // struct termios is 60 bytes on x86_64 and arm64
  if (l.tcgetattr(fd, t) !== 0) sysFail('tcgetattr', 'on the terminal');
  l.cfmakeraw(t);
  if (l.tcsetattr(fd, 0 /* TCSANOW */, t) !== 0) sysFail('tcsetattr', 'on the terminal');
}

/** The window size of terminal `fd`: rows and columns. */
export function getWindowSize(fd: number): { rows: number; cols: number } {
  const ws = Buffer.alloc(8);
  if (load().ioctlWinsize(fd, TIOCGWINSZ, ws) !== 0) sysFail('ioctl(TIOCGWINSZ)', 'on the terminal');
  return { rows: ws.readUInt16LE(0), cols: ws.readUInt16LE(2) };
}

/** Sets the window size of a terminal (a pty master here) to rows x cols. */
export function setWindowSize(fd: number, rows: number, cols: number): void {
  const l = load();
  const ws = Buffer.alloc(8);
  ws.writeUInt16LE(rows, 0);
  ws.writeUInt16LE(cols, 2);
  if (l.ioctlWinsize(fd, TIOCSWINSZ, ws) !== 0) sysFail('ioctl(TIOCSWINSZ)', 'on the pty');
}
