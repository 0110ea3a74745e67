/**
 * A writer of the `newc` cpio format (the format of a Linux initramfs, see the kernel's
 * Documentation/driver-api/early-userspace/buffer-format.rst). Every entry has mtime 0 and owner
 * 0:0 unless told otherwise, and inode numbers count up from 1, so the same entries written in the
 * same order give the same bytes. Parent directories an entry needs are added (mode 0755) when the
 * caller has not added them first, because the kernel's unpacker does not create them.
 */
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { MoatError } from '../../errors.js';

/** The magic of a `newc` header (no checksums). */
export const NEWC_MAGIC = '070701';
/** Length of a `newc` header: the magic and 13 fields of 8 hex digits. */
export const NEWC_HEADER_LEN = 110;
/** Name of the entry that ends an archive. */
export const TRAILER = 'TRAILER!!!';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const MAX_FIELD = 0xffffffff;
const CHUNK = 1 << 20;

/** Owner of an entry (root when omitted). */
export interface CpioOwner {
  uid?: number;
  gid?: number;
}

/** Bytes of a regular file: a host file to copy, or a buffer. */
export type CpioSource = { path: string } | { data: Buffer };

/** Padding that brings `n` to a multiple of 4. */
function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Archive name of `name`: no leading "/" or "./", no empty, "." or ".." components. */
function normalize(name: string): string {
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0) throw new MoatError(`cpio: entry name "${name}" names no file`);
  if (parts.includes('..')) throw new MoatError(`cpio: entry name "${name}" contains ".."`);
  if (name.includes('\0')) throw new MoatError(`cpio: entry name "${JSON.stringify(name)}" contains a NUL byte`);
  return parts.join('/');
}

/** One 8-hex-digit header field. */
function field(what: string, v: number): string {
  if (!Number.isInteger(v) || v < 0 || v > MAX_FIELD) throw new MoatError(`cpio: ${what} ${v} does not fit a newc header field`);
  return v.toString(16).padStart(8, '0');
}

/** Writes a `newc` archive to a file, entry by entry; call `finish()` to write the trailer. */
export class CpioWriter {
  private readonly fd: number;
  private offset = 0;
  private nextIno = 1;
  private finished = false;
  private readonly names = new Set<string>();
  private readonly dirs = new Set<string>();

  /** Creates (or truncates) `path` with mode `mode` and writes the archive into it. */
  constructor(readonly path: string, mode = 0o644) {
    this.fd = openSync(path, 'w', mode);
  }

  /** Bytes written so far. */
  get size(): number {
    return this.offset;
  }

  private write(buf: Buffer): void {
    let done = 0;
    while (done < buf.length) done += writeSync(this.fd, buf, done, buf.length - done);
    this.offset += buf.length;
  }

  private zeros(n: number): void {
    if (n > 0) this.write(Buffer.alloc(n));
  }

  /** Writes one header and the padded name (the data follows). */
  private header(name: string, mode: number, size: number, opts: { uid?: number; gid?: number; nlink?: number; rdev?: [number, number]; ino?: number }): void {
    const nameBytes = Buffer.from(name + '\0', 'utf8');
    const [rmaj, rmin] = opts.rdev ?? [0, 0];
    const ino = opts.ino ?? this.nextIno++;
    const hdr = NEWC_MAGIC
      + field('inode', ino)
      + field('mode', mode)
      + field('uid', opts.uid ?? 0)
      + field('gid', opts.gid ?? 0)
      + field('nlink', opts.nlink ?? 1)
      + field('mtime', 0)
      + field(`size of ${name}`, size)
      + field('devmajor', 0)
      + field('devminor', 0)
      + field('rdevmajor', rmaj)
      + field('rdevminor', rmin)
      + field('namesize', nameBytes.length)
      + field('check', 0);
    this.write(Buffer.from(hdr, 'ascii'));
    this.write(nameBytes);
    this.zeros(pad4(NEWC_HEADER_LEN + nameBytes.length));
  }

  /** Claims `name` for a new entry after adding its missing parent directories. */
  private claim(name: string): string {
    if (this.finished) throw new MoatError(`cpio: ${this.path} is finished; cannot add "${name}"`);
    const n = normalize(name);
    const slash = n.lastIndexOf('/');
    if (slash > 0) {
      const parent = n.slice(0, slash);
      if (!this.dirs.has(parent)) {
        if (this.names.has(parent)) throw new MoatError(`cpio: "${parent}" is not a directory; cannot add "${n}" under it`);
        this.dir(parent);
      }
    }
    if (this.names.has(n)) throw new MoatError(`cpio: duplicate entry "${n}" in ${this.path}`);
    this.names.add(n);
    return n;
  }

  /** Adds a directory. */
  dir(name: string, mode = 0o755, owner: CpioOwner = {}): void {
    const n = this.claim(name);
    this.dirs.add(n);
    this.header(n, S_IFDIR | (mode & 0o7777), 0, { ...owner, nlink: 2 });
  }

  /** Adds a regular file with the bytes of `source`. */
  file(name: string, source: CpioSource, mode = 0o644, owner: CpioOwner = {}): void {
    const n = this.claim(name);
    const m = S_IFREG | (mode & 0o7777);
    if ('data' in source) {
      this.header(n, m, source.data.length, owner);
      this.write(source.data);
      this.zeros(pad4(source.data.length));
      return;
    }
    const src = openSync(source.path, 'r');
    try {
      const st = fstatSync(src);
      if (!st.isFile()) throw new MoatError(`cpio: ${source.path} is not a regular file`);
      const size = st.size;
      this.header(n, m, size, owner);
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(size, 1)));
      let copied = 0;
      while (copied < size) {
        const got = readSync(src, buf, 0, Math.min(buf.length, size - copied), copied);
        if (got === 0) break;
        this.write(buf.subarray(0, got));
        copied += got;
      }
      if (copied !== size) throw new MoatError(`cpio: ${source.path} shrank while it was being archived (${copied} of ${size} bytes)`);
      this.zeros(pad4(size));
    } finally {
      closeSync(src);
    }
  }

  /** Adds a symbolic link to `target`. */
  symlink(name: string, target: string, owner: CpioOwner = {}): void {
    const n = this.claim(name);
    if (target === '') throw new MoatError(`cpio: symlink "${n}" has an empty target`);
    const data = Buffer.from(target, 'utf8');
    this.header(n, S_IFLNK | 0o777, data.length, owner);
    this.write(data);
    this.zeros(pad4(data.length));
  }

  /** Adds a character or block device node. */
  device(name: string, kind: 'char' | 'block', major: number, minor: number, mode = 0o600, owner: CpioOwner = {}): void {
    const n = this.claim(name);
    this.header(n, (kind === 'char' ? S_IFCHR : S_IFBLK) | (mode & 0o7777), 0, { ...owner, rdev: [major, minor] });
  }

  /** Writes the trailer and closes the file; returns the archive's size in bytes. */
  finish(): number {
    if (this.finished) return this.offset;
    try {
      this.header(TRAILER, 0, 0, { ino: 0, nlink: 1 });
    } finally {
      this.finished = true;
      closeSync(this.fd);
    }
    return this.offset;
  }

  /** Closes the file without a trailer (after a failure; the caller removes the file). */
  abort(): void {
    if (this.finished) return;
    this.finished = true;
    closeSync(this.fd);
  }
}
