/**
 * The calling thread of one seccomp notification, as handlers see it: its arguments, checked
 * access to its memory through /proc/TID/mem (validated against the notification after the
 * open, so a recycled pid can never be read or written), its working directory and fds.
 */
import { readFileSync } from 'node:fs';
import * as k from '../../sys/kernel.js';
import type { Creds, Notif, Task } from './types.js';

const MAX_ADDR = 2 ** 53;
const PIDFD_THREAD = 0o200; // O_EXCL: a pidfd for a thread, not a thread-group leader (Linux 6.9+)
const idBuf = Buffer.alloc(8);
const linkBuf = Buffer.alloc(4096 + 32);

/** Whether notification `id` is still pending on `listener` (SECCOMP_IOCTL_NOTIF_ID_VALID). */
export function notifValid(listener: number, id: bigint): boolean {
  idBuf.writeBigUInt64LE(id);
  return k.ioctlBuf(listener, k.SECCOMP_IOCTL.NOTIF_ID_VALID, idBuf) === 0;
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
  private memFd = -1;
  private pidFd = -1;
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
    if (this.statusCache === undefined) {
      try {
        this.statusCache = readFileSync(`/proc/${this.tid}/status`, 'latin1');
      } catch {
        this.statusCache = '';
      }
    }
    return this.statusCache;
  }

  int(i: number): number {
    return Number(BigInt.asIntN(32, this.notif.args[i]!));
  }

  num(i: number): number {
    const v = this.notif.args[i]!;
    return v >= BigInt(MAX_ADDR) ? -1 : Number(v);
  }

  valid(): boolean {
    return notifValid(this.listener, this.notif.id);
  }

  /** The task's /proc/TID/mem, opened once and confirmed to belong to the notifying task. */
  private mem(): number {
    if (this.memFd >= 0) return this.memFd;
    const fd = k.openat(k.AT.FDCWD, k.cpath(`/proc/${this.tid}/mem`), k.O.RDWR | k.O.CLOEXEC);
    if (fd < 0) return fd;
    // the tid could have been recycled between the notification and the open: only a still
    // pending notification proves this is the same task (seccomp_unotify(2))
    if (!this.valid()) {
      k.close(fd);
      return -k.E.ESRCH;
    }
    this.memFd = fd;
    return fd;
  }

  read(addr: number, len: number): Buffer | null {
    if (addr <= 0 || addr + len > MAX_ADDR) return null;
    const fd = this.mem();
    if (fd < 0) return null;
    const buf = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const n = k.pread(fd, buf.subarray(got), len - got, addr + got);
      if (n <= 0) return null;
      got += n;
    }
    return buf;
  }

  readString(addr: number, max = 4095): Buffer | number {
    if (addr <= 0 || addr >= MAX_ADDR) return -k.E.EFAULT;
    const fd = this.mem();
    if (fd < 0) return -k.E.EFAULT;
    const chunks: Buffer[] = [];
    let total = 0;
    let at = addr;
    while (total <= max) {
      // read up to the end of the page first: the next page may be unmapped
      const want = Math.min(4096 - (at % 4096), max + 1 - total);
      const buf = Buffer.allocUnsafe(want);
      const n = k.pread(fd, buf, want, at);
      if (n <= 0) return -k.E.EFAULT;
      const nul = buf.subarray(0, n).indexOf(0);
      if (nul >= 0) {
        chunks.push(buf.subarray(0, nul));
        return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      }
      chunks.push(buf.subarray(0, n));
      total += n;
      at += n;
    }
    return -k.E.ENAMETOOLONG;
  }

  write(addr: number, data: Buffer): boolean {
    if (addr <= 0 || addr + data.length > MAX_ADDR) return false;
    const fd = this.mem();
    if (fd < 0) return false;
    let put = 0;
    while (put < data.length) {
      const n = k.pwrite(fd, data.subarray(put), data.length - put, addr + put);
      if (n <= 0) return false;
      put += n;
    }
    return true;
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
    const ids = (key: string): number[] => (new RegExp(`\\n${key}:\\s+([^\\n]*)`).exec(s)?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
    const uid = ids('Uid');
    const gid = ids('Gid');
    return { uid: uid[0] ?? 0, euid: uid[1] ?? 0, fsuid: uid[3] ?? 0, gid: gid[0] ?? 0, egid: gid[1] ?? 0, fsgid: gid[3] ?? 0, groups: ids('Groups') };
  }

  /** The task's umask, from /proc/TID/status. */
  umask(): number {
    const m = /\nUmask:\s+([0-7]+)/.exec(this.status());
    return m ? parseInt(m[1]!, 8) : 0o022;
  }

  /** Closes the fds this task opened. */
  release(): void {
    if (this.memFd >= 0) k.close(this.memFd);
    if (this.pidFd >= 0) k.close(this.pidFd);
    this.memFd = -1;
    this.pidFd = -1;
  }
}
