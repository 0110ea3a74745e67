/**
 * The calling thread of one seccomp notification, as handlers see it: its arguments, checked
 * access to its memory (validated against the notification, so a recycled pid can never be
 * read), its working directory and fds.
 */
import * as k from '../../sys/kernel.js';
import type { Creds, Notif, Task } from './types.js';

const MAX_ADDR = 2 ** 53;
/** pidfd_open(2) flag: a pidfd for a thread, not a thread-group leader (O_EXCL; Linux 6.9+). */
export const PIDFD_THREAD = 0o200;
const idBuf = Buffer.alloc(8);
const SCRATCH = Buffer.alloc(8192);
const linkBuf = Buffer.alloc(4096 + 32);

/** What names a notification in an answer: its id, or the id's 32-bit halves (Notif.words) when decoded. */
export type NotifId = Pick<Notif, 'id' | 'words'>;

/** Writes a notification's id at the start of `buf`: from its 32-bit halves when known (no BigInt made). */
export function putId(buf: Buffer, n: NotifId): void {
  const words = n.words;
  if (words !== undefined && words.length >= 14) {
    buf.writeUInt32LE(words[12]!, 0);
    buf.writeUInt32LE(words[13]!, 4);
  } else buf.writeBigUInt64LE(n.id, 0);
}

/** Whether notification `n` is still pending on `listener` (SECCOMP_IOCTL_NOTIF_ID_VALID). */
export function notifValid(listener: number, n: NotifId): boolean {
  putId(idBuf, n);
  return k.ioctlBuf(listener, k.SECCOMP_IOCTL.NOTIF_ID_VALID, idBuf) === 0;
}

const PROC_BUF = Buffer.alloc(4096);

/** A hexadecimal mask field (SigPnd, SigBlk, SigIgn, SigCgt, CapEff, ...) of a /proc status file; 0 if absent. */
export function statusMask(status: string, key: string): bigint {
  const m = new RegExp(`\\n${key}:\\s*([0-9a-f]+)`).exec(status);
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

/** The numbers of field `key` (Uid, Gid, Groups, Tgid, ...) of a /proc status file; [] if absent. */
export function statusIds(status: string, key: string): number[] {
  const m = new RegExp(`\\n${key}:([^\\n]*)`).exec(status);
  return (m?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
}

/**
 * A /proc text file as latin1, '' if it cannot be read: opened, read and closed through the
 * sentry's own bindings. For a status file that is ~12 us against ~19 us through readFileSync,
 * and every creating call reads one (the caller's umask), as do access checks (its credentials).
 */
export function readProcFile(path: string): string {
  const fd = k.openat(k.AT.FDCWD, k.cpath(path), k.O.RDONLY | k.O.CLOEXEC);
  if (fd < 0) return '';
  try {
    let buf = PROC_BUF;
    let n = 0;
    for (;;) {
      if (n === buf.length) {
        const bigger = Buffer.alloc(buf.length * 2); // a long Groups line
        buf.copy(bigger);
        buf = bigger;
      }
      const got = k.read(fd, buf.subarray(n), buf.length - n);
      if (got < 0) return '';
      if (got === 0) return buf.toString('latin1', 0, n);
      n += got;
    }
  } finally {
    k.close(fd);
  }
}

/** Reads a /proc link of the task as bytes, or null. */
function readLink(path: string): Buffer | null {
  const n = k.readlinkat(k.AT.FDCWD, k.cpath(path), linkBuf);
  if (n < 0 || n >= linkBuf.length) return null;
  return Buffer.from(linkBuf.subarray(0, n));
}

const DELETED = Buffer.from(' (deleted)', 'latin1');

/** A container path from a /proc link target, or null for anything that is not one. */
function containerPathOf(link: Buffer | null): Buffer | null {
  if (!link || link.length === 0 || link[0] !== 0x2f) return null;
  if (link.length > DELETED.length && link.subarray(link.length - DELETED.length).equals(DELETED)) return null;
  return link;
}

/** The Task of one notification; holds fds only until `release()`. */
export class NotifTask implements Task {
  readonly tid: number;
  readonly notif: Notif;
  private readonly listener: number;
  private pidFd = -1;
  private readonly scratch = SCRATCH;
  /** True on a worker thread, where a handler may block (see Reply 'offload'). */
  onWorker = false;
  /** The fd kept open for this call by the serving thread (see Task.held), or -1. */
  held = -1;
  private statusCache: string | undefined;

  constructor(listener: number, notif: Notif) {
    this.listener = listener;
    this.notif = notif;
    this.tid = notif.tid;
  }

  /** Thread-group id of the caller, from /proc/TID/status. */
  get tgid(): number {
    const m = /\nTgid:\s+(\d+)/.exec(this.status());
    return m ? Number(m[1]) : this.tid;
  }

  private status(): string {
    this.statusCache ??= readProcFile(`/proc/${this.tid}/status`);
    return this.statusCache;
  }

  int(i: number): number {
    const w = this.notif.words;
    return w ? w[2 * i]! | 0 : Number(BigInt.asIntN(32, this.notif.args[i]!));
  }

  num(i: number): number {
    const w = this.notif.words;
    if (w) {
      const hi = w[2 * i + 1]!;
      return hi >= MAX_ADDR / 2 ** 32 ? -1 : hi * 2 ** 32 + w[2 * i]!;
    }
    const v = this.notif.args[i]!;
    return v >= BigInt(MAX_ADDR) ? -1 : Number(v);
  }

  valid(): boolean {
    return notifValid(this.listener, this.notif);
  }

  signalPending(): boolean {
    // read afresh: the cached status is the one of the call's start
    const status = readProcFile(`/proc/${this.tid}/status`);
    const mask = (key: string): bigint => statusMask(status, key);
    const blocked = mask('SigBlk');
    // a signal to the process goes to one of its threads: to this one for sure only if it is alone
    const alone = /\nThreads:\s*1\n/.test(status);
    return ((mask('SigPnd') | (alone ? mask('ShdPnd') : 0n)) & ~blocked) !== 0n;
  }

  /*
   * Memory goes through process_vm_readv/writev (one system call, no fd). A read is checked
   * afterwards: if the notification is still pending, the task was alive and waiting during the
   * read, so the bytes are its own (a recycled tid cannot be read by mistake). A write is
   * checked before: the task cannot go away between the check and the write except by SIGKILL,
   * and its tid could only name another process after the pid counter wrapped around.
   */

  read(addr: number, len: number): Buffer | null {
    if (addr <= 0 || addr + len > MAX_ADDR) return null;
    const buf = Buffer.allocUnsafe(len);
    const n = k.processVmRead(this.tid, buf, addr);
    if (n !== len || !this.valid()) return null;
    return buf;
  }

  readString(addr: number, max = 4095, check = true): Buffer | number {
    if (addr <= 0 || addr >= MAX_ADDR) return -k.E.EFAULT;
    const chunks: Buffer[] = [];
    let total = 0;
    let at = addr;
    while (total <= max) {
      // 256 bytes first (most paths are short), then up to two pages per call: a read stops
      // short at the first unmapped page
      const want = Math.min(total === 0 ? 256 : 8192 - (at % 4096), max + 1 - total, MAX_ADDR - at);
      const buf = this.scratch.length >= want ? this.scratch.subarray(0, want) : Buffer.allocUnsafe(want);
      const n = k.processVmRead(this.tid, buf, at);
      if (n <= 0) return -k.E.EFAULT;
      const nul = buf.subarray(0, n).indexOf(0);
      if (nul >= 0) {
        chunks.push(Buffer.from(buf.subarray(0, nul)));
        if (check && !this.valid()) return -k.E.EFAULT;
        return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      }
      chunks.push(Buffer.from(buf.subarray(0, n)));
      total += n;
      at += n;
    }
    return -k.E.ENAMETOOLONG;
  }

  write(addr: number, data: Buffer): boolean {
    if (addr <= 0 || addr + data.length > MAX_ADDR) return false;
    if (!this.valid()) return false;
    return k.processVmWrite(this.tid, data, addr) === data.length;
  }

  getFd(fd: number): number {
    if (fd < 0) return -k.E.EBADF;
    if (this.pidFd < 0) {
      const p = k.pidfdOpen(this.tid, PIDFD_THREAD);
      if (p < 0) return p === -k.E.ESRCH ? -k.E.EBADF : p;
      if (!this.valid()) {
        k.close(p);
        return -k.E.ESRCH;
      }
      this.pidFd = p;
    }
    return k.pidfdGetfd(this.pidFd, fd);
  }

  cwd(): Buffer | null {
    return containerPathOf(readLink(`/proc/${this.tid}/cwd`));
  }

  fdPath(fd: number): Buffer | null {
    if (fd < 0) return null;
    return containerPathOf(readLink(`/proc/${this.tid}/fd/${fd}`));
  }

  creds(): Creds {
    const s = this.status();
    const uid = statusIds(s, 'Uid');
    const gid = statusIds(s, 'Gid');
    const caps = /\nCapEff:\s*([0-9a-f]+)/.exec(s)?.[1];
    return {
      uid: uid[0] ?? 0, euid: uid[1] ?? 0, fsuid: uid[3] ?? 0, gid: gid[0] ?? 0, egid: gid[1] ?? 0, fsgid: gid[3] ?? 0, groups: statusIds(s, 'Groups'),
      ...(caps !== undefined ? { caps: BigInt(`0x${caps}`) } : {}),
    };
  }

  /** The task's umask, from /proc/TID/status. */
  umask(): number {
    const m = /\nUmask:\s+([0-7]+)/.exec(this.status());
    return m ? parseInt(m[1]!, 8) : 0o022;
  }

  /** Closes the fds this task opened. */
  release(): void {
    if (this.pidFd >= 0) k.close(this.pidFd);
    this.pidFd = -1;
  }
}
